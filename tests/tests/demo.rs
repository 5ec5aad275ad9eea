//! `skiff demo` end to end, as a user runs it: on a temp copy of `examples/demo` (so the
//! repository's files are never edited), 6 s of traffic at 50 requests/s. After two rows of the
//! live view the test rewrites the route's weights in the copy from 80/20 to 0/100, as a user
//! would in an editor: the client's keep-alive connections must follow the edit. Asserted from
//! the demo's output: every request succeeded, both versions served before the edit, only v2
//! at the end, the client's proxy runs a new configuration, and the demo's namespaces are gone
//! once it exits.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set-up may be slow on a busy machine (a debug build, the rest of the suite in parallel).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// From the edit to the demo's exit: 4 more seconds of traffic, then the clean-up.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_demo_splits_traffic_and_follows_a_route_edit() {
    skiff_tests::require_root();
    let dir = TempCopy::of(&skiff_tests::workspace_dir().join("examples/demo"));
    let route = dir.path.join("route.yaml");
    let original = fs::read_to_string(&route).unwrap();
    assert!(
        original.contains("weight: 80") && original.contains("weight: 20"),
        "examples/demo/route.yaml no longer splits 80/20; update this test:\n{original}"
    );

    let stderr = dir.path.join("demo.stderr");
    let mut demo = Demo(
        Command::new(skiff_tests::cli_bin())
            .args(["demo", "--duration", "6s", "--rate", "50", "--policy"])
            .arg(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run skiff demo"),
    );
    let (lines, output) = mpsc::channel();
    let stdout = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let context = |seen: &[String]| {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            seen.join("\n"),
            fs::read_to_string(&stderr).unwrap_or_default()
        )
    };

    // Phase 1: the 80/20 split, until two rows are out.
    let deadline = Instant::now() + START_TIMEOUT;
    while rows(&seen).len() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match output.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no two rows of the live view in time\n{}", context(&seen)),
        }
    }
    let rows_before_edit = rows(&seen).len();
    let edited = original
        .replace("weight: 80", "weight: 0")
        .replace("weight: 20", "weight: 100");
    // Atomically, as editors save: the control plane never reads half a file.
    fs::write(dir.path.join(".route.yaml.tmp"), edited).unwrap();
    fs::rename(dir.path.join(".route.yaml.tmp"), &route).unwrap();

    // Phase 2: everything else, until the demo closes its output.
    let deadline = Instant::now() + FINISH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match output.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("skiff demo did not finish in time\n{}", context(&seen))
            }
        }
    }
    let status = demo.wait(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "skiff demo failed ({status:?})\n{}",
        context(&seen)
    );

    let rows = rows(&seen);
    assert_eq!(rows.len(), 6, "one row per second\n{}", context(&seen));
    for row in &rows {
        assert_eq!(row.success, "100.0%", "{row:?}\n{}", context(&seen));
    }
    assert!(
        rows[..rows_before_edit]
            .iter()
            .any(|row| row.v1 > 0 && row.v2 > 0),
        "before the edit both versions must serve\n{}",
        context(&seen)
    );
    let last = rows.last().unwrap();
    assert_eq!(
        (last.v1, last.v2),
        (0, 100),
        "after the edit only v2 serves\n{}",
        context(&seen)
    );
    assert_ne!(
        last.config,
        rows[0].config,
        "the client's proxy runs a new configuration\n{}",
        context(&seen)
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("Summary:") && l.contains("succeeded (100.0%)")),
        "{}",
        context(&seen)
    );

    // Everything the demo created is gone.
    let network = seen
        .iter()
        .find_map(|l| l.trim().strip_prefix("network        namespace "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no network namespace in the header\n{}", context(&seen)));
    let id = network.trim_end_matches("-net");
    let left: Vec<String> = fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&format!("{id}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// One row of the live view:
/// `  3s   50  100.0%  1.25  3.50  v1  80% ████░  20% v2  3dfd3be3319a896f …`.
#[derive(Debug)]
struct Row {
    success: String,
    v1: u32,
    v2: u32,
    config: String,
}

fn rows(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .filter_map(|line| {
            let t: Vec<&str> = line.split_whitespace().collect();
            let is_row = t.len() >= 11
                && t[0]
                    .strip_suffix('s')
                    .is_some_and(|n| n.parse::<u64>().is_ok())
                && t[5] == "v1"
                && t[9] == "v2";
            let percent = |s: &str| s.trim_end_matches('%').parse::<u32>().ok();
            is_row.then(|| Row {
                success: t[2].to_string(),
                v1: percent(t[6]).unwrap_or_else(|| panic!("v1 share in {line:?}")),
                v2: percent(t[8]).unwrap_or_else(|| panic!("v2 share in {line:?}")),
                config: t[10].to_string(),
            })
        })
        .collect()
}

/// `skiff demo`, interrupted (so it cleans up) if the test ends before it does.
struct Demo(Child);

impl Demo {
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().ok().flatten() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = skiff_tests::process::run(&["kill", "-INT", &self.0.id().to_string()]);
            if self.wait(Duration::from_secs(60)).is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

/// A temp copy of a policy directory, deleted at the end.
struct TempCopy {
    path: PathBuf,
}

impl TempCopy {
    fn of(source: &Path) -> TempCopy {
        let path = std::env::temp_dir().join(format!("skiff-demo-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        for entry in fs::read_dir(source).unwrap().flatten() {
            fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
        }
        TempCopy { path }
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

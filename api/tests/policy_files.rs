//! Policy files on disk, checked by one data-driven test each:
//!
//! - `tests/broken/*.yaml`: each file starts with `# expect: LINE PATH: FRAGMENT` (the file must
//!   be refused with that problem among its errors) or `# warning: LINE PATH: FRAGMENT` (the
//!   file must load, with that warning). `LINE` may be `*` (any line), `PATH` `-` (no path).
//! - `tests/valid/*.yaml`: real-world routes (the Gateway API's GAMMA examples and routes pasted
//!   from clusters) that must load without errors.

use std::path::{Path, PathBuf};

use skiff_api::{load, Problem, Severity};

fn yaml_files(folder: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// What a broken file's first line promises.
#[derive(Debug)]
struct Expected {
    severity: Severity,
    line: Option<usize>,
    path: String,
    fragment: String,
}

impl Expected {
    fn parse(name: &str, text: &str) -> Expected {
        let header = text.lines().next().unwrap_or("");
        let (severity, rest) = if let Some(rest) = header.strip_prefix("# expect: ") {
            (Severity::Error, rest)
        } else if let Some(rest) = header.strip_prefix("# warning: ") {
            (Severity::Warning, rest)
        } else {
            panic!("{name}: the first line must be `# expect: LINE PATH: FRAGMENT`")
        };
        let (line, rest) = rest.split_once(' ').expect("LINE PATH: FRAGMENT");
        let (path, fragment) = rest.split_once(": ").expect("PATH: FRAGMENT");
        Expected {
            severity,
            line: line.parse().ok(),
            path: if path == "-" {
                String::new()
            } else {
                path.to_string()
            },
            fragment: fragment.to_string(),
        }
    }

    fn matches(&self, file: &str, problem: &Problem) -> bool {
        problem.file == file
            && problem.severity == self.severity
            && self.line.is_none_or(|line| problem.line == line)
            && problem.path == self.path
            && problem.message.contains(&self.fragment)
    }
}

#[test]
fn every_broken_file_reports_its_problem() {
    let files = yaml_files("broken");
    assert!(files.len() >= 40, "only {} broken files", files.len());
    let mut failures = Vec::new();
    for (name, text) in &files {
        let expected = Expected::parse(name, text);
        let problems = match (expected.severity, load(&[(name.clone(), text.clone())])) {
            (Severity::Error, Err(problems)) => problems,
            (Severity::Warning, Ok(loaded)) => loaded.warnings,
            (Severity::Error, Ok(loaded)) => {
                failures.push(format!(
                    "{name}: loaded without errors (warnings: {:?})",
                    loaded.warnings
                ));
                continue;
            }
            (Severity::Warning, Err(problems)) => problems,
        };
        let refused_warning =
            expected.severity == Severity::Warning && problems.iter().any(Problem::is_error);
        if refused_warning || !problems.iter().any(|p| expected.matches(name, p)) {
            let got: Vec<String> = problems.iter().map(|p| format!("    {p}")).collect();
            failures.push(format!(
                "{name}: expected {:?} at line {:?} {}: …{}…; got:\n{}",
                expected.severity,
                expected.line,
                expected.path,
                expected.fragment,
                got.join("\n")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn broken_files_together_report_every_problem_at_once() {
    let files = yaml_files("broken");
    let errors = files
        .iter()
        .filter(|(_, text)| text.starts_with("# expect:"))
        .count();
    // Loaded together, names collide across files (every file defines shop/web), so only
    // check that nothing stops early: at least one problem per refused file.
    let problems = load(&files).unwrap_err();
    let files_with_problems: std::collections::HashSet<&str> =
        problems.iter().map(|p| p.file.as_str()).collect();
    assert!(
        files_with_problems.len() >= errors,
        "{} of {errors}",
        files_with_problems.len()
    );
}

#[test]
fn real_world_routes_load_without_errors() {
    let files = yaml_files("valid");
    assert!(files.len() >= 3);
    for (name, text) in &files {
        match load(&[(name.clone(), text.clone())]) {
            Ok(loaded) => {
                let unexpected: Vec<String> =
                    loaded.warnings.iter().map(ToString::to_string).collect();
                let allowed = text.contains("# warnings expected");
                assert!(allowed || unexpected.is_empty(), "{name}: {unexpected:#?}");
            }
            Err(problems) => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                panic!("{name}:\n{}", lines.join("\n"));
            }
        }
    }
}

/// Not a coverage-guided fuzzer (that needs nightly), but the same contract: any mutation of a
/// real policy file gets a verdict — loaded, or refused with located problems — and never a
/// panic.
#[test]
fn mutated_files_never_panic() {
    let seeds: Vec<(String, String)> = yaml_files("valid")
        .into_iter()
        .chain(yaml_files("broken"))
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b" \n:-[]{}&*!|>'\"#,?%@`0aZ/.\t";
    for round in 0..3_000 {
        let (name, text) = &seeds[round % seeds.len()];
        let mut bytes = text.clone().into_bytes();
        for _ in 0..1 + next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Err(problems) = load(&[(name.clone(), text.clone())]) {
            let lines = text.lines().count().max(1);
            for problem in problems {
                assert!(problem.line <= lines + 1, "{name} round {round}: {problem}");
            }
        }
    }
}

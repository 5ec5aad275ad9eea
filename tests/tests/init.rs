//! `skiff-proxy init`: idempotent rules, `--dry-run` changes nothing, clear errors (no panic)
//! without privileges or without iptables.

use skiff_tests::{process, proxy_bin, Mesh, Output, Pod};

/// `iptables-save -t nat` without comments and packet counters.
fn nat_rules(pod: &Pod) -> String {
    pod.iptables_nat()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn init(pod: &Pod, prefix: &[&str], args: &[&str]) -> Output {
    let bin = proxy_bin();
    let mut argv = vec!["ip", "netns", "exec", pod.ns()];
    argv.extend_from_slice(prefix);
    argv.push(bin.to_str().unwrap());
    argv.push("init");
    argv.extend_from_slice(args);
    process::run(&argv)
}

fn assert_clear_failure(out: &Output, what: &str) {
    assert!(!out.success(), "{what}: init succeeded: {out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.trim().is_empty(),
        "{what}: failed without a message on stderr: {out}"
    );
    assert!(
        !text.contains("panicked") && !text.contains("RUST_BACKTRACE") && out.code != Some(101),
        "{what}: init panicked instead of reporting an error: {out}"
    );
}

#[test]
fn init_twice_leaves_identical_rules() {
    let mesh = Mesh::new("init-twice");
    for (pod, args) in [
        (mesh.pod("plain"), vec![]),
        (
            mesh.pod("excluding"),
            vec![
                "--exclude-inbound-ports",
                "22,8080",
                "--exclude-outbound-ports",
                "5000",
                "--exclude-outbound-cidrs",
                "10.1.0.0/16",
            ],
        ),
    ] {
        let empty = nat_rules(&pod);
        let out = init(&pod, &[], &args);
        assert!(out.success(), "first init {args:?}: {out}");
        let first = nat_rules(&pod);
        assert_ne!(first, empty, "init {args:?} installed no nat rule");
        for port in ["15001", "15006", "1337"] {
            assert!(first.contains(port), "nat rules lack {port}:\n{first}");
        }
        if !args.is_empty() {
            for needle in ["5000", "10.1.0.0/16", "8080"] {
                assert!(
                    first.contains(needle),
                    "nat rules lack exclusion {needle}:\n{first}"
                );
            }
        }
        let out = init(&pod, &[], &args);
        assert!(out.success(), "second init {args:?}: {out}");
        let second = nat_rules(&pod);
        assert_eq!(
            first, second,
            "running init {args:?} twice changed the rules"
        );
    }
}

#[test]
fn init_dry_run_prints_rules_and_changes_nothing() {
    let mesh = Mesh::new("init-dry-run");
    let pod = mesh.pod("pod");
    let before = nat_rules(&pod);
    let out = init(&pod, &[], &["--dry-run"]);
    assert!(out.success(), "init --dry-run: {out}");
    for port in ["15001", "15006"] {
        assert!(
            out.stdout.contains(port),
            "--dry-run output lacks {port}: {out}"
        );
    }
    assert_eq!(
        nat_rules(&pod),
        before,
        "init --dry-run changed the nat table"
    );
}

#[test]
fn init_without_privileges_fails_with_a_clear_error() {
    let mesh = Mesh::new("init-unprivileged");
    let pod = mesh.pod("pod");
    let before = nat_rules(&pod);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ];
    let out = init(&pod, &nobody, &[]);
    assert_clear_failure(&out, "as uid 65534 without capabilities");
    assert_eq!(nat_rules(&pod), before);
}

#[test]
fn init_without_iptables_fails_with_a_clear_error() {
    let mesh = Mesh::new("init-no-iptables");
    let pod = mesh.pod("pod");
    let empty = std::env::temp_dir().join(format!("skiff-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let path = format!("PATH={}", empty.display());
    let out = init(&pod, &["env", &path], &[]);
    let _ = std::fs::remove_dir(&empty);
    assert_clear_failure(&out, "with no iptables on PATH");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("iptables"),
        "the error does not name iptables: {out}"
    );
}

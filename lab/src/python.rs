//! The Python side of the tests: a venv with grpcio, websockets and h2 (made by
//! `tests/setup-venv.sh`), and the clients and servers under `tests/python/`.

use std::path::PathBuf;

use crate::sh_quote;

/// The venv: `$SKIFF_VENV`, else `<target dir>/venv`.
pub fn venv() -> PathBuf {
    match std::env::var_os("SKIFF_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => crate::target_dir().join("venv"),
    }
}

/// The venv's interpreter; panics with the setup command when the venv is missing.
pub fn interpreter() -> PathBuf {
    let python = venv().join("bin").join("python");
    assert!(
        python.is_file(),
        "Python venv for the end-to-end tests not found at {}. Create it with \
         `tests/setup-venv.sh` (installs tests/python/requirements.txt; honours SKIFF_VENV)",
        venv().display()
    );
    python
}

/// Path of a program under `tests/python/` (the end-to-end tests' programs; the lab runs them).
pub fn script(name: &str) -> PathBuf {
    let path = crate::workspace_dir()
        .join("tests")
        .join("python")
        .join(name);
    assert!(path.is_file(), "no such test program: {}", path.display());
    path
}

/// A shell command line running `tests/python/NAME ARGS` with the venv's interpreter.
pub fn command(name: &str, args: &[&str]) -> String {
    let mut line = format!(
        "{} -u {}",
        sh_quote(interpreter().to_str().unwrap()),
        sh_quote(script(name).to_str().unwrap())
    );
    for arg in args {
        line.push(' ');
        line.push_str(&sh_quote(arg));
    }
    line
}

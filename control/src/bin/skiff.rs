//! `skiff`: the user's command-line tool. For now it checks policy files offline; the control
//! plane commands (`proxy-status`, `proxy-config`, `demo`) arrive with the control plane.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Skiff service mesh command-line tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check policy files offline; exits non-zero and lists every problem when any is invalid.
    Analyze {
        /// A policy file or a directory of .yaml/.yml files.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Analyze { paths } => analyze(&paths),
    }
}

fn analyze(paths: &[PathBuf]) -> ExitCode {
    let mut problems = Vec::new();
    let mut resources = 0;
    for file in policy_files(paths, &mut problems) {
        match std::fs::read_to_string(&file) {
            Ok(text) => match skiff_api::parse_documents(&file.display().to_string(), &text) {
                Ok(parsed) => resources += parsed.len(),
                Err(errors) => problems.extend(errors.iter().map(ToString::to_string)),
            },
            Err(error) => problems.push(format!("{}: cannot read: {error}", file.display())),
        }
    }
    if problems.is_empty() {
        println!("{resources} resources, no problems found");
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("{problem}");
        }
        eprintln!("{} problem(s) found", problems.len());
        ExitCode::FAILURE
    }
}

/// The YAML files named by `paths` (directories are read one level deep, sorted).
fn policy_files(paths: &[PathBuf], problems: &mut Vec<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| is_yaml(p))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(error) => problems.push(format!(
                    "{}: cannot read directory: {error}",
                    path.display()
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    files
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

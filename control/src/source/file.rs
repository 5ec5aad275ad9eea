//! The file source: watches a directory of policy YAML and publishes it on every change.
//!
//! It polls the directory every 50 ms, comparing each `.yaml`/`.yml` file's size, mtime and
//! inode with the last poll, rather than using inotify: no dependency, and it behaves the same
//! for every way a file changes — editors that write in place or rename over, Kubernetes
//! ConfigMap volumes that swap a `..data` symlink, network filesystems without events — at the
//! cost of one `stat` per file per poll. On any change every file is re-read and the whole set
//! validated, so a policy is never half-applied.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use skiff_api::Problem;

use crate::shutdown::ShutdownSignal;
use crate::ControlPlane;

/// How often the directory is checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a reload published nothing; the last good snapshot stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read policy directory {}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {} is {size} bytes; the limit is {}", path.display(), skiff_api::MAX_FILE_BYTES)]
    TooLarge { path: PathBuf, size: u64 },
    #[error("cannot read policy file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found: the errors, and the warnings that come with them.
    #[error("invalid policy: {} error(s)", .0.iter().filter(|p| p.is_error()).count())]
    Invalid(Vec<Problem>),
}

/// Watches one directory (not recursively).
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    /// [`POLL_INTERVAL`] unless a test wants it faster.
    pub poll_interval: Duration,
    control: Arc<ControlPlane>,
}

/// What a file looked like at the last poll; any difference means it changed.
#[derive(Debug, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileSource {
    pub fn new(dir: PathBuf, control: Arc<ControlPlane>) -> Self {
        FileSource {
            dir,
            poll_interval: POLL_INTERVAL,
            control,
        }
    }

    /// Loads the directory now, then again on every change, until `shutdown`.
    pub async fn run(self, mut shutdown: ShutdownSignal) {
        let source = Arc::new(self);
        let mut last: Option<Result<Vec<FileStamp>, std::io::ErrorKind>> = None;
        loop {
            let dir = source.dir.clone();
            let task = tokio::task::spawn_blocking(move || stamps(&dir).map_err(|e| e.kind()));
            let Ok(stamps) = task.await else { return };
            if last.as_ref() != Some(&stamps) {
                last = Some(stamps);
                let source = source.clone();
                // Reading and validating is blocking work; the outcome is logged inside.
                let _ = tokio::task::spawn_blocking(move || source.reload()).await;
            }
            tokio::select! {
                () = tokio::time::sleep(source.poll_interval) => {}
                () = shutdown.requested() => return,
            }
        }
    }

    /// Reads and validates every file; publishes the policy if valid. Logs the outcome, every
    /// problem included, and counts refusals in `skiff_control_config_errors_total`.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let outcome = self
            .read()
            .and_then(|files| skiff_api::load(&files).map_err(ReloadError::Invalid));
        match outcome {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!("{warning}");
                }
                // Stamped before the sessions can wake and take the core.
                let published = SystemTime::now();
                let version = self.control.store.publish(loaded.policy);
                self.control.metrics.snapshot_published(version, published);
                tracing::info!(version, dir = %self.dir.display(), "policy published");
                Ok(version)
            }
            Err(error) => {
                if let ReloadError::Invalid(problems) = &error {
                    for problem in problems {
                        if problem.is_error() {
                            tracing::error!("{problem}");
                        } else {
                            tracing::warn!("{problem}");
                        }
                    }
                }
                self.control.metrics.config_refused();
                tracing::error!(
                    error = %DisplayChain(&error),
                    "policy refused; the last good policy stays in force"
                );
                Err(error)
            }
        }
    }

    fn read(&self) -> Result<Vec<(String, String)>, ReloadError> {
        read_dir(&self.dir)
    }
}

/// `(file name, text)` of every policy file in `dir`, sorted by name, as the control plane reads
/// them (what `skiff_api::load` takes).
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, ReloadError> {
    let files = policy_files(dir).map_err(|source| ReloadError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    files
        .into_iter()
        .map(|path| match read_capped(&path) {
            Ok(text) => Ok((path.display().to_string(), text)),
            Err(ReadCapped::TooLarge(size)) => Err(ReloadError::TooLarge { path, size }),
            Err(ReadCapped::Io(source)) => Err(ReloadError::ReadFile { path, source }),
        })
        .collect()
}

/// The `.yaml`/`.yml` files directly in `dir`, sorted. Symlinks are followed (ConfigMaps).
fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

enum ReadCapped {
    TooLarge(u64),
    Io(std::io::Error),
}

/// Reads a file as text, refusing one over [`skiff_api::MAX_FILE_BYTES`] without reading it
/// (and without reading past the limit if it grows meanwhile).
fn read_capped(path: &Path) -> Result<String, ReadCapped> {
    use std::io::Read;
    let limit = skiff_api::MAX_FILE_BYTES as u64;
    let file = std::fs::File::open(path).map_err(ReadCapped::Io)?;
    let size = file.metadata().map_err(ReadCapped::Io)?.len();
    if size > limit {
        return Err(ReadCapped::TooLarge(size));
    }
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(ReadCapped::Io)?;
    if text.len() as u64 > limit {
        return Err(ReadCapped::TooLarge(text.len() as u64));
    }
    Ok(text)
}

fn stamps(dir: &Path) -> std::io::Result<Vec<FileStamp>> {
    let mut stamps = Vec::new();
    for path in policy_files(dir)? {
        // A file deleted between listing and stat shows as changed; the reload will say.
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        stamps.push(FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
            path,
        });
    }
    Ok(stamps)
}

/// An error and its sources on one line: `cannot read policy file x: permission denied`.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: shop}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n";

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("skiff-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_good_policy() {
        let dir = TempDir::new("file-source");
        std::fs::write(dir.0.join("echo.yaml"), SERVICE).unwrap();
        std::fs::write(dir.0.join("notes.txt"), "not policy").unwrap();
        let control = Arc::new(ControlPlane::new(
            crate::ca::CertificateAuthority::generate(Default::default()).unwrap(),
        ));
        let source = FileSource::new(dir.0.clone(), control.clone());
        assert_eq!(source.reload().unwrap(), 1);

        std::fs::write(
            dir.0.join("broken.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: [",
        )
        .unwrap();
        let Err(ReloadError::Invalid(problems)) = source.reload() else {
            panic!("an invalid file was accepted");
        };
        assert!(
            problems[0].to_string().contains("broken.yaml:"),
            "{}",
            problems[0]
        );
        assert_eq!(
            control.store.current().unwrap().version,
            1,
            "last good stays"
        );
        assert_eq!(control.metrics.config_errors(), 1);

        std::fs::remove_file(dir.0.join("broken.yaml")).unwrap();
        assert_eq!(source.reload().unwrap(), 2);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_an_empty_policy() {
        let control = Arc::new(ControlPlane::new(
            crate::ca::CertificateAuthority::generate(Default::default()).unwrap(),
        ));
        let source = FileSource::new(PathBuf::from("/nonexistent/skiff"), control.clone());
        assert!(matches!(source.reload(), Err(ReloadError::ReadDir { .. })));
        assert!(control.store.current().is_none());
    }

    #[test]
    fn a_huge_file_is_refused_before_it_is_read() {
        let dir = TempDir::new("huge");
        let huge = std::fs::File::create(dir.0.join("huge.yaml")).unwrap();
        huge.set_len(skiff_api::MAX_FILE_BYTES as u64 + 1).unwrap();
        let control = Arc::new(ControlPlane::new(
            crate::ca::CertificateAuthority::generate(Default::default()).unwrap(),
        ));
        let source = FileSource::new(dir.0.clone(), control);
        assert!(matches!(source.reload(), Err(ReloadError::TooLarge { .. })));
    }

    #[test]
    fn stamps_change_when_a_file_changes() {
        let dir = TempDir::new("stamps");
        std::fs::write(dir.0.join("a.yaml"), SERVICE).unwrap();
        let before = stamps(&dir.0).unwrap();
        assert_eq!(before, stamps(&dir.0).unwrap());
        std::fs::write(dir.0.join("a.yaml"), format!("{SERVICE}# edited\n")).unwrap();
        assert_ne!(before, stamps(&dir.0).unwrap());
    }
}

//! What the simulator reads about the control plane under test: its metrics on the admin port,
//! and its memory and CPU time from `/proc`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The control plane process and its admin port.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub admin: SocketAddr,
    pub pid: u32,
}

/// `USER_HZ`: the unit of utime and stime in `/proc/PID/stat`, 100 on every Linux ABI.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl ControlPlane {
    /// `GET /metrics`: every unlabelled sample, by name.
    async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let mut stream = TcpStream::connect(self.admin)
            .await
            .with_context(|| format!("admin port {}", self.admin))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: control\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
            .await
            .context("metrics: no answer in 10 s")??;
        let response = String::from_utf8_lossy(&response);
        let Some((head, body)) = response.split_once("\r\n\r\n") else {
            bail!("metrics: not an HTTP response");
        };
        if !head.starts_with("HTTP/1.1 200") {
            bail!("metrics: {}", head.lines().next().unwrap_or_default());
        }
        Ok(body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
            .collect())
    }

    /// One metric; an error if the control plane does not export it.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        self.metrics()
            .await?
            .get(name)
            .copied()
            .with_context(|| format!("the control plane has no metric {name}"))
    }

    /// `VmRSS` in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(self.proc("status"))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")
    }

    /// User + system CPU seconds of every thread, exited ones included.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(self.proc("stat"))?;
        // The command name may hold spaces; the fields after it are space-separated.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("malformed /proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks = |at: usize| -> anyhow::Result<f64> {
            Ok(fields.get(at).context("short /proc/PID/stat")?.parse()?)
        };
        // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
        Ok((ticks(11)? + ticks(12)?) / CLOCK_TICKS_PER_SECOND)
    }

    fn proc(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{file}", self.pid))
    }
}

//! `skiff-bench fanout`: N simulated proxies on one control plane. How long a policy edit takes
//! to reach every one of them, and what each connected proxy costs the control plane.
//!
//! The run, in order (every figure is printed as one JSON object at the end):
//! 1. Write the generated policy ([`policy`]) into the directory the control plane watches and
//!    wait until it is published and stable; read the control plane's memory (0 proxies).
//! 2. Connect N proxies ([`proxy`]) at a bounded rate, each on its own HTTP/2 connection over
//!    mTLS (a client certificate per workload identity, [`tls`]), and wait until every one has
//!    its first configuration; read the memory again.
//! 3. For each edit: wait a random 1–1.6 s (so the edit falls anywhere in the control plane's
//!    poll interval), rewrite `routes.yaml` atomically (temporary file + rename), and wait until
//!    every proxy has received and ACKed a new version. Delays are measured from the rename, in
//!    this process; the control plane's `skiff_control_snapshot_published_timestamp_seconds`
//!    splits each into *rename → published* (the directory poll and the reload) and
//!    *published → last ACK* (the fan-out).

mod control_plane;
mod policy;
mod proxy;
mod tls;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::json;
use tokio::sync::mpsc;

use control_plane::ControlPlane;
use policy::Mesh;
use proxy::{Decode, Event, Fleet, Identity};

/// Options of `skiff-bench fanout`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The control plane's proxy API (its `--listen`).
    #[arg(long)]
    control_plane: SocketAddr,
    /// Its admin port (its `--admin`), for its metrics.
    #[arg(long)]
    admin: SocketAddr,
    /// Its process id, for its memory and CPU time in /proc.
    #[arg(long)]
    pid: u32,
    /// The directory it watches (its `--policy`); the policy is written there.
    #[arg(long)]
    policy_dir: PathBuf,
    /// Its CA directory (its `--ca-dir`): the simulated proxies' certificates are signed with
    /// the root there, and the control plane verified against its bundle.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Its trust domain (its `--trust-domain`).
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Simulated proxies.
    #[arg(long, default_value_t = 1000)]
    proxies: usize,
    /// Replicas of each workload the policy lists as endpoints; 0: every replica (the policy
    /// grows with N).
    #[arg(long, default_value_t = 5)]
    endpoints_per_workload: usize,
    /// Every proxy names a workload of its own (default: replicas of 100 workloads).
    #[arg(long)]
    workload_per_proxy: bool,
    /// Policy edits measured.
    #[arg(long, default_value_t = 5)]
    edits: usize,
    /// New streams per second while connecting.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    #[arg(long, value_enum, default_value = "head")]
    decode: Decode,
    /// The HTTP/2 SETTINGS_MAX_FRAME_SIZE the proxies advertise (16384 to 16777215); unset:
    /// the default, 16 KiB, which is what skiff-proxy advertises.
    #[arg(long)]
    max_frame_size: Option<u32>,
    /// Seconds a phase may take before the run fails.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // One thread: the harness pins the simulator to its own core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(Run::new(args)?.measure())?;
    println!("{report}");
    Ok(())
}

/// The state of one run.
struct Run {
    args: Args,
    mesh: Mesh,
    control: ControlPlane,
    timeout: Duration,
    events: mpsc::UnboundedReceiver<Event>,
    /// Shared by the proxies.
    fleet: Arc<Fleet>,
    /// The version each proxy last received.
    current: Vec<Option<String>>,
    /// Proxies that have received a configuration.
    synced: usize,
    /// Configurations received since the start; the control plane's ACK count must match.
    arrivals: u64,
}

/// One measured edit.
#[derive(Debug)]
struct Edit {
    /// From the rename to the control plane publishing the new snapshot.
    published: Duration,
    /// From the rename to each proxy's receipt, sorted.
    delays: Vec<Duration>,
    /// Control plane CPU seconds from just before the rename until every ACK was counted.
    cpu_seconds: f64,
    /// Bytes received by all proxies for this edit.
    bytes: u64,
}

impl Run {
    fn new(args: Args) -> anyhow::Result<Self> {
        if args.proxies == 0 || args.connect_rate <= 0.0 {
            bail!("--proxies and --connect-rate must be positive");
        }
        let mesh = Mesh {
            proxies: args.proxies,
            endpoints_per_workload: (args.endpoints_per_workload > 0)
                .then_some(args.endpoints_per_workload),
            workload_per_proxy: args.workload_per_proxy,
        };
        let control = ControlPlane {
            admin: args.admin,
            pid: args.pid,
        };
        let signer = crate::identity::Signer::load(&args.ca_dir, &args.trust_domain)
            .with_context(|| format!("--ca-dir {}", args.ca_dir.display()))?;
        let identities = (0..args.proxies)
            .map(|index| (mesh.workload(index).namespace, mesh.service_account(index)));
        let connectors = tls::connectors(&signer, identities)?;
        let (sender, events) = mpsc::unbounded_channel();
        let fleet = Arc::new(Fleet {
            control_plane: args.control_plane,
            connectors,
            decode: args.decode,
            max_frame_size: args.max_frame_size,
            events: sender,
            received_bytes: AtomicU64::new(0),
        });
        Ok(Run {
            current: vec![None; args.proxies],
            timeout: Duration::try_from_secs_f64(args.timeout).context("--timeout")?,
            args,
            mesh,
            control,
            events,
            fleet,
            synced: 0,
            arrivals: 0,
        })
    }

    async fn measure(mut self) -> anyhow::Result<serde_json::Value> {
        let n = self.args.proxies;
        self.publish_initial_policy().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_idle = self.control.rss_kib()?;

        let connect_started = Instant::now();
        self.connect_all();
        let deadline = Instant::now() + self.timeout;
        while self.synced < n {
            self.next_event(deadline).await?;
        }
        let connect_time = connect_started.elapsed();
        eprintln!("fanout: {n} proxies connected and synced in {connect_time:.2?}");
        self.quiet(Duration::from_secs(1)).await?;
        let connected = self
            .control
            .metric("skiff_control_connected_proxies")
            .await?;
        if connected as usize != n {
            bail!("the control plane counts {connected} connected proxies, not {n}");
        }
        let rss_connected = self.control.rss_kib()?;

        let mut edits = Vec::new();
        for edit in 1..=self.args.edits {
            let measured = self.edit(edit).await?;
            eprintln!(
                "fanout: edit {edit}: published after {:.1?}, last of {n} ACKed after {:.1?}",
                measured.published,
                measured.delays.last().copied().unwrap_or_default()
            );
            edits.push(measured);
        }
        let rss_after = self.control.rss_kib()?;
        Ok(self.report(connect_time, [rss_idle, rss_connected, rss_after], &edits))
    }

    /// Writes the generated policy and waits until the control plane has published it and
    /// published nothing else for three poll intervals.
    async fn publish_initial_policy(&mut self) -> anyhow::Result<()> {
        let before = self
            .control
            .metric("skiff_control_snapshot_version")
            .await?;
        let files = self.mesh.files(0);
        let dir = &self.args.policy_dir;
        write_atomically(&dir.join("services.yaml"), &files.services)?;
        write_atomically(&dir.join("workloads.yaml"), &files.workloads)?;
        write_atomically(&dir.join("routes.yaml"), &files.routes)?;
        let deadline = Instant::now() + self.timeout;
        let mut last = before;
        loop {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let version = self
                .control
                .metric("skiff_control_snapshot_version")
                .await?;
            if self
                .control
                .metric("skiff_control_config_errors_total")
                .await?
                > 0.0
            {
                bail!("the control plane refused the generated policy; see its log");
            }
            if version > before && version == last {
                return Ok(());
            }
            last = version;
            if Instant::now() > deadline {
                bail!("the control plane did not publish the generated policy");
            }
        }
    }

    /// Starts the proxies, `connect_rate` per second.
    fn connect_all(&self) {
        let interval = Duration::from_secs_f64(1.0 / self.args.connect_rate);
        let start = tokio::time::Instant::now();
        let mesh = self.mesh.clone();
        let fleet = self.fleet.clone();
        tokio::spawn(async move {
            for index in 0..mesh.proxies {
                tokio::time::sleep_until(start + interval * index as u32).await;
                let workload = mesh.workload(index);
                let identity = (workload.namespace.clone(), mesh.service_account(index));
                let me = Identity {
                    index,
                    workload,
                    identity,
                    pod_ip: mesh.pod_ip(index),
                };
                tokio::spawn(proxy::run(fleet.clone(), me));
            }
        });
    }

    /// Handles the next event; a proxy that failed ends the run.
    async fn next_event(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let event = tokio::time::timeout_at(deadline.into(), self.events.recv())
            .await
            .map_err(|_| self.stalled())?
            .context("event channel closed")?;
        match event {
            Event::Arrival { proxy, version, .. } => {
                self.arrivals += 1;
                if self.current[proxy].replace(version).is_none() {
                    self.synced += 1;
                }
                Ok(())
            }
            Event::Failed { proxy, error } => Err(anyhow::Error::new(error)).with_context(|| {
                format!("simulated proxy {proxy} ({})", self.mesh.workload(proxy))
            }),
        }
    }

    fn stalled(&self) -> anyhow::Error {
        let missing = self.args.proxies - self.synced;
        anyhow::anyhow!(
            "timed out after {:?}; {missing} proxies never received a configuration",
            self.timeout
        )
    }

    /// Handles events for `duration`; any arrival then is unexpected and fails the run.
    async fn quiet(&mut self, duration: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + duration;
        let arrivals = self.arrivals;
        while Instant::now() < until {
            match tokio::time::timeout_at(until.into(), self.events.recv()).await {
                Err(_) => break,
                Ok(None) => bail!("event channel closed"),
                Ok(Some(Event::Failed { proxy, error })) => {
                    return Err(anyhow::Error::new(error))
                        .with_context(|| format!("simulated proxy {proxy}"))
                }
                Ok(Some(Event::Arrival { proxy, version, .. })) => {
                    self.arrivals += 1;
                    self.current[proxy] = Some(version);
                }
            }
        }
        if self.arrivals != arrivals {
            bail!(
                "{} configurations arrived while the policy was unchanged",
                self.arrivals - arrivals
            );
        }
        Ok(())
    }

    /// Edit number `edit`: rename, then wait for every proxy's new version and its ACK.
    async fn edit(&mut self, edit: usize) -> anyhow::Result<Edit> {
        let jitter = RandomState::new().hash_one(edit) % 600;
        self.quiet(Duration::from_millis(1000 + jitter)).await?;
        let snapshot_before = self
            .control
            .metric("skiff_control_snapshot_version")
            .await?;
        let routes = self.mesh.files(edit).routes;
        let path = self.args.policy_dir.join("routes.yaml");
        let temporary = self.args.policy_dir.join(".routes.yaml.tmp");
        std::fs::write(&temporary, routes).context("writing the edited routes")?;
        let before: Vec<Option<String>> = self.current.clone();
        let cpu_before = self.control.cpu_seconds()?;
        let bytes_before = self.fleet.received_bytes.load(Ordering::Relaxed);

        let renamed_wall = SystemTime::now();
        let renamed = Instant::now();
        std::fs::rename(&temporary, &path).context("renaming the edited routes")?;

        let mut delays = Vec::with_capacity(self.current.len());
        let mut updated = vec![false; self.current.len()];
        let deadline = renamed + self.timeout;
        while delays.len() < self.current.len() {
            let event = tokio::time::timeout_at(deadline.into(), self.events.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "edit {edit}: only {} of {} proxies updated after {:?}",
                        delays.len(),
                        self.current.len(),
                        self.timeout
                    )
                })?
                .context("event channel closed")?;
            match event {
                Event::Arrival { proxy, version, at } => {
                    self.arrivals += 1;
                    if before[proxy].as_ref() == Some(&version) {
                        bail!("edit {edit}: proxy {proxy} was resent the version it runs");
                    }
                    if std::mem::replace(&mut updated[proxy], true) {
                        bail!("edit {edit}: proxy {proxy} received two versions");
                    }
                    self.current[proxy] = Some(version);
                    delays.push(at - renamed);
                }
                Event::Failed { proxy, error } => {
                    return Err(anyhow::Error::new(error))
                        .with_context(|| format!("edit {edit}: simulated proxy {proxy}"))
                }
            }
        }
        let bytes = self.fleet.received_bytes.load(Ordering::Relaxed) - bytes_before;
        self.wait_for_acks(deadline).await?;
        let cpu_seconds = self.control.cpu_seconds()? - cpu_before;

        let snapshot = self
            .control
            .metric("skiff_control_snapshot_version")
            .await?;
        if snapshot != snapshot_before + 1.0 {
            bail!("edit {edit}: one publication expected, the snapshot went from {snapshot_before} to {snapshot}");
        }
        let published_at = self
            .control
            .metric("skiff_control_snapshot_published_timestamp_seconds")
            .await?;
        let renamed_at = renamed_wall.duration_since(UNIX_EPOCH)?.as_secs_f64();
        let published = Duration::from_secs_f64((published_at - renamed_at).max(0.0));
        delays.sort();
        Ok(Edit {
            published,
            delays,
            cpu_seconds,
            bytes,
        })
    }

    /// Waits until the control plane has counted an ACK for every configuration received.
    async fn wait_for_acks(&self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let acks = self.control.metric("skiff_control_acks_total").await?;
            if acks as u64 == self.arrivals {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the control plane counted {acks} ACKs of {}", self.arrivals);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn report(&self, connect_time: Duration, rss: [u64; 3], edits: &[Edit]) -> serde_json::Value {
        let n = self.args.proxies;
        let [rss_idle, rss_connected, rss_after] = rss;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let edits: Vec<serde_json::Value> = edits
            .iter()
            .map(|edit| {
                let last = *edit.delays.last().expect("n > 0");
                let from_publish = |d: Duration| ms(d.saturating_sub(edit.published));
                json!({
                    "rename_to_published_ms": ms(edit.published),
                    "rename_to_last_ack_ms": ms(last),
                    "published_to_last_ack_ms": from_publish(last),
                    "published_to_first_ack_ms": from_publish(edit.delays[0]),
                    "p50_from_published_ms": from_publish(percentile(&edit.delays, 0.50)),
                    "p99_from_published_ms": from_publish(percentile(&edit.delays, 0.99)),
                    "p50_from_rename_ms": ms(percentile(&edit.delays, 0.50)),
                    "p99_from_rename_ms": ms(percentile(&edit.delays, 0.99)),
                    "control_cpu_seconds": edit.cpu_seconds,
                    "bytes_received": edit.bytes,
                })
            })
            .collect();
        json!({
            "proxies": n,
            "workloads": if self.mesh.workload_per_proxy { n } else { policy::WORKLOADS },
            "services_with_routes": policy::SERVICES,
            "endpoints_per_workload": self.mesh.endpoints_per_workload,
            "endpoint_entries": self.mesh.endpoint_entries(),
            "decode": format!("{:?}", self.args.decode).to_lowercase(),
            "max_frame_size": self.args.max_frame_size,
            "connect_rate": self.args.connect_rate,
            "connect_and_sync_seconds": connect_time.as_secs_f64(),
            "rss_kib": {"idle": rss_idle, "connected": rss_connected, "after_edits": rss_after},
            "kib_per_proxy": (rss_connected as f64 - rss_idle as f64) / n as f64,
            "edits": edits,
        })
    }
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(values: &[Duration], q: f64) -> Duration {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, as editors and
/// `kubectl cp` do, so the control plane never reads half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}

//! Setting up the demo: the [`Layout`] read from the policy directory (where each pod lives,
//! which VIP the client calls, which port the servers listen on), then the [`Demo`] itself, built
//! with the lab (`skiff-lab`): a network namespace with a bridge, one namespace per pod, the
//! control plane on the bridge, the servers, a sidecar in every pod, and the client.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use skiff_api::Policy;
use skiff_lab::{ControlPlane, Mesh, Pod, Proc, Sidecar};

use super::DemoError;

/// The client pod, by its Workload name in the policy.
pub const CLIENT: &str = "client";
/// The two versions' pods, by their Workload names; each server answers with the part after
/// `echo-` (`v1`, `v2`).
pub const VERSIONS: [&str; 2] = ["echo-v1", "echo-v2"];
/// The Service the client calls; its HTTPRoute splits the calls between the versions.
pub const SERVICE: &str = "echo";

/// The sidecars' log filter: nothing per request, so a long run does not fill the disk.
const SIDECAR_LOG: &str = "info";

/// What the demo needs to know from its policy files.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The policy directory as given (the demo never changes directory, and every process it
    /// starts shares its working directory): the control plane watches it while the demo runs,
    /// and names its files in messages the same way.
    pub policy_dir: PathBuf,
    /// The file holding the HTTPRoute, the one to edit to shift traffic.
    pub route_file: Option<PathBuf>,
    /// The Kubernetes namespace of the demo's workloads (their proxies' `--namespace`).
    pub namespace: String,
    /// The client pod's address.
    pub client_ip: Ipv4Addr,
    /// How the client's proxy gets its certificate and which identity it has.
    pub client_credentials: Credentials,
    /// The two versions, in column order.
    pub versions: [Version; 2],
    /// The `echo` VIP and port the client calls.
    pub target: SocketAddr,
    /// The port the servers listen on (the EndpointSlice port behind `echo`).
    pub server_port: u16,
}

/// One version of the `echo` service.
#[derive(Clone, Debug)]
pub struct Version {
    /// Its Workload (and pod) name, `echo-v1`.
    pub workload: String,
    /// Its pod's address.
    pub ip: Ipv4Addr,
    /// What its server answers with, `v1`.
    pub name: String,
    /// How its proxy gets its certificate and which identity it has.
    pub credentials: Credentials,
}

/// What a demo pod's Workload says about its proxy's certificate.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The Workload's `bootstrapToken`.
    pub bootstrap_token: String,
    /// The Workload's `serviceAccount`: the proxy's identity.
    pub service_account: String,
}

impl Layout {
    /// Reads and validates the policy in `dir` as the control plane will, then finds the
    /// demo's workloads, their addresses and the `echo` Service in it.
    pub fn load(dir: &Path) -> Result<Layout, DemoError> {
        let policy_dir = dir.to_path_buf();
        let files = crate::source::file::read_dir(&policy_dir)
            .map_err(|source| DemoError::ReadPolicy { source })?;
        let policy = skiff_api::load(&files)
            .map_err(|problems| DemoError::InvalidPolicy {
                dir: policy_dir.clone(),
                problems: problems.iter().map(ToString::to_string).collect(),
            })?
            .policy;
        let route_file = files
            .iter()
            .find(|(_, text)| text.contains("kind: HTTPRoute"))
            .map(|(name, _)| PathBuf::from(name));
        let layout_error = |message: String| DemoError::Layout {
            dir: policy_dir.clone(),
            message,
        };
        let client = find_workload(&policy, CLIENT, None).map_err(layout_error)?;
        let namespace = client.namespace;
        let mut versions = Vec::new();
        for workload in VERSIONS {
            let found = find_workload(&policy, workload, Some(&namespace)).map_err(layout_error)?;
            let name = workload.strip_prefix("echo-").unwrap_or(workload);
            versions.push(Version {
                workload: workload.to_string(),
                ip: found.ip,
                name: name.to_string(),
                credentials: found.credentials,
            });
        }
        let (target, server_port) = find_service(&policy, &namespace).map_err(layout_error)?;
        let layout = Layout {
            route_file,
            namespace,
            client_ip: client.ip,
            client_credentials: client.credentials,
            versions: [versions[0].clone(), versions[1].clone()],
            target,
            server_port,
            policy_dir: policy_dir.clone(),
        };
        layout.check_subnet().map_err(layout_error)?;
        Ok(layout)
    }

    /// The pods' /24: the client's.
    pub fn subnet(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.client_ip.octets();
        Ipv4Addr::new(a, b, c, 0)
    }

    /// The lab puts every pod on one /24 whose `.1` is the bridge.
    fn check_subnet(&self) -> Result<(), String> {
        let subnet = self.subnet();
        let ips = std::iter::once((CLIENT, self.client_ip))
            .chain(self.versions.iter().map(|v| (v.workload.as_str(), v.ip)));
        for (name, ip) in ips {
            let [a, b, c, d] = ip.octets();
            if Ipv4Addr::new(a, b, c, 0) != subnet || !(2..255).contains(&d) {
                return Err(format!(
                    "the demo's pods share one /24 ({subnet}/24, whose .1 is the bridge): \
                     Workload {name} has {ip}"
                ));
            }
        }
        Ok(())
    }
}

/// A demo pod's Workload, as the demo needs it.
struct Found {
    namespace: String,
    /// Its first IPv4 address.
    ip: Ipv4Addr,
    credentials: Credentials,
}

/// The Workload `name` (in `namespace` when given).
fn find_workload(policy: &Policy, name: &str, namespace: Option<&str>) -> Result<Found, String> {
    let workload = policy
        .workloads
        .iter()
        .find(|w| w.key.name == name && namespace.is_none_or(|ns| w.key.namespace == ns))
        .ok_or_else(|| {
            format!(
                "no Workload named {name}{}: the demo runs the pods {CLIENT}, {} and {}, \
                 each declared as a skiff.dev/v1alpha1 Workload with its address",
                namespace
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default(),
                VERSIONS[0],
                VERSIONS[1],
            )
        })?;
    let ip = workload
        .addresses
        .iter()
        .find_map(|ip| match ip {
            IpAddr::V4(ip) => Some(*ip),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("Workload {} has no IPv4 address", workload.key))?;
    let bootstrap_token = workload.bootstrap_token.clone().ok_or_else(|| {
        format!(
            "Workload {} has no bootstrapToken: its proxy needs one to get its first certificate",
            workload.key
        )
    })?;
    Ok(Found {
        namespace: workload.key.namespace.clone(),
        ip,
        credentials: Credentials {
            bootstrap_token,
            service_account: workload.service_account.clone(),
        },
    })
}

/// The `echo` Service's `VIP:port` (its first TCP port) and the port its endpoints listen on.
fn find_service(policy: &Policy, namespace: &str) -> Result<(SocketAddr, u16), String> {
    let service = policy
        .services
        .iter()
        .find(|s| s.key.name == SERVICE && s.key.namespace == namespace)
        .ok_or_else(|| format!("no Service {namespace}/{SERVICE}: the Service the client calls"))?;
    let vip = service
        .vips
        .iter()
        .find(|ip| ip.is_ipv4())
        .ok_or_else(|| format!("Service {} has no IPv4 cluster IP", service.key))?;
    let port = service
        .ports
        .iter()
        .find(|p| p.transport == skiff_api::policy::Transport::Tcp)
        .ok_or_else(|| format!("Service {} has no TCP port", service.key))?;
    let server_port = port
        .endpoints
        .first()
        .map(|e| e.addr.port())
        .ok_or_else(|| format!("Service {} has no endpoints", service.key))?;
    Ok((SocketAddr::new(*vip, port.port), server_port))
}

/// The programs the demo runs, all from the directory of the running `skiff`.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `skiff` itself: the servers and the client are `skiff demo-server` / `demo-client`.
    pub skiff: PathBuf,
    pub proxy: PathBuf,
    pub control: PathBuf,
}

impl Binaries {
    /// `skiff-proxy` and `skiff-control` beside the running `skiff`.
    pub fn beside_current_exe() -> Result<Binaries, DemoError> {
        let skiff = std::env::current_exe().map_err(DemoError::CurrentExe)?;
        let dir = skiff.parent().unwrap_or(Path::new("."));
        let beside = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(DemoError::MissingBinary {
                    name: name.to_string(),
                    dir: dir.to_path_buf(),
                })
            }
        };
        Ok(Binaries {
            proxy: beside("skiff-proxy")?,
            control: beside("skiff-control")?,
            skiff,
        })
    }
}

/// The running demo. Dropping it stops every process and deletes every namespace (the lab's
/// `Drop`).
pub struct Demo {
    /// The network namespace with its bridge, and the temp dir with every process's log.
    pub mesh: Mesh,
    /// `skiff-control` on the bridge, watching the policy directory.
    pub control: ControlPlane,
    /// The client pod and its sidecar: the live view shows the configuration it runs.
    pub client_pod: Pod,
    pub client_sidecar: Sidecar,
    /// The versions' pods, in [`Layout::versions`] order, and their sidecars.
    pub server_pods: Vec<Pod>,
    pub server_sidecars: Vec<Sidecar>,
    /// `skiff demo-client`: its log carries the per-second reports.
    pub client: Proc,
}

impl Demo {
    /// Builds the mesh and starts everything, saying what it does; `stopped` is asked between
    /// steps, so Ctrl-C during set-up returns [`DemoError::Interrupted`] (and whatever was built
    /// is torn down as it drops).
    pub fn start(
        layout: &Layout,
        bins: &Binaries,
        rate: u32,
        stopped: &dyn Fn() -> bool,
    ) -> Result<Demo, DemoError> {
        let step = |what: &str| {
            if stopped() {
                return Err(DemoError::Interrupted);
            }
            super::say(&format!("  {what}\n"));
            Ok(())
        };
        let mesh = Mesh::builder("demo")
            .pod_subnet(layout.subnet())
            .policy_dir(&layout.policy_dir)
            .proxy_bin(&bins.proxy)
            .control_bin(&bins.control)
            .build();
        let client_pod = mesh.pod_at(CLIENT, layout.client_ip);
        let server_pods: Vec<Pod> = layout
            .versions
            .iter()
            .map(|v| mesh.pod_at(&v.workload, v.ip))
            .collect();
        step("pods created: one network namespace each, on a bridge")?;

        let control = mesh.control_plane();
        step(&format!(
            "control plane answering on {} (mTLS; its CA's trust bundle: {})",
            control.address(),
            control.ca_bundle().display()
        ))?;

        let skiff = bins.skiff.to_str().expect("the skiff path is UTF-8");
        let port = layout.server_port.to_string();
        for (pod, version) in server_pods.iter().zip(&layout.versions) {
            pod.spawn(
                "demo-server",
                &[
                    skiff,
                    "demo-server",
                    "--name",
                    &version.name,
                    "--port",
                    &port,
                ],
            );
        }
        for pod in &server_pods {
            pod.wait_listening(layout.server_port);
        }
        step("servers listening")?;

        let sidecar = |pod: &Pod, credentials: &Credentials| -> Result<Sidecar, DemoError> {
            // The Workloads are the demo's policy files: the lab declares nothing.
            let sidecar = pod
                .sidecar()
                .control_plane(&control)
                .namespace(&layout.namespace)
                .bootstrap_token(&credentials.bootstrap_token)
                .service_account(&credentials.service_account)
                .log_filter(SIDECAR_LOG)
                .install();
            step(&format!(
                "sidecar of {} ready (configuration {})",
                pod.name(),
                sidecar.config_version()
            ))?;
            Ok(sidecar)
        };
        let server_sidecars = server_pods
            .iter()
            .zip(&layout.versions)
            .map(|(pod, version)| sidecar(pod, &version.credentials))
            .collect::<Result<Vec<_>, _>>()?;
        let client_sidecar = sidecar(&client_pod, &layout.client_credentials)?;

        let client = client_pod.spawn(
            "demo-client",
            &[
                skiff,
                "demo-client",
                "--target",
                &layout.target.to_string(),
                "--rate",
                &rate.to_string(),
            ],
        );
        Ok(Demo {
            mesh,
            control,
            client_pod,
            client_sidecar,
            server_pods,
            server_sidecars,
            client,
        })
    }
}

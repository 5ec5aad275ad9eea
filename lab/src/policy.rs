//! Renders the policy every sidecar of a mesh reads: for each service, a standard Kubernetes
//! `v1 Service` (its VIP and ports) and a `discovery.k8s.io/v1 EndpointSlice` (the pods behind
//! it), exactly as a user would paste them from a cluster. Files are written atomically (temp +
//! rename), so a running control plane never reads half of one. Standalone sidecars read the
//! files once: write services before installing them.
//!
//! In a dual-stack mesh a service is dual-stack too, as Kubernetes renders one: `clusterIPs`
//! lists an IPv4 and an IPv6 VIP, `ipFamilies: [IPv4, IPv6]`, and the pods' IPv6 addresses are
//! in a second EndpointSlice with `addressType: IPv6`. [`ServiceBuilder::ipv6_only`] declares an
//! IPv6 single-stack service instead.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::mesh::MeshInner;
use crate::pod::{Pod, NAMESPACE};

/// A service being declared; [`ServiceBuilder::apply`] writes `policy/NAME.yaml`.
pub struct ServiceBuilder {
    mesh: Arc<MeshInner>,
    name: String,
    vip: Option<Ipv4Addr>,
    vip6: Option<Ipv6Addr>,
    /// The IP families of the service.
    families: Families,
    ports: Vec<ServicePort>,
    endpoints: Vec<Endpoint>,
}

/// The IP families of a service (`spec.ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    /// IPv4 only: the default in an IPv4 mesh.
    V4,
    /// IPv4 and IPv6: the default in a dual-stack mesh.
    Dual,
    /// IPv6 only.
    V6,
}

impl Families {
    fn v4(self) -> bool {
        self != Families::V6
    }

    fn v6(self) -> bool {
        self != Families::V4
    }
}

/// One pod behind a service.
#[derive(Clone, Debug)]
struct Endpoint {
    ip: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    pod: String,
    ready: bool,
}

/// One port of a Service.
#[derive(Clone, Debug)]
pub struct ServicePort {
    /// Port name, shared by the Service and the EndpointSlice.
    pub name: String,
    /// The port clients use on the VIP.
    pub port: u16,
    /// The port the pods listen on.
    pub target_port: u16,
    /// `appProtocol`, when declared.
    pub app_protocol: Option<String>,
}

impl ServiceBuilder {
    pub(crate) fn new(mesh: Arc<MeshInner>, name: &str) -> ServiceBuilder {
        ServiceBuilder {
            name: name.to_string(),
            vip: None,
            vip6: None,
            families: if mesh.net6.is_some() {
                Families::Dual
            } else {
                Families::V4
            },
            ports: Vec::new(),
            endpoints: Vec::new(),
            mesh,
        }
    }

    /// Uses this VIP instead of the next free one of the mesh.
    pub fn vip(mut self, vip: Ipv4Addr) -> Self {
        self.vip = Some(vip);
        self
    }

    /// Uses this IPv6 VIP instead of the next free one of the mesh (makes an IPv4 service
    /// dual-stack).
    pub fn vip6(mut self, vip6: Ipv6Addr) -> Self {
        self.vip6 = Some(vip6);
        if self.families == Families::V4 {
            self.families = Families::Dual;
        }
        self
    }

    /// An IPv6 single-stack service: only an IPv6 VIP and only the IPv6 EndpointSlice.
    pub fn ipv6_only(mut self) -> Self {
        self.families = Families::V6;
        self
    }

    /// Adds a port (named `p{port}`, no `appProtocol`: the proxy detects the protocol).
    pub fn port(mut self, port: u16, target_port: u16) -> Self {
        self.ports.push(ServicePort {
            name: format!("p{port}"),
            port,
            target_port,
            app_protocol: None,
        });
        self
    }

    /// Declares `appProtocol` on the port added last.
    pub fn app_protocol(mut self, protocol: &str) -> Self {
        let port = self.ports.last_mut().expect("app_protocol after port");
        port.app_protocol = Some(protocol.to_string());
        self
    }

    /// Adds a ready endpoint: the pod's IP (and its IPv6 address, in the IPv6 slice).
    pub fn backend(mut self, pod: &Pod) -> Self {
        self.endpoints.push(Endpoint::of(pod, true));
        self
    }

    /// Adds an endpoint whose `conditions.ready` is false.
    pub fn unready_backend(mut self, pod: &Pod) -> Self {
        self.endpoints.push(Endpoint::of(pod, false));
        self
    }

    /// The YAML of the Service and its EndpointSlices (one multi-document string): `vip` and
    /// `vip6` are the cluster IPs of the families the service has.
    pub fn render(&self, vip: Option<Ipv4Addr>, vip6: Option<Ipv6Addr>) -> String {
        let mut y = String::new();
        let name = &self.name;
        let cluster_ips: Vec<String> = vip
            .map(|ip| ip.to_string())
            .into_iter()
            .chain(vip6.map(|ip| ip.to_string()))
            .collect();
        let families: Vec<&str> = vip
            .map(|_| "IPv4")
            .into_iter()
            .chain(vip6.map(|_| "IPv6"))
            .collect();
        let policy = if families.len() > 1 {
            "PreferDualStack"
        } else {
            "SingleStack"
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
             spec:\n  type: ClusterIP\n  clusterIP: {}\n  clusterIPs:\n",
            cluster_ips.first().expect("a service has a cluster IP")
        );
        for ip in &cluster_ips {
            let _ = writeln!(y, "  - {ip}");
        }
        y.push_str("  ipFamilies:\n");
        for family in &families {
            let _ = writeln!(y, "  - {family}");
        }
        let _ = write!(
            y,
            "  ipFamilyPolicy: {policy}\n  selector:\n    app: {name}\n  ports:\n"
        );
        for p in &self.ports {
            let _ = write!(
                y,
                "  - name: {}\n    protocol: TCP\n    port: {}\n    targetPort: {}\n",
                p.name, p.port, p.target_port
            );
            if let Some(proto) = &p.app_protocol {
                let _ = writeln!(y, "    appProtocol: {proto}");
            }
        }
        if vip.is_some() {
            let addresses: Vec<(String, &Endpoint)> = self
                .endpoints
                .iter()
                .map(|e| (e.ip.to_string(), e))
                .collect();
            self.render_slice(&mut y, "x1", "IPv4", &addresses);
        }
        if vip6.is_some() {
            let addresses: Vec<(String, &Endpoint)> = self
                .endpoints
                .iter()
                .map(|e| {
                    let ip6 = e.ip6.unwrap_or_else(|| {
                        panic!(
                            "service {name}: pod {} has no IPv6 address (use Mesh::new_dual_stack)",
                            e.pod
                        )
                    });
                    (ip6.to_string(), e)
                })
                .collect();
            self.render_slice(&mut y, "x6", "IPv6", &addresses);
        }
        y
    }

    /// One EndpointSlice (`NAME-SUFFIX`) of one address type.
    fn render_slice(
        &self,
        y: &mut String,
        suffix: &str,
        address_type: &str,
        addresses: &[(String, &Endpoint)],
    ) {
        let name = &self.name;
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: {name}-{suffix}\n  namespace: {NAMESPACE}\n  labels:\n    \
             kubernetes.io/service-name: {name}\n    \
             endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n\
             addressType: {address_type}\n"
        );
        if addresses.is_empty() {
            y.push_str("endpoints: []\n");
        } else {
            y.push_str("endpoints:\n");
            for (ip, endpoint) in addresses {
                let Endpoint { pod, ready, .. } = endpoint;
                let _ = write!(
                    y,
                    "- addresses:\n  - \"{ip}\"\n  conditions:\n    ready: {ready}\n    \
                     serving: {ready}\n    terminating: false\n  targetRef:\n    kind: Pod\n    \
                     name: {pod}\n    namespace: {NAMESPACE}\n"
                );
            }
        }
        y.push_str("ports:\n");
        for p in &self.ports {
            let _ = write!(
                y,
                "- name: {}\n  protocol: TCP\n  port: {}\n",
                p.name, p.target_port
            );
            if let Some(proto) = &p.app_protocol {
                let _ = writeln!(y, "  appProtocol: {proto}");
            }
        }
    }

    /// Writes `policy/NAME.yaml` and returns the service.
    pub fn apply(self) -> Service {
        assert!(!self.ports.is_empty(), "service {} has no ports", self.name);
        // One index for both families: 10.96.c.N and fd00:5c1f:K:96::N belong together.
        let index = self.mesh.next_vip_index();
        let vip = self
            .families
            .v4()
            .then(|| self.vip.unwrap_or_else(|| self.mesh.vip4(index)));
        let vip6 = self.families.v6().then(|| {
            self.vip6
                .or_else(|| self.mesh.vip6(index))
                .unwrap_or_else(|| {
                    panic!(
                    "service {}: an IPv6 VIP needs a dual-stack mesh (Mesh::new_dual_stack) or \
                     ServiceBuilder::vip6",
                    self.name
                )
                })
        });
        let yaml = self.render(vip, vip6);
        // Atomically: a running control plane polls the directory.
        self.mesh
            .write_policy(&format!("{}.yaml", self.name), &yaml);
        Service {
            name: self.name,
            vip,
            vip6,
            ports: self.ports,
        }
    }
}

impl Endpoint {
    fn of(pod: &Pod, ready: bool) -> Endpoint {
        Endpoint {
            ip: pod.ip(),
            ip6: pod.ip6(),
            pod: pod.name().to_string(),
            ready,
        }
    }
}

/// A declared service.
#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    vip: Option<Ipv4Addr>,
    vip6: Option<Ipv6Addr>,
    ports: Vec<ServicePort>,
}

impl Service {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its (IPv4) cluster IP; panics for an IPv6 single-stack service.
    pub fn vip(&self) -> Ipv4Addr {
        self.vip
            .unwrap_or_else(|| panic!("service {} is IPv6 only: use vip6()", self.name))
    }

    /// Its IPv6 cluster IP; panics unless the service has one (dual-stack or IPv6 only).
    pub fn vip6(&self) -> Ipv6Addr {
        self.vip6
            .unwrap_or_else(|| panic!("service {} has no IPv6 VIP", self.name))
    }

    /// `namespace/name`, the `service` label of its metrics.
    pub fn id(&self) -> String {
        format!("{NAMESPACE}/{}", self.name)
    }

    /// `vip:port` of its first port.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.vip(), self.ports[0].port)
    }

    /// `[vip6]:port` of its first port.
    pub fn addr6(&self) -> String {
        format!("[{}]:{}", self.vip6(), self.ports[0].port)
    }

    /// Its ports.
    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }
}

/// The bootstrap token the lab gives the Workload `namespace/name` (and its sidecar's
/// `--bootstrap-token-file`): fixed and derived from the name, which is all a test needs.
pub fn bootstrap_token(namespace: &str, name: &str) -> String {
    format!("lab-token-{namespace}-{name}")
}

/// A `skiff.dev/v1alpha1 Workload`: what a proxy of `namespace/name` may be (its service
/// account names its SPIFFE ID), at which addresses, and the token it bootstraps with.
pub fn render_workload(
    namespace: &str,
    name: &str,
    service_account: &str,
    addresses: &[std::net::IpAddr],
    bootstrap_token: &str,
) -> String {
    let addresses: Vec<String> = addresses.iter().map(|ip| format!("\"{ip}\"")).collect();
    format!(
        "apiVersion: skiff.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: {name}\n  \
         namespace: {namespace}\nspec:\n  serviceAccount: {service_account}\n  \
         addresses: [{}]\n  bootstrapToken: {bootstrap_token}\n",
        addresses.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_renders_as_valid_policy() {
        let ips = ["10.1.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        let token = bootstrap_token("default", "web");
        let yaml = render_workload("default", "web", "web", &ips, &token);
        let files = vec![("workload-web.yaml".to_string(), yaml)];
        let policy = skiff_api::load(&files).expect("valid").policy;
        let workload = &policy.workloads[0];
        assert_eq!(workload.service_account, "web");
        assert_eq!(workload.addresses, ips);
        assert_eq!(
            workload.bootstrap_token.as_deref(),
            Some("lab-token-default-web")
        );
    }
}

//! Renders the policy every sidecar of a mesh reads: for each service, a standard Kubernetes
//! `v1 Service` (its VIP and ports) and a `discovery.k8s.io/v1 EndpointSlice` (the pods behind
//! it), exactly as a user would paste them from a cluster. Write services before installing
//! sidecars: the harness does not assume the proxy reloads files.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::mesh::MeshInner;
use crate::pod::{Pod, NAMESPACE};

/// A service being declared; [`ServiceBuilder::apply`] writes `policy/NAME.yaml`.
pub struct ServiceBuilder {
    mesh: Arc<MeshInner>,
    name: String,
    vip: Option<Ipv4Addr>,
    ports: Vec<ServicePort>,
    /// (address, pod name, ready).
    endpoints: Vec<(Ipv4Addr, String, bool)>,
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
            mesh,
            name: name.to_string(),
            vip: None,
            ports: Vec::new(),
            endpoints: Vec::new(),
        }
    }

    /// Uses this VIP instead of the next free one of the mesh.
    pub fn vip(mut self, vip: Ipv4Addr) -> Self {
        self.vip = Some(vip);
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

    /// Adds a ready endpoint: the pod's IP.
    pub fn backend(mut self, pod: &Pod) -> Self {
        self.endpoints
            .push((pod.ip(), pod.name().to_string(), true));
        self
    }

    /// Adds an endpoint whose `conditions.ready` is false.
    pub fn unready_backend(mut self, pod: &Pod) -> Self {
        self.endpoints
            .push((pod.ip(), pod.name().to_string(), false));
        self
    }

    /// The YAML of the Service and its EndpointSlice (one multi-document string).
    pub fn render(&self, vip: Ipv4Addr) -> String {
        let mut y = String::new();
        let name = &self.name;
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
             spec:\n  type: ClusterIP\n  clusterIP: {vip}\n  clusterIPs:\n  - {vip}\n  \
             ipFamilies:\n  - IPv4\n  selector:\n    app: {name}\n  ports:\n"
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
        let _ = write!(
            y,
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  \
             name: {name}-x1\n  namespace: {NAMESPACE}\n  labels:\n    \
             kubernetes.io/service-name: {name}\n    \
             endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n\
             addressType: IPv4\n"
        );
        if self.endpoints.is_empty() {
            y.push_str("endpoints: []\n");
        } else {
            y.push_str("endpoints:\n");
            for (ip, pod, ready) in &self.endpoints {
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
        y
    }

    /// Writes `policy/NAME.yaml` and returns the service.
    pub fn apply(self) -> Service {
        assert!(!self.ports.is_empty(), "service {} has no ports", self.name);
        let vip = self.vip.unwrap_or_else(|| self.mesh.next_vip());
        let yaml = self.render(vip);
        let path = self
            .mesh
            .dir
            .join("policy")
            .join(format!("{}.yaml", self.name));
        std::fs::write(&path, yaml)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Service {
            name: self.name,
            vip,
            ports: self.ports,
        }
    }
}

/// A declared service.
#[derive(Clone, Debug)]
pub struct Service {
    name: String,
    vip: Ipv4Addr,
    ports: Vec<ServicePort>,
}

impl Service {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its cluster IP.
    pub fn vip(&self) -> Ipv4Addr {
        self.vip
    }

    /// `namespace/name`, the `service` label of its metrics.
    pub fn id(&self) -> String {
        format!("{NAMESPACE}/{}", self.name)
    }

    /// `vip:port` of its first port.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.vip, self.ports[0].port)
    }

    /// Its ports.
    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }
}

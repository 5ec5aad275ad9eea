//! The configuration snapshot every connection decides from: which VIP:port is which service,
//! its endpoints and declared protocol. Immutable once built; a new policy builds a new one.
//!
//! In standalone mode the snapshot is loaded from local YAML files holding Kubernetes
//! `Service` and `EndpointSlice` documents (the same documents the control plane will serve).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use skiff_api::k8s::{EndpointSlice, Service};
use skiff_api::{parse_documents, DocumentError, Resource};

use crate::detect::Protocol;

/// One port of one Service, with the endpoints behind it.
#[derive(Debug, Serialize)]
pub struct ServiceTarget {
    /// `namespace/name`; the metric label and the name in logs.
    pub name: Arc<str>,
    /// The port the app dials on the VIP.
    pub port: u16,
    /// From the port's `appProtocol`; `None` means detect from the first bytes.
    pub protocol: Option<Protocol>,
    /// Ready endpoints (pod IP and resolved target port).
    pub endpoints: Vec<SocketAddr>,
    /// Round-robin cursor; balancer state that lives as long as this snapshot.
    #[serde(skip)]
    next: AtomicUsize,
}

impl ServiceTarget {
    /// Picks the next endpoint round-robin, or `None` when the service has none ready.
    pub fn pick_endpoint(&self) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(self.endpoints[index])
    }
}

/// Everything a proxy knows about the mesh at one point in time.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Where the snapshot came from and when, for `/config_dump`.
    pub source: String,
    /// Service ports by VIP:port (every cluster IP of the service).
    pub outbound: BTreeMap<SocketAddr, Arc<ServiceTarget>>,
    /// Service ports this pod is an endpoint of, by target port: names inbound metrics and
    /// carries the declared protocol.
    pub inbound: BTreeMap<u16, Arc<ServiceTarget>>,
}

impl Snapshot {
    /// The service a connection to `original_dst` is for.
    pub fn service_at(&self, original_dst: SocketAddr) -> Option<&Arc<ServiceTarget>> {
        self.outbound.get(&original_dst)
    }

    /// Builds a snapshot from parsed resources, as seen from the pod with `pod_ips`.
    pub fn build(
        source: String,
        resources: &[Resource],
        pod_ips: &[IpAddr],
    ) -> Result<Snapshot, Vec<String>> {
        let mut errors = Vec::new();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for resource in resources {
            if let Resource::EndpointSlice(slice) = resource {
                match slice.service_name() {
                    Some(service) => slices
                        .entry((slice.metadata.namespace.as_str(), service))
                        .or_default()
                        .push(slice),
                    None => errors.push(format!(
                        "EndpointSlice {}/{}: metadata.labels: missing kubernetes.io/service-name",
                        slice.metadata.namespace, slice.metadata.name
                    )),
                }
            }
        }
        let mut snapshot = Snapshot {
            source,
            ..Snapshot::default()
        };
        for resource in resources {
            let Resource::Service(service) = resource else {
                continue;
            };
            let service_slices = slices
                .get(&(
                    service.metadata.namespace.as_str(),
                    service.metadata.name.as_str(),
                ))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Err(e) = add_service(&mut snapshot, service, service_slices, pod_ips) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(snapshot)
        } else {
            Err(errors)
        }
    }
}

fn add_service(
    snapshot: &mut Snapshot,
    service: &Service,
    slices: &[&EndpointSlice],
    pod_ips: &[IpAddr],
) -> Result<(), String> {
    let name: Arc<str> = Arc::from(format!(
        "{}/{}",
        service.metadata.namespace, service.metadata.name
    ));
    let mut vips = Vec::new();
    for (index, ip) in service
        .spec
        .cluster_ip
        .iter()
        .chain(&service.spec.cluster_ips)
        .enumerate()
    {
        if ip == "None" || ip.is_empty() {
            continue; // headless: apps dial pod IPs directly
        }
        let field = if index == 0 {
            "spec.clusterIP".to_string()
        } else {
            format!("spec.clusterIPs[{}]", index - 1)
        };
        let vip: IpAddr = ip
            .parse()
            .map_err(|_| format!("Service {name}: {field}: {ip:?} is not an IP address"))?;
        if !vips.contains(&vip) {
            vips.push(vip);
        }
    }
    for (index, port) in service.spec.ports.iter().enumerate() {
        if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue; // UDP and SCTP are not proxied
        }
        let protocol = match port.app_protocol.as_deref() {
            Some(declared) => Protocol::from_app_protocol(declared)
                .ok_or_else(|| format!("Service {name}: spec.ports[{index}].appProtocol: unknown value {declared:?}"))
                .map(Some)?,
            None => None,
        };
        let mut endpoints = Vec::new();
        for slice in slices {
            let Some(slice_port) = slice
                .ports
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or(""))
            else {
                continue;
            };
            let Some(target_port) = slice_port.port else {
                continue;
            };
            for endpoint in slice.endpoints.iter().filter(|e| e.conditions.is_ready()) {
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                let ip: IpAddr = address.parse().map_err(|_| {
                    format!(
                        "EndpointSlice {}/{}: endpoints[].addresses: {address:?} is not an IP address",
                        slice.metadata.namespace, slice.metadata.name
                    )
                })?;
                endpoints.push(SocketAddr::new(ip, target_port));
            }
        }
        let target = Arc::new(ServiceTarget {
            name: name.clone(),
            port: port.port,
            protocol,
            endpoints,
            next: AtomicUsize::new(0),
        });
        for endpoint in &target.endpoints {
            if pod_ips.contains(&endpoint.ip()) {
                snapshot
                    .inbound
                    .entry(endpoint.port())
                    .or_insert_with(|| target.clone());
            }
        }
        for vip in &vips {
            let addr = SocketAddr::new(*vip, port.port);
            if let Some(existing) = snapshot.outbound.insert(addr, target.clone()) {
                return Err(format!(
                    "Service {name}: {addr} is also the address of Service {}",
                    existing.name
                ));
            }
        }
    }
    Ok(())
}

/// Why the policy files could not be loaded; the previous snapshot (if any) stays in force.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

/// Reads every `.yaml`/`.yml` file under the given files or directories (sorted, not
/// recursive) and builds a snapshot for the pod with `pod_ips`. Every problem is reported.
pub fn load(paths: &[PathBuf], pod_ips: &[IpAddr]) -> Result<Snapshot, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        let read_error = |source| LoadError::Read {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(read_error)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        match parse_documents(&file.display().to_string(), &text) {
            Ok(parsed) => resources.extend(parsed),
            Err(problems) => errors.extend(problems.iter().map(DocumentError::to_string)),
        }
    }
    if !errors.is_empty() {
        return Err(LoadError::Invalid(errors));
    }
    let source = format!(
        "files: {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Snapshot::build(source, &resources, pod_ips).map_err(LoadError::Invalid)
}

/// The snapshot in force, swapped whole when policy changes. Readers clone the `Arc` and
/// never hold the lock across an `.await`.
#[derive(Default)]
pub struct SnapshotHandle {
    current: RwLock<Arc<Snapshot>>,
}

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotHandle {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn replace(&self, snapshot: Snapshot) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }
}

/// Builds a snapshot from the text of one policy file.
#[cfg(test)]
pub fn load_text(
    file: &std::path::Path,
    text: &str,
    pod_ips: &[IpAddr],
) -> Result<Snapshot, LoadError> {
    let resources = parse_documents(&file.display().to_string(), text).map_err(|problems| {
        LoadError::Invalid(problems.iter().map(DocumentError::to_string).collect())
    })?;
    Snapshot::build(file.display().to_string(), &resources, pod_ips).map_err(LoadError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const POLICY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
  - {name: db, port: 5432, targetPort: 5432}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: shop
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
endpoints:
- addresses: [10.0.0.5]
- addresses: [10.0.0.6]
  conditions: {ready: true}
- addresses: [10.0.0.7]
  conditions: {ready: false}
ports:
- {name: http, port: 8080}
- {name: db, port: 5432}
";

    fn snapshot(pod_ip: &str) -> Snapshot {
        load_text(Path::new("policy.yaml"), POLICY, &[pod_ip.parse().unwrap()]).unwrap()
    }

    #[test]
    fn vip_ports_map_to_ready_endpoints_on_the_target_port() {
        let snapshot = snapshot("10.0.0.9");
        let http = snapshot
            .service_at("10.96.0.10:80".parse().unwrap())
            .unwrap();
        assert_eq!(&*http.name, "shop/echo");
        assert_eq!(http.protocol, Some(Protocol::Http1));
        assert_eq!(
            http.endpoints,
            vec![
                "10.0.0.5:8080".parse().unwrap(),
                "10.0.0.6:8080".parse().unwrap()
            ]
        );
        let db = snapshot
            .service_at("10.96.0.10:5432".parse().unwrap())
            .unwrap();
        assert_eq!(db.protocol, None);
        assert!(snapshot
            .service_at("10.96.0.10:81".parse().unwrap())
            .is_none());
        assert!(snapshot.inbound.is_empty(), "10.0.0.9 is no endpoint");
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let snapshot = snapshot("10.0.0.9");
        let http = snapshot
            .service_at("10.96.0.10:80".parse().unwrap())
            .unwrap();
        let picks: Vec<_> = (0..4)
            .map(|_| http.pick_endpoint().unwrap().ip().to_string())
            .collect();
        assert_eq!(picks, ["10.0.0.5", "10.0.0.6", "10.0.0.5", "10.0.0.6"]);
    }

    #[test]
    fn an_endpoint_pod_knows_its_inbound_services() {
        let snapshot = snapshot("10.0.0.5");
        assert_eq!(&*snapshot.inbound[&8080].name, "shop/echo");
        assert_eq!(&*snapshot.inbound[&5432].name, "shop/echo");
    }

    #[test]
    fn invalid_values_are_reported_with_their_field() {
        let text = POLICY
            .replace("appProtocol: http", "appProtocol: carrier-pigeon")
            .replace("10.96.0.10", "10.96.0.300");
        let Err(LoadError::Invalid(errors)) = load_text(Path::new("p.yaml"), &text, &[]) else {
            panic!("accepted")
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("spec.clusterIP"), "{errors:?}");
    }

    #[test]
    fn two_services_on_one_address_are_refused() {
        let text = format!(
            "{POLICY}---\n{}",
            POLICY
                .split("---")
                .next()
                .unwrap()
                .replace("name: echo,", "name: other,")
        );
        let Err(LoadError::Invalid(errors)) = load_text(Path::new("p.yaml"), &text, &[]) else {
            panic!("accepted")
        };
        assert!(errors[0].contains("also the address"), "{errors:?}");
    }
}

//! Workloads, Services and EndpointSlices: addresses and workload labels parsed, ports checked,
//! each endpoint tied to its Service port and to the Workload behind it, and no two Services on
//! one VIP:port.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Shortest bootstrap token accepted: anyone who can reach the control plane may try tokens.
pub const MIN_BOOTSTRAP_TOKEN_BYTES: usize = 16;

use super::{fields, has_errors, key_of, selector, Known, Lookup};
use crate::config::AppProtocol;
use crate::document::Located;
use crate::k8s::{EndpointSlice, IntOrString, ObjectReference, Service, SERVICE_NAME_LABEL};
use crate::policy::{self, ObjectKey, Transport};
use crate::problem::Problem;
use crate::skiff_kinds::Workload;

pub(crate) type Workloads = Known<policy::Workload>;
pub(crate) type Services = Known<policy::Service>;

pub(super) fn workloads(list: &[Located<Workload>], problems: &mut Vec<Problem>) -> Workloads {
    let mut workloads = Workloads::default();
    // Which workload claimed each address first, and where.
    let mut owners: HashMap<IpAddr, (ObjectKey, String)> = HashMap::new();
    for workload in list {
        let key = key_of(&workload.value.metadata);
        let spec = &workload.value.spec;
        let mut found = Vec::new();
        selector::labels(workload, &workload.value.metadata.labels, &mut found);
        if let Err(message) = fields::object_name(&spec.service_account) {
            found.push(workload.error("spec.serviceAccount", message));
        }
        let mut addresses = Vec::new();
        for (at, address) in spec.addresses.iter().enumerate() {
            let path = format!("spec.addresses[{at}]");
            let Ok(ip) = address.parse::<IpAddr>() else {
                found.push(workload.error(path, format!("{address:?} is not an IP address")));
                continue;
            };
            if let Some((owner, place)) = owners.get(&ip) {
                let message = if *owner == key {
                    format!("{ip} is listed twice")
                } else {
                    format!("{ip} is already the address of Workload {owner} ({place})")
                };
                found.push(workload.error(path, message));
                continue;
            }
            owners.insert(ip, (key.clone(), workload.place(&path)));
            addresses.push(ip);
        }
        if let Some(token) = spec.bootstrap_token.as_deref() {
            if token.len() < MIN_BOOTSTRAP_TOKEN_BYTES {
                found.push(workload.error(
                    "spec.bootstrapToken",
                    format!(
                        "must be at least {MIN_BOOTSTRAP_TOKEN_BYTES} characters, so it cannot \
                         be guessed; leave the field out if the workload has no token"
                    ),
                ));
            }
        }
        let outcome = (!has_errors(&found)).then(|| {
            workload.with(policy::Workload {
                key: key.clone(),
                service_account: spec.service_account.clone(),
                addresses,
                bootstrap_token: spec.bootstrap_token.clone(),
                labels: workload.value.metadata.labels.clone(),
            })
        });
        problems.extend(found);
        workloads.insert(key, outcome);
    }
    workloads
}

/// Finds the Workload behind an endpoint.
struct WorkloadFinder<'a> {
    by_address: HashMap<IpAddr, &'a ObjectKey>,
    workloads: &'a Workloads,
}

impl<'a> WorkloadFinder<'a> {
    fn new(workloads: &'a Workloads) -> Self {
        let by_address = workloads
            .valid
            .iter()
            .flat_map(|(key, w)| w.value.addresses.iter().map(move |ip| (*ip, key)))
            .collect();
        WorkloadFinder {
            by_address,
            workloads,
        }
    }

    /// The Workload claiming `ip`, else the one named by a `Pod` target reference.
    fn find(
        &self,
        ip: IpAddr,
        target: Option<&ObjectReference>,
        namespace: &str,
    ) -> Option<ObjectKey> {
        if let Some(key) = self.by_address.get(&ip) {
            return Some((*key).clone());
        }
        let target = target.filter(|t| t.kind.as_deref() == Some("Pod"))?;
        let key = ObjectKey::new(
            target.namespace.as_deref().unwrap_or(namespace),
            target.name.as_deref()?,
        );
        self.workloads.valid.contains_key(&key).then_some(key)
    }
}

/// An EndpointSlice, checked.
struct Slice {
    service: ObjectKey,
    place: Located<()>,
    /// Port name (empty when unnamed) → target port.
    ports: Vec<(String, u16)>,
    endpoints: Vec<(IpAddr, bool, Option<ObjectKey>)>,
}

pub(super) fn services(
    list: &[Located<Service>],
    slices: &[Located<EndpointSlice>],
    workloads: &Workloads,
    problems: &mut Vec<Problem>,
) -> Services {
    let finder = WorkloadFinder::new(workloads);
    let mut slices_by_service: HashMap<ObjectKey, Vec<Slice>> = HashMap::new();
    for slice in slices {
        if let Some(checked) = endpoint_slice(slice, &finder, problems) {
            slices_by_service
                .entry(checked.service.clone())
                .or_default()
                .push(checked);
        }
    }
    let mut services = Services::default();
    // Which Service took each VIP:port first, and where.
    let mut listeners: HashMap<(IpAddr, u16, Transport), (ObjectKey, String)> = HashMap::new();
    for service in list {
        let key = key_of(&service.value.metadata);
        let slices = slices_by_service.remove(&key).unwrap_or_default();
        let mut found = Vec::new();
        let checked = check_service(service, &key, &slices, &mut found);
        for (at, port) in checked.ports.iter().enumerate() {
            for vip in &checked.vips {
                let path = format!("spec.ports[{at}].port");
                let listener = (*vip, port.port, port.transport);
                match listeners.get(&listener) {
                    Some((owner, place)) => found.push(service.error(
                        path,
                        format!(
                            "{} is also the address of Service {owner} ({place}); \
                             two Services cannot share a VIP and port",
                            SocketAddr::new(*vip, port.port)
                        ),
                    )),
                    None => {
                        listeners.insert(listener, (key.clone(), service.place(&path)));
                    }
                }
            }
        }
        let outcome = (!has_errors(&found)).then(|| service.with(checked));
        problems.extend(found);
        services.insert(key, outcome);
    }
    for (key, orphans) in slices_by_service {
        for slice in orphans {
            if matches!(services.lookup(&key), Lookup::Missing) {
                problems.push(slice.place.warning(
                    format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
                    format!("Service {key} does not exist, so this slice's endpoints are unused"),
                ));
            }
        }
    }
    services
}

fn check_service(
    service: &Located<Service>,
    key: &ObjectKey,
    slices: &[Slice],
    found: &mut Vec<Problem>,
) -> policy::Service {
    let spec = &service.value.spec;
    let mut vips: Vec<IpAddr> = Vec::new();
    let headless = |ip: &str| ip.is_empty() || ip == "None";
    let cluster_ip = spec.cluster_ip.as_deref().filter(|ip| !headless(ip));
    let mut add_vip =
        |path: String, text: &str, found: &mut Vec<Problem>| match text.parse::<IpAddr>() {
            Ok(ip) if vips.iter().any(|v| v.is_ipv4() == ip.is_ipv4() && *v != ip) => {
                found.push(service.error(
                    path,
                    format!("{ip}: a Service has at most one cluster IP per IP family"),
                ))
            }
            Ok(ip) if !vips.contains(&ip) => vips.push(ip),
            Ok(_) => {}
            Err(_) => found.push(service.error(
                path,
                format!("{text:?} is not an IP address (use \"None\" for a headless Service)"),
            )),
        };
    if let Some(ip) = cluster_ip {
        add_vip("spec.clusterIP".to_string(), ip, found);
    }
    for (at, ip) in spec.cluster_ips.iter().enumerate() {
        let path = format!("spec.clusterIPs[{at}]");
        if at == 0 && cluster_ip.is_some() && Some(ip.as_str()) != cluster_ip {
            found.push(service.error(path, format!("{ip:?} must equal spec.clusterIP")));
        } else if !headless(ip) {
            add_vip(path, ip, found);
        }
    }

    let mut ports = Vec::new();
    let several = spec.ports.len() > 1;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut numbers: HashMap<(u16, Transport), usize> = HashMap::new();
    for (at, port) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{at}]");
        let error =
            |field: &str, message: String| service.error(format!("{path}.{field}"), message);
        match port.name.as_deref() {
            None | Some("") if several => found.push(error(
                "name",
                "required when a Service has several ports (it ties the port to its \
                 EndpointSlice port)"
                    .to_string(),
            )),
            Some(name) if !name.is_empty() => {
                if let Err(message) = fields::label_name(name) {
                    found.push(error("name", message));
                } else if let Some(first) = names.insert(name, at) {
                    found.push(error(
                        "name",
                        format!("{name:?} is already the name of spec.ports[{first}]"),
                    ));
                }
            }
            _ => {}
        }
        let transport = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Transport::Tcp,
            "UDP" => Transport::Udp,
            "SCTP" => Transport::Sctp,
            other => {
                found.push(error(
                    "protocol",
                    format!("unknown value {other:?}; allowed: TCP, UDP, SCTP"),
                ));
                Transport::Tcp
            }
        };
        if port.port == 0 {
            found.push(error(
                "port",
                "0 is not a port; must be between 1 and 65535".to_string(),
            ));
        } else if let Some(first) = numbers.insert((port.port, transport), at) {
            found.push(error(
                "port",
                format!(
                    "port {} is already declared by spec.ports[{first}]",
                    port.port
                ),
            ));
        }
        match &port.target_port {
            Some(IntOrString::Int(number)) => {
                if let Err(message) = fields::port(*number) {
                    found.push(error("targetPort", message));
                }
            }
            Some(IntOrString::String(name)) => {
                if let Err(message) = fields::label_name(name) {
                    found.push(error("targetPort", message));
                }
            }
            None => {}
        }
        let protocol = match port.app_protocol.as_deref() {
            None => None,
            Some(declared) => match AppProtocol::from_declared(declared) {
                Some(protocol) => Some(protocol),
                None => {
                    found.push(error(
                        "appProtocol",
                        format!(
                            "unknown appProtocol {declared:?}; known: {}",
                            AppProtocol::KNOWN
                        ),
                    ));
                    None
                }
            },
        };
        let name = port.name.clone().filter(|n| !n.is_empty());
        let endpoints = endpoints_of(name.as_deref().unwrap_or(""), slices);
        ports.push(policy::ServicePort {
            name,
            port: port.port,
            transport,
            protocol,
            endpoints,
        });
    }
    policy::Service {
        key: key.clone(),
        vips,
        ports,
    }
}

/// The endpoints of the Service port named `name` (empty: the unnamed port): every endpoint of
/// every slice that has a port of that name, at that port's number.
fn endpoints_of(name: &str, slices: &[Slice]) -> Vec<policy::Endpoint> {
    let mut endpoints = Vec::new();
    for slice in slices {
        let Some((_, target_port)) = slice.ports.iter().find(|(n, _)| n == name) else {
            continue;
        };
        for (ip, ready, workload) in &slice.endpoints {
            endpoints.push(policy::Endpoint {
                addr: SocketAddr::new(*ip, *target_port),
                ready: *ready,
                workload: workload.clone(),
            });
        }
    }
    endpoints
}

fn endpoint_slice(
    slice: &Located<EndpointSlice>,
    finder: &WorkloadFinder<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Slice> {
    let value = &slice.value;
    let namespace = &value.metadata.namespace;
    let mut found = Vec::new();
    let service = value.service_name();
    if service.is_none() {
        found.push(slice.error(
            "metadata.labels",
            format!("missing the label {SERVICE_NAME_LABEL:?} that names the slice's Service"),
        ));
    }
    let family_v4 = match value.address_type.as_str() {
        "IPv4" => true,
        "IPv6" => false,
        "FQDN" => {
            problems.push(slice.warning(
                "addressType",
                "FQDN endpoint slices are not supported; this slice is ignored",
            ));
            return None;
        }
        other => {
            found.push(slice.error(
                "addressType",
                format!("unknown value {other:?}; allowed: IPv4, IPv6, FQDN"),
            ));
            true
        }
    };
    let mut endpoints = Vec::new();
    for (at, endpoint) in value.endpoints.iter().enumerate() {
        let path = format!("endpoints[{at}].addresses");
        let Some(address) = endpoint.addresses.first() else {
            found.push(slice.error(path, "must list at least one address"));
            continue;
        };
        match address.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv4() == family_v4 => {
                let workload = finder.find(ip, endpoint.target_ref.as_ref(), namespace);
                endpoints.push((ip, endpoint.conditions.is_ready(), workload));
            }
            Ok(ip) => found.push(slice.error(
                format!("{path}[0]"),
                format!("{ip} does not match addressType {}", value.address_type),
            )),
            Err(_) => found.push(slice.error(
                format!("{path}[0]"),
                format!("{address:?} is not an IP address"),
            )),
        }
    }
    let mut ports = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (at, port) in value.ports.iter().enumerate() {
        let name = port.name.as_deref().unwrap_or("");
        if !seen.insert(name) {
            found.push(slice.error(
                format!("ports[{at}].name"),
                format!("port name {name:?} appears twice"),
            ));
        }
        match port.port {
            Some(0) => found.push(slice.error(
                format!("ports[{at}].port"),
                "0 is not a port; must be between 1 and 65535",
            )),
            Some(number) => ports.push((name.to_string(), number)),
            None => {}
        }
    }
    let valid = !has_errors(&found);
    problems.extend(found);
    let service = service?;
    valid.then(|| Slice {
        service: ObjectKey::new(namespace, service),
        place: slice.with(()),
        ports,
        endpoints,
    })
}

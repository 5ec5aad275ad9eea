//! Standalone mode: the configuration a proxy would receive from the control plane, computed
//! from local policy files instead.

use std::net::{IpAddr, SocketAddr};

use skiff_api::config::{
    AppProtocol, Endpoint, InboundPort, PortConfig, ProxyConfig, ServiceConfig, WorkloadRef,
};
use skiff_api::{parse_documents, DocumentError, Resource};

use crate::detect::Protocol;
use crate::policy::LoadError;

/// Parses `(file name, text)` pairs and computes the configuration of `workload`.
pub fn standalone_config(
    files: &[(String, String)],
    workload: &WorkloadRef,
    pod_ips: &[IpAddr],
) -> Result<ProxyConfig, LoadError> {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in files {
        match parse_documents(file, text) {
            Ok(parsed) => resources.extend(parsed),
            Err(problems) => errors.extend(problems.iter().map(DocumentError::to_string)),
        }
    }
    let mut config = ProxyConfig {
        version: "local".into(),
        workload: workload.clone(),
        ..ProxyConfig::default()
    };
    for resource in &resources {
        let Resource::Service(service) = resource else {
            continue;
        };
        let name = format!("{}/{}", service.metadata.namespace, service.metadata.name);
        let mut vips = Vec::new();
        for ip in service
            .spec
            .cluster_ip
            .iter()
            .chain(&service.spec.cluster_ips)
        {
            if ip == "None" || ip.is_empty() {
                continue;
            }
            match ip.parse::<IpAddr>() {
                Ok(vip) if !vips.contains(&vip) => vips.push(vip),
                Ok(_) => {}
                Err(_) => errors.push(format!(
                    "Service {name}: spec.clusterIP: {ip:?} is not an IP address"
                )),
            }
        }
        let mut ports = Vec::new();
        for (index, port) in service.spec.ports.iter().enumerate() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let protocol = match port.app_protocol.as_deref() {
                None => None,
                Some(declared) => match Protocol::from_app_protocol(declared) {
                    Some(Protocol::Http1) => Some(AppProtocol::Http1),
                    Some(Protocol::Http2) => Some(AppProtocol::Http2),
                    Some(Protocol::Tcp) => Some(AppProtocol::Tcp),
                    None => {
                        errors.push(format!("Service {name}: spec.ports[{index}].appProtocol: unknown value {declared:?}"));
                        None
                    }
                },
            };
            let mut endpoints = Vec::new();
            for resource in &resources {
                let Resource::EndpointSlice(slice) = resource else {
                    continue;
                };
                if slice.metadata.namespace != service.metadata.namespace
                    || slice.service_name() != Some(service.metadata.name.as_str())
                {
                    continue;
                }
                let wanted = port.name.as_deref().unwrap_or("");
                let Some(target) = slice
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == wanted)
                    .and_then(|p| p.port)
                else {
                    continue;
                };
                for endpoint in slice.endpoints.iter().filter(|e| e.conditions.is_ready()) {
                    let Some(address) = endpoint.addresses.first() else {
                        continue;
                    };
                    match address.parse::<IpAddr>() {
                        Ok(ip) => endpoints.push(Endpoint { addr: SocketAddr::new(ip, target), workload: None }),
                        Err(_) => errors.push(format!(
                            "EndpointSlice {}/{}: endpoints[].addresses: {address:?} is not an IP address",
                            slice.metadata.namespace, slice.metadata.name
                        )),
                    }
                }
            }
            for endpoint in &endpoints {
                if pod_ips.contains(&endpoint.addr.ip())
                    && !config
                        .inbound
                        .iter()
                        .any(|p| p.port == endpoint.addr.port())
                {
                    config.inbound.push(InboundPort {
                        port: endpoint.addr.port(),
                        service: name.clone(),
                        protocol,
                    });
                }
            }
            ports.push(PortConfig {
                port: port.port,
                protocol,
                endpoints,
                routes: Vec::new(),
            });
        }
        config.services.push(ServiceConfig { name, vips, ports });
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

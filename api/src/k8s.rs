//! Kubernetes resources as the API server returns them, reduced to the fields Skiff reads.
//!
//! Fields Skiff does not use (`status`, `metadata.managedFields`, `spec.sessionAffinity`, …) are
//! accepted and ignored, because these documents are pasted from real clusters. The Gateway API
//! and Skiff's own kinds ([`crate::gateway`], [`crate::skiff_kinds`]) reject unknown fields
//! instead, so that typos are caught; their `metadata` is this same [`ObjectMeta`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata` of any resource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Resource name, unique per kind within the namespace.
    pub name: String,
    /// Kubernetes defaults a missing namespace to `default`; so do we.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// EndpointSlices name their Service through the `kubernetes.io/service-name` label.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Skiff's per-resource switches live in annotations (`skiff.dev/...`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Set by the API server (RFC 3339, like `2024-05-01T12:00:00Z`); the Gateway API breaks
    /// ties between conflicting routes in favour of the oldest. Absent in hand-written files,
    /// where such a route counts as newer than any that has one.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// `v1 Service`: a stable virtual IP and ports in front of a set of endpoints.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Name and namespace: the Service's `namespace/name`.
    pub metadata: ObjectMeta,
    /// VIPs and ports.
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// The virtual IP the app dials; `None` or `"None"` for headless services.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Dual-stack services list one VIP per family here; the first equals `clusterIP`.
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

/// One port of a Service.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required by Kubernetes when a Service has several ports; ties the port to the
    /// EndpointSlice port of the same name.
    #[serde(default)]
    pub name: Option<String>,
    /// `TCP` (the default), `UDP` or `SCTP`; Skiff proxies TCP only.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The port the app dials on the VIP.
    pub port: u16,
    /// The port on the endpoints. EndpointSlices already carry the resolved number, so Skiff
    /// reads it from there; kept for `config_dump` fidelity.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// Declared application protocol (`http`, `kubernetes.io/h2c`, `grpc`, `tcp`, …); when
    /// present the sidecar skips protocol detection.
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// Kubernetes' `IntOrString`, as used by `targetPort`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// `discovery.k8s.io/v1 EndpointSlice`: a chunk of a Service's endpoints.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Names the slice; its `kubernetes.io/service-name` label names its Service.
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`; Skiff uses IP slices only.
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

impl EndpointSlice {
    /// The Service this slice belongs to (`kubernetes.io/service-name` label).
    pub fn service_name(&self) -> Option<&str> {
        self.metadata
            .labels
            .get(SERVICE_NAME_LABEL)
            .map(String::as_str)
    }
}

/// The label by which an EndpointSlice names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One backend (usually a pod) of a slice.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Kubernetes allows several, but consumers use the first (all are fungible).
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    /// The pod behind the endpoint; its identity is derived from it in later issues.
    #[serde(default)]
    pub target_ref: Option<ObjectReference>,
}

/// Readiness of an endpoint. Kubernetes says an unset `ready` means ready.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// Whether traffic may be sent to the endpoint.
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }
}

/// A reference to another object (an endpoint's pod).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// A port of an EndpointSlice: the resolved target port of the Service port of the same name.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

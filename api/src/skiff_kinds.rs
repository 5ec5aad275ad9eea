//! Skiff's own kinds, group `skiff.dev/v1alpha1`: what the Gateway API lacks. Every spec refuses
//! unknown fields, and every field has a documented default.
//!
//! - [`Workload`]: a pod's identity in file mode (in a cluster the Pod itself plays this part).
//! - [`TrafficPolicy`]: how callers treat a Service (connect timeout now; retry budget, outlier
//!   detection, circuit breaking and more arrive with the resilience issue).
//! - [`InboundPolicy`]: how a workload treats incoming connections (mTLS mode now;
//!   authorization arrives with the mTLS issue).

use serde::Deserialize;

use crate::k8s::ObjectMeta;

/// `apiVersion` of every kind in this module.
pub const API_VERSION: &str = "skiff.dev/v1alpha1";
/// The API group of Skiff's kinds, as written in a `targetRef`.
pub const GROUP: &str = "skiff.dev";

/// `Workload`: the file-mode stand-in for a Pod. An EndpointSlice endpoint belongs to the
/// Workload whose `addresses` contain the endpoint's address, or whose name is the endpoint's
/// `targetRef.name` (kind `Pod`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `Workload`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace.
    pub metadata: ObjectMeta,
    pub spec: WorkloadSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    /// The identity the workload's certificate carries
    /// (`spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`). Default `default`.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The pod's IP addresses (one per family). Default: none (then endpoints find the
    /// workload through their `targetRef`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The secret a proxy of this workload presents to get its first certificate in file mode
    /// (in a cluster, the pod's service-account token does). Default: none, and such a proxy
    /// cannot get a certificate.
    #[serde(default)]
    pub bootstrap_token: Option<String>,
}

fn default_service_account() -> String {
    "default".to_string()
}

/// `TrafficPolicy`: how callers connect to a Service (or one port of it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `TrafficPolicy`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace.
    pub metadata: ObjectMeta,
    pub spec: TrafficPolicySpec,
}

/// Grows with the resilience issue: each new field gets a default, so older files stay valid.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    /// The Service (in the policy's namespace) this policy applies to.
    pub target_ref: ServiceTargetRef,
    /// How long a caller waits for a TCP connection to an endpoint (a Gateway API duration,
    /// like `500ms`). Default `1s`.
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

/// The Service a [`TrafficPolicy`] applies to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceTargetRef {
    /// Must be `""` (the core group). Default `""`.
    #[serde(default)]
    pub group: String,
    /// Must be `Service`. Default `Service`.
    #[serde(default = "service_kind")]
    pub kind: String,
    /// The Service, in the policy's namespace.
    pub name: String,
    /// One port of the Service (1–65535). Default: every port.
    #[serde(default)]
    pub port: Option<i64>,
}

fn service_kind() -> String {
    "Service".to_string()
}

/// `InboundPolicy`: how a workload treats incoming connections.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicy {
    /// `skiff.dev/v1alpha1`.
    pub api_version: String,
    /// `InboundPolicy`.
    pub kind: String,
    /// Name and namespace; a `targetRef` names the object in the policy's namespace.
    pub metadata: ObjectMeta,
    pub spec: InboundPolicySpec,
}

/// Grows with the mTLS issue (authorization rules, rate limits).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicySpec {
    /// The Workload (in the policy's namespace) this policy applies to.
    pub target_ref: WorkloadTargetRef,
    /// Default: `mode: PERMISSIVE`.
    #[serde(default)]
    pub mtls: Mtls,
}

/// The Workload an [`InboundPolicy`] applies to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadTargetRef {
    /// Must be `skiff.dev`. Default `skiff.dev`.
    #[serde(default = "skiff_group")]
    pub group: String,
    /// Must be `Workload`. Default `Workload`.
    #[serde(default = "workload_kind")]
    pub kind: String,
    /// The Workload, in the policy's namespace.
    pub name: String,
}

fn skiff_group() -> String {
    GROUP.to_string()
}

fn workload_kind() -> String {
    "Workload".to_string()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// Default `PERMISSIVE`.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// Whether a workload accepts plaintext from clients outside the mesh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    /// Only mTLS from sidecars.
    Strict,
    /// mTLS from sidecars, plaintext from anyone else.
    #[default]
    Permissive,
}

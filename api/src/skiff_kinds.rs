//! Skiff's own kinds, group `skiff.dev/v1alpha1`: what the Gateway API lacks. Every spec refuses
//! unknown fields, and every field has a documented default.
//!
//! - [`Workload`]: a pod's identity in file mode (in a cluster the Pod itself plays this part).
//! - [`TrafficPolicy`]: how callers treat a Service (connect timeout now; retry budget, outlier
//!   detection, circuit breaking and more arrive with the resilience issue).
//! - [`InboundPolicy`]: how a workload (one by name, those a label selector picks, or every
//!   workload of a namespace) treats incoming connections: the mTLS mode, per port if need be,
//!   and authorization rules.

use std::collections::BTreeMap;

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
    /// Name and namespace; a `targetRef` names the object in the policy's namespace. Its
    /// `labels` are what an InboundPolicy's `selector` matches.
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

/// `InboundPolicy`: how a workload, the workloads a label selector picks, or every workload of
/// the policy's namespace, treats incoming connections. docs/policy.md says how several of them merge and how rules are evaluated.
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

/// What an [`InboundPolicy`] says: which workloads, whether they accept plaintext, and who may
/// call them. Every field is optional; an empty spec applies to every workload of the
/// namespace and changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundPolicySpec {
    /// The Workload (in the policy's namespace) this policy applies to. Default: none; then
    /// `selector` decides, and without one the policy applies to every workload of its
    /// namespace. Not together with `selector`.
    #[serde(default)]
    pub target_ref: Option<WorkloadTargetRef>,
    /// The Workloads of the policy's namespace this policy applies to, by their labels.
    /// Default: none (see `target_ref`); an empty selector `{}` selects every workload of the
    /// namespace, exactly as no selector does. Not together with `target_ref`.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// Whether plaintext is accepted. Default: the mode of the namespace-wide policies for a
    /// policy with a `targetRef` or a `selector`, else `PERMISSIVE`.
    #[serde(default)]
    pub mtls: Mtls,
    /// Who may call the workload. Default: none; then every caller the mTLS mode admits may.
    #[serde(default)]
    pub rules: Vec<AuthorizationRuleSpec>,
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
    /// The Workload, in the policy's namespace. Required.
    pub name: String,
}

/// `spec.selector`: Kubernetes' `LabelSelector`. Every requirement must hold; an empty selector
/// matches every workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Label key → value the workload must carry (each the requirement `key In [value]`).
    /// Default: none.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold. Default: none.
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `spec.selector.matchExpressions[]`: one requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key (an optional DNS-subdomain prefix and `/`, then a name). Required.
    pub key: String,
    /// How the label is compared with `values`. Required.
    pub operator: LabelSelectorOperator,
    /// At least one for `In` and `NotIn`; none for `Exists` and `DoesNotExist`. Default: none.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `spec.selector.matchExpressions[].operator`, spelled as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LabelSelectorOperator {
    /// The workload has the label, with one of the values.
    In,
    /// The workload lacks the label, or has it with none of the values.
    NotIn,
    /// The workload has the label, whatever its value.
    Exists,
    /// The workload lacks the label.
    DoesNotExist,
}

fn skiff_group() -> String {
    GROUP.to_string()
}

fn workload_kind() -> String {
    "Workload".to_string()
}

/// `spec.mtls`: whether a workload's ports accept plaintext.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    /// The mode of every port not in `ports`. Default: unset, which means the namespace-wide
    /// policies' mode for a policy with a `targetRef` or a `selector`, else `PERMISSIVE`. Unset
    /// also means it cannot conflict with another policy of the same workloads.
    #[serde(default)]
    pub mode: Option<MtlsMode>,
    /// Exceptions to `mode`, one per port. Default: none.
    #[serde(default)]
    pub ports: Vec<PortMtls>,
}

/// `spec.mtls.ports[]`: the mode of one port of the workload.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMtls {
    /// A port the workload listens on (the pod port, not a Service port), 1–65535. Required.
    pub port: i64,
    /// Required.
    pub mode: MtlsMode,
}

/// `spec.rules[]`: one authorization rule. Each non-empty list is a condition that holds when
/// any of its values matches; the rule matches when every condition holds, so a rule without
/// conditions matches every request and connection.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRuleSpec {
    /// `ALLOW` or `DENY`. Required.
    pub action: AuthorizationAction,
    /// Conditions on the caller. Default: any caller.
    #[serde(default)]
    pub from: RuleSource,
    /// Conditions on what is called. Default: anything.
    #[serde(default)]
    pub to: RuleDestination,
}

pub use crate::config::AuthorizationAction;

/// `spec.rules[].from`: who calls, as proven by the caller's certificate. A plaintext caller
/// has no identity and no namespace, so it matches no rule with either list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSource {
    /// Workload SPIFFE IDs (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`),
    /// compared exactly. Default: any.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Namespaces of the callers' SPIFFE IDs (DNS labels). Default: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// `spec.rules[].to`: what is called. `methods` and `paths` exist only in HTTP: an ALLOW rule
/// with them never matches a TCP connection, a DENY rule with them matches one when its other
/// conditions hold (fail closed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleDestination {
    /// Ports of the workload (pod ports, not Service ports), 1–65535. Default: any.
    #[serde(default)]
    pub ports: Vec<i64>,
    /// HTTP methods, upper-case letters (`GET`, `POST`, or an extension method). Default: any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Request paths, compared with the normalised path. Default: any.
    #[serde(default)]
    pub paths: Vec<RulePath>,
}

/// `spec.rules[].to.paths[]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RulePath {
    /// `Exact` or `PathPrefix` (whole segments). Required.
    #[serde(rename = "type")]
    pub match_type: RulePathType,
    /// A normalised path: starts with `/`; no `?`, `#`, `%`, `;`, `//`, `.` or `..` segments.
    /// Required.
    pub value: String,
}

/// How a rule path is compared with the request's normalised path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum RulePathType {
    /// The whole path.
    Exact,
    /// Whole segments: `/admin` matches `/admin` and `/admin/x`, not `/administrator`.
    PathPrefix,
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

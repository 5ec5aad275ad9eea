//! Gateway API `HTTPRoute` (`gateway.networking.k8s.io/v1`, also `v1beta1`) exactly as the
//! standard and experimental channels define it, so routes from the Gateway API docs and from
//! clusters parse unchanged. Unknown fields are refused, so typos are caught.
//!
//! In the mesh (GAMMA) a route attaches to a `Service` through `parentRefs`. Defaults below are
//! the Gateway API's; what Skiff does with each field (and what it ignores with a warning) is in
//! `docs/policy.md`. Numbers are kept wide (`i64`) here so that validation, not the YAML reader,
//! says what range is allowed.

use serde::{de::IgnoredAny, Deserialize, Deserializer};

use crate::k8s::ObjectMeta;

/// The API group of the Gateway API; also the default group of a `parentRef`.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A value that is accepted and not read (an object's `status`, the experimental CORS and
/// ExternalAuth filters, which Skiff ignores with a warning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Ignored)
    }
}

/// `HTTPRoute`: how HTTP requests to its parents are matched, filtered and sent to backends.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1` or `gateway.networking.k8s.io/v1beta1`.
    pub api_version: String,
    /// `HTTPRoute`.
    pub kind: String,
    /// Name, namespace, and `creationTimestamp`, which breaks ties between conflicting routes.
    pub metadata: ObjectMeta,
    /// What the route attaches to and its rules.
    pub spec: HttpRouteSpec,
    /// Written by controllers in a cluster; accepted so pasted routes parse, never read.
    #[serde(default)]
    pub status: Option<Ignored>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// What the route attaches to: in the mesh, a Service (`group: ""`, `kind: Service`).
    /// At most 32. Default: none (the route attaches to nothing).
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host header matches; ignored in the mesh (with a warning). At most 16.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// At most 16, and at most 128 matches across them. Default when absent: one rule
    /// matching every request (`PathPrefix /`) with no backends.
    #[serde(default)]
    pub rules: Option<Vec<HttpRouteRule>>,
}

/// A reference from a route to the object it attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// Default `gateway.networking.k8s.io`; `""` (the core group) for a Service.
    #[serde(default)]
    pub group: Option<String>,
    /// Default `Gateway`; `Service` in the mesh.
    #[serde(default)]
    pub kind: Option<String>,
    /// Default: the route's namespace. A route in another namespace than its Service is a
    /// consumer route: it applies only to clients in the route's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service (or Gateway) attached to.
    pub name: String,
    /// For a Service: the name of one of its ports. Default: all ports.
    #[serde(default)]
    pub section_name: Option<String>,
    /// For a Service: one of its ports (1–65535). Default: all ports.
    #[serde(default)]
    pub port: Option<i64>,
}

/// One rule: when it applies (`matches`), what it does (`filters`), where requests go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// Unique within the route when set; names the rule in logs.
    #[serde(default)]
    pub name: Option<String>,
    /// ORed; at most 64. Default: one match, `PathPrefix /` (every request).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    /// Applied in order; at most 16.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends; at most 16. None: matching requests are answered 500.
    #[serde(default)]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default)]
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Experimental; not implemented yet (ignored with a warning).
    #[serde(default)]
    pub retry: Option<HttpRouteRetry>,
    /// Experimental; not implemented yet (ignored with a warning).
    #[serde(default)]
    pub session_persistence: Option<SessionPersistence>,
}

/// Conditions that must all hold for a request to match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// Default: `PathPrefix /`.
    #[serde(default)]
    pub path: Option<HttpPathMatch>,
    /// ANDed; at most 16; names unique (case-insensitively).
    #[serde(default)]
    pub headers: Vec<HttpHeaderMatch>,
    /// ANDed; at most 16; names unique.
    #[serde(default)]
    pub query_params: Vec<HttpQueryParamMatch>,
    /// Default: any method.
    #[serde(default)]
    pub method: Option<HttpMethod>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// Default `PathPrefix`.
    #[serde(default, rename = "type")]
    pub match_type: PathMatchType,
    /// Default `/`; at most 1024 characters; starts with `/` unless a regular expression.
    #[serde(default = "root_path")]
    pub value: String,
}

fn root_path() -> String {
    "/".to_string()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

/// How a header or query parameter value is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    /// Default `Exact`.
    #[serde(default, rename = "type")]
    pub match_type: ValueMatchType,
    /// A header name (RFC 7230 token), compared case-insensitively.
    pub name: String,
    /// 1–4096 characters.
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpQueryParamMatch {
    /// Default `Exact`.
    #[serde(default, rename = "type")]
    pub match_type: ValueMatchType,
    /// Compared exactly.
    pub name: String,
    /// 1–1024 characters.
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// One processing step. Exactly the field named by `type` is set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub filter_type: FilterType,
    #[serde(default)]
    pub request_header_modifier: Option<HttpHeaderFilter>,
    #[serde(default)]
    pub response_header_modifier: Option<HttpHeaderFilter>,
    /// Not implemented yet (ignored with a warning).
    #[serde(default)]
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    /// Not implemented yet (ignored with a warning).
    #[serde(default)]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    /// Not implemented yet (ignored with a warning).
    #[serde(default, rename = "urlRewrite")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    /// Not implemented yet (ignored with a warning); its content is not checked.
    #[serde(default)]
    pub cors: Option<Ignored>,
    /// Experimental; not implemented yet (ignored with a warning); its content is not checked.
    #[serde(default)]
    pub external_auth: Option<Ignored>,
    /// Implementation-specific filters; Skiff has none (ignored with a warning).
    #[serde(default)]
    pub extension_ref: Option<LocalObjectReference>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    #[serde(rename = "CORS")]
    Cors,
    ExternalAuth,
    ExtensionRef,
}

impl FilterType {
    /// The spelling in YAML, and the field that must be set for this type.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            FilterType::RequestHeaderModifier => ("RequestHeaderModifier", "requestHeaderModifier"),
            FilterType::ResponseHeaderModifier => {
                ("ResponseHeaderModifier", "responseHeaderModifier")
            }
            FilterType::RequestMirror => ("RequestMirror", "requestMirror"),
            FilterType::RequestRedirect => ("RequestRedirect", "requestRedirect"),
            FilterType::UrlRewrite => ("URLRewrite", "urlRewrite"),
            FilterType::Cors => ("CORS", "cors"),
            FilterType::ExternalAuth => ("ExternalAuth", "externalAuth"),
            FilterType::ExtensionRef => ("ExtensionRef", "extensionRef"),
        }
    }
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: one action per header name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderFilter {
    /// Replaces the header; at most 16.
    #[serde(default)]
    pub set: Vec<HttpHeader>,
    /// Appends a value; at most 16.
    #[serde(default)]
    pub add: Vec<HttpHeader>,
    /// Header names to remove; at most 16.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// The header to set or add (case-insensitive).
    pub name: String,
    /// 1–4096 characters.
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRequestMirrorFilter {
    /// Where copies of the requests go.
    pub backend_ref: BackendObjectReference,
    /// 0–100; only one of `percent` and `fraction`. Default: every request.
    #[serde(default)]
    pub percent: Option<i64>,
    #[serde(default)]
    pub fraction: Option<Fraction>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// Mirrored share is `numerator / denominator`; 0 to the denominator.
    pub numerator: i64,
    /// Default 100.
    #[serde(default)]
    pub denominator: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRequestRedirectFilter {
    /// `http` or `https`. Default: the request's.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<HttpPathModifier>,
    #[serde(default)]
    pub port: Option<i64>,
    /// 301, 302, 303, 307 or 308. Default 302.
    #[serde(default)]
    pub status_code: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpUrlRewriteFilter {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<HttpPathModifier>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathModifier {
    #[serde(rename = "type")]
    pub modifier_type: PathModifierType,
    #[serde(default)]
    pub replace_full_path: Option<String>,
    #[serde(default)]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

/// A reference to an object in the same namespace (an `ExtensionRef` filter).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    /// API group of the filter's own resource.
    pub group: String,
    /// Kind of the filter's own resource.
    pub kind: String,
    /// Name of the filter's own resource, in the route's namespace.
    pub name: String,
}

/// Where mirrored requests go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectReference {
    /// Default `""` (the core group).
    #[serde(default)]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The Service mirrored to.
    pub name: String,
    /// Default: the route's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Required for a Service.
    #[serde(default)]
    pub port: Option<i64>,
}

/// A weighted backend of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    /// Default `""` (the core group); Skiff supports Service backends only.
    #[serde(default)]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default)]
    pub kind: Option<String>,
    /// The Service requests are sent to.
    pub name: String,
    /// Default: the route's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A port of the Service (1–65535); required.
    #[serde(default)]
    pub port: Option<i64>,
    /// Share of the rule's requests, 0–1,000,000. Default 1.
    #[serde(default)]
    pub weight: Option<i64>,
    /// Per-backend filters; not implemented yet (ignored with a warning). At most 16.
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    /// Whole request, retries included. `0s` disables it. Default: none.
    #[serde(default)]
    pub request: Option<String>,
    /// One try; at most `request`. `0s` disables it. Default: none.
    #[serde(default)]
    pub backend_request: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRetry {
    /// Status codes 400–599 to retry on.
    #[serde(default)]
    pub codes: Vec<i64>,
    #[serde(default)]
    pub attempts: Option<i64>,
    #[serde(default)]
    pub backoff: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionPersistence {
    #[serde(default)]
    pub session_name: Option<String>,
    #[serde(default)]
    pub absolute_timeout: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// `Cookie` (default) or `Header`.
    #[serde(default, rename = "type")]
    pub persistence_type: Option<SessionPersistenceType>,
    #[serde(default)]
    pub cookie_config: Option<CookieConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum SessionPersistenceType {
    Cookie,
    Header,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieConfig {
    /// `Session` (default) or `Permanent`.
    #[serde(default)]
    pub lifetime_type: Option<CookieLifetimeType>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum CookieLifetimeType {
    Permanent,
    Session,
}

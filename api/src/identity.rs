//! Workload identity (DESIGN.md §4): SPIFFE IDs, and the certificate-signing exchange between a
//! proxy and the control plane's certificate authority.
//!
//! # Certificate protocol
//!
//! `POST /v1/certificate` on the control plane's API port (15010, TLS: the proxy verifies the
//! control plane, which may not have a certificate to show yet). The proxy authenticates with
//! `Authorization: Bearer <token>` (file mode: the Workload's `bootstrapToken`; in a cluster,
//! the pod's projected service-account token) or, when renewing, with its current certificate.
//! The body is a JSON [`CertificateRequest`]: the workload and a PEM CSR for a key the proxy
//! generated and keeps. The answer is a JSON [`CertificateResponse`] or a non-2xx status with a
//! one-line reason in the body.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::WorkloadRef;

/// The path of the certificate-signing endpoint on the control plane's API port.
pub const CERTIFICATE_PATH: &str = "/v1/certificate";

/// The default trust domain (DESIGN.md §4).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// ALPN a sidecar offers to another sidecar for pooled HTTP/2 (carrying HTTP/1 requests too,
/// marked by [`ORIGINAL_PROTOCOL_HEADER`]).
pub const ALPN_HTTP2: &[u8] = b"skiff/h2";
/// ALPN for an HTTP/1 connection between sidecars: requests that cannot ride HTTP/2 (an
/// `Upgrade`, such as a WebSocket).
pub const ALPN_HTTP1: &[u8] = b"skiff/http1";
/// ALPN for opaque TCP between sidecars: the bytes after the handshake are the app's.
pub const ALPN_TCP: &[u8] = b"skiff/tcp";
/// ALPN of the control plane's API.
pub const ALPN_CONTROL: &[u8] = b"h2";

/// Set by the outbound sidecar on an HTTP/1 request it carries over HTTP/2; the inbound
/// sidecar removes it and speaks HTTP/1 to the app.
pub const ORIGINAL_PROTOCOL_HEADER: &str = "x-skiff-orig-proto";

/// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("does not start with spiffe://")]
    Scheme,
    #[error("the trust domain is empty or has a character other than a-z 0-9 . - _")]
    TrustDomain,
    #[error("the path is not /ns/<namespace>/sa/<service-account>")]
    Path,
    #[error("{0:?} is not a valid namespace or service-account name")]
    Name(String),
    #[error("longer than 2048 bytes")]
    TooLong,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// Parses a workload SPIFFE ID strictly: lower-case scheme and trust domain, exactly the
    /// `/ns/<ns>/sa/<sa>` path, each name a Kubernetes DNS label or subdomain (so no
    /// percent-encoding, dot segments, query or fragment can make two strings one identity).
    pub fn parse(text: &str) -> Result<SpiffeId, SpiffeError> {
        if text.len() > 2048 {
            return Err(SpiffeError::TooLong);
        }
        let rest = text.strip_prefix("spiffe://").ok_or(SpiffeError::Scheme)?;
        let (trust_domain, path) = rest.split_once('/').ok_or(SpiffeError::Path)?;
        let domain_ok = !trust_domain.is_empty()
            && trust_domain
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'));
        if !domain_ok {
            return Err(SpiffeError::TrustDomain);
        }
        let mut segments = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(SpiffeError::Path);
        };
        for name in [namespace, service_account] {
            if !is_kubernetes_name(name) {
                return Err(SpiffeError::Name(name.to_string()));
            }
        }
        Ok(SpiffeId::new(trust_domain, namespace, service_account))
    }

    /// `namespace/service-account`, the short form used in metrics and messages.
    pub fn short(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(text)
    }
}

/// A Kubernetes DNS subdomain: lower-case alphanumerics, `-` and `.`, starting and ending with
/// an alphanumeric, at most 253 bytes (namespaces are labels, a subset).
fn is_kubernetes_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
}

/// A proxy asks for a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateRequest {
    /// The workload the proxy serves; its service account decides the identity signed.
    pub workload: WorkloadRef,
    /// PKCS#10 CSR, PEM. Its subject-alternative name, if any, must be the identity the
    /// workload may have; the control plane sets the certificate's fields itself.
    pub csr_pem: String,
}

/// The control plane's answer: a signed leaf and what to trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateResponse {
    /// The SPIFFE ID in the certificate.
    pub identity: String,
    /// The leaf, then any intermediates up to (not including) the root, PEM.
    pub chain_pem: String,
    /// Every root a peer's chain may end at (two during a root rotation), PEM.
    pub trust_bundle_pem: String,
    /// The leaf's `notAfter`, seconds since the Unix epoch.
    pub not_after_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_ids_and_refuses_everything_else() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "shop", "web"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(id.short(), "shop/web");
        let refused = [
            ("", SpiffeError::Scheme),
            ("SPIFFE://cluster.local/ns/a/sa/b", SpiffeError::Scheme),
            ("https://cluster.local/ns/a/sa/b", SpiffeError::Scheme),
            ("spiffe://Cluster.local/ns/a/sa/b", SpiffeError::TrustDomain),
            ("spiffe:///ns/a/sa/b", SpiffeError::TrustDomain),
            ("spiffe://td:8080/ns/a/sa/b", SpiffeError::TrustDomain),
            ("spiffe://user@td/ns/a/sa/b", SpiffeError::TrustDomain),
            ("spiffe://td", SpiffeError::Path),
            ("spiffe://td/", SpiffeError::Path),
            ("spiffe://td/ns/a/sa", SpiffeError::Path),
            ("spiffe://td/ns/a/sa/b/", SpiffeError::Path),
            ("spiffe://td/ns/a/sa/b/c", SpiffeError::Path),
            ("spiffe://td/ns//sa/b", SpiffeError::Name(String::new())),
            ("spiffe://td/ns/a/sa/b?x", SpiffeError::Name("b?x".into())),
            ("spiffe://td/ns/a/sa/b#x", SpiffeError::Name("b#x".into())),
            ("spiffe://td/ns/../sa/b", SpiffeError::Name("..".into())),
            (
                "spiffe://td/ns/a%2fb/sa/b",
                SpiffeError::Name("a%2fb".into()),
            ),
            ("spiffe://td/ns/A/sa/b", SpiffeError::Name("A".into())),
            ("spiffe://td/ns/a/sa/-b", SpiffeError::Name("-b".into())),
            ("spiffe://td/sa/a/ns/b", SpiffeError::Path),
        ];
        for (text, error) in refused {
            assert_eq!(SpiffeId::parse(text), Err(error), "{text:?}");
        }
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://td/ns/a/sa/{}", "b".repeat(2100))),
            Err(SpiffeError::TooLong)
        );
    }
}

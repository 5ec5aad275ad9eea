//! The certificate checks of every handshake: a peer sidecar's (outbound, as a rustls
//! `ServerCertVerifier`), a client sidecar's (inbound, `ClientCertVerifier`) and the control
//! plane's. One function decides, [`PeerVerifier::verify`]:
//!
//! 1. the chain ends at a root of the trust bundle (webpki: signatures, validity periods,
//!    the leaf is not a CA, extended key usage fits the side of the handshake);
//! 2. the leaf may sign (key usage) and carries exactly one URI SAN, a workload SPIFFE ID
//!    (`SpiffeId::parse`) in the expected trust domain, or exactly the expected identity.
//!
//! The DNS server name is ignored: peers are named by SPIFFE ID, and the caller checks which
//! one after the handshake ([`super::connect`]). Every refusal carries a [`Refusal`], whose
//! label is bounded.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use skiff_api::identity::SpiffeId;

use super::san::{self, LeafFields};
use super::TlsError;

/// A peer presenting more certificates than this is refused before any signature is checked.
const MAX_CHAIN_LENGTH: usize = 8;

/// Why a certificate was refused: the label of metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    Expired,
    NotYetValid,
    /// The chain ends at no root of the trust bundle.
    UnknownIssuer,
    /// A signature in the chain does not verify.
    BadSignature,
    UnsupportedAlgorithm,
    /// The leaf says `CA:TRUE`.
    CaAsLeaf,
    /// Extended key usage without the side of the handshake, or key usage without
    /// `digitalSignature`.
    WrongKeyUsage,
    /// Anything else webpki refuses in the chain (path length, name constraints, an
    /// unsupported critical extension, too long a chain).
    InvalidChain,
    /// No URI SAN at all (e.g. DNS names only).
    NoSpiffeId,
    MultipleUriSans,
    /// The URI SAN is not `spiffe://<td>/ns/<ns>/sa/<sa>`.
    InvalidSpiffeId,
    ForeignTrustDomain,
    /// Valid, but not the identity required (the control plane's).
    IdentityMismatch,
    /// Not DER, or not a certificate.
    Malformed,
    NoClientCertificate,
}

impl Refusal {
    pub const ALL: [Refusal; 15] = [
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::UnknownIssuer,
        Refusal::BadSignature,
        Refusal::UnsupportedAlgorithm,
        Refusal::CaAsLeaf,
        Refusal::WrongKeyUsage,
        Refusal::InvalidChain,
        Refusal::NoSpiffeId,
        Refusal::MultipleUriSans,
        Refusal::InvalidSpiffeId,
        Refusal::ForeignTrustDomain,
        Refusal::IdentityMismatch,
        Refusal::Malformed,
        Refusal::NoClientCertificate,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not-yet-valid",
            Refusal::UnknownIssuer => "unknown-issuer",
            Refusal::BadSignature => "bad-signature",
            Refusal::UnsupportedAlgorithm => "unsupported-algorithm",
            Refusal::CaAsLeaf => "ca-as-leaf",
            Refusal::WrongKeyUsage => "wrong-key-usage",
            Refusal::InvalidChain => "invalid-chain",
            Refusal::NoSpiffeId => "no-spiffe-id",
            Refusal::MultipleUriSans => "multiple-uri-sans",
            Refusal::InvalidSpiffeId => "invalid-spiffe-id",
            Refusal::ForeignTrustDomain => "foreign-trust-domain",
            Refusal::IdentityMismatch => "identity-mismatch",
            Refusal::Malformed => "malformed",
            Refusal::NoClientCertificate => "no-client-certificate",
        }
    }
}

/// A refused certificate: the reason, and what exactly was wrong for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail} ({})", .reason.label())]
pub struct CertificateRefused {
    pub reason: Refusal,
    pub detail: String,
}

impl CertificateRefused {
    pub fn new(reason: Refusal, detail: impl Into<String>) -> Self {
        CertificateRefused {
            reason,
            detail: detail.into(),
        }
    }
}

/// Into the error a rustls verifier returns. Refusals with a standard TLS alert use the
/// standard error (so the peer sees `certificate_expired`, `unknown_ca`, ...); the others
/// travel whole inside `CertificateError::Other` and come back out in [`refusal_of`].
impl From<CertificateRefused> for rustls::Error {
    fn from(refused: CertificateRefused) -> rustls::Error {
        let error = match refused.reason {
            Refusal::UnknownIssuer => CertificateError::UnknownIssuer,
            Refusal::BadSignature => CertificateError::BadSignature,
            Refusal::NoClientCertificate => return rustls::Error::NoCertificatesPresented,
            _ => CertificateError::Other(rustls::OtherError(Arc::new(refused))),
        };
        rustls::Error::InvalidCertificate(error)
    }
}

/// The certificate refusal inside a rustls error, if it is one.
pub fn refusal_of(error: &rustls::Error) -> Option<CertificateRefused> {
    use CertificateError as E;
    let certificate = match error {
        rustls::Error::InvalidCertificate(certificate) => certificate,
        rustls::Error::NoCertificatesPresented => {
            return Some(CertificateRefused::new(
                Refusal::NoClientCertificate,
                "the client presented no certificate",
            ))
        }
        _ => return None,
    };
    let (reason, detail) = match certificate {
        E::Other(other) => {
            if let Some(refused) = other.0.downcast_ref::<CertificateRefused>() {
                return Some(refused.clone());
            }
            (Refusal::InvalidChain, other.to_string())
        }
        E::Expired | E::ExpiredContext { .. } => (Refusal::Expired, certificate.to_string()),
        E::NotValidYet | E::NotValidYetContext { .. } => {
            (Refusal::NotYetValid, certificate.to_string())
        }
        E::UnknownIssuer => (
            Refusal::UnknownIssuer,
            "not issued by a trusted root".into(),
        ),
        E::BadSignature => (Refusal::BadSignature, "a signature does not verify".into()),
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            (Refusal::WrongKeyUsage, certificate.to_string())
        }
        E::BadEncoding => (Refusal::Malformed, certificate.to_string()),
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext { .. }
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            (Refusal::UnsupportedAlgorithm, certificate.to_string())
        }
        other => (Refusal::InvalidChain, other.to_string()),
    };
    Some(CertificateRefused::new(reason, detail))
}

/// What a peer's certificate must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Any workload of this trust domain: a mesh peer, whose exact identity the caller
    /// checks after the handshake.
    TrustDomain(String),
    /// Exactly this identity: the control plane.
    Identity(SpiffeId),
}

/// Which side of the handshake the certificate authenticates (its extended key usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// Verifies peers' certificates against one trust bundle. A new one is built whenever the
/// trust bundle changes; handshakes in progress keep theirs.
#[derive(Debug)]
pub struct PeerVerifier {
    /// The roots of the trust bundle (two during a root rotation).
    roots: Vec<TrustAnchor<'static>>,
    expect: Expect,
    /// The provider's signature algorithms, for chains and handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    /// Fails when the bundle is empty or holds something that is not a certificate.
    pub fn try_new(trust_bundle: &[CertificateDer<'_>], expect: Expect) -> Result<Self, TlsError> {
        if trust_bundle.is_empty() {
            return Err(TlsError::Credentials("empty trust bundle".into()));
        }
        let roots = trust_bundle
            .iter()
            .map(|root| {
                webpki::anchor_from_trusted_cert(root)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|error| {
                        TlsError::Credentials(format!("trust bundle: unusable root: {error}"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PeerVerifier {
            roots,
            expect,
            algorithms: super::provider().signature_verification_algorithms,
        })
    }

    /// Roots in the trust bundle.
    pub fn roots(&self) -> usize {
        self.roots.len()
    }

    /// The whole decision: the peer's identity, or why it is refused.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<SpiffeId, CertificateRefused> {
        if intermediates.len() + 1 > MAX_CHAIN_LENGTH {
            return Err(CertificateRefused::new(
                Refusal::InvalidChain,
                format!("a chain of {} certificates", intermediates.len() + 1),
            ));
        }
        let fields = san::parse_leaf(end_entity)
            .map_err(|error| CertificateRefused::new(Refusal::Malformed, error.to_string()))?;
        let leaf = webpki::EndEntityCert::try_from(end_entity).map_err(refusal_from_webpki)?;
        let key_usage = match usage {
            Usage::Server => webpki::KeyUsage::server_auth(),
            Usage::Client => webpki::KeyUsage::client_auth(),
        };
        leaf.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            key_usage,
            None,
            None,
        )
        .map_err(refusal_from_webpki)?;
        // webpki refuses these already; the walker's reading is a second opinion.
        if fields.is_ca {
            return Err(CertificateRefused::new(
                Refusal::CaAsLeaf,
                "the leaf is a CA certificate",
            ));
        }
        if !fields.may_sign {
            return Err(CertificateRefused::new(
                Refusal::WrongKeyUsage,
                "key usage without digitalSignature",
            ));
        }
        let id = identity_of(&fields)?;
        match &self.expect {
            Expect::TrustDomain(domain) if &id.trust_domain != domain => {
                Err(CertificateRefused::new(
                    Refusal::ForeignTrustDomain,
                    format!("{id} is not in trust domain {domain}"),
                ))
            }
            Expect::Identity(expected) if &id != expected => Err(CertificateRefused::new(
                Refusal::IdentityMismatch,
                format!("{id} is not {expected}"),
            )),
            _ => Ok(id),
        }
    }
}

/// The workload SPIFFE ID a leaf names: its one URI SAN.
pub fn identity_of(fields: &LeafFields) -> Result<SpiffeId, CertificateRefused> {
    match fields.uri_sans.as_slice() {
        [] => Err(CertificateRefused::new(
            Refusal::NoSpiffeId,
            "no URI subject alternative name",
        )),
        [uri] => SpiffeId::parse(uri).map_err(|error| {
            CertificateRefused::new(
                Refusal::InvalidSpiffeId,
                format!("{:?}: {error}", truncate(uri, 128)),
            )
        }),
        more => Err(CertificateRefused::new(
            Refusal::MultipleUriSans,
            format!("{} URI subject alternative names", more.len()),
        )),
    }
}

/// The first `max` characters (a peer's text in a log line stays short).
fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn refusal_from_webpki(error: webpki::Error) -> CertificateRefused {
    use webpki::Error as E;
    let reason = match &error {
        E::CertExpired { time, not_after } => {
            return CertificateRefused::new(
                Refusal::Expired,
                format!(
                    "expired at {} (now {})",
                    not_after.as_secs(),
                    time.as_secs()
                ),
            )
        }
        E::CertNotValidYet { time, not_before } => {
            return CertificateRefused::new(
                Refusal::NotYetValid,
                format!(
                    "not valid before {} (now {})",
                    not_before.as_secs(),
                    time.as_secs()
                ),
            )
        }
        E::UnknownIssuer => Refusal::UnknownIssuer,
        E::InvalidSignatureForPublicKey => Refusal::BadSignature,
        E::CaUsedAsEndEntity => Refusal::CaAsLeaf,
        #[allow(deprecated)]
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
            Refusal::WrongKeyUsage
        }
        #[allow(deprecated)]
        E::UnsupportedSignatureAlgorithm
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKey
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::SignatureAlgorithmMismatch => Refusal::UnsupportedAlgorithm,
        E::BadDer
        | E::BadDerTime
        | E::TrailingData(_)
        | E::MalformedExtensions
        | E::ExtensionValueInvalid
        | E::InvalidSerialNumber
        | E::InvalidCertValidity
        | E::UnsupportedCertVersion => Refusal::Malformed,
        _ => Refusal::InvalidChain,
    };
    let detail = match reason {
        Refusal::UnknownIssuer => "not issued by a trusted root".to_string(),
        Refusal::BadSignature => "a signature does not verify".to_string(),
        Refusal::CaAsLeaf => "the leaf is a CA certificate".to_string(),
        _ => format!("{error:?}"),
    };
    CertificateRefused::new(reason, detail)
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, Usage::Server)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: a sidecar has one certificate to offer.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now, Usage::Client)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;

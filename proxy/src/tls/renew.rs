//! Obtaining and renewing the workload certificate (DESIGN.md §4): a fresh ECDSA P-256 key per
//! request (it never leaves the process), a CSR, `POST /v1/certificate` to the control plane
//! over HTTP/2 and TLS, and the answer installed into the [`Identity`].
//!
//! The first request authenticates with the bootstrap token (`--bootstrap-token-file`, re-read
//! every time: Kubernetes rotates projected tokens); renewals with the current certificate
//! alone, or the token again once it has expired. The control plane is verified against
//! `--ca-bundle` and the current trust bundle ([`super::control_plane`]), so a renewal follows
//! a root rotation. Renewal happens at 70% ± 5% of the lifetime; failures are retried with
//! back-off while the current certificate keeps serving.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::uri::Authority;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use skiff_api::config::WorkloadRef;
use skiff_api::identity::{CertificateRequest, CertificateResponse, SpiffeId, CERTIFICATE_PATH};

use super::control_plane::{ConnectError, ControlPlaneTls};
use super::{Credentials, Identity, TlsError};
use crate::control::{error_chain, random_fraction, Backoff};

/// Connecting, the TLS handshake and the whole exchange must each finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An answer larger than this is refused (a chain and a bundle are a few kB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Renewal happens this far into the lifetime, give or take [`RENEW_JITTER`].
const RENEW_AT: f64 = 0.70;
const RENEW_JITTER: f64 = 0.05;

/// Where certificates come from and how this proxy asks for them.
#[derive(Clone, Debug)]
pub struct CertificateClient {
    /// `host:port` of the control plane's API.
    pub control_plane: Authority,
    /// How the control plane is verified.
    pub tls: ControlPlaneTls,
    /// The workload this proxy serves: the control plane decides its identity from it.
    pub workload: WorkloadRef,
    /// `--bootstrap-token-file`.
    pub token_file: Option<PathBuf>,
}

/// Why a certificate request failed; the current certificate, if any, stays in force.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("cannot read the bootstrap token {}", .path.display())]
    Token {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("no bootstrap token (--bootstrap-token-file) and no certificate to authenticate with")]
    NoCredentials,
    #[error("the bootstrap token has characters an HTTP header cannot carry")]
    InvalidToken,
    #[error("cannot make a key or a CSR")]
    Csr(#[source] rcgen::Error),
    #[error("no connection to the control plane")]
    Connect(#[source] ConnectError),
    #[error("http/2 exchange failed")]
    Http(#[source] hyper::Error),
    #[error("cannot read the answer")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("the control plane refused with status {status}: {reason}")]
    Refused { status: StatusCode, reason: String },
    #[error("invalid answer: {0}")]
    Answer(String),
    #[error("the certificate issued is unusable")]
    Certificate(#[source] TlsError),
}

impl CertificateClient {
    /// Asks for a certificate once. `current` is the identity in force when renewing: its
    /// SPIFFE ID goes in the CSR, its trust bundle verifies the control plane (with
    /// `--ca-bundle`), and while it is still valid its certificate alone authenticates the
    /// request (the token is not sent). An expired certificate would fail the handshake, so
    /// then none is presented and the token authenticates, as at start.
    pub async fn request(
        &self,
        current: Option<&Arc<Identity>>,
    ) -> Result<Credentials, IssueError> {
        let valid = current.filter(|identity| identity.not_after() > SystemTime::now());
        let token = match valid {
            Some(_) => None,
            None => self.read_token()?,
        };
        if token.is_none() && valid.is_none() {
            return Err(IssueError::NoCredentials);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(IssueError::Csr)?;
        let csr_pem = csr(&key, current.map(|identity| identity.id()).as_ref())?;
        let body = serde_json::to_vec(&CertificateRequest {
            workload: self.workload.clone(),
            csr_pem,
        })
        .expect("a certificate request serializes");
        let answer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.exchange(current, token.as_deref(), body),
        )
        .await
        .map_err(|_| IssueError::Timeout)??;
        self.credentials(answer, key)
    }

    /// The bootstrap token, re-read from its file (Kubernetes rotates projected tokens).
    fn read_token(&self) -> Result<Option<String>, IssueError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        match std::fs::read_to_string(path) {
            Ok(token) => {
                let token = token.trim();
                Ok((!token.is_empty()).then(|| token.to_string()))
            }
            Err(error) => Err(IssueError::Token {
                path: path.clone(),
                error,
            }),
        }
    }

    /// One HTTP/2 request on a new connection; `current` presents its certificate while it
    /// is valid.
    async fn exchange(
        &self,
        current: Option<&Arc<Identity>>,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Result<CertificateResponse, IssueError> {
        let tls = self
            .tls
            .connect(&self.control_plane, current, CONNECT_TIMEOUT)
            .await
            .map_err(IssueError::Connect)?;
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(IssueError::Http)?;
        // Ends when `sender` is dropped.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "certificate request connection ended");
            }
        });
        let mut request =
            Request::post(format!("https://{}{CERTIFICATE_PATH}", self.control_plane))
                .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| IssueError::InvalidToken)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(IssueError::Http)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(IssueError::Read)?
            .to_bytes();
        if !status.is_success() {
            let reason = String::from_utf8_lossy(&body);
            let reason = reason
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            return Err(IssueError::Refused { status, reason });
        }
        serde_json::from_slice(&body).map_err(|error| IssueError::Answer(error.to_string()))
    }

    /// Checks the answer against what was asked and pairs it with the key.
    fn credentials(
        &self,
        answer: CertificateResponse,
        key: KeyPair,
    ) -> Result<Credentials, IssueError> {
        let granted = SpiffeId::parse(&answer.identity).map_err(|error| {
            IssueError::Answer(format!("identity {:?}: {error}", answer.identity))
        })?;
        if granted.namespace != self.workload.namespace {
            return Err(IssueError::Answer(format!(
                "identity {granted} is outside the workload's namespace {}",
                self.workload.namespace
            )));
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let credentials = Credentials::from_pem(&answer.chain_pem, key, &answer.trust_bundle_pem)
            .map_err(IssueError::Certificate)?;
        let leaf = super::san::parse_leaf(&credentials.chain[0])
            .map_err(|error| IssueError::Answer(format!("certificate: {error}")))?;
        if leaf.uri_sans != [granted.to_string()] {
            return Err(IssueError::Answer(format!(
                "the certificate does not name exactly {granted}"
            )));
        }
        Ok(credentials)
    }

    /// Asks until a certificate arrives: the proxy serves nothing before it has one.
    pub async fn first_identity(&self) -> Arc<Identity> {
        tracing::info!(control_plane = %self.control_plane, control_plane_identity = %self.tls.expected(), workload = %self.workload, "requesting a workload certificate from the control plane; the proxy starts serving once it has one");
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut last_error = String::new();
        loop {
            let identity = self.request(None).await.and_then(|credentials| {
                Identity::try_new(credentials).map_err(IssueError::Certificate)
            });
            match identity {
                Ok(identity) => {
                    tracing::info!(identity = %identity.id(), not_after = unix(identity.not_after()), "workload certificate obtained");
                    return Arc::new(identity);
                }
                Err(error) => {
                    let error = error_chain(&error);
                    // Once per kind of failure, not at every attempt.
                    if error != last_error {
                        tracing::warn!(%error, "no workload certificate yet; retrying");
                    } else {
                        tracing::debug!(%error, "no workload certificate yet; retrying");
                    }
                    last_error = error;
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Renews `identity` for as long as the proxy runs.
    pub async fn keep_renewed(self, identity: Arc<Identity>) {
        let current = identity.clone();
        renew_forever(&identity, || self.request(Some(&current))).await
    }
}

/// The CSR: the key's public half and, when known, the identity asked for. The control plane
/// sets every other field itself.
fn csr(key: &KeyPair, identity: Option<&SpiffeId>) -> Result<String, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(identity) = identity {
        let uri = identity.to_string().try_into().map_err(IssueError::Csr)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(IssueError::Csr)
}

/// Renews at the scheduled time, retries failures with back-off, and installs each new
/// certificate; `request` asks for one.
async fn renew_forever<F, Fut>(identity: &Identity, mut request: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Credentials, IssueError>>,
{
    loop {
        let (since, not_after) = (identity.in_force_since(), identity.not_after());
        let at = renewal_time(since, not_after, random_fraction());
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tracing::debug!(renew_in = ?wait, "next certificate renewal scheduled");
        tokio::time::sleep(wait).await;
        let lifetime = not_after.duration_since(since).unwrap_or_default();
        let mut backoff = retry_backoff(lifetime);
        loop {
            let renewed = request().await.and_then(|credentials| {
                identity
                    .install(credentials)
                    .map_err(IssueError::Certificate)
            });
            match renewed {
                Ok(()) => {
                    identity.record_renewal(true);
                    tracing::info!(identity = %identity.id(), not_after = unix(identity.not_after()), trust_roots = identity.trust_roots(), "workload certificate renewed");
                    break;
                }
                Err(error) => {
                    identity.record_renewal(false);
                    let error = error_chain(&error);
                    let delay = backoff.next_delay();
                    if identity.not_after() <= SystemTime::now() {
                        tracing::error!(%error, retry_in = ?delay, "workload certificate expired and renewal failed: peers refuse this proxy until it is renewed");
                    } else {
                        tracing::warn!(%error, retry_in = ?delay, expires = unix(identity.not_after()), "certificate renewal failed; the current certificate keeps serving");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// When to renew a certificate in force from `since` until `not_after`: at 70% ± 5% of that
/// lifetime; `jitter` in `[0, 1)` picks the point in the window.
pub fn renewal_time(since: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after.duration_since(since).unwrap_or_default();
    let fraction = RENEW_AT - RENEW_JITTER + 2.0 * RENEW_JITTER * jitter.clamp(0.0, 1.0);
    since + lifetime.mul_f64(fraction)
}

/// Back-off between failed renewals: quick at first, at most a twentieth of the lifetime
/// (so a short-lived certificate still gets many attempts before it expires), at most 60 s.
pub fn retry_backoff(lifetime: Duration) -> Backoff {
    let cap = (lifetime / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
    Backoff::new(Duration::from_millis(500).min(cap), cap)
}

/// Seconds since the Unix epoch, for logs.
fn unix(time: SystemTime) -> u64 {
    super::identity::unix_seconds(time)
}

#[cfg(test)]
mod tests;

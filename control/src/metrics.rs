//! Prometheus metrics of the control plane, served on :15014 `/metrics` in the text format.
//! Counters only move forward; the gauges describe the state right now.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::api::{CertificateRefusal, StreamRefusal};
use crate::ca::CertificateAuthority;

/// Every metric of one control plane process. Created in `main` and shared by the source, the
/// API and the admin server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Version of the snapshot in force; 0 before a first valid policy.
    snapshot_version: AtomicU64,
    /// When it was published, in microseconds since the Unix epoch: how long an edit took to
    /// be noticed, and (against the proxies' ACKs) how long its fan-out took.
    snapshot_published_micros: AtomicU64,
    /// Whether the policy files as they are now are valid (the last reload succeeded).
    config_valid: AtomicBool,
    /// Reloads refused because the files were unreadable or invalid.
    config_errors: AtomicU64,
    /// Streams open right now.
    connected_proxies: AtomicU64,
    /// `config` frames sent.
    pushes: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    /// Configuration streams refused before they started, by [`StreamRefusal`].
    stream_refusals: [AtomicU64; StreamRefusal::ALL.len()],
    /// Connections to the API that never finished their TLS handshake (bad or untrusted
    /// client certificates among them).
    tls_handshake_failures: AtomicU64,
    /// Workload certificates signed.
    certificates_issued: AtomicU64,
    /// Certificate requests refused, by [`CertificateRefusal`].
    certificate_refusals: [AtomicU64; CertificateRefusal::ALL.len()],
    /// The earliest `notAfter` of the trust bundle's roots and the issuer's (Unix seconds):
    /// what to alert on long before it comes.
    root_expiration: AtomicI64,
    issuer_expiration: AtomicI64,
    /// The `notAfter` of the API's current certificate (Unix seconds): it must keep moving.
    serving_certificate_expiration: AtomicU64,
}

impl Metrics {
    /// Snapshot `version` is in force since `at`.
    pub fn snapshot_published(&self, version: u64, at: SystemTime) {
        let micros = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        self.snapshot_published_micros
            .store(micros, Ordering::Relaxed);
        self.snapshot_version.store(version, Ordering::Relaxed);
        self.config_valid.store(true, Ordering::Relaxed);
    }

    pub fn config_refused(&self) {
        self.config_errors.fetch_add(1, Ordering::Relaxed);
        self.config_valid.store(false, Ordering::Relaxed);
    }

    pub fn proxy_connected(&self) {
        self.connected_proxies.fetch_add(1, Ordering::Relaxed);
    }

    pub fn proxy_disconnected(&self) {
        self.connected_proxies.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn pushed(&self) {
        self.pushes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn acked(&self) {
        self.acks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn nacked(&self) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_refused(&self, reason: StreamRefusal) {
        self.stream_refusals[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn certificate_issued(&self) {
        self.certificates_issued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn certificate_refused(&self, reason: CertificateRefusal) {
        self.certificate_refusals[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The CA in use: its roots' and issuer's expiry.
    pub fn ca_loaded(&self, ca: &CertificateAuthority) {
        self.root_expiration
            .store(ca.root_expiration_unix(), Ordering::Relaxed);
        self.issuer_expiration
            .store(ca.issuer_expiration_unix(), Ordering::Relaxed);
    }

    /// The API has a new certificate, valid until `not_after_unix`.
    pub fn serving_certificate_issued(&self, not_after_unix: u64) {
        self.serving_certificate_expiration
            .store(not_after_unix, Ordering::Relaxed);
    }

    pub fn certificates_issued(&self) -> u64 {
        self.certificates_issued.load(Ordering::Relaxed)
    }

    pub fn certificates_refused(&self, reason: CertificateRefusal) -> u64 {
        self.certificate_refusals[reason as usize].load(Ordering::Relaxed)
    }

    pub fn streams_refused(&self, reason: StreamRefusal) -> u64 {
        self.stream_refusals[reason as usize].load(Ordering::Relaxed)
    }

    pub fn config_errors(&self) -> u64 {
        self.config_errors.load(Ordering::Relaxed)
    }

    pub fn connected_proxies(&self) -> u64 {
        self.connected_proxies.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        metric(
            "skiff_control_snapshot_version",
            "gauge",
            "Version of the policy snapshot in force (0: no valid policy yet).",
            &load(&self.snapshot_version),
        );
        metric(
            "skiff_control_snapshot_published_timestamp_seconds",
            "gauge",
            "When the snapshot in force was published (Unix time; 0: none yet).",
            &format_args!("{:.6}", load(&self.snapshot_published_micros) as f64 / 1e6),
        );
        metric(
            "skiff_control_config_valid",
            "gauge",
            "Whether the last policy reload succeeded (1) or was refused (0).",
            &u64::from(self.config_valid.load(Ordering::Relaxed)),
        );
        metric(
            "skiff_control_config_errors_total",
            "counter",
            "Policy reloads refused because the files were unreadable or invalid.",
            &load(&self.config_errors),
        );
        metric(
            "skiff_control_connected_proxies",
            "gauge",
            "Proxies with an open configuration stream.",
            &load(&self.connected_proxies),
        );
        metric(
            "skiff_control_pushes_total",
            "counter",
            "Configurations sent to proxies.",
            &load(&self.pushes),
        );
        metric(
            "skiff_control_acks_total",
            "counter",
            "Configurations proxies applied.",
            &load(&self.acks),
        );
        metric(
            "skiff_control_nacks_total",
            "counter",
            "Configurations proxies refused.",
            &load(&self.nacks),
        );
        metric(
            "skiff_control_tls_handshake_failures_total",
            "counter",
            "Connections to the proxy API whose TLS handshake failed or timed out.",
            &load(&self.tls_handshake_failures),
        );
        metric(
            "skiff_control_serving_certificate_expiration_timestamp_seconds",
            "gauge",
            "When the proxy API's current certificate expires (Unix time); renewed at 70% of its lifetime.",
            &load(&self.serving_certificate_expiration),
        );
        metric(
            "skiff_ca_certificates_issued_total",
            "counter",
            "Workload certificates signed.",
            &load(&self.certificates_issued),
        );
        metric(
            "skiff_ca_root_expiration_timestamp_seconds",
            "gauge",
            "When the first root of the trust bundle expires (Unix time).",
            &self.root_expiration.load(Ordering::Relaxed),
        );
        metric(
            "skiff_ca_issuer_expiration_timestamp_seconds",
            "gauge",
            "When the certificate the CA signs with expires (Unix time); no leaf outlives it.",
            &self.issuer_expiration.load(Ordering::Relaxed),
        );
        labelled(
            &mut out,
            "skiff_ca_certificate_refusals_total",
            "Certificate requests refused, by reason.",
            CertificateRefusal::ALL.iter().map(|reason| {
                (
                    reason.label(),
                    load(&self.certificate_refusals[*reason as usize]),
                )
            }),
        );
        labelled(
            &mut out,
            "skiff_control_stream_refusals_total",
            "Configuration streams refused before they started, by reason.",
            StreamRefusal::ALL.iter().map(|reason| {
                (
                    reason.label(),
                    load(&self.stream_refusals[*reason as usize]),
                )
            }),
        );
        out
    }
}

/// A counter with a `reason` label, every value listed (zeros too, so a dashboard sees them
/// all from the start).
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, value) in values {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let metrics = Metrics::default();
        metrics.snapshot_published(3, SystemTime::now());
        metrics.config_refused();
        metrics.proxy_connected();
        metrics.pushed();
        metrics.acked();
        metrics.certificate_issued();
        metrics.certificate_refused(CertificateRefusal::WrongToken);
        metrics.stream_refused(StreamRefusal::WrongIdentity);
        let text = metrics.render();
        for line in [
            "skiff_control_snapshot_version 3",
            "skiff_control_config_valid 0",
            "skiff_control_config_errors_total 1",
            "skiff_control_connected_proxies 1",
            "skiff_control_pushes_total 1",
            "skiff_control_acks_total 1",
            "skiff_control_nacks_total 0",
            "# TYPE skiff_control_snapshot_published_timestamp_seconds gauge",
            "# TYPE skiff_control_acks_total counter",
            "skiff_ca_certificates_issued_total 1",
            "skiff_ca_certificate_refusals_total{reason=\"wrong-token\"} 1",
            "skiff_ca_certificate_refusals_total{reason=\"bad-csr\"} 0",
            "skiff_control_stream_refusals_total{reason=\"wrong-identity\"} 1",
            "skiff_control_stream_refusals_total{reason=\"no-client-certificate\"} 0",
            "# TYPE skiff_ca_root_expiration_timestamp_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let published: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("skiff_control_snapshot_published_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(published > 1.7e9, "{published}");
    }
}

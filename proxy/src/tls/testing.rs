//! Test certificates: a CA made with rcgen that issues workload leaves, good and bad, for the
//! tests of this module and of the proxy's mesh paths.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use skiff_api::identity::SpiffeId;

use super::identity::Credentials;

/// A root (or intermediate) CA that signs test certificates.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// Its own certificate.
    pub cert: CertificateDer<'static>,
    /// Intermediates between it and its root (empty for a root).
    pub chain: Vec<CertificateDer<'static>>,
}

impl TestCa {
    /// A self-signed root, valid from a day ago for ten years.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let cert = params.self_signed(&key).unwrap().der().clone();
        TestCa {
            params,
            key,
            cert,
            chain: Vec::new(),
        }
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params(name);
        let cert = params
            .signed_by(&key, &self.issuer())
            .unwrap()
            .der()
            .clone();
        let mut chain = vec![cert.clone()];
        chain.extend(self.chain.iter().cloned());
        TestCa {
            params,
            key,
            cert,
            chain,
        }
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    /// The root PEM, as `--ca-bundle` or a trust bundle holds it.
    pub fn pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    /// Signs `params` for `key`; returns the leaf.
    pub fn sign(&self, params: &CertificateParams, key: &KeyPair) -> CertificateDer<'static> {
        params.signed_by(key, &self.issuer()).unwrap().der().clone()
    }

    /// A fresh key and a leaf for it made from `params`, with this CA's chain.
    pub fn leaf(&self, params: &CertificateParams) -> (Vec<CertificateDer<'static>>, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut chain = vec![self.sign(params, &key)];
        chain.extend(self.chain.iter().cloned());
        (chain, key)
    }

    /// Workload credentials for `id`, valid from a minute ago for `lifetime`, trusting
    /// `roots`.
    pub fn credentials(&self, id: &SpiffeId, lifetime: Duration, roots: &[&TestCa]) -> Credentials {
        let mut params = leaf_params(&id.to_string());
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(60)).into();
        params.not_after = (now + lifetime).into();
        let (chain, key) = self.leaf(&params);
        Credentials {
            chain,
            key: private_key(&key),
            trust_bundle: roots.iter().map(|root| root.cert.clone()).collect(),
        }
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + Duration::from_secs(10 * 365 * 86_400)).into();
    params
}

/// What a workload leaf looks like: the URI SAN, not a CA, digitalSignature, both
/// serverAuth and clientAuth, valid from a minute ago for an hour.
pub fn leaf_params(uri: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + Duration::from_secs(3600)).into();
    params
}

pub fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

/// PEM of one DER block.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64_engine::encode;
    let body = encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Standard base64, enough for PEM in tests (no dependency).
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

//! Writes the binary seeds of the TLS targets: certificates as the control plane's CA issues
//! them (rcgen, as `control/src/ca/` does) for `san_leaf`, and ClientHellos as sidecars and
//! other TLS clients send them (rustls) for `client_hello` and `detect`. The seeds are
//! committed; rerun only to refresh them:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example tls_seeds -- fuzz/seeds
//! ```

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::ServerName;

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    let out = Path::new(&out);
    certificates(&out.join("san_leaf"));
    client_hellos(&[&out.join("client_hello"), &out.join("detect")]);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "skiff root");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    write(dir, "root-ca.der", ca.self_signed(&ca_key).unwrap().der());
    let issuer = Issuer::from_params(&ca, &ca_key);

    let leaf = |uris: &[&str], is_ca: IsCa| {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = uris
            .iter()
            .map(|uri| SanType::URI((*uri).try_into().unwrap()))
            .collect();
        params.is_ca = is_ca;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        params.signed_by(&key, &issuer).unwrap().der().to_vec()
    };
    let id = "spiffe://cluster.local/ns/shop/sa/web";
    write(dir, "workload.der", &leaf(&[id], IsCa::ExplicitNoCa));
    write(
        dir,
        "two-uris.der",
        &leaf(
            &[id, "spiffe://cluster.local/ns/shop/sa/db"],
            IsCa::ExplicitNoCa,
        ),
    );
    write(dir, "no-basic-constraints.der", &leaf(&[id], IsCa::NoCa));
    write(dir, "no-san.der", &leaf(&[], IsCa::ExplicitNoCa));
}

fn client_hellos(dirs: &[&Path]) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let hello = |alpn: &[&[u8]], sni: Option<&str>| {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|value| value.to_vec()).collect();
        config.enable_sni = sni.is_some();
        let name = ServerName::try_from(sni.unwrap_or("peer.skiff.invalid").to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    };
    let hellos = [
        ("sidecar-h2.bin", hello(&[b"skiff/h2"], None)),
        ("sidecar-http1.bin", hello(&[b"skiff/http1"], None)),
        ("sidecar-tcp.bin", hello(&[b"skiff/tcp"], None)),
        (
            "app-h2-sni.bin",
            hello(&[b"h2", b"http/1.1"], Some("shop.example")),
        ),
        ("no-alpn.bin", hello(&[], Some("db.shop.svc.cluster.local"))),
    ];
    for dir in dirs {
        for (name, bytes) in &hellos {
            write(dir, name, bytes);
        }
    }
}

//! The simulated proxies' mTLS to the control plane: each identity gets a client certificate
//! signed with the control plane's own CA files ([`crate::identity::Signer`]), and the control
//! plane is verified against the CA's bundle, as `localhost`, one of the names its certificate
//! carries. One certificate per identity, signed before the run: connecting costs the
//! handshake only, as for a real proxy.

use std::collections::HashMap;

use tokio_rustls::TlsConnector;

use crate::identity::Signer;

/// A connector presenting a fresh certificate of `namespace/service_account`.
fn connector(
    signer: &Signer,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<TlsConnector> {
    let certificate = signer.certificate(namespace, service_account)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(signer.roots())
        .with_client_auth_cert(certificate.chain, certificate.key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(std::sync::Arc::new(config)))
}

/// One connector per distinct `(namespace, service account)` of `identities`.
pub fn connectors(
    signer: &Signer,
    identities: impl Iterator<Item = (String, String)>,
) -> anyhow::Result<HashMap<(String, String), TlsConnector>> {
    let mut connectors = HashMap::new();
    for identity in identities {
        if let std::collections::hash_map::Entry::Vacant(entry) = connectors.entry(identity) {
            let (namespace, service_account) = entry.key();
            let connector = connector(signer, namespace, service_account)?;
            entry.insert(connector);
        }
    }
    Ok(connectors)
}

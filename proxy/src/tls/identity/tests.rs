use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use std::error::Error as _;

use super::*;
use crate::tls::testing::{self, leaf_params, TestCa};
use crate::tls::Refusal;

const HOUR: Duration = Duration::from_secs(3600);

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

fn web() -> SpiffeId {
    id("spiffe://cluster.local/ns/shop/sa/web")
}

fn api() -> SpiffeId {
    id("spiffe://cluster.local/ns/shop/sa/api")
}

fn identity(ca: &TestCa, id: &SpiffeId) -> Identity {
    Identity::try_new(ca.credentials(id, HOUR, &[ca])).unwrap()
}

/// A client handshake from `client` to `server` over an in-memory pipe.
async fn handshake(
    client: &Identity,
    server: &Identity,
    alpn: &'static [u8],
    expected: &SpiffeId,
) -> (
    Result<tokio_rustls::client::TlsStream<DuplexStream>, TlsError>,
    Result<(tokio_rustls::server::TlsStream<DuplexStream>, Peer), TlsError>,
) {
    let (near, far) = duplex(64 * 1024);
    tokio::join!(connect(client, near, alpn, expected), accept(server, far))
}

/// Writes on one side and reads it on the other, both ways.
async fn exchange<A, B>(a: &mut A, b: &mut B, text: &[u8])
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut buffer = vec![0; text.len()];
    a.write_all(text).await.unwrap();
    a.flush().await.unwrap();
    b.read_exact(&mut buffer).await.unwrap();
    assert_eq!(buffer, text);
    b.write_all(text).await.unwrap();
    b.flush().await.unwrap();
    a.read_exact(&mut buffer).await.unwrap();
    assert_eq!(buffer, text);
}

#[tokio::test]
async fn sidecars_prove_their_identities_to_each_other() {
    let ca = TestCa::new("mesh root");
    let (client, server) = (identity(&ca, &web()), identity(&ca, &api()));
    for alpn in [ALPN_HTTP2, ALPN_HTTP1, ALPN_TCP] {
        let (client_side, server_side) = handshake(&client, &server, alpn, &api()).await;
        let mut client_side = client_side.unwrap();
        let (mut server_side, peer) = server_side.unwrap();
        assert_eq!(
            peer,
            Peer {
                id: web(),
                alpn: alpn.to_vec()
            }
        );
        assert_eq!(
            client_side.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        exchange(&mut client_side, &mut server_side, b"hello through mTLS").await;
    }
}

#[tokio::test]
async fn a_peer_with_another_identity_is_refused_by_the_client() {
    let ca = TestCa::new("mesh root");
    let (client, server) = (identity(&ca, &web()), identity(&ca, &api()));
    let other = id("spiffe://cluster.local/ns/shop/sa/payments");
    let (client_side, _) = handshake(&client, &server, ALPN_HTTP2, &other).await;
    let error = client_side.unwrap_err();
    assert_eq!(error.reason(), "identity-mismatch");
    assert_eq!(
        error.to_string(),
        "peer is spiffe://cluster.local/ns/shop/sa/api, expected spiffe://cluster.local/ns/shop/sa/payments"
    );
}

/// A client that trusts `server`'s bundle and presents `certified` (or nothing).
fn raw_client(
    server: &Identity,
    certified: Option<Arc<CertifiedKey>>,
) -> tokio_rustls::TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(server.current().verifier.clone());
    let mut config = match certified {
        Some(certified) => builder.with_client_cert_resolver(Arc::new(Presented(certified))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_HTTP2.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The server's refusal of a client that accepted it, and what the client then sees.
async fn refused_by_server(server: &Identity, certified: Option<Arc<CertifiedKey>>) -> TlsError {
    let (near, far) = duplex(64 * 1024);
    let name = ServerName::try_from("api.shop").unwrap();
    let connector = raw_client(server, certified);
    let (client_side, server_side) =
        tokio::join!(connector.connect(name, near), accept(server, far));
    // TLS 1.3: the client finishes before the server has checked its certificate; its first
    // read then fails with the server's alert.
    let client_error = match client_side {
        Ok(mut tls) => tls.read(&mut [0u8; 1]).await.unwrap_err(),
        Err(error) => error,
    };
    assert_eq!(
        TlsError::from_handshake(client_error).reason(),
        "peer-refused"
    );
    server_side.unwrap_err()
}

#[tokio::test]
async fn refusals_in_a_handshake_keep_their_reason() {
    let ca = TestCa::new("mesh root");
    let server = identity(&ca, &api());

    // Both sides refuse a peer from another mesh (neither trusts the other's root): the
    // first to check is the client.
    let stranger_ca = TestCa::new("another mesh");
    let stranger = identity(&stranger_ca, &web());
    let (client_side, server_side) = handshake(&stranger, &server, ALPN_HTTP2, &api()).await;
    assert_eq!(client_side.unwrap_err().reason(), "unknown-issuer");
    assert_eq!(server_side.unwrap_err().reason(), "peer-refused");

    // The server's own refusals, of clients that accept it.
    let error = refused_by_server(&server, Some(stranger.certified_key())).await;
    assert_eq!(error.reason(), "unknown-issuer", "{error}");

    let mut params = leaf_params("spiffe://other.example/ns/shop/sa/web");
    params.not_after = (SystemTime::now() + HOUR).into();
    let (chain, key) = ca.leaf(&params);
    let foreign = CertifiedKey::from_der(chain, testing::private_key(&key), &provider()).unwrap();
    let error = refused_by_server(&server, Some(Arc::new(foreign))).await;
    assert_eq!(error.reason(), "foreign-trust-domain", "{error}");
    assert!(error
        .source()
        .unwrap()
        .to_string()
        .contains("spiffe://other.example/ns/shop/sa/web"));

    let error = refused_by_server(&server, None).await;
    assert_eq!(error.reason(), "no-client-certificate", "{error}");
}

#[tokio::test]
async fn a_client_offering_no_mesh_protocol_is_refused() {
    let ca = TestCa::new("mesh root");
    let (client, server) = (identity(&ca, &web()), identity(&ca, &api()));
    let (client_side, server_side) = handshake(&client, &server, b"h2", &api()).await;
    assert_eq!(server_side.unwrap_err().reason(), "no-alpn");
    assert_eq!(client_side.unwrap_err().reason(), "no-alpn");
}

#[tokio::test]
async fn renewal_keeps_open_connections_and_new_ones_get_the_new_certificate() {
    let root = TestCa::new("mesh root");
    let client = identity(&root, &web());
    let server = identity(&root, &api());
    let old_leaf = server.certified_key().cert[0].clone();

    let (client_side, server_side) = handshake(&client, &server, ALPN_HTTP2, &api()).await;
    let (mut open_client, (mut open_server, _)) = (client_side.unwrap(), server_side.unwrap());
    exchange(&mut open_client, &mut open_server, b"before").await;

    // A root rotation: the next root joins both bundles, then the server's certificate is
    // renewed from it. Both sides renew while the connection is open.
    let next = TestCa::new("next mesh root");
    client
        .install(root.credentials(&web(), 2 * HOUR, &[&root, &next]))
        .unwrap();
    server
        .install(next.credentials(&api(), 2 * HOUR, &[&root, &next]))
        .unwrap();
    assert_eq!(server.trust_roots(), 2);
    let new_leaf = server.certified_key().cert[0].clone();
    assert_ne!(old_leaf, new_leaf);

    // The open connection still works.
    exchange(&mut open_client, &mut open_server, b"after the renewal").await;
    let (_, open) = open_client.get_ref();
    assert_eq!(open.peer_certificates().unwrap()[0], old_leaf);

    // A new connection sees the new certificate, and the server the client's renewed one.
    let (client_side, server_side) = handshake(&client, &server, ALPN_HTTP2, &api()).await;
    let (mut new_client, (mut new_server, peer)) = (client_side.unwrap(), server_side.unwrap());
    assert_eq!(
        new_client.get_ref().1.peer_certificates().unwrap()[0],
        new_leaf
    );
    assert_eq!(
        new_server.get_ref().1.peer_certificates().unwrap()[0],
        client.certified_key().cert[0]
    );
    assert_eq!(peer.id, web());
    exchange(&mut new_client, &mut new_server, b"new").await;
    exchange(&mut open_client, &mut open_server, b"old still").await;
}

#[tokio::test]
async fn a_second_connection_resumes_and_still_knows_its_peer() {
    let ca = TestCa::new("mesh root");
    let (client, server) = (identity(&ca, &web()), identity(&ca, &api()));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (client_side, server_side) = handshake(&client, &server, ALPN_TCP, &api()).await;
        let (mut client_side, (mut server_side, peer)) =
            (client_side.unwrap(), server_side.unwrap());
        assert_eq!(peer.id, web());
        // Reading lets the client take the session tickets the server sent.
        exchange(&mut client_side, &mut server_side, b"x").await;
        kinds.push(client_side.get_ref().1.handshake_kind());
    }
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[test]
fn unusable_credentials_are_refused_and_the_current_ones_stay() {
    let ca = TestCa::new("mesh root");
    let current = identity(&ca, &web());
    let other = TestCa::new("another root");
    let cases: Vec<(&str, Credentials)> = vec![
        ("chain to a root outside the bundle", {
            Credentials {
                trust_bundle: vec![ca.cert.clone()],
                ..other.credentials(&web(), HOUR, &[&other])
            }
        }),
        ("key of another certificate", {
            let mut credentials = ca.credentials(&web(), HOUR, &[&ca]);
            credentials.key = ca.credentials(&web(), HOUR, &[&ca]).key;
            credentials
        }),
        ("expired", {
            let mut params = leaf_params(&web().to_string());
            params.not_before = (SystemTime::now() - 2 * HOUR).into();
            params.not_after = (SystemTime::now() - HOUR).into();
            let (chain, key) = ca.leaf(&params);
            Credentials {
                chain,
                key: testing::private_key(&key),
                trust_bundle: vec![ca.cert.clone()],
            }
        }),
        ("no SPIFFE ID", {
            let mut params = leaf_params("https://web.shop/");
            params.not_after = (SystemTime::now() + HOUR).into();
            let (chain, key) = ca.leaf(&params);
            Credentials {
                chain,
                key: testing::private_key(&key),
                trust_bundle: vec![ca.cert.clone()],
            }
        }),
        ("empty bundle", {
            Credentials {
                trust_bundle: Vec::new(),
                ..ca.credentials(&web(), HOUR, &[&ca])
            }
        }),
    ];
    let before = current.certified_key().cert[0].clone();
    for (name, credentials) in cases {
        let error = current.install(credentials).expect_err(name);
        assert_eq!(error.reason(), "invalid-credentials", "{name}: {error}");
    }
    assert_eq!(current.certified_key().cert[0], before);
    assert_eq!(current.id(), web());
}

#[test]
fn credentials_read_from_pem() {
    let ca = TestCa::new("mesh root");
    let issued = ca.credentials(&web(), HOUR, &[&ca]);
    let chain_pem: String = issued
        .chain
        .iter()
        .map(|cert| testing::pem("CERTIFICATE", cert))
        .collect();
    let credentials = Credentials::from_pem(&chain_pem, issued.key.clone_key(), &ca.pem()).unwrap();
    assert_eq!(credentials.chain, issued.chain);
    assert_eq!(credentials.trust_bundle, vec![ca.cert.clone()]);
    // The test PEM encoder agrees with the decoder.
    let decoded = CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap();
    assert_eq!(decoded, ca.cert);
    assert!(Credentials::from_pem("", issued.key.clone_key(), &ca.pem()).is_err());
}

#[tokio::test]
async fn client_hellos_are_recognised_from_their_first_bytes() {
    let ca = TestCa::new("mesh root");
    let client = identity(&ca, &web());
    let (near, mut far) = duplex(64 * 1024);
    let connecting = tokio::spawn(async move { connect(&client, near, ALPN_HTTP1, &api()).await });
    let mut hello = vec![0u8; 16 * 1024];
    let read = far.read(&mut hello).await.unwrap();
    hello.truncate(read);
    connecting.abort();

    assert_eq!(
        inspect_client_hello(&hello),
        HelloCheck::ClientHello {
            alpn: vec![ALPN_HTTP1.to_vec()]
        }
    );
    for end in [0, 1, 2, 5, 6, 40, hello.len() - 1] {
        assert_eq!(
            inspect_client_hello(&hello[..end]),
            HelloCheck::NeedMore,
            "{end} bytes"
        );
    }
    for not_tls in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PRI * HTTP/2.0\r\n",
        b"\x16\x01",
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", // a ServerHello
        b"\x15\x03\x03\x00\x02\x02\x28",             // an alert
    ] {
        assert_eq!(
            inspect_client_hello(not_tls),
            HelloCheck::NotTls,
            "{not_tls:?}"
        );
    }
}

#[test]
fn metrics_render_in_the_prometheus_text_format() {
    let ca = TestCa::new("mesh root");
    let identity = identity(&ca, &web());
    identity.record_renewal(true);
    identity.record_renewal(false);
    identity.record_renewal(true);
    let mut out = String::new();
    identity.render_metrics(&mut out);
    let not_after = unix_seconds(identity.not_after());
    for line in [
        format!("skiff_certificate_expiration_timestamp_seconds {not_after}"),
        "skiff_certificate_renewals_total{result=\"success\"} 2".to_string(),
        "skiff_certificate_renewals_total{result=\"failure\"} 1".to_string(),
        "skiff_certificate_trust_roots 1".to_string(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
    }
    promtool_check(&out);
}

/// Runs `promtool check metrics` on the text when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed; metrics checked by the assertions only");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn refusal_labels_come_through_tls_error() {
    let refused = TlsError::Certificate(verify::CertificateRefused::new(
        Refusal::CaAsLeaf,
        "the leaf is a CA certificate",
    ));
    assert_eq!(refused.reason(), "ca-as-leaf");
}

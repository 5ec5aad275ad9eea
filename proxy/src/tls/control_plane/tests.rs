use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::tls::testing::{leaf_params, private_key, TestCa};

const TIMEOUT: Duration = Duration::from_secs(5);

fn control_plane_id() -> SpiffeId {
    SpiffeId::parse(DEFAULT_CONTROL_PLANE_IDENTITY).unwrap()
}

fn web_id() -> SpiffeId {
    SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap()
}

/// A stand-in for the control plane's API on a loopback port: presents a certificate for
/// `id` issued by `issuer`, asks for a client certificate chaining to `client_root` without
/// requiring one, and says after each handshake whether one was presented.
struct FakeControlPlane {
    address: Authority,
    presented: mpsc::UnboundedReceiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeControlPlane {
    async fn start(issuer: &TestCa, id: &str, client_root: &TestCa) -> FakeControlPlane {
        let (chain, key) = issuer.leaf(&leaf_params(id));
        let mut roots = RootCertStore::empty();
        roots.add(client_root.cert.clone()).unwrap();
        let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, private_key(&key))
            .unwrap();
        config.alpn_protocols = vec![ALPN_CONTROL.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string().parse().unwrap();
        let (report, presented) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, report) = (acceptor.clone(), report.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = report.send(tls.get_ref().1.peer_certificates().is_some());
                    }
                });
            }
        });
        FakeControlPlane {
            address,
            presented,
            task,
        }
    }
}

impl Drop for FakeControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The label of a failed connection's refusal.
fn refusal(result: Result<impl Sized, ConnectError>) -> &'static str {
    match result {
        Ok(_) => "connected",
        Err(ConnectError::Tls(error)) => error.reason(),
        Err(other) => panic!("{other:?}"),
    }
}

/// A `--ca-bundle` file, removed on drop.
struct BundleFile(std::path::PathBuf);

impl BundleFile {
    fn new(name: &str, roots: &[&TestCa]) -> BundleFile {
        let path =
            std::env::temp_dir().join(format!("skiff-ca-bundle-{name}-{}.pem", std::process::id()));
        let file = BundleFile(path);
        file.write(roots);
        file
    }

    /// Rewrites it in place, as the kubelet updates a ConfigMap volume.
    fn write(&self, roots: &[&TestCa]) {
        let pem: String = roots.iter().map(|root| root.pem()).collect();
        std::fs::write(&self.0, pem).unwrap();
    }
}

impl Drop for BundleFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Roots named by letter: `roots("AB")` is root A then root B.
fn lettered_roots() -> impl Fn(&str) -> Vec<CertificateDer<'static>> {
    let cas = ["root A", "root B", "root C"].map(|name| TestCa::new(name).cert);
    move |letters: &str| {
        letters
            .chars()
            .map(|letter| cas[usize::from(letter as u8 - b'A')].clone())
            .collect()
    }
}

#[test]
fn the_roots_trusted_are_the_ca_bundle_and_what_the_identity_adds() {
    let roots = lettered_roots();
    let cases = [
        // (--ca-bundle, the identity's trust bundle, the roots trusted)
        // Before the first certificate: --ca-bundle alone.
        ("A", "", "A"),
        // A rotation announced by the control plane.
        ("A", "AB", "AB"),
        // The operator added B to --ca-bundle as well: nothing twice.
        ("AB", "BA", "AB"),
        // The rotation is over and A dropped from the bundle: --ca-bundle still counts.
        ("A", "B", "AB"),
        ("C", "AB", "CAB"),
    ];
    for (ca_bundle, identity_bundle, trusted) in cases {
        assert_eq!(
            trusted_roots(&roots(ca_bundle), &roots(identity_bundle)),
            roots(trusted),
            "{ca_bundle} + {identity_bundle}"
        );
    }
}

#[test]
fn bundle_changes_name_each_root_by_its_fingerprint() {
    let roots = lettered_roots();
    let (a, b) = (&roots("A")[0], &roots("B")[0]);
    assert!(fingerprint(a).starts_with("sha256:"), "{}", fingerprint(a));
    assert_eq!(fingerprint(a).len(), "sha256:".len() + 64);
    assert_ne!(fingerprint(a), fingerprint(b));

    assert!(
        BundleChange::between(&roots("AB"), &roots("BA")).is_empty(),
        "order does not matter"
    );
    assert_eq!(
        BundleChange::between(&roots("A"), &roots("AB")),
        BundleChange {
            added: vec![fingerprint(b)],
            removed: vec![],
        }
    );
    assert_eq!(
        BundleChange::between(&roots("AB"), &roots("B")),
        BundleChange {
            added: vec![],
            removed: vec![fingerprint(a)],
        }
    );
}

#[tokio::test]
async fn a_bundle_received_before_a_root_rotation_lets_the_proxy_follow_the_control_plane() {
    let (a, b, c) = (
        TestCa::new("root A"),
        TestCa::new("root B"),
        TestCa::new("root C"),
    );
    // A new root that kept A's name.
    let renamed = TestCa::new("root A");
    // Started with --ca-bundle A; its certificate, issued by A, came with the bundle A + B.
    let tls = ControlPlaneTls::try_new(std::slice::from_ref(&a.cert), control_plane_id()).unwrap();
    let identity =
        Arc::new(Identity::try_new(a.credentials(&web_id(), TIMEOUT * 60, &[&a, &b])).unwrap());
    let impostor = "spiffe://cluster.local/ns/skiff-system/sa/someone";
    let control = DEFAULT_CONTROL_PLANE_IDENTITY;
    let cases = [
        // (issuer of the control plane's certificate, the identity it names, with the proxy's
        // identity, outcome)
        ("A", control, false, "connected"),
        ("A", control, true, "connected"),
        // The control plane now serves a certificate issued by B.
        ("B", control, true, "connected"),
        ("B", control, false, "unknown-issuer"),
        // A root nobody announced is still unknown.
        ("C", control, true, "unknown-issuer"),
        ("C", control, false, "unknown-issuer"),
        // Nor is a root of A's name: its signatures are not A's.
        ("A'", control, true, "bad-signature"),
        // Trusting B does not widen whom the proxy takes for its control plane.
        ("B", impostor, true, "identity-mismatch"),
        ("A", impostor, true, "identity-mismatch"),
    ];
    for (issuer, id, with_identity, outcome) in cases {
        let ca = match issuer {
            "A" => &a,
            "B" => &b,
            "C" => &c,
            _ => &renamed,
        };
        let plane = FakeControlPlane::start(ca, id, &a).await;
        let result = tls
            .connect(&plane.address, with_identity.then_some(&identity), TIMEOUT)
            .await;
        assert_eq!(
            refusal(result),
            outcome,
            "{id} issued by {issuer}, with the identity: {with_identity}"
        );
    }
    assert_eq!(
        tls.ca_bundle_roots().len(),
        1,
        "--ca-bundle itself is unchanged"
    );
}

#[tokio::test]
async fn the_ca_bundle_is_read_again_when_the_control_plane_chains_to_no_known_root() {
    let (a, b) = (TestCa::new("root A"), TestCa::new("root B"));
    let file = BundleFile::new("reread", &[&a]);
    let tls = ControlPlaneTls::load(&file.0, control_plane_id()).unwrap();
    // The certificate client and the stream each hold a clone.
    let stream_tls = tls.clone();
    let plane = FakeControlPlane::start(&b, DEFAULT_CONTROL_PLANE_IDENTITY, &a).await;

    // Unchanged file: refused, and nothing changed.
    assert_eq!(
        refusal(tls.connect(&plane.address, None, TIMEOUT).await),
        "unknown-issuer"
    );
    assert!(tls.reload().is_empty());

    // A broken file (a half-written update) leaves the roots in force.
    std::fs::write(&file.0, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    assert_eq!(
        refusal(tls.connect(&plane.address, None, TIMEOUT).await),
        "unknown-issuer"
    );
    assert_eq!(tls.ca_bundle_roots().to_vec(), vec![a.cert.clone()]);

    // The ConfigMap is updated in place with A + B: the same attempt re-reads it and
    // connects, and every clone uses the new roots.
    file.write(&[&a, &b]);
    assert_eq!(
        refusal(tls.connect(&plane.address, None, TIMEOUT).await),
        "connected"
    );
    assert_eq!(
        *stream_tls.ca_bundle_roots(),
        [a.cert.clone(), b.cert.clone()]
    );

    // A is dropped at the end of the rotation: reported as removed.
    file.write(&[&b]);
    assert_eq!(
        stream_tls.reload(),
        BundleChange {
            added: vec![],
            removed: vec![fingerprint(&a.cert)],
        }
    );
    assert_eq!(
        refusal(tls.connect(&plane.address, None, TIMEOUT).await),
        "connected"
    );

    // A new root that kept the old one's name is refused for its signature, and makes the
    // proxy re-read the file just the same.
    file.write(&[&a]);
    assert!(!tls.reload().is_empty());
    let renamed = TestCa::new("root A");
    let renamed_plane = FakeControlPlane::start(&renamed, DEFAULT_CONTROL_PLANE_IDENTITY, &a).await;
    let result = tls.connect(&renamed_plane.address, None, TIMEOUT).await;
    assert_eq!(refusal(result), "bad-signature");
    file.write(&[&a, &renamed]);
    let result = tls.connect(&renamed_plane.address, None, TIMEOUT).await;
    assert_eq!(refusal(result), "connected");

    // Roots given in memory have no file to re-read.
    let in_memory =
        ControlPlaneTls::try_new(std::slice::from_ref(&a.cert), control_plane_id()).unwrap();
    assert_eq!(
        refusal(in_memory.connect(&plane.address, None, TIMEOUT).await),
        "unknown-issuer"
    );
    assert!(in_memory.reload().is_empty());
}

#[tokio::test]
async fn a_refusal_other_than_unknown_issuer_does_not_reread_the_bundle() {
    let a = TestCa::new("root A");
    let file = BundleFile::new("mismatch", &[&a]);
    let tls = ControlPlaneTls::load(&file.0, control_plane_id()).unwrap();
    let plane =
        FakeControlPlane::start(&a, "spiffe://cluster.local/ns/skiff-system/sa/someone", &a).await;
    // Were the file re-read, the connection would be tried again and the unreadable file
    // reported; the refusal is the control plane's identity, which no root changes.
    std::fs::remove_file(&file.0).unwrap();
    assert_eq!(
        refusal(tls.connect(&plane.address, None, TIMEOUT).await),
        "identity-mismatch"
    );
    assert_eq!(tls.lock_bundle().last_error, None);
}

#[tokio::test]
async fn the_certificate_is_presented_while_it_is_valid_and_not_after() {
    let (a, b) = (TestCa::new("root A"), TestCa::new("root B"));
    let tls = ControlPlaneTls::try_new(std::slice::from_ref(&a.cert), control_plane_id()).unwrap();
    // Already switched to B; the proxy's certificate is from A, with the bundle A + B.
    let mut plane = FakeControlPlane::start(&b, DEFAULT_CONTROL_PLANE_IDENTITY, &a).await;
    // Long enough that the first handshake happens while it is valid even on a loaded CI
    // machine (1 s was not); the test then waits for it to expire.
    let lifetime = Duration::from_secs(4);
    let identity =
        Arc::new(Identity::try_new(a.credentials(&web_id(), lifetime, &[&a, &b])).unwrap());

    tls.connect(&plane.address, Some(&identity), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(plane.presented.recv().await, Some(true));

    // Expired (the control plane was out of reach): presenting it would fail the handshake,
    // so nothing is presented (the token authenticates), and its trust bundle still counts.
    while identity.not_after() > SystemTime::now() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tls.connect(&plane.address, Some(&identity), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(plane.presented.recv().await, Some(false));
}

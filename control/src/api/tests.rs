//! The API over real TLS on loopback: a proxy's certificate exchange (token, renewal, refusals)
//! and the configuration stream's identity check.

use std::net::SocketAddr;

use http_body_util::Empty;
use hyper::client::conn::http2 as client_http2;
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use skiff_api::stream::{encode, ControlMessage, Hello};
use tokio::net::TcpStream;

use super::*;
use crate::ca::{CertificateAuthority, Settings};
use crate::shutdown::Shutdown;

const POLICY: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop}
spec: {serviceAccount: web, bootstrapToken: web-bootstrap-token, addresses: [10.0.0.5]}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: db, namespace: shop}
spec: {serviceAccount: db, bootstrapToken: db-bootstrap-token}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: impostor, namespace: skiff-system}
spec: {serviceAccount: skiff-control, bootstrapToken: impostor-bootstrap-token}
";

fn workload(name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// A control plane serving the API on a loopback port.
struct Running {
    control: Arc<ControlPlane>,
    address: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let ca = CertificateAuthority::generate(Settings::default()).unwrap();
    let control = Arc::new(ControlPlane::new(ca));
    let files = vec![("policy.yaml".to_string(), POLICY.to_string())];
    control
        .store
        .publish(skiff_api::load(&files).unwrap().policy);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(serve(listener, control.clone(), shutdown.signal()));
    Running {
        control,
        address,
        shutdown,
        task,
    }
}

/// A proxy's key and, once issued, its certificate chain.
struct ProxyKey {
    key: KeyPair,
    chain: Vec<CertificateDer<'static>>,
}

impl ProxyKey {
    fn new() -> ProxyKey {
        ProxyKey {
            key: KeyPair::generate().unwrap(),
            chain: Vec::new(),
        }
    }

    fn csr(&self) -> String {
        CertificateParams::default()
            .serialize_request(&self.key)
            .unwrap()
            .pem()
            .unwrap()
    }
}

type Sender = client_http2::SendRequest<BoxBody<Bytes, Infallible>>;

/// A TLS + HTTP/2 connection to the API, verifying the control plane against the CA's roots
/// (as `localhost`), with `client` as the client certificate when given. Returns the sender
/// and the server's leaf.
async fn connect(
    running: &Running,
    client: Option<&ProxyKey>,
) -> Result<(Sender, CertificateDer<'static>), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for root in running.control.ca.roots() {
        roots.add(root.clone()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(proxy) => builder
            .with_client_auth_cert(
                proxy.chain.clone(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(proxy.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(running.address).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let server_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (sender, connection) = client_http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    Ok((sender, server_leaf))
}

/// `POST /v1/certificate`: the status and the body.
async fn ask(
    sender: &mut Sender,
    workload: &WorkloadRef,
    csr_pem: String,
    token: Option<&str>,
) -> (StatusCode, String) {
    let body = serde_json::to_vec(&CertificateRequest {
        workload: workload.clone(),
        csr_pem,
    })
    .unwrap();
    let mut request = Request::post(format!("https://localhost{CERTIFICATE_PATH}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body)).boxed()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Gets `proxy` a certificate for `workload` with `token`.
async fn bootstrap(running: &Running, proxy: &mut ProxyKey, workload: &str, token: &str) {
    let (mut sender, _) = connect(running, None).await.unwrap();
    let (status, body) = ask(
        &mut sender,
        &self::workload(workload),
        proxy.csr(),
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: CertificateResponse = serde_json::from_str(&body).unwrap();
    proxy.chain = CertificateDer::pem_slice_iter(answer.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
}

#[tokio::test]
async fn a_proxy_gets_and_renews_its_certificate_and_nothing_else() {
    let running = start().await;
    let metrics = &running.control.metrics;

    // The control plane shows its own identity.
    let (mut anonymous, server_leaf) = connect(&running, None).await.unwrap();
    assert_eq!(
        tls::peer_identity(&server_leaf).unwrap().to_string(),
        "spiffe://cluster.local/ns/skiff-system/sa/skiff-control"
    );

    // With the bootstrap token.
    let mut web = ProxyKey::new();
    let (status, body) = ask(
        &mut anonymous,
        &workload("web"),
        web.csr(),
        Some("web-bootstrap-token"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: CertificateResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.identity, "spiffe://cluster.local/ns/shop/sa/web");
    assert_eq!(
        answer.trust_bundle_pem,
        running.control.ca.trust_bundle_pem()
    );
    web.chain = CertificateDer::pem_slice_iter(answer.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(metrics.certificates_issued(), 1);

    // Refusals: a wrong token, no credentials, another workload's token, a bad CSR, a CSR for
    // another identity, malformed requests.
    let refusals = [
        (
            workload("web"),
            web.csr(),
            Some("db-bootstrap-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            workload("web"),
            web.csr(),
            None,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            workload("ghost"),
            web.csr(),
            Some("web-bootstrap-token"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            workload("web"),
            "garbage".into(),
            Some("web-bootstrap-token"),
            StatusCode::BAD_REQUEST,
            "PEM",
        ),
        (
            workload("web"),
            {
                let mut params = CertificateParams::default();
                params.subject_alt_names = vec![rcgen::SanType::URI(
                    "spiffe://cluster.local/ns/shop/sa/db"
                        .to_string()
                        .try_into()
                        .unwrap(),
                )];
                params.serialize_request(&web.key).unwrap().pem().unwrap()
            },
            Some("web-bootstrap-token"),
            StatusCode::FORBIDDEN,
            "asks for spiffe://cluster.local/ns/shop/sa/db",
        ),
        (
            WorkloadRef {
                namespace: "skiff-system".into(),
                name: "impostor".into(),
            },
            web.csr(),
            Some("impostor-bootstrap-token"),
            StatusCode::FORBIDDEN,
            "the control plane's own identity",
        ),
    ];
    for (workload, csr, token, expected, reason) in refusals {
        let (status, body) = ask(&mut anonymous, &workload, csr, token).await;
        assert_eq!(status, expected, "{workload} {token:?}: {body}");
        assert!(body.contains(reason), "{body}");
        assert_eq!(body.lines().count(), 1, "one line: {body}");
    }
    let request = Request::post(format!("https://localhost{CERTIFICATE_PATH}"))
        .body(Full::new(Bytes::from_static(b"{\"nope\": 1}")).boxed())
        .unwrap();
    let response = anonymous.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::WrongToken),
        1
    );
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::NoCredentials),
        1
    );
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::UnknownWorkload),
        1
    );
    assert_eq!(metrics.certificates_refused(CertificateRefusal::BadCsr), 1);
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::CsrIdentity),
        1
    );
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::BadRequest),
        1
    );

    // Renewal: over a connection made with its certificate, no token.
    let (mut renewing, _) = connect(&running, Some(&web)).await.unwrap();
    let fresh = ProxyKey::new();
    let (status, body) = ask(&mut renewing, &workload("web"), fresh.csr(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(metrics.certificates_issued(), 2);

    // Its certificate gets it nothing of another workload.
    let (status, body) = ask(&mut renewing, &workload("db"), fresh.csr(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("not spiffe://cluster.local/ns/shop/sa/db"),
        "{body}"
    );
    assert_eq!(
        metrics.certificates_refused(CertificateRefusal::OtherIdentity),
        1
    );

    // A client certificate from another CA fails the handshake.
    let stranger_ca = CertificateAuthority::generate(Settings::default()).unwrap();
    let stranger = stranger_ca
        .issue(&SpiffeId::new("cluster.local", "shop", "web"), &[])
        .unwrap();
    let impostor = ProxyKey {
        key: KeyPair::try_from(&stranger.key).unwrap(),
        chain: stranger.chain,
    };
    let refused = match connect(&running, Some(&impostor)).await {
        // TLS 1.3: the client learns of the refusal at its first read.
        Ok((mut sender, _)) => sender
            .send_request(
                Request::get("https://localhost/v1/proxies")
                    .body(Empty::new().boxed())
                    .unwrap(),
            )
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused, "an untrusted client certificate is refused");
    assert!(metrics
        .render()
        .contains("skiff_control_tls_handshake_failures_total 1"));

    running.shutdown.request();
    running.task.await.unwrap();
}

/// Opens `/v1/stream` with a Hello for `workload`: the status and the first frame (if 200).
async fn open(sender: &mut Sender, workload: &WorkloadRef) -> (StatusCode, String) {
    let (mut out, body) = Channel::<Bytes, Infallible>::new(4);
    let hello = ProxyMessage::Hello(Hello {
        workload: workload.clone(),
        pod_ips: vec!["10.0.0.5".parse().unwrap()],
        proxy_version: "test".into(),
        last_applied: None,
    });
    out.send_data(Bytes::from(encode(&hello))).await.unwrap();
    let request = Request::post(format!("https://localhost{STREAM_PATH}"))
        .body(body.boxed())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut decoder = FrameDecoder::new(skiff_api::stream::MAX_CONFIG_FRAME_BYTES);
    if status != StatusCode::OK {
        let text = body.collect().await.unwrap().to_bytes();
        return (status, String::from_utf8(text.to_vec()).unwrap());
    }
    loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Some(data) = frame.data_ref() {
            decoder.push(data);
        }
        if let Some(ControlMessage::Config(config)) = decoder.next_message().unwrap() {
            drop(out);
            return (status, config.workload.to_string());
        }
    }
}

#[tokio::test]
async fn a_stream_needs_the_certificate_of_the_workload_it_names() {
    let running = start().await;
    let mut web = ProxyKey::new();
    bootstrap(&running, &mut web, "web", "web-bootstrap-token").await;
    let mut db = ProxyKey::new();
    bootstrap(&running, &mut db, "db", "db-bootstrap-token").await;

    let (mut as_web, _) = connect(&running, Some(&web)).await.unwrap();
    let (status, body) = open(&mut as_web, &workload("web")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "shop/web"));

    let (mut as_db, _) = connect(&running, Some(&db)).await.unwrap();
    let (status, body) = open(&mut as_db, &workload("web")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("the client certificate is spiffe://cluster.local/ns/shop/sa/db, not spiffe://cluster.local/ns/shop/sa/web"),
        "{body}"
    );

    let (mut anonymous, _) = connect(&running, None).await.unwrap();
    let (status, body) = open(&mut anonymous, &workload("web")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("client certificate"), "{body}");

    let metrics = &running.control.metrics;
    assert_eq!(metrics.streams_refused(StreamRefusal::WrongIdentity), 1);
    assert_eq!(
        metrics.streams_refused(StreamRefusal::NoClientCertificate),
        1
    );

    running.shutdown.request();
    running.task.await.unwrap();
}

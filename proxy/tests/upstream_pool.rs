//! The upstream pool against real local servers: the connection bulkhead never lets pooled
//! connections to one endpoint starve another, a broken pooled HTTP/2 connection is replaced
//! at most once per request, and connections to endpoints that left the configuration are
//! forgotten.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_proxy::http::client::{ClientSettings, Dial, Upstreams};
use skiff_proxy::http::replay::ReplayBody;
use skiff_proxy::policy::Destination;
use skiff_proxy::resilience::bulkhead::ConnectionLimit;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Empty `Incoming` bodies, obtained from an in-memory hyper server (hyper has no public
/// constructor).
async fn empty_incoming() -> Incoming {
    let (client_io, server_io) = tokio::io::duplex(4096);
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let svc = service_fn(move |req: http::Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(req.into_body());
                Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server_io), svc)
            .await;
    });
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let _ = sender
        .send_request(http::Request::get("/").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    rx.recv().await.unwrap()
}

async fn request(addr: SocketAddr, version: http::Version) -> http::Request<ReplayBody> {
    let mut req = http::Request::builder()
        .uri(format!("http://{addr}/"))
        .body(ReplayBody::streamed(empty_incoming().await))
        .unwrap();
    *req.version_mut() = version;
    req
}

/// An h2c or http/1 server answering 200 to every request; counts accepted connections.
async fn server(h2: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                }
            });
        }
    });
    (addr, accepted)
}

/// Connection bulkhead of 1, two h2 endpoints: the pooled HTTP/2 connection to A keeps
/// the only permit (keep-alive pings keep it open for ever), so a request to B waits for a
/// connection that never comes.
#[tokio::test]
async fn a_pooled_http2_connection_to_one_endpoint_leaves_room_for_another() {
    let ((a, _), (b, _)) = (server(true).await, server(true).await);
    let upstreams = Upstreams::new(ClientSettings::default(), None, Arc::default());
    let limit = ConnectionLimit::new(1, 8);
    let dial = Dial {
        connect_timeout: Duration::from_secs(1),
        connections: Some(&limit),
    };
    let response = upstreams
        .send_http2(
            &Destination::plaintext(a),
            request(a, http::Version::HTTP_2).await,
            dial,
        )
        .await
        .unwrap();
    let _ = response.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let db = Destination::plaintext(b);
    let to_b = upstreams.send_http2(&db, request(b, http::Version::HTTP_2).await, dial);
    let outcome = tokio::time::timeout(Duration::from_secs(3), to_b).await;
    assert!(
        outcome.is_ok(),
        "request to B still waiting after 3 s: open={} pending={}",
        limit.open(),
        limit.pending()
    );
}

/// The same with HTTP/1: an idle pooled connection to A (idle, nothing in flight) keeps
/// the permit, so B can never be connected.
#[tokio::test]
async fn an_idle_pooled_http1_connection_holds_no_connection_slot() {
    let ((a, _), (b, _)) = (server(false).await, server(false).await);
    let upstreams = Upstreams::new(ClientSettings::default(), None, Arc::default());
    let limit = ConnectionLimit::new(1, 8);
    let dial = Dial {
        connect_timeout: Duration::from_secs(1),
        connections: Some(&limit),
    };
    let (response, checkin) = upstreams
        .send_http1(
            &Destination::plaintext(a),
            request(a, http::Version::HTTP_11).await,
            dial,
        )
        .await
        .unwrap();
    let _ = response.into_body().collect().await.unwrap();
    checkin.release();
    let db = Destination::plaintext(b);
    let to_b = upstreams.send_http1(&db, request(b, http::Version::HTTP_11).await, dial);
    let outcome = tokio::time::timeout(Duration::from_secs(3), to_b).await;
    assert!(
        outcome.is_ok(),
        "request to B still waiting after 3 s: open={} pending={}",
        limit.open(),
        limit.pending()
    );
}

/// A pooled HTTP/2 connection whose peer went away, and an endpoint that now accepts and
/// closes every connection: `send_http2` keeps `reused = true` after reconnecting, so it
/// reconnects for ever inside a single attempt.
#[tokio::test]
async fn a_broken_pooled_http2_connection_is_replaced_once_not_forever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (first_done_tx, first_done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // First connection: served until told to stop, then closed.
        let (stream, _) = listener.accept().await.unwrap();
        count.fetch_add(1, Ordering::Relaxed);
        let svc = service_fn(|_req| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), svc);
        tokio::select! { _ = conn => {}, _ = first_done_rx => {} }
        // Afterwards: accept and drop at once (a crashing app behind a live port).
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            drop(stream);
        }
    });
    let upstreams = Upstreams::new(ClientSettings::default(), None, Arc::default());
    let dial = Dial {
        connect_timeout: Duration::from_secs(1),
        connections: None,
    };
    let dest = Destination::plaintext(addr);
    let response = upstreams
        .send_http2(&dest, request(addr, http::Version::HTTP_2).await, dial)
        .await
        .unwrap();
    let _ = response.into_body().collect().await.unwrap();
    let second = request(addr, http::Version::HTTP_2).await;
    first_done_tx.send(()).unwrap();
    tokio::task::yield_now().await;
    let outcome = tokio::time::timeout(
        Duration::from_secs(2),
        upstreams.send_http2(&dest, second, dial),
    )
    .await;
    let n = accepted.load(Ordering::Relaxed);
    match outcome {
        Ok(result) => println!("ended: ok={} after {n} connections", result.is_ok()),
        Err(_) => panic!("one attempt still running after 2 s, {n} connections opened"),
    }
}

/// An endpoint that left the configuration loses its pooled HTTP/2 connection: the next
/// request to that address opens a new one, while a kept endpoint's connection is reused.
#[tokio::test]
async fn retain_forgets_pooled_connections_to_departed_endpoints() {
    let ((a, accepted_a), (b, accepted_b)) = (server(true).await, server(true).await);
    let upstreams = Upstreams::new(ClientSettings::default(), None, Arc::default());
    let dial = Dial {
        connect_timeout: Duration::from_secs(1),
        connections: None,
    };
    let send = |addr: SocketAddr| {
        let upstreams = upstreams.clone();
        async move {
            let response = upstreams
                .send_http2(
                    &Destination::plaintext(addr),
                    request(addr, http::Version::HTTP_2).await,
                    dial,
                )
                .await
                .unwrap();
            let _ = response.into_body().collect().await.unwrap();
        }
    };
    send(a).await;
    send(b).await;
    upstreams.retain(|addr| addr == b);
    send(a).await;
    send(b).await;
    assert_eq!(
        accepted_a.load(Ordering::Relaxed),
        2,
        "a's connection was forgotten"
    );
    assert_eq!(
        accepted_b.load(Ordering::Relaxed),
        1,
        "b's connection was kept"
    );
}

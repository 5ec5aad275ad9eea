//! The upstream every target talks to: HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on one
//! port, every request answered with the same small body.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// The body of every response: small and fixed, so the benchmark measures the proxy rather than
/// the payload.
pub const BODY: &[u8] = b"skiff-bench upstream: a small fixed body, the same for every call\n";

/// What an h2c client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Concurrent HTTP/2 streams allowed per connection: more than any proxy multiplexes onto one
/// upstream connection in the benchmark, so the upstream never makes streams wait.
const MAX_CONCURRENT_STREAMS: u32 = 4096;

/// Serves HTTP/1.1 and h2c on `listener` until the process ends.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Running out of file descriptors must not end the upstream mid-benchmark.
                eprintln!("skiff-bench upstream: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A client closing its connection is how every benchmark run ends: not an error.
            let _ = serve_connection(stream).await;
        });
    }
}

async fn serve_connection(stream: TcpStream) -> Result<(), hyper::Error> {
    let Ok(http2) = opens_with_preface(&stream).await else {
        return Ok(());
    };
    let io = TokioIo::new(stream);
    let service = service_fn(respond);
    if http2 {
        http2::Builder::new(TokioExecutor::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .serve_connection(io, service)
            .await
    } else {
        http1::Builder::new().serve_connection(io, service).await
    }
}

/// Whether the client opened with the HTTP/2 preface. It peeks, so the bytes stay in the socket
/// for the server that handles the connection.
async fn opens_with_preface(stream: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    // A client that stalls inside the preface gets HTTP/1 after about a second (and an error).
    for _ in 0..1000 {
        let n = stream.peek(&mut first).await?;
        if n == 0 || first[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(false)
}

async fn respond(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn start() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        addr
    }

    #[tokio::test]
    async fn answers_http1_with_keep_alive() {
        let addr = start().await;
        let held = tokio::task::spawn_blocking(move || crate::idle::hold(addr, "test", 3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(held.len(), 3);
    }

    #[tokio::test]
    async fn answers_h2c_on_the_same_port() {
        let addr = start().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..3 {
            let request = Request::builder()
                .uri(format!("http://{addr}/"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], BODY);
        }
    }
}

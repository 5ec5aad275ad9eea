//! The control plane's own HTTP/1 port, :15014: `/metrics`, `/healthz/ready` (a valid policy
//! is loaded), `/healthz/live`, and the status endpoints `skiff proxy-status` and `skiff
//! proxy-config` read. Plaintext on purpose: the proxy API on :15010 becomes mTLS-only, and
//! operators and Prometheus have no workload certificate.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::api::{status_response, text};
use crate::shutdown::ShutdownSignal;
use crate::ControlPlane;

/// Serves the admin port on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, control: Arc<ControlPlane>, shutdown: ShutdownSignal) {
    let signal = shutdown.clone();
    crate::listener::accept_loop(listener, "admin", shutdown, move |stream, _peer| {
        serve_connection(stream, control.clone(), signal.clone())
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    control: Arc<ControlPlane>,
    mut shutdown: ShutdownSignal,
) {
    let service = service_fn(move |request| {
        let response = respond(&control, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.requested() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "admin connection ended with an error");
    }
}

fn respond<B>(control: &ControlPlane, request: &Request<B>) -> Response<Full<Bytes>> {
    if let Some(response) = status_response(&control.proxies, request) {
        return response;
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, control.metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz/ready") => match control.store.current() {
            Some(_) => text(StatusCode::OK, "ready\n"),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "no valid policy loaded yet\n",
            ),
        },
        (&Method::GET, "/healthz/live") => text(StatusCode::OK, "live\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

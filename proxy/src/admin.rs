//! The proxy's own HTTP surfaces: admin (127.0.0.1:15000), metrics (:15020) and health
//! (:15021). Small, plain HTTP/1; none of it is on the request path.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpStream;

use crate::app::Proxy;
use crate::drain::Drain;

/// What a bound port is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Outbound,
    Inbound,
    /// `/config_dump`, `/endpoints`, `/drain`; loopback only.
    Admin,
    /// `/metrics`, scraped by Prometheus.
    Metrics,
    /// `/healthz/ready` and `/healthz/live`, probed by the kubelet.
    Health,
}

pub struct AdminState {
    pub proxy: Arc<Proxy>,
    /// The admin port may start a drain (`POST /drain`).
    pub drain: Drain,
}

pub async fn serve_connection(stream: TcpStream, surface: Surface, state: Arc<AdminState>) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(&state, surface, &request)) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(?surface, %error, "admin connection ended with an error");
    }
}

fn respond(
    state: &AdminState,
    surface: Surface,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = request.method();
    match (surface, method, path) {
        (Surface::Health | Surface::Admin, &Method::GET, "/healthz/live") => {
            text(StatusCode::OK, "live\n")
        }
        (Surface::Health | Surface::Admin, &Method::GET, "/healthz/ready") => {
            // A snapshot exists from the start in standalone mode; readiness ends with the drain.
            if state.drain.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !state.proxy.control.is_ready() {
                text(StatusCode::SERVICE_UNAVAILABLE, "no configuration yet\n")
            } else if state
                .proxy
                .identity
                .as_ref()
                .is_some_and(|identity| identity.not_after() <= std::time::SystemTime::now())
            {
                // Every peer would refuse this proxy: renewal has failed for a whole lifetime.
                text(StatusCode::SERVICE_UNAVAILABLE, "certificate expired\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        (Surface::Metrics | Surface::Admin, &Method::GET, "/metrics") => {
            let mut rendered = state.proxy.metrics.render()
                + &crate::metrics::render_destinations(
                    &state.proxy.destinations,
                    tokio::time::Instant::now(),
                )
                + &state.proxy.control.render();
            if let Some(identity) = &state.proxy.identity {
                identity.render_metrics(&mut rendered);
            }
            let mut response = text(StatusCode::OK, rendered);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Surface::Admin, &Method::GET, "/config_dump") => {
            let snapshot = state.proxy.snapshot.current();
            json(&ConfigDump {
                workload: &state.proxy.settings.workload,
                pod_ips: &state.proxy.settings.pod_ips,
                draining: state.drain.is_draining(),
                source: &snapshot.source,
                config: &snapshot.config,
            })
        }
        (Surface::Admin, &Method::GET, "/endpoints") => {
            let snapshot = state.proxy.snapshot.current();
            let endpoints: std::collections::BTreeMap<String, &Vec<crate::policy::Destination>> =
                snapshot
                    .outbound
                    .iter()
                    .map(|(vip, target)| {
                        (
                            format!("{} {vip}", target.name),
                            &target.endpoints.endpoints,
                        )
                    })
                    .collect();
            json(&endpoints)
        }
        (Surface::Admin, &Method::POST, "/drain") => {
            state.drain.start();
            text(StatusCode::OK, "draining\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

#[derive(Serialize)]
struct ConfigDump<'a> {
    workload: &'a skiff_api::config::WorkloadRef,
    pod_ips: &'a [std::net::IpAddr],
    draining: bool,
    /// Where the configuration came from (files, or the control plane).
    source: &'a str,
    config: &'a skiff_api::config::ProxyConfig,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise: {error}\n"),
        ),
    }
}

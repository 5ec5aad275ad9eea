//! HTTP routing: which rule of a service's HTTPRoutes a request matches, and which weighted
//! backend it goes to. Compiled once per snapshot; deciding is a pure function of the
//! snapshot and the request head, tested with tables.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use regex::Regex;
use skiff_api::config::{self, HeaderModifier, PathMatch, RoutePolicy, StringMatch};
use skiff_api::traffic::RateLimit;

use crate::policy::EndpointSet;
use crate::resilience::rate_limit::TokenBucket;

/// One HTTPRoute rule, ready to match requests.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name#rule`, for logs.
    pub id: String,
    /// Any one of these accepts a request; empty accepts everything.
    matches: Vec<Match>,
    pub request_headers: HeaderModifier,
    pub response_headers: HeaderModifier,
    /// Backends with non-zero weight, and the cumulative weight up to and including each.
    backends: Vec<(Arc<EndpointSet>, u64)>,
    /// Weighted round-robin cursor: deterministic, smooth over any window of `total` requests.
    cursor: AtomicUsize,
    /// `timeouts.request`: the whole call, retries included.
    pub timeout: Option<Duration>,
    /// One attempt's timeout: the rule's retry policy's, else its `timeouts.backendRequest`,
    /// else the service's retry policy's.
    pub per_try_timeout: Option<Duration>,
    /// Retries, rate limit, hedging and faults: the rule's own, each unset one from the
    /// service's TrafficPolicy.
    pub policy: RoutePolicy,
    /// The rule's token bucket, shared by its matches, when `policy.rate_limit` is set.
    pub rate_limit: Option<Arc<TokenBucket>>,
}

#[derive(Debug)]
struct Match {
    path: Option<PathRule>,
    headers: Vec<(http::HeaderName, ValueRule)>,
    query: Vec<(String, ValueRule)>,
    method: Option<http::Method>,
}

#[derive(Debug)]
enum PathRule {
    Exact(String),
    /// Stored without a trailing slash; `/` is stored as empty and matches everything.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueRule {
    Exact(String),
    Regex(Regex),
}

/// A route that cannot be compiled; the snapshot is refused (and the control plane NACKed).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("route {route}: invalid regular expression {pattern:?}")]
    Regex {
        route: String,
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error("route {route}: invalid header name {name:?}")]
    HeaderName { route: String, name: String },
    #[error("route {route}: invalid method {method:?}")]
    Method { route: String, method: String },
    #[error("route {route}: backend {service}:{port} is not in the configuration")]
    UnknownBackend {
        route: String,
        service: String,
        port: u16,
    },
}

impl Route {
    /// Compiles a route; `defaults` are the service's per-route settings, `resolve` finds the
    /// endpoints of a backend service port and `bucket` the token bucket of a rule.
    pub fn compile(
        route: &config::Route,
        defaults: &RoutePolicy,
        resolve: impl Fn(&str, u16) -> Option<Arc<EndpointSet>>,
        bucket: impl Fn(&str, &RateLimit) -> Arc<TokenBucket>,
    ) -> Result<Route, CompileError> {
        let id = format!("{}#{}", route.route, route.rule);
        let regex = |pattern: &str| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|source| CompileError::Regex {
                route: id.clone(),
                pattern: pattern.to_string(),
                source,
            })
        };
        let value = |m: &StringMatch| match m {
            StringMatch::Exact(v) => Ok(ValueRule::Exact(v.clone())),
            StringMatch::RegularExpression(p) => regex(p).map(ValueRule::Regex),
        };
        let mut matches = Vec::with_capacity(route.matches.len());
        for m in &route.matches {
            let path = match &m.path {
                None => None,
                Some(PathMatch::Exact(p)) => Some(PathRule::Exact(p.clone())),
                Some(PathMatch::PathPrefix(p)) => {
                    Some(PathRule::Prefix(p.trim_end_matches('/').to_string()))
                }
                Some(PathMatch::RegularExpression(p)) => Some(PathRule::Regex(regex(p)?)),
            };
            let mut headers = Vec::with_capacity(m.headers.len());
            for h in &m.headers {
                let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    CompileError::HeaderName {
                        route: id.clone(),
                        name: h.name.clone(),
                    }
                })?;
                headers.push((name, value(&h.value)?));
            }
            let mut query = Vec::with_capacity(m.query_params.len());
            for q in &m.query_params {
                query.push((q.name.clone(), value(&q.value)?));
            }
            let method = match &m.method {
                None => None,
                Some(method) => {
                    Some(http::Method::from_bytes(method.as_bytes()).map_err(|_| {
                        CompileError::Method {
                            route: id.clone(),
                            method: method.clone(),
                        }
                    })?)
                }
            };
            matches.push(Match {
                path,
                headers,
                query,
                method,
            });
        }
        let mut backends = Vec::with_capacity(route.backends.len());
        let mut total = 0u64;
        for backend in &route.backends {
            let endpoints = resolve(&backend.service, backend.port).ok_or_else(|| {
                CompileError::UnknownBackend {
                    route: id.clone(),
                    service: backend.service.clone(),
                    port: backend.port,
                }
            })?;
            if backend.weight > 0 {
                total += u64::from(backend.weight);
                backends.push((endpoints, total));
            }
        }
        let policy = RoutePolicy {
            retry: route
                .policy
                .retry
                .clone()
                .or_else(|| defaults.retry.clone()),
            rate_limit: route.policy.rate_limit.or(defaults.rate_limit),
            hedge: route.policy.hedge.or(defaults.hedge),
            fault: route.policy.fault.or(defaults.fault),
        };
        let rate_limit = policy.rate_limit.map(|limit| bucket(&id, &limit));
        // The rule's own retry policy already carries its `backendRequest` (unless it set a
        // per-try timeout itself); with the service's policy, the rule's `backendRequest` wins.
        let per_try_timeout = match &route.policy.retry {
            Some(own) => own.per_try_timeout.or(route.backend_timeout),
            None => route
                .backend_timeout
                .or(defaults.retry.as_ref().and_then(|r| r.per_try_timeout)),
        };
        Ok(Route {
            id,
            matches,
            request_headers: route.request_headers.clone(),
            response_headers: route.response_headers.clone(),
            backends,
            cursor: AtomicUsize::new(0),
            timeout: route.timeout,
            per_try_timeout,
            policy,
            rate_limit,
        })
    }

    /// The endpoint sets of the route's backends (weight above zero).
    pub fn backends(&self) -> impl Iterator<Item = &Arc<EndpointSet>> {
        self.backends.iter().map(|(set, _)| set)
    }

    /// Whether the request head satisfies one of the route's matches.
    pub fn accepts(&self, request: &Parts) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.accepts(request))
    }

    /// Picks a backend in proportion to the weights; `None` when every weight is zero (the
    /// Gateway API then requires a 500).
    pub fn pick_backend(&self) -> Option<&Arc<EndpointSet>> {
        let total = self.backends.last()?.1;
        let n = (self.cursor.fetch_add(1, Ordering::Relaxed) as u64) % total;
        self.backends
            .iter()
            .find(|(_, cumulative)| n < *cumulative)
            .map(|(set, _)| set)
    }
}

impl Match {
    fn accepts(&self, request: &Parts) -> bool {
        let path = request.uri.path();
        let path_ok = match &self.path {
            None => true,
            Some(PathRule::Exact(p)) => path == p,
            Some(PathRule::Prefix(p)) => {
                p.is_empty()
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            Some(PathRule::Regex(r)) => r.is_match(path),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| *m == request.method)
            && self.headers.iter().all(|(name, rule)| {
                // Several header lines of one name are compared as their comma-joined value.
                let values: Vec<&str> = request
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                !values.is_empty() && rule.accepts(&values.join(","))
            })
            && self.query.iter().all(|(name, rule)| {
                query_value(request.uri.query().unwrap_or(""), name)
                    .is_some_and(|v| rule.accepts(v))
            })
    }
}

impl ValueRule {
    fn accepts(&self, value: &str) -> bool {
        match self {
            ValueRule::Exact(expected) => value == expected,
            ValueRule::Regex(r) => r.is_match(value),
        }
    }
}

/// The first value of query parameter `name` (compared exactly, as the Gateway API says).
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Applies a header modifier (Gateway API: set replaces, add appends, remove deletes).
pub fn modify_headers(headers: &mut http::HeaderMap, modifier: &HeaderModifier) {
    for (name, value) in &modifier.set {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &modifier.add {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    for name in &modifier.remove {
        headers.remove(name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::destination::Destinations;
    use skiff_api::config::{Backend, RouteMatch, ValueMatch};

    fn route(matches: Vec<RouteMatch>, backends: &[(&str, u32)]) -> Route {
        let config = config::Route {
            route: "default/r".into(),
            rule: 0,
            matches,
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
            backends: backends
                .iter()
                .map(|(s, w)| Backend {
                    service: (*s).into(),
                    port: 80,
                    weight: *w,
                })
                .collect(),
            timeout: None,
            backend_timeout: None,
            policy: Default::default(),
        };
        let destinations = Destinations::default();
        let state = destinations.destination(
            "default/any",
            80,
            &Default::default(),
            tokio::time::Instant::now(),
        );
        Route::compile(
            &config,
            &RoutePolicy::default(),
            |service, _| {
                Some(Arc::new(EndpointSet::new(
                    service.into(),
                    vec![],
                    state.clone(),
                )))
            },
            |_, _| unreachable!("no rate limit"),
        )
        .unwrap()
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn path(p: PathMatch) -> RouteMatch {
        RouteMatch {
            path: Some(p),
            ..RouteMatch::default()
        }
    }

    #[test]
    fn path_matching_follows_the_gateway_api() {
        let table = [
            (PathMatch::PathPrefix("/".into()), "/anything", true),
            (PathMatch::PathPrefix("/foo".into()), "/foo", true),
            (PathMatch::PathPrefix("/foo".into()), "/foo/bar", true),
            (PathMatch::PathPrefix("/foo/".into()), "/foo", true),
            (PathMatch::PathPrefix("/foo".into()), "/foobar", false),
            (PathMatch::Exact("/foo".into()), "/foo", true),
            (PathMatch::Exact("/foo".into()), "/foo/", false),
            (
                PathMatch::RegularExpression("/v[0-9]+/.*".into()),
                "/v2/users",
                true,
            ),
            (
                PathMatch::RegularExpression("/v[0-9]+".into()),
                "/v2/users",
                false,
            ),
        ];
        for (rule, uri, expected) in table {
            let r = route(vec![path(rule.clone())], &[("a", 1)]);
            assert_eq!(
                r.accepts(&request("GET", uri, &[])),
                expected,
                "{rule:?} {uri}"
            );
        }
    }

    #[test]
    fn fields_of_a_match_are_anded_and_matches_are_ored() {
        let header = |name: &str, value: StringMatch| ValueMatch {
            name: name.into(),
            value,
        };
        let canary = RouteMatch {
            path: Some(PathMatch::PathPrefix("/api".into())),
            headers: vec![header("x-canary", StringMatch::Exact("true".into()))],
            query_params: vec![header(
                "debug",
                StringMatch::RegularExpression("1|yes".into()),
            )],
            method: Some("POST".into()),
        };
        let admin = path(PathMatch::Exact("/admin".into()));
        let r = route(vec![canary, admin], &[("a", 1)]);
        let table = [
            ("POST", "/api/x?debug=yes", vec![("x-canary", "true")], true),
            ("GET", "/api/x?debug=yes", vec![("x-canary", "true")], false),
            ("POST", "/api/x?debug=no", vec![("x-canary", "true")], false),
            ("POST", "/api/x?debug=1", vec![("x-canary", "false")], false),
            ("POST", "/api/x?debug=1", vec![], false),
            ("DELETE", "/admin", vec![], true),
        ];
        for (method, uri, headers, expected) in table {
            assert_eq!(
                r.accepts(&request(method, uri, &headers)),
                expected,
                "{method} {uri} {headers:?}"
            );
        }
    }

    #[test]
    fn weights_split_traffic_exactly_over_a_window() {
        let r = route(vec![], &[("v1", 90), ("v2", 10), ("off", 0)]);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..1000 {
            *counts
                .entry(r.pick_backend().unwrap().service.to_string())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.get("v1"), Some(&900));
        assert_eq!(counts.get("v2"), Some(&100));
        assert_eq!(counts.get("off"), None);
        assert!(
            route(vec![], &[("a", 0)]).pick_backend().is_none(),
            "all weights zero"
        );
    }

    #[test]
    fn header_modifier_sets_adds_and_removes() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-old", "1".parse().unwrap());
        headers.insert("x-set", "before".parse().unwrap());
        let modifier = HeaderModifier {
            set: vec![("x-set".into(), "after".into())],
            add: vec![("x-add".into(), "a".into()), ("x-add".into(), "b".into())],
            remove: vec!["x-old".into()],
        };
        modify_headers(&mut headers, &modifier);
        assert_eq!(headers["x-set"], "after");
        assert_eq!(headers.get_all("x-add").iter().count(), 2);
        assert!(!headers.contains_key("x-old"));
    }

    #[test]
    fn invalid_regexes_are_refused_with_the_route_named() {
        let config = config::Route {
            route: "shop/bad".into(),
            rule: 2,
            matches: vec![path(PathMatch::RegularExpression("(".into()))],
            request_headers: HeaderModifier::default(),
            response_headers: HeaderModifier::default(),
            backends: vec![],
            timeout: None,
            backend_timeout: None,
            policy: Default::default(),
        };
        let error = Route::compile(
            &config,
            &RoutePolicy::default(),
            |_, _| None,
            |_, _| unreachable!("no rate limit"),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("route shop/bad#2: invalid regular expression"),
            "{error}"
        );
    }
}

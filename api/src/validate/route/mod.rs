//! HTTPRoutes: every field against the Gateway API's rules (limits, paths, header names,
//! regular expressions, durations, weights), references to Services and their ports, and
//! warnings for what Skiff ignores (Gateway parents, hostnames, redirects, rewrites, mirrors,
//! extension filters, session persistence).

use std::collections::HashMap;
use std::time::Duration;

mod filters;

use super::service::Services;
use super::traffic::{show, MAX_RETRY_ATTEMPTS};
use super::{fields, has_errors, key_of, Lookup};
use crate::config::{Backend, PathMatch, RouteMatch, StringMatch, ValueMatch};
use crate::document::Located;
use crate::duration::parse_duration;
use crate::gateway::{
    HttpBackendRef, HttpRoute, HttpRouteMatch, HttpRouteRetry, HttpRouteRule, HttpRouteTimeouts,
    PathMatchType, ValueMatchType, GATEWAY_GROUP,
};
use crate::policy::{self, ObjectKey, RouteParent, RouteRule, Timestamp, Transport};
use crate::problem::Problem;
use crate::traffic::{
    RetryOn, RetryPolicy, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, DEFAULT_RETRY_ATTEMPTS,
};

/// Gateway API limits.
const MAX_PARENT_REFS: usize = 32;
const MAX_HOSTNAMES: usize = 16;
const MAX_RULES: usize = 16;
const MAX_MATCHES_PER_RULE: usize = 64;
const MAX_MATCHES_PER_ROUTE: usize = 128;
const MAX_HEADER_MATCHES: usize = 16;
const MAX_QUERY_MATCHES: usize = 16;
const MAX_FILTERS: usize = 16;
const MAX_BACKEND_REFS: usize = 16;
const MAX_HEADER_ACTIONS: usize = 16;
const MAX_WEIGHT: i64 = 1_000_000;

/// Checks every route; returns those without errors.
pub(super) fn routes(
    list: &[Located<HttpRoute>],
    services: &Services,
    problems: &mut Vec<Problem>,
) -> Vec<Located<policy::HttpRoute>> {
    let mut valid = Vec::new();
    for route in list {
        let mut checker = Checker {
            route,
            services,
            found: Vec::new(),
        };
        let checked = checker.route();
        if !has_errors(&checker.found) {
            valid.push(route.with(checked));
        }
        problems.extend(checker.found);
    }
    valid.sort_by(|a, b| a.value.key.cmp(&b.value.key));
    valid
}

/// Walks one route, collecting its problems.
struct Checker<'a> {
    route: &'a Located<HttpRoute>,
    services: &'a Services,
    found: Vec<Problem>,
}

impl Checker<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let problem = self.route.error(path, message);
        self.found.push(problem);
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let problem = self.route.warning(path, message);
        self.found.push(problem);
    }

    /// Reports a list longer than the Gateway API allows.
    fn limit(&mut self, path: &str, found: usize, max: usize, what: &str) {
        if let Err(message) = fields::at_most(found, max, what) {
            self.error(path, message);
        }
    }

    fn namespace(&self) -> &str {
        &self.route.value.metadata.namespace
    }

    fn route(&mut self) -> policy::HttpRoute {
        let route = self.route.value.clone();
        let created = route
            .metadata
            .creation_timestamp
            .as_deref()
            .and_then(|text| {
                Timestamp::parse(text)
                    .map_err(|error| self.error("metadata.creationTimestamp", error.to_string()))
                    .ok()
            });
        let parents = self.parents();
        let hostnames = &route.spec.hostnames;
        self.limit(
            "spec.hostnames",
            hostnames.len(),
            MAX_HOSTNAMES,
            "hostnames",
        );
        if !hostnames.is_empty() {
            self.warn(
                "spec.hostnames",
                "hostnames are ignored in the mesh: the route applies to every request to \
                 its Services, whatever the Host header",
            );
        }
        let rules = self.rules();
        policy::HttpRoute {
            key: key_of(&route.metadata),
            created,
            parents,
            rules,
        }
    }

    fn parents(&mut self) -> Vec<RouteParent> {
        let refs = self.route.value.spec.parent_refs.clone();
        self.limit("spec.parentRefs", refs.len(), MAX_PARENT_REFS, "parentRefs");
        if refs.is_empty() {
            self.warn(
                "spec",
                "the route has no parentRefs, so it attaches to nothing and has no effect",
            );
        }
        let mut parents: Vec<RouteParent> = Vec::new();
        let errors_before = self.found.len();
        for (at, parent) in refs.iter().enumerate() {
            let path = format!("spec.parentRefs[{at}]");
            if let Some(first) = refs[..at].iter().position(|p| p == parent) {
                self.error(path, format!("same parentRef as spec.parentRefs[{first}]"));
                continue;
            }
            let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = parent.kind.as_deref().unwrap_or("Gateway");
            match (group, kind) {
                (group, "Service") if is_core_group(group) => {}
                (GATEWAY_GROUP, "Gateway") => {
                    self.warn(
                        path,
                        "parentRefs to a Gateway are not implemented yet (Skiff routes mesh \
                         traffic to Services: group \"\", kind Service); this parentRef is \
                         ignored",
                    );
                    continue;
                }
                _ => {
                    self.warn(
                        path,
                        format!(
                            "parents of kind {kind} in group {group:?} are not supported (only \
                             Services: group \"\", kind Service); this parentRef is ignored"
                        ),
                    );
                    continue;
                }
            }
            let mut port = match parent.port.map(fields::port) {
                Some(Err(message)) => {
                    self.error(format!("{path}.port"), message);
                    continue;
                }
                Some(Ok(port)) => Some(port),
                None => None,
            };
            let namespace = parent.namespace.as_deref().unwrap_or(self.namespace());
            let key = ObjectKey::new(namespace, &parent.name);
            let service = match self.services.lookup(&key) {
                Lookup::Valid(service) => &service.value,
                Lookup::Invalid => continue,
                Lookup::Missing => {
                    self.error(
                        format!("{path}.name"),
                        format!("Service {key} does not exist"),
                    );
                    continue;
                }
            };
            if let Some(number) = port {
                if service.port(number).is_none() {
                    self.error(
                        format!("{path}.port"),
                        format!(
                            "Service {key} has no port {number} (its ports: {})",
                            ports_of(service)
                        ),
                    );
                    continue;
                }
            }
            if let Some(section) = &parent.section_name {
                let named = service
                    .ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(section));
                match (named, port) {
                    (None, _) => {
                        self.error(
                            format!("{path}.sectionName"),
                            format!(
                                "Service {key} has no port named {section:?} (its ports: {})",
                                ports_of(service)
                            ),
                        );
                        continue;
                    }
                    (Some(named), Some(number)) if named.port != number => {
                        self.error(
                            format!("{path}.sectionName"),
                            format!(
                                "port {section:?} of Service {key} is {}, but port says {number}",
                                named.port
                            ),
                        );
                        continue;
                    }
                    (Some(named), _) => port = Some(named.port),
                }
            }
            parents.push(RouteParent { service: key, port });
        }
        if !refs.is_empty() && parents.is_empty() && self.found.len() == errors_before {
            self.warn(
                "spec.parentRefs",
                "the route attaches to no Service, so it has no effect",
            );
        }
        parents
    }

    fn rules(&mut self) -> Vec<RouteRule> {
        let rules = match &self.route.value.spec.rules {
            // The Gateway API's default: one rule matching every request.
            None => vec![HttpRouteRule::default()],
            Some(rules) if rules.is_empty() => {
                self.error(
                    "spec.rules",
                    "must hold at least one rule (leave rules out for one that matches every \
                     request)",
                );
                return Vec::new();
            }
            Some(rules) => rules.clone(),
        };
        self.limit("spec.rules", rules.len(), MAX_RULES, "rules");
        let matches: usize = rules.iter().map(|r| r.matches.len().max(1)).sum();
        if matches > MAX_MATCHES_PER_ROUTE {
            self.error(
                "spec.rules",
                format!(
                    "at most {MAX_MATCHES_PER_ROUTE} matches across all rules are allowed, \
                     found {matches}"
                ),
            );
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (at, rule) in rules.iter().enumerate() {
            if let Some(name) = rule.name.as_deref() {
                if let Err(message) = fields::object_name(name) {
                    self.error(format!("spec.rules[{at}].name"), message);
                } else if let Some(first) = names.insert(name, at) {
                    self.error(
                        format!("spec.rules[{at}].name"),
                        format!("rule name {name:?} is already used by spec.rules[{first}]"),
                    );
                }
            }
        }
        rules
            .iter()
            .enumerate()
            .map(|(at, rule)| self.rule(at, rule))
            .collect()
    }

    fn rule(&mut self, at: usize, rule: &HttpRouteRule) -> RouteRule {
        let path = format!("spec.rules[{at}]");
        self.limit(
            &format!("{path}.matches"),
            rule.matches.len(),
            MAX_MATCHES_PER_RULE,
            "matches",
        );
        let mut matches: Vec<RouteMatch> = rule
            .matches
            .iter()
            .enumerate()
            .map(|(j, m)| self.route_match(&format!("{path}.matches[{j}]"), m))
            .collect();
        if matches.is_empty() {
            matches.push(RouteMatch {
                path: Some(PathMatch::PathPrefix("/".to_string())),
                ..RouteMatch::default()
            });
        }
        let has_backends = !rule.backend_refs.is_empty();
        let (request_headers, response_headers) = self.filters(&path, &rule.filters, has_backends);

        let backends_path = format!("{path}.backendRefs");
        self.limit(
            &backends_path,
            rule.backend_refs.len(),
            MAX_BACKEND_REFS,
            "backendRefs",
        );
        let backends: Vec<Backend> = rule
            .backend_refs
            .iter()
            .enumerate()
            .filter_map(|(k, b)| self.backend(&format!("{backends_path}[{k}]"), b))
            .collect();
        if !has_backends {
            self.warn(
                path.as_str(),
                "the rule has no backendRefs, so requests matching it are answered with 500",
            );
        } else if backends.len() == rule.backend_refs.len()
            && backends.iter().all(|b| b.weight == 0)
        {
            self.warn(
                backends_path,
                "every backend has weight 0, so requests matching this rule are answered with 500",
            );
        }
        let (timeout, backend_timeout) = match &rule.timeouts {
            Some(timeouts) => self.timeouts(&format!("{path}.timeouts"), timeouts),
            None => (None, None),
        };
        let retry = rule
            .retry
            .as_ref()
            .map(|retry| self.retry(&format!("{path}.retry"), retry));
        if let Some(persistence) = &rule.session_persistence {
            let persistence_path = format!("{path}.sessionPersistence");
            for (field, value) in [
                ("absoluteTimeout", &persistence.absolute_timeout),
                ("idleTimeout", &persistence.idle_timeout),
            ] {
                if let Some(value) = value {
                    self.duration(&format!("{persistence_path}.{field}"), value);
                }
            }
            self.warn(
                persistence_path,
                "sessionPersistence is not implemented yet and is ignored",
            );
        }
        RouteRule {
            index: at,
            name: rule.name.clone(),
            matches,
            request_headers,
            response_headers,
            backends,
            timeout,
            backend_timeout,
            retry,
        }
    }

    /// The experimental `retry` (GEP-1731): `codes` are statuses retried on, `attempts`
    /// defaults to [`DEFAULT_RETRY_ATTEMPTS`], `backoff` is the back-off base (the cap stays
    /// the default, or the base when that is longer).
    fn retry(&mut self, path: &str, retry: &HttpRouteRetry) -> RetryPolicy {
        let mut on = Vec::new();
        for (k, code) in retry.codes.iter().enumerate() {
            match u16::try_from(*code) {
                Ok(status) if (400..=599).contains(&status) => {
                    if !on.contains(&RetryOn::Status(status)) {
                        on.push(RetryOn::Status(status));
                    }
                }
                _ => self.error(
                    format!("{path}.codes[{k}]"),
                    format!("{code} must be between 400 and 599"),
                ),
            }
        }
        let attempts = match retry.attempts {
            None => DEFAULT_RETRY_ATTEMPTS,
            Some(attempts) => match u32::try_from(attempts) {
                Ok(attempts) if attempts <= MAX_RETRY_ATTEMPTS => attempts,
                _ => {
                    self.error(
                        format!("{path}.attempts"),
                        format!("must be between 0 and {MAX_RETRY_ATTEMPTS}, not {attempts}"),
                    );
                    0
                }
            },
        };
        let backoff_base = retry
            .backoff
            .as_deref()
            .and_then(|text| self.duration(&format!("{path}.backoff"), text))
            .unwrap_or(DEFAULT_BACKOFF_BASE);
        RetryPolicy {
            attempts,
            on,
            backoff_base,
            backoff_max: DEFAULT_BACKOFF_MAX.max(backoff_base),
            ..RetryPolicy::default()
        }
    }

    fn route_match(&mut self, path: &str, m: &HttpRouteMatch) -> RouteMatch {
        let path_match = match &m.path {
            None => PathMatch::PathPrefix("/".to_string()),
            Some(p) => {
                let checked = match p.match_type {
                    PathMatchType::Exact | PathMatchType::PathPrefix => {
                        fields::path_value(&p.value)
                    }
                    PathMatchType::RegularExpression => fields::regex(&p.value),
                };
                if let Err(message) = checked {
                    self.error(format!("{path}.path.value"), message);
                }
                match p.match_type {
                    PathMatchType::Exact => PathMatch::Exact(p.value.clone()),
                    PathMatchType::PathPrefix => PathMatch::PathPrefix(p.value.clone()),
                    PathMatchType::RegularExpression => {
                        PathMatch::RegularExpression(p.value.clone())
                    }
                }
            }
        };
        self.limit(
            &format!("{path}.headers"),
            m.headers.len(),
            MAX_HEADER_MATCHES,
            "header matches",
        );
        let mut headers = Vec::new();
        for (k, header) in m.headers.iter().enumerate() {
            let header_path = format!("{path}.headers[{k}]");
            if let Err(message) = fields::header_name(&header.name) {
                self.error(format!("{header_path}.name"), message);
            }
            let name = header.name.to_ascii_lowercase();
            if let Some(first) = m.headers[..k]
                .iter()
                .position(|h| h.name.eq_ignore_ascii_case(&name))
            {
                self.error(
                    format!("{header_path}.name"),
                    format!(
                        "header {:?} is already matched by headers[{first}]; match each header once",
                        header.name
                    ),
                );
            }
            let value = self.value_match(&header_path, header.match_type, &header.value, 4096);
            headers.push(ValueMatch { name, value });
        }
        self.limit(
            &format!("{path}.queryParams"),
            m.query_params.len(),
            MAX_QUERY_MATCHES,
            "query parameter matches",
        );
        let mut query_params = Vec::new();
        for (k, param) in m.query_params.iter().enumerate() {
            let param_path = format!("{path}.queryParams[{k}]");
            if param.name.is_empty() || param.name.len() > 256 {
                self.error(format!("{param_path}.name"), "must be 1 to 256 characters");
            }
            if let Some(first) = m.query_params[..k]
                .iter()
                .position(|q| q.name == param.name)
            {
                self.error(
                    format!("{param_path}.name"),
                    format!(
                        "query parameter {:?} is already matched by queryParams[{first}]; match \
                         each parameter once",
                        param.name
                    ),
                );
            }
            let value = self.value_match(&param_path, param.match_type, &param.value, 1024);
            query_params.push(ValueMatch {
                name: param.name.clone(),
                value,
            });
        }
        headers.sort_by(|a, b| a.name.cmp(&b.name));
        query_params.sort_by(|a, b| a.name.cmp(&b.name));
        RouteMatch {
            path: Some(path_match),
            headers,
            query_params,
            method: m.method.map(|method| method.as_str().to_string()),
        }
    }

    fn value_match(
        &mut self,
        path: &str,
        kind: ValueMatchType,
        value: &str,
        max: usize,
    ) -> StringMatch {
        let checked = match kind {
            ValueMatchType::Exact => fields::header_value(value, max),
            ValueMatchType::RegularExpression => fields::regex(value),
        };
        if let Err(message) = checked {
            self.error(format!("{path}.value"), message);
        }
        match kind {
            ValueMatchType::Exact => StringMatch::Exact(value.to_string()),
            ValueMatchType::RegularExpression => StringMatch::RegularExpression(value.to_string()),
        }
    }

    fn backend(&mut self, path: &str, backend: &HttpBackendRef) -> Option<Backend> {
        let before = self.found.len();
        let group = backend.group.as_deref().unwrap_or("");
        let kind = backend.kind.as_deref().unwrap_or("Service");
        if !is_core_group(group) || kind != "Service" {
            let field = if kind != "Service" { "kind" } else { "group" };
            self.error(
                format!("{path}.{field}"),
                format!(
                    "only Service backends (group \"\", kind Service) are supported, not {kind} \
                     in group {group:?}"
                ),
            );
        }
        let weight = backend.weight.unwrap_or(1);
        if weight < 0 {
            self.error(format!("{path}.weight"), "must be ≥ 0");
        } else if weight > MAX_WEIGHT {
            self.error(format!("{path}.weight"), format!("must be ≤ {MAX_WEIGHT}"));
        }
        let port = match backend.port.map(fields::port) {
            None => {
                self.error(
                    format!("{path}.port"),
                    "required: the Service port to send requests to",
                );
                None
            }
            Some(Err(message)) => {
                self.error(format!("{path}.port"), message);
                None
            }
            Some(Ok(port)) => Some(port),
        };
        let namespace = backend.namespace.as_deref().unwrap_or(self.namespace());
        let key = ObjectKey::new(namespace, &backend.name);
        match self.services.lookup(&key) {
            Lookup::Missing => {
                self.error(
                    format!("{path}.name"),
                    format!("Service {key} does not exist"),
                );
            }
            Lookup::Invalid => return None,
            Lookup::Valid(service) => match port.map(|p| (p, service.value.port(p))) {
                Some((number, None)) => self.error(
                    format!("{path}.port"),
                    format!(
                        "Service {key} has no port {number} (its ports: {})",
                        ports_of(&service.value)
                    ),
                ),
                Some((number, Some(found))) if found.transport != Transport::Tcp => self.error(
                    format!("{path}.port"),
                    format!(
                        "port {number} of Service {key} is {}; HTTP routes can only send to TCP ports",
                        if found.transport == Transport::Udp { "UDP" } else { "SCTP" }
                    ),
                ),
                _ => {}
            },
        }
        if !backend.filters.is_empty() {
            self.filters(path, &backend.filters, false);
            self.warn(
                format!("{path}.filters"),
                "filters on a backendRef are not implemented yet and are ignored",
            );
        }
        let valid = !has_errors(&self.found[before..]);
        Some(Backend {
            service: key.to_string(),
            port: port?,
            weight: u32::try_from(weight).ok()?,
        })
        .filter(|_| valid)
    }

    fn timeouts(
        &mut self,
        path: &str,
        timeouts: &HttpRouteTimeouts,
    ) -> (Option<Duration>, Option<Duration>) {
        let request = timeouts
            .request
            .as_deref()
            .and_then(|text| self.duration(&format!("{path}.request"), text));
        let backend = timeouts
            .backend_request
            .as_deref()
            .and_then(|text| self.duration(&format!("{path}.backendRequest"), text));
        if let (Some(request), Some(backend)) = (request, backend) {
            if !request.is_zero() && backend > request {
                self.error(
                    format!("{path}.backendRequest"),
                    format!(
                        "{} is longer than timeouts.request ({}); a try must fit in the whole \
                         request",
                        show(backend),
                        show(request)
                    ),
                );
            }
        }
        // Gateway API: a zero duration disables the timeout.
        let enabled = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        (enabled(request), enabled(backend))
    }

    fn duration(&mut self, path: &str, text: &str) -> Option<Duration> {
        parse_duration(text)
            .map_err(|error| self.error(path, error.to_string()))
            .ok()
    }
}

/// The Kubernetes core group, written `""` by the Gateway API's reference and `core` in some of
/// its mesh guides; both are accepted.
pub(super) fn is_core_group(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// `80, 443/grpc` — a Service's ports, for messages.
pub(super) fn ports_of(service: &policy::Service) -> String {
    let ports: Vec<String> = service
        .ports
        .iter()
        .map(|p| match &p.name {
            Some(name) => format!("{} ({name})", p.port),
            None => p.port.to_string(),
        })
        .collect();
    if ports.is_empty() {
        "none".to_string()
    } else {
        ports.join(", ")
    }
}

//! The per-proxy view: from the validated [`Policy`], what one workload's proxy needs — every
//! Service it may call (VIPs, ports, ready endpoints, routes in precedence order) and the ports
//! of its own that Services target. A pure function, so the control plane and standalone mode
//! compute the same thing, and tests need no sockets.
//!
//! **Route precedence** follows the Gateway API: across every rule attached to a Service port,
//! a more specific match comes first — an `Exact` path, then a `RegularExpression` path
//! (longer patterns first; the spec leaves regexes to implementations), then a `PathPrefix`
//! with more characters; then a method match; then more header matches; then more query
//! matches. Ties go to the older route (`creationTimestamp`; a route without one counts as
//! newest), then the route whose `namespace/name` sorts first, then the earlier rule.
//!
//! Precedence is per match: every match of a rule becomes its own [`Route`] (sharing the
//! rule's backends, filters and timeouts), ranked on its own; the proxy takes the first route
//! whose match accepts the request.
//!
//! **Producer and consumer routes** (GAMMA): a route in the Service's namespace applies to
//! every client; a route in another namespace applies only to clients in its own namespace,
//! and for those clients it replaces the producer routes of that Service port.
//!
//! **Inbound security** merges the InboundPolicies of the workload's namespace that have no
//! target with those targeting the workload, by `targetRef` or by a selector matching its
//! labels: a targeted policy's mode wins over the namespace's (per port too), and the rules
//! add up, the namespace's first (see [`inbound_security`]). Its rate limit is the strictest
//! of those policies' ([`inbound_rate_limit`]).
//!
//! **Traffic policy** is layered field by field (each top-level field of a TrafficPolicy
//! whole, never merged inside): a Service port's [`TrafficConfig`] takes what the policy of
//! that port sets, then what the policy of the whole Service sets, then the defaults; its
//! `retry`, `rateLimit`, `hedge` and `fault` are also its routes' defaults. A route rule's
//! [`RoutePolicy`] takes what the policy of that rule (`sectionName`) sets, then the policy of
//! the whole route, then (retry only) the rule's own GEP-1731 `retry`; what stays unset the
//! proxy takes from the Service port's route defaults.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::config::{
    AuthorizationRule, Endpoint, InboundPort, InboundSecurity, PathMatch, PortConfig, PortMode,
    ProxyConfig, RateLimit, Route, RouteMatch, RoutePolicy, ServiceConfig, TrafficConfig,
    WorkloadRef,
};
use crate::identity::SpiffeId;
use crate::policy::{
    HttpRoute, InboundPolicy, InboundTarget, MtlsMode, ObjectKey, Policy, RouteRule, Service,
    ServicePort, Timestamp, TrafficSettings, TrafficTarget, Transport,
};

/// The configuration of the proxy of `workload`, whose pod has `pod_ips`, in a mesh whose
/// identities are in `trust_domain` (they name the endpoints' workloads). `version` is left
/// empty: the control plane sets it.
pub fn proxy_config(
    policy: &Policy,
    workload: &WorkloadRef,
    pod_ips: &[IpAddr],
    trust_domain: &str,
) -> ProxyConfig {
    let me = ObjectKey::new(&workload.namespace, &workload.name);
    let attachments = Attachments::new(policy);
    let mut services = Vec::new();
    // Target port → Service name; the first Service (by name) wins a port.
    let mut inbound: BTreeMap<u16, InboundPort> = BTreeMap::new();
    for service in &policy.services {
        let name = service.key.to_string();
        let mut ports = Vec::new();
        for port in service
            .ports
            .iter()
            .filter(|p| p.transport == Transport::Tcp)
        {
            for endpoint in &port.endpoints {
                let mine = pod_ips.contains(&endpoint.addr.ip())
                    || endpoint.workload.as_ref() == Some(&me);
                if mine {
                    inbound
                        .entry(endpoint.addr.port())
                        .or_insert_with(|| InboundPort {
                            port: endpoint.addr.port(),
                            service: name.clone(),
                            protocol: port.protocol,
                        });
                }
            }
            ports.push(PortConfig {
                port: port.port,
                protocol: port.protocol,
                endpoints: ready_endpoints(policy, port, trust_domain),
                routes: attachments.routes(service, port.port, &workload.namespace),
                traffic: attachments.traffic(&service.key, port.port),
            });
        }
        services.push(ServiceConfig {
            name,
            vips: service.vips.clone(),
            ports,
        });
    }
    ProxyConfig {
        version: String::new(),
        workload: workload.clone(),
        services,
        inbound: inbound.into_values().collect(),
        inbound_security: inbound_security(policy, workload),
        inbound_rate_limit: inbound_rate_limit(policy, workload),
    }
}

/// The ready endpoints of `port`, each with the SPIFFE ID of its Workload when it has one.
fn ready_endpoints(policy: &Policy, port: &ServicePort, trust_domain: &str) -> Vec<Endpoint> {
    port.endpoints
        .iter()
        .filter(|e| e.ready)
        .map(|e| Endpoint {
            addr: e.addr,
            workload: e.workload.as_ref().map(|w| WorkloadRef {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            }),
            identity: e
                .workload
                .as_ref()
                .and_then(|key| policy.workload(key))
                .map(|w| {
                    SpiffeId::new(trust_domain, &w.key.namespace, &w.service_account).to_string()
                }),
        })
        .collect()
}

/// Who may call `workload`, and whether it accepts plaintext: the namespace-wide
/// InboundPolicies of its namespace (no `targetRef`, no selector or an empty one), merged with
/// the targeted ones — those whose `targetRef` names it and those whose selector matches its
/// labels. A workload that is not declared has no labels, and no selector picks it.
///
/// - `mode`: the one the targeted policies set, else the one the namespace-wide policies set,
///   else PERMISSIVE (validation makes the policies that apply to one workload agree).
/// - `port_modes`: the namespace-wide entries, replaced port by port by the targeted ones;
///   an entry equal to `mode` is left out. Sorted by port.
/// - `rules`: every rule of every policy, namespace-wide policies first, then targeted ones
///   (by `targetRef` and by selector together), each group by policy `namespace/name`, each
///   policy's rules in order.
pub fn inbound_security(policy: &Policy, workload: &WorkloadRef) -> InboundSecurity {
    let (namespace_wide, targeted) = inbound_policies(policy, workload);
    let mode_of = |group: &[&InboundPolicy]| group.iter().find_map(|p| p.mode);
    let mode = mode_of(&targeted)
        .or_else(|| mode_of(&namespace_wide))
        .unwrap_or_default();
    let mut port_modes: BTreeMap<u16, MtlsMode> = BTreeMap::new();
    for entry in namespace_wide
        .iter()
        .chain(&targeted)
        .flat_map(|p| &p.port_modes)
    {
        port_modes.insert(entry.port, entry.mode);
    }
    let rules = namespace_wide
        .iter()
        .chain(&targeted)
        .flat_map(|p| {
            let name = p.key.to_string();
            p.rules.iter().map(move |rule| AuthorizationRule {
                policy: name.clone(),
                rule: rule.index,
                action: rule.action,
                identities: rule.identities.iter().map(ToString::to_string).collect(),
                namespaces: rule.namespaces.clone(),
                ports: rule.ports.clone(),
                methods: rule.methods.clone(),
                paths: rule.paths.clone(),
            })
        })
        .collect();
    InboundSecurity {
        mode,
        port_modes: port_modes
            .into_iter()
            .filter(|(_, port_mode)| *port_mode != mode)
            .map(|(port, mode)| PortMode { port, mode })
            .collect(),
        rules,
    }
}

/// The InboundPolicies that apply to `workload`: the namespace-wide ones, then the targeted
/// ones (by `targetRef` or selector), each group sorted by key.
fn inbound_policies<'a>(
    policy: &'a Policy,
    workload: &WorkloadRef,
) -> (Vec<&'a InboundPolicy>, Vec<&'a InboundPolicy>) {
    let me = ObjectKey::new(&workload.namespace, &workload.name);
    let declared = policy.workload(&me);
    let in_namespace = |p: &&InboundPolicy| p.key.namespace == workload.namespace;
    // `inbound_policies` is sorted by key, so each group is too.
    let namespace_wide = policy
        .inbound_policies
        .iter()
        .filter(in_namespace)
        .filter(|p| p.target == InboundTarget::Namespace)
        .collect();
    let targeted = policy
        .inbound_policies
        .iter()
        .filter(in_namespace)
        .filter(|p| declared.is_some_and(|w| p.target.targets(w)))
        .collect();
    (namespace_wide, targeted)
}

/// How many requests per second `workload` accepts: the strictest `rateLimit` (lowest
/// `requestsPerSecond`, then lowest `burst`) of the InboundPolicies that apply to it, whether
/// namespace-wide or targeted (a limit is never loosened by a more specific policy).
pub fn inbound_rate_limit(policy: &Policy, workload: &WorkloadRef) -> Option<RateLimit> {
    let (namespace_wide, targeted) = inbound_policies(policy, workload);
    namespace_wide
        .iter()
        .chain(&targeted)
        .filter_map(|p| p.rate_limit)
        .min_by_key(|limit| (limit.requests_per_second, limit.burst))
}

/// The routes a client in `client_namespace` uses for `port` of `service`, in precedence order.
pub fn routes_for(
    policy: &Policy,
    service: &Service,
    port: u16,
    client_namespace: &str,
) -> Vec<Route> {
    Attachments::new(policy).routes(service, port, client_namespace)
}

/// Routes by the Services they attach to, and TrafficPolicies by their targets, built once
/// per view so that each Service port only looks at its own.
struct Attachments<'a> {
    by_service: HashMap<&'a ObjectKey, Vec<&'a HttpRoute>>,
    /// Validation keeps one policy per target.
    traffic: HashMap<&'a TrafficTarget, &'a TrafficSettings>,
}

impl<'a> Attachments<'a> {
    fn new(policy: &'a Policy) -> Self {
        let mut by_service: HashMap<&ObjectKey, Vec<&HttpRoute>> = HashMap::new();
        for route in &policy.routes {
            for parent in &route.parents {
                let routes = by_service.entry(&parent.service).or_default();
                if !routes.iter().any(|r| r.key == route.key) {
                    routes.push(route);
                }
            }
        }
        let traffic = policy
            .traffic_policies
            .iter()
            .map(|p| (&p.target, &p.settings))
            .collect();
        Attachments {
            by_service,
            traffic,
        }
    }

    fn settings(&self, target: TrafficTarget) -> TrafficSettings {
        self.traffic
            .get(&target)
            .copied()
            .cloned()
            .unwrap_or_default()
    }

    /// How callers treat `port` of `service`: field by field, the TrafficPolicy of that port,
    /// else the one of the whole Service, else the default.
    fn traffic(&self, service: &ObjectKey, port: u16) -> TrafficConfig {
        let target = |port| TrafficTarget::Service {
            service: service.clone(),
            port,
        };
        self.settings(target(Some(port)))
            .or(&self.settings(target(None)))
            .traffic_config()
    }

    /// What a rule changes, field by field: the TrafficPolicy of the rule (by its name), else
    /// the one of the whole route, else (for `retry`) the rule's own `retry`. Fields left
    /// `None` take the Service's `route_defaults` in the proxy. The rule's
    /// `timeouts.backendRequest` bounds each try of the retry policy it ends up with, unless
    /// that policy sets `perTryTimeout`.
    fn route_policy(&self, route: &HttpRoute, rule: &RouteRule) -> RoutePolicy {
        let target = |rule: Option<&String>| TrafficTarget::Route {
            route: route.key.clone(),
            rule: rule.cloned(),
        };
        let whole = self.settings(target(None));
        let named = match &rule.name {
            Some(name) => self.settings(target(Some(name))),
            None => TrafficSettings::default(),
        };
        let mut policy = named.or(&whole).route_policy();
        if policy.retry.is_none() {
            policy.retry = rule.retry.clone();
        }
        if let Some(retry) = &mut policy.retry {
            retry.per_try_timeout = retry.per_try_timeout.or(rule.backend_timeout);
        }
        policy
    }

    fn routes(&self, service: &Service, port: u16, client_namespace: &str) -> Vec<Route> {
        let attached: Vec<&HttpRoute> = self
            .by_service
            .get(&service.key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|route| route.attaches_to(&service.key, port))
            .collect();
        let producer = service.key.namespace.as_str();
        let consumer: Vec<&HttpRoute> = attached
            .iter()
            .copied()
            .filter(|r| r.key.namespace == client_namespace && client_namespace != producer)
            .collect();
        let chosen = if consumer.is_empty() {
            attached
                .into_iter()
                .filter(|r| r.key.namespace == producer)
                .collect()
        } else {
            consumer
        };
        // Gateway API precedence is per match, so every match of a rule becomes its own
        // Route (sharing the rule's backends and filters) and is ranked on its own.
        let mut ranked: Vec<(Rank<'_>, Route)> = chosen
            .into_iter()
            .flat_map(|route| {
                route
                    .rules
                    .iter()
                    .flat_map(move |rule| per_match(route, rule, self.route_policy(route, rule)))
            })
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        ranked.into_iter().map(|(_, route)| route).collect()
    }
}

/// One ranked Route per match of `rule`; a rule without matches matches every request.
fn per_match<'a>(
    route: &'a HttpRoute,
    rule: &RouteRule,
    policy: RoutePolicy,
) -> Vec<(Rank<'a>, Route)> {
    if rule.matches.is_empty() {
        return vec![(
            rank(route, rule, &RouteMatch::default()),
            flatten(route, rule, Vec::new(), policy),
        )];
    }
    rule.matches
        .iter()
        .map(|m| {
            let flat = flatten(route, rule, vec![m.clone()], policy.clone());
            (rank(route, rule, m), flat)
        })
        .collect()
}

fn flatten(
    route: &HttpRoute,
    rule: &RouteRule,
    matches: Vec<RouteMatch>,
    policy: RoutePolicy,
) -> Route {
    Route {
        route: route.key.to_string(),
        rule: rule.index,
        matches,
        request_headers: rule.request_headers.clone(),
        response_headers: rule.response_headers.clone(),
        backends: rule.backends.clone(),
        timeout: rule.timeout,
        backend_timeout: rule.backend_timeout,
        policy,
    }
}

/// Sort key of one match of a rule: smaller comes first.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    specificity: MatchRank,
    /// Routes without a timestamp count as newest.
    undated: bool,
    created: Option<Timestamp>,
    route: &'a ObjectKey,
    rule: usize,
}

fn rank<'a>(route: &'a HttpRoute, rule: &RouteRule, m: &RouteMatch) -> Rank<'a> {
    Rank {
        specificity: match_rank(m),
        undated: route.created.is_none(),
        created: route.created,
        route: &route.key,
        rule: rule.index,
    }
}

/// How specific one match is: smaller is more specific.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct MatchRank {
    /// 0 `Exact`, 1 `RegularExpression`, 2 `PathPrefix`.
    path_kind: u8,
    /// Longer paths (and patterns) first.
    path_length: Reverse<usize>,
    /// A method match first.
    no_method: bool,
    headers: Reverse<usize>,
    query_params: Reverse<usize>,
}

/// The Gateway API's precedence of one match.
pub fn match_rank(m: &RouteMatch) -> MatchRank {
    let (path_kind, length) = match &m.path {
        Some(PathMatch::Exact(value)) => (0, value.len()),
        Some(PathMatch::RegularExpression(value)) => (1, value.len()),
        Some(PathMatch::PathPrefix(value)) => (2, value.trim_end_matches('/').len().max(1)),
        None => (2, 1),
    };
    MatchRank {
        path_kind,
        path_length: Reverse(length),
        no_method: m.method.is_none(),
        headers: Reverse(m.headers.len()),
        query_params: Reverse(m.query_params.len()),
    }
}

#[cfg(test)]
mod tests;

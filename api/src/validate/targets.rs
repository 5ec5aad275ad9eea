//! TrafficPolicies and what they attach to: a Service (or one port of it), or an HTTPRoute (or
//! one rule of it). One policy per target, so that what applies is never a guess; a policy
//! targeting a route may set only what a route can change (retries, rate limit, hedging,
//! faults). The fields themselves are parsed by [`super::traffic`]. (InboundPolicies:
//! [`super::inbound`].)

use std::collections::HashMap;

use super::service::Services;
use super::{fields, has_errors, key_of, traffic, Known, Lookup};
use crate::document::Located;
use crate::gateway::GATEWAY_GROUP;
use crate::policy::{self, ObjectKey, TrafficTarget};
use crate::problem::Problem;
use crate::skiff_kinds::{TrafficPolicy, TrafficPolicySpec, TrafficTargetRef};

/// The routes without errors, and the names of those with errors.
pub(crate) type Routes = Known<policy::HttpRoute>;

/// Checks every TrafficPolicy; returns those without errors, sorted by key.
pub(super) fn traffic_policies(
    list: &[Located<TrafficPolicy>],
    services: &Services,
    routes: &Routes,
    problems: &mut Vec<Problem>,
) -> Vec<policy::TrafficPolicy> {
    let mut valid = Vec::new();
    // Which policy claimed each target first, and where.
    let mut claimed: HashMap<TrafficTarget, (ObjectKey, String)> = HashMap::new();
    for item in list {
        let key = key_of(&item.value.metadata);
        let spec = &item.value.spec;
        let mut found = Vec::new();
        let target = target(item, &key, &spec.target_ref, services, routes, &mut found);
        let settings = traffic::settings(item, spec, &mut found);
        if is_route_kind(&spec.target_ref) {
            route_fields_only(item, spec, &mut found);
        }
        let target = target.filter(|_| !has_errors(&found));
        if let Some(target) = &target {
            match claimed.get(target) {
                Some((other, place)) => found.push(item.error(
                    "spec.targetRef",
                    format!(
                        "{} is already targeted by TrafficPolicy {other} ({place}); merge the two",
                        describe(target)
                    ),
                )),
                None => {
                    claimed.insert(target.clone(), (key.clone(), item.place("spec.targetRef")));
                }
            }
        }
        if let (Some(target), false) = (target, has_errors(&found)) {
            valid.push(policy::TrafficPolicy {
                key,
                target,
                settings,
            });
        }
        problems.extend(found);
    }
    valid.sort_by(|a, b| a.key.cmp(&b.key));
    valid
}

fn is_route_kind(target: &TrafficTargetRef) -> bool {
    target.group == GATEWAY_GROUP && target.kind == "HTTPRoute"
}

/// What `spec.targetRef` names, when it exists; `None` with a problem otherwise (or without
/// one, when the target has errors of its own).
fn target(
    item: &Located<TrafficPolicy>,
    key: &ObjectKey,
    target: &TrafficTargetRef,
    services: &Services,
    routes: &Routes,
    found: &mut Vec<Problem>,
) -> Option<TrafficTarget> {
    if is_route_kind(target) {
        return route_target(item, key, target, routes, found);
    }
    if !super::route::is_core_group(&target.group) || target.kind != "Service" {
        found.push(item.error(
            "spec.targetRef",
            format!(
                "a TrafficPolicy targets a Service (group \"\", kind Service) or an HTTPRoute \
                 (group {GATEWAY_GROUP:?}, kind HTTPRoute), not {} in group {:?}",
                target.kind, target.group
            ),
        ));
        return None;
    }
    let mut port = match target.port.map(fields::port) {
        Some(Err(message)) => {
            found.push(item.error("spec.targetRef.port", message));
            return None;
        }
        Some(Ok(port)) => Some(port),
        None => None,
    };
    let service = ObjectKey::new(&key.namespace, &target.name);
    let found_service = match services.lookup(&service) {
        Lookup::Missing => {
            found.push(item.error(
                "spec.targetRef.name",
                format!("Service {service} does not exist"),
            ));
            return None;
        }
        Lookup::Invalid => return None,
        Lookup::Valid(found_service) => &found_service.value,
    };
    if let Some(number) = port.filter(|p| found_service.port(*p).is_none()) {
        found.push(item.error(
            "spec.targetRef.port",
            format!(
                "Service {service} has no port {number} (its ports: {})",
                super::route::ports_of(found_service)
            ),
        ));
        return None;
    }
    if let Some(section) = &target.section_name {
        let named = found_service
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(section));
        match (named, port) {
            (None, _) => {
                found.push(item.error(
                    "spec.targetRef.sectionName",
                    format!(
                        "Service {service} has no port named {section:?} (its ports: {})",
                        super::route::ports_of(found_service)
                    ),
                ));
                return None;
            }
            (Some(named), Some(number)) if named.port != number => {
                found.push(item.error(
                    "spec.targetRef.sectionName",
                    format!(
                        "port {section:?} of Service {service} is {}, but port says {number}",
                        named.port
                    ),
                ));
                return None;
            }
            (Some(named), _) => port = Some(named.port),
        }
    }
    Some(TrafficTarget::Service { service, port })
}

/// An HTTPRoute of the policy's namespace, and one of its rules by name.
fn route_target(
    item: &Located<TrafficPolicy>,
    key: &ObjectKey,
    target: &TrafficTargetRef,
    routes: &Routes,
    found: &mut Vec<Problem>,
) -> Option<TrafficTarget> {
    if target.port.is_some() {
        found.push(item.error(
            "spec.targetRef.port",
            "an HTTPRoute target has no port: leave port out, and name one of the route's \
             rules in sectionName to target only that rule",
        ));
    }
    let route = ObjectKey::new(&key.namespace, &target.name);
    let found_route = match routes.lookup(&route) {
        Lookup::Missing => {
            found.push(item.error(
                "spec.targetRef.name",
                format!("HTTPRoute {route} does not exist"),
            ));
            return None;
        }
        Lookup::Invalid => return None,
        Lookup::Valid(found_route) => &found_route.value,
    };
    if let Some(section) = &target.section_name {
        if !found_route
            .rules
            .iter()
            .any(|r| r.name.as_deref() == Some(section))
        {
            let names: Vec<&str> = found_route
                .rules
                .iter()
                .filter_map(|r| r.name.as_deref())
                .collect();
            let known = if names.is_empty() {
                "its rules have no names; name one in spec.rules[].name".to_string()
            } else {
                format!("its rules: {}", names.join(", "))
            };
            found.push(item.error(
                "spec.targetRef.sectionName",
                format!("HTTPRoute {route} has no rule named {section:?} ({known})"),
            ));
            return None;
        }
    }
    Some(TrafficTarget::Route {
        route,
        rule: target.section_name.clone(),
    })
}

/// A policy targeting an HTTPRoute may set only `retry`, `rateLimit`, `hedge` and `fault`.
fn route_fields_only(
    item: &Located<TrafficPolicy>,
    spec: &TrafficPolicySpec,
    found: &mut Vec<Problem>,
) {
    let service_only = [
        ("connectTimeout", spec.connect_timeout.is_some()),
        ("idleTimeout", spec.idle_timeout.is_some()),
        ("retryBudget", spec.retry_budget.is_some()),
        ("outlierDetection", spec.outlier_detection.is_some()),
        ("circuitBreaker", spec.circuit_breaker.is_some()),
        ("connectionPool", spec.connection_pool.is_some()),
        ("loadBalancer", spec.load_balancer.is_some()),
    ];
    for (field, _) in service_only.iter().filter(|(_, written)| *written) {
        found.push(item.error(
            format!("spec.{field}"),
            format!(
                "{field} belongs on a TrafficPolicy that targets a Service: it concerns the \
                 destination's connections and endpoints, not one route (a route's policy may \
                 set retry, rateLimit, hedge and fault)"
            ),
        ));
    }
    if spec.request_timeout.is_some() {
        found.push(item.error(
            "spec.requestTimeout",
            "a route's request timeout belongs in the HTTPRoute rule's timeouts.request (or in \
             requestTimeout on a TrafficPolicy that targets the Service)",
        ));
    }
}

fn describe(target: &TrafficTarget) -> String {
    match target {
        TrafficTarget::Service {
            service,
            port: Some(port),
        } => format!("port {port} of Service {service}"),
        TrafficTarget::Service {
            service,
            port: None,
        } => format!("Service {service}"),
        TrafficTarget::Route {
            route,
            rule: Some(rule),
        } => format!("rule {rule:?} of HTTPRoute {route}"),
        TrafficTarget::Route { route, rule: None } => format!("HTTPRoute {route}"),
    }
}

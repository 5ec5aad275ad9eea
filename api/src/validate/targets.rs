//! TrafficPolicies and what they attach to: a Service, or one port of it. One policy per
//! target, so that what applies is never a guess. (InboundPolicies: [`super::inbound`].)

use std::collections::HashMap;
use std::time::Duration;

use super::service::Services;
use super::{fields, has_errors, key_of, Lookup};
use crate::document::Located;
use crate::duration::parse_duration;
use crate::policy::{self, ObjectKey};
use crate::problem::Problem;
use crate::skiff_kinds::TrafficPolicy;

/// What `TrafficPolicy.spec.connectTimeout` is when unset (DESIGN.md §5).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn traffic_policies(
    list: &[Located<TrafficPolicy>],
    services: &Services,
    problems: &mut Vec<Problem>,
) -> Vec<policy::TrafficPolicy> {
    let mut valid = Vec::new();
    // Which policy claimed each (Service, port) first, and where.
    let mut targets: HashMap<(ObjectKey, Option<u16>), (ObjectKey, String)> = HashMap::new();
    for item in list {
        let key = key_of(&item.value.metadata);
        let spec = &item.value.spec;
        let target = &spec.target_ref;
        let mut found = Vec::new();
        if !super::route::is_core_group(&target.group) || target.kind != "Service" {
            found.push(item.error(
                "spec.targetRef",
                format!(
                    "a TrafficPolicy targets a Service (group \"\", kind Service), not {} in \
                     group {:?}",
                    target.kind, target.group
                ),
            ));
        }
        let port = match target.port.map(fields::port) {
            Some(Err(message)) => {
                found.push(item.error("spec.targetRef.port", message));
                None
            }
            Some(Ok(port)) => Some(port),
            None => None,
        };
        let service = ObjectKey::new(&key.namespace, &target.name);
        match services.lookup(&service) {
            Lookup::Missing => found.push(item.error(
                "spec.targetRef.name",
                format!("Service {service} does not exist"),
            )),
            Lookup::Valid(found_service) => {
                if let Some(number) = port.filter(|p| found_service.value.port(*p).is_none()) {
                    found.push(item.error(
                        "spec.targetRef.port",
                        format!(
                            "Service {service} has no port {number} (its ports: {})",
                            super::route::ports_of(&found_service.value)
                        ),
                    ));
                }
            }
            Lookup::Invalid => {}
        }
        let connect_timeout = match spec.connect_timeout.as_deref().map(parse_duration) {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(Ok(timeout)) if timeout.is_zero() => {
                found.push(item.error("spec.connectTimeout", "must be longer than 0s"));
                DEFAULT_CONNECT_TIMEOUT
            }
            Some(Ok(timeout)) => timeout,
            Some(Err(error)) => {
                found.push(item.error("spec.connectTimeout", error.to_string()));
                DEFAULT_CONNECT_TIMEOUT
            }
        };
        if !has_errors(&found) {
            match targets.get(&(service.clone(), port)) {
                Some((other, place)) => found.push(item.error(
                    "spec.targetRef",
                    format!(
                        "{} is already targeted by TrafficPolicy {other} ({place}); merge the two",
                        describe(&service, port)
                    ),
                )),
                None => {
                    targets.insert(
                        (service.clone(), port),
                        (key.clone(), item.place("spec.targetRef")),
                    );
                }
            }
        }
        if !has_errors(&found) {
            valid.push(policy::TrafficPolicy {
                key,
                service,
                port,
                connect_timeout,
            });
        }
        problems.extend(found);
    }
    valid.sort_by(|a, b| a.key.cmp(&b.key));
    valid
}

fn describe(service: &ObjectKey, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("port {port} of Service {service}"),
        None => format!("Service {service}"),
    }
}

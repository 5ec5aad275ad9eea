//! InboundPolicies: what each applies to (one Workload, or every workload of its namespace),
//! the mTLS mode of the workload's ports, and authorization rules whose every value can match
//! a normalised request. Several policies may apply to one target — their rules add up — but
//! every mode they set for it must agree, so that which mode applies is never a guess.

use std::collections::HashMap;

use super::service::Workloads;
use super::{fields, has_errors, key_of, Lookup};
use crate::config::{AuthorizationPath, PortMode};
use crate::document::Located;
use crate::identity::SpiffeId;
use crate::policy::{self, MtlsMode, ObjectKey};
use crate::problem::Problem;
use crate::skiff_kinds::{
    AuthorizationRuleSpec, InboundPolicy, PortMtls, RulePath, RulePathType, WorkloadTargetRef,
    GROUP,
};

/// Checks every InboundPolicy; returns those without errors, sorted by key.
pub(super) fn inbound_policies(
    list: &[Located<InboundPolicy>],
    workloads: &Workloads,
    problems: &mut Vec<Problem>,
) -> Vec<policy::InboundPolicy> {
    let mut valid = Vec::new();
    let mut modes = ModeClaims::default();
    for item in list {
        let key = key_of(&item.value.metadata);
        let spec = &item.value.spec;
        let mut found = Vec::new();
        let workload = spec
            .target_ref
            .as_ref()
            .map(|target| target_workload(item, &key, target, workloads, &mut found));
        let port_modes = port_modes(item, &spec.mtls.ports, &mut found);
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| authorization_rule(item, index, rule, &mut found))
            .collect();
        let checked = policy::InboundPolicy {
            key,
            workload,
            mode: spec.mtls.mode,
            port_modes,
            rules,
        };
        if !has_errors(&found) {
            modes.claim(item, &checked, &mut found);
        }
        if !has_errors(&found) {
            valid.push(checked);
        }
        problems.extend(found);
    }
    valid.sort_by(|a, b| a.key.cmp(&b.key));
    valid
}

/// The Workload a `targetRef` names, reporting a wrong kind or a missing Workload.
fn target_workload(
    item: &Located<InboundPolicy>,
    key: &ObjectKey,
    target: &WorkloadTargetRef,
    workloads: &Workloads,
    found: &mut Vec<Problem>,
) -> ObjectKey {
    if target.group != GROUP || target.kind != "Workload" {
        found.push(item.error(
            "spec.targetRef",
            format!(
                "an InboundPolicy targets a Workload (group {GROUP:?}, kind Workload), not {} in \
                 group {:?}; leave targetRef out to apply the policy to every workload of the \
                 namespace",
                target.kind, target.group
            ),
        ));
    }
    let workload = ObjectKey::new(&key.namespace, &target.name);
    if let Lookup::Missing = workloads.lookup(&workload) {
        found.push(item.error(
            "spec.targetRef.name",
            format!("Workload {workload} does not exist"),
        ));
    }
    workload
}

/// `spec.mtls.ports`, sorted by port; a port listed twice is an error.
fn port_modes(
    item: &Located<InboundPolicy>,
    ports: &[PortMtls],
    found: &mut Vec<Problem>,
) -> Vec<PortMode> {
    let mut modes: Vec<PortMode> = Vec::new();
    let mut first_at: HashMap<u16, usize> = HashMap::new();
    for (at, entry) in ports.iter().enumerate() {
        let path = format!("spec.mtls.ports[{at}].port");
        let port = match fields::port(entry.port) {
            Ok(port) => port,
            Err(message) => {
                found.push(item.error(path, message));
                continue;
            }
        };
        if let Some(first) = first_at.insert(port, at) {
            found.push(item.error(
                path,
                format!("port {port} is already listed at spec.mtls.ports[{first}]"),
            ));
            first_at.insert(port, first);
            continue;
        }
        modes.push(PortMode {
            port,
            mode: entry.mode,
        });
    }
    modes.sort_by_key(|m| m.port);
    modes
}

/// One rule, every value checked. Problems go to `found`, and values with one are left out
/// of the rule (which is then discarded with its policy).
fn authorization_rule(
    item: &Located<InboundPolicy>,
    index: usize,
    spec: &AuthorizationRuleSpec,
    found: &mut Vec<Problem>,
) -> policy::AuthorizationRule {
    let at = format!("spec.rules[{index}]");
    let mut rule = policy::AuthorizationRule {
        index,
        action: spec.action,
        identities: Vec::new(),
        namespaces: Vec::new(),
        ports: Vec::new(),
        methods: Vec::new(),
        paths: Vec::new(),
    };
    for (i, text) in spec.from.identities.iter().enumerate() {
        let path = format!("{at}.from.identities[{i}]");
        let checked = SpiffeId::parse(text).map_err(|error| {
            format!(
                "{text:?} is not a workload SPIFFE ID \
                 (spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>): {error}"
            )
        });
        rule.identities.extend(reported(item, found, path, checked));
    }
    for (i, name) in spec.from.namespaces.iter().enumerate() {
        let path = format!("{at}.from.namespaces[{i}]");
        let checked = fields::label_name(name).map(|()| name.clone());
        rule.namespaces.extend(reported(item, found, path, checked));
    }
    for (i, port) in spec.to.ports.iter().enumerate() {
        let path = format!("{at}.to.ports[{i}]");
        let checked = fields::port(*port);
        rule.ports.extend(reported(item, found, path, checked));
    }
    for (i, method) in spec.to.methods.iter().enumerate() {
        let path = format!("{at}.to.methods[{i}]");
        let checked = fields::method(method).map(|()| method.clone());
        rule.methods.extend(reported(item, found, path, checked));
    }
    for (i, written) in spec.to.paths.iter().enumerate() {
        let path = format!("{at}.to.paths[{i}].value");
        let checked = fields::rule_path(&written.value).map(|()| rule_path(written));
        rule.paths.extend(reported(item, found, path, checked));
    }
    rule
}

/// The checked value, or `None` with its problem (at `path`) added to `found`.
fn reported<T>(
    item: &Located<InboundPolicy>,
    found: &mut Vec<Problem>,
    path: String,
    checked: Result<T, String>,
) -> Option<T> {
    checked
        .map_err(|message| found.push(item.error(path, message)))
        .ok()
}

/// A checked rule path in its one form: a prefix loses its trailing `/` (`/api/` is `/api`,
/// as in HTTPRoute), except the prefix `/`.
fn rule_path(path: &RulePath) -> AuthorizationPath {
    match path.match_type {
        RulePathType::Exact => AuthorizationPath::Exact(path.value.clone()),
        RulePathType::PathPrefix => {
            let trimmed = path.value.trim_end_matches('/');
            AuthorizationPath::Prefix(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
        }
    }
}

/// What a policy applies to, as far as conflicts go: policies of one scope must agree.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Workload(ObjectKey),
    /// Every workload of the namespace (policies without `targetRef`).
    Namespace(String),
}

impl Scope {
    fn of(policy: &policy::InboundPolicy) -> Scope {
        match &policy.workload {
            Some(workload) => Scope::Workload(workload.clone()),
            None => Scope::Namespace(policy.key.namespace.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Workload(workload) => format!("Workload {workload}"),
            Scope::Namespace(namespace) => format!("every workload of namespace {namespace}"),
        }
    }
}

/// The first mode set for each scope (and port), by which policy and where.
#[derive(Default)]
struct ModeClaims {
    /// `None` port: `spec.mtls.mode`.
    first: HashMap<(Scope, Option<u16>), (MtlsMode, ObjectKey, String)>,
}

impl ModeClaims {
    /// Records the modes `policy` sets, reporting each that differs from one set before for
    /// the same scope and port.
    fn claim(
        &mut self,
        item: &Located<InboundPolicy>,
        policy: &policy::InboundPolicy,
        found: &mut Vec<Problem>,
    ) {
        let scope = Scope::of(policy);
        let mut claims: Vec<(Option<u16>, MtlsMode, String)> = Vec::new();
        if let Some(mode) = policy.mode {
            claims.push((None, mode, "spec.mtls.mode".to_string()));
        }
        for (at, entry) in item.value.spec.mtls.ports.iter().enumerate() {
            // Already checked: every port is valid and listed once.
            let port = u16::try_from(entry.port).unwrap_or_default();
            let path = format!("spec.mtls.ports[{at}].mode");
            claims.push((Some(port), entry.mode, path));
        }
        for (port, mode, path) in claims {
            match self.first.get(&(scope.clone(), port)) {
                Some((other_mode, other, place)) if *other_mode != mode => {
                    let what = match port {
                        Some(port) => format!("port {port} of {}", scope.describe()),
                        None => scope.describe(),
                    };
                    found.push(item.error(
                        path,
                        format!(
                            "{} conflicts with {} set for {what} by InboundPolicy {other} \
                             ({place}); policies with the same target must agree on its mode",
                            mode_name(mode),
                            mode_name(*other_mode)
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    let place = item.place(&path);
                    self.first
                        .insert((scope.clone(), port), (mode, policy.key.clone(), place));
                }
            }
        }
    }
}

fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
    }
}

//! InboundPolicies: what each applies to (one Workload by `targetRef`, the Workloads its
//! `selector` picks, or every workload of its namespace), the mTLS mode of the workload's
//! ports, and authorization rules whose every value can match a normalised request. Several
//! policies may apply to one workload — their rules add up — but every mode they set for it
//! must agree, so that which mode applies is never a guess. With selectors, which policies
//! meet on a workload depends on its labels, so that is checked workload by workload. A
//! `rateLimit` is checked like a TrafficPolicy's ([`super::traffic`]).

use std::collections::{BTreeMap, HashMap};

use super::service::Workloads;
use super::{fields, has_errors, key_of, selector, traffic, Lookup};
use crate::config::{AuthorizationPath, PortMode};
use crate::document::Located;
use crate::identity::SpiffeId;
use crate::policy::{self, InboundTarget, MtlsMode, ObjectKey};
use crate::problem::Problem;
use crate::skiff_kinds::{
    AuthorizationRuleSpec, InboundPolicy, InboundPolicySpec, PortMtls, RulePath, RulePathType,
    WorkloadTargetRef, GROUP,
};

/// Checks every InboundPolicy; returns those without errors, sorted by key.
pub(super) fn inbound_policies(
    list: &[Located<InboundPolicy>],
    workloads: &Workloads,
    problems: &mut Vec<Problem>,
) -> Vec<policy::InboundPolicy> {
    // In the order written, which decides which of two conflicting policies is reported.
    let mut valid: Vec<(&Located<InboundPolicy>, policy::InboundPolicy)> = Vec::new();
    let mut modes = ModeClaims::default();
    for item in list {
        let key = key_of(&item.value.metadata);
        let spec = &item.value.spec;
        let mut found = Vec::new();
        let target = target(item, &key, spec, workloads, &mut found);
        let port_modes = port_modes(item, &spec.mtls.ports, &mut found);
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| authorization_rule(item, index, rule, &mut found))
            .collect();
        let rate_limit = spec
            .rate_limit
            .as_ref()
            .and_then(|limit| traffic::rate_limit(item, "spec.rateLimit", limit, &mut found));
        let checked = policy::InboundPolicy {
            key,
            target,
            mode: spec.mtls.mode,
            port_modes,
            rules,
            rate_limit,
        };
        if !has_errors(&found) {
            modes.claim(item, &checked, &mut found);
        }
        if !has_errors(&found) {
            valid.push((item, checked));
        }
        problems.extend(found);
    }
    selector_conflicts(&valid, workloads, problems);
    let mut valid: Vec<policy::InboundPolicy> = valid.into_iter().map(|(_, p)| p).collect();
    valid.sort_by(|a, b| a.key.cmp(&b.key));
    valid
}

/// What `spec.targetRef` or `spec.selector` attaches the policy to; both at once is an error.
fn target(
    item: &Located<InboundPolicy>,
    key: &ObjectKey,
    spec: &InboundPolicySpec,
    workloads: &Workloads,
    found: &mut Vec<Problem>,
) -> InboundTarget {
    if spec.target_ref.is_some() && spec.selector.is_some() {
        found.push(item.error(
            "spec.selector",
            "targetRef and selector are mutually exclusive: a policy applies to the Workload \
             its targetRef names or to the Workloads its selector picks; remove one, or write \
             two policies",
        ));
    }
    let selector = spec
        .selector
        .as_ref()
        .map(|written| selector::label_selector(item, "spec.selector", written, found));
    if let Some(target) = &spec.target_ref {
        return InboundTarget::Workload(target_workload(item, key, target, workloads, found));
    }
    let selector = match selector {
        // Kubernetes' empty selector selects everything: the same as writing none.
        Some(selector) if !selector.requirements.is_empty() => selector,
        _ => return InboundTarget::Namespace,
    };
    let selects_some = workloads
        .valid
        .values()
        .any(|w| w.value.key.namespace == key.namespace && selector.matches(&w.value.labels));
    if !has_errors(found) && !selects_some {
        found.push(item.warning(
            "spec.selector",
            format!(
                "selects no Workload of namespace {}, so the policy applies to no workload",
                key.namespace
            ),
        ));
    }
    InboundTarget::Selector(selector)
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
    /// Every workload of the namespace (policies without `targetRef` and `selector`).
    Namespace(String),
}

impl Scope {
    /// `None` for a selector: which workloads it shares is only known workload by workload
    /// ([`selector_conflicts`]).
    fn of(policy: &policy::InboundPolicy) -> Option<Scope> {
        match &policy.target {
            InboundTarget::Workload(workload) => Some(Scope::Workload(workload.clone())),
            InboundTarget::Namespace => Some(Scope::Namespace(policy.key.namespace.clone())),
            InboundTarget::Selector(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Workload(workload) => format!("Workload {workload}"),
            Scope::Namespace(namespace) => format!("every workload of namespace {namespace}"),
        }
    }
}

/// One mode a policy sets: for which port (`None`: `spec.mtls.mode`), and where.
#[derive(Clone)]
struct ModeClaim {
    port: Option<u16>,
    mode: MtlsMode,
    path: String,
}

/// Every mode `item` sets, `spec.mtls.mode` first, then the ports in the order written.
fn mode_claims(item: &Located<InboundPolicy>) -> Vec<ModeClaim> {
    let mtls = &item.value.spec.mtls;
    let mut claims: Vec<ModeClaim> = Vec::new();
    if let Some(mode) = mtls.mode {
        let path = "spec.mtls.mode".to_string();
        claims.push(ModeClaim {
            port: None,
            mode,
            path,
        });
    }
    for (at, entry) in mtls.ports.iter().enumerate() {
        // Already checked: every port is valid and listed once.
        let port = u16::try_from(entry.port).unwrap_or_default();
        let path = format!("spec.mtls.ports[{at}].mode");
        claims.push(ModeClaim {
            port: Some(port),
            mode: entry.mode,
            path,
        });
    }
    claims
}

/// `port 8080 of <whom>`, or `<whom>` for the mode of every port.
fn describe_port(port: Option<u16>, whom: &str) -> String {
    match port {
        Some(port) => format!("port {port} of {whom}"),
        None => whom.to_string(),
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
        let Some(scope) = Scope::of(policy) else {
            return;
        };
        for ModeClaim { port, mode, path } in mode_claims(item) {
            match self.first.get(&(scope.clone(), port)) {
                Some((other_mode, other, place)) if *other_mode != mode => {
                    let what = describe_port(port, &scope.describe());
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

/// Two policies that set different modes for one port (or every port) of the workloads they
/// both apply to: `later` is reported, naming `earlier`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Clash {
    later: usize,
    port: Option<u16>,
    earlier: usize,
}

/// Where a [`Clash`] was first seen, and what each policy sets.
struct Meeting<'a> {
    /// The first workload (by `namespace/name`) both policies apply to.
    workload: &'a Located<policy::Workload>,
    /// How many workloads they both apply to.
    workloads: usize,
    /// The later policy's claim.
    mine: ModeClaim,
    /// The earlier policy's claim.
    theirs: ModeClaim,
}

/// The conflicts [`ModeClaims`] cannot see: for each Workload, the targeted policies that
/// apply to it (by `targetRef` or `selector`), at least one by selector, must agree on every
/// mode they set. Each pair of policies is reported once per port, at the later one (in the
/// order written), naming the earlier, the first workload they meet on, and how many more.
fn selector_conflicts(
    valid: &[(&Located<InboundPolicy>, policy::InboundPolicy)],
    workloads: &Workloads,
    problems: &mut Vec<Problem>,
) {
    let by_selector = |at: &usize| matches!(valid[*at].1.target, InboundTarget::Selector(_));
    // Namespace → its targeted policies, in the order written.
    let mut targeted: HashMap<&str, Vec<usize>> = HashMap::new();
    for (at, (_, policy)) in valid.iter().enumerate() {
        if policy.target != InboundTarget::Namespace {
            targeted.entry(&policy.key.namespace).or_default().push(at);
        }
    }
    let mut clashes: BTreeMap<Clash, Meeting<'_>> = BTreeMap::new();
    for workload in workloads.valid.values() {
        let Some(candidates) = targeted.get(workload.value.key.namespace.as_str()) else {
            continue;
        };
        let attached: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|at| valid[*at].1.target.targets(&workload.value))
            .collect();
        if !attached.iter().any(by_selector) {
            // Only policies by targetRef: ModeClaims already made them agree.
            continue;
        }
        // Port → the first mode set for it on this workload, by which policy.
        let mut first: HashMap<Option<u16>, (usize, ModeClaim)> = HashMap::new();
        for &at in &attached {
            for claim in mode_claims(valid[at].0) {
                let Some((earlier, theirs)) = first.get(&claim.port) else {
                    first.insert(claim.port, (at, claim));
                    continue;
                };
                if theirs.mode == claim.mode {
                    continue;
                }
                let clash = Clash {
                    later: at,
                    port: claim.port,
                    earlier: *earlier,
                };
                let meeting = clashes.entry(clash).or_insert_with(|| Meeting {
                    workload,
                    workloads: 0,
                    mine: claim,
                    theirs: theirs.clone(),
                });
                meeting.workloads += 1;
            }
        }
    }
    for (clash, meeting) in clashes {
        let (item, _) = &valid[clash.later];
        let (other_item, other) = &valid[clash.earlier];
        let Meeting {
            workload,
            workloads,
            mine,
            theirs,
        } = meeting;
        let more = match workloads - 1 {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let what = describe_port(clash.port, &format!("Workload {}", workload.value.key));
        problems.push(item.error(
            &mine.path,
            format!(
                "{} conflicts with {} set for {what} by InboundPolicy {} ({}); both apply to \
                 that workload ({}){more}, and policies that apply to one workload must agree \
                 on its mode",
                mode_name(mine.mode),
                mode_name(theirs.mode),
                other.key,
                other_item.place(&theirs.path),
                workload.place("metadata.labels"),
            ),
        ));
    }
}

fn mode_name(mode: MtlsMode) -> &'static str {
    match mode {
        MtlsMode::Strict => "STRICT",
        MtlsMode::Permissive => "PERMISSIVE",
    }
}

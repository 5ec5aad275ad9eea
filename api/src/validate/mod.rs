//! Policy files → a validated [`Policy`], or every problem in them at once.
//!
//! The order of the checks: read every document ([`crate::document`]); group resources by kind,
//! refusing bad names and duplicates; then each kind in dependency order — workloads, services
//! with their endpoints, routes, policies — each step checking its fields and its references to
//! the kinds before it; last, conflicts between routes. A resource with an error is left out of
//! the later steps, so one mistake is reported once, not again by everything that refers to it.

mod conflicts;
mod fields;
mod inbound;
mod route;
mod selector;
mod service;
mod targets;
mod traffic;

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::document::{read_file, Located, Resource};
use crate::gateway::HttpRoute;
use crate::k8s::{EndpointSlice, ObjectMeta, Service};
use crate::policy::{ObjectKey, Policy};
use crate::problem::Problem;
use crate::skiff_kinds::{InboundPolicy, TrafficPolicy, Workload};

/// A policy without errors, and what in it is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub policy: Policy,
    /// Things ignored or suspicious (unimplemented features, routes that never match); each
    /// says what happens instead.
    pub warnings: Vec<Problem>,
}

/// Reads and validates a set of policy files, given as `(file name, text)`; the names are only
/// used in problems. Returns the validated policy and its warnings, or — when anything is an
/// error — every problem found (errors and warnings), in file order.
pub fn load(files: &[(String, String)]) -> Result<Loaded, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut objects = Objects::default();
    for (file, text) in files {
        let (resources, file_problems) = read_file(file, text);
        problems.extend(file_problems);
        for resource in resources {
            objects.add(resource, &mut problems);
        }
    }
    let workloads = service::workloads(&objects.workloads, &mut problems);
    let services = service::services(
        &objects.services,
        &objects.endpoint_slices,
        &workloads,
        &mut problems,
    );
    let routes = route::routes(&objects.routes, &services, &mut problems);
    conflicts::check(&routes, &services, &mut problems);
    let mut known_routes = targets::Routes::default();
    for route in &objects.routes {
        let key = key_of(&route.value.metadata);
        let checked = routes
            .binary_search_by(|r| r.value.key.cmp(&key))
            .ok()
            .map(|at| routes[at].clone());
        known_routes.insert(key, checked);
    }
    let traffic_policies = targets::traffic_policies(
        &objects.traffic_policies,
        &services,
        &known_routes,
        &mut problems,
    );
    let inbound_policies =
        inbound::inbound_policies(&objects.inbound_policies, &workloads, &mut problems);

    let file_order: HashMap<&str, usize> = files
        .iter()
        .enumerate()
        .map(|(at, (name, _))| (name.as_str(), at))
        .collect();
    problems.sort_by_key(|p| (file_order.get(p.file.as_str()).copied(), p.line));
    if problems.iter().any(Problem::is_error) {
        return Err(problems);
    }
    let policy = Policy {
        services: services.valid.into_values().map(|s| s.value).collect(),
        routes: routes.into_iter().map(|r| r.value).collect(),
        workloads: workloads.valid.into_values().map(|w| w.value).collect(),
        traffic_policies,
        inbound_policies,
    };
    Ok(Loaded {
        policy,
        warnings: problems,
    })
}

/// The resources read, by kind, each name valid and defined once.
#[derive(Default)]
struct Objects {
    services: Vec<Located<Service>>,
    endpoint_slices: Vec<Located<EndpointSlice>>,
    routes: Vec<Located<HttpRoute>>,
    workloads: Vec<Located<Workload>>,
    traffic_policies: Vec<Located<TrafficPolicy>>,
    inbound_policies: Vec<Located<InboundPolicy>>,
    /// Where each `(kind, namespace/name)` was first defined.
    seen: HashMap<(&'static str, ObjectKey), Located<()>>,
}

impl Objects {
    fn add(&mut self, resource: Located<Resource>, problems: &mut Vec<Problem>) {
        let kind = resource.value.kind();
        if !names_are_valid(&resource, resource.value.metadata(), problems) {
            return;
        }
        let key = key_of(resource.value.metadata());
        if let Some(first) = self.seen.get(&(kind, key.clone())) {
            problems.push(resource.error(
                "metadata.name",
                format!(
                    "duplicate {kind} {key}: already defined at {}",
                    first.place("metadata.name")
                ),
            ));
            return;
        }
        let place = resource.with(());
        self.seen.insert((kind, key), place.clone());
        match resource.value {
            Resource::Service(r) => self.services.push(place.with(r)),
            Resource::EndpointSlice(r) => self.endpoint_slices.push(place.with(r)),
            Resource::HttpRoute(r) => self.routes.push(place.with(*r)),
            Resource::Workload(r) => self.workloads.push(place.with(r)),
            Resource::TrafficPolicy(r) => self.traffic_policies.push(place.with(*r)),
            Resource::InboundPolicy(r) => self.inbound_policies.push(place.with(r)),
        }
    }
}

/// Validated objects of one kind, and the names of those that had errors (references to them
/// are not reported again).
pub(crate) struct Known<T> {
    pub valid: BTreeMap<ObjectKey, Located<T>>,
    pub invalid: HashSet<ObjectKey>,
}

impl<T> Default for Known<T> {
    fn default() -> Self {
        Known {
            valid: BTreeMap::new(),
            invalid: HashSet::new(),
        }
    }
}

/// What a reference found.
pub(crate) enum Lookup<'a, T> {
    Valid(&'a Located<T>),
    /// Defined, but with errors already reported.
    Invalid,
    Missing,
}

impl<T> Known<T> {
    pub fn lookup(&self, key: &ObjectKey) -> Lookup<'_, T> {
        match self.valid.get(key) {
            Some(found) => Lookup::Valid(found),
            None if self.invalid.contains(key) => Lookup::Invalid,
            None => Lookup::Missing,
        }
    }

    /// Records the outcome of validating `key`.
    pub fn insert(&mut self, key: ObjectKey, outcome: Option<Located<T>>) {
        match outcome {
            Some(value) => {
                self.valid.insert(key, value);
            }
            None => {
                self.invalid.insert(key);
            }
        }
    }
}

/// Whether any of a resource's problems is an error (warnings do not invalidate it).
pub(crate) fn has_errors(problems: &[Problem]) -> bool {
    problems.iter().any(Problem::is_error)
}

pub(crate) fn key_of(metadata: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(&metadata.namespace, &metadata.name)
}

fn names_are_valid(
    resource: &Located<Resource>,
    metadata: &ObjectMeta,
    problems: &mut Vec<Problem>,
) -> bool {
    let before = problems.len();
    let name_check = match resource.value {
        // A Service's name becomes a DNS label.
        Resource::Service(_) => fields::label_name(&metadata.name),
        _ => fields::object_name(&metadata.name),
    };
    if let Err(message) = name_check {
        problems.push(resource.error("metadata.name", message));
    }
    if let Err(message) = fields::label_name(&metadata.namespace) {
        problems.push(resource.error("metadata.namespace", message));
    }
    problems.len() == before
}

#[cfg(test)]
mod tests;

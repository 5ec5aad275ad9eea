//! Routes that can never apply: two rules with identical matches on the same Service port. The
//! Gateway API resolves the tie (the older route wins, then the one whose `namespace/name`
//! sorts first, then the earlier rule), so this is a warning on the loser, naming the winner.

use std::collections::{HashMap, HashSet};

use super::service::Services;
use crate::config::RouteMatch;
use crate::document::Located;
use crate::policy::{HttpRoute, ObjectKey, Transport};
use crate::problem::Problem;

/// One match of one rule, attached to a Service port.
struct Claim<'a> {
    route: &'a Located<HttpRoute>,
    rule: usize,
    position: usize,
}

pub(super) fn check(
    routes: &[Located<HttpRoute>],
    services: &Services,
    problems: &mut Vec<Problem>,
) {
    let mut ordered: Vec<&Located<HttpRoute>> = routes.iter().collect();
    ordered.sort_by(|a, b| tie_break(&a.value).cmp(&tie_break(&b.value)));
    // (route, rule, match) already reported, so a match shadowed on several ports is reported
    // once.
    let mut reported: HashSet<(ObjectKey, usize, usize)> = HashSet::new();
    for service in services.valid.values() {
        let service = &service.value;
        for port in service
            .ports
            .iter()
            .filter(|p| p.transport == Transport::Tcp)
        {
            // Producer routes (in the Service's namespace) compete with each other; consumer
            // routes compete with those of their own namespace.
            let mut claims: HashMap<(Option<&str>, &RouteMatch), Claim<'_>> = HashMap::new();
            for route in ordered
                .iter()
                .filter(|r| r.value.attaches_to(&service.key, port.port))
            {
                let namespace = route.value.key.namespace.as_str();
                let scope = (namespace != service.key.namespace).then_some(namespace);
                for rule in &route.value.rules {
                    for (position, condition) in rule.matches.iter().enumerate() {
                        let claim = Claim {
                            route,
                            rule: rule.index,
                            position,
                        };
                        let Some(winner) = claims.get(&(scope, condition)) else {
                            claims.insert((scope, condition), claim);
                            continue;
                        };
                        let loser = (route.value.key.clone(), rule.index, position);
                        if reported.insert(loser) {
                            problems.push(shadowed(&claim, winner, &service.key, port.port));
                        }
                    }
                }
            }
        }
    }
}

/// The Gateway API's order between routes once matches are equal.
fn tie_break(route: &HttpRoute) -> (bool, Option<crate::policy::Timestamp>, &ObjectKey) {
    (route.created.is_none(), route.created, &route.key)
}

fn shadowed(loser: &Claim<'_>, winner: &Claim<'_>, service: &ObjectKey, port: u16) -> Problem {
    let path = match_path(loser);
    let same_route = loser.route.value.key == winner.route.value.key;
    let winner_name = if same_route {
        format!("{} of this route", match_path(winner))
    } else {
        format!(
            "{} of HTTPRoute {} ({})",
            match_path(winner),
            winner.route.value.key,
            winner.route.place(&match_path(winner))
        )
    };
    let reason = if same_route {
        "it comes first"
    } else if winner.route.value.created.is_some()
        && winner.route.value.created < loser.route.value.created
        || loser.route.value.created.is_none() && winner.route.value.created.is_some()
    {
        "that route is older"
    } else {
        "that route's namespace/name sorts first"
    };
    loser.route.warning(
        path,
        format!(
            "HTTPRoute {} has the same match as {winner_name} on Service {service} port {port}; \
             {reason}, so this match never applies",
            loser.route.value.key
        ),
    )
}

/// Where a match is written: `spec.rules[i].matches[j]`, or the rule when it has no matches
/// (the default match), or `spec` for the default rule.
fn match_path(claim: &Claim<'_>) -> String {
    let rule = format!("spec.rules[{}]", claim.rule);
    let written = format!("{rule}.matches[{}]", claim.position);
    if claim.route.index.contains(&written) {
        written
    } else if claim.route.index.contains(&rule) {
        rule
    } else {
        "spec".to_string()
    }
}

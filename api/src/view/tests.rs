//! The per-proxy view and route precedence, table-tested from policy YAML.

use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::config::{AppProtocol, StringMatch, ValueMatch};
use crate::load;

fn policy(yaml: &str) -> Policy {
    match load(&[("policy.yaml".to_string(), yaml.to_string())]) {
        Ok(loaded) => loaded.policy,
        Err(problems) => {
            let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
            panic!("{}", lines.join("\n"))
        }
    }
}

fn path(kind: &str, value: &str) -> Option<PathMatch> {
    let value = value.to_string();
    Some(match kind {
        "Exact" => PathMatch::Exact(value),
        "RegularExpression" => PathMatch::RegularExpression(value),
        _ => PathMatch::PathPrefix(value),
    })
}

#[test]
fn match_precedence_follows_the_gateway_api() {
    let header = |name: &str| ValueMatch {
        name: name.to_string(),
        value: StringMatch::Exact("1".to_string()),
    };
    let m =
        |kind: &str, value: &str, method: Option<&str>, headers: usize, query: usize| RouteMatch {
            path: path(kind, value),
            headers: (0..headers).map(|i| header(&format!("h{i}"))).collect(),
            query_params: (0..query).map(|i| header(&format!("q{i}"))).collect(),
            method: method.map(str::to_string),
        };
    // Each row: the first match must come before the second.
    let rows = [
        (
            "exact beats a longer prefix",
            m("Exact", "/a", None, 0, 0),
            m("PathPrefix", "/a/b/c", None, 0, 0),
        ),
        (
            "exact beats a regex",
            m("Exact", "/a", None, 0, 0),
            m("RegularExpression", "/a.*", None, 0, 0),
        ),
        (
            "regex beats a prefix",
            m("RegularExpression", "/a.*", None, 0, 0),
            m("PathPrefix", "/abc", None, 0, 0),
        ),
        (
            "longer prefix first",
            m("PathPrefix", "/api/v1", None, 0, 0),
            m("PathPrefix", "/api", None, 0, 0),
        ),
        (
            "method beats headers",
            m("PathPrefix", "/api", Some("GET"), 0, 0),
            m("PathPrefix", "/api", None, 3, 0),
        ),
        (
            "more headers first",
            m("PathPrefix", "/", None, 2, 0),
            m("PathPrefix", "/", None, 1, 5),
        ),
        (
            "more query params first",
            m("PathPrefix", "/", None, 1, 2),
            m("PathPrefix", "/", None, 1, 1),
        ),
        (
            "a trailing slash does not lengthen a prefix",
            m("PathPrefix", "/api", Some("GET"), 0, 0),
            m("PathPrefix", "/api/", None, 0, 0),
        ),
    ];
    for (why, first, second) in rows {
        assert!(match_rank(&first) < match_rank(&second), "{why}");
    }
}

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, appProtocol: http}
  - {name: admin, port: 9000}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  ports: [{port: 5432, appProtocol: postgresql}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.0.0.5]
- addresses: [10.0.0.6]
  conditions: {ready: false}
- addresses: [10.0.0.7]
ports:
- {name: http, port: 8080}
- {name: admin, port: 9090}
- {name: dns, port: 5353}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  namespace: data
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [10.0.1.9]
ports:
- {port: 5432}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-a, namespace: shop}
spec: {addresses: [10.0.0.5]}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: db-0, namespace: data}
spec: {addresses: [10.0.1.9]}
---
";

/// Not the default, so the tests see it reach the identities.
const TD: &str = "mesh.example";

fn me(namespace: &str, name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

#[test]
fn the_view_lists_every_tcp_port_with_ready_endpoints() {
    let policy = policy(SERVICES);
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    assert_eq!(config.version, "", "the control plane sets it");
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["data/db", "shop/web", "shop/web-v2"]);
    let db = &config.services[0];
    assert!(db.vips.is_empty(), "headless");
    assert_eq!(db.ports[0].protocol, Some(AppProtocol::Tcp));
    let web = &config.services[1];
    assert_eq!(web.vips, vec!["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let ports: Vec<u16> = web.ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, [80, 9000], "UDP is not proxied");
    let http = &web.ports[0];
    assert_eq!(http.protocol, Some(AppProtocol::Http1));
    let addrs: Vec<SocketAddr> = http.endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(
        addrs,
        [
            "10.0.0.5:8080".parse().unwrap(),
            "10.0.0.7:8080".parse().unwrap()
        ],
        "the endpoint that is not ready is left out"
    );
    assert_eq!(http.endpoints[0].workload, Some(me("shop", "web-a")));
    assert_eq!(http.endpoints[1].workload, None);
    assert_eq!(
        http.endpoints[0].identity.as_deref(),
        Some("spiffe://mesh.example/ns/shop/sa/default"),
        "the workload's service account, in the trust domain given"
    );
    assert_eq!(http.endpoints[1].identity, None, "not a known workload");
    assert_eq!(web.ports[1].protocol, None, "no appProtocol: detect");
    assert!(config.inbound.is_empty(), "the client is nobody's endpoint");
}

#[test]
fn inbound_ports_come_from_pod_ips_or_the_workload() {
    let policy = policy(SERVICES);
    let by_ip = proxy_config(
        &policy,
        &me("shop", "unknown"),
        &["10.0.0.7".parse().unwrap()],
        TD,
    );
    let inbound: Vec<(u16, &str, Option<AppProtocol>)> = by_ip
        .inbound
        .iter()
        .map(|p| (p.port, p.service.as_str(), p.protocol))
        .collect();
    assert_eq!(
        inbound,
        [
            (8080, "shop/web", Some(AppProtocol::Http1)),
            (9090, "shop/web", None)
        ]
    );
    // Endpoints that are not ready still name inbound traffic; UDP does not.
    let by_name = proxy_config(&policy, &me("data", "db-0"), &[], TD);
    assert_eq!(by_name.inbound.len(), 1);
    assert_eq!(by_name.inbound[0].port, 5432);
    assert_eq!(by_name.inbound[0].service, "data/db");
}

fn routes_of(config: &ProxyConfig, service: &str, port: u16) -> Vec<(String, usize)> {
    let service = config.services.iter().find(|s| s.name == service).unwrap();
    let port = service.ports.iter().find(|p| p.port == port).unwrap();
    port.routes
        .iter()
        .map(|r| (r.route.clone(), r.rule))
        .collect()
}

fn route(
    namespace: &str,
    name: &str,
    created: Option<&str>,
    port: Option<u16>,
    rules: &str,
) -> String {
    let created = created
        .map(|t| format!(", creationTimestamp: \"{t}\""))
        .unwrap_or_default();
    let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, \
         namespace: {namespace}{created}}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, \
         name: web, namespace: shop{port}}}]\n  rules:\n{rules}---\n"
    )
}

#[test]
fn routes_are_ordered_by_precedence_then_age_then_name_then_rule() {
    let backend = "    backendRefs: [{name: web-v2, namespace: shop, port: 80}]\n";
    let rule = |matches: &str| format!("  - matches: [{matches}]\n{backend}");
    let yaml = [
        SERVICES.to_string(),
        // Two rules in one route: exact first despite being listed second.
        route(
            "shop",
            "paths",
            None,
            Some(80),
            &(rule("{path: {type: PathPrefix, value: /api}}")
                + &rule("{path: {type: Exact, value: /api/health}}")),
        ),
        // Same prefix as paths/0, but older: comes first among equals.
        route(
            "shop",
            "older",
            Some("2024-01-01T00:00:00Z"),
            Some(80),
            &rule("{path: {type: PathPrefix, value: /api}, headers: [{name: x, value: \"1\"}]}"),
        ),
        route(
            "shop",
            "newer",
            Some("2024-06-01T00:00:00Z"),
            Some(80),
            &rule("{path: {type: PathPrefix, value: /api}, headers: [{name: y, value: \"1\"}]}"),
        ),
        // A catch-all rule without matches comes last.
        route(
            "shop",
            "catch-all",
            None,
            Some(80),
            &format!("  - name: all\n{backend}"),
        ),
        // Attached to port 9000 only.
        route(
            "shop",
            "admin",
            None,
            Some(9000),
            &rule("{path: {type: Exact, value: /}}"),
        ),
        // Each match of a rule is ranked on its own.
        route(
            "shop",
            "multi",
            None,
            Some(80),
            &rule("{path: {type: PathPrefix, value: /}}, {path: {type: Exact, value: /z}}"),
        ),
    ]
    .concat();
    let policy = policy(&yaml);
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    let order = routes_of(&config, "shop/web", 80);
    let expected = [
        ("shop/paths", 1),     // Exact /api/health (11 characters)
        ("shop/multi", 0),     // Exact /z
        ("shop/older", 0),     // PathPrefix /api + 1 header, oldest
        ("shop/newer", 0),     // PathPrefix /api + 1 header
        ("shop/paths", 0),     // PathPrefix /api
        ("shop/catch-all", 0), // no matches: PathPrefix /, no timestamp, "catch-all" < "multi"
        ("shop/multi", 0),     // PathPrefix /
    ];
    let expected: Vec<(String, usize)> =
        expected.iter().map(|(r, i)| (r.to_string(), *i)).collect();
    assert_eq!(order, expected);
    assert_eq!(
        routes_of(&config, "shop/web", 9000),
        [("shop/admin".to_string(), 0)]
    );
    assert!(routes_of(&config, "shop/web-v2", 80).is_empty());

    let catch_all = &config.services[1].ports[0].routes[5];
    assert_eq!(catch_all.matches[0].path, path("PathPrefix", "/"));
    assert_eq!(catch_all.backends[0].service, "shop/web-v2");
}

#[test]
fn consumer_routes_replace_producer_routes_for_their_namespace() {
    let rules = "  - backendRefs: [{name: web-v2, namespace: shop, port: 80}]\n";
    let yaml = [
        SERVICES.to_string(),
        route("shop", "producer", None, None, rules),
        route("data", "consumer", None, None, rules),
    ]
    .concat();
    let policy = policy(&yaml);
    let from = |namespace: &str| {
        routes_of(
            &proxy_config(&policy, &me(namespace, "x"), &[], TD),
            "shop/web",
            80,
        )
    };
    assert_eq!(from("shop"), [("shop/producer".to_string(), 0)]);
    assert_eq!(from("data"), [("data/consumer".to_string(), 0)]);
    assert_eq!(from("elsewhere"), [("shop/producer".to_string(), 0)]);
}

#[test]
fn rule_settings_reach_the_view() {
    let rules = "  - matches: [{path: {type: PathPrefix, value: /}, method: POST}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Env, value: canary}]
        remove: [X-Debug]
    backendRefs:
    - {name: web-v2, namespace: shop, port: 80, weight: 9}
    - {name: web, namespace: shop, port: 80}
    timeouts: {request: 1500ms, backendRequest: 500ms}
";
    let policy = policy(&[SERVICES.to_string(), route("shop", "r", None, None, rules)].concat());
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    let route = &config.services[1].ports[0].routes[0];
    assert_eq!(route.route, "shop/r");
    assert_eq!(route.matches[0].method.as_deref(), Some("POST"));
    assert_eq!(
        route.request_headers.set,
        [("x-env".to_string(), "canary".to_string())]
    );
    assert_eq!(route.request_headers.remove, ["x-debug"]);
    let weights: Vec<(&str, u32)> = route
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("shop/web-v2", 9), ("shop/web", 1)]);
    assert_eq!(route.timeout, Some(std::time::Duration::from_millis(1500)));
    assert_eq!(
        route.backend_timeout,
        Some(std::time::Duration::from_millis(500))
    );
}

const INBOUND_POLICIES: &str = "\
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-b, namespace: shop}
spec: {serviceAccount: web}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: all, namespace: shop}
spec:
  mtls:
    mode: STRICT
    ports: [{port: 9090, mode: PERMISSIVE}, {port: 8081, mode: PERMISSIVE}]
  rules:
  - action: DENY
    from: {namespaces: [evil]}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web-a-open, namespace: shop}
spec:
  targetRef: {name: web-a}
  mtls:
    mode: PERMISSIVE
    ports: [{port: 9090, mode: STRICT}]
  rules:
  - action: ALLOW
    from:
      identities: [spiffe://mesh.example/ns/shop/sa/client]
      namespaces: [shop]
    to:
      ports: [8080]
      methods: [GET, POST]
      paths: [{type: Exact, value: /health}, {type: PathPrefix, value: /api/}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web-a-audit, namespace: shop}
spec:
  targetRef: {name: web-a}
  rules:
  - action: ALLOW
  - action: DENY
    to: {paths: [{type: PathPrefix, value: /}]}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: strict, namespace: data}
spec:
  mtls: {mode: STRICT}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: readers, namespace: data}
spec:
  targetRef: {name: db-0}
  rules:
  - {action: ALLOW, from: {namespaces: [shop]}}
";

#[test]
fn inbound_security_merges_namespace_wide_and_targeted_policies() {
    use crate::config::AuthorizationAction::{Allow, Deny};
    use crate::config::MtlsMode::{Permissive, Strict};

    let policy = policy(&[SERVICES, "---\n", INBOUND_POLICIES].concat());
    // Each row: workload, mode, port exceptions, rules as (policy, index, action).
    let rows = [
        (
            me("shop", "web-a"),
            Permissive,
            vec![(9090, Strict)],
            vec![
                ("shop/all", 0, Deny),
                ("shop/web-a-audit", 0, Allow),
                ("shop/web-a-audit", 1, Deny),
                ("shop/web-a-open", 0, Allow),
            ],
        ),
        (
            me("shop", "web-b"),
            Strict,
            vec![(8081, Permissive), (9090, Permissive)],
            vec![("shop/all", 0, Deny)],
        ),
        (
            me("shop", "not-a-workload"),
            Strict,
            vec![(8081, Permissive), (9090, Permissive)],
            vec![("shop/all", 0, Deny)],
        ),
        (
            me("data", "db-0"),
            Strict,
            vec![],
            vec![("data/readers", 0, Allow)],
        ),
        (me("elsewhere", "x"), Permissive, vec![], vec![]),
    ];
    for (workload, mode, port_modes, rules) in rows {
        let security = proxy_config(&policy, &workload, &[], TD).inbound_security;
        assert_eq!(security.mode, mode, "{workload}");
        let ports: Vec<(u16, MtlsMode)> = security
            .port_modes
            .iter()
            .map(|p| (p.port, p.mode))
            .collect();
        assert_eq!(ports, port_modes, "{workload}");
        let named: Vec<(&str, usize, _)> = security
            .rules
            .iter()
            .map(|r| (r.policy.as_str(), r.rule, r.action))
            .collect();
        assert_eq!(named, rules, "{workload}");
    }
}

#[test]
fn authorization_rules_reach_the_view_in_their_checked_form() {
    use crate::config::AuthorizationPath;

    let policy = policy(&[SERVICES, "---\n", INBOUND_POLICIES].concat());
    let security = inbound_security(&policy, &me("shop", "web-a"));
    let open = security
        .rules
        .iter()
        .find(|r| r.policy == "shop/web-a-open")
        .unwrap();
    assert_eq!(open.identities, ["spiffe://mesh.example/ns/shop/sa/client"]);
    assert_eq!(open.namespaces, ["shop"]);
    assert_eq!(open.ports, [8080]);
    assert_eq!(open.methods, ["GET", "POST"]);
    assert_eq!(
        open.paths,
        [
            AuthorizationPath::Exact("/health".to_string()),
            AuthorizationPath::Prefix("/api".to_string()),
        ],
        "a prefix's trailing slash is dropped"
    );
    let everything = &security.rules[1];
    assert!(
        everything.identities.is_empty() && everything.paths.is_empty(),
        "a rule without conditions stays one: {everything:?}"
    );
    assert_eq!(
        security.rules[2].paths,
        [AuthorizationPath::Prefix("/".to_string())]
    );
}

#[test]
fn inbound_security_does_not_depend_on_document_order() {
    let forward = policy(&[SERVICES, "---\n", INBOUND_POLICIES].concat());
    let mut documents: Vec<&str> = INBOUND_POLICIES.split("---\n").collect();
    documents.reverse();
    let backward = policy(&[SERVICES, "---\n", &documents.join("---\n")].concat());
    for workload in [me("shop", "web-a"), me("shop", "web-b"), me("data", "db-0")] {
        assert_eq!(
            proxy_config(&forward, &workload, &[], TD),
            proxy_config(&backward, &workload, &[], TD),
            "{workload}"
        );
    }
}

#[test]
fn a_label_selector_follows_kubernetes_semantics() {
    use crate::policy::{LabelOperator, LabelRequirement, LabelSelector};

    let requirement = |key: &str, operator: LabelOperator| LabelRequirement {
        key: key.to_string(),
        operator,
    };
    let values = |list: &[&str]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    let labels = |list: &[(&str, &str)]| {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let web_v1 = labels(&[("app", "web"), ("version", "v1")]);
    let bare = labels(&[]);
    // Each row: why, the requirements, whether they select web_v1, whether they select bare.
    let rows = [
        ("empty: everything", vec![], true, true),
        (
            "In: one of the values",
            vec![requirement(
                "app",
                LabelOperator::In(values(&["api", "web"])),
            )],
            true,
            false,
        ),
        (
            "In: another value",
            vec![requirement("app", LabelOperator::In(values(&["api"])))],
            false,
            false,
        ),
        (
            "NotIn: holds without the label",
            vec![requirement(
                "version",
                LabelOperator::NotIn(values(&["v1"])),
            )],
            false,
            true,
        ),
        (
            "NotIn: another value",
            vec![requirement(
                "version",
                LabelOperator::NotIn(values(&["v2"])),
            )],
            true,
            true,
        ),
        (
            "Exists: any value",
            vec![requirement("version", LabelOperator::Exists)],
            true,
            false,
        ),
        (
            "DoesNotExist",
            vec![requirement("version", LabelOperator::DoesNotExist)],
            false,
            true,
        ),
        (
            "every requirement must hold",
            vec![
                requirement("app", LabelOperator::In(values(&["web"]))),
                requirement("canary", LabelOperator::Exists),
            ],
            false,
            false,
        ),
        (
            "keys are compared exactly",
            vec![requirement("App", LabelOperator::Exists)],
            false,
            false,
        ),
    ];
    for (why, requirements, selects_web_v1, selects_bare) in rows {
        let selector = LabelSelector { requirements };
        assert_eq!(selector.matches(&web_v1), selects_web_v1, "{why}: web_v1");
        assert_eq!(selector.matches(&bare), selects_bare, "{why}: bare");
    }
}

const SELECTOR_POLICIES: &str = "\
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {app: web, version: v1}}
spec: {}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-2, namespace: shop, labels: {app: web, version: v2, canary: \"true\"}}
spec: {}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: bare, namespace: shop}
spec: {}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-9, namespace: data, labels: {app: web}}
spec: {}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: all, namespace: shop}
spec:
  mtls: {mode: STRICT, ports: [{port: 9090, mode: PERMISSIVE}]}
  rules: [{action: DENY, from: {namespaces: [evil]}}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: empty-selector, namespace: shop}
spec:
  selector: {}
  rules: [{action: ALLOW}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: PERMISSIVE}
  rules: [{action: ALLOW}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: not-v1, namespace: shop}
spec:
  selector: {matchExpressions: [{key: version, operator: NotIn, values: [v1]}]}
  mtls: {ports: [{port: 8080, mode: STRICT}]}
  rules: [{action: DENY, from: {namespaces: [legacy]}}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: no-app, namespace: shop}
spec:
  selector: {matchExpressions: [{key: app, operator: DoesNotExist}]}
  rules: [{action: DENY}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: canary, namespace: shop}
spec:
  selector:
    matchExpressions:
    - {key: canary, operator: Exists}
    - {key: app, operator: In, values: [web, api]}
  mtls: {ports: [{port: 9090, mode: STRICT}]}
  rules: [{action: ALLOW}, {action: DENY, to: {methods: [DELETE]}}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: api-by-name, namespace: shop}
spec:
  targetRef: {name: api}
  mtls: {mode: PERMISSIVE}
  rules: [{action: ALLOW}]
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: all-web, namespace: data}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
";

#[test]
fn selected_policies_take_precedence_like_targeted_ones() {
    use crate::config::AuthorizationAction::{Allow, Deny};
    use crate::config::MtlsMode::{Permissive, Strict};

    let policy = policy(SELECTOR_POLICIES);
    // Each row: workload, mode, port exceptions, rules as (policy, index, action): the
    // namespace-wide group (no target, or an empty selector) first, then the targeted one (by
    // targetRef or selector, together by name).
    let rows = [
        (
            // Selected by `web` only: `not-v1` skips version v1.
            me("shop", "web-1"),
            Permissive,
            vec![],
            vec![
                ("shop/all", 0, Deny),
                ("shop/empty-selector", 0, Allow),
                ("shop/web", 0, Allow),
            ],
        ),
        (
            // `canary`'s port 9090 replaces the namespace's; `not-v1` adds 8080; `web` sets
            // the mode.
            me("shop", "web-2"),
            Permissive,
            vec![(8080, Strict), (9090, Strict)],
            vec![
                ("shop/all", 0, Deny),
                ("shop/empty-selector", 0, Allow),
                ("shop/canary", 0, Allow),
                ("shop/canary", 1, Deny),
                ("shop/not-v1", 0, Deny),
                ("shop/web", 0, Allow),
            ],
        ),
        (
            // By targetRef and by selector (NotIn holds without the label): one group.
            me("shop", "api"),
            Permissive,
            vec![(8080, Strict)],
            vec![
                ("shop/all", 0, Deny),
                ("shop/empty-selector", 0, Allow),
                ("shop/api-by-name", 0, Allow),
                ("shop/not-v1", 0, Deny),
            ],
        ),
        (
            // Selected, but no selected policy sets the mode: the namespace's applies, and
            // `not-v1`'s 8080 equals it.
            me("shop", "bare"),
            Strict,
            vec![(9090, Permissive)],
            vec![
                ("shop/all", 0, Deny),
                ("shop/empty-selector", 0, Allow),
                ("shop/no-app", 0, Deny),
                ("shop/not-v1", 0, Deny),
            ],
        ),
        (
            // Not declared: no labels, so not even DoesNotExist or NotIn picks it.
            me("shop", "undeclared"),
            Strict,
            vec![(9090, Permissive)],
            vec![("shop/all", 0, Deny), ("shop/empty-selector", 0, Allow)],
        ),
        (
            // Picked by its namespace's `all-web`, not by shop's `web`.
            me("data", "web-9"),
            Strict,
            vec![],
            vec![],
        ),
    ];
    for (workload, mode, port_modes, rules) in rows {
        let security = inbound_security(&policy, &workload);
        assert_eq!(security.mode, mode, "{workload}");
        let ports: Vec<(u16, MtlsMode)> = security
            .port_modes
            .iter()
            .map(|p| (p.port, p.mode))
            .collect();
        assert_eq!(ports, port_modes, "{workload}");
        let named: Vec<(&str, usize, _)> = security
            .rules
            .iter()
            .map(|r| (r.policy.as_str(), r.rule, r.action))
            .collect();
        assert_eq!(named, rules, "{workload}");
    }
    let empty = policy
        .inbound_policies
        .iter()
        .find(|p| p.key.name == "empty-selector")
        .unwrap();
    assert_eq!(
        empty.target,
        InboundTarget::Namespace,
        "an empty selector is no selector"
    );
}

const TRAFFIC_POLICIES: &str = "\
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {name: web}
  connectTimeout: 2s
  requestTimeout: 30s
  loadBalancer: RoundRobin
  retry: {on: [5xx], attempts: 1}
  rateLimit: {requestsPerSecond: 100}
  fault: {abort: {httpStatus: 503, percent: 0.5}}
---
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-http, namespace: shop}
spec:
  targetRef: {name: web, sectionName: http}
  connectTimeout: 500ms
  hedge: {delay: 20ms}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
  - name: reads
    matches: [{method: GET}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 2s}
  - name: writes
    matches: [{method: POST}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 3s}
    retry: {codes: [409]}
  - name: gep
    matches: [{path: {value: /gep}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 4s}
    retry: {codes: [503], attempts: 4}
  - matches: [{path: {value: /plain}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 5s}
---
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-route, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}
  retry: {on: [gateway-error], attempts: 3}
  rateLimit: {requestsPerSecond: 10, burst: 20}
---
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-reads, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: reads}
  retry: {on: [unavailable], perTryTimeout: 1s}
  hedge: {delay: 50ms, maxHedges: 2}
---
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-gep, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web, sectionName: gep}
  fault: {delay: {fixedDelay: 1s}}
";

#[test]
fn a_port_policy_wins_field_by_field_over_the_service_policy() {
    use crate::traffic::{
        Fault, FaultAbort, Hedge, LoadBalancer, RetryOn, RetryPolicy, DEFAULT_IDLE_TIMEOUT,
    };
    use std::time::Duration;

    let policy = policy(&[SERVICES, TRAFFIC_POLICIES].concat());
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    let web = config
        .services
        .iter()
        .find(|s| s.name == "shop/web")
        .unwrap();
    let retry = RetryPolicy {
        attempts: 1,
        on: vec![RetryOn::ServerError],
        ..RetryPolicy::default()
    };
    let fault = Fault {
        delay: None,
        abort: Some(FaultAbort {
            status: 503,
            per_100k: 500,
        }),
    };
    let service_wide = TrafficConfig {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        request_timeout: Some(Duration::from_secs(30)),
        retry: retry.clone(),
        load_balancer: LoadBalancer::RoundRobin,
        route_defaults: RoutePolicy {
            retry: Some(retry),
            rate_limit: Some(RateLimit {
                requests_per_second: 100,
                burst: 100,
            }),
            hedge: None,
            fault: Some(fault),
        },
        ..TrafficConfig::default()
    };
    let admin = &web.ports[1];
    assert_eq!(admin.port, 9000);
    assert_eq!(admin.traffic, service_wide, "only the Service's policy");
    let http = &web.ports[0];
    let mut expected = service_wide.clone();
    expected.connect_timeout = Duration::from_millis(500);
    expected.route_defaults.hedge = Some(Hedge {
        delay: Duration::from_millis(20),
        max_hedges: 1,
    });
    assert_eq!(
        http.traffic, expected,
        "the port's fields, then the Service's"
    );
    let other = config.services.iter().find(|s| s.name == "shop/web-v2");
    assert_eq!(
        other.unwrap().ports[0].traffic,
        TrafficConfig::default(),
        "no policy: every default"
    );
}

#[test]
fn a_rule_takes_its_policy_then_the_route_policy_then_its_own_retry() {
    use crate::traffic::{Fault, FaultDelay, Hedge, RetryOn, RetryPolicy, DEFAULT_RETRY_ATTEMPTS};
    use std::time::Duration;

    let policy = policy(&[SERVICES, TRAFFIC_POLICIES].concat());
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    let web = config
        .services
        .iter()
        .find(|s| s.name == "shop/web")
        .unwrap();
    let rule = |index: usize| {
        let route = web.ports[0].routes.iter().find(|r| r.rule == index);
        route.unwrap().policy.clone()
    };
    let secs = Duration::from_secs;
    let route_retry = RetryPolicy {
        attempts: 3,
        on: vec![RetryOn::GatewayError],
        ..RetryPolicy::default()
    };
    let route_limit = Some(RateLimit {
        requests_per_second: 10,
        burst: 20,
    });
    let rows = [
        (
            "reads: its own policy's retry (its perTryTimeout wins over backendRequest) and \
             hedge, the route's rate limit",
            rule(0),
            RoutePolicy {
                retry: Some(RetryPolicy {
                    attempts: DEFAULT_RETRY_ATTEMPTS,
                    on: vec![RetryOn::Grpc(14)],
                    per_try_timeout: Some(secs(1)),
                    ..RetryPolicy::default()
                }),
                rate_limit: route_limit,
                hedge: Some(Hedge {
                    delay: Duration::from_millis(50),
                    max_hedges: 2,
                }),
                fault: None,
            },
        ),
        (
            "writes: the route policy's retry beats the rule's GEP-1731 retry; backendRequest \
             bounds each try",
            rule(1),
            RoutePolicy {
                retry: Some(RetryPolicy {
                    per_try_timeout: Some(secs(3)),
                    ..route_retry.clone()
                }),
                rate_limit: route_limit,
                hedge: None,
                fault: None,
            },
        ),
        (
            "gep: its own policy sets only a fault; retry from the route policy",
            rule(2),
            RoutePolicy {
                retry: Some(RetryPolicy {
                    per_try_timeout: Some(secs(4)),
                    ..route_retry.clone()
                }),
                rate_limit: route_limit,
                hedge: None,
                fault: Some(Fault {
                    delay: Some(FaultDelay {
                        delay: secs(1),
                        per_100k: 100_000,
                    }),
                    abort: None,
                }),
            },
        ),
        (
            "unnamed rule: the route policy",
            rule(3),
            RoutePolicy {
                retry: Some(RetryPolicy {
                    per_try_timeout: Some(secs(5)),
                    ..route_retry
                }),
                rate_limit: route_limit,
                hedge: None,
                fault: None,
            },
        ),
    ];
    for (what, got, expected) in rows {
        assert_eq!(got, expected, "{what}");
    }
}

#[test]
fn without_traffic_policies_a_rule_keeps_its_gateway_retry_or_leaves_the_service_defaults() {
    use crate::traffic::{RetryOn, RetryPolicy};
    use std::time::Duration;

    let routes = TRAFFIC_POLICIES
        .split("---\n")
        .filter(|doc| doc.contains("\nkind: HTTPRoute\n"))
        .collect::<String>();
    let policy = policy(&[SERVICES, &routes].concat());
    let config = proxy_config(&policy, &me("shop", "client"), &[], TD);
    let web = config
        .services
        .iter()
        .find(|s| s.name == "shop/web")
        .unwrap();
    let mut policies: Vec<(usize, RoutePolicy)> = web.ports[0]
        .routes
        .iter()
        .map(|r| (r.rule, r.policy.clone()))
        .collect();
    policies.sort_by_key(|(rule, _)| *rule);
    let gateway = |code: u16, attempts: u32, per_try: u64| RoutePolicy {
        retry: Some(RetryPolicy {
            attempts,
            on: vec![RetryOn::Status(code)],
            per_try_timeout: Some(Duration::from_secs(per_try)),
            ..RetryPolicy::default()
        }),
        ..RoutePolicy::default()
    };
    let expected = [
        (0, RoutePolicy::default()),
        (1, gateway(409, 2, 3)),
        (2, gateway(503, 4, 4)),
        (3, RoutePolicy::default()),
    ];
    assert_eq!(policies, expected, "None: the proxy applies route_defaults");
}

#[test]
fn the_inbound_rate_limit_is_the_strictest_of_the_policies_that_apply() {
    let limits = "\
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: all, namespace: shop}
spec:
  rateLimit: {requestsPerSecond: 100, burst: 500}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web-a, namespace: shop}
spec:
  targetRef: {name: web-a}
  rateLimit: {requestsPerSecond: 100, burst: 10}
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web-a-loose, namespace: shop}
spec:
  targetRef: {name: web-a}
  rateLimit: {requestsPerSecond: 1000}
";
    let policy = policy(&[SERVICES, limits].concat());
    let limit = |requests_per_second, burst| {
        Some(RateLimit {
            requests_per_second,
            burst,
        })
    };
    let rows = [
        (me("shop", "web-a"), limit(100, 10)),
        (me("shop", "someone"), limit(100, 500)),
        (me("data", "db-0"), None),
    ];
    for (workload, expected) in rows {
        let config = proxy_config(&policy, &workload, &[], TD);
        assert_eq!(config.inbound_rate_limit, expected, "{workload}");
    }
}

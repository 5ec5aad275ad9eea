//! `load` as a whole: what the validated policy holds, defaults, problems across files, and
//! pathological input. Single-problem cases live in `api/tests/broken/`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::config::{AppProtocol, Backend, PathMatch, StringMatch};
use crate::policy::{Endpoint, InboundTarget, TrafficSettings, TrafficTarget, Transport};

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}

fn problems(list: &[(&str, &str)]) -> Vec<String> {
    match load(&files(list)) {
        Ok(loaded) => panic!("expected errors, loaded: {:?}", loaded.warnings),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn loaded(list: &[(&str, &str)]) -> Loaded {
    load(&files(list)).unwrap_or_else(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        panic!("unexpected problems:\n{}", lines.join("\n"))
    })
}

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, fd00::10]
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: kubernetes.io/h2c}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  ports:
  - {port: 8080}
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
  targetRef: {kind: Pod, name: web-b}
- addresses: [10.0.0.7]
  targetRef: {kind: Pod, name: web-c, namespace: shop}
ports:
- {name: http, port: 8080}
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-a, namespace: shop}
spec:
  addresses: [10.0.0.5]
---
apiVersion: skiff.dev/v1alpha1
kind: Workload
metadata: {name: web-c, namespace: shop}
spec:
  serviceAccount: web
";

#[test]
fn services_hold_vips_ports_and_endpoints_with_their_workloads() {
    let policy = loaded(&[("services.yaml", SERVICES)]).policy;
    let web = policy.service(&ObjectKey::new("shop", "web")).unwrap();
    let ips: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()];
    assert_eq!(web.vips, ips);
    let http = web.port(80).unwrap();
    assert_eq!(http.protocol, Some(AppProtocol::Http2));
    assert_eq!(http.transport, Transport::Tcp);
    let endpoint = |addr: &str, ready: bool, workload: Option<&str>| Endpoint {
        addr: addr.parse::<SocketAddr>().unwrap(),
        ready,
        workload: workload.map(|name| ObjectKey::new("shop", name)),
    };
    assert_eq!(
        http.endpoints,
        vec![
            endpoint("10.0.0.5:8080", true, Some("web-a")),
            // web-b is a Pod without a Workload: no identity known.
            endpoint("10.0.0.6:8080", false, None),
            endpoint("10.0.0.7:8080", true, Some("web-c")),
        ]
    );
    assert_eq!(web.port(53).unwrap().transport, Transport::Udp);
    assert!(web.port(53).unwrap().endpoints.is_empty());
    let workload = policy.workload(&ObjectKey::new("shop", "web-a")).unwrap();
    assert_eq!(workload.service_account, "default", "documented default");
    assert_eq!(
        policy
            .workload(&ObjectKey::new("shop", "web-c"))
            .unwrap()
            .service_account,
        "web"
    );
}

#[test]
fn routes_are_parsed_with_defaults_and_normalised_matches() {
    let route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop, creationTimestamp: \"2024-01-01T00:00:00Z\"}
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: web, sectionName: http}
  rules:
  - matches:
    - headers:
      - {name: X-B, value: \"2\"}
      - {name: x-a, type: RegularExpression, value: \"v[0-9]\"}
    - path: {type: Exact, value: /exact}
    backendRefs:
    - {name: web-v2, port: 8080}
    - {name: web, port: 80, weight: 0}
    timeouts: {request: 10s, backendRequest: 0s}
  - backendRefs: [{name: web, port: 80}]
";
    let policy = loaded(&[("s.yaml", SERVICES), ("r.yaml", route)]).policy;
    let route = &policy.routes[0];
    assert_eq!(
        route.parents[0].port,
        Some(80),
        "sectionName names the port"
    );
    assert_eq!(route.created.map(|t| t.seconds), Some(1_704_067_200));
    let rule = &route.rules[0];
    let first = &rule.matches[0];
    assert_eq!(first.path, Some(PathMatch::PathPrefix("/".to_string())));
    let names: Vec<&str> = first.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["x-a", "x-b"], "lower-cased and sorted");
    assert_eq!(
        first.headers[0].value,
        StringMatch::RegularExpression("v[0-9]".to_string())
    );
    assert_eq!(
        rule.matches[1].path,
        Some(PathMatch::Exact("/exact".to_string()))
    );
    assert_eq!(
        rule.backends,
        vec![
            Backend {
                service: "shop/web-v2".to_string(),
                port: 8080,
                weight: 1
            },
            Backend {
                service: "shop/web".to_string(),
                port: 80,
                weight: 0
            },
        ]
    );
    assert_eq!(rule.timeout, Some(Duration::from_secs(10)));
    assert_eq!(rule.backend_timeout, None, "0s disables the timeout");
    let default_rule = &route.rules[1];
    assert_eq!(default_rule.index, 1);
    assert_eq!(
        default_rule.matches[0].path,
        Some(PathMatch::PathPrefix("/".to_string()))
    );
}

#[test]
fn skiff_policies_get_their_defaults() {
    let kinds = "\
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRef: {name: web}
---
apiVersion: skiff.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: web-http, namespace: shop}
spec:
  targetRef: {name: web, port: 80}
  connectTimeout: 250ms
---
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: web-a, namespace: shop}
spec:
  targetRef: {name: web-a}
";
    let policy = loaded(&[("s.yaml", SERVICES), ("p.yaml", kinds)]).policy;
    let [whole, one_port] = policy.traffic_policies.as_slice() else {
        panic!("{:?}", policy.traffic_policies)
    };
    let web = ObjectKey::new("shop", "web");
    assert_eq!(
        (&whole.target, &whole.settings),
        (
            &TrafficTarget::Service {
                service: web.clone(),
                port: None
            },
            &TrafficSettings::default()
        ),
        "nothing set: the view fills in the defaults"
    );
    assert_eq!(
        one_port.target,
        TrafficTarget::Service {
            service: web,
            port: Some(80)
        }
    );
    assert_eq!(
        one_port.settings.connect_timeout,
        Some(Duration::from_millis(250))
    );
    let inbound = &policy.inbound_policies[0];
    assert_eq!(
        inbound.mode, None,
        "unset: inherited, PERMISSIVE in the end"
    );
    assert_eq!(
        inbound.target,
        InboundTarget::Workload(ObjectKey::new("shop", "web-a"))
    );
    assert!(inbound.port_modes.is_empty() && inbound.rules.is_empty());
}

#[test]
fn inbound_policies_hold_checked_rules_and_report_every_bad_value() {
    let good = "\
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: lock, namespace: shop}
spec:
  mtls:
    mode: STRICT
    ports: [{port: 9090, mode: PERMISSIVE}, {port: 8081, mode: PERMISSIVE}]
  rules:
  - action: DENY
    from: {identities: [spiffe://cluster.local/ns/shop/sa/old]}
    to: {ports: [8080], methods: [DELETE], paths: [{type: PathPrefix, value: /admin/}]}
  - {action: ALLOW, from: {}, to: {}}
";
    let policy = loaded(&[("s.yaml", SERVICES), ("p.yaml", good)]).policy;
    let lock = &policy.inbound_policies[0];
    assert_eq!(
        lock.target,
        InboundTarget::Namespace,
        "no targetRef: the whole namespace"
    );
    assert_eq!(lock.mode, Some(crate::policy::MtlsMode::Strict));
    let ports: Vec<u16> = lock.port_modes.iter().map(|p| p.port).collect();
    assert_eq!(ports, [8081, 9090], "sorted");
    assert_eq!(lock.rules.len(), 2);
    assert_eq!(
        lock.rules[0].identities[0].to_string(),
        "spiffe://cluster.local/ns/shop/sa/old"
    );
    assert_eq!(lock.rules[1].index, 1);

    let bad = "\
apiVersion: skiff.dev/v1alpha1
kind: InboundPolicy
metadata: {name: lock, namespace: shop}
spec:
  mtls:
    ports: [{port: 8080, mode: STRICT}, {port: 8080, mode: STRICT}, {port: 0, mode: STRICT}]
  rules:
  - action: DENY
    from:
      identities: [spiffe://cluster.local/ns/shop/sa/ok, spiffe://cluster.local/shop/old]
      namespaces: [Shop]
    to:
      ports: [70000]
      methods: [get]
      paths: [{type: Exact, value: /a/../admin}]
";
    let found = problems(&[("s.yaml", SERVICES), ("p.yaml", bad)]);
    let expected = [
        "p.yaml:6 spec.mtls.ports[1].port: port 8080 is already listed at spec.mtls.ports[0]",
        "p.yaml:6 spec.mtls.ports[2].port: 0 is not a port",
        "p.yaml:10 spec.rules[0].from.identities[1]: \"spiffe://cluster.local/shop/old\" is \
         not a workload SPIFFE ID",
        "p.yaml:11 spec.rules[0].from.namespaces[0]: \"Shop\" is not a valid name",
        "p.yaml:13 spec.rules[0].to.ports[0]: 70000 is not a port",
        "p.yaml:14 spec.rules[0].to.methods[0]: \"get\" is not a method",
        "p.yaml:15 spec.rules[0].to.paths[0].value: \"/a/../admin\" has a \".\" or \"..\" \
         segment",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (problem, start) in found.iter().zip(expected) {
        assert!(
            problem.starts_with(start),
            "{problem}\nshould start with\n{start}"
        );
    }
}

#[test]
fn inbound_policies_of_one_target_add_up_unless_their_modes_differ() {
    let policy = |name: &str, target: &str, mtls: &str| {
        format!(
            "apiVersion: skiff.dev/v1alpha1\nkind: InboundPolicy\nmetadata: {{name: {name}, \
             namespace: shop}}\nspec:\n{target}{mtls}  rules: [{{action: ALLOW}}]\n---\n"
        )
    };
    let web_a = "  targetRef: {name: web-a}\n";
    let strict = "  mtls: {mode: STRICT}\n";
    let permissive = "  mtls: {mode: PERMISSIVE}\n";
    let port = |mode: &str| format!("  mtls: {{ports: [{{port: 8080, mode: {mode}}}]}}\n");
    // Agreeing or silent policies of one target, and differing ones of different targets.
    let fine = [
        policy("a", web_a, strict),
        policy("b", web_a, strict),
        policy("c", web_a, ""),
        policy("d", "", permissive),
        policy("e", "", ""),
        policy("f", web_a, &port("PERMISSIVE")),
        policy("g", "", &port("STRICT")),
    ]
    .concat();
    let loaded = loaded(&[("s.yaml", SERVICES), ("p.yaml", &fine)]);
    assert_eq!(loaded.policy.inbound_policies.len(), 7);

    let rows = [
        (
            [policy("a", web_a, strict), policy("b", web_a, permissive)].concat(),
            "p.yaml:14 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for Workload \
             shop/web-a by InboundPolicy shop/a (p.yaml:6)",
        ),
        (
            [policy("a", "", strict), policy("b", "", permissive)].concat(),
            "p.yaml:12 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for every workload \
             of namespace shop by InboundPolicy shop/a (p.yaml:5)",
        ),
        (
            [
                policy("a", web_a, &port("STRICT")),
                policy("b", web_a, &port("PERMISSIVE")),
            ]
            .concat(),
            "p.yaml:14 spec.mtls.ports[0].mode: PERMISSIVE conflicts with STRICT set for port \
             8080 of Workload shop/web-a by InboundPolicy shop/a (p.yaml:6)",
        ),
    ];
    for (yaml, expected) in rows {
        let found = problems(&[("s.yaml", SERVICES), ("p.yaml", &yaml)]);
        assert!(found[0].starts_with(expected), "{found:#?}\n{expected}");
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}

#[test]
fn inbound_policies_that_select_one_workload_must_agree_on_its_modes() {
    let workload = |name: &str, labels: &str| {
        format!(
            "apiVersion: skiff.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, \
             namespace: shop, labels: {{{labels}}}}}\nspec: {{}}\n---\n"
        )
    };
    let workloads = [
        workload("web-1", "app: web, tier: front"), // w.yaml:3
        workload("web-2", "app: web"),              // w.yaml:8
        workload("web-3", "app: web"),
        workload("db", "app: db"),
    ]
    .concat();
    // Every document is 7 lines and a separator: the second one's mtls is on line 14.
    let policy = |name: &str, attach: &str, mtls: &str| {
        format!(
            "apiVersion: skiff.dev/v1alpha1\nkind: InboundPolicy\nmetadata: {{name: {name}, \
             namespace: shop}}\nspec:\n  {attach}\n  mtls: {mtls}\n  rules: [{{action: ALLOW}}]\
             \n---\n"
        )
    };
    let web_1 = "targetRef: {name: web-1}";
    let web_2 = "targetRef: {name: web-2}";
    let app_web = "selector: {matchLabels: {app: web}}";
    let app_db = "selector: {matchLabels: {app: db}}";
    let front = "selector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}";
    let any_app = "selector: {matchExpressions: [{key: app, operator: Exists}]}";
    let everyone = "selector: {}";
    let namespace = "selector: null";
    let strict = "{mode: STRICT}";
    let permissive = "{mode: PERMISSIVE}";
    let silent = "{}";
    let port = |mode: &str| format!("{{ports: [{{port: 8080, mode: {mode}}}]}}");

    // Different modes on workloads no two of them share, or in different groups; the same
    // mode where they meet.
    let fine = [
        [policy("a", app_db, strict), policy("b", front, permissive)].concat(),
        [
            policy("a", app_web, permissive),
            policy("b", namespace, strict),
        ]
        .concat(),
        [
            policy("a", app_web, strict),
            policy("b", web_2, strict),
            policy("c", front, silent),
            policy("d", any_app, &port("PERMISSIVE")),
        ]
        .concat(),
        [
            policy("a", app_web, strict),
            policy("b", web_2, &port("STRICT")),
        ]
        .concat(),
    ];
    for yaml in fine {
        let loaded = loaded(&[("w.yaml", &workloads), ("p.yaml", &yaml)]);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    let agree = "and policies that apply to one workload must agree on its mode";
    let rows = [
        (
            [policy("a", web_1, strict), policy("b", app_web, permissive)].concat(),
            format!(
                "p.yaml:14 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for Workload \
                 shop/web-1 by InboundPolicy shop/a (p.yaml:6); both apply to that workload \
                 (w.yaml:3), {agree}"
            ),
        ),
        (
            // The later one in the file is reported, whichever attaches by name.
            [policy("a", app_web, strict), policy("b", web_2, permissive)].concat(),
            format!(
                "p.yaml:14 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for Workload \
                 shop/web-2 by InboundPolicy shop/a (p.yaml:6); both apply to that workload \
                 (w.yaml:8), {agree}"
            ),
        ),
        (
            [
                policy("a", app_web, &port("STRICT")),
                policy("b", front, &port("PERMISSIVE")),
            ]
            .concat(),
            format!(
                "p.yaml:14 spec.mtls.ports[0].mode: PERMISSIVE conflicts with STRICT set for \
                 port 8080 of Workload shop/web-1 by InboundPolicy shop/a (p.yaml:6); both \
                 apply to that workload (w.yaml:3), {agree}"
            ),
        ),
        (
            // Once per pair of policies, however many workloads they share.
            [
                policy("a", app_web, strict),
                policy("b", any_app, permissive),
            ]
            .concat(),
            format!(
                "p.yaml:14 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for Workload \
                 shop/web-1 by InboundPolicy shop/a (p.yaml:6); both apply to that workload \
                 (w.yaml:3) and 2 more, {agree}"
            ),
        ),
        (
            // An empty selector is namespace-wide, like no selector.
            [
                policy("a", everyone, strict),
                policy("b", namespace, permissive),
            ]
            .concat(),
            "p.yaml:14 spec.mtls.mode: PERMISSIVE conflicts with STRICT set for every workload \
             of namespace shop by InboundPolicy shop/a (p.yaml:6)"
                .to_string(),
        ),
    ];
    for (yaml, expected) in rows {
        let found = problems(&[("w.yaml", &workloads), ("p.yaml", &yaml)]);
        assert!(found[0].starts_with(&expected), "{found:#?}\n{expected}");
        assert_eq!(found.len(), 1, "{found:#?}");
    }
}

#[test]
fn every_problem_in_every_file_is_reported_at_once() {
    let a = "\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80, appProtocol: carrier-pigeon}]
---
apiVersion: v1
kind: Sevrice
metadata: {name: x}
";
    let b = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: api}]
  rules:
  - backendRefs:
    - {name: web, port: 80, weight: -5}
    - {name: db, port: 5432}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80}]
";
    let found = problems(&[("a.yaml", a), ("b.yaml", b)]);
    let expected = [
        "a.yaml:6 spec.ports[0].appProtocol: unknown appProtocol \"carrier-pigeon\"",
        "a.yaml:9 kind: kind \"Sevrice\" is not supported",
        "b.yaml:5 spec.parentRefs[0].name: Service shop/api does not exist",
        "b.yaml:8 spec.rules[0].backendRefs[0].weight: must be ≥ 0",
        "b.yaml:9 spec.rules[0].backendRefs[1].name: Service shop/db does not exist",
        "b.yaml:13 metadata.name: duplicate Service shop/web: already defined at a.yaml:3",
    ];
    for fragment in expected {
        assert!(
            found.iter().any(|p| p.starts_with(fragment)),
            "missing {fragment:?} in:\n{}",
            found.join("\n")
        );
    }
    // The route to the invalid Service web is not blamed for it.
    assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
}

#[test]
fn two_services_cannot_share_a_vip_and_port() {
    let other = "\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: other}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: a, port: 81}, {name: b, port: 80}]
";
    let found = problems(&[("s.yaml", SERVICES), ("o.yaml", other)]);
    assert_eq!(
        found,
        [
            "o.yaml:6 spec.ports[1].port: 10.96.0.10:80 is also the address of Service shop/web \
          (s.yaml:8); two Services cannot share a VIP and port"
        ]
    );
}

#[test]
fn warnings_do_not_stop_the_policy() {
    let route = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: ingress}, {group: \"\", kind: Service, name: web}]
  hostnames: [web.example.com]
  rules:
  - backendRefs: [{name: web, port: 80}]
";
    let loaded = loaded(&[("s.yaml", SERVICES), ("r.yaml", route)]);
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("r.yaml:5 spec.parentRefs[0]: warning: parentRefs to a Gateway")
    );
    assert!(warnings[1].starts_with("r.yaml:6 spec.hostnames: warning: hostnames are ignored"));
    assert_eq!(loaded.policy.routes[0].parents.len(), 1);
}

#[test]
fn an_empty_set_of_files_is_an_empty_policy() {
    let loaded = loaded(&[]);
    assert_eq!(loaded.policy, Policy::default());
    assert!(loaded.warnings.is_empty());
}

/// Pathological input is refused (or accepted) and the test finishes; no timing is asserted.
mod pathological {
    use super::*;

    fn refused_with(text: &str, fragment: &str) {
        let found = problems(&[("evil.yaml", text)]);
        assert!(
            found.iter().any(|p| p.contains(fragment)),
            "{fragment:?} not in {found:?}"
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for level in 1..30 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("  a{level}: &a{level} [{refs}]\n"));
        }
        refused_with(&bomb, "alias");
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_refused() {
        let flow = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\nspec: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        refused_with(&flow, "nesting");
        let mut block = String::from("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n");
        block.push_str(&"- ".repeat(10_000));
        block.push_str("x\n");
        refused_with(&block, "nesting");
        let mut maps = String::from("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: ");
        maps.push_str(&"{a: ".repeat(10_000));
        maps.push_str(&"}".repeat(10_000));
        refused_with(&maps, "nesting");
    }

    #[test]
    fn files_over_four_mebibytes_are_refused_before_parsing() {
        let text = format!("# {}\n", "x".repeat(crate::MAX_FILE_BYTES));
        refused_with(&text, "the limit is 4194304");
    }

    #[test]
    fn a_four_mebibyte_file_is_read_or_refused_with_a_reason() {
        // A big but plausible file: one EndpointSlice with a huge endpoint list.
        let mut text = String::from(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big\n  \
             labels: {kubernetes.io/service-name: big}\naddressType: IPv4\nendpoints:\n",
        );
        let mut n = 0u32;
        while text.len() < crate::MAX_FILE_BYTES - 64 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
            text.push_str(&format!("- addresses: [{ip}]\n"));
            n += 1;
        }
        assert!(text.len() <= crate::MAX_FILE_BYTES);
        match load(&files(&[("big.yaml", &text)])) {
            Ok(loaded) => assert!(loaded.policy.services.is_empty()),
            Err(problems) => assert!(
                problems.iter().all(|p| p.message.contains("nodes")
                    || p.message.contains("budget")
                    || p.message.contains("does not exist")),
                "{problems:?}"
            ),
        }
    }

    #[test]
    fn many_documents_are_refused() {
        let text = "---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n".repeat(2_000);
        refused_with(&text, "documents");
    }
}

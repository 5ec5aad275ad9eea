//! Reading YAML documents into resources: dispatch, positions of errors, budgets.

use super::*;

const SERVICE_AND_SLICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: shop
  managedFields: []
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
    appProtocol: http
status:
  loadBalancer: {}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: echo
addressType: IPv4
endpoints:
- addresses: [\"10.0.0.5\"]
  conditions: {ready: true}
ports:
- name: http
  port: 8080
";

#[test]
fn parses_a_pasted_service_and_slice() {
    let resources = parse_documents("svc.yaml", SERVICE_AND_SLICE).unwrap();
    assert_eq!(resources.len(), 2);
    let Resource::Service(service) = &resources[0] else {
        panic!("not a service")
    };
    assert_eq!(service.metadata.namespace, "shop");
    assert_eq!(service.spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(service.spec.ports[0].app_protocol.as_deref(), Some("http"));
    let Resource::EndpointSlice(slice) = &resources[1] else {
        panic!("not a slice")
    };
    assert_eq!(slice.service_name(), Some("echo"));
    assert_eq!(slice.ports[0].port, Some(8080));
}

#[test]
fn errors_name_the_file_and_the_line_in_the_file() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {}\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec:\n  ports:\n  - port: notanumber\n";
    let errors = parse_documents("bad.yaml", text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].file, "bad.yaml");
    assert_eq!(errors[0].line, 11, "{errors:?}");
}

#[test]
fn unsupported_kinds_and_missing_type_are_reported_together() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Service\n";
    let errors = parse_documents("x.yaml", text).unwrap_err();
    assert_eq!(errors.len(), 2);
    assert!(errors[0].message.contains("not supported"), "{}", errors[0]);
    assert_eq!(errors[1].line, 5);
    assert!(errors[1].message.contains("apiVersion"), "{}", errors[1]);
}

#[test]
fn empty_documents_and_comments_are_skipped() {
    assert_eq!(
        parse_documents("e.yaml", "---\n# nothing\n---\n"),
        Ok(vec![])
    );
}

#[test]
fn alias_bombs_and_deep_nesting_are_refused() {
    let mut bomb = String::from("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..12 {
        let previous = level - 1;
        let refs = vec![format!("*a{previous}"); 9].join(", ");
        bomb.push_str(&format!("  x{level}: &a{level} [{refs}]\n"));
    }
    let errors = parse_documents("bomb.yaml", &bomb).unwrap_err();
    assert!(
        errors[0].message.contains("budget"),
        "9^11 expanded nodes must be refused: {errors:?}"
    );

    let deep = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\nspec: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let errors = parse_documents("deep.yaml", &deep).unwrap_err();
    assert_eq!(errors[0].file, "deep.yaml");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let text = "a".repeat(MAX_FILE_BYTES + 1);
    let errors = parse_documents("big.yaml", &text).unwrap_err();
    assert!(errors[0].message.contains("limit"));
}

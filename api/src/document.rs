//! YAML text → typed resources. Multi-document files are allowed; each document is
//! dispatched on its `apiVersion` and `kind`.

use serde::Deserialize;

use crate::k8s::{EndpointSlice, Service};

/// A resource Skiff understands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Service(Service),
    EndpointSlice(EndpointSlice),
}

/// Why a file could not be read as policy. Always names the file and, where the YAML parser
/// knows it, the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct DocumentError {
    pub file: String,
    /// 1-based; 0 when the parser could not say.
    pub line: u64,
    pub message: String,
}

/// Only the two fields that decide how to read the rest of the document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    api_version: Option<String>,
    kind: Option<String>,
}

/// The largest policy file Skiff will read; larger input is refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// Parses every document in `text` (the content of `file`, used in errors). Empty documents
/// (a lone `---`) are skipped. Returns every problem, not just the first.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<Resource>, Vec<DocumentError>> {
    let error = |line: u64, message: String| DocumentError {
        file: file.to_string(),
        line,
        message,
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![error(
            0,
            format!(
                "file is {} bytes; the limit is {MAX_FILE_BYTES}",
                text.len()
            ),
        )]);
    }
    let documents = split_documents(text);
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (first_line, document) in documents {
        let yaml_error = |e: serde_saphyr::Error| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let line = if line == 0 {
                first_line
            } else {
                first_line + line - 1
            };
            error(line, first_line_of(&e.to_string()))
        };
        let type_meta: Option<TypeMeta> = match serde_saphyr::from_str(document) {
            Ok(t) => t,
            Err(e) => {
                errors.push(yaml_error(e));
                continue;
            }
        };
        let Some(type_meta) = type_meta else { continue };
        let (api_version, kind) = match (type_meta.api_version, type_meta.kind) {
            (Some(a), Some(k)) => (a, k),
            (None, _) => {
                errors.push(error(first_line, "apiVersion: missing".to_string()));
                continue;
            }
            (_, None) => {
                errors.push(error(first_line, "kind: missing".to_string()));
                continue;
            }
        };
        let parsed = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => serde_saphyr::from_str(document).map(Resource::Service),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                serde_saphyr::from_str(document).map(Resource::EndpointSlice)
            }
            _ => {
                errors.push(error(
                    first_line,
                    format!(
                        "kind: {api_version} {kind} is not supported \
                         (supported: v1 Service, discovery.k8s.io/v1 EndpointSlice)"
                    ),
                ));
                continue;
            }
        };
        match parsed {
            Ok(resource) => resources.push(resource),
            Err(e) => errors.push(yaml_error(e)),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

/// Splits a YAML stream on `---` lines, returning each document with its 1-based first line,
/// so that every error can name its line in the file rather than in the document.
fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            documents.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = index as u64 + 2;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents.retain(|(_, doc)| {
        doc.lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    documents
}

/// The parser's message without its source snippet, which would repeat the file.
fn first_line_of(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
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
}

//! Renders Gateway API `HTTPRoute`s (`gateway.networking.k8s.io/v1`) attached to a Service the
//! GAMMA way (`parentRefs` with `group: ""`, `kind: Service`): path and header matches, weighted
//! `backendRefs`, a `RequestHeaderModifier` and `timeouts.request`, exactly as a user would
//! write them. [`crate::Mesh::write_policy`] puts one in the policy dir, atomically.
//!
//! ```no_run
//! # use skiff_lab::{Mesh, HttpRoute, RouteMatch, RouteRule};
//! # let mesh = Mesh::new("doc");
//! # let (echo, v1, v2) = (mesh.service("echo").port(80, 8080).apply(),
//! #     mesh.service("echo-v1").port(80, 8080).apply(), mesh.service("echo-v2").port(80, 8080).apply());
//! let route = HttpRoute::new("echo")
//!     .parent(&echo)
//!     .rule(RouteRule::new().matching(RouteMatch::path_prefix("/app").header("x-canary", "true")).backend(&v2, 1))
//!     .rule(RouteRule::new().matching(RouteMatch::path_prefix("/app")).backend(&v1, 90).backend(&v2, 10));
//! mesh.write_policy(&route.file_name(), &route.render());
//! ```

use std::fmt::Write as _;

use crate::pod::NAMESPACE;
use crate::policy::Service;

/// An HTTPRoute in the test namespace.
#[derive(Clone, Debug)]
pub struct HttpRoute {
    name: String,
    /// `(service, port)`: the Services (and ports) the route attaches to.
    parents: Vec<(String, Option<u16>)>,
    rules: Vec<RouteRule>,
}

/// One rule: any of its matches selects it; it sends to its weighted backends.
#[derive(Clone, Debug, Default)]
pub struct RouteRule {
    matches: Vec<RouteMatch>,
    /// `RequestHeaderModifier.set` pairs.
    set_headers: Vec<(String, String)>,
    /// `(service, port, weight)`; the weight is signed so tests can write invalid ones.
    backends: Vec<(String, u16, i64)>,
    /// `timeouts.request`, a Gateway API duration (`500ms`, `10s`).
    timeout: Option<String>,
}

/// One match: all of its conditions must hold.
#[derive(Clone, Debug, Default)]
pub struct RouteMatch {
    path_prefix: Option<String>,
    /// `(name, value)` exact header matches.
    headers: Vec<(String, String)>,
}

impl HttpRoute {
    pub fn new(name: &str) -> Self {
        HttpRoute {
            name: name.to_string(),
            parents: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Attaches the route to `service`'s first port.
    pub fn parent(mut self, service: &Service) -> Self {
        self.parents
            .push((service.name().to_string(), Some(service.ports()[0].port)));
        self
    }

    pub fn rule(mut self, rule: RouteRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// `route-NAME.yaml`, the file it is written to by convention.
    pub fn file_name(&self) -> String {
        format!("route-{}.yaml", self.name)
    }

    /// The YAML document.
    pub fn render(&self) -> String {
        let mut y = String::new();
        let _ = write!(
            y,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  \
             name: {}\n  namespace: {NAMESPACE}\nspec:\n  parentRefs:\n",
            self.name
        );
        for (service, port) in &self.parents {
            let _ = write!(
                y,
                "  - group: \"\"\n    kind: Service\n    name: {service}\n"
            );
            if let Some(port) = port {
                let _ = writeln!(y, "    port: {port}");
            }
        }
        y.push_str("  rules:\n");
        for rule in &self.rules {
            rule.render(&mut y);
        }
        y
    }
}

impl RouteRule {
    pub fn new() -> Self {
        RouteRule::default()
    }

    /// Adds a match (a rule without any matches takes every request).
    pub fn matching(mut self, m: RouteMatch) -> Self {
        self.matches.push(m);
        self
    }

    /// Adds a backendRef to `service`'s first port with `weight`.
    pub fn backend(self, service: &Service, weight: i64) -> Self {
        let port = service.ports()[0].port;
        self.backend_ref(service.name(), port, weight)
    }

    /// Adds a backendRef by name and port (to a Service the harness did not declare).
    pub fn backend_ref(mut self, service: &str, port: u16, weight: i64) -> Self {
        self.backends.push((service.to_string(), port, weight));
        self
    }

    /// A `RequestHeaderModifier` that sets `name: value`.
    pub fn set_request_header(mut self, name: &str, value: &str) -> Self {
        self.set_headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `timeouts.request`.
    pub fn timeout(mut self, duration: &str) -> Self {
        self.timeout = Some(duration.to_string());
        self
    }

    fn render(&self, y: &mut String) {
        let mut first = true;
        let mut key = |y: &mut String, text: &str| {
            y.push_str(if first { "  - " } else { "    " });
            first = false;
            y.push_str(text);
        };
        if !self.matches.is_empty() {
            key(y, "matches:\n");
            for m in &self.matches {
                m.render(y);
            }
        }
        if !self.set_headers.is_empty() {
            key(
                y,
                "filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        \
                 set:\n",
            );
            for (name, value) in &self.set_headers {
                let _ = write!(
                    y,
                    "        - name: {}\n          value: {}\n",
                    quote(name),
                    quote(value)
                );
            }
        }
        key(y, "backendRefs:\n");
        for (service, port, weight) in &self.backends {
            let _ = write!(
                y,
                "    - group: \"\"\n      kind: Service\n      name: {service}\n      \
                 port: {port}\n      weight: {weight}\n"
            );
        }
        if let Some(timeout) = &self.timeout {
            let _ = write!(y, "    timeouts:\n      request: {}\n", quote(timeout));
        }
    }
}

impl RouteMatch {
    /// Paths under `prefix` (`PathPrefix`).
    pub fn path_prefix(prefix: &str) -> Self {
        RouteMatch {
            path_prefix: Some(prefix.to_string()),
            headers: Vec::new(),
        }
    }

    /// Also requires header `name` to equal `value` (`Exact`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn render(&self, y: &mut String) {
        let mut first = true;
        let mut key = |y: &mut String| {
            y.push_str(if first { "    - " } else { "      " });
            first = false;
        };
        if let Some(prefix) = &self.path_prefix {
            key(y);
            let _ = write!(
                y,
                "path:\n        type: PathPrefix\n        value: {}\n",
                quote(prefix)
            );
        }
        if !self.headers.is_empty() {
            key(y);
            y.push_str("headers:\n");
            for (name, value) in &self.headers {
                let _ = write!(
                    y,
                    "      - type: Exact\n        name: {}\n        value: {}\n",
                    quote(name),
                    quote(value)
                );
            }
        }
        if first {
            y.push_str("    - {}\n");
        }
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML), so `"true"` stays a string.
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The 1-based number of the first line of `text` containing `needle`; panics when none does.
/// Tests use it to predict the line a validation problem names.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .unwrap_or_else(|| panic!("no line contains {needle:?} in:\n{text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_matches_filters_weights_and_timeouts() {
        let route = HttpRoute {
            name: "echo".into(),
            parents: vec![("echo".into(), Some(80))],
            rules: Vec::new(),
        }
        .rule(
            RouteRule::new()
                .matching(RouteMatch::path_prefix("/app").header("x-canary", "true"))
                .set_request_header("x-route", "canary")
                .backend_ref("echo-v2", 80, 1)
                .timeout("10s"),
        )
        .rule(RouteRule::new().backend_ref("echo-v1", 80, -1));
        let expected = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo
  namespace: default
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: "/app"
      headers:
      - type: Exact
        name: "x-canary"
        value: "true"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: "x-route"
          value: "canary"
    backendRefs:
    - group: ""
      kind: Service
      name: echo-v2
      port: 80
      weight: 1
    timeouts:
      request: "10s"
  - backendRefs:
    - group: ""
      kind: Service
      name: echo-v1
      port: 80
      weight: -1
"#;
        assert_eq!(route.render(), expected);
        assert_eq!(line_of(expected, "weight: -1"), 40);
    }
}

//! The inbound authorization decision: after the inbound side has terminated mTLS (or seen a
//! plaintext client) and, for HTTP, normalised the path ([`crate::http::path`]), it asks
//! [`InboundAuthz`] whether the connection or request may reach the app. A pure function of the
//! configuration snapshot.
//!
//! Evaluation order, from [`InboundSecurity`]: a matching DENY rule denies; otherwise, when any
//! ALLOW rule exists, one must match; with no ALLOW rule everything is allowed. Within a rule,
//! each non-empty condition must hold, and a condition holds when any of its values matches:
//! - identities: the client's SPIFFE ID, exactly; namespaces: the namespace in that ID. A
//!   plaintext client has no identity and matches no rule with either condition;
//! - ports: the destination port on this workload;
//! - methods: compared case-insensitively; paths: exact, or a prefix of whole segments as
//!   HTTPRoute `PathPrefix` (a trailing slash on the prefix is ignored, `/` matches every
//!   path). Both are HTTP-only: on a TCP connection an ALLOW rule with them never matches and
//!   a DENY rule with them matches when its other conditions do (fail closed, as Istio does).

use std::sync::Arc;

use skiff_api::config::{
    AuthorizationAction, AuthorizationPath, AuthorizationRule, InboundSecurity, MtlsMode,
};
use skiff_api::identity::SpiffeId;

use crate::http::path;

/// The inbound security of one workload, compiled once per configuration snapshot.
#[derive(Clone, Debug, Default)]
pub struct InboundAuthz {
    /// Mode of every port not in `port_modes`.
    mode: MtlsMode,
    /// Per-port exceptions to `mode`; a handful at most, so a list beats a map.
    port_modes: Vec<(u16, MtlsMode)>,
    /// DENY rules in configuration order: the first that matches names the denial.
    deny: Vec<Rule>,
    /// ALLOW rules; when there are any, a request must match one.
    allow: Vec<Rule>,
}

/// One rule, ready to match without allocating.
#[derive(Clone, Debug)]
struct Rule {
    /// `"<namespace>/<policy> rule <index>"`, shared by every denial it makes.
    name: Arc<str>,
    /// Decides how the HTTP-only conditions are judged on a TCP connection.
    action: AuthorizationAction,
    /// Exact SPIFFE IDs; empty means any client, even a plaintext one.
    identities: Vec<String>,
    /// Client namespaces; empty means any client, even a plaintext one.
    namespaces: Vec<String>,
    /// Destination ports; empty means any.
    ports: Vec<u16>,
    /// Upper-case methods, compared case-insensitively; empty means any. HTTP only.
    methods: Vec<String>,
    /// Path conditions over normalised paths; empty means any. HTTP only.
    paths: Vec<PathRule>,
}

/// A path condition, normalised the way request paths are.
#[derive(Clone, Debug)]
enum PathRule {
    Exact(String),
    /// Without its trailing slash: `/api/` is kept as `/api`, and `/` as the empty string,
    /// which matches every path.
    Prefix(String),
}

/// What the inbound side does with a connection or request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Denial),
}

/// Why a connection or request was denied: the DENY rule that matched, or that no ALLOW rule
/// did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The matching DENY rule's name; `None` when no ALLOW rule matched.
    rule: Option<Arc<str>>,
}

impl Denial {
    /// Value of the reason header and the access log: `"shop/web-policy rule 0"`, or
    /// `"no allow rule matched"`.
    pub fn reason(&self) -> &str {
        self.rule.as_deref().unwrap_or("no allow rule matched")
    }

    /// Bounded metric label.
    pub fn label(&self) -> &'static str {
        match self.rule {
            Some(_) => "deny-rule",
            None => "no-allow-rule",
        }
    }
}

/// What is being authorised: a whole TCP connection, or one HTTP request on one.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Connection,
    Request {
        method: &'a http::Method,
        path: &'a str,
    },
}

impl InboundAuthz {
    /// Compiles the rules. Never fails: the configuration was validated upstream. Rule paths
    /// are normalised like request paths, so `/%61dmin//` in a rule is `/admin/`.
    pub fn new(security: &InboundSecurity) -> InboundAuthz {
        let mut authz = InboundAuthz {
            mode: security.mode,
            port_modes: security
                .port_modes
                .iter()
                .map(|p| (p.port, p.mode))
                .collect(),
            deny: Vec::new(),
            allow: Vec::new(),
        };
        for rule in &security.rules {
            let compiled = Rule::new(rule);
            match rule.action {
                AuthorizationAction::Deny => authz.deny.push(compiled),
                AuthorizationAction::Allow => authz.allow.push(compiled),
            }
        }
        authz
    }

    /// Whether plaintext (a client that is not a sidecar) may connect to `port`: STRICT
    /// refuses it, PERMISSIVE accepts it.
    pub fn mode(&self, port: u16) -> MtlsMode {
        self.port_modes
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(self.mode, |(_, mode)| *mode)
    }

    /// Whether there are rules at all; without any, every decision is [`Verdict::Allow`].
    pub fn has_rules(&self) -> bool {
        !self.deny.is_empty() || !self.allow.is_empty()
    }

    /// A TCP connection on which no HTTP is seen. Call it only for connections proxied as
    /// opaque bytes: an HTTP connection is decided request by request.
    pub fn decide_connection(&self, client: Option<&SpiffeId>, port: u16) -> Verdict {
        self.decide(client, port, Subject::Connection)
    }

    /// One HTTP request; `path` is already normalised ([`path::normalize`]).
    pub fn decide_request(
        &self,
        client: Option<&SpiffeId>,
        port: u16,
        method: &http::Method,
        path: &str,
    ) -> Verdict {
        self.decide(client, port, Subject::Request { method, path })
    }

    fn decide(&self, client: Option<&SpiffeId>, port: u16, subject: Subject<'_>) -> Verdict {
        let matching = |rule: &Rule| rule.matches(client, port, subject);
        if let Some(rule) = self.deny.iter().find(|r| matching(r)) {
            return Verdict::Deny(Denial {
                rule: Some(rule.name.clone()),
            });
        }
        if self.allow.is_empty() || self.allow.iter().any(matching) {
            Verdict::Allow
        } else {
            Verdict::Deny(Denial { rule: None })
        }
    }
}

impl Rule {
    fn new(rule: &AuthorizationRule) -> Rule {
        Rule {
            name: format!("{} rule {}", rule.policy, rule.rule).into(),
            action: rule.action,
            identities: rule.identities.clone(),
            namespaces: rule.namespaces.clone(),
            ports: rule.ports.clone(),
            methods: rule
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            paths: rule
                .paths
                .iter()
                .map(|p| PathRule::new(p, rule.action))
                .collect(),
        }
    }

    /// Whether every non-empty condition holds. On a TCP connection the HTTP-only conditions
    /// cannot be judged: they fail an ALLOW rule and are skipped for a DENY rule, so a rule
    /// that denies `/admin` also denies opaque TCP from the same clients.
    fn matches(&self, client: Option<&SpiffeId>, port: u16, subject: Subject<'_>) -> bool {
        if !self.ports.is_empty() && !self.ports.contains(&port) {
            return false;
        }
        if !self.identities.is_empty()
            && !client.is_some_and(|c| self.identities.iter().any(|id| is_spiffe_id(id, c)))
        {
            return false;
        }
        if !self.namespaces.is_empty()
            && !client.is_some_and(|c| self.namespaces.contains(&c.namespace))
        {
            return false;
        }
        match subject {
            Subject::Request { method, path } => {
                (self.methods.is_empty()
                    || self
                        .methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(method.as_str())))
                    && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            }
            Subject::Connection => {
                !self.has_http_conditions() || self.action == AuthorizationAction::Deny
            }
        }
    }

    fn has_http_conditions(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty()
    }
}

impl PathRule {
    /// A path that does not normalise (validation refuses it) fails closed: in a DENY rule it
    /// matches every path, in an ALLOW rule none.
    fn new(path: &AuthorizationPath, action: AuthorizationAction) -> PathRule {
        let (AuthorizationPath::Exact(text) | AuthorizationPath::Prefix(text)) = path;
        let Ok(normal) = path::normalize(text) else {
            return match action {
                AuthorizationAction::Deny => PathRule::Prefix(String::new()),
                AuthorizationAction::Allow => PathRule::Exact(String::new()),
            };
        };
        match path {
            AuthorizationPath::Exact(_) => PathRule::Exact(normal.into_owned()),
            AuthorizationPath::Prefix(_) => {
                PathRule::Prefix(normal.trim_end_matches('/').to_string())
            }
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(exact) => path == exact,
            // `PathPrefix: /` covers every request target, `OPTIONS *` included.
            PathRule::Prefix(prefix) if prefix.is_empty() => true,
            PathRule::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        }
    }
}

/// Whether `text` is exactly `client`'s SPIFFE ID, without formatting it.
fn is_spiffe_id(text: &str, client: &SpiffeId) -> bool {
    text.strip_prefix("spiffe://")
        .and_then(|t| t.strip_prefix(client.trust_domain.as_str()))
        .and_then(|t| t.strip_prefix("/ns/"))
        .and_then(|t| t.strip_prefix(client.namespace.as_str()))
        .and_then(|t| t.strip_prefix("/sa/"))
        .is_some_and(|t| t == client.service_account)
}

#[cfg(test)]
mod tests {
    use super::*;

    use skiff_api::config::PortMode;

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const BATCH: &str = "spiffe://cluster.local/ns/jobs/sa/batch";

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    /// The rules the table refers to, by a name that says what each one does.
    fn rule(name: &str) -> AuthorizationRule {
        let (action, index) = match name.split_once('-') {
            Some(("allow", _)) => (AuthorizationAction::Allow, 0),
            Some(("deny", "all-1")) => (AuthorizationAction::Deny, 1),
            Some(("deny", _)) => (AuthorizationAction::Deny, 0),
            _ => panic!("rule {name:?} is neither allow- nor deny-"),
        };
        let mut rule = AuthorizationRule {
            policy: "shop/web-policy".to_string(),
            rule: index,
            action,
            identities: Vec::new(),
            namespaces: Vec::new(),
            ports: Vec::new(),
            methods: Vec::new(),
            paths: Vec::new(),
        };
        let exact = |p: &str| AuthorizationPath::Exact(p.to_string());
        let prefix = |p: &str| AuthorizationPath::Prefix(p.to_string());
        match name {
            "allow-all" | "deny-all" | "deny-all-1" => {}
            "allow-web" => rule.identities = strings(&[WEB]),
            "allow-we" => rule.identities = strings(&["spiffe://cluster.local/ns/shop/sa/we"]),
            "allow-web/" => rule.identities = strings(&[&format!("{WEB}/")]),
            "allow-web-elsewhere" => {
                rule.identities = strings(&["spiffe://example.org/ns/shop/sa/web"])
            }
            "allow-WEB" => rule.identities = strings(&[&WEB.to_uppercase()]),
            "allow-batch-or-web" => rule.identities = strings(&[BATCH, WEB]),
            "deny-batch" => rule.identities = strings(&[BATCH]),
            "allow-shop" => rule.namespaces = strings(&["shop"]),
            "allow-shop-or-jobs" => rule.namespaces = strings(&["shop", "jobs"]),
            "deny-jobs" => rule.namespaces = strings(&["jobs"]),
            "allow-8080" => rule.ports = vec![8080],
            "deny-9090" => rule.ports = vec![9090],
            "allow-GET" => rule.methods = strings(&["GET"]),
            "allow-get" => rule.methods = strings(&["get"]),
            "deny-DELETE" => rule.methods = strings(&["DELETE"]),
            "deny-POST-PUT" => rule.methods = strings(&["POST", "PUT"]),
            "allow-/" => rule.paths = vec![prefix("/")],
            "allow-=/healthz-or-/api" => rule.paths = vec![exact("/healthz"), prefix("/api")],
            "allow-=admin" => rule.paths = vec![exact("admin")],
            "deny-=/admin" => rule.paths = vec![exact("/admin")],
            "deny-/admin" => rule.paths = vec![prefix("/admin")],
            "deny-/admin/" => rule.paths = vec![prefix("/admin/")],
            "deny-/" => rule.paths = vec![prefix("/")],
            "deny-/a/b" => rule.paths = vec![prefix("/a/b")],
            "deny-//%61dmin/./" => rule.paths = vec![prefix("//%61dmin/./")],
            "deny-/admin;x" => rule.paths = vec![prefix("/admin;x")],
            "allow-web-GET-8080" => {
                rule.identities = strings(&[WEB]);
                rule.methods = strings(&["GET"]);
                rule.ports = vec![8080];
            }
            "deny-jobs-/admin" => {
                rule.namespaces = strings(&["jobs"]);
                rule.paths = vec![prefix("/admin")];
            }
            "deny-batch-DELETE" => {
                rule.identities = strings(&[BATCH]);
                rule.methods = strings(&["DELETE"]);
            }
            "deny-9090-=/metrics" => {
                rule.ports = vec![9090];
                rule.paths = vec![exact("/metrics")];
            }
            _ => panic!("no rule {name:?}"),
        }
        rule
    }

    /// What is asked: a TCP connection, or an HTTP request with its method and path.
    #[derive(Clone, Copy, Debug)]
    enum Ask {
        Tcp,
        Http(&'static str, &'static str),
    }
    use Ask::{Http, Tcp};

    /// The expected verdict: allowed, or denied with this reason.
    const ALLOW: Option<&str> = None;
    const NO_ALLOW: Option<&str> = Some("no allow rule matched");
    const RULE_0: Option<&str> = Some("shop/web-policy rule 0");
    const RULE_1: Option<&str> = Some("shop/web-policy rule 1");

    type Case = (
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
        u16,
        Ask,
        Option<&'static str>,
    );

    /// (what is tested, rules in configuration order, client, port, question, verdict)
    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // No rules: everything is allowed.
        ("no rules, tcp", &[], None, 8080, Tcp, ALLOW),
        ("no rules, http", &[], Some(WEB), 8080, Http("GET", "/admin"), ALLOW),
        // A rule without conditions matches everything, plaintext included.
        ("bare deny", &["deny-all"], None, 8080, Tcp, RULE_0),
        ("bare deny, http", &["deny-all"], Some(WEB), 1, Http("GET", "/"), RULE_0),
        ("bare allow", &["allow-all"], None, 8080, Http("GET", "/"), ALLOW),
        ("bare allow, tcp", &["allow-all"], None, 8080, Tcp, ALLOW),
        // Identities: exact SPIFFE IDs; a plaintext client has none.
        ("id allowed", &["allow-web"], Some(WEB), 80, Tcp, ALLOW),
        ("id not listed", &["allow-web"], Some(BATCH), 80, Tcp, NO_ALLOW),
        ("id, plaintext", &["allow-web"], None, 80, Tcp, NO_ALLOW),
        ("id is not a prefix", &["allow-we"], Some(WEB), 80, Tcp, NO_ALLOW),
        ("id with a trailing slash", &["allow-web/"], Some(WEB), 80, Tcp, NO_ALLOW),
        ("id in another trust domain", &["allow-web-elsewhere"], Some(WEB), 80, Tcp, NO_ALLOW),
        ("id is case-sensitive", &["allow-WEB"], Some(WEB), 80, Tcp, NO_ALLOW),
        ("any listed id", &["allow-batch-or-web"], Some(WEB), 80, Tcp, ALLOW),
        ("id denied", &["deny-batch"], Some(BATCH), 80, Tcp, RULE_0),
        ("other id not denied", &["deny-batch"], Some(WEB), 80, Tcp, ALLOW),
        ("id deny, plaintext", &["deny-batch"], None, 80, Tcp, ALLOW),
        // Namespaces: from the client's SPIFFE ID.
        ("namespace allowed", &["allow-shop"], Some(WEB), 80, Tcp, ALLOW),
        ("namespace not listed", &["allow-shop"], Some(BATCH), 80, Tcp, NO_ALLOW),
        ("namespace, plaintext", &["allow-shop"], None, 80, Tcp, NO_ALLOW),
        ("any listed namespace", &["allow-shop-or-jobs"], Some(BATCH), 80, Tcp, ALLOW),
        ("namespace denied", &["deny-jobs"], Some(BATCH), 80, Tcp, RULE_0),
        ("namespace deny, other", &["deny-jobs"], Some(WEB), 80, Tcp, ALLOW),
        ("namespace deny, plaintext", &["deny-jobs"], None, 80, Tcp, ALLOW),
        // Destination ports.
        ("port denied", &["deny-9090"], None, 9090, Tcp, RULE_0),
        ("other port not denied", &["deny-9090"], None, 8080, Tcp, ALLOW),
        ("port allowed", &["allow-8080"], None, 8080, Http("GET", "/"), ALLOW),
        ("port not allowed", &["allow-8080"], None, 9090, Http("GET", "/"), NO_ALLOW),
        // Methods, case-insensitively.
        ("method denied", &["deny-DELETE"], None, 80, Http("DELETE", "/x"), RULE_0),
        ("other method", &["deny-DELETE"], None, 80, Http("GET", "/x"), ALLOW),
        ("lower-case method", &["deny-DELETE"], None, 80, Http("delete", "/x"), RULE_0),
        ("method allowed", &["allow-GET"], None, 80, Http("GET", "/"), ALLOW),
        ("method not allowed", &["allow-GET"], None, 80, Http("POST", "/"), NO_ALLOW),
        ("lower-case rule method", &["allow-get"], None, 80, Http("GET", "/"), ALLOW),
        ("any listed method", &["deny-POST-PUT"], None, 80, Http("PUT", "/"), RULE_0),
        // Exact paths.
        ("exact", &["deny-=/admin"], None, 80, Http("GET", "/admin"), RULE_0),
        ("exact, slash", &["deny-=/admin"], None, 80, Http("GET", "/admin/"), ALLOW),
        ("exact, below", &["deny-=/admin"], None, 80, Http("GET", "/admin/x"), ALLOW),
        ("exact, longer", &["deny-=/admin"], None, 80, Http("GET", "/adminx"), ALLOW),
        // Prefixes of whole segments; a trailing slash on the prefix is ignored.
        ("prefix, itself", &["deny-/admin"], None, 80, Http("GET", "/admin"), RULE_0),
        ("prefix, slash", &["deny-/admin"], None, 80, Http("GET", "/admin/"), RULE_0),
        ("prefix, below", &["deny-/admin"], None, 80, Http("GET", "/admin/users"), RULE_0),
        ("prefix, not a segment", &["deny-/admin"], None, 80, Http("GET", "/administrator"), ALLOW),
        ("prefix, case", &["deny-/admin"], None, 80, Http("GET", "/ADMIN"), ALLOW),
        ("prefix, parent", &["deny-/admin"], None, 80, Http("GET", "/"), ALLOW),
        ("prefix/, itself", &["deny-/admin/"], None, 80, Http("GET", "/admin"), RULE_0),
        ("prefix/, below", &["deny-/admin/"], None, 80, Http("GET", "/admin/x"), RULE_0),
        ("prefix/, not a segment", &["deny-/admin/"], None, 80, Http("GET", "/adminx"), ALLOW),
        ("prefix /, root", &["deny-/"], None, 80, Http("GET", "/"), RULE_0),
        ("prefix /, anything", &["deny-/"], None, 80, Http("GET", "/x/y"), RULE_0),
        ("deep prefix, not a segment", &["deny-/a/b"], None, 80, Http("GET", "/a/bc"), ALLOW),
        ("deep prefix, below", &["deny-/a/b"], None, 80, Http("GET", "/a/b/c"), RULE_0),
        ("any listed path", &["allow-=/healthz-or-/api"], None, 80, Http("GET", "/api/v1"), ALLOW),
        ("no listed path", &["allow-=/healthz-or-/api"], None, 80, Http("GET", "/"), NO_ALLOW),
        // Rule paths are normalised like request paths; one that cannot be fails closed.
        ("rule path normalised", &["deny-//%61dmin/./"], None, 80, Http("GET", "/admin/x"), RULE_0),
        ("bad deny path", &["deny-/admin;x"], None, 80, Http("GET", "/public"), RULE_0),
        ("bad allow path", &["allow-=admin"], None, 80, Http("GET", "/admin"), NO_ALLOW),
        // Every condition of a rule must hold.
        ("all hold", &["allow-web-GET-8080"], Some(WEB), 8080, Http("GET", "/"), ALLOW),
        ("method fails", &["allow-web-GET-8080"], Some(WEB), 8080, Http("PUT", "/"), NO_ALLOW),
        ("port fails", &["allow-web-GET-8080"], Some(WEB), 9090, Http("GET", "/"), NO_ALLOW),
        ("id fails", &["allow-web-GET-8080"], Some(BATCH), 8080, Http("GET", "/"), NO_ALLOW),
        ("both hold", &["deny-jobs-/admin"], Some(BATCH), 80, Http("GET", "/admin"), RULE_0),
        ("path fails", &["deny-jobs-/admin"], Some(BATCH), 80, Http("GET", "/shop"), ALLOW),
        ("namespace fails", &["deny-jobs-/admin"], Some(WEB), 80, Http("GET", "/admin"), ALLOW),
        // DENY first wherever it is listed, and the first matching DENY names the denial.
        ("deny beats allow", &["allow-all", "deny-batch"], Some(BATCH), 80, Tcp, RULE_0),
        ("allow after deny", &["allow-all", "deny-batch"], Some(WEB), 80, Tcp, ALLOW),
        ("first deny named", &["allow-all", "deny-all-1", "deny-all"], None, 80, Tcp, RULE_1),
        ("any allow", &["allow-web", "allow-shop", "allow-all"], None, 80, Tcp, ALLOW),
        ("unmatched deny only", &["deny-batch"], Some(WEB), 80, Tcp, ALLOW),
        ("deny, unmatched allow", &["deny-batch", "allow-web"], Some(BATCH), 80, Tcp, RULE_0),
        ("neither matches", &["deny-batch", "allow-shop"], None, 80, Tcp, NO_ALLOW),
        // TCP: an ALLOW rule with HTTP-only conditions never matches...
        ("allow method, tcp", &["allow-GET"], None, 80, Tcp, NO_ALLOW),
        ("allow prefix /, tcp", &["allow-/"], None, 80, Tcp, NO_ALLOW),
        ("allow id+method, tcp", &["allow-web-GET-8080"], Some(WEB), 8080, Tcp, NO_ALLOW),
        ("another allow, tcp", &["allow-web-GET-8080", "allow-shop"], Some(WEB), 8080, Tcp, ALLOW),
        // ...and a DENY rule with them matches when its other conditions hold.
        ("deny path, tcp", &["deny-/admin"], None, 80, Tcp, RULE_0),
        ("deny path, tcp, mTLS", &["deny-/admin"], Some(WEB), 80, Tcp, RULE_0),
        ("deny method, tcp", &["deny-DELETE"], Some(WEB), 80, Tcp, RULE_0),
        ("deny id+method, tcp", &["deny-batch-DELETE"], Some(BATCH), 80, Tcp, RULE_0),
        ("deny id+method, other, tcp", &["deny-batch-DELETE"], Some(WEB), 80, Tcp, ALLOW),
        ("deny id+method, plain, tcp", &["deny-batch-DELETE"], None, 80, Tcp, ALLOW),
        ("deny ns+path, tcp", &["deny-jobs-/admin"], Some(BATCH), 80, Tcp, RULE_0),
        ("deny ns+path, other, tcp", &["deny-jobs-/admin"], Some(WEB), 80, Tcp, ALLOW),
        ("deny port+path, tcp", &["deny-9090-=/metrics"], None, 9090, Tcp, RULE_0),
        ("deny port+path, other, tcp", &["deny-9090-=/metrics"], None, 8080, Tcp, ALLOW),
        // Plaintext clients match the rules that name no identity or namespace.
        ("plaintext, port rule", &["allow-8080"], None, 8080, Http("GET", "/"), ALLOW),
        ("plaintext, id rules", &["allow-web", "allow-shop"], None, 80, Http("GET", "/"), NO_ALLOW),
    ];

    #[test]
    fn decisions() {
        assert!(CASES.len() >= 60);
        let mut failures = Vec::new();
        for &(name, rules, client, port, ask, want) in CASES {
            let authz = InboundAuthz::new(&InboundSecurity {
                rules: rules.iter().map(|r| rule(r)).collect(),
                ..InboundSecurity::default()
            });
            let client = client.map(|c| SpiffeId::parse(c).unwrap());
            let verdict = match ask {
                Tcp => authz.decide_connection(client.as_ref(), port),
                Http(method, path) => {
                    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
                    authz.decide_request(client.as_ref(), port, &method, path)
                }
            };
            let got = match &verdict {
                Verdict::Allow => None,
                Verdict::Deny(denial) => Some(denial.reason()),
            };
            if got != want {
                failures.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn denial_labels() {
        let authz = InboundAuthz::new(&InboundSecurity {
            rules: vec![
                AuthorizationRule {
                    rule: 3,
                    ..rule("deny-batch")
                },
                rule("allow-shop"),
            ],
            ..InboundSecurity::default()
        });
        let batch = SpiffeId::parse(BATCH).unwrap();
        let Verdict::Deny(denied) = authz.decide_connection(Some(&batch), 80) else {
            panic!("batch allowed");
        };
        assert_eq!(denied.reason(), "shop/web-policy rule 3");
        assert_eq!(denied.label(), "deny-rule");
        let Verdict::Deny(unmatched) = authz.decide_connection(None, 80) else {
            panic!("plaintext allowed");
        };
        assert_eq!(unmatched.reason(), "no allow rule matched");
        assert_eq!(unmatched.label(), "no-allow-rule");
        for denial in [&denied, &unmatched] {
            assert!(http::HeaderValue::from_str(denial.reason()).is_ok());
        }
        let web = SpiffeId::parse(WEB).unwrap();
        assert_eq!(authz.decide_connection(Some(&web), 80), Verdict::Allow);
    }

    #[test]
    fn has_rules() {
        assert!(!InboundAuthz::default().has_rules());
        let only_modes = InboundSecurity {
            mode: MtlsMode::Strict,
            port_modes: vec![PortMode {
                port: 8080,
                mode: MtlsMode::Permissive,
            }],
            rules: Vec::new(),
        };
        assert!(!InboundAuthz::new(&only_modes).has_rules());
        for name in ["allow-all", "deny-all"] {
            let security = InboundSecurity {
                rules: vec![rule(name)],
                ..InboundSecurity::default()
            };
            assert!(InboundAuthz::new(&security).has_rules());
        }
    }

    #[test]
    fn a_prefix_of_slash_covers_every_request_target() {
        let mut deny = rule("deny-all");
        deny.paths = vec![AuthorizationPath::Prefix("/".to_string())];
        let authz = InboundAuthz::new(&InboundSecurity {
            rules: vec![deny],
            ..InboundSecurity::default()
        });
        for target in ["/", "/x", "*"] {
            let verdict = authz.decide_request(None, 80, &http::Method::OPTIONS, target);
            assert!(matches!(verdict, Verdict::Deny(_)), "{target}");
        }
    }

    #[test]
    fn port_modes() {
        use MtlsMode::{Permissive, Strict};
        type ModeCase = (MtlsMode, &'static [(u16, MtlsMode)], u16, MtlsMode);
        // (workload mode, per-port modes, port asked about, its mode)
        const MODES: &[ModeCase] = &[
            (Permissive, &[], 8080, Permissive),
            (Strict, &[], 8080, Strict),
            (Strict, &[(9090, Permissive)], 9090, Permissive),
            (Strict, &[(9090, Permissive)], 8080, Strict),
            (Permissive, &[(9090, Strict)], 9090, Strict),
            (Permissive, &[(9090, Strict)], 8080, Permissive),
            (Strict, &[(9090, Permissive), (9091, Strict)], 9091, Strict),
            (Permissive, &[(1, Strict), (65535, Strict)], 65535, Strict),
        ];
        for &(mode, overrides, port, want) in MODES {
            let security = InboundSecurity {
                mode,
                port_modes: overrides
                    .iter()
                    .map(|&(port, mode)| PortMode { port, mode })
                    .collect(),
                rules: Vec::new(),
            };
            assert_eq!(
                InboundAuthz::new(&security).mode(port),
                want,
                "{mode:?} {overrides:?} port {port}"
            );
        }
        assert_eq!(InboundAuthz::default().mode(80), Permissive);
    }

    #[test]
    fn spiffe_ids_compare_exactly() {
        let web = SpiffeId::parse(WEB).unwrap();
        assert!(is_spiffe_id(WEB, &web));
        for other in [
            "",
            "spiffe://cluster.local/ns/shop/sa/webx",
            "spiffe://cluster.local/ns/shop/sa/",
            "spiffe://cluster.local/ns/shop/sa/web/",
            "spiffe://cluster.localx/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shopx/sa/web",
            "spiffe://cluster.local//ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web?",
            "spiffe:/cluster.local/ns/shop/sa/web",
            " spiffe://cluster.local/ns/shop/sa/web",
        ] {
            assert!(!is_spiffe_id(other, &web), "{other:?}");
        }
    }
}

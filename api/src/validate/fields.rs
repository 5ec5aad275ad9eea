//! Checks of single values shared by several kinds. Each returns the message for a problem
//! (lowercase; what is wrong, what is allowed), leaving the path to the caller.

use regex::RegexBuilder;

/// Largest compiled size accepted for a route's regular expression: large enough for any
/// reasonable path or header pattern, small enough that a hostile one cannot eat the proxy's
/// memory.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// A port number: 1–65535.
pub fn port(value: i64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "{value} is not a port; must be between 1 and 65535"
        )),
    }
}

/// A list no longer than the Gateway API allows.
pub fn at_most(found: usize, max: usize, what: &str) -> Result<(), String> {
    if found > max {
        return Err(format!("at most {max} {what} are allowed, found {found}"));
    }
    Ok(())
}

/// An HTTP header name: an RFC 7230 token (letters, digits and ``!#$%&'*+-.^_`|~``).
pub fn header_name(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() {
        return Err("header name must not be empty".to_string());
    }
    if name.len() > 256 || !name.chars().all(token) {
        return Err(format!(
            "{name:?} is not a valid header name: use letters, digits and !#$%&'*+-.^_`|~ \
             (no spaces, colons or pseudo-headers), at most 256 characters"
        ));
    }
    Ok(())
}

/// A header value: 1 to `max` printable ASCII characters (tabs and single spaces inside).
pub fn header_value(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_string());
    }
    if value.len() > max {
        return Err(format!("at most {max} characters, found {}", value.len()));
    }
    let printable = |c: char| (' '..='~').contains(&c) || c == '\t';
    if !value.chars().all(printable) {
        return Err("must be printable ASCII: no line breaks or control characters".to_string());
    }
    Ok(())
}

/// The value of an `Exact` or `PathPrefix` path match (the Gateway API's own rules).
pub fn path_value(value: &str) -> Result<(), String> {
    if !value.starts_with('/') {
        return Err(format!("{value:?} must start with \"/\""));
    }
    if value.len() > 1024 {
        return Err(format!("at most 1024 characters, found {}", value.len()));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        if value.contains(bad) {
            return Err(format!("{value:?} must not contain {bad:?}"));
        }
    }
    if value.ends_with("/..") || value.ends_with("/.") {
        return Err(format!("{value:?} must not end with \"/.\" or \"/..\""));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-/._~!$&'()*+,;=:@%".contains(c);
    if let Some(c) = value.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "{value:?} contains {c:?}; paths may hold letters, digits, -/._~!$&'()*+,;=:@ \
             and %XX escapes"
        ));
    }
    Ok(())
}

/// A path of an authorization rule. Rules are compared with the normalised request path
/// (unreserved characters percent-decoded, dot segments resolved, repeated slashes merged;
/// requests with `;`, an encoded `/` or `\`, a NUL or a bad escape refused), so a value that
/// no normalised path can equal is refused: it would be a rule that never matches.
pub fn rule_path(value: &str) -> Result<(), String> {
    let never = "no normalised request path can match it";
    if !value.starts_with('/') {
        return Err(format!("{value:?} must start with \"/\""));
    }
    if value.len() > 1024 {
        return Err(format!("at most 1024 characters, found {}", value.len()));
    }
    if let Some(c) = value.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(format!(
            "{value:?} contains {c:?}; a rule matches the path only, without query or fragment"
        ));
    }
    if value.contains('%') {
        return Err(format!(
            "{value:?} contains a percent-escape; requests are compared after decoding, so \
             write the character itself (letters, digits, -._~ and !$&'()*+,=:@)"
        ));
    }
    if value.contains(';') {
        return Err(format!(
            "{value:?} contains \";\"; requests whose path holds one are refused, so {never}"
        ));
    }
    if value.contains("//") {
        return Err(format!(
            "{value:?} contains \"//\"; repeated slashes are merged, so {never}"
        ));
    }
    let dot_segment = |segment: &str| segment == "." || segment == "..";
    if value.split('/').any(dot_segment) {
        return Err(format!(
            "{value:?} has a \".\" or \"..\" segment; dot segments are resolved, so {never}"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-/._~!$&'()*+,=:@".contains(c);
    if let Some(c) = value.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "{value:?} contains {c:?}; paths may hold letters, digits and -/._~!$&'()*+,=:@"
        ));
    }
    Ok(())
}

/// An HTTP method in an authorization rule: upper-case letters, like `GET` (requests' methods
/// are compared case-insensitively).
pub fn method(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{value:?} is not a method: use 1 to 32 upper-case letters A-Z, like GET or POST"
        ));
    }
    Ok(())
}

/// A regular expression as the proxy will compile it (the `regex` crate's syntax, anchored at
/// both ends).
pub fn regex(pattern: &str) -> Result<(), String> {
    if pattern.len() > 1024 {
        return Err(format!("at most 1024 characters, found {}", pattern.len()));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map(|_| ())
        .map_err(|error| {
            let detail = error.to_string();
            let detail = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            format!("{pattern:?} is not a valid regular expression: {detail}")
        })
}

/// A Kubernetes object name (RFC 1123 subdomain): lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit, at most 253 characters.
pub fn object_name(name: &str) -> Result<(), String> {
    dns_name(name, 253, true)
}

/// A namespace or Service name (RFC 1123 label): like an object name, without dots, at most
/// 63 characters.
pub fn label_name(name: &str) -> Result<(), String> {
    dns_name(name, 63, false)
}

/// A label key, as Kubernetes checks it (a qualified name): an optional prefix, a DNS
/// subdomain of at most 253 characters, and `/`; then a name of 1 to 63 letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit. `app`, `app.kubernetes.io/name`.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let bad = |why: String| {
        Err(format!(
            "{key:?} is not a valid label key: {why} (a key is an optional DNS subdomain and \
             '/', then a name, like app.kubernetes.io/name)"
        ))
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return bad("the prefix before '/' is empty".to_string());
        }
        if !is_dns_subdomain(prefix) {
            return bad(format!(
                "the prefix {prefix:?} must be at most 253 characters of dot-separated \
                 lowercase letters, digits and '-', each part starting and ending with a \
                 letter or digit"
            ));
        }
    }
    if name.is_empty() {
        return bad("the name must not be empty".to_string());
    }
    if !is_label_text(name) {
        return bad(format!(
            "the name {name:?} must be at most 63 letters, digits, '-', '_' or '.', starting \
             and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value, as Kubernetes checks it: empty, or 1 to 63 letters, digits, `-`, `_` and
/// `.`, starting and ending with a letter or digit.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        return Ok(());
    }
    Err(format!(
        "{value:?} is not a valid label value: use at most 63 letters, digits, '-', '_' or '.', \
         starting and ending with a letter or digit (or leave it empty)"
    ))
}

/// The name part of a label key, or a non-empty label value.
fn is_label_text(text: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    text.len() <= 63
        && text.chars().all(inner)
        && ends(text.chars().next())
        && ends(text.chars().last())
}

/// RFC 1123 subdomain, checked part by part (Kubernetes' `IsDNS1123Subdomain`).
fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text
            .split('.')
            .all(|part| dns_name(part, 63, false).is_ok())
}

fn dns_name(name: &str, max: usize, dots: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_string());
    }
    let allowed =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > max
        || !name.chars().all(allowed)
        || !ends_ok(name.chars().next())
        || !ends_ok(name.chars().last())
    {
        let dot = if dots { ", '.'" } else { "" };
        return Err(format!(
            "{name:?} is not a valid name: use at most {max} lowercase letters, digits, '-'{dot}, \
             starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(port(80), Ok(80));
        assert_eq!(port(65535), Ok(65535));
        for bad in [0, -1, 65536, i64::MAX] {
            assert!(
                port(bad).unwrap_err().contains("between 1 and 65535"),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_names_and_values() {
        for good in ["x-version", "Authorization", "X_Custom.1", "a!b"] {
            assert_eq!(header_name(good), Ok(()), "{good}");
        }
        for bad in ["", ":method", "has space", "a/b", "é"] {
            assert!(header_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(header_value("v2 beta", 4096), Ok(()));
        assert!(header_value("", 4096).is_err());
        assert!(header_value("a\nb", 4096).is_err());
        assert!(header_value("abc", 2).is_err());
    }

    #[test]
    fn path_values() {
        for good in ["/", "/api", "/api/v1/", "/a%20b", "/~user/x@y"] {
            assert_eq!(path_value(good), Ok(()), "{good}");
        }
        for bad in [
            "api", "", "/a//b", "/a/../b", "/a/.", "/a%2fb", "/a#b", "/a b", "/a?b",
        ] {
            assert!(path_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rule_paths() {
        for good in [
            "/",
            "/admin",
            "/api/v1/",
            "/~user/x@y",
            "/a:b",
            "/a.b/..c/c..",
        ] {
            assert_eq!(rule_path(good), Ok(()), "{good}");
        }
        let bad = [
            ("admin", "must start with"),
            ("", "must start with"),
            ("/a?b", "without query"),
            ("/a#b", "without query"),
            ("/adm%69n", "percent-escape"),
            ("/a%2fb", "percent-escape"),
            ("/a;b", "are refused"),
            ("/a//b", "repeated slashes"),
            ("//", "repeated slashes"),
            ("/a/../b", "dot segments"),
            ("/a/.", "dot segments"),
            ("/..", "dot segments"),
            ("/./a", "dot segments"),
            ("/a b", "contains ' '"),
            ("/a\\b", "contains '\\\\'"),
            ("/\u{e9}", "contains"),
        ];
        for (value, fragment) in bad {
            let error = rule_path(value).unwrap_err();
            assert!(error.contains(fragment), "{value:?}: {error}");
        }
        assert!(rule_path(&format!("/{}", "a".repeat(1024))).is_err());
    }

    #[test]
    fn methods() {
        for good in ["GET", "POST", "PROPFIND"] {
            assert_eq!(method(good), Ok(()), "{good}");
        }
        for bad in ["", "get", "Get", "GET ", "M-SEARCH", "G1", &"A".repeat(33)] {
            assert!(method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regexes() {
        assert_eq!(regex("/api/v[0-9]+/.*"), Ok(()));
        let error = regex("/api/(v1").unwrap_err();
        assert!(error.contains("not a valid regular expression"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(regex("(a{1000}){1000}").is_err(), "too big once compiled");
    }

    #[test]
    fn names() {
        assert_eq!(object_name("web-v1.shop"), Ok(()));
        assert_eq!(label_name("web-v1"), Ok(()));
        for bad in ["", "Web", "-web", "web-", "web_v1", &"a".repeat(254)] {
            assert!(object_name(bad).is_err(), "{bad:?}");
        }
        assert!(label_name("web.v1").is_err());
        assert!(label_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn label_keys_and_values() {
        // 255 characters, each part short enough.
        let long_prefix = format!("{}io/app", "abcdefghij.".repeat(23));
        for good in [
            "app",
            "App_Name-1.x",
            "app.kubernetes.io/name",
            "skiff.dev/tier",
            "a/b",
            &"a".repeat(63),
        ] {
            assert_eq!(label_key(good), Ok(()), "{good}");
        }
        let bad = [
            ("", "the name must not be empty"),
            ("app/", "the name must not be empty"),
            ("/app", "the prefix before '/' is empty"),
            ("a/b/c", "the name \"b/c\""),
            ("Skiff.dev/tier", "the prefix \"Skiff.dev\""),
            ("skiff..dev/tier", "the prefix"),
            ("-skiff.dev/tier", "the prefix"),
            (&long_prefix, "the prefix"),
            ("-app", "the name \"-app\""),
            ("app_", "the name"),
            ("my app", "the name"),
            ("app:x", "the name"),
            (&"a".repeat(64), "at most 63"),
        ];
        for (key, fragment) in bad {
            let error = label_key(key).unwrap_err();
            assert!(error.contains(fragment), "{key:?}: {error}");
            assert!(
                error.contains("is not a valid label key"),
                "{key:?}: {error}"
            );
        }
        for good in ["", "v1", "Canary_2.x-y", &"a".repeat(63)] {
            assert_eq!(label_value(good), Ok(()), "{good:?}");
        }
        for bad in ["-v1", "v1.", "a b", "a/b", "é", &"a".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad:?}");
        }
    }
}

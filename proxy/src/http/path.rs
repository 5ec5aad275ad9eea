//! Request path normalisation: the inbound sidecar normalises a request's path once, then
//! authorises (`authz.rs`) and forwards exactly the same bytes, so an encoding trick that
//! slips past a rule cannot reach the app as the path the rule was written for.
//!
//! [`normalize`] applies, in order:
//! 1. the path must start with `/` (the caller handles `*` and authority-form targets) and be at
//!    most [`MAX_LEN`] bytes;
//! 2. refusals (see [`PathError`]): malformed escapes; escaped `/` or `\`; raw or escaped
//!    control characters; raw `\`; raw or escaped `;` (path parameters, which Tomcat-style apps
//!    strip); raw `?`, `#` or space (not part of a path); raw non-ASCII bytes; escaped bytes
//!    that are not UTF-8 (overlong `%C0%AF` is a `/` to some decoders); and double encoding, a
//!    `%25` followed by two hex digits (`%252F` is `%2F` to an app that decodes twice);
//! 3. escapes of unreserved characters (ALPHA / DIGIT / `-` `.` `_` `~`) are decoded and the hex
//!    of every other escape is upper-cased (`%3f` becomes `%3F`); `%25` stays `%25` (RFC 3986
//!    §6.2.2.2: `%` is not unreserved, and decoding it would make new escapes);
//! 4. repeated slashes are merged (`//a///b` becomes `/a/b`);
//! 5. dot segments are removed as in RFC 3986 §5.2.4, after decoding (so `%2e%2e` is `..`),
//!    never above the root (`/../a` becomes `/a`); a trailing `/.` or `/..` leaves a trailing
//!    slash.
//!
//! Case is kept: paths are case-sensitive. An already normal path is returned borrowed, so the
//! common case does not allocate.

use std::borrow::Cow;

/// Longest path accepted, in bytes.
pub const MAX_LEN: usize = 8 * 1024;

/// Why a path was refused. Each maps to a bounded [`reason`](PathError::reason) for the
/// response header and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with /")]
    NotAbsolute,
    #[error("path longer than 8 KiB")]
    TooLong,
    #[error("malformed percent escape")]
    BadEscape,
    #[error("escaped / or \\")]
    EncodedSlash,
    #[error("control character")]
    ControlCharacter,
    #[error("backslash")]
    Backslash,
    #[error("path parameter (;)")]
    PathParameter,
    #[error("character not allowed in a path")]
    InvalidCharacter,
    #[error("non-ascii byte")]
    NonAscii,
    #[error("escaped bytes are not utf-8")]
    InvalidUtf8,
    #[error("double percent-encoding")]
    DoubleEncoded,
}

impl PathError {
    /// Value of the response header and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "not-absolute",
            PathError::TooLong => "too-long",
            PathError::BadEscape => "bad-escape",
            PathError::EncodedSlash => "encoded-slash",
            PathError::ControlCharacter => "control-character",
            PathError::Backslash => "backslash",
            PathError::PathParameter => "path-parameter",
            PathError::InvalidCharacter => "invalid-character",
            PathError::NonAscii => "non-ascii",
            PathError::InvalidUtf8 => "invalid-utf8",
            PathError::DoubleEncoded => "double-encoded",
        }
    }
}

/// The normal form of `path` (no query), borrowed when `path` is already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let needs_rewrite = check(path)?;
    let normal = if needs_rewrite {
        Cow::Owned(rewrite(path))
    } else {
        Cow::Borrowed(path)
    };
    if normal.contains("%25") && is_double_encoded(&normal) {
        return Err(PathError::DoubleEncoded);
    }
    Ok(normal)
}

/// Validates `path` (every refusal but double encoding, which is judged on the output) and
/// says whether it differs from its normal form.
fn check(path: &str) -> Result<bool, PathError> {
    let bytes = path.as_bytes();
    if bytes.len() > MAX_LEN {
        return Err(PathError::TooLong);
    }
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut needs_rewrite = false;
    let mut segment_start = 1;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => {
                needs_rewrite |= is_dot_or_empty(&bytes[segment_start..i]);
                segment_start = i + 1;
                i += 1;
            }
            b'%' => {
                let (byte, lower_hex) = escape_at(bytes, i)?;
                needs_rewrite |= lower_hex;
                i += 3;
                match byte {
                    b if is_unreserved(b) => needs_rewrite = true,
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    b';' => return Err(PathError::PathParameter),
                    b if is_control(b) => return Err(PathError::ControlCharacter),
                    0x80.. => {
                        let (len, lower_hex) = utf8_escapes_at(bytes, i, byte)?;
                        needs_rewrite |= lower_hex;
                        i += len;
                    }
                    _ => {}
                }
            }
            b if is_control(b) => return Err(PathError::ControlCharacter),
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'?' | b'#' | b' ' => return Err(PathError::InvalidCharacter),
            0x80.. => return Err(PathError::NonAscii),
            _ => i += 1,
        }
    }
    // A last empty segment is a trailing slash, which is kept; a last dot segment is not.
    let last = &bytes[segment_start..];
    needs_rewrite |= !last.is_empty() && is_dot_or_empty(last);
    Ok(needs_rewrite)
}

/// The escape at `bytes[at] == b'%'`: its byte, and whether its hex has a lower-case letter.
fn escape_at(bytes: &[u8], at: usize) -> Result<(u8, bool), PathError> {
    let (Some(&high), Some(&low)) = (bytes.get(at + 1), bytes.get(at + 2)) else {
        return Err(PathError::BadEscape);
    };
    let (Some(h), Some(l)) = (hex_value(high), hex_value(low)) else {
        return Err(PathError::BadEscape);
    };
    Ok((
        h << 4 | l,
        high.is_ascii_lowercase() || low.is_ascii_lowercase(),
    ))
}

/// Checks that the escape of `lead` (a byte >= 0x80, just before `bytes[at]`) and the escapes
/// after it form one UTF-8 character. Returns how many bytes of `bytes[at..]` the continuation
/// escapes took, and whether any had lower-case hex.
fn utf8_escapes_at(bytes: &[u8], at: usize, lead: u8) -> Result<(usize, bool), PathError> {
    let len = match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return Err(PathError::InvalidUtf8),
    };
    let mut character = [lead, 0, 0, 0];
    let mut lower = false;
    for (n, slot) in character[1..len].iter_mut().enumerate() {
        let position = at + 3 * n;
        if bytes.get(position) != Some(&b'%') {
            return Err(PathError::InvalidUtf8);
        }
        let (byte, lower_hex) = escape_at(bytes, position)?;
        *slot = byte;
        lower |= lower_hex;
    }
    // The standard decoder refuses overlong forms, surrogates and code points above U+10FFFF.
    match std::str::from_utf8(&character[..len]) {
        Ok(_) => Ok((3 * (len - 1), lower)),
        Err(_) => Err(PathError::InvalidUtf8),
    }
}

/// Builds the normal form of a path that [`check`] accepted.
fn rewrite(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(raw) = segments.next() {
        let start = out.len();
        out.push('/');
        push_segment(&mut out, raw);
        let segment = &out[start + 1..];
        let is_dot_dot = segment == "..";
        if is_dot_dot || segment == "." || segment.is_empty() {
            out.truncate(start);
            if is_dot_dot {
                // `out` holds `/`-prefixed segments only, so this drops exactly the last one
                // (and nothing at the root).
                let parent = out.rfind('/').unwrap_or(0);
                out.truncate(parent);
            }
            trailing_slash = segments.peek().is_none();
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// Appends one segment with unreserved escapes decoded and other escapes' hex upper-cased.
fn push_segment(out: &mut String, raw: &str) {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // `check` accepted the path, so every escape is complete and valid.
            let (byte, _) = escape_at(bytes, i).unwrap_or((b'%', false));
            if is_unreserved(byte) {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
            }
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
}

/// Whether `%25` is followed by two hex digits somewhere in `path`.
fn is_double_encoded(path: &str) -> bool {
    path.as_bytes()
        .windows(5)
        .any(|w| &w[..3] == b"%25" && w[3].is_ascii_hexdigit() && w[4].is_ascii_hexdigit())
}

fn is_dot_or_empty(segment: &[u8]) -> bool {
    matches!(segment, b"" | b"." | b"..")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7F
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    use PathError::*;

    /// Variants of `/admin` and `/admin/users` an attacker might try, each with its normal form
    /// or the refusal.
    const ADMIN_VARIANTS: &[(&str, Result<&str, PathError>)] = &[
        // Already normal.
        ("/admin", Ok("/admin")),
        ("/admin/", Ok("/admin/")),
        ("/admin/users", Ok("/admin/users")),
        ("/admin/users/", Ok("/admin/users/")),
        // Case is kept.
        ("/ADMIN", Ok("/ADMIN")),
        ("/Admin/Users", Ok("/Admin/Users")),
        // Repeated slashes.
        ("//admin", Ok("/admin")),
        ("///admin//users", Ok("/admin/users")),
        ("/admin//", Ok("/admin/")),
        ("/admin////users///", Ok("/admin/users/")),
        // Dot segments.
        ("/./admin", Ok("/admin")),
        ("/x/../admin", Ok("/admin")),
        ("/a/b/../../admin", Ok("/admin")),
        ("/../admin", Ok("/admin")),
        ("/../../../../admin/users", Ok("/admin/users")),
        ("/admin/./users/..", Ok("/admin/")),
        ("/admin/.", Ok("/admin/")),
        ("/admin/users/.", Ok("/admin/users/")),
        ("/admin/users/..", Ok("/admin/")),
        ("/admin/x/../users", Ok("/admin/users")),
        ("/admin/.././admin/users", Ok("/admin/users")),
        ("/x//../admin", Ok("/admin")),
        ("/admin/...", Ok("/admin/...")),
        ("/admin/..x", Ok("/admin/..x")),
        ("/admin./users", Ok("/admin./users")),
        // Escapes of unreserved characters are decoded.
        ("/%61dmin", Ok("/admin")),
        ("/%61%64%6d%69%6e", Ok("/admin")),
        ("/%61%64%6D%69%6E/%75sers", Ok("/admin/users")),
        ("/adm%69n/.", Ok("/admin/")),
        ("/%2e/admin", Ok("/admin")),
        ("/%2e%2e/admin", Ok("/admin")),
        ("/%2E%2E/%2E%2E/admin/users", Ok("/admin/users")),
        ("/x/%2e%2e/admin", Ok("/admin")),
        ("/x/.%2e/admin", Ok("/admin")),
        ("/admin/%2e", Ok("/admin/")),
        ("/admin/users/%2e%2e", Ok("/admin/")),
        ("/%41DMIN", Ok("/ADMIN")),
        ("/admin%2dusers", Ok("/admin-users")),
        ("/admin%5fusers", Ok("/admin_users")),
        ("/%7eadmin", Ok("/~admin")),
        // Escapes of other characters stay, with upper-case hex.
        ("/admin%3f", Ok("/admin%3F")),
        ("/admin%3F", Ok("/admin%3F")),
        ("/admin%23x", Ok("/admin%23x")),
        ("/admin%20", Ok("/admin%20")),
        ("/admin%25", Ok("/admin%25")),
        ("/admin%25x", Ok("/admin%25x")),
        ("/admin%c3%a9", Ok("/admin%C3%A9")),
        ("/%E2%80%8Badmin", Ok("/%E2%80%8Badmin")),
        // Escaped separators.
        ("/admin%2F", Err(EncodedSlash)),
        ("/admin%2fusers", Err(EncodedSlash)),
        ("/admin%5Cusers", Err(EncodedSlash)),
        ("/admin%5c", Err(EncodedSlash)),
        ("/%2F/admin", Err(EncodedSlash)),
        // Double encoding.
        ("/%2561dmin", Err(DoubleEncoded)),
        ("/admin%252Fusers", Err(DoubleEncoded)),
        ("/admin%252fusers", Err(DoubleEncoded)),
        ("/%252e%252e/admin", Err(DoubleEncoded)),
        ("/admin%25%32%46users", Err(DoubleEncoded)),
        ("/admin%25%32fusers", Err(DoubleEncoded)),
        ("/admin%25%2561", Err(DoubleEncoded)),
        // Path parameters.
        ("/admin;x", Err(PathParameter)),
        ("/admin;/users", Err(PathParameter)),
        ("/admin/users;jsessionid=1", Err(PathParameter)),
        ("/;/admin", Err(PathParameter)),
        ("/admin%3bx", Err(PathParameter)),
        ("/admin%3Busers", Err(PathParameter)),
        // Backslashes.
        ("/admin\\users", Err(Backslash)),
        ("\\admin", Err(NotAbsolute)),
        ("/\\admin", Err(Backslash)),
        // Control characters, raw and escaped.
        ("/admin%00", Err(ControlCharacter)),
        ("/admin%00/users", Err(ControlCharacter)),
        ("/admin\0", Err(ControlCharacter)),
        ("/admin\t", Err(ControlCharacter)),
        ("/admin%09", Err(ControlCharacter)),
        ("/admin%0a/users", Err(ControlCharacter)),
        ("/admin%0D%0AX-Injected:%201", Err(ControlCharacter)),
        ("/admin\r\n", Err(ControlCharacter)),
        ("/admin%7f", Err(ControlCharacter)),
        ("/admin\x7f", Err(ControlCharacter)),
        ("/admin%1f", Err(ControlCharacter)),
        // Malformed escapes.
        ("/admin%", Err(BadEscape)),
        ("/admin%4", Err(BadEscape)),
        ("/admin%zz", Err(BadEscape)),
        ("/%6", Err(BadEscape)),
        ("/admin%%61", Err(BadEscape)),
        ("/admin%g1", Err(BadEscape)),
        // Unicode: raw is refused, escaped UTF-8 is kept, escaped non-UTF-8 is refused.
        ("/ädmin", Err(NonAscii)),
        ("/admın", Err(NonAscii)),
        ("/\u{FF41}dmin", Err(NonAscii)),
        ("/admin\u{2215}users", Err(NonAscii)),
        ("/admin%c0%af", Err(InvalidUtf8)),
        ("/admin%C0%AFusers", Err(InvalidUtf8)),
        ("/admin%e0%80%af", Err(InvalidUtf8)),
        ("/admin%ff", Err(InvalidUtf8)),
        ("/admin%80", Err(InvalidUtf8)),
        ("/admin%c3", Err(InvalidUtf8)),
        ("/admin%c3x", Err(InvalidUtf8)),
        ("/admin%ed%a0%80", Err(InvalidUtf8)),
        ("/admin%c3%zz", Err(BadEscape)),
        // Not a path.
        ("admin", Err(NotAbsolute)),
        ("", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        ("%2Fadmin", Err(NotAbsolute)),
        ("http://x/admin", Err(NotAbsolute)),
        ("/admin?x=1", Err(InvalidCharacter)),
        ("/admin#x", Err(InvalidCharacter)),
        ("/admin users", Err(InvalidCharacter)),
    ];

    #[test]
    fn admin_variants() {
        assert!(ADMIN_VARIANTS.len() >= 60);
        let mut failures = Vec::new();
        for &(input, expected) in ADMIN_VARIANTS {
            let got = normalize(input);
            let got = got.as_ref().map(|p| p.as_ref()).map_err(|e| *e);
            if got != expected {
                failures.push(format!("{input:?}: got {got:?}, want {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn other_paths() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("//", Ok("/")),
            ("/.", Ok("/")),
            ("/..", Ok("/")),
            ("/./", Ok("/")),
            ("/../", Ok("/")),
            ("/a/..", Ok("/")),
            ("/a/../", Ok("/")),
            ("/a/b/c/./../../g", Ok("/a/g")),
            ("/mid/content=5/../6", Ok("/mid/6")),
            ("/a/b/..//c", Ok("/a/c")),
            ("/-._~!$&'()*+,=:@", Ok("/-._~!$&'()*+,=:@")),
            ("/%41%5A%61%7A%30%39%2D%2E%5F%7E", Ok("/AZaz09-._~")),
            ("/%21%24%26%27", Ok("/%21%24%26%27")),
            ("/%f0%9f%a6%80", Ok("/%F0%9F%A6%80")),
            ("/%f4%90%80%80", Err(InvalidUtf8)),
        ];
        for &(input, expected) in cases {
            let got = normalize(input);
            let got = got.as_ref().map(|p| p.as_ref()).map_err(|e| *e);
            assert_eq!(got, expected, "{input:?}");
        }
    }

    #[test]
    fn borrows_what_is_already_normal() {
        for path in [
            "/", "/admin", "/admin/", "/a/b/c", "/a%20b", "/%C3%A9", "/100%25", "/...",
        ] {
            assert!(
                matches!(normalize(path), Ok(Cow::Borrowed(_))),
                "{path:?} was rewritten"
            );
        }
        for path in ["//a", "/a/.", "/a/..", "/%61", "/%3f", "/a//", "/a/./b"] {
            assert!(
                matches!(normalize(path), Ok(Cow::Owned(_))),
                "{path:?} was not rewritten"
            );
        }
    }

    #[test]
    fn length_is_bounded() {
        let longest = format!("/{}", "a".repeat(MAX_LEN - 1));
        assert_eq!(normalize(&longest).map(|p| p.len()), Ok(MAX_LEN));
        let too_long = format!("/{}", "a".repeat(MAX_LEN));
        assert_eq!(normalize(&too_long), Err(TooLong));
        // The bound is on the request as sent, not on its normal form.
        let shrinks = format!("/{}", "/".repeat(MAX_LEN));
        assert_eq!(normalize(&shrinks), Err(TooLong));
    }

    #[test]
    fn reasons_are_distinct_header_values() {
        let all = [
            NotAbsolute,
            TooLong,
            BadEscape,
            EncodedSlash,
            ControlCharacter,
            Backslash,
            PathParameter,
            InvalidCharacter,
            NonAscii,
            InvalidUtf8,
            DoubleEncoded,
        ];
        let mut reasons: Vec<_> = all.iter().map(PathError::reason).collect();
        assert!(reasons
            .iter()
            .all(|r| http::HeaderValue::from_str(r).is_ok()));
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
    }

    /// Pieces that combine into awkward paths: separators, dots raw and escaped, escapes of
    /// every kind, and plain characters.
    const PIECES: &[&str] = &[
        "/", "/", "/", ".", "..", "%2e", "%2E", "a", "B", "%61", "%41", "%7e", "~", "-", "%20",
        "%3f", "%3F", "%25", "%2541", "%2f", "%c3%a9", "%C3", ";", "%3b", "\\", "%00", "\t", "%",
        "%4", "%zz", "é", "?", "5", "f", "=", "@", "..%2e", "%2e.", "//", "/./", "/../",
    ];

    /// A small deterministic generator, so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn generated_paths() -> impl Iterator<Item = String> {
        let mut rng = XorShift(0x5EED_CAFE_F00D_BEEF);
        (0..20_000).map(move |_| {
            let mut path = String::from("/");
            for _ in 0..rng.next() % 12 {
                path.push_str(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
            }
            path
        })
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        let mut accepted = 0;
        for path in generated_paths() {
            let Ok(normal) = normalize(&path) else {
                continue;
            };
            accepted += 1;
            let again = normalize(&normal);
            assert!(
                matches!(&again, Ok(Cow::Borrowed(p)) if *p == normal),
                "{path:?} -> {normal:?} -> {again:?}"
            );
        }
        assert!(
            accepted > 2_000,
            "only {accepted} generated paths were accepted"
        );
    }

    #[test]
    fn normal_form_has_no_ambiguity_left() {
        for path in generated_paths() {
            let Ok(normal) = normalize(&path) else {
                continue;
            };
            let n: &str = &normal;
            assert!(n.starts_with('/'), "{path:?} -> {n:?}");
            assert!(n.len() <= path.len(), "{path:?} -> {n:?}");
            for bad in ["//", "/./", "/../", "%2F", "%2f", "%5C", "%5c", ";", "\\"] {
                assert!(!n.contains(bad), "{path:?} -> {n:?} contains {bad:?}");
            }
            assert!(
                !n.ends_with("/.") && !n.ends_with("/.."),
                "{path:?} -> {n:?}"
            );
            assert!(!is_double_encoded(n), "{path:?} -> {n:?}");
            let bytes = n.as_bytes();
            for (i, _) in n.match_indices('%') {
                let hex = &bytes[i + 1..i + 3];
                assert!(
                    hex.iter()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                    "{path:?} -> {n:?}: lower-case hex"
                );
                let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
                assert!(
                    !is_unreserved(byte),
                    "{path:?} -> {n:?}: escaped unreserved"
                );
            }
        }
    }

    #[test]
    fn accepted_paths_are_printable_ascii() {
        for path in generated_paths() {
            if let Ok(normal) = normalize(&path) {
                assert!(
                    normal.bytes().all(|b| b.is_ascii_graphic()),
                    "{path:?} -> {normal:?}"
                );
            }
        }
    }
}

//! `http::path::normalize` on arbitrary UTF-8: never panics, and what it returns is a normal
//! form: normalising it again changes nothing, and it has no empty or dot segment, no escaped
//! slash, no escape of an unreserved character and no lower-case escape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::http::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(out) = normalize(path) else {
        return;
    };
    let out: &str = &out;
    assert!(out.starts_with('/'), "{path:?} -> {out:?}");
    match normalize(out) {
        Ok(again) => assert_eq!(again, out, "not idempotent: {path:?} -> {out:?}"),
        Err(error) => panic!("{path:?} -> {out:?}, which is refused: {error}"),
    }
    for pattern in ["//", "/./", "/../"] {
        assert!(
            !out.contains(pattern),
            "{path:?} -> {out:?} has {pattern:?}"
        );
    }
    assert!(
        !out.ends_with("/.") && !out.ends_with("/.."),
        "{path:?} -> {out:?} ends in a dot segment"
    );
    let bytes = out.as_bytes();
    for (at, _) in out.match_indices('%') {
        let escape = &bytes[at..(at + 3).min(bytes.len())];
        let hex = |b: u8| matches!(b, b'0'..=b'9' | b'A'..=b'F');
        assert!(
            escape.len() == 3 && hex(escape[1]) && hex(escape[2]),
            "{path:?} -> {out:?}: escape at {at} is not %XX with upper-case hex"
        );
        let byte = u8::from_str_radix(std::str::from_utf8(&escape[1..]).unwrap(), 16).unwrap();
        assert!(
            !(byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')),
            "{path:?} -> {out:?}: escape of the unreserved {:?}",
            byte as char
        );
        assert!(
            byte != b'/' && byte != b'\\',
            "{path:?} -> {out:?}: escaped slash"
        );
    }
});

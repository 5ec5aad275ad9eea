//! Hop-by-hop header handling (RFC 9110 §7.6.1): what one connection says about itself is
//! not forwarded to the next.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only ever describe the connection they arrived on.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and any header the `Connection` header names. An `Upgrade`
/// handshake keeps `Connection: upgrade` and `Upgrade`, which the next hop must see.
/// `TE: trailers` survives (gRPC requires it); `Expect` is answered by this proxy itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these: one pass over the names instead of a dozen hashed
    // removals (this function was a tenth of the proxy's instructions per request).
    if !headers
        .iter()
        .any(|(name, value)| needs_stripping(name, value))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    let upgrade_value = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    headers.remove(header::EXPECT);
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(value) = upgrade_value {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, value);
    }
}

/// Whether a header line is one [`strip_hop_by_hop`] removes or rewrites.
fn needs_stripping(name: &HeaderName, value: &HeaderValue) -> bool {
    match *name {
        header::TE => value.as_bytes() != b"trailers",
        header::CONNECTION | header::EXPECT => true,
        _ => {
            HOP_BY_HOP.contains(name)
                || name.as_str() == "keep-alive"
                || name.as_str() == "proxy-connection"
        }
    }
}

/// Whether an HTTP/1 request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
/// An upgrade to `h2c` is not one the proxy carries: behind it the app would speak HTTP/2 to
/// the client directly, and no later request would be routed or authorised ("h2c
/// smuggling"); its headers are removed as hop-by-hop, as Envoy does by default.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let to_h2c = headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
    });
    !to_h2c
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn removes_connection_headers_and_the_ones_they_name() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("te", "gzip, trailers"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let mut names: Vec<_> = map.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut map = headers(&[
            ("te", "trailers"),
            ("content-type", "application/grpc"),
            ("x-a", "1"),
        ]);
        let before = map.clone();
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map, before);
        for (name, value) in [
            ("keep-alive", "1"),
            ("proxy-connection", "x"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
        ] {
            let mut map = headers(&[(name, value), ("x-a", "1")]);
            strip_hop_by_hop(&mut map, false);
            assert!(!map.contains_key(name), "{name} survived");
            assert_eq!(map["x-a"], "1");
        }
    }

    #[test]
    fn an_upgrade_keeps_its_handshake_headers() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        assert_eq!(map["sec-websocket-key"], "k");
    }

    #[test]
    fn an_upgrade_to_h2c_is_not_carried() {
        let mut h = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAoAAAAAIAAAAA"),
        );
        let upgrade = is_upgrade(&h);
        assert!(!upgrade);
        strip_hop_by_hop(&mut h, upgrade);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn upgrade_without_connection_token_is_not_an_upgrade() {
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    }
}

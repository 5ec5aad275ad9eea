//! `tls::san::parse_leaf`, the proxy's own DER walker, on arbitrary bytes: never panics (it
//! reads every certificate a peer sidecar presents, before the peer is authenticated).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = skiff_proxy::tls::san::parse_leaf(data);
});

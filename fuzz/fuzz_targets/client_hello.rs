//! `tls::inspect_client_hello`, which reads an inbound connection's first bytes before anything
//! is authenticated: never panics, and the verdict only firms up as bytes arrive: no prefix of
//! a complete ClientHello is called `NotTls` (the inbound side would then treat a sidecar's
//! connection as plaintext).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::tls::{inspect_client_hello, HelloCheck};

fuzz_target!(|data: &[u8]| {
    let whole = inspect_client_hello(data);
    if !matches!(whole, HelloCheck::ClientHello { .. }) {
        return;
    }
    // Every short prefix, then 32 spread over the rest (all of them would be quadratic).
    let step = (data.len() / 32).max(1);
    let cuts = (0..data.len().min(64)).chain((64..data.len()).step_by(step));
    for cut in cuts {
        let prefix = inspect_client_hello(&data[..cut]);
        assert_ne!(
            prefix,
            HelloCheck::NotTls,
            "the first {cut} of {} bytes of a ClientHello are not TLS",
            data.len()
        );
    }
});

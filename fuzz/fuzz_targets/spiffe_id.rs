//! `SpiffeId::parse` is strict, so an ID has exactly one spelling: whatever it accepts, it
//! displays back byte for byte and parses again to the same ID; and an ID built from any three
//! strings that displays to something parseable parses back to itself (no separator smuggled
//! in a field).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::identity::SpiffeId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        let shown = id.to_string();
        assert_eq!(shown, text, "accepted, but spelled differently");
        assert_eq!(SpiffeId::parse(&shown), Ok(id));
    }
    // The same text as three fields, split at NUL bytes.
    let mut fields = text.splitn(3, '\0');
    let (Some(trust_domain), Some(namespace), Some(service_account)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let id = SpiffeId::new(trust_domain, namespace, service_account);
    if let Ok(parsed) = SpiffeId::parse(&id.to_string()) {
        assert_eq!(parsed, id, "{id} names another identity");
    }
});

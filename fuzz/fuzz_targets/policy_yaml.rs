//! `skiff_api::load` on one arbitrary file: every input is either a policy or a list of
//! problems; never a panic. Time and memory are bounded by the loader's own budgets (aliases,
//! depth, nodes, 4 MiB per file); `make fuzz` runs this with a 10 s per-input timeout, so a
//! quadratic blow-up is a finding too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let _ = skiff_api::load(&[("fuzz.yaml".to_string(), text)]);
});

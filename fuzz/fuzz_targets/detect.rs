//! Protocol detection (`detect::protocol_of`) on a connection's first bytes: never panics, and
//! once a prefix has a verdict, more bytes never change it (detection stops reading at the
//! first verdict, so a later change would mean a different protocol for the same connection
//! depending on how the bytes were split into reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_proxy::detect::protocol_of;

fuzz_target!(|data: &[u8]| {
    let whole = protocol_of(data);
    // Every short prefix, 32 spread over the rest (all of them would be quadratic), and one
    // the fuzzer picks with the last two bytes (free in most protocols' first bytes).
    let step = (data.len() / 32).max(1);
    let chosen = match data {
        [.., high, low] => usize::from(u16::from_be_bytes([*high, *low])) % data.len(),
        _ => 0,
    };
    let mut cuts: Vec<usize> = (0..data.len().min(64))
        .chain((64..data.len()).step_by(step))
        .chain([chosen])
        .collect();
    cuts.sort_unstable();
    let mut first_known = None;
    for cut in cuts {
        let Some(protocol) = protocol_of(&data[..cut]) else {
            assert_eq!(first_known, None, "undecided again after {cut} bytes");
            continue;
        };
        if let Some((earlier, at)) = first_known {
            assert_eq!(
                protocol, earlier,
                "{earlier:?} after {at} bytes, then {protocol:?} after {cut}"
            );
        } else {
            first_known = Some((protocol, cut));
        }
    }
    if let Some((earlier, at)) = first_known {
        assert_eq!(
            whole,
            Some(earlier),
            "{earlier:?} after {at} bytes, then {whole:?} after all {}",
            data.len()
        );
    }
});

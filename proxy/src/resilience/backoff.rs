//! The pause before a retry (DESIGN.md §6): exponential back-off with full jitter, so that
//! callers that failed together do not retry together. The caller sleeps; this only decides
//! how long.

use std::time::Duration;

/// Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): uniformly random in
/// `[0, min(max, base × 2^(retry-1))]`, both ends included, at nanosecond resolution. `retry`
/// is 1 for the first retry; 0 is treated as 1. A ceiling too large to compute is `max`.
pub fn full_jitter(retry: u32, base: Duration, max: Duration, rng: &mut fastrand::Rng) -> Duration {
    let ceiling = ceiling(retry, base, max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(0..=nanos))
}

/// `min(max, base × 2^(retry-1))`, saturating at `max`.
fn ceiling(retry: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(retry.saturating_sub(1));
    match factor.and_then(|factor| base.checked_mul(factor)) {
        Some(ceiling) => ceiling.min(max),
        None => max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(250);

    #[test]
    fn ceiling_doubles_from_base_up_to_max() {
        let table = [
            (0, 25),
            (1, 25),
            (2, 50),
            (3, 100),
            (4, 200),
            (5, 250),
            (31, 250),
            (32, 250),
            (u32::MAX, 250),
        ];
        for (retry, millis) in table {
            assert_eq!(
                ceiling(retry, BASE, MAX),
                Duration::from_millis(millis),
                "retry {retry}"
            );
        }
        // A huge base overflows the multiplication: the cap still applies.
        assert_eq!(ceiling(3, Duration::MAX, MAX), MAX);
    }

    #[test]
    fn samples_spread_over_the_whole_range() {
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in 1..=6 {
            let ceiling = ceiling(retry, BASE, MAX);
            let samples: Vec<Duration> = (0..2000)
                .map(|_| full_jitter(retry, BASE, MAX, &mut rng))
                .collect();
            let low = *samples.iter().min().unwrap();
            let high = *samples.iter().max().unwrap();
            let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
            assert!(high <= ceiling, "retry {retry}: {high:?} > {ceiling:?}");
            assert!(
                low < ceiling / 20,
                "retry {retry}: nothing near 0 ({low:?})"
            );
            assert!(
                high > ceiling * 19 / 20,
                "retry {retry}: nothing near the top ({high:?})"
            );
            // Uniform: the mean is about half the ceiling.
            assert!(
                mean > ceiling * 45 / 100 && mean < ceiling * 55 / 100,
                "retry {retry}: mean {mean:?} of {ceiling:?}"
            );
        }
    }

    #[test]
    fn zero_base_never_waits() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(
            full_jitter(3, Duration::ZERO, MAX, &mut rng),
            Duration::ZERO
        );
        assert_eq!(
            full_jitter(3, BASE, Duration::ZERO, &mut rng),
            Duration::ZERO
        );
    }
}

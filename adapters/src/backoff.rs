//! The one retry backoff of mycopod: exponential, capped, optionally jittered.
//!
//! Every retry (the reconcile queue, notification delivery, the Proxmox, Modbus and LLM
//! clients) waits `base * 2^(failures-1)`, never more than `cap`. Callers whose retries can
//! line up across many peers (clients, deliveries) take [`Backoff::jittered`], which spreads
//! the wait over the upper half of that delay, so it still grows and still respects the cap.

use std::time::Duration;

/// Exponential backoff with a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff starting at `base`, doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The wait after `failures` consecutive failures: zero for none, then `base`, `2 * base`,
    /// `4 * base`, … up to `cap`. Never overflows.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// [`Backoff::delay`] scaled by `jitter` in `[0, 1]` into its upper half
    /// (`0.5 * delay ..= delay`); out-of-range jitter is clamped.
    pub fn jittered(&self, failures: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self.delay(failures).mul_f64(0.5 + 0.5 * jitter)
    }

    /// [`Backoff::jittered`] with a random jitter.
    pub fn random(&self, failures: u32) -> Duration {
        self.jittered(failures, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_should_double_from_the_base_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 1_000 * MS);
        let delays: Vec<u128> = (0..7).map(|f| b.delay(f).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn huge_failure_counts_should_stay_at_the_cap_without_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        for failures in [31, 32, 33, 64, 1_000, u32::MAX] {
            assert_eq!(b.delay(failures), Duration::from_secs(300), "{failures}");
        }
        let huge = Backoff::new(Duration::MAX, Duration::from_secs(5));
        assert_eq!(huge.delay(3), Duration::from_secs(5));
    }

    #[test]
    fn jitter_should_spread_over_the_upper_half_and_never_pass_the_cap() {
        let b = Backoff::new(100 * MS, 1_000 * MS);
        assert_eq!(b.jittered(2, 0.0), 100 * MS);
        assert_eq!(b.jittered(2, 1.0), 200 * MS);
        assert_eq!(b.jittered(2, 0.5), 150 * MS);
        assert_eq!(b.jittered(2, -3.0), 100 * MS, "clamped below");
        assert_eq!(b.jittered(2, 7.0), 200 * MS, "clamped above");
        assert_eq!(b.jittered(2, f64::NAN), 100 * MS);
        assert_eq!(b.jittered(0, 1.0), Duration::ZERO);
        for failures in 1..40 {
            let d = b.random(failures);
            assert!(
                d >= b.delay(failures) / 2 && d <= b.delay(failures),
                "{d:?}"
            );
            assert!(d <= b.cap);
        }
    }
}

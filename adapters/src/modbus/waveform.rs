//! Waveforms for simulated registers, evaluated from the time elapsed on an injectable clock.
//!
//! Pure apart from the clock the caller hands in: the same waveform at the same elapsed time
//! gives the same value, so tests drive a [`ManualClock`] and get deterministic readings.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Where simulated time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time elapsed since the simulation started.
    fn elapsed(&self) -> Duration;
}

/// The real monotonic clock, counting from its creation.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that only moves when told to, for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock to an absolute elapsed time.
    pub fn set(&self, to: Duration) {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn elapsed(&self) -> Duration {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a simulated register's value moves over time.
#[derive(Debug, Clone, PartialEq)]
pub enum Waveform {
    /// Always the same value.
    Constant(f64),
    /// `center + amplitude * sin(2π t / period)`.
    Sine {
        /// Peak deviation from the center.
        amplitude: f64,
        /// Duration of one full cycle.
        period: Duration,
        /// Value around which the sine swings.
        center: f64,
    },
    /// `start + rate * t` (seconds): a totalizer or counter.
    Ramp {
        /// Value at t = 0.
        start: f64,
        /// Increase per second.
        rate_per_s: f64,
    },
    /// A seeded random walk: every `step_every`, the value moves by a uniform step in
    /// `[-max_step, max_step]`, clamped to `[min, max]`.
    RandomWalk {
        /// Seed of the walk; the same seed gives the same path.
        seed: u64,
        /// Value at t = 0.
        start: f64,
        /// Largest move per step.
        max_step: f64,
        /// Time between steps.
        step_every: Duration,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
}

impl Waveform {
    /// The value at `elapsed`.
    ///
    /// A random walk replays its steps from the seed, so the cost grows with the number of
    /// steps taken; [`WalkCache`] makes successive evaluations incremental.
    #[must_use]
    pub fn value_at(&self, elapsed: Duration, cache: &mut WalkCache) -> f64 {
        let t = elapsed.as_secs_f64();
        match self {
            Waveform::Constant(v) => *v,
            Waveform::Sine {
                amplitude,
                period,
                center,
            } => {
                let p = period.as_secs_f64();
                if p <= 0.0 {
                    *center
                } else {
                    center + amplitude * (std::f64::consts::TAU * t / p).sin()
                }
            }
            Waveform::Ramp { start, rate_per_s } => start + rate_per_s * t,
            Waveform::RandomWalk {
                seed,
                start,
                max_step,
                step_every,
                min,
                max,
            } => {
                let steps = if step_every.is_zero() {
                    0
                } else {
                    u64::try_from(elapsed.as_nanos() / step_every.as_nanos()).unwrap_or(u64::MAX)
                };
                cache.walk(*seed, *start, *max_step, *min, *max, steps)
            }
        }
    }
}

/// The position of a random walk, kept between evaluations so time moving forward costs only
/// the new steps.
#[derive(Debug, Clone)]
pub struct WalkCache {
    state: Option<(u64, u64, f64, StdRng)>,
}

impl WalkCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self { state: None }
    }

    fn walk(
        &mut self,
        seed: u64,
        start: f64,
        max_step: f64,
        min: f64,
        max: f64,
        steps: u64,
    ) -> f64 {
        let (mut done, mut value, mut rng) = match self.state.take() {
            Some((s, done, value, rng)) if s == seed && done <= steps => (done, value, rng),
            _ => (0, start.clamp(min, max), StdRng::seed_from_u64(seed)),
        };
        while done < steps {
            let step = if max_step > 0.0 {
                rng.random_range(-max_step..=max_step)
            } else {
                0.0
            };
            value = (value + step).clamp(min, max);
            done += 1;
        }
        self.state = Some((seed, done, value, rng));
        value
    }
}

impl Default for WalkCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn sine_should_peak_at_a_quarter_period() {
        let w = Waveform::Sine {
            amplitude: 2.0,
            period: Duration::from_secs(40),
            center: 10.0,
        };
        let mut c = WalkCache::new();
        assert!((w.value_at(Duration::ZERO, &mut c) - 10.0).abs() < 1e-9);
        assert!((w.value_at(Duration::from_secs(10), &mut c) - 12.0).abs() < 1e-9);
        assert!((w.value_at(Duration::from_secs(30), &mut c) - 8.0).abs() < 1e-9);
    }

    #[test]
    fn ramp_should_grow_linearly() {
        let w = Waveform::Ramp {
            start: 100.0,
            rate_per_s: 0.5,
        };
        let mut c = WalkCache::new();
        assert!((w.value_at(Duration::from_secs(60), &mut c) - 130.0).abs() < 1e-9);
    }

    #[test]
    fn random_walk_should_replay_the_same_path_for_the_same_seed_and_stay_in_bounds() {
        let w = Waveform::RandomWalk {
            seed: 7,
            start: 5.0,
            max_step: 1.0,
            step_every: Duration::from_millis(100),
            min: 0.0,
            max: 10.0,
        };
        let mut forward = WalkCache::new();
        let path: Vec<f64> = (0..200)
            .map(|i| w.value_at(Duration::from_millis(i * 50), &mut forward))
            .collect();
        assert!(path.iter().all(|v| (0.0..=10.0).contains(v)));
        assert!(
            path.windows(2).any(|p| p[0] != p[1]),
            "the walk never moved"
        );
        // Jumping straight to a time, or going back in time, gives the same value.
        let mut fresh = WalkCache::new();
        assert_eq!(
            w.value_at(Duration::from_millis(150 * 50), &mut fresh),
            path[150]
        );
        assert_eq!(
            w.value_at(Duration::from_millis(20 * 50), &mut fresh),
            path[20]
        );
    }

    #[test]
    fn manual_clock_should_move_only_when_told() {
        let c = ManualClock::new();
        assert_eq!(c.elapsed(), Duration::ZERO);
        c.advance(Duration::from_secs(3));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.elapsed(), Duration::from_secs(5));
        c.set(Duration::from_secs(1));
        assert_eq!(c.elapsed(), Duration::from_secs(1));
    }
}

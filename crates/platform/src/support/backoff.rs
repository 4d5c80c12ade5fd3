//! Exponential backoff with jitter, the one kind every wait-and-try-again in this crate uses: reconnects, re-polls and retries.

use std::time::Duration;

use rand::Rng;

/// How a delay is drawn from its exponential base `d`, so many clients backing off
/// together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[d/2, d]`: never much shorter than the base (reconnects, re-polls).
    Equal,
    /// Uniform in `[0, d]`: gRFC A6's retry backoff ("random(0, current_backoff)").
    Full,
}

/// Delays that grow from `initial` by `multiplier` per step up to `max`, each drawn by
/// its [`Jitter`] rule.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
    current: Duration,
}

impl Backoff {
    /// Doubling from `initial` to `max` with [`Jitter::Equal`]: for reconnects and re-polls.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::exponential(initial, max, 2.0, Jitter::Equal)
    }

    /// Growing from `initial` by `multiplier` (> 0; other values keep the delay at
    /// `initial`) up to `max`, each delay drawn by `jitter`.
    pub fn exponential(initial: Duration, max: Duration, multiplier: f64, jitter: Jitter) -> Self {
        let multiplier = if multiplier > 0.0 && multiplier.is_finite() { multiplier } else { 1.0 };
        Self { initial, max, multiplier, jitter, current: initial.min(max) }
    }

    /// The next delay to wait; the base grows for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        // Saturates at `max` instead of overflowing however large the multiplier.
        self.current =
            Duration::try_from_secs_f64(base.as_secs_f64() * self.multiplier).unwrap_or(self.max).min(self.max);
        let share = rand::rng().random::<f64>();
        match self.jitter {
            Jitter::Equal => base / 2 + (base / 2).mul_f64(share),
            Jitter::Full => base.mul_f64(share),
        }
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.current = self.initial.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset_to_the_start() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        let bounds = [100, 200, 400, 400, 400];
        for (delay, bound) in delays.iter().zip(bounds) {
            let bound = Duration::from_millis(bound);
            assert!(*delay >= bound / 2 && *delay <= bound, "{delay:?} outside [{:?}, {bound:?}]", bound / 2);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_stays_under_the_grfc_a6_bound_and_a_huge_multiplier_saturates() {
        let mut backoff = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(50), 3.0, Jitter::Full);
        for bound in [10, 30, 50, 50] {
            assert!(backoff.next_delay() <= Duration::from_millis(bound));
        }
        let mut huge = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1), 1e300, Jitter::Full);
        for _ in 0..5 {
            assert!(huge.next_delay() <= Duration::from_secs(1));
        }
    }
}

//! Exponential backoff with jitter, for reconnects and re-polls.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`; each delay is drawn uniformly from
/// `[d/2, d]` ("equal jitter"), so many clients retrying together spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, current: initial }
    }

    /// The next delay to wait, then doubles the base for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Back to `initial` after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
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
}

//! Exponential back-off with jitter for retries.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: doubles up to `max`, with up to 20 % jitter so that
    /// members restarted together do not retry in lockstep.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let jitter_ms = u64::try_from(base.as_millis() / 5).unwrap_or(0);
        let jitter = if jitter_ms == 0 {
            0
        } else {
            rand::random::<u64>() % jitter_ms
        };
        base + Duration::from_millis(jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(120));
        assert!(delays[1] >= Duration::from_millis(200) && delays[1] < Duration::from_millis(240));
        assert!(delays[9] >= Duration::from_secs(5) && delays[9] <= Duration::from_secs(6));
        backoff.reset();
        assert!(backoff.next_delay() < Duration::from_millis(120));
    }
}

//! Pauses between attempts: exponential, capped, with jitter.
//!
//! Invariant: a pause never exceeds the cap of the phase it is in; while a fault is young
//! (`short_for`), the cap is `short_cap`, so that topicrule is back within about that long
//! after a short outage (a broker restart), and only a long outage backs off to `long_cap`.

use std::time::{Duration, Instant};

use rand::Rng;

/// One backoff schedule, reset when the attempt succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    short_cap: Duration,
    long_cap: Duration,
    short_for: Duration,
    /// The pause before jitter; doubles at every failure up to the cap.
    next: Duration,
    /// When the current run of failures began; `None` after a success.
    since: Option<Instant>,
}

impl Backoff {
    /// Pauses from `initial`, doubling up to `short_cap` during the first `short_for` of a
    /// run of failures, then up to `long_cap`.
    pub fn new(
        initial: Duration,
        short_cap: Duration,
        short_for: Duration,
        long_cap: Duration,
    ) -> Backoff {
        Backoff {
            initial,
            short_cap,
            long_cap,
            short_for,
            next: initial,
            since: None,
        }
    }

    /// Reconnecting to a broker: 50 ms doubling to 500 ms for 30 s, then up to 5 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
    }

    /// Retrying a sink that failed (a store, a disk) until it works: 1 s doubling to a
    /// minute.
    pub fn sink() -> Backoff {
        let minute = Duration::from_secs(60);
        Backoff::new(Duration::from_secs(1), minute, Duration::ZERO, minute)
    }

    /// The attempts of one action: 100 ms doubling, up to 5 s.
    pub fn attempts() -> Backoff {
        let cap = Duration::from_secs(5);
        Backoff::new(Duration::from_millis(100), cap, Duration::ZERO, cap)
    }

    /// The pause before the next attempt, between half and all of the schedule's value
    /// (jitter, so that many clients of one broker do not retry in step).
    pub fn pause(&mut self) -> Duration {
        let since = *self.since.get_or_insert_with(Instant::now);
        let cap = if since.elapsed() < self.short_for {
            self.short_cap
        } else {
            self.long_cap
        };
        let base = self.next.min(cap);
        self.next = (base * 2).min(cap);
        base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// The attempt succeeded: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_short_cap_with_jitter() {
        let mut backoff = Backoff::reconnect();
        let pauses: Vec<Duration> = (0..8).map(|_| backoff.pause()).collect();
        assert!(pauses[0] >= Duration::from_millis(25) && pauses[0] <= Duration::from_millis(50));
        assert!(pauses[1] >= Duration::from_millis(50) && pauses[1] <= Duration::from_millis(100));
        for pause in &pauses[4..] {
            assert!(*pause >= Duration::from_millis(250) && *pause <= Duration::from_millis(500));
        }
    }

    #[test]
    fn a_long_run_of_failures_reaches_the_long_cap_and_reset_starts_over() {
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::ZERO,
            Duration::from_secs(2),
        );
        let longest = (0..10).map(|_| backoff.pause()).max().unwrap();
        assert!(longest > Duration::from_millis(200) && longest <= Duration::from_secs(2));
        backoff.reset();
        assert!(backoff.pause() <= Duration::from_millis(100));
    }
}

//! The kubelet's per-container exponential back-off (`flowcontrol.Backoff`): 10 s doubling to
//! 5 min, forgotten after twice the maximum without a new failure. Used for crash-looping
//! containers (`CrashLoopBackOff`) and failed image pulls (`ImagePullBackOff`).
//!
//! Time is `tokio::time::Instant`, so tests run it under a paused clock.

use std::time::Duration;
use tokio::time::Instant;

/// First back-off after a failure.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Longest back-off.
pub const MAX: Duration = Duration::from_secs(300);

/// Back-off state of one key (one container, or one container's image).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Current window and when the last failure was recorded; `None` until the first one.
    entry: Option<(Duration, Instant)>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            entry: None,
        }
    }

    fn live_entry(&self, now: Instant) -> Option<(Duration, Instant)> {
        // An entry not refreshed for twice the maximum is stale: the key starts over.
        self.entry
            .filter(|(_, last)| now.saturating_duration_since(*last) <= self.max * 2)
    }

    /// Records a failure at `at`: the window starts at the initial value or doubles.
    pub fn next(&mut self, at: Instant) {
        let window = match self.live_entry(at) {
            Some((w, _)) => (w * 2).min(self.max),
            None => self.initial,
        };
        self.entry = Some((window, at));
    }

    /// How long is left of the window opened by the failure at `since`, if any
    /// (kubelet `IsInBackOffSince`).
    pub fn remaining_since(&self, since: Instant, now: Instant) -> Option<Duration> {
        let (window, _) = self.live_entry(now)?;
        let elapsed = now.saturating_duration_since(since);
        window.checked_sub(elapsed).filter(|d| !d.is_zero())
    }

    /// How long is left of the window opened by the last recorded failure
    /// (kubelet `IsInBackOffSinceUpdate`).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let (_, last) = self.live_entry(now)?;
        self.remaining_since(last, now)
    }

    /// The current window, for messages like `back-off 20s restarting failed container`.
    pub fn window(&self) -> Duration {
        self.entry.map(|(w, _)| w).unwrap_or(self.initial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_maximum() {
        let mut b = Backoff::default();
        let mut windows = Vec::new();
        for _ in 0..8 {
            let now = Instant::now();
            b.next(now);
            windows.push(b.window().as_secs());
            assert!(b.remaining(now).is_some());
            tokio::time::advance(b.window()).await;
            assert_eq!(b.remaining(Instant::now()), None, "window over");
        }
        assert_eq!(windows, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down() {
        let mut b = Backoff::default();
        assert_eq!(b.remaining(Instant::now()), None, "no failure yet");
        b.next(Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.remaining(Instant::now()), Some(Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn forgotten_after_twice_the_maximum() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.next(Instant::now());
        }
        assert_eq!(b.window(), Duration::from_secs(80));
        tokio::time::advance(MAX * 2 + Duration::from_secs(1)).await;
        b.next(Instant::now());
        assert_eq!(b.window(), INITIAL);
    }
}

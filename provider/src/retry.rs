//! The one backoff every client uses: named, jittered, and bounded by the caller's deadline.
//!
//! A [`Backoff`] says how long to pause before the next try and refuses to pause past the
//! deadline, so no request is sent again (and no wait goes on) after the resource's timeout.
//! Which errors are worth another try stays with each client (`proxmox::retry::Policy`,
//! `infisical::retry::classify`): this module only decides *when*.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A named backoff shape: exponential from `first` up to `max`, with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Name used in logs.
    pub name: &'static str,
    /// First pause.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
    /// Spread each pause over `[1 - jitter, 1]` of its window so parallel resources do not
    /// retry in step; 0 for polls of one's own task.
    pub jitter: f64,
}

/// Polling a wait (a task, a lock, a node): fast at first, then once a second, no jitter.
pub const POLL: Backoff = Backoff {
    name: "poll",
    first: Duration::from_millis(50),
    max: Duration::from_secs(1),
    jitter: 0.0,
};

impl Backoff {
    /// The pause before try number `step + 1` (0-based), given a random `unit` in `[0, 1)`.
    pub fn pause(&self, step: u32, unit: f64) -> Duration {
        let window = self
            .first
            .saturating_mul(2u32.saturating_pow(step.min(20)))
            .min(self.max);
        window.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0))
    }

    /// A fresh sequence of pauses that ends at `deadline`.
    pub fn until(self, deadline: Instant) -> Pauses {
        Pauses {
            backoff: self,
            deadline,
            step: 0,
        }
    }
}

/// The pauses of one retry or poll loop.
#[derive(Debug, Clone)]
pub struct Pauses {
    backoff: Backoff,
    deadline: Instant,
    step: u32,
}

impl Pauses {
    /// The deadline these pauses end at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sleeps before the next try: `hint` (a server's `Retry-After`) or the next backoff step.
    /// Returns `false` without sleeping when the pause would reach the deadline: the caller
    /// then gives up with the last error it saw.
    pub async fn sleep(&mut self, hint: Option<Duration>) -> bool {
        self.sleep_before(hint, self.deadline).await
    }

    /// As [`sleep`](Self::sleep), but also refuses a pause that would reach `sooner`: a grace
    /// shorter than the deadline (how long a node may stay silent) on the same backoff.
    pub async fn sleep_before(&mut self, hint: Option<Duration>, sooner: Instant) -> bool {
        let pause = hint.unwrap_or_else(|| self.backoff.pause(self.step, rand::random::<f64>()));
        if Instant::now() + pause >= self.deadline.min(sooner) {
            return false;
        }
        tracing::debug!(
            backoff = self.backoff.name,
            pause_ms = pause.as_millis() as u64,
            "pausing before the next try"
        );
        tokio::time::sleep(pause).await;
        self.step = self.step.saturating_add(1);
        true
    }

    /// Runs one try, cut off at the deadline: `None` when the deadline came first, so a request
    /// that hangs cannot outlive the resource's timeout.
    pub async fn bounded<T>(&self, attempt: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.deadline, attempt).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Backoff = Backoff {
        name: "test",
        first: Duration::from_millis(100),
        max: Duration::from_secs(1),
        jitter: 0.5,
    };

    #[test]
    fn pauses_double_up_to_the_cap_and_jitter_only_shortens_them() {
        assert_eq!(SHAPE.pause(0, 0.0), Duration::from_millis(100));
        assert_eq!(SHAPE.pause(1, 0.0), Duration::from_millis(200));
        assert_eq!(SHAPE.pause(9, 0.0), Duration::from_secs(1));
        assert_eq!(SHAPE.pause(1, 0.999_999).as_millis(), 100);
        assert_eq!(POLL.pause(3, 0.9), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn no_pause_reaches_past_the_deadline() {
        let start = Instant::now();
        let mut pauses = SHAPE.until(start + Duration::from_millis(350));
        assert!(pauses.sleep(Some(Duration::from_millis(300))).await);
        assert!(!pauses.sleep(Some(Duration::from_millis(50))).await);
        assert_eq!(Instant::now() - start, Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_grace_ends_the_pauses_before_the_deadline_on_the_same_backoff() {
        let start = Instant::now();
        let mut pauses = POLL.until(start + Duration::from_secs(60));
        let grace = start + Duration::from_millis(200);
        // 50 ms, then 100 ms; the next (200 ms) would pass the grace.
        assert!(pauses.sleep_before(None, grace).await);
        assert!(pauses.sleep_before(None, grace).await);
        assert!(!pauses.sleep_before(None, grace).await);
        assert_eq!(Instant::now() - start, Duration::from_millis(150));
        // The deadline itself is still far: the same backoff goes on from where it was.
        assert!(pauses.sleep(None).await);
        assert_eq!(Instant::now() - start, Duration::from_millis(350));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_sleep_as_the_backoff_says_and_stop_at_the_deadline() {
        let start = Instant::now();
        let mut pauses = POLL.until(start + Duration::from_millis(1000));
        let mut slept = Vec::new();
        let mut last = start;
        while pauses.sleep(None).await {
            slept.push((Instant::now() - last).as_millis());
            last = Instant::now();
        }
        // 50, 100, 200, 400 ms (750 ms in all); the next pause, 800 ms, would pass the deadline.
        assert_eq!(slept, [50, 100, 200, 400]);
        assert_eq!(Instant::now() - start, Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_try_is_cut_off_at_the_deadline() {
        let pauses = SHAPE.until(Instant::now() + Duration::from_secs(2));
        let hung = pauses.bounded(std::future::pending::<()>()).await;
        assert_eq!(hung, None);
    }
}

//! Polling that starts fast and backs off: quick answers are seen quickly, slow ones do not
//! flood the node. talosctl polls every 5 s; castle starts at 100 ms.

use std::time::Duration;

use tokio::time::Instant;

/// An interval that doubles from 100 ms up to 1 s.
pub struct Backoff {
    next: Duration,
    rounds: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new() -> Self {
        Self { next: Duration::from_millis(100), rounds: 0 }
    }

    /// How many times it has waited.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Sleeps for the next interval; `false` (without sleeping) when that would pass `deadline`.
    pub async fn wait(&mut self, deadline: Instant) -> bool {
        if Instant::now() + self.next >= deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.rounds += 1;
        self.next = (self.next * 2).min(Duration::from_secs(1));
        true
    }
}

//! Named retry policies. Each retries *sending a request* whose failure it understands, with
//! backoff and jitter, until a deadline the caller gives; none re-runs a wait blindly.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Error;

/// When to try again and how long to pause.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Name used in logs.
    pub name: &'static str,
    /// First pause.
    pub first: Duration,
    /// Longest pause.
    pub max: Duration,
    /// Which errors are worth another try.
    pub retry_if: fn(&Error) -> bool,
}

/// Ordinary API calls: connection trouble and gateway errors.
pub const API_CALL: Policy = Policy {
    name: "api call",
    first: Duration::from_millis(200),
    max: Duration::from_secs(5),
    retry_if: Error::is_transient,
};

/// Calls that take a config or storage lock (clone, config, resize, delete): PVE gives up on
/// a busy lock after about 10 s, so wait and try again.
pub const LOCKED: Policy = Policy {
    name: "lock timeout",
    first: Duration::from_millis(500),
    max: Duration::from_secs(8),
    retry_if: |e| e.is_transient() || e.is_lock_timeout(),
};

/// Runs `attempt` until it succeeds, fails for a reason `policy` does not retry, or `deadline`
/// passes (then the last error is returned).
pub async fn with_policy<T, F, Fut>(
    policy: Policy,
    deadline: Instant,
    what: &str,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut pause = policy.first;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if (policy.retry_if)(&error) => {
                let jitter = rand::thread_rng().gen_range(0.8..1.2);
                let sleep = pause.mul_f64(jitter);
                if Instant::now() + sleep >= deadline {
                    return Err(error);
                }
                tracing::info!(policy = policy.name, %error, "retrying {what} in {:?}", sleep);
                tokio::time::sleep(sleep).await;
                pause = (pause * 2).min(policy.max);
            }
            Err(error) => return Err(error),
        }
    }
}

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

/// Requests that must not run twice (clone, start): only PVE's lock timeouts, which refuse the
/// request before anything happens. A lost answer is left to [`unless_done`].
pub const NOT_IDEMPOTENT: Policy = Policy {
    name: "lock timeout (not idempotent)",
    first: Duration::from_millis(500),
    max: Duration::from_secs(8),
    retry_if: Error::is_lock_timeout,
};

/// Sends a request that must not run twice. When its answer is lost (see
/// [`Error::is_answer_lost`]) PVE may have carried it out, so `done` looks first: `Some` is
/// the outcome of the earlier request, `None` means it never happened and it is sent again.
pub async fn unless_done<T, S, SFut, D, DFut>(
    deadline: Instant,
    what: &str,
    mut send: S,
    mut done: D,
) -> Result<T, Error>
where
    S: FnMut() -> SFut,
    SFut: Future<Output = Result<T, Error>>,
    D: FnMut() -> DFut,
    DFut: Future<Output = Result<Option<T>, Error>>,
{
    let mut pause = API_CALL.first;
    loop {
        match with_policy(NOT_IDEMPOTENT, deadline, what, &mut send).await {
            Err(error) if error.is_answer_lost() => {
                if Instant::now() + pause >= deadline {
                    return Err(error);
                }
                tracing::info!(%error, "answer to {what} lost; checking whether it happened");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(API_CALL.max);
                let check = format!("check whether {what} happened");
                if let Some(value) = with_policy(API_CALL, deadline, &check, &mut done).await? {
                    return Ok(value);
                }
            }
            other => return other,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn bad_gateway() -> Error {
        Error::Api {
            status: 502,
            message: "Bad Gateway".into(),
            errors: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_happened_despite_a_lost_answer_is_not_sent_again() {
        let sent = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = unless_done(
            deadline,
            "clone",
            || async {
                sent.fetch_add(1, Ordering::SeqCst);
                Err::<&str, _>(bad_gateway())
            },
            || async { Ok(Some("found")) },
        )
        .await;
        assert_eq!(result.unwrap(), "found");
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_did_not_happen_is_sent_again() {
        let sent = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = unless_done(
            deadline,
            "clone",
            || async {
                match sent.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(bad_gateway()),
                    _ => Ok("sent"),
                }
            },
            || async { Ok(None) },
        )
        .await;
        assert_eq!(result.unwrap(), "sent");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_is_not_sent_again() {
        let sent = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = unless_done(
            deadline,
            "clone",
            || async {
                sent.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::Api {
                    status: 500,
                    message: "VM 105 already exists".into(),
                    errors: Default::default(),
                })
            },
            || async { Ok(None) },
        )
        .await;
        assert!(result.unwrap_err().is_vmid_taken());
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }
}

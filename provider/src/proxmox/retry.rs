//! Named retry policies of the Proxmox client. Each retries *sending a request* whose failure
//! it understands, pausing as [`crate::retry::Backoff`] says, until a deadline the caller gives;
//! none re-runs a wait blindly, and no try runs past the deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::Error;
use crate::retry::Backoff;

/// When to try again and how long to pause.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Name and pauses.
    pub backoff: Backoff,
    /// Which errors are worth another try.
    pub retry_if: fn(&Error) -> bool,
}

/// Ordinary API calls: connection trouble, gateway errors and unreachable nodes.
pub const API_CALL: Policy = Policy {
    backoff: Backoff {
        name: "proxmox api call",
        first: Duration::from_millis(200),
        max: Duration::from_secs(5),
        jitter: 0.5,
    },
    retry_if: Error::is_transient,
};

/// Reads that can look elsewhere when a node does not answer (595/596): as [`API_CALL`], but an
/// unreachable node is reported at once, for the caller to ask the cluster list where the VM is
/// instead of waiting for the node.
pub const ELSEWHERE_IF_DOWN: Policy = Policy {
    backoff: API_CALL.backoff,
    retry_if: |e| e.is_transient() && !e.is_node_unreachable(),
};

/// Calls that take a config or storage lock (config, resize, delete, shutdown): PVE gives up
/// on a busy lock after about 10 s, and refuses a VM a backup or migration holds (`VM is locked
/// (backup)`), so wait and try again.
pub const LOCKED: Policy = Policy {
    backoff: Backoff {
        name: "proxmox lock timeout",
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        jitter: 0.5,
    },
    retry_if: |e| e.is_transient() || e.is_lock_timeout() || e.is_vm_locked(),
};

/// Requests that must not run twice (clone, start): only PVE's lock refusals, which come before
/// anything happens. A lost answer is left to [`unless_done`].
pub const NOT_IDEMPOTENT: Policy = Policy {
    backoff: Backoff {
        name: "proxmox lock timeout (not idempotent)",
        first: Duration::from_millis(500),
        max: Duration::from_secs(8),
        jitter: 0.5,
    },
    retry_if: |e| e.is_lock_timeout() || e.is_vm_locked(),
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
    let mut pauses = API_CALL.backoff.until(deadline);
    loop {
        match with_policy(NOT_IDEMPOTENT, deadline, what, &mut send).await {
            Err(error) if error.is_answer_lost() => {
                tracing::info!(%error, "answer to {what} lost; checking whether it happened");
                if !pauses.sleep(None).await {
                    return Err(error);
                }
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
/// passes: then the last error is returned, or [`Error::Timeout`] when a try itself hung.
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
    let mut pauses = policy.backoff.until(deadline);
    loop {
        let Some(result) = pauses.bounded(attempt()).await else {
            return Err(Error::Timeout(format!(
                "waiting for Proxmox to answer {what}"
            )));
        };
        match result {
            Ok(value) => return Ok(value),
            Err(error) if (policy.retry_if)(&error) => {
                tracing::info!(policy = policy.backoff.name, %error, "retrying {what}");
                if !pauses.sleep(None).await {
                    return Err(error);
                }
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
        assert!(result.unwrap_err().is_vmid_taken(105));
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }
}

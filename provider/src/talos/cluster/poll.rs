//! Polling that starts fast and backs off: quick answers are seen quickly, slow ones do not
//! flood the node. talosctl polls every 5 s; castle starts at 100 ms.
//!
//! Every attempt is bounded too (by [`ATTEMPT_TIMEOUT`] and by the caller's deadline): a node
//! that accepts a connection and then says nothing must not hold a wait past its deadline, and
//! the timeout error still carries the last answer seen.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::ClusterError;
use crate::retry::Backoff;

/// Bound of one attempt (a probe, a call, one pass of the health checks).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// How a node is polled: 100 ms doubling up to 1 s, no jitter (each wait polls its own node).
/// The pauses are the shared [`crate::retry::Backoff`]'s, bounded by the caller's deadline.
pub const NODE_POLL: Backoff = Backoff {
    name: "talos node poll",
    first: Duration::from_millis(100),
    max: Duration::from_secs(1),
    jitter: 0.0,
};

/// Bound of one Upgrade request: Talos pulls and checks the installer image inside the
/// request, before it answers (Talos: internal/app/machined/internal/server/v1alpha1/
/// v1alpha1_server.go (v1.12.0) `Upgrade` calls `install.PullAndValidateInstallerImage`), and a
/// few hundred megabytes from the Image Factory take minutes on a home link. Cutting it short
/// would cancel the pull and start it again, forever.
pub const UPGRADE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Runs `attempt`, bounded by [`ATTEMPT_TIMEOUT`] and by `deadline`; `None` when time ran out.
pub async fn bounded<T>(deadline: Instant, attempt: impl Future<Output = T>) -> Option<T> {
    bounded_by(deadline, ATTEMPT_TIMEOUT, attempt).await
}

/// Runs `attempt`, bounded by `limit` and by `deadline`; `None` when time ran out.
pub async fn bounded_by<T>(
    deadline: Instant,
    limit: Duration,
    attempt: impl Future<Output = T>,
) -> Option<T> {
    let until = deadline.min(Instant::now() + limit);
    tokio::time::timeout_at(until, attempt).await.ok()
}

/// What a wait is still waiting for: the check, where, and the last answer seen.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The check, e.g. "etcd to be healthy".
    pub check: String,
    /// Node as "name (ip)", or "the cluster (endpoint)".
    pub node: String,
    /// The last answer.
    pub last: String,
}

impl Pending {
    /// The timeout error for this check.
    pub fn timed_out(self) -> ClusterError {
        ClusterError::Timeout {
            check: self.check,
            node: self.node,
            last: self.last,
        }
    }
}

/// Repeats `attempt` (each one bounded), pausing as [`NODE_POLL`] says, until it is done (`Ok(Ok)`), fails
/// for good (`Err`), or `deadline` comes: then the error names the pending check with the last
/// answer seen. `waiting` says what is waited for before any answer came.
pub async fn poll<T, F, Fut>(
    deadline: Instant,
    waiting: Pending,
    attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, Pending>, ClusterError>>,
{
    poll_each(deadline, ATTEMPT_TIMEOUT, waiting, attempt).await
}

/// [`poll`] with another bound than [`ATTEMPT_TIMEOUT`] on each attempt.
pub async fn poll_each<T, F, Fut>(
    deadline: Instant,
    limit: Duration,
    waiting: Pending,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, Pending>, ClusterError>>,
{
    let mut pauses = NODE_POLL.until(deadline);
    let mut pending = waiting;
    let mut answered = false;
    loop {
        match bounded_by(deadline, limit, attempt()).await {
            Some(Ok(Ok(done))) => return Ok(done),
            Some(Ok(Err(now))) => {
                pending = now;
                answered = true;
            }
            Some(Err(e)) => return Err(e),
            // The attempt hung for its whole bound: that is the answer.
            None if Instant::now() < deadline => {
                pending.last = format!("no answer within {} s", limit.as_secs());
                answered = true;
            }
            // The deadline cut an attempt short: the previous answer is the informative one.
            None if !answered => pending.last = "no answer before the timeout".to_string(),
            None => {}
        }
        if !pauses.sleep(None).await {
            return Err(pending.timed_out());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> Pending {
        Pending {
            check: "the node to answer".into(),
            node: "cp-1 (10.0.0.11)".into(),
            last: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_ends_at_the_deadline_with_the_previous_answer() {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        let mut calls = 0;
        let result: Result<(), _> = poll(deadline, waiting(), || {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    return Ok(Err(Pending {
                        last: "connection refused".into(),
                        ..waiting()
                    }));
                }
                std::future::pending().await
            }
        })
        .await;
        let error = result.unwrap_err().to_string();
        assert!(Instant::now() <= deadline, "waited past the deadline");
        assert!(error.contains("on cp-1 (10.0.0.11)"), "{error}");
        // The second attempt hung for its 15 s bound, then the third was cut by the deadline.
        assert!(error.contains("no answer within 15 s"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_answer_is_seen_within_a_fraction_of_a_second() {
        let started = Instant::now();
        let mut calls = 0;
        let result = poll(started + Duration::from_secs(60), waiting(), || {
            calls += 1;
            let ready = calls == 3;
            async move { Ok(if ready { Ok(()) } else { Err(waiting()) }) }
        })
        .await;
        assert!(result.is_ok());
        assert!(
            Instant::now() - started <= Duration::from_millis(300),
            "{:?}",
            Instant::now() - started
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_ends_the_wait_at_once() {
        let result: Result<(), _> = poll(
            Instant::now() + Duration::from_secs(60),
            waiting(),
            || async { Err(ClusterError::Credentials("bad".into())) },
        )
        .await;
        assert!(matches!(result, Err(ClusterError::Credentials(_))));
    }
}

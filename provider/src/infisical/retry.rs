//! When to send an Infisical request again, and how long to wait first.
//!
//! Retries are bounded by a deadline the caller passes (the resource's timeout), never by a
//! count: a rate-limited apply keeps going as long as the user allowed, and stops as soon as
//! waiting would overshoot.

use std::time::Duration;

/// A named backoff policy: exponential with full jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Name used in logs.
    pub name: &'static str,
    /// Wait before the first retry.
    pub initial: Duration,
    /// Upper bound of a single wait.
    pub max: Duration,
}

/// Every API call: rate limits, 5xx answers and connection errors.
pub const API_CALL: RetryPolicy = RetryPolicy {
    name: "infisical-api-call",
    initial: Duration::from_millis(250),
    max: Duration::from_secs(10),
};

/// What to do with an answer (or a failure to get one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: success or a final error.
    Final,
    /// Transient: wait (the server's `Retry-After` if it sent one, else backoff) and send again.
    Retry(Option<Duration>),
    /// The token was refused: log in again, then send again (once).
    Relogin,
}

/// Classifies an HTTP status. `retry_after` is the parsed `Retry-After` header.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        429 => Verdict::Retry(retry_after),
        401 | 403 => Verdict::Relogin,
        // 501 Not Implemented will not start working on its own.
        500 | 502..=599 => Verdict::Retry(retry_after),
        _ => Verdict::Final,
    }
}

/// Parses `Retry-After` as a number of seconds (the form Infisical sends); HTTP dates are not
/// used by Infisical and fall back to backoff.
pub fn parse_retry_after(header: Option<&str>) -> Option<Duration> {
    let text = header?.trim();
    text.parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| {
            text.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        })
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), given `jitter` in `[0, 1)`: full jitter
    /// over an exponentially growing, capped window, so concurrent resources do not retry in step.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let window = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        // Never zero: at least half the window, plus up to the other half.
        window.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// The wait to use: the server's hint if it gave one, else backoff.
    pub fn wait(&self, attempt: u32, hint: Option<Duration>, jitter: f64) -> Duration {
        hint.unwrap_or_else(|| self.backoff(attempt, jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_server_errors_retry_but_bad_requests_do_not() {
        assert_eq!(
            classify(429, Some(Duration::from_secs(2))),
            Verdict::Retry(Some(Duration::from_secs(2)))
        );
        assert_eq!(classify(503, None), Verdict::Retry(None));
        assert_eq!(classify(403, None), Verdict::Relogin);
        assert_eq!(classify(400, None), Verdict::Final);
        assert_eq!(classify(404, None), Verdict::Final);
        assert_eq!(classify(422, None), Verdict::Final);
        assert_eq!(classify(501, None), Verdict::Final);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = API_CALL;
        assert_eq!(p.backoff(0, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(125));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(10));
        assert_eq!(
            p.wait(5, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("0.5")),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}

//! When to send an Infisical request again, and how long to wait first.
//!
//! Retries are bounded by a deadline the caller passes (the resource's timeout), never by a
//! count: a rate-limited apply keeps going as long as the user allowed, and stops as soon as
//! waiting would overshoot.

use std::time::Duration;

use crate::retry::Backoff;

/// Every API call: rate limits, 5xx answers and connection errors; the pauses are the shared
/// [`Backoff`], half of each window jittered.
pub const API_CALL: Backoff = Backoff {
    name: "infisical-api-call",
    first: Duration::from_millis(250),
    max: Duration::from_secs(10),
    jitter: 0.5,
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

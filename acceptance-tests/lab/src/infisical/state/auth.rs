//! Universal Auth as Infisical answers it: login, lockout, token renewal and token checks.
//!
//! Facts (Infisical/infisical backend, commit 4af4016):
//! - `services/identity-ua/identity-ua-service.ts` `login`: an unknown client id is 401
//!   "Invalid credentials" without touching any lockout counter; a wrong secret counts a failure,
//!   the counter's key expires `lockoutCounterResetSeconds` (30) after the last failure, and at
//!   `lockoutThreshold` (3) failures the method is locked for `lockoutDurationSeconds` (300):
//!   401 "This identity auth method is temporarily locked, please try again later". A correct
//!   login clears the record.
//! - `services/identity-access-token/identity-access-token-service.ts` `renewAccessToken`: signs
//!   a NEW JWT for the same token row; 401 "Failed to renew MI access token due to TTL
//!   expiration" once the token's TTL has run out, and 401 "Failed to renew MI access token past
//!   its Max TTL expiration" when `now + TTL` would pass `created + MaxTTL` (so with TTL = Max TTL
//!   every renewal is refused). Both delete the token row.
//! - `server/plugins/error-handler.ts`: an expired JWT is 403 `TokenError` "Your token has
//!   expired. Please re-authenticate."; a deleted token row is 401 "No identity access token
//!   found".

use serde_json::{json, Value as Json};
use tokio::time::Instant;

use super::{new_id, Failure, Inner, Lab};

/// One token row: every JWT signed for it shares its life.
#[derive(Debug)]
pub(super) struct TokenRow {
    pub(super) created: Instant,
    /// Creation or last renewal: the TTL counts from here.
    pub(super) renewed: Instant,
}

/// One signed JWT.
#[derive(Debug)]
pub(super) struct Jwt {
    pub(super) row: u64,
    /// The JWT's own `exp`.
    pub(super) expires_at: Instant,
}

/// Failed logins of the lab identity.
#[derive(Debug, Default)]
pub(super) struct Lockout {
    failed: u32,
    /// The counter's key expires here (30 s after the last failure).
    counter_until: Option<Instant>,
    locked_until: Option<Instant>,
}

fn unauthorized(message: &str) -> Failure {
    Failure::new(401, "UnauthorizedError", message)
}

const LOCKED: &str = "This identity auth method is temporarily locked, please try again later";

impl Lab {
    /// Universal Auth login.
    pub fn login(&self, client_id: &str, client_secret: &str) -> Result<Json, Failure> {
        let mut inner = self.lock();
        let now = Instant::now();
        let identity = &self.settings.identity;
        if client_id != identity.client_id {
            // No identity with that client id: no lockout record to count against.
            inner.event("login-refused");
            return Err(unauthorized("Invalid credentials"));
        }
        let lockout = &mut inner.lockout;
        if lockout.locked_until.is_some_and(|until| now >= until) {
            *lockout = Lockout::default();
        }
        if lockout.counter_until.is_some_and(|until| now >= until) {
            lockout.failed = 0;
            lockout.counter_until = None;
        }
        if lockout.locked_until.is_some() {
            inner.event("login-refused");
            return Err(unauthorized(LOCKED));
        }
        if client_secret != identity.client_secret {
            lockout.failed += 1;
            if lockout.failed >= self.settings.lockout_after {
                lockout.locked_until = Some(now + self.settings.lockout_for);
            } else {
                lockout.counter_until = Some(now + self.settings.lockout_counter_reset);
            }
            inner.event("login-refused");
            return Err(unauthorized("Invalid credentials"));
        }
        inner.lockout = Lockout::default();
        inner.rows += 1;
        let row = inner.rows;
        inner.token_rows.insert(
            row,
            TokenRow {
                created: now,
                renewed: now,
            },
        );
        let token = self.sign(&mut inner, row, now);
        inner.event("login");
        Ok(self.token_answer(&token))
    }

    fn sign(&self, inner: &mut Inner, row: u64, now: Instant) -> String {
        let token = format!("lab-token-{}", new_id());
        inner.jwts.insert(
            token.clone(),
            Jwt {
                row,
                expires_at: now + self.settings.token_ttl,
            },
        );
        token
    }

    fn token_answer(&self, token: &str) -> Json {
        json!({
            "accessToken": token,
            "expiresIn": self.settings.token_ttl.as_secs(),
            "accessTokenMaxTTL": self.settings.token_max_ttl.as_secs(),
            "tokenType": "Bearer",
        })
    }

    /// Token renewal: a new JWT for the same row, within the row's TTL and Max TTL.
    pub fn renew(&self, token: &str) -> Result<Json, Failure> {
        let mut inner = self.lock();
        let now = Instant::now();
        let row = match inner.jwts.get(token) {
            // An unverifiable or expired JWT fails the JWT check first.
            None => return Err(Failure::new(401, "UnauthorizedError", "Invalid token")),
            Some(jwt) if now >= jwt.expires_at => return Err(expired()),
            Some(jwt) => jwt.row,
        };
        let ttl = self.settings.token_ttl;
        let max_ttl = self.settings.token_max_ttl;
        let refusal = match inner.token_rows.get(&row) {
            None => Some("No identity access token found"),
            Some(r) if now > r.renewed + ttl => {
                Some("Failed to renew MI access token due to TTL expiration")
            }
            Some(r) if now > r.created + max_ttl => {
                Some("Failed to renew MI access token due to Max TTL expiration")
            }
            Some(r) if now + ttl > r.created + max_ttl => {
                Some("Failed to renew MI access token past its Max TTL expiration")
            }
            Some(_) => None,
        };
        if let Some(message) = refusal {
            inner.token_rows.remove(&row);
            inner.event("renew-refused");
            return Err(unauthorized(message));
        }
        if let Some(r) = inner.token_rows.get_mut(&row) {
            r.renewed = now;
        }
        let renewed = self.sign(&mut inner, row, now);
        inner.event("renew");
        Ok(self.token_answer(&renewed))
    }

    /// Checks a bearer token: 403 `TokenError` once its JWT expired, 401 when unknown or its row
    /// is gone. Refusals are recorded as `token-refused` events.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<(), Failure> {
        let mut inner = self.lock();
        let now = Instant::now();
        let verdict = match bearer.map(|t| inner.jwts.get(t)) {
            None => Err(unauthorized("Token missing")),
            Some(None) => Err(unauthorized("Invalid token")),
            Some(Some(jwt)) if now >= jwt.expires_at => Err(expired()),
            Some(Some(jwt)) if !inner.token_rows.contains_key(&jwt.row) => {
                Err(unauthorized("No identity access token found"))
            }
            Some(Some(_)) => Ok(()),
        };
        if verdict.is_err() {
            inner.event("token-refused");
        }
        verdict
    }

    /// Lab control: every issued token is expired now.
    pub fn expire_tokens(&self) {
        let mut inner = self.lock();
        expire_all(&mut inner);
    }

    /// Lab control: every token issued so far expires right after the next `writes` secret
    /// writes, so a client's token runs out in the middle of its work.
    pub fn expire_tokens_after(&self, writes: u32) {
        let mut inner = self.lock();
        if writes == 0 {
            expire_all(&mut inner);
        } else {
            inner.expire_after_writes = Some(writes);
        }
    }
}

pub(super) fn expire_all(inner: &mut Inner) {
    let now = Instant::now();
    for jwt in inner.jwts.values_mut() {
        jwt.expires_at = now;
    }
    inner.event("tokens-expired");
}

fn expired() -> Failure {
    Failure::new(
        403,
        "TokenError",
        "Your token has expired. Please re-authenticate.",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::super::Settings;
    use super::*;

    const ID: &str = "castle-lab-client";
    const SECRET: &str = "castle-lab-secret";

    fn message(f: Failure) -> String {
        f.message.as_str().unwrap_or_default().to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn third_bad_login_locks_out_even_the_right_secret_for_five_minutes() {
        let lab = Lab::new(Settings::default()).unwrap();
        for _ in 0..3 {
            assert_eq!(
                message(lab.login(ID, "wrong").unwrap_err()),
                "Invalid credentials"
            );
        }
        assert_eq!(message(lab.login(ID, SECRET).unwrap_err()), LOCKED);
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(lab.login(ID, SECRET).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_thirty_seconds_after_the_last_one() {
        let lab = Lab::new(Settings::default()).unwrap();
        lab.login(ID, "wrong").unwrap_err();
        lab.login(ID, "wrong").unwrap_err();
        tokio::time::advance(Duration::from_secs(31)).await;
        // Two more failures: without the reset this would be the third and lock.
        lab.login(ID, "wrong").unwrap_err();
        lab.login(ID, "wrong").unwrap_err();
        assert!(lab.login(ID, SECRET).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_client_ids_do_not_count_towards_the_lockout() {
        let lab = Lab::new(Settings::default()).unwrap();
        for _ in 0..5 {
            assert_eq!(
                message(lab.login("someone-else", "x").unwrap_err()),
                "Invalid credentials"
            );
        }
        assert!(lab.login(ID, SECRET).is_ok());
    }

    fn token(answer: &Json) -> String {
        answer["accessToken"].as_str().unwrap().to_string()
    }

    #[tokio::test(start_paused = true)]
    async fn renewal_signs_a_new_token_until_the_max_ttl() {
        let lab = Lab::new(Settings {
            token_ttl: Duration::from_secs(60),
            token_max_ttl: Duration::from_secs(150),
            ..Settings::default()
        })
        .unwrap();
        let first = token(&lab.login(ID, SECRET).unwrap());
        tokio::time::advance(Duration::from_secs(50)).await;
        let second = token(&lab.renew(&first).unwrap());
        assert_ne!(first, second);
        tokio::time::advance(Duration::from_secs(50)).await;
        // 100 s + 60 s would pass the 150 s Max TTL.
        assert_eq!(
            message(lab.renew(&second).unwrap_err()),
            "Failed to renew MI access token past its Max TTL expiration"
        );
        // The row is gone: the token no longer authorizes anything.
        assert_eq!(
            message(lab.authorize(Some(&second)).unwrap_err()),
            "No identity access token found"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_a_403_token_error() {
        let lab = Lab::new(Settings {
            token_ttl: Duration::from_secs(60),
            ..Settings::default()
        })
        .unwrap();
        let first = token(&lab.login(ID, SECRET).unwrap());
        tokio::time::advance(Duration::from_secs(61)).await;
        let refused = lab.authorize(Some(&first)).unwrap_err();
        assert_eq!((refused.status, refused.error), (403, "TokenError"));
        assert_eq!(
            message(refused),
            "Your token has expired. Please re-authenticate."
        );
    }
}

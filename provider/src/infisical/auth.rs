//! Universal Auth: the access token, shared by every call of one provider process.
//!
//! The cache is an async mutex held across the login request, so when ten resources start at
//! once only one login is in flight and the others wait for its token. Each token has a
//! generation number: a call that saw its token refused invalidates that generation only, so a
//! token fetched meanwhile by another call is not thrown away.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::Error;
use super::{request, Client};

/// A bearer token and when it stops working.
pub(crate) struct Token {
    value: String,
    expires_at: Instant,
    ttl: Duration,
    generation: u64,
}

// Never print the token itself.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ttl", &self.ttl)
            .field("generation", &self.generation)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Slot {
    token: Option<Token>,
    generations: u64,
    /// A login the server refused (status, message): not tried again by this process, since
    /// every wrong secret counts towards Infisical's lockout (3 in a row lock the identity out
    /// for 5 minutes) and ten resources refreshing at once would each try.
    refused: Option<(u16, String)>,
}

/// The cached token of a [`Client`].
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slot: Mutex<Slot>,
}

/// What login and renew answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: String,
    /// Seconds.
    expires_in: u64,
}

/// Renew a token once less than this share of its life is left (or five minutes, if shorter):
/// early enough that a call started now finishes before expiry.
fn renew_window(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(300))
}

impl Client {
    /// A token valid now, with its generation: cached, renewed or obtained by logging in.
    pub(crate) async fn token(&self, deadline: Instant) -> Result<(String, u64), Error> {
        let mut slot = self.auth.slot.lock().await;
        let now = Instant::now();
        if let Some(token) = &slot.token {
            if now + renew_window(token.ttl) < token.expires_at {
                return Ok((token.value.clone(), token.generation));
            }
            if now < token.expires_at {
                let old = token.value.clone();
                match self
                    .token_request(
                        request::renew(&old),
                        "renewing the Infisical token",
                        deadline,
                        &old,
                    )
                    .await
                {
                    Ok(answer) => return Ok(store(&mut slot, answer)),
                    // A token past its max TTL cannot be renewed: log in again below.
                    Err(error) => tracing::debug!(%error, "token renewal failed, logging in again"),
                }
            }
        }
        if let Some((status, message)) = &slot.refused {
            return Err(Error::Login {
                status: *status,
                message: message.clone(),
            });
        }
        let answer = match self
            .token_request(
                request::login(&self.config.client_id, &self.config.client_secret),
                "logging in to Infisical",
                deadline,
                &self.config.client_secret,
            )
            .await
        {
            Ok(answer) => answer,
            Err(Error::Login { status, message }) => {
                slot.refused = Some((status, message.clone()));
                return Err(Error::Login { status, message });
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(expires_in = answer.expires_in, "logged in to Infisical");
        Ok(store(&mut slot, answer))
    }

    /// Forgets the token of `generation` after the server refused it.
    pub(crate) async fn invalidate_token(&self, generation: u64) {
        let mut slot = self.auth.slot.lock().await;
        if slot
            .token
            .as_ref()
            .is_some_and(|t| t.generation == generation)
        {
            slot.token = None;
        }
    }

    async fn token_request(
        &self,
        req: request::ApiRequest,
        action: &str,
        deadline: Instant,
        sensitive: &str,
    ) -> Result<TokenAnswer, Error> {
        // Boxed: `execute` calls `token` for authenticated requests, which calls this for the
        // (unauthenticated) login; the box breaks the recursive future type.
        let json = Box::pin(self.execute(action, &req, deadline, &[sensitive])).await?;
        serde_json::from_value(json).map_err(|e| Error::Decode {
            action: action.into(),
            source: e,
        })
    }
}

fn store(slot: &mut Slot, answer: TokenAnswer) -> (String, u64) {
    slot.generations += 1;
    let ttl = Duration::from_secs(answer.expires_in);
    let token = Token {
        value: answer.access_token,
        expires_at: Instant::now() + ttl,
        ttl,
        generation: slot.generations,
    };
    let out = (token.value.clone(), token.generation);
    slot.token = Some(token);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_in_the_last_quarter_of_short_tokens_and_five_minutes_of_long_ones() {
        assert_eq!(renew_window(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(
            renew_window(Duration::from_secs(30 * 24 * 3600)),
            Duration::from_secs(300)
        );
    }
}

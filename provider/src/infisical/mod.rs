//! Client of the Infisical API (Universal Auth, secrets, folders).
//!
//! - [`request`]: pure request builders, unit-tested without a server.
//! - [`retry`]: the named retry policy and how each status is classified.
//! - `auth`: the shared, renewed token.
//! - `secrets` and `folders`: the operations resources call.
//!
//! Every operation takes a deadline (the resource's timeout): retries stop there.

mod auth;
mod config;
mod error;
mod folders;
pub mod request;
pub mod retry;
mod secrets;
pub mod sync;

use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

pub use config::{ClientConfig, DEFAULT_HOST};
pub use error::Error;
pub use request::SecretRef;
pub use secrets::{same_modulo_trimming, server_trimmed, Secret};

use retry::{Verdict, API_CALL};

/// An Infisical API client (one connection pool, one token per provider process).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    /// Host without a trailing slash.
    base: String,
    http: reqwest::Client,
    auth: auth::TokenCache,
    /// The outcome of the plan-time credential check, once per provider process: several
    /// resources planning at once must not each try a wrong secret (three failures lock the
    /// identity out).
    checked: tokio::sync::OnceCell<Result<(), Credentials>>,
}

/// What the plan-time credential check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The server answered and refused the client id / client secret.
    Refused(String),
    /// The server did not answer in time.
    Unreachable(String),
    /// The server's TLS certificate is not trusted (the error says which setting to fix).
    Untrusted(String),
    /// Something else went wrong (the error, in words).
    Other(String),
}

/// One HTTP answer, before interpretation.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: bytes::Bytes,
}

/// A single request may not hang longer than this even when the deadline is far away; the
/// retry loop then sends it again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Client {
    /// Builds a client; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        if !(config.host.starts_with("https://") || config.host.starts_with("http://")) {
            return Err(Error::Settings(format!(
                "host {:?} is not a URL",
                config.host
            )));
        }
        let base = config
            .host
            .trim_end_matches('/')
            .trim_end_matches("/api")
            .to_string();
        let mut builder = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &config.ca_cert_pem {
            let bundle = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    Error::Settings(
                        "ca_cert_pem holds no PEM certificate (expected \"-----BEGIN CERTIFICATE-----\" blocks)"
                            .into(),
                    )
                })?;
            for cert in bundle {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Settings(e.to_string()))?;
        Ok(Self {
            config,
            base,
            http,
            auth: auth::TokenCache::default(),
            checked: tokio::sync::OnceCell::new(),
        })
    }

    /// The server this client talks to.
    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// Logs in now (or reuses a valid token), to check the credentials early.
    pub async fn login(&self, deadline: Instant) -> Result<(), Error> {
        self.token(deadline).await.map(|_| ())
    }

    /// Checks the credentials once per client (plan time): logs in within `budget`, and
    /// remembers the outcome for every later call.
    pub async fn check_credentials(&self, budget: Duration) -> Result<(), Credentials> {
        self.checked
            .get_or_init(|| async {
                match self.login(Instant::now() + budget).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.is_login_refused() => Err(Credentials::Refused(e.to_string())),
                    Err(e) if e.is_unreachable() => Err(Credentials::Unreachable(e.to_string())),
                    Err(e @ Error::UntrustedCertificate { .. }) => {
                        Err(Credentials::Untrusted(e.to_string()))
                    }
                    Err(e) => Err(Credentials::Other(e.to_string())),
                }
            })
            .await
            .clone()
    }

    async fn send_once(
        &self,
        req: &request::ApiRequest,
        token: Option<&str>,
        limit: Duration,
    ) -> Result<Answer, reqwest::Error> {
        let mut builder = self
            .http
            .request(req.method.clone(), format!("{}{}", self.base, req.path))
            .timeout(limit.min(REQUEST_TIMEOUT));
        if let Some(token) = token {
            builder = builder.bearer_auth(token);
        }
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        // reqwest's errors name the URL (host, path, query: no secrets) and the cause.
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let retry_after = retry::parse_retry_after(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        );
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Sends `req` under the [`API_CALL`] policy until success, a final error or the deadline.
    /// `sensitive` lists strings (values, secrets) to scrub from any server message.
    pub(crate) async fn execute(
        &self,
        action: &str,
        req: &request::ApiRequest,
        deadline: Instant,
        sensitive: &[&str],
    ) -> Result<Json, Error> {
        let mut attempts = 0u32;
        let mut relogged = false;
        let mut pauses = API_CALL.until(deadline);
        loop {
            let (token, generation) = if req.authenticated {
                let (token, generation) = self.token(deadline).await?;
                (Some(token), generation)
            } else {
                (None, 0)
            };
            let mut scrub_list: Vec<&str> = sensitive.to_vec();
            if let Some(token) = &token {
                scrub_list.push(token);
            }
            scrub_list.push(&self.config.client_secret);

            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Exhausted {
                    action: action.into(),
                    attempts,
                    last: "the timeout was reached before the request could be sent".into(),
                    cause: None,
                });
            }
            attempts += 1;
            let (hint, last, cause) = match self.send_once(req, token.as_deref(), remaining).await {
                Err(transport) => {
                    if let Some(reason) = crate::tls::untrusted_certificate(&transport) {
                        // Sending again cannot help: the setting has to change.
                        return Err(Error::UntrustedCertificate {
                            host: self.config.host.clone(),
                            reason,
                            source: transport,
                        });
                    }
                    // reqwest's errors name the URL (host, path, query: no secrets) and the
                    // cause.
                    let text = error::scrub(&error_chain(&transport), &scrub_list);
                    (None, text, Some(transport))
                }
                Ok(answer) if (200..300).contains(&answer.status) => {
                    return serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
                        action: action.into(),
                        source: e,
                    });
                }
                Ok(answer) => {
                    let message = server_message(&answer.body, &scrub_list);
                    match retry::classify(answer.status, answer.retry_after) {
                        Verdict::Final => return Err(final_error(action, answer.status, message)),
                        Verdict::Relogin if !req.authenticated => {
                            return Err(Error::Login {
                                status: answer.status,
                                message,
                            })
                        }
                        Verdict::Relogin if !relogged => {
                            // An expired or revoked token: log in once more and resend.
                            tracing::debug!(
                                action,
                                status = answer.status,
                                "token refused, logging in again"
                            );
                            relogged = true;
                            self.invalidate_token(generation).await;
                            continue;
                        }
                        Verdict::Relogin => {
                            return Err(Error::Denied {
                                action: action.into(),
                                status: answer.status,
                                message,
                            })
                        }
                        Verdict::Retry(hint) => {
                            (hint, format!("{}: {message}", answer.status), None)
                        }
                    }
                }
            };
            tracing::warn!(policy = API_CALL.name, action, %last, "retrying Infisical request");
            if !pauses.sleep(hint).await {
                return Err(Error::Exhausted {
                    action: action.into(),
                    attempts,
                    last,
                    cause,
                });
            }
        }
    }
}

/// The cause chain of a transport error, in one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The `message` of an Infisical error body; a 422's list of issues is joined with "; ".
fn server_message(body: &[u8], sensitive: &[&str]) -> String {
    let text = match serde_json::from_slice::<Json>(body) {
        Ok(json) => match json.get("message") {
            Some(Json::String(message)) => message.clone(),
            Some(Json::Array(issues)) => issues
                .iter()
                .map(|issue| match issue {
                    Json::String(s) => s.clone(),
                    Json::Object(o) => {
                        let message = o.get("message").and_then(Json::as_str).unwrap_or("invalid");
                        match o.get("path") {
                            Some(Json::Array(path)) if !path.is_empty() => {
                                let path: Vec<String> = path
                                    .iter()
                                    .map(|p| {
                                        p.as_str().map(str::to_string).unwrap_or(p.to_string())
                                    })
                                    .collect();
                                format!("{}: {message}", path.join("."))
                            }
                            _ => message.to_string(),
                        }
                    }
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => json.to_string(),
        },
        Err(_) => String::from_utf8_lossy(body).chars().take(300).collect(),
    };
    error::scrub(&text, sensitive)
}

fn final_error(action: &str, status: u16, message: String) -> Error {
    let action = action.to_string();
    match status {
        404 => Error::NotFound { action, message },
        400 if message.to_ascii_lowercase().contains("already exist") => {
            Error::AlreadyExists { action, message }
        }
        _ => Error::Rejected {
            action,
            status,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_issues_are_listed() {
        let body = br#"{"reqId":"r","statusCode":422,"message":[{"path":["secretPath"],"message":"Required"},{"message":"bad"}],"error":"ValidationFailure"}"#;
        assert_eq!(server_message(body, &[]), "secretPath: Required; bad");
    }

    #[test]
    fn statuses_map_to_distinct_errors() {
        assert!(final_error("x", 404, "Secret with name 'A' not found".into()).is_not_found());
        assert!(final_error("x", 400, "Secret already exist".into()).is_already_exists());
        assert!(matches!(
            final_error("x", 400, "nope".into()),
            Error::Rejected { status: 400, .. }
        ));
    }

    #[test]
    fn echoed_secrets_are_scrubbed_from_messages() {
        let body = br#"{"message":"value s3cr3t-value rejected"}"#;
        assert_eq!(
            server_message(body, &["s3cr3t-value"]),
            "value <redacted> rejected"
        );
    }
}

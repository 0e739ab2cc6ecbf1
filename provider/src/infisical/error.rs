//! The one error type of the Infisical client.
//!
//! No variant ever carries the client secret, a token or a secret value: server messages pass
//! through [`scrub`] before they are stored, in case a server echoes what it was sent.

/// Errors of the Infisical client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (bad host URL, TLS setup).
    #[error("invalid Infisical client settings: {0}")]
    Settings(String),

    /// The server refused the machine identity's client id / client secret (401 on login, or
    /// the identity is locked out after repeated failures).
    #[error(
        "Infisical refused the Universal Auth login ({status}: {message}); check the client id \
         and client secret of the machine identity"
    )]
    Login {
        /// HTTP status of the refusal.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// The token was refused (401/403) even after logging in again: the identity lacks a
    /// permission on the project, environment or path.
    #[error("Infisical denied {action} ({status}: {message}); check the machine identity's access to the project")]
    Denied {
        /// What was attempted, e.g. "reading secret KUBECONFIG".
        action: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
    },

    /// The secret or folder does not exist (404). Reads treat it as "deleted outside Terraform".
    #[error("{action}: not found ({message})")]
    NotFound {
        /// What was attempted.
        action: String,
        /// The server's message, e.g. "Secret with name 'X' not found".
        message: String,
    },

    /// Creating a secret whose name is already taken at that path (400 "Secret already exist").
    #[error("{action}: the secret already exists ({message})")]
    AlreadyExists {
        /// What was attempted.
        action: String,
        /// The server's message.
        message: String,
    },

    /// The server rejected the request as invalid (400, or 422 with its list of issues); sending it
    /// again would not help.
    #[error("{action}: rejected by Infisical ({status}: {message})")]
    Rejected {
        /// What was attempted.
        action: String,
        /// 400 or 422 (or another final 4xx).
        status: u16,
        /// The server's message (for 422 the issues, joined).
        message: String,
    },

    /// Retries (rate limit, server errors, connection errors) ran out of time: the operation's
    /// timeout was reached, or a `Retry-After` pointed past it.
    #[error(
        "{action}: gave up after {attempts} attempt(s) within the timeout; last error: {last}"
    )]
    Exhausted {
        /// What was attempted.
        action: String,
        /// How many requests were sent.
        attempts: u32,
        /// The last transient failure, in words.
        last: String,
        /// The last failure, when it was the connection rather than an answer.
        #[source]
        cause: Option<reqwest::Error>,
    },

    /// The server's TLS certificate is not one castle trusts: a setting to fix, never retried.
    #[error(
        "Infisical at {host} presented a TLS certificate castle does not trust ({reason}). Set the \
         provider's infisical {{ ca_cert_pem }} (or INFISICAL_CA_CERT_PEM) to the PEM of the CA \
         that signed it (several certificates may be given)"
    )]
    UntrustedCertificate {
        /// The configured host.
        host: String,
        /// rustls's verdict, e.g. `invalid peer certificate: UnknownIssuer`.
        reason: String,
        /// The failed request.
        #[source]
        source: reqwest::Error,
    },

    /// The environment has a change policy that applies to machine identities: Infisical queued
    /// the write as a change request instead of applying it (`{approval}` instead of `{secret}`).
    /// Nothing was written; sending the write again would queue another request.
    #[error(
        "{action}: Infisical did not apply the change but queued it as change request {slug:?} \
         (id {id}), because environment {environment:?} has a change policy that applies to \
         machine identities. Approve and merge that request in Infisical, then run terraform \
         apply again (castle then finds the value in place); or turn on \"bypass for machine \
         identities\" in the policy, or store the secret in an environment without a policy"
    )]
    ChangeRequested {
        /// What was attempted.
        action: String,
        /// Environment slug.
        environment: String,
        /// The change request's slug, as Infisical's UI shows it.
        slug: String,
        /// The change request's id.
        id: String,
    },

    /// An answer that is not the JSON Infisical documents.
    #[error("{action}: unexpected answer from Infisical: {source}")]
    Decode {
        /// What was attempted.
        action: String,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether the object is gone (reads drop the resource, deletes treat it as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether a create hit an existing secret.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    /// Whether the server refused the machine identity's credentials.
    pub fn is_login_refused(&self) -> bool {
        matches!(self, Error::Login { .. })
    }

    /// Whether the server never answered within the time allowed (connection refused, DNS,
    /// TLS, timeouts, 5xx): the endpoint is unreachable rather than the request wrong.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Exhausted { .. })
    }
}

/// Replaces every occurrence of a sensitive string in a server message.
///
/// Empty strings are skipped (replacing "" would interleave the marker everywhere); very short
/// ones too, since a 1–3 character value would redact ordinary words and protects nothing.
pub fn scrub(message: &str, sensitive: &[&str]) -> String {
    let mut out = message.to_string();
    for secret in sensitive {
        let secret = secret.trim();
        if secret.len() >= 4 {
            out = out.replace(secret, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_echoed_values_but_keeps_the_message() {
        let message = "secretValue 'hunter2-long' is invalid";
        assert_eq!(
            scrub(message, &["hunter2-long", ""]),
            "secretValue '<redacted>' is invalid"
        );
    }
}

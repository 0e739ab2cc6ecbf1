//! Secrets by name (v3 "raw" endpoints), and the server's whitespace trimming.

use std::fmt;

use serde::Deserialize;
use serde_json::{json, Value as Json};
use tokio::time::Instant;

use super::error::Error;
use super::request::{self, SecretRef};
use super::Client;

/// A secret as Infisical returns it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Server id (UUID).
    #[serde(default)]
    pub id: String,
    /// Name.
    pub secret_key: String,
    /// Value, as stored (trimmed by the server).
    pub secret_value: String,
    /// Incremented on every update.
    #[serde(default)]
    pub version: i64,
    /// Comment.
    #[serde(default)]
    pub secret_comment: String,
}

// The value never reaches Debug output (and so never reaches logs).
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("id", &self.id)
            .field("secret_key", &self.secret_key)
            .field("secret_value", &"<redacted>")
            .field("version", &self.version)
            .finish()
    }
}

/// What Infisical stores for `value`: surrounding whitespace trimmed, one trailing newline kept
/// if the value ended with one.
pub fn server_trimmed(value: &str) -> String {
    let trimmed = value.trim();
    if value.ends_with('\n') && !trimmed.is_empty() {
        format!("{trimmed}\n")
    } else {
        trimmed.to_string()
    }
}

/// Whether `stored` is what Infisical keeps when sent `sent`: the comparison that keeps plans
/// free of perpetual diffs caused by trimming.
pub fn same_modulo_trimming(sent: &str, stored: &str) -> bool {
    server_trimmed(sent) == server_trimmed(stored)
}

fn describe(action: &str, secret: &SecretRef) -> String {
    format!(
        "{action} secret {} at {} in environment {}",
        secret.key, secret.path, secret.environment
    )
}

/// A change request, as a write answers it when a change policy applies.
#[derive(Deserialize)]
struct Approval {
    id: String,
    #[serde(default)]
    slug: String,
}

/// Decodes a read or write answer: `{secret}`, or `{approval}` when the environment's change
/// policy queued the write instead of applying it (Infisical's v3 raw and v4 secret routers
/// answer a union of the two).
fn decode(action: String, environment: &str, json: Json) -> Result<Secret, Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Answer {
        Written { secret: Secret },
        Queued { approval: Approval },
    }
    match serde_json::from_value::<Answer>(json) {
        Ok(Answer::Written { secret }) => Ok(secret),
        Ok(Answer::Queued { approval }) => Err(Error::ChangeRequested {
            action,
            environment: environment.to_string(),
            slug: approval.slug,
            id: approval.id,
        }),
        Err(e) => Err(Error::Decode { action, source: e }),
    }
}

impl Client {
    /// Sends `req`, which acts on `secret` (`verb`, e.g. "reading", names the act in errors;
    /// `sensitive` values are kept out of them), and decodes the secret Infisical answers.
    async fn secret_call(
        &self,
        verb: &str,
        secret: &SecretRef,
        req: &request::ApiRequest,
        deadline: Instant,
        sensitive: &[&str],
    ) -> Result<Secret, Error> {
        let action = describe(verb, secret);
        let json = self.execute(&action, req, deadline, sensitive).await?;
        decode(action, &secret.environment, json)
    }

    /// Reads a secret; [`Error::NotFound`] if it does not exist.
    pub async fn get_secret(&self, secret: &SecretRef, deadline: Instant) -> Result<Secret, Error> {
        let req = request::get_secret(secret);
        self.secret_call("reading", secret, &req, deadline, &[])
            .await
    }

    /// Creates a secret; [`Error::AlreadyExists`] if the name is taken at that path.
    pub async fn create_secret(
        &self,
        secret: &SecretRef,
        value: &str,
        comment: &str,
        deadline: Instant,
    ) -> Result<Secret, Error> {
        let req = request::create_secret(secret, value, comment);
        self.secret_call("creating", secret, &req, deadline, &[value])
            .await
    }

    /// Replaces a secret's value and comment; [`Error::NotFound`] if it does not exist.
    pub async fn update_secret(
        &self,
        secret: &SecretRef,
        value: &str,
        comment: &str,
        deadline: Instant,
    ) -> Result<Secret, Error> {
        let req = request::update_secret(secret, value, comment);
        self.secret_call("updating", secret, &req, deadline, &[value])
            .await
    }

    /// Deletes a secret; [`Error::NotFound`] if it was already gone.
    pub async fn delete_secret(&self, secret: &SecretRef, deadline: Instant) -> Result<(), Error> {
        let action = describe("deleting", secret);
        let json = self
            .execute(&action, &request::delete_secret(secret), deadline, &[])
            .await?;
        // Only a queued change matters here; the deleted secret's fields are not used.
        match json.get("approval") {
            Some(approval) => {
                decode(action, &secret.environment, json!({ "approval": approval })).map(|_| ())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_keeps_one_trailing_newline() {
        assert_eq!(server_trimmed("  a: b\nc: d\n\n  \n"), "a: b\nc: d\n");
        assert_eq!(server_trimmed("\tvalue  "), "value");
        assert_eq!(server_trimmed(""), "");
        assert_eq!(server_trimmed(" \n"), "");
    }

    #[test]
    fn values_equal_after_trimming_compare_equal() {
        assert!(same_modulo_trimming(
            "apiVersion: v1\n\n",
            "apiVersion: v1\n"
        ));
        assert!(same_modulo_trimming("  x", "x"));
        assert!(!same_modulo_trimming("x\n", "x"));
        assert!(!same_modulo_trimming(
            "apiVersion: v1\n",
            "apiVersion: v2\n"
        ));
    }

    #[test]
    fn a_queued_change_request_is_its_own_error() {
        let answer = serde_json::json!({"approval": {"id": "r-1", "slug": "abc123", "status": "open",
            "hasMerged": false, "policyId": "p", "folderId": "f"}});
        let error = decode("updating secret K".into(), "prod", answer).unwrap_err();
        assert!(
            matches!(&error, Error::ChangeRequested { slug, id, environment, .. }
                if slug == "abc123" && id == "r-1" && environment == "prod"),
            "{error}"
        );
        let written =
            serde_json::json!({"secret": {"secretKey": "K", "secretValue": "v", "version": 2}});
        assert_eq!(decode("x".into(), "prod", written).unwrap().version, 2);
    }

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret {
            id: "1".into(),
            secret_key: "K".into(),
            secret_value: "top-secret".into(),
            version: 1,
            secret_comment: String::new(),
        };
        assert!(!format!("{secret:?}").contains("top-secret"));
    }
}

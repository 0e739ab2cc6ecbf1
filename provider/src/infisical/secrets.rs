//! Secrets by name (v3 "raw" endpoints), and the server's whitespace trimming.

use std::fmt;

use serde::Deserialize;
use serde_json::Value as Json;
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

fn decode(action: String, json: Json) -> Result<Secret, Error> {
    #[derive(Deserialize)]
    struct Answer {
        secret: Secret,
    }
    serde_json::from_value::<Answer>(json)
        .map(|a| a.secret)
        .map_err(|e| Error::Decode {
            action,
            detail: e.to_string(),
        })
}

impl Client {
    /// Reads a secret; [`Error::NotFound`] if it does not exist.
    pub async fn get_secret(&self, secret: &SecretRef, deadline: Instant) -> Result<Secret, Error> {
        let action = describe("reading", secret);
        let json = self
            .execute(&action, &request::get_secret(secret), deadline, &[])
            .await?;
        decode(action, json)
    }

    /// Creates a secret; [`Error::AlreadyExists`] if the name is taken at that path.
    pub async fn create_secret(
        &self,
        secret: &SecretRef,
        value: &str,
        comment: &str,
        deadline: Instant,
    ) -> Result<Secret, Error> {
        let action = describe("creating", secret);
        let json = self
            .execute(
                &action,
                &request::create_secret(secret, value, comment),
                deadline,
                &[value],
            )
            .await?;
        decode(action, json)
    }

    /// Replaces a secret's value and comment; [`Error::NotFound`] if it does not exist.
    pub async fn update_secret(
        &self,
        secret: &SecretRef,
        value: &str,
        comment: &str,
        deadline: Instant,
    ) -> Result<Secret, Error> {
        let action = describe("updating", secret);
        let json = self
            .execute(
                &action,
                &request::update_secret(secret, value, comment),
                deadline,
                &[value],
            )
            .await?;
        decode(action, json)
    }

    /// Deletes a secret; [`Error::NotFound`] if it was already gone.
    pub async fn delete_secret(&self, secret: &SecretRef, deadline: Instant) -> Result<(), Error> {
        let action = describe("deleting", secret);
        self.execute(&action, &request::delete_secret(secret), deadline, &[])
            .await?;
        Ok(())
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

//! Keeping one secret in Infisical equal to a wanted value: the workflows behind
//! `castle_kubeconfig_secret`, free of Terraform types.
//!
//! - [`create_or_adopt`]: create, or adopt an existing secret that already holds the value.
//! - [`create_or_take_over`]: the same, and also overwrite an existing value the caller
//!   recognises as its own (e.g. credentials of the same cluster).
//! - [`push`]: update, or create again if the secret vanished meanwhile.
//! - [`refresh`]: read back, keeping the wanted value when Infisical only trimmed it.
//! - [`remove`]: delete, a secret already gone counting as done.
//!
//! A write that Infisical queued as a change request ([`Error::ChangeRequested`]) is never
//! followed by another write: each one would queue another request.

use tokio::time::Instant;

use super::{same_modulo_trimming, Client, Error, SecretRef};

/// Why a secret could not be brought to the wanted value.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A secret of that name already exists with another value: it is someone else's, and
    /// castle leaves it alone (importing it hands it over).
    #[error(
        "a secret named {key} already exists at {path} in environment {environment} with a \
         different value; it was left untouched",
        key = .at.key,
        path = .at.path,
        environment = .at.environment
    )]
    AlreadyExistsDifferent {
        /// Where it is.
        at: SecretRef,
    },
    /// The Infisical API refused or failed.
    #[error(transparent)]
    Api(#[from] Error),
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// The stored value when it really differs from the wanted one (not just trimmed); `None`
    /// when the wanted value stands.
    pub changed_value: Option<String>,
    /// Infisical's version of the secret.
    pub version: i64,
}

/// How [`create_or_take_over`] brought the secret to the wanted value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// Created, or found already holding the value (modulo Infisical's trimming).
    Written(i64),
    /// Found holding another value the caller recognised as its own, and overwritten.
    TookOver(i64),
}

/// Creates the secret, adopting an existing one that already holds the same value (modulo
/// Infisical's trimming). Returns the version.
pub async fn create_or_adopt(
    client: &Client,
    at: &SecretRef,
    value: &str,
    comment: &str,
    deadline: Instant,
) -> Result<i64, SyncError> {
    match create_or_take_over(client, at, value, comment, deadline, |_| false).await? {
        Created::Written(version) | Created::TookOver(version) => Ok(version),
    }
}

/// Creates the secret; an existing one holding the same value is adopted, one holding a value
/// for which `ours` answers true is overwritten, any other is left alone
/// ([`SyncError::AlreadyExistsDifferent`]).
pub async fn create_or_take_over(
    client: &Client,
    at: &SecretRef,
    value: &str,
    comment: &str,
    deadline: Instant,
    ours: impl Fn(&str) -> bool,
) -> Result<Created, SyncError> {
    match client.create_secret(at, value, comment, deadline).await {
        Ok(secret) => Ok(Created::Written(secret.version)),
        Err(e) if e.is_already_exists() => {
            let existing = client.get_secret(at, deadline).await?;
            if same_modulo_trimming(value, &existing.secret_value) {
                tracing::info!(key = %at.key, path = %at.path, "adopted existing Infisical secret with the same value");
                Ok(Created::Written(existing.version))
            } else if ours(&existing.secret_value) {
                tracing::info!(key = %at.key, path = %at.path, "overwriting an Infisical secret recognised as ours");
                let secret = client.update_secret(at, value, comment, deadline).await?;
                Ok(Created::TookOver(secret.version))
            } else {
                Err(SyncError::AlreadyExistsDifferent { at: at.clone() })
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a new value (and comment): update, or create if the secret vanished meanwhile.
/// Returns the new version.
pub async fn push(
    client: &Client,
    at: &SecretRef,
    value: &str,
    comment: &str,
    deadline: Instant,
) -> Result<i64, SyncError> {
    match client.update_secret(at, value, comment, deadline).await {
        Ok(secret) => Ok(secret.version),
        Err(e) if e.is_not_found() => create_or_adopt(client, at, value, comment, deadline).await,
        Err(e) => Err(e.into()),
    }
}

/// Reads the secret back: `None` if it is gone.
pub async fn refresh(
    client: &Client,
    at: &SecretRef,
    wanted: Option<&str>,
    deadline: Instant,
) -> Result<Option<Refreshed>, Error> {
    match client.get_secret(at, deadline).await {
        Ok(secret) => {
            let same = wanted.is_some_and(|v| same_modulo_trimming(v, &secret.secret_value));
            Ok(Some(Refreshed {
                changed_value: (!same).then_some(secret.secret_value),
                version: secret.version,
            }))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the secret; one already gone counts as deleted.
pub async fn remove(client: &Client, at: &SecretRef, deadline: Instant) -> Result<(), Error> {
    match client.delete_secret(at, deadline).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

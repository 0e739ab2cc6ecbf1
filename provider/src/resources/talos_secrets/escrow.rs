//! The optional `escrow` block: a copy of the cluster's secrets in Infisical, written before
//! the create returns, so that the next apply after a lost Terraform state finds the same
//! secrets there instead of generating others (ADR 0017).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};
use tokio::time::Instant;

use crate::infisical::{self, server_trimmed, SecretRef};
use crate::resources::kubeconfig_secret::{check_key, check_path};
use crate::talos::pki::SecretsBundle;

/// Default folder of the escrow.
pub const DEFAULT_PATH: &str = "/";

/// The block as it sits in state. No field holds a secret.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscrowBlock {
    /// Infisical project id.
    pub project_id: Value<String>,
    /// Environment slug.
    pub environment: Value<String>,
    /// Folder path.
    pub path: Value<String>,
    /// The cluster's name, from which the key is derived.
    pub name: Value<String>,
    /// Secret name of the escrowed bundle.
    pub key: Value<String>,
    /// Infisical's version of the escrowed secret; null while Infisical holds none.
    pub version: Value<i64>,
    /// SHA-256 of the bundle Infisical holds; null while it holds none.
    pub sha256: Value<String>,
}

/// The secret name an escrow uses unless `key` is set: `TALOS_SECRETS_<NAME>`, the name in
/// upper case with anything but letters and digits turned into `_`.
pub fn default_key(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TALOS_SECRETS_{name}")
}

/// SHA-256 (hex) of an escrowed value: of the bundle in its canonical form when it is one (so
/// Infisical's whitespace trimming never counts as a change), of the trimmed text otherwise.
/// It shows that the escrow changed without showing anything of the secrets.
pub fn digest(text: &str) -> String {
    let canonical = SecretsBundle::from_talos_yaml(text)
        .ok()
        .and_then(|bundle| bundle.to_talos_yaml().ok())
        .unwrap_or_else(|| server_trimmed(text));
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn attribute(name: &str) -> AttributePath {
    AttributePath::new("escrow")
        .index(0)
        .attribute(name.to_string())
}

fn known(value: &Value<String>) -> Option<&str> {
    value.as_ref_option().map(String::as_str)
}

impl EscrowBlock {
    /// Fills `path` and `key` when the configuration leaves them out.
    pub fn fill_defaults(&mut self) {
        if self.path.is_null() {
            self.path = Value::Value(DEFAULT_PATH.into());
        }
        if self.key.is_null() {
            self.key = match &self.name {
                Value::Value(name) => Value::Value(default_key(name)),
                _ => Value::Unknown,
            };
        }
    }

    /// Plan-time checks, each against its attribute; unknown values are skipped.
    pub fn validate(&self, diags: &mut Diagnostics) {
        for (name, value) in [
            ("project_id", &self.project_id),
            ("environment", &self.environment),
            ("name", &self.name),
        ] {
            if known(value).is_some_and(|v| v.trim().is_empty()) {
                diags.error_short(format!("escrow.{name} must not be empty"), attribute(name));
            }
        }
        if let Some(path) = known(&self.path) {
            if let Err(message) = check_path(path) {
                diags.error("Invalid Infisical path", message, attribute("path"));
            }
        }
        if let Some(key) = known(&self.key) {
            if let Err(message) = check_key(key) {
                diags.error("Invalid secret name", message, attribute("key"));
            }
        }
    }

    /// Where the bundle lives, once every part is known.
    pub fn secret_ref(&self) -> Option<SecretRef> {
        Some(SecretRef {
            project_id: known(&self.project_id)?.into(),
            environment: known(&self.environment)?.into(),
            path: known(&self.path)?.into(),
            key: known(&self.key)?.into(),
        })
    }

    /// Whether `other` names the same secret.
    pub fn same_place(&self, other: &EscrowBlock) -> bool {
        (&self.project_id, &self.environment, &self.path, &self.key)
            == (
                &other.project_id,
                &other.environment,
                &other.path,
                &other.key,
            )
    }

    /// The comment stored with the bundle.
    pub fn comment(&self) -> String {
        format!(
            "Talos secrets (CAs, keys, tokens) of cluster {}, escrowed by Terraform \
             (castle_talos_secrets): the next apply after a lost state takes them from here. \
             Delete only with the cluster.",
            known(&self.name).unwrap_or("?")
        )
    }
}

/// What the escrow key holds.
pub enum Held {
    /// No secret of that name.
    Nothing,
    /// A secrets bundle.
    Bundle {
        /// The bundle.
        bundle: Box<SecretsBundle>,
        /// Its value as stored.
        value: String,
        /// Infisical's version.
        version: i64,
    },
    /// Something that is not a secrets bundle.
    Other {
        /// Its value as stored.
        value: String,
        /// Infisical's version.
        version: i64,
    },
}

/// Reads the escrow key.
pub async fn held(
    client: &infisical::Client,
    at: &SecretRef,
    deadline: Instant,
) -> Result<Held, infisical::Error> {
    match client.get_secret(at, deadline).await {
        Ok(secret) => Ok(match SecretsBundle::from_talos_yaml(&secret.secret_value) {
            Ok(bundle) => Held::Bundle {
                bundle: Box::new(bundle),
                value: secret.secret_value,
                version: secret.version,
            },
            Err(_) => Held::Other {
                value: secret.secret_value,
                version: secret.version,
            },
        }),
        Err(e) if e.is_not_found() => Ok(Held::Nothing),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_derived_from_the_cluster_name() {
        assert_eq!(default_key("home"), "TALOS_SECRETS_HOME");
        assert_eq!(default_key("home-lab.2"), "TALOS_SECRETS_HOME_LAB_2");
        let mut block = EscrowBlock {
            name: Value::Value("home".into()),
            ..Default::default()
        };
        block.fill_defaults();
        assert_eq!(block.key, Value::Value("TALOS_SECRETS_HOME".into()));
        assert_eq!(block.path, Value::Value("/".into()));
    }

    #[test]
    fn a_bad_path_or_key_is_refused_naming_the_attribute() {
        let block = EscrowBlock {
            project_id: Value::Value("p".into()),
            environment: Value::Value("prod".into()),
            path: Value::Value("clusters".into()),
            name: Value::Value("home".into()),
            key: Value::Value("A KEY".into()),
            ..Default::default()
        };
        let mut diags = Diagnostics::default();
        block.validate(&mut diags);
        let attributes: Vec<_> = diags.errors.iter().map(|e| e.attribute.clone()).collect();
        assert_eq!(attributes, vec![attribute("path"), attribute("key")]);
    }

    #[test]
    fn the_digest_ignores_infisicals_trimming_and_differs_between_bundles() {
        let now = time::OffsetDateTime::now_utc();
        let yaml = SecretsBundle::for_checks(now)
            .unwrap()
            .to_talos_yaml()
            .unwrap();
        let other = SecretsBundle::for_checks(now)
            .unwrap()
            .to_talos_yaml()
            .unwrap();
        assert_eq!(digest(&yaml), digest(&format!("\n{yaml}\n\n")));
        assert_ne!(digest(&yaml), digest(&other));
        assert_eq!(digest(&yaml).len(), 64);
    }
}

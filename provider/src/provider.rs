//! The provider block: configuration, environment fallbacks, and the clients it builds.
//!
//! Each section (`proxmox`, `infisical`) is optional: a configuration that only uses
//! `castle_talos_cluster` needs neither. A resource that needs a missing section says which
//! attribute or environment variable to set.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, NestedBlock, Schema,
};
use tf_provider::value::{self, Value, ValueEmpty};
use tf_provider::{map, AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::talos::factory::FactorySettings;
use crate::{infisical, proxmox, resources};

/// The `proxmox { ... }` block.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProxmoxBlock {
    /// Base URL, e.g. `https://pve.example:8006`.
    pub endpoint: Value<String>,
    /// `USER@REALM!TOKENID=SECRET`.
    pub api_token: Value<String>,
    /// Login for ticket authentication.
    pub username: Value<String>,
    /// Password for ticket authentication.
    pub password: Value<String>,
    /// Skip TLS verification.
    pub insecure: Value<bool>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_cert_pem: Value<String>,
}

/// The `infisical { ... }` block.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InfisicalBlock {
    /// Server URL.
    pub host: Value<String>,
    /// Universal Auth client id.
    pub client_id: Value<String>,
    /// Universal Auth client secret.
    pub client_secret: Value<String>,
    /// Extra CA certificate(s) (PEM) to trust, for a self-hosted Infisical behind a private CA.
    #[serde(default)]
    pub ca_cert_pem: Value<String>,
}

/// The `image_factory { ... }` block.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ImageFactoryBlock {
    /// Base URL.
    pub url: Value<String>,
    /// Extra CA certificate(s) (PEM) to trust.
    pub ca_cert_pem: Value<String>,
}

/// The whole provider configuration.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProviderConfig {
    /// Optional Proxmox section.
    #[serde(with = "value::serde_as_vec", default)]
    pub proxmox: Value<ProxmoxBlock>,
    /// Optional Infisical section.
    #[serde(with = "value::serde_as_vec", default)]
    pub infisical: Value<InfisicalBlock>,
    /// Optional Image Factory section.
    #[serde(with = "value::serde_as_vec", default)]
    pub image_factory: Value<ImageFactoryBlock>,
}

/// Why a client is not available to a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// The section's values come from other resources and are not known until apply: reads
    /// keep what state has, plan-time checks are skipped, apply configures again with them.
    NotYetKnown,
    /// Not configured, or configured wrongly: the message says what to set.
    Missing(String),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::NotYetKnown => f.write_str(
                "the provider's settings are not known yet (they depend on resources not created yet)",
            ),
            Unavailable::Missing(message) => f.write_str(message),
        }
    }
}

/// What `configure` produced, shared by every resource.
#[derive(Default)]
pub struct ProviderData {
    proxmox: OnceLock<Result<Arc<proxmox::Client>, Unavailable>>,
    infisical: OnceLock<Result<Arc<infisical::Client>, Unavailable>>,
    /// Warnings about the provider's own settings already reported by this process.
    warned: std::sync::Mutex<std::collections::BTreeSet<(String, String)>>,
    factory: OnceLock<FactorySettings>,
}

impl ProviderData {
    /// Reports a warning about the provider itself (an endpoint that does not answer) once per
    /// provider process, i.e. once per plan or apply: every resource planning against the same
    /// endpoint would otherwise repeat it word for word.
    pub fn warn_once(
        &self,
        diags: &mut tf_provider::Diagnostics,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        let (summary, detail) = (summary.into(), detail.into());
        let first = self
            .warned
            .lock()
            .expect("warnings poisoned")
            .insert((summary.clone(), detail.clone()));
        if first {
            diags.root_warning(summary, detail);
        }
    }

    /// The Proxmox client, or why there is none.
    pub fn proxmox(&self) -> Result<Arc<proxmox::Client>, Unavailable> {
        self.proxmox
            .get()
            .cloned()
            .unwrap_or(Err(Unavailable::NotYetKnown))
    }

    /// Provider data holding only an Infisical client: lets tests drive resources directly.
    pub fn with_infisical(client: infisical::Client) -> Self {
        let data = Self::default();
        let _ = data.infisical.set(Ok(Arc::new(client)));
        data
    }

    /// The Image Factory castle uploads schematics to and takes installers from:
    /// factory.talos.dev unless configured.
    pub fn factory(&self) -> FactorySettings {
        self.factory
            .get()
            .cloned()
            .unwrap_or_else(FactorySettings::public)
    }

    /// The Infisical client, or why there is none.
    pub fn infisical(&self) -> Result<Arc<infisical::Client>, Unavailable> {
        self.infisical
            .get()
            .cloned()
            .unwrap_or(Err(Unavailable::NotYetKnown))
    }
}

/// The castle provider.
#[derive(Default, Clone)]
pub struct CastleProvider {
    data: Arc<ProviderData>,
}

fn string_attr(description: &str, sensitive: bool) -> Attribute {
    Attribute {
        attr_type: AttributeType::String,
        description: Description::markdown(description),
        constraint: AttributeConstraint::Optional,
        sensitive,
        ..Default::default()
    }
}

/// A configured value, or the environment variable, or nothing.
fn or_env(value: &Value<String>, env: &str) -> Option<String> {
    match value {
        Value::Value(v) if !v.is_empty() => Some(v.clone()),
        _ => std::env::var(env).ok().filter(|v| !v.is_empty()),
    }
}

fn env_bool(value: &Value<bool>, env: &str) -> bool {
    match value {
        Value::Value(v) => *v,
        _ => std::env::var(env)
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
            .unwrap_or(false),
    }
}

/// Builds the Proxmox client settings from the block and the environment.
pub fn proxmox_settings(
    block: &ProxmoxBlock,
) -> Result<Option<proxmox::ClientConfig>, (AttributePath, String)> {
    let path = AttributePath::new("proxmox").index(0);
    let Some(endpoint) = or_env(&block.endpoint, "PROXMOX_VE_ENDPOINT") else {
        return Ok(None);
    };
    let auth = if let Some(token) = or_env(&block.api_token, "PROXMOX_VE_API_TOKEN") {
        proxmox::Auth::Token(token)
    } else {
        match (
            or_env(&block.username, "PROXMOX_VE_USERNAME"),
            or_env(&block.password, "PROXMOX_VE_PASSWORD"),
        ) {
            (Some(username), Some(password)) => proxmox::Auth::Password { username, password },
            _ => {
                return Err((
                    path.attribute("api_token"),
                    "Set api_token (or PROXMOX_VE_API_TOKEN), or username and password \
                     (or PROXMOX_VE_USERNAME and PROXMOX_VE_PASSWORD)."
                        .into(),
                ))
            }
        }
    };
    Ok(Some(proxmox::ClientConfig {
        endpoint,
        auth,
        insecure: env_bool(&block.insecure, "PROXMOX_VE_INSECURE"),
        ca_cert_pem: or_env(&block.ca_cert_pem, "PROXMOX_VE_CA_CERT_PEM"),
    }))
}

/// Builds the Infisical client settings from the block and the environment.
pub fn infisical_settings(
    block: &InfisicalBlock,
) -> Result<Option<infisical::ClientConfig>, (AttributePath, String)> {
    let path = AttributePath::new("infisical").index(0);
    let client_id = or_env(&block.client_id, "INFISICAL_UNIVERSAL_AUTH_CLIENT_ID");
    let client_secret = or_env(
        &block.client_secret,
        "INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET",
    );
    match (client_id, client_secret) {
        (None, None) => Ok(None),
        (Some(client_id), Some(client_secret)) => Ok(Some(infisical::ClientConfig {
            host: or_env(&block.host, "INFISICAL_HOST")
                .unwrap_or_else(|| infisical::DEFAULT_HOST.to_string()),
            client_id,
            client_secret,
            ca_cert_pem: or_env(&block.ca_cert_pem, "INFISICAL_CA_CERT_PEM"),
        })),
        (Some(_), None) => Err((
            path.attribute("client_secret"),
            "Set client_secret (or INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET) with client_id.".into(),
        )),
        (None, Some(_)) => Err((
            path.attribute("client_id"),
            "Set client_id (or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID) with client_secret.".into(),
        )),
    }
}

#[async_trait]
impl Provider for CastleProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let proxmox = Block {
            description: Description::markdown(
                "Proxmox VE API access, needed only by `castle_proxmox_vm`. Each argument falls \
                 back to the environment variable named with it. TLS verification is on; one \
                 connection pool serves every resource.",
            ),
            attributes: map! {
                "endpoint" => string_attr("API URL, e.g. `https://pve.example:8006`. Env: `PROXMOX_VE_ENDPOINT`.", false),
                "api_token" => string_attr("API token `USER@REALM!TOKENID=SECRET`. Env: `PROXMOX_VE_API_TOKEN`.", true),
                "username" => string_attr("User for ticket login instead of a token, e.g. `root@pam`; castle logs in again when the ticket expires. Env: `PROXMOX_VE_USERNAME`.", false),
                "password" => string_attr("Password for ticket login. Env: `PROXMOX_VE_PASSWORD`.", true),
                "insecure" => Attribute {
                    attr_type: AttributeType::Bool,
                    description: Description::markdown("Skip TLS certificate verification. Prefer `ca_cert_pem`. Env: `PROXMOX_VE_INSECURE` (`1`, `true` or `yes`)."),
                    constraint: AttributeConstraint::Optional,
                    ..Default::default()
                },
                "ca_cert_pem" => string_attr("PEM of a CA certificate to trust for the API, e.g. the cluster's own CA (`/etc/pve/pve-root-ca.pem`). Env: `PROXMOX_VE_CA_CERT_PEM`.", false)
            },
            ..Default::default()
        };
        let infisical = Block {
            description: Description::markdown(
                "Infisical access by Universal Auth (a machine identity), needed only by \
                 `castle_kubeconfig_secret`. Each argument falls back to the environment variable \
                 named with it.",
            ),
            attributes: map! {
                "host" => string_attr("Server URL, default `https://app.infisical.com`. Env: `INFISICAL_HOST`.", false),
                "client_id" => string_attr("Machine identity client id. Env: `INFISICAL_UNIVERSAL_AUTH_CLIENT_ID`.", false),
                "client_secret" => string_attr("Machine identity client secret. Env: `INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET`.", true),
                "ca_cert_pem" => string_attr("PEM of the CA certificate(s) to trust for a self-hosted Infisical behind a private CA; several certificates may be given. Env: `INFISICAL_CA_CERT_PEM`.", false)
            },
            ..Default::default()
        };
        let image_factory = Block {
            description: Description::markdown(
                "The Image Factory `castle_talos_cluster` uploads the schematic of its `extensions` to and \
                 takes its installer image from (`<factory host>/installer/<schematic id>:<version>`). Each \
                 argument falls back to the environment variable named with it.",
            ),
            attributes: map! {
                "url" => string_attr("Base URL, default `https://factory.talos.dev`; a self-hosted factory must serve its registry on the same host. Env: `TALOS_IMAGE_FACTORY_URL`.", false),
                "ca_cert_pem" => string_attr("PEM of the CA certificate(s) to trust for a factory behind a private CA. Env: `TALOS_IMAGE_FACTORY_CA_CERT_PEM`.", false)
            },
            ..Default::default()
        };
        Some(Schema {
            version: 1,
            block: Block {
                description: Description::plain(
                    "Proxmox VE VMs, Talos Linux clusters and their kubeconfig in Infisical, from one terraform apply.",
                ),
                blocks: map! {
                    "proxmox" => NestedBlock::Optional(proxmox),
                    "infisical" => NestedBlock::Optional(infisical),
                    "image_factory" => NestedBlock::Optional(image_factory)
                },
                ..Default::default()
            },
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::Config<'a>) -> Option<()> {
        crate::resources::emptied_state::refuse_a_destroy(diags);
        if let Value::Value(block) = &config.proxmox {
            if let Value::Value(endpoint) = &block.endpoint {
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                    diags.error(
                        "Invalid Proxmox endpoint",
                        format!("{endpoint:?} is not a URL; use e.g. https://pve.example:8006"),
                        AttributePath::new("proxmox").index(0).attribute("endpoint"),
                    );
                }
            }
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        terraform_version: String,
        config: Self::Config<'a>,
    ) -> Option<()> {
        tracing::info!(
            version = crate::VERSION,
            terraform_version = %terraform_version,
            "castle configured"
        );
        let proxmox_block = config.proxmox.as_ref_option().cloned().unwrap_or_default();
        let proxmox_unknown = config.proxmox.is_unknown()
            || [
                &proxmox_block.endpoint,
                &proxmox_block.api_token,
                &proxmox_block.username,
                &proxmox_block.password,
                &proxmox_block.ca_cert_pem,
            ]
            .iter()
            .any(|v| v.is_unknown())
            || proxmox_block.insecure.is_unknown();
        let proxmox = match proxmox_settings(&proxmox_block) {
            _ if proxmox_unknown => Err(Unavailable::NotYetKnown),
            Ok(Some(settings)) => proxmox::Client::new(settings).map(Arc::new).map_err(|e| {
                diags.root_error("Unable to configure the Proxmox client", e.to_string());
                Unavailable::Missing(e.to_string())
            }),
            Ok(None) => Err(Unavailable::Missing("castle_proxmox_vm needs Proxmox access: set the provider's \
                proxmox { endpoint, api_token } block or PROXMOX_VE_ENDPOINT and PROXMOX_VE_API_TOKEN \
                (or PROXMOX_VE_USERNAME / PROXMOX_VE_PASSWORD)."
                .to_string())),
            Err((path, message)) => {
                diags.error("Incomplete Proxmox configuration", message.clone(), path);
                Err(Unavailable::Missing(message))
            }
        };
        let infisical_block = config
            .infisical
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let infisical_unknown = config.infisical.is_unknown()
            || [
                &infisical_block.host,
                &infisical_block.client_id,
                &infisical_block.client_secret,
                &infisical_block.ca_cert_pem,
            ]
            .iter()
            .any(|v| v.is_unknown());
        let infisical = match infisical_settings(&infisical_block) {
            _ if infisical_unknown => Err(Unavailable::NotYetKnown),
            Ok(Some(settings)) => infisical::Client::new(settings).map(Arc::new).map_err(|e| {
                diags.root_error("Unable to configure the Infisical client", e.to_string());
                Unavailable::Missing(e.to_string())
            }),
            Ok(None) => Err(Unavailable::Missing("castle_kubeconfig_secret needs Infisical access: set the provider's \
                infisical { client_id, client_secret } block or INFISICAL_UNIVERSAL_AUTH_CLIENT_ID and \
                INFISICAL_UNIVERSAL_AUTH_CLIENT_SECRET."
                .to_string())),
            Err((path, message)) => {
                diags.error("Incomplete Infisical configuration", message.clone(), path);
                Err(Unavailable::Missing(message))
            }
        };
        let factory_block = config
            .image_factory
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let factory = FactorySettings {
            url: or_env(&factory_block.url, "TALOS_IMAGE_FACTORY_URL")
                .unwrap_or_else(|| crate::talos::factory::DEFAULT_URL.to_string()),
            ca_cert_pem: or_env(
                &factory_block.ca_cert_pem,
                "TALOS_IMAGE_FACTORY_CA_CERT_PEM",
            ),
        };
        if let Err(e) = factory.host() {
            diags.error(
                "Invalid Image Factory URL",
                e,
                AttributePath::new("image_factory")
                    .index(0)
                    .attribute("url"),
            );
        }
        let _ = self.data.factory.set(factory);
        let _ = self.data.proxmox.set(proxmox);
        let _ = self.data.infisical.set(infisical);
        if diags.errors.is_empty() {
            Some(())
        } else {
            None
        }
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(resources::all(&self.data))
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(HashMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_about_the_provider_is_reported_once_however_many_resources_meet_it() {
        let data = ProviderData::default();
        let mut diags = tf_provider::Diagnostics::default();
        for _ in 0..5 {
            data.warn_once(&mut diags, "Proxmox does not answer", "at https://pve:8006");
        }
        data.warn_once(
            &mut diags,
            "Proxmox does not answer",
            "at https://other:8006",
        );
        // tf-provider may append a backtrace to the detail: compare its first line.
        let details: Vec<_> = diags
            .warnings
            .iter()
            .map(|w| w.detail.lines().next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(details, ["at https://pve:8006", "at https://other:8006"]);
    }
}

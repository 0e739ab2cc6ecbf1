//! `castle_talos_secrets`: a cluster's PKI and tokens, generated (or brought from an existing
//! cluster) and kept in state before any node sees them. ADR 0011 says why.

mod emptied_state;
mod schema;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};
use time::OffsetDateTime;

use crate::resources::diag::unable;
use crate::talos::pki::SecretsBundle;

/// The resource. It needs no provider configuration: nothing leaves the provider.
#[derive(Default)]
pub struct TalosSecretsResource;

/// Its state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretsState {
    /// `cluster.id`.
    pub id: Value<String>,
    /// A user's `talosctl gen secrets` file.
    pub secrets_yaml: Value<String>,
    /// The stored secrets, Talos format.
    pub secrets: Value<String>,
}

/// Reads `secrets_yaml`, with an error on that attribute when it is not a usable bundle.
fn parse_input(diags: &mut Diagnostics, text: &str) -> Option<SecretsBundle> {
    match SecretsBundle::from_talos_yaml(text) {
        Ok(bundle) => Some(bundle),
        Err(e) => {
            diags.error(
                "Invalid secrets_yaml",
                format!("{e}. Give the file `talosctl gen secrets` writes (secrets.yaml)."),
                AttributePath::new("secrets_yaml"),
            );
            None
        }
    }
}

/// The state for `bundle`, its YAML written once.
fn stored(
    diags: &mut Diagnostics,
    bundle: &SecretsBundle,
    input: Value<String>,
) -> Option<SecretsState> {
    match bundle.to_talos_yaml() {
        Ok(yaml) => Some(SecretsState {
            id: Value::Value(bundle.cluster_id.clone()),
            secrets_yaml: input,
            secrets: Value::Value(yaml),
        }),
        Err(e) => {
            unable(diags, "write the cluster secrets", e);
            None
        }
    }
}

/// True when `text` holds the same bundle as the stored `secrets`.
fn same_bundle(text: &str, secrets: &Value<String>) -> bool {
    let stored = secrets
        .as_ref_option()
        .and_then(|s| SecretsBundle::from_talos_yaml(s).ok());
    SecretsBundle::from_talos_yaml(text)
        .ok()
        .is_some_and(|b| Some(b) == stored)
}

/// Refuses to generate secrets when the local state file was emptied by a killed run
/// ([`emptied_state`]): the secrets in its backup are the ones the nodes trust.
fn refuse_over_an_emptied_state(diags: &mut Diagnostics) -> Option<()> {
    let dir = std::env::current_dir().ok()?;
    let Some(emptied) = emptied_state::find(&dir) else {
        return Some(());
    };
    let (state, backup) = (emptied.state.display(), emptied.backup.display());
    diags.root_error(
        "The state file was emptied by a killed run",
        format!(
            "{state} is empty while {backup} holds {} castle resources: a Terraform run killed while it rewrote \
             the state file (Terraform's local backend truncates it before writing it) left it empty, and \
             Terraform now believes nothing exists. Generating new secrets would make this cluster's nodes \
             refuse castle as another cluster's. Put the backup back, then apply:\n\n  \
             cp {backup} {state}\n  terraform apply\n\n\
             If that backup is of a cluster you removed on purpose, delete {backup} instead.",
            emptied.castle_resources
        ),
    );
    None
}

#[async_trait]
impl Resource for TalosSecretsResource {
    type State<'a> = SecretsState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(text) = &config.secrets_yaml {
            parse_input(diags, text)?;
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        _diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Nothing outside Terraform holds them: state is the truth.
        Some((state, private_state))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed_state;
        match &state.secrets_yaml {
            // Given secrets are known at plan time: the cluster can plan with them at once.
            Value::Value(text) => {
                let bundle = parse_input(diags, text)?;
                state = stored(diags, &bundle, state.secrets_yaml.clone())?;
            }
            _ => {
                refuse_over_an_emptied_state(diags)?;
                state.id = Value::Unknown;
                state.secrets = Value::Unknown;
            }
        }
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut state = proposed_state;
        state.id = prior_state.id.clone();
        state.secrets = prior_state.secrets.clone();
        // Writing down the secrets already stored (after an import, or a file added to the
        // configuration later) changes nothing; other secrets are another cluster.
        let replace = match &state.secrets_yaml {
            Value::Value(text) => !same_bundle(text, &prior_state.secrets),
            Value::Unknown => true,
            Value::Null => false,
        };
        if replace {
            state.id = Value::Unknown;
            state.secrets = Value::Unknown;
            return Some((
                state,
                prior_private_state,
                vec![AttributePath::new("secrets_yaml")],
            ));
        }
        Some((state, prior_private_state, vec![]))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        prior_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private_state)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        if planned_state.secrets.is_value() {
            return Some((planned_state, ValueEmpty::default()));
        }
        let bundle = match &planned_state.secrets_yaml {
            Value::Value(text) => parse_input(diags, text)?,
            _ => {
                let now = OffsetDateTime::now_utc();
                match tokio::task::spawn_blocking(move || SecretsBundle::generate(now)).await {
                    Ok(Ok(bundle)) => bundle,
                    Ok(Err(e)) => {
                        unable(diags, "generate the cluster secrets", e);
                        return None;
                    }
                    Err(e) => {
                        unable(diags, "generate the cluster secrets", e);
                        return None;
                    }
                }
            }
        };
        let state = stored(diags, &bundle, planned_state.secrets_yaml.clone())?;
        Some((state, ValueEmpty::default()))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Only secrets_yaml changed, to the same bundle (plan_update replaces otherwise).
        Some((planned_state, ValueEmpty::default()))
    }

    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        // Terraform destroys the cluster (and resets its nodes) before the secrets it reads.
        Some(())
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let text = match std::fs::read_to_string(&id) {
            Ok(text) => text,
            Err(e) => {
                unable(
                    diags,
                    "import the cluster secrets",
                    format!("the import id is the path of a talosctl gen secrets file; reading {id:?}: {e}"),
                );
                return None;
            }
        };
        let bundle = match SecretsBundle::from_talos_yaml(&text) {
            Ok(bundle) => bundle,
            Err(e) => {
                unable(diags, "import the cluster secrets", format!("{id}: {e}"));
                return None;
            }
        };
        let state = stored(diags, &bundle, Value::Null)?;
        Some((state, ValueEmpty::default()))
    }
}

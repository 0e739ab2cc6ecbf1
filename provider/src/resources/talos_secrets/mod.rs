//! `castle_talos_secrets`: a cluster's PKI and tokens, generated (or brought from an existing
//! cluster) and kept in state before any node sees them (ADR 0011), and optionally escrowed in
//! Infisical so that a lost state finds them again (ADR 0017).

mod escrow;
mod schema;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::Schema;
use tf_provider::value::{serde_as_vec, Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::infisical::sync::{self, SyncError};
use crate::infisical::{self, SecretRef};
use crate::provider::ProviderData;
use crate::resources::diag::unable;
use crate::resources::kubeconfig_secret::{Queued, QueuedWrite};
use crate::resources::{emptied_state, infisical_access};
use crate::talos::pki::SecretsBundle;

use escrow::{digest, EscrowBlock, Held};

/// How long an escrow write (or delete) may take.
const ESCROW_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a read of the escrow may take.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the plan-time look at the escrow may take; past it, apply checks again.
const PLAN_CHECK_BUDGET: Duration = Duration::from_secs(10);

/// The resource. Without an escrow it needs no provider configuration: nothing leaves the
/// provider.
pub struct TalosSecretsResource {
    data: Arc<ProviderData>,
}

impl TalosSecretsResource {
    /// A resource bound to the provider's clients (for the escrow).
    pub fn new(data: Arc<ProviderData>) -> Self {
        Self { data }
    }
}

/// Its state.
#[derive(Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretsState {
    /// `cluster.id`.
    pub id: Value<String>,
    /// A user's `talosctl gen secrets` file.
    pub secrets_yaml: Value<String>,
    /// The stored secrets, Talos format.
    pub secrets: Value<String>,
    /// Where the secrets are escrowed in Infisical, if anywhere.
    #[serde(with = "serde_as_vec", default)]
    pub escrow: Value<EscrowBlock>,
}

// The secrets never reach Debug output (and so never reach logs).
impl fmt::Debug for SecretsState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Value<String>| match v {
            Value::Value(_) => "<set>",
            Value::Null => "<null>",
            Value::Unknown => "<unknown>",
        };
        f.debug_struct("SecretsState")
            .field("id", &self.id)
            .field("secrets_yaml", &shown(&self.secrets_yaml))
            .field("secrets", &shown(&self.secrets))
            .field("escrow", &self.escrow)
            .finish()
    }
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

/// Stores `bundle` in `state` (`id` and `secrets`), its YAML written once.
fn store(diags: &mut Diagnostics, bundle: &SecretsBundle, state: &mut SecretsState) -> Option<()> {
    match bundle.to_talos_yaml() {
        Ok(yaml) => {
            state.id = Value::Value(bundle.cluster_id.clone());
            state.secrets = Value::Value(yaml);
            Some(())
        }
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
    emptied.refuse(
        diags,
        "Generating new secrets would make this cluster's nodes refuse castle as another cluster's.",
        "terraform apply",
    );
    None
}

/// A new bundle, generated off the async runtime (the RSA key takes a while).
async fn generate(diags: &mut Diagnostics) -> Option<SecretsBundle> {
    let now = OffsetDateTime::now_utc();
    match tokio::task::spawn_blocking(move || SecretsBundle::generate(now)).await {
        Ok(Ok(bundle)) => Some(bundle),
        Ok(Err(e)) => {
            unable(diags, "generate the cluster secrets", e);
            None
        }
        Err(e) => {
            unable(diags, "generate the cluster secrets", e);
            None
        }
    }
}

fn place(at: &SecretRef) -> String {
    format!(
        "secret {} at {} in environment {}",
        at.key, at.path, at.environment
    )
}

/// The refusal when the escrow already holds other secrets than the ones to escrow.
fn refuse_other_bundle(diags: &mut Diagnostics, at: &SecretRef, held: &Held, wanted: &str) {
    let what = match held {
        Held::Bundle { bundle, .. } => format!(
            "the secrets of another cluster (cluster id {}, not {wanted})",
            bundle.cluster_id
        ),
        _ => "something that is not a talosctl gen secrets bundle".to_string(),
    };
    diags.error(
        "Unable to escrow the cluster secrets",
        format!(
            "Infisical's {place} already holds {what}; castle left it untouched. If it belongs \
             to no running cluster (e.g. a cluster destroyed without Terraform), delete that \
             secret in Infisical and apply again; otherwise give this cluster its own escrow \
             (another escrow.name, escrow.key or escrow.path).",
            place = place(at),
        ),
        AttributePath::new("escrow"),
    );
}

/// Writes `yaml` into the escrow key (creating its folders): over what it holds when
/// `overwrite` (the escrow state knows as its own), else only into a key that holds nothing or
/// the same bundle. `None` after an error. A write Infisical queued as a change request is
/// recorded in `queued` and warned about, and one already waiting is not sent again (it would
/// queue a second request); both leave the escrow's version and digest null.
async fn deposit(
    client: &infisical::Client,
    escrow: &mut EscrowBlock,
    at: &SecretRef,
    yaml: &str,
    overwrite: bool,
    queued: &mut Queued,
    diags: &mut Diagnostics,
) -> Option<()> {
    let deadline = Instant::now() + ESCROW_TIMEOUT;
    if let Err(e) = client
        .ensure_folder(&at.project_id, &at.environment, &at.path, deadline)
        .await
    {
        unable(diags, "create the Infisical folder of the escrow", e);
        return None;
    }
    let comment = escrow.comment();
    if let Some(waiting) = queued.waiting(&at.key, yaml, &comment) {
        diags.root_warning(
            "Waiting on an Infisical change request",
            format!(
                "The escrow of the cluster secrets in secret {key} already waits in Infisical as \
                 change request {slug:?}, queued by an earlier apply; castle does not queue it a \
                 second time. Approve and merge it in Infisical.",
                key = at.key,
                slug = waiting.slug,
            ),
        );
        escrow.version = Value::Null;
        escrow.sha256 = Value::Null;
        return Some(());
    }
    let written = if overwrite {
        sync::push(client, at, yaml, &comment, deadline).await
    } else {
        sync::create_or_adopt(client, at, yaml, &comment, deadline).await
    };
    match written {
        Ok(version) => {
            escrow.version = Value::Value(version);
            escrow.sha256 = Value::Value(digest(yaml));
            Some(())
        }
        Err(SyncError::Api(infisical::Error::ChangeRequested {
            slug,
            id,
            environment,
            ..
        })) => {
            infisical_access::warn_creation_queued(diags, at, &slug, &id, &environment);
            queued.record(QueuedWrite {
                key: at.key.clone(),
                value: yaml.to_string(),
                comment,
                slug,
                id,
            });
            escrow.version = Value::Null;
            escrow.sha256 = Value::Null;
            Some(())
        }
        Err(e) => {
            unable(diags, "escrow the cluster secrets", e);
            None
        }
    }
}

/// Private state holding `queued`, null when nothing waits.
fn waiting_on(queued: Queued) -> Value<Queued> {
    if queued.is_empty() {
        Value::Null
    } else {
        Value::Value(queued)
    }
}

/// Whether a write of secret `key` waits in an Infisical change request.
fn waits(private: &Value<Queued>, key: &Value<String>) -> bool {
    match (private.as_ref_option(), key.as_ref_option()) {
        (Some(queued), Some(key)) => queued.writes.iter().any(|w| &w.key == key),
        _ => false,
    }
}

impl TalosSecretsResource {
    /// At plan time, with `secrets_yaml` given: refuses an escrow that already holds other
    /// secrets, when Infisical answers in time (apply checks again otherwise).
    async fn check_escrow_at_plan(
        &self,
        diags: &mut Diagnostics,
        escrow: &EscrowBlock,
        bundle: &SecretsBundle,
    ) {
        let (Ok(client), Some(at)) = (self.data.infisical(), escrow.secret_ref()) else {
            return;
        };
        match escrow::held(&client, &at, Instant::now() + PLAN_CHECK_BUDGET).await {
            Ok(held @ Held::Bundle { .. }) | Ok(held @ Held::Other { .. }) => {
                if !matches!(&held, Held::Bundle { bundle: b, .. } if **b == *bundle) {
                    refuse_other_bundle(diags, &at, &held, &bundle.cluster_id);
                }
            }
            Ok(Held::Nothing) | Err(_) => {}
        }
    }
}
#[async_trait]
impl Resource for TalosSecretsResource {
    type State<'a> = SecretsState;
    // Escrow writes Infisical queued as change requests (as castle_kubeconfig_secret keeps
    // them); null when none.
    type PrivateState<'a> = Value<Queued>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(text) = &config.secrets_yaml {
            parse_input(diags, text)?;
        }
        if let Value::Value(mut escrow) = config.escrow {
            escrow.fill_defaults();
            escrow.validate(diags);
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // State is the truth about the secrets; the escrow is checked against it.
        let mut state = state;
        let Value::Value(escrow) = &mut state.escrow else {
            return Some((state, private_state));
        };
        if infisical_access::not_yet_known(&self.data) {
            return Some((state, private_state));
        }
        let Some(at) = escrow.secret_ref() else {
            return Some((state, private_state));
        };
        let client = infisical_access::client(&self.data, diags, "read the escrowed secrets")?;
        let mut queued = private_state.as_ref_option().cloned().unwrap_or_default();
        match escrow::held(&client, &at, Instant::now() + READ_TIMEOUT).await {
            Ok(Held::Bundle { value, version, .. }) | Ok(Held::Other { value, version }) => {
                escrow.version = Value::Value(version);
                escrow.sha256 = Value::Value(digest(&value));
                queued.settle(&at.key, &value);
            }
            // Its creation waits in a change request: not deleted, not there yet.
            Ok(Held::Nothing) if waits(&private_state, &escrow.key) => {}
            Ok(Held::Nothing) => {
                tracing::info!(key = %at.key, path = %at.path, "escrowed secrets deleted outside Terraform");
                escrow.version = Value::Null;
                escrow.sha256 = Value::Null;
            }
            Err(e) => {
                unable(diags, "read the escrowed secrets", e);
                return None;
            }
        }
        for waiting in &queued.writes {
            diags.root_warning(
                "Waiting on an Infisical change request",
                format!(
                    "The escrow of the cluster secrets in secret {key} is queued in Infisical as \
                     change request {slug:?} and not applied yet: approve and merge it in \
                     Infisical. Until then, a lost Terraform state cannot be recovered from it.",
                    key = waiting.key,
                    slug = waiting.slug
                ),
            );
        }
        Some((state, waiting_on(queued)))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed_state;
        if let Value::Value(escrow) = &mut state.escrow {
            escrow.fill_defaults();
            escrow.validate(diags);
            // Known once written: a change request may hold the write back.
            escrow.version = Value::Unknown;
            escrow.sha256 = Value::Unknown;
            infisical_access::check_credentials(&self.data, diags).await;
        }
        match &state.secrets_yaml {
            // Given secrets are known at plan time: the cluster can plan with them at once.
            Value::Value(text) => {
                let bundle = parse_input(diags, text)?;
                store(diags, &bundle, &mut state)?;
                if let Value::Value(escrow) = &state.escrow {
                    self.check_escrow_at_plan(diags, escrow, &bundle).await;
                }
            }
            _ => {
                // An escrow gives the lost secrets back; without one they are only in the backup.
                if state.escrow.is_null() {
                    refuse_over_an_emptied_state(diags)?;
                }
                state.id = Value::Unknown;
                state.secrets = Value::Unknown;
            }
        }
        Some((state, Value::Null))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
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
        if let Value::Value(escrow) = &mut state.escrow {
            escrow.fill_defaults();
            escrow.validate(diags);
            let wanted = prior_state.secrets.as_ref_option().map(|s| digest(s));
            // The escrow stands when it is where it was and holds the stored bundle, or when
            // its write waits in a change request (writing again would queue a second one);
            // anything else is written again.
            let stands = match &prior_state.escrow {
                Value::Value(prior) if !replace && prior.same_place(escrow) => {
                    prior.sha256.as_ref_option() == wanted.as_ref()
                        || waits(&prior_private_state, &prior.key)
                }
                _ => false,
            };
            match &prior_state.escrow {
                Value::Value(prior) if stands => {
                    escrow.version = prior.version;
                    escrow.sha256 = prior.sha256.clone();
                }
                _ => {
                    escrow.version = Value::Unknown;
                    escrow.sha256 = Value::Unknown;
                }
            }
        }
        if state != prior_state && state.escrow.is_value() {
            infisical_access::check_credentials(&self.data, diags).await;
        }
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
        let mut state = planned_state;
        let given = match &state.secrets_yaml {
            Value::Value(text) => Some(parse_input(diags, text)?),
            _ => None,
        };
        let mut queued = Queued::default();
        let Value::Value(escrow) = &mut state.escrow else {
            let bundle = match given {
                Some(bundle) => bundle,
                None => generate(diags).await?,
            };
            store(diags, &bundle, &mut state)?;
            return Some((state, Value::Null));
        };
        let action = "escrow the cluster secrets";
        let client = infisical_access::client(&self.data, diags, action)?;
        let Some(at) = escrow.secret_ref() else {
            unable(
                diags,
                action,
                "the escrow's project, environment, path or key is not known",
            );
            return None;
        };
        // What an earlier run escrowed is this cluster's identity: a run whose state was lost
        // (or killed between this write and Terraform's state write) left it there.
        let held = match escrow::held(&client, &at, Instant::now() + READ_TIMEOUT).await {
            Ok(held) => held,
            Err(e) => {
                unable(diags, action, e);
                return None;
            }
        };
        let bundle = match held {
            Held::Bundle {
                bundle,
                value,
                version,
            } => {
                match &given {
                    Some(given) if *given != *bundle => {
                        refuse_other_bundle(
                            diags,
                            &at,
                            &Held::Bundle {
                                bundle,
                                value,
                                version,
                            },
                            &given.cluster_id,
                        );
                        return None;
                    }
                    Some(_) => {}
                    None => diags.root_warning(
                        "Adopted the cluster secrets escrowed in Infisical",
                        format!(
                            "Infisical's {place} already held a secrets bundle (cluster id {id}), \
                             left by an earlier run whose Terraform state was lost. castle took it \
                             instead of generating new secrets, so nodes already configured with \
                             it are recognised as this cluster's. If that bundle belongs to \
                             another cluster, give this one its own escrow (another escrow.name, \
                             escrow.key or escrow.path).",
                            place = place(&at),
                            id = bundle.cluster_id,
                        ),
                    ),
                }
                escrow.version = Value::Value(version);
                escrow.sha256 = Value::Value(digest(&value));
                *bundle
            }
            other @ Held::Other { .. } => {
                let wanted = given.as_ref().map_or("new secrets", |b| &b.cluster_id);
                refuse_other_bundle(diags, &at, &other, wanted);
                return None;
            }
            Held::Nothing => {
                let bundle = match given {
                    Some(bundle) => bundle,
                    None => generate(diags).await?,
                };
                let yaml = match bundle.to_talos_yaml() {
                    Ok(yaml) => yaml,
                    Err(e) => {
                        unable(diags, "write the cluster secrets", e);
                        return None;
                    }
                };
                // Written before this create returns: nothing reaches a node before then.
                deposit(&client, escrow, &at, &yaml, false, &mut queued, diags).await?;
                bundle
            }
        };
        store(diags, &bundle, &mut state)?;
        Some((state, waiting_on(queued)))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        planned_state: Self::State<'a>,
        _config_state: Self::State<'a>,
        planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // The secrets never change here (other secrets replace the resource): only where they
        // are escrowed does.
        let mut state = planned_state;
        let mut queued = planned_private_state
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let action = "escrow the cluster secrets";
        let yaml = state.secrets.as_ref_option().cloned().unwrap_or_default();
        let prior = prior_state.escrow.as_ref_option();
        if let Value::Value(escrow) = &mut state.escrow {
            if escrow.version.is_unknown() || escrow.sha256.is_unknown() {
                let client = infisical_access::client(&self.data, diags, action)?;
                let Some(at) = escrow.secret_ref() else {
                    unable(
                        diags,
                        action,
                        "the escrow's project, environment, path or key is not known",
                    );
                    return None;
                };
                let ours = prior.is_some_and(|p| p.same_place(escrow));
                if !ours {
                    // A new place: only into a key that is empty or holds this very bundle.
                    let held = match escrow::held(&client, &at, Instant::now() + READ_TIMEOUT).await
                    {
                        Ok(held) => held,
                        Err(e) => {
                            unable(diags, action, e);
                            return None;
                        }
                    };
                    let wanted = SecretsBundle::from_talos_yaml(&yaml).ok();
                    match &held {
                        Held::Bundle { bundle, .. } if Some(&**bundle) == wanted.as_ref() => {}
                        Held::Nothing => {}
                        _ => {
                            let id = state.id.as_ref_option().cloned().unwrap_or_default();
                            refuse_other_bundle(diags, &at, &held, &id);
                            return None;
                        }
                    }
                }
                deposit(&client, escrow, &at, &yaml, ours, &mut queued, diags).await?;
            }
        }
        // A moved or removed escrow: the old key goes once the new one is written.
        if let Some(old) = prior {
            let kept = state
                .escrow
                .as_ref_option()
                .is_some_and(|e| e.same_place(old));
            if let (false, Some(at)) = (kept, old.secret_ref()) {
                let client = infisical_access::client(&self.data, diags, action)?;
                if let Err(e) = sync::remove(&client, &at, Instant::now() + ESCROW_TIMEOUT).await {
                    unable(diags, "delete the old escrow of the cluster secrets", e);
                    return None;
                }
                queued.writes.retain(|w| w.key != at.key);
            }
        }
        Some((state, waiting_on(queued)))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior_state: Self::State<'a>,
        _planned_private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        // Terraform destroys the cluster (and resets its nodes) before the secrets it reads.
        let Some(at) = prior_state
            .escrow
            .as_ref_option()
            .and_then(EscrowBlock::secret_ref)
        else {
            return Some(());
        };
        let action = "delete the escrowed cluster secrets";
        let client = infisical_access::client(&self.data, diags, action)?;
        // Already gone is what we wanted.
        if let Err(e) = sync::remove(&client, &at, Instant::now() + ESCROW_TIMEOUT).await {
            unable(diags, action, e);
            return None;
        }
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
        // An escrow in the configuration is written by the apply that follows.
        let mut state = SecretsState::default();
        store(diags, &bundle, &mut state)?;
        Some((state, Value::Null))
    }
}

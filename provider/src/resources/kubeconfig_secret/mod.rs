//! `castle_kubeconfig_secret`: a cluster's kubeconfig (and talosconfig) kept in Infisical.
//!
//! - Values in state are the configured ones as long as Infisical holds the same modulo its
//!   whitespace trimming, so the trimming never shows as a diff; a real change made in
//!   Infisical replaces the state value and shows as drift.
//! - A kubeconfig secret deleted in Infisical drops the resource from state (planned again).
//! - Values reach only state (sensitive): never logs, never diagnostics.

mod queued;
mod same_cluster;
mod schema;
mod state;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tf_provider::schema::Schema;
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};
use tokio::time::Instant;

use crate::infisical::sync::{self, SyncError};
use crate::infisical::{self, same_modulo_trimming, SecretRef};
use crate::provider::ProviderData;
use crate::resources::diag::unable;
use crate::resources::infisical_access;
use crate::resources::timeouts::Operation;

pub use queued::{Queued, QueuedWrite};
pub use state::{check_key, check_path, parse_id, KubeconfigSecretState};

/// Every operation's default timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Reads have no configurable timeout; this bounds their retries.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The resource.
pub struct KubeconfigSecretResource {
    data: Arc<ProviderData>,
}

impl KubeconfigSecretResource {
    /// A resource bound to the provider's clients.
    pub fn new(data: Arc<ProviderData>) -> Self {
        Self { data }
    }

    async fn check_credentials(&self, diags: &mut Diagnostics) {
        infisical_access::check_credentials(&self.data, diags).await
    }

    fn client(&self, diags: &mut Diagnostics, action: &str) -> Option<Arc<infisical::Client>> {
        infisical_access::client(&self.data, diags, action)
    }
}

fn deadline(state: &KubeconfigSecretState, operation: Operation) -> Instant {
    let timeout = state
        .timeouts
        .as_ref_option()
        .map_or(DEFAULT_TIMEOUT, |t| t.get(operation, DEFAULT_TIMEOUT));
    Instant::now() + timeout
}

/// Reports a failed write: a secret that is someone else's gets the import command.
fn report(diags: &mut Diagnostics, action: &str, error: SyncError) {
    match error {
        SyncError::AlreadyExistsDifferent { at } => unable(
            diags,
            action,
            format!(
                "{error}. To manage it with Terraform, import it:\n  terraform import \
                 castle_kubeconfig_secret.<name> '{id}'\n(or remove it in Infisical).",
                error = SyncError::AlreadyExistsDifferent { at: at.clone() },
                id = state::make_id(&at.project_id, &at.environment, &at.path, &at.key),
            ),
        ),
        SyncError::Api(e) => unable(diags, action, e),
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
fn waits(private: &Value<Queued>, key: &str) -> bool {
    private
        .as_ref_option()
        .is_some_and(|q| q.writes.iter().any(|w| w.key == key))
}

/// Creates one secret (or adopts one holding the value, or overwrites one holding
/// credentials of the same cluster: see `same_cluster`). When Infisical queues the creation as
/// a change request, the request is recorded in `queued` and a warning says so: the resource
/// is kept in state with a null version, so the next apply finds the request instead of
/// queueing a second one (Terraform keeps no private state for a create that fails), and the
/// version appears once the request is merged. Any other failure is an error (`None`).
async fn create_once(
    client: &infisical::Client,
    at: &SecretRef,
    value: &str,
    comment: &str,
    deadline: Instant,
    queued: &mut Queued,
    diags: &mut Diagnostics,
) -> Option<Value<i64>> {
    let same = |existing: &str| same_cluster::same_cluster(existing, value);
    match sync::create_or_take_over(client, at, value, comment, deadline, same).await {
        Ok(sync::Created::Written(version)) => Some(Value::Value(version)),
        Ok(sync::Created::TookOver(version)) => {
            diags.root_warning(
                format!(
                    "Secret {} replaced: it held this cluster's older credentials",
                    at.key
                ),
                format!(
                    "Secret {key} at {path} in environment {environment} already existed with \
                     credentials for the same cluster (same servers and CA certificate) but \
                     other client credentials, as a run whose Terraform state was lost leaves \
                     it. castle wrote the current ones over it.",
                    key = at.key,
                    path = at.path,
                    environment = at.environment,
                ),
            );
            Some(Value::Value(version))
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
                value: value.to_string(),
                comment: comment.to_string(),
                slug,
                id,
            });
            Some(Value::Null)
        }
        Err(error) => {
            report(diags, "create the Infisical secret", error);
            None
        }
    }
}

/// Pushes one value, unless this very write already waits in an Infisical change request
/// (sending it again would queue a second request). `None` when it was not written: the
/// diagnostic says why, and a newly queued request is recorded in `queued`.
async fn push_once(
    client: &infisical::Client,
    at: &SecretRef,
    value: &str,
    comment: &str,
    deadline: Instant,
    queued: &mut Queued,
    diags: &mut Diagnostics,
) -> Option<i64> {
    let action = "update the Infisical secret";
    if let Some(waiting) = queued.waiting(&at.key, value, comment) {
        unable(
            diags,
            action,
            format!(
                "this change to secret {key} already waits in Infisical as change request \
                 {slug:?} (id {id}), queued by an earlier apply; castle does not queue it a \
                 second time. Approve and merge it in Infisical, then run terraform apply again. \
                 If it was rejected, change the value or comment to queue a new request, or \
                 turn on \"bypass for machine identities\" in the environment's change policy.",
                key = at.key,
                slug = waiting.slug,
                id = waiting.id,
            ),
        );
        return None;
    }
    match sync::push(client, at, value, comment, deadline).await {
        Ok(version) => Some(version),
        Err(error) => {
            if let SyncError::Api(infisical::Error::ChangeRequested { slug, id, .. }) = &error {
                queued.record(QueuedWrite {
                    key: at.key.clone(),
                    value: value.to_string(),
                    comment: comment.to_string(),
                    slug: slug.clone(),
                    id: id.clone(),
                });
            }
            report(diags, action, error);
            None
        }
    }
}

/// Creates the folders of `at` when the state's `create_folders` asks for them; `None` after an
/// error.
async fn ensure_folders(
    client: &infisical::Client,
    state: &KubeconfigSecretState,
    at: &SecretRef,
    deadline: Instant,
    diags: &mut Diagnostics,
) -> Option<()> {
    if state.create_folders != Value::Value(true) {
        return Some(());
    }
    if let Err(e) = client
        .ensure_folder(&at.project_id, &at.environment, &at.path, deadline)
        .await
    {
        unable(diags, "create the Infisical folder", e);
        return None;
    }
    Some(())
}

/// Refreshes one value from Infisical: `None` if the secret is gone.
async fn refresh(
    client: &infisical::Client,
    at: &SecretRef,
    value: &mut Value<String>,
    version: &mut Value<i64>,
    deadline: Instant,
) -> Result<Option<()>, infisical::Error> {
    let wanted = value.as_ref_option().map(String::as_str);
    let Some(found) = sync::refresh(client, at, wanted, deadline).await? else {
        return Ok(None);
    };
    if let Some(stored) = found.changed_value {
        *value = Value::Value(stored);
    }
    *version = Value::Value(found.version);
    Ok(Some(()))
}

/// Whether a planned value differs from the prior one in a way Infisical would store.
fn changed(prior: &Value<String>, planned: &Value<String>) -> bool {
    match (prior, planned) {
        (Value::Value(a), Value::Value(b)) => !same_modulo_trimming(a, b),
        (Value::Null, Value::Null) => false,
        _ => true,
    }
}

fn plan_versions(prior: Option<&KubeconfigSecretState>, planned: &mut KubeconfigSecretState) {
    // A new comment is written with the value, and every write makes a new version.
    let comment_changed = prior.is_some_and(|p| p.comment != planned.comment);
    let prior = prior.filter(|_| !comment_changed);
    let prior_kube = prior.map(|p| (&p.kubeconfig, p.kubeconfig_version));
    // A null version with an unchanged value is a creation still waiting in an Infisical change
    // request (see `create`): it stays null until the request is merged, with no diff.
    planned.kubeconfig_version = match prior_kube {
        Some((value, version)) if !changed(value, &planned.kubeconfig) && !version.is_unknown() => {
            version
        }
        _ => Value::Unknown,
    };
    planned.talosconfig_version = if planned.talosconfig.is_null() {
        Value::Null
    } else {
        match prior {
            Some(p)
                if !changed(&p.talosconfig, &planned.talosconfig)
                    && p.talosconfig_key == planned.talosconfig_key
                    && !p.talosconfig_version.is_unknown() =>
            {
                p.talosconfig_version
            }
            _ => Value::Unknown,
        }
    };
}

#[async_trait]
impl Resource for KubeconfigSecretResource {
    // A Value so that `read` can answer null: "deleted outside Terraform, plan it again".
    type State<'a> = Value<KubeconfigSecretState>;
    // Change requests castle waits on (see `queued`); null when none.
    type PrivateState<'a> = Value<Queued>;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(config) = &config {
            config.validate(diags);
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
        let Value::Value(mut state) = state else {
            return Some((state, private_state));
        };
        if infisical_access::not_yet_known(&self.data) {
            // The provider's settings come from resources not created yet: keep what state has.
            return Some((Value::Value(state), private_state));
        }
        let client = self.client(diags, "read the Infisical secret")?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let at = state.kubeconfig_ref();
        match refresh(
            &client,
            &at,
            &mut state.kubeconfig,
            &mut state.kubeconfig_version,
            deadline,
        )
        .await
        {
            Ok(Some(())) => {}
            Ok(None) if waits(&private_state, &at.key) => {
                // Its creation waits in a change request: not deleted, not there yet.
                state.kubeconfig_version = Value::Null;
            }
            Ok(None) => {
                tracing::info!(key = %at.key, path = %at.path, "kubeconfig secret deleted outside Terraform");
                return Some((Value::Null, private_state));
            }
            Err(e) => {
                unable(diags, "read the Infisical secret", e);
                return None;
            }
        }
        if let Some(at) = state.talosconfig_ref() {
            match refresh(
                &client,
                &at,
                &mut state.talosconfig,
                &mut state.talosconfig_version,
                deadline,
            )
            .await
            {
                Ok(Some(())) => {}
                Ok(None) if waits(&private_state, &at.key) => {
                    state.talosconfig_version = Value::Null;
                }
                // Planned again by the difference with the configuration; update re-creates it.
                Ok(None) => {
                    state.talosconfig = Value::Null;
                    state.talosconfig_version = Value::Null;
                }
                Err(e) => {
                    unable(diags, "read the Infisical secret", e);
                    return None;
                }
            }
        }
        state.id = state.computed_id();
        let mut queued = private_state.as_ref_option().cloned().unwrap_or_default();
        // Only a secret Infisical holds (it has a version) settles its request; one whose
        // creation still waits keeps it.
        for (key, value, version) in [
            (
                state.kubeconfig_key.as_ref_option(),
                &state.kubeconfig,
                state.kubeconfig_version,
            ),
            (
                state.talosconfig_key.as_ref_option(),
                &state.talosconfig,
                state.talosconfig_version,
            ),
        ] {
            if let (Some(key), Value::Value(stored), true) = (key, value, version.is_value()) {
                queued.settle(key, stored);
            }
        }
        for waiting in &queued.writes {
            diags.root_warning(
                "Waiting on an Infisical change request",
                format!(
                    "The change to secret {key} is queued in Infisical as change request {slug:?} \
                     and not applied yet: approve and merge it in Infisical.",
                    key = waiting.key,
                    slug = waiting.slug
                ),
            );
        }
        Some((Value::Value(state), waiting_on(queued)))
    }

    async fn plan_create<'a>(
        &self,
        diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let Value::Value(mut planned) = proposed else {
            return Some((proposed, Default::default()));
        };
        planned.fill_defaults();
        planned.validate(diags);
        planned.id = planned.computed_id();
        plan_versions(None, &mut planned);
        self.check_credentials(diags).await;
        Some((Value::Value(planned), Default::default()))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let (Value::Value(prior), Value::Value(mut planned)) = (prior, proposed.clone()) else {
            return Some((proposed, prior_private, vec![]));
        };
        planned.fill_defaults();
        planned.validate(diags);
        // Moving the kubeconfig secret is delete + create; the talosconfig key can move in place.
        let mut replace = Vec::new();
        for (name, before, after) in [
            ("project_id", &prior.project_id, &planned.project_id),
            ("environment", &prior.environment, &planned.environment),
            ("path", &prior.path, &planned.path),
            (
                "kubeconfig_key",
                &prior.kubeconfig_key,
                &planned.kubeconfig_key,
            ),
        ] {
            if before != after {
                replace.push(AttributePath::new(name));
            }
        }
        planned.id = if replace.is_empty() {
            prior.id.clone()
        } else {
            planned.computed_id()
        };
        if replace.is_empty() {
            plan_versions(Some(&prior), &mut planned);
        } else {
            plan_versions(None, &mut planned);
        }
        if planned != prior {
            self.check_credentials(diags).await;
        }
        Some((Value::Value(planned), prior_private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(prior_private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let Value::Value(mut state) = planned else {
            return Some((planned, private));
        };
        let action = "create the Infisical secret";
        let client = self.client(diags, action)?;
        let deadline = deadline(&state, Operation::Create);
        let at = state.kubeconfig_ref();
        ensure_folders(&client, &state, &at, deadline, diags).await?;
        let comment = state.comment_text().to_string();
        let value = state
            .kubeconfig
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let mut queued = private.as_ref_option().cloned().unwrap_or_default();
        state.kubeconfig_version =
            create_once(&client, &at, &value, &comment, deadline, &mut queued, diags).await?;
        if let (Some(at), Some(value)) = (
            state.talosconfig_ref(),
            state.talosconfig.as_ref_option().cloned(),
        ) {
            // On failure the kubeconfig stays in Infisical; the next apply adopts it.
            state.talosconfig_version =
                create_once(&client, &at, &value, &comment, deadline, &mut queued, diags).await?;
        } else {
            state.talosconfig_version = Value::Null;
        }
        state.id = state.computed_id();
        Some((Value::Value(state), waiting_on(queued)))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (Value::Value(prior), Value::Value(mut state)) = (prior, planned.clone()) else {
            return Some((planned, private));
        };
        let action = "update the Infisical secret";
        let client = self.client(diags, action)?;
        let deadline = deadline(&state, Operation::Update);
        let mut queued = private.as_ref_option().cloned().unwrap_or_default();
        let at = state.kubeconfig_ref();
        let comment = state.comment_text().to_string();
        let comment_changed = prior.comment_text() != comment;
        ensure_folders(&client, &state, &at, deadline, diags).await?;

        if changed(&prior.kubeconfig, &state.kubeconfig)
            || comment_changed
            || !prior.kubeconfig_version.is_value()
        {
            let value = state
                .kubeconfig
                .as_ref_option()
                .cloned()
                .unwrap_or_default();
            match push_once(&client, &at, &value, &comment, deadline, &mut queued, diags).await {
                Some(version) => state.kubeconfig_version = Value::Value(version),
                // Infisical still holds what the prior state says.
                None => return Some((Value::Value(prior), waiting_on(queued))),
            }
        } else {
            state.kubeconfig_version = prior.kubeconfig_version;
        }

        // A renamed or removed talosconfig: delete the old secret first.
        if let Some(old) = prior.talosconfig_ref() {
            if state.talosconfig_ref().as_ref() != Some(&old) {
                if let Err(e) = sync::remove(&client, &old, deadline).await {
                    unable(diags, action, e);
                    return None;
                }
            }
        }
        match (
            state.talosconfig_ref(),
            state.talosconfig.as_ref_option().cloned(),
        ) {
            (Some(at), Some(value)) => {
                let moved = prior.talosconfig_ref().as_ref() != Some(&at);
                if moved
                    || changed(&prior.talosconfig, &state.talosconfig)
                    || comment_changed
                    || !prior.talosconfig_version.is_value()
                {
                    match push_once(&client, &at, &value, &comment, deadline, &mut queued, diags)
                        .await
                    {
                        Some(version) => state.talosconfig_version = Value::Value(version),
                        None => {
                            // The kubeconfig went through; the talosconfig is as before.
                            state.talosconfig = prior.talosconfig.clone();
                            state.talosconfig_version = prior.talosconfig_version;
                            state.id = state.computed_id();
                            return Some((Value::Value(state), waiting_on(queued)));
                        }
                    }
                } else {
                    state.talosconfig_version = prior.talosconfig_version;
                }
            }
            _ => state.talosconfig_version = Value::Null,
        }
        state.id = state.computed_id();
        Some((Value::Value(state), waiting_on(queued)))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let Value::Value(state) = prior else {
            return Some(());
        };
        let action = "delete the Infisical secret";
        let client = self.client(diags, action)?;
        let deadline = deadline(&state, Operation::Delete);
        let mut targets = vec![state.kubeconfig_ref()];
        targets.extend(state.talosconfig_ref());
        for at in targets {
            // Already gone is what we wanted.
            if let Err(e) = sync::remove(&client, &at, deadline).await {
                unable(diags, action, e);
                return None;
            }
        }
        Some(())
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let (project_id, environment, path, key) = match parse_id(&id) {
            Ok(parts) => parts,
            Err(message) => {
                unable(diags, "import the Infisical secret", message);
                return None;
            }
        };
        // The values are filled in by the read Terraform runs right after import.
        let state = KubeconfigSecretState {
            id: Value::Value(id),
            project_id: Value::Value(project_id),
            environment: Value::Value(environment),
            path: Value::Value(path),
            kubeconfig_key: Value::Value(key),
            create_folders: Value::Value(true),
            ..Default::default()
        };
        Some((Value::Value(state), Default::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(kubeconfig: &str, version: Option<i64>) -> KubeconfigSecretState {
        KubeconfigSecretState {
            kubeconfig: Value::Value(kubeconfig.into()),
            kubeconfig_version: version.map_or(Value::Null, Value::Value),
            ..Default::default()
        }
    }

    #[test]
    fn versions_stay_known_when_only_trimmed_whitespace_differs() {
        let prior = with("apiVersion: v1\n", Some(3));
        let mut planned = with("  apiVersion: v1\n\n", None);
        plan_versions(Some(&prior), &mut planned);
        assert_eq!(planned.kubeconfig_version, Value::Value(3));
        assert_eq!(planned.talosconfig_version, Value::Null);
    }

    #[test]
    fn versions_become_unknown_when_the_value_changes() {
        let prior = with("apiVersion: v1\n", Some(3));
        let mut planned = with("apiVersion: v2\n", None);
        planned.talosconfig = Value::Value("t".into());
        plan_versions(Some(&prior), &mut planned);
        assert_eq!(planned.kubeconfig_version, Value::Unknown);
        assert_eq!(planned.talosconfig_version, Value::Unknown);
    }

    #[test]
    fn a_creation_waiting_for_approval_plans_no_change_until_its_value_changes() {
        // Created into a change request: kept in state with a null version.
        let prior = with("apiVersion: v1\n", None);
        let mut planned = with("apiVersion: v1\n", None);
        plan_versions(Some(&prior), &mut planned);
        assert_eq!(planned.kubeconfig_version, Value::Null);
        let mut changed = with("apiVersion: v2\n", None);
        plan_versions(Some(&prior), &mut changed);
        assert_eq!(changed.kubeconfig_version, Value::Unknown);
    }

    #[test]
    fn only_a_secret_with_a_waiting_request_is_kept_when_infisical_lacks_it() {
        let mut queued = Queued::default();
        queued.record(QueuedWrite {
            key: "KUBECONFIG".into(),
            value: "apiVersion: v1\n".into(),
            comment: String::new(),
            slug: "abc".into(),
            id: "1".into(),
        });
        let private = Value::Value(queued);
        assert!(waits(&private, "KUBECONFIG"));
        assert!(!waits(&private, "TALOSCONFIG"));
        assert!(!waits(&Value::Null, "KUBECONFIG"));
    }
}

//! The emulator's memory: secrets, folders, tokens, lockout and rate-limit counters.
//!
//! Every operation is a synchronous method under one mutex, returning either the JSON answer or
//! a [`Failure`] that the HTTP layer renders as Infisical's error body.
//!
//! - [`auth`]: login, lockout, token renewal and checks.
//! - [`approvals`]: change policies and the change requests they queue.
//! - here: the secrets and folders store, rate limit, lab controls, persistence.

mod approvals;
mod auth;

pub use approvals::{ChangeRequest, Write};

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use super::Settings;

/// An error answer: status, Infisical's `error` name, and `message` (a string, or a list of
/// issues for 422).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// HTTP status.
    pub status: u16,
    /// The `error` field, e.g. `NotFound`.
    pub error: &'static str,
    /// The `message` field.
    pub message: Json,
    /// `Retry-After` seconds, for 429.
    pub retry_after: Option<u64>,
}

impl Failure {
    pub(crate) fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: Json::String(message.into()),
            retry_after: None,
        }
    }

    /// A 422 with one zod-like issue per field.
    pub(crate) fn invalid(issues: Vec<(&str, &str)>) -> Self {
        let list = issues
            .into_iter()
            .map(|(field, message)| json!({"code": "custom", "path": [field], "message": message}))
            .collect();
        Self {
            status: 422,
            error: "ValidationFailure",
            message: Json::Array(list),
            retry_after: None,
        }
    }
}

/// A secret as the lab stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSecret {
    /// UUID-like id.
    pub id: String,
    /// Environment slug.
    pub environment: String,
    /// Folder path (normalised: leading `/`, no trailing `/`).
    pub path: String,
    /// Name.
    pub key: String,
    /// Value after the server's trimming.
    pub value: String,
    /// Comment.
    pub comment: String,
    /// Starts at 1, +1 per update.
    pub version: i64,
    /// Whether newlines were sent as is.
    pub skip_multiline_encoding: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// What `--state` saves.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Persisted {
    secrets: Vec<StoredSecret>,
    /// `(environment, path)` of every folder but the roots.
    folders: BTreeSet<(String, String)>,
}

#[derive(Debug, Default)]
struct Inner {
    data: Persisted,
    /// Token rows by id, and the JWTs signed for them.
    token_rows: HashMap<u64, auth::TokenRow>,
    jwts: HashMap<String, auth::Jwt>,
    rows: u64,
    lockout: auth::Lockout,
    /// Environment slug -> `bypassForMachineIdentities` of its change policy.
    policies: HashMap<String, bool>,
    requests_queued: Vec<ChangeRequest>,
    /// Every token expires after this many more secret writes.
    expire_after_writes: Option<u32>,
    /// Next `n` API requests get 429 with this `Retry-After`.
    rate_limit: Option<(u32, u64)>,
    requests: u64,
    /// What happened, in order, for assertions (`login`, `renew`, `token-refused`, `write`,
    /// `write-failed`, ...).
    events: Vec<String>,
}

/// Events kept for assertions; older ones are dropped.
const MAX_EVENTS: usize = 10_000;

impl Inner {
    fn event(&mut self, what: &str) {
        if self.events.len() >= MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(what.to_string());
    }

    /// Counts a successful secret write, expiring the tokens when a lab control asked for it.
    fn wrote(&mut self) {
        self.event("write");
        if let Some(left) = self.expire_after_writes {
            if left <= 1 {
                self.expire_after_writes = None;
                auth::expire_all(self);
            } else {
                self.expire_after_writes = Some(left - 1);
            }
        }
    }
}

/// The emulator's state, shared by all requests.
#[derive(Debug)]
pub struct Lab {
    /// Behaviour settings.
    pub settings: Settings,
    inner: Mutex<Inner>,
}

/// Infisical stores values trimmed, keeping one trailing newline if there was one. Written here
/// independently of the provider's copy, so client tests do not check the client against itself.
pub fn trim_like_infisical(value: &str) -> String {
    let inner = value.trim();
    if value.ends_with('\n') && !inner.is_empty() {
        format!("{inner}\n")
    } else {
        inner.to_string()
    }
}

/// `/a/b/` and `a/b` both mean `/a/b`; empty means `/`.
pub fn normalise_path(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) fn new_id() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where a request points: environment, normalised path, optional name.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Environment slug.
    pub environment: String,
    /// Normalised folder path.
    pub path: String,
}

impl Lab {
    /// A lab with the given settings, loading `settings.state_file` if it exists.
    pub fn new(settings: Settings) -> std::io::Result<Self> {
        let mut inner = Inner::default();
        if let Some(file) = &settings.state_file {
            if file.exists() {
                let text = std::fs::read_to_string(file)?;
                inner.data = serde_json::from_str(&text)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            }
        }
        Ok(Self {
            settings,
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic in one handler must not wedge every later test request.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, inner: &Inner) {
        if let Some(file) = &self.settings.state_file {
            let tmp = file.with_extension("tmp");
            let text = serde_json::to_string_pretty(&inner.data).unwrap_or_default();
            if std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, file))
                .is_err()
            {
                tracing::warn!(file = %file.display(), "could not save the Infisical lab state");
            }
        }
    }

    /// Counts an API request and answers 429 while a lab rate limit is armed.
    pub fn check_rate_limit(&self) -> Result<(), Failure> {
        let mut inner = self.lock();
        inner.requests += 1;
        if let Some((remaining, seconds)) = inner.rate_limit {
            inner.rate_limit = if remaining > 1 {
                Some((remaining - 1, seconds))
            } else {
                None
            };
            return Err(Failure {
                retry_after: Some(seconds),
                ..Failure::new(
                    429,
                    "RateLimitExceeded",
                    format!("Rate limit exceeded. Please try again in {seconds} seconds"),
                )
            });
        }
        Ok(())
    }

    /// Checks project and environment, and normalises the path.
    pub fn target(
        &self,
        project_id: &str,
        environment: &str,
        path: &str,
    ) -> Result<Target, Failure> {
        let identity = &self.settings.identity;
        if project_id != identity.project_id {
            return Err(Failure::new(
                404,
                "NotFound",
                format!("Project with ID '{project_id}' not found"),
            ));
        }
        if !identity.environments.iter().any(|e| e == environment) {
            return Err(Failure::new(
                404,
                "NotFound",
                format!("Environment with slug '{environment}' in project with ID '{project_id}' not found"),
            ));
        }
        Ok(Target {
            environment: environment.into(),
            path: normalise_path(path),
        })
    }

    fn folder_exists(inner: &Inner, target: &Target) -> bool {
        target.path == "/"
            || inner
                .data
                .folders
                .contains(&(target.environment.clone(), target.path.clone()))
    }

    fn require_folder(inner: &Inner, target: &Target) -> Result<(), Failure> {
        if Self::folder_exists(inner, target) {
            Ok(())
        } else {
            Err(Failure::new(
                404,
                "NotFound",
                format!(
                    "Folder with path '{}' in environment with slug '{}' not found",
                    target.path, target.environment
                ),
            ))
        }
    }

    fn render(&self, s: &StoredSecret) -> Json {
        json!({
            "id": s.id,
            "_id": s.id,
            "workspace": self.settings.identity.project_id,
            "environment": s.environment,
            "version": s.version,
            "type": "shared",
            "secretKey": s.key,
            "secretValue": s.value,
            "secretComment": s.comment,
            "secretPath": s.path,
            "skipMultilineEncoding": s.skip_multiline_encoding,
            "secretReminderNote": null,
            "secretReminderRepeatDays": null,
            "tags": [],
            "createdAt": s.created_at,
            "updatedAt": s.updated_at,
        })
    }

    fn find(inner: &Inner, target: &Target, key: &str) -> Option<usize> {
        inner.data.secrets.iter().position(|s| {
            s.environment == target.environment && s.path == target.path && s.key == key
        })
    }

    fn not_found(key: &str) -> Failure {
        Failure::new(
            404,
            "NotFound",
            format!("Secret with name '{key}' not found"),
        )
    }

    /// One secret by name.
    pub fn get_secret(&self, target: &Target, key: &str) -> Result<Json, Failure> {
        let inner = self.lock();
        Self::require_folder(&inner, target)?;
        let index = Self::find(&inner, target, key).ok_or_else(|| Self::not_found(key))?;
        Ok(json!({ "secret": self.render(&inner.data.secrets[index]) }))
    }

    /// One secret by id.
    pub fn get_secret_by_id(&self, id: &str) -> Result<Json, Failure> {
        let inner = self.lock();
        let secret = inner
            .data
            .secrets
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                Failure::new(404, "NotFound", format!("Secret with ID '{id}' not found"))
            })?;
        Ok(json!({ "secret": self.render(secret) }))
    }

    /// Secrets of one folder.
    pub fn list_secrets(&self, target: &Target) -> Result<Json, Failure> {
        let inner = self.lock();
        Self::require_folder(&inner, target)?;
        let secrets: Vec<Json> = inner
            .data
            .secrets
            .iter()
            .filter(|s| s.environment == target.environment && s.path == target.path)
            .map(|s| self.render(s))
            .collect();
        Ok(json!({ "secrets": secrets, "imports": [] }))
    }

    /// Creates a secret: 400 "Secret already exist" if the name is taken.
    pub fn create_secret(
        &self,
        target: &Target,
        key: &str,
        value: &str,
        comment: &str,
        skip: bool,
    ) -> Result<Json, Failure> {
        let mut inner = self.lock();
        Self::require_folder(&inner, target)?;
        if Self::find(&inner, target, key).is_some() {
            return Err(Failure::new(400, "BadRequest", "Secret already exist"));
        }
        let now = now_rfc3339();
        let secret = StoredSecret {
            id: new_id(),
            environment: target.environment.clone(),
            path: target.path.clone(),
            key: key.into(),
            value: trim_like_infisical(value),
            comment: comment.into(),
            version: 1,
            skip_multiline_encoding: skip,
            created_at: now.clone(),
            updated_at: now,
        };
        let answer = json!({ "secret": self.render(&secret) });
        inner.data.secrets.push(secret);
        self.save(&inner);
        Ok(answer)
    }

    /// Updates value, comment and/or name; the version goes up by one.
    pub fn update_secret(
        &self,
        target: &Target,
        key: &str,
        value: Option<&str>,
        comment: Option<&str>,
        new_name: Option<&str>,
        skip: Option<bool>,
    ) -> Result<Json, Failure> {
        let mut inner = self.lock();
        Self::require_folder(&inner, target)?;
        let index = Self::find(&inner, target, key).ok_or_else(|| Self::not_found(key))?;
        if let Some(new_name) = new_name.filter(|n| *n != key) {
            if Self::find(&inner, target, new_name).is_some() {
                return Err(Failure::new(
                    400,
                    "BadRequest",
                    "Secret with the new name already exist",
                ));
            }
        }
        let secret = &mut inner.data.secrets[index];
        if let Some(value) = value {
            secret.value = trim_like_infisical(value);
        }
        if let Some(comment) = comment {
            secret.comment = comment.into();
        }
        if let Some(new_name) = new_name {
            secret.key = new_name.into();
        }
        if let Some(skip) = skip {
            secret.skip_multiline_encoding = skip;
        }
        secret.version += 1;
        secret.updated_at = now_rfc3339();
        let answer = json!({ "secret": self.render(secret) });
        self.save(&inner);
        Ok(answer)
    }

    /// Deletes a secret, answering it.
    pub fn delete_secret(&self, target: &Target, key: &str) -> Result<Json, Failure> {
        let mut inner = self.lock();
        Self::require_folder(&inner, target)?;
        let index = Self::find(&inner, target, key).ok_or_else(|| Self::not_found(key))?;
        let secret = inner.data.secrets.remove(index);
        self.save(&inner);
        Ok(json!({ "secret": self.render(&secret) }))
    }

    /// Folders directly under a path.
    pub fn list_folders(&self, target: &Target) -> Result<Json, Failure> {
        let inner = self.lock();
        Self::require_folder(&inner, target)?;
        let prefix = if target.path == "/" {
            "/".to_string()
        } else {
            format!("{}/", target.path)
        };
        let folders: Vec<Json> = inner
            .data
            .folders
            .iter()
            .filter(|(env, path)| env == &target.environment && path.starts_with(&prefix))
            .filter_map(|(_, path)| {
                let rest = &path[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/'))
                    .then(|| json!({"id": path, "name": rest, "version": 1}))
            })
            .collect();
        Ok(json!({ "folders": folders }))
    }

    /// Creates folder `name` under the target path, creating missing parents.
    ///
    /// Infisical: the v1 folder router (`server/routes/v1/secret-folder-router.ts`) trims `name`
    /// and refines it with `isValidFolderName` (`lib/validator/validate-folder-name.ts`,
    /// `^[a-zA-Z0-9-_]+$`): anything else is a 422. `createFolder`
    /// (`services/secret-folder/secret-folder-service.ts`, commit 4af4016) creates the missing
    /// segments of the parent path, and answers an existing folder with 400 "Folder with name
    /// '<name>' already exists in path '<path>'", despite its comment calling it idempotent.
    pub fn create_folder(&self, target: &Target, name: &str) -> Result<Json, Failure> {
        let name = name.trim();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Failure::invalid(vec![(
                "name",
                "Invalid folder name. Only alphanumeric characters, dashes, and underscores are allowed.",
            )]));
        }
        let mut inner = self.lock();
        let full = normalise_path(&format!("{}/{name}", target.path));
        if inner
            .data
            .folders
            .contains(&(target.environment.clone(), full.clone()))
        {
            return Err(Failure::new(
                400,
                "BadRequest",
                format!(
                    "Folder with name '{name}' already exists in path '{}'",
                    target.path
                ),
            ));
        }
        let mut walked = String::new();
        for part in full.split('/').filter(|p| !p.is_empty()) {
            walked = format!("{walked}/{part}");
            inner
                .data
                .folders
                .insert((target.environment.clone(), walked.clone()));
        }
        self.save(&inner);
        Ok(json!({ "folder": {"id": full, "name": name, "version": 1, "path": full} }))
    }

    /// Records the outcome of a secret write sent through the API (not lab controls): `write`
    /// or `write-failed`, and counts it towards [`Lab::expire_tokens_after`].
    pub fn record_write(&self, ok: bool) {
        let mut inner = self.lock();
        if ok {
            inner.wrote();
        } else {
            inner.event("write-failed");
        }
    }

    /// Lab control: what happened so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }

    /// Lab control: the next `count` API requests get 429 with `Retry-After: seconds`.
    pub fn set_rate_limit(&self, count: u32, seconds: u64) {
        self.lock().rate_limit = (count > 0).then_some((count, seconds));
    }

    /// Lab control: all secrets, for assertions.
    pub fn secrets(&self) -> Vec<StoredSecret> {
        self.lock().data.secrets.clone()
    }

    /// Lab control: how many API requests were served (rate-limited ones included).
    pub fn request_count(&self) -> u64 {
        self.lock().requests
    }

    /// Lab control: writes a secret out of band (as a person in the Infisical UI would),
    /// creating its folders.
    pub fn put_secret(
        &self,
        environment: &str,
        path: &str,
        key: &str,
        value: &str,
    ) -> Result<Json, Failure> {
        let target = self.target(
            &self.settings.identity.project_id.clone(),
            environment,
            path,
        )?;
        {
            let mut inner = self.lock();
            let mut walked = String::new();
            for part in target.path.split('/').filter(|p| !p.is_empty()) {
                walked = format!("{walked}/{part}");
                inner
                    .data
                    .folders
                    .insert((target.environment.clone(), walked.clone()));
            }
        }
        match self.update_secret(&target, key, Some(value), None, None, None) {
            Err(f) if f.status == 404 => self.create_secret(&target, key, value, "", true),
            other => other,
        }
    }

    /// Lab control: forgets everything (secrets, folders, tokens, lockout, rate limit).
    pub fn reset(&self) {
        let mut inner = self.lock();
        *inner = Inner::default();
        self.save(&inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_trimmed_like_infisical() {
        assert_eq!(trim_like_infisical("  a\nb\n\n"), "a\nb\n");
        assert_eq!(trim_like_infisical("a  "), "a");
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path(""), "/");
        assert_eq!(normalise_path("/a/b/"), "/a/b");
    }

    #[test]
    fn folder_names_follow_infisicals_rule_and_existing_ones_are_a_400() {
        let lab = Lab::new(Settings::default()).unwrap();
        let root = lab.target("castle-lab-project", "dev", "/").unwrap();
        let refused = lab.create_folder(&root, "home.lab").unwrap_err();
        assert_eq!(refused.status, 422);
        assert_eq!(
            refused.message[0]["message"],
            "Invalid folder name. Only alphanumeric characters, dashes, and underscores are allowed."
        );
        // Missing parents are created with the folder.
        let deep = lab.target("castle-lab-project", "dev", "/a/b").unwrap();
        lab.create_folder(&deep, "c_1-x").unwrap();
        let a = lab.target("castle-lab-project", "dev", "/").unwrap();
        let again = lab.create_folder(&a, "a").unwrap_err();
        assert_eq!(again.status, 400);
        assert_eq!(
            again.message,
            "Folder with name 'a' already exists in path '/'"
        );
    }
}

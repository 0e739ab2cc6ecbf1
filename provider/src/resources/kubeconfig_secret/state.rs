//! State of `castle_kubeconfig_secret`, its id, and the checks done at plan time.

use std::fmt;

use serde::{Deserialize, Serialize};
use tf_provider::value::{serde_as_vec, Value};
use tf_provider::{AttributePath, Diagnostics};

use crate::infisical::SecretRef;
use crate::resources::timeouts::TimeoutsBlock;

/// Default folder.
pub const DEFAULT_PATH: &str = "/";
/// Default secret name of the kubeconfig.
pub const DEFAULT_KEY: &str = "KUBECONFIG";

/// The resource as stored in Terraform state.
#[derive(Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeconfigSecretState {
    /// `project_id:environment:path:kubeconfig_key`.
    pub id: Value<String>,
    /// Project id.
    pub project_id: Value<String>,
    /// Environment slug.
    pub environment: Value<String>,
    /// Folder path.
    pub path: Value<String>,
    /// Name of the kubeconfig secret.
    pub kubeconfig_key: Value<String>,
    /// Kubeconfig (sensitive).
    pub kubeconfig: Value<String>,
    /// Name of the talosconfig secret.
    pub talosconfig_key: Value<String>,
    /// Talosconfig (sensitive).
    pub talosconfig: Value<String>,
    /// Comment on both secrets.
    pub comment: Value<String>,
    /// Create missing folders.
    pub create_folders: Value<bool>,
    /// Server version of the kubeconfig secret.
    pub kubeconfig_version: Value<i64>,
    /// Server version of the talosconfig secret.
    pub talosconfig_version: Value<i64>,
    /// Operation timeouts.
    #[serde(with = "serde_as_vec")]
    pub timeouts: Value<TimeoutsBlock>,
}

// Values are sensitive: Debug (and so any log line) shows only whether they are set.
impl fmt::Debug for KubeconfigSecretState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Value<String>| match v {
            Value::Value(_) => "<set>",
            Value::Null => "<null>",
            Value::Unknown => "<unknown>",
        };
        f.debug_struct("KubeconfigSecretState")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("kubeconfig_key", &self.kubeconfig_key)
            .field("kubeconfig", &shown(&self.kubeconfig))
            .field("talosconfig_key", &self.talosconfig_key)
            .field("talosconfig", &shown(&self.talosconfig))
            .field("kubeconfig_version", &self.kubeconfig_version)
            .field("talosconfig_version", &self.talosconfig_version)
            .finish()
    }
}

fn known(v: &Value<String>) -> Option<&str> {
    v.as_ref_option().map(String::as_str)
}

impl KubeconfigSecretState {
    /// Fills the defaults of optional attributes left null in the configuration.
    pub fn fill_defaults(&mut self) {
        if self.path.is_null() {
            self.path = Value::Value(DEFAULT_PATH.into());
        }
        if self.kubeconfig_key.is_null() {
            self.kubeconfig_key = Value::Value(DEFAULT_KEY.into());
        }
        if self.create_folders.is_null() {
            self.create_folders = Value::Value(true);
        }
    }

    /// The id, once its parts are known.
    pub fn computed_id(&self) -> Value<String> {
        match (
            known(&self.project_id),
            known(&self.environment),
            known(&self.path),
            known(&self.kubeconfig_key),
        ) {
            (Some(p), Some(e), Some(path), Some(k)) => Value::Value(make_id(p, e, path, k)),
            _ => Value::Unknown,
        }
    }

    /// Where the kubeconfig lives (all parts known: apply time).
    pub fn kubeconfig_ref(&self) -> SecretRef {
        self.secret_ref(known(&self.kubeconfig_key).unwrap_or(DEFAULT_KEY))
    }

    /// Where the talosconfig lives, if it has a key.
    pub fn talosconfig_ref(&self) -> Option<SecretRef> {
        known(&self.talosconfig_key).map(|k| self.secret_ref(k))
    }

    fn secret_ref(&self, key: &str) -> SecretRef {
        SecretRef {
            project_id: known(&self.project_id).unwrap_or_default().into(),
            environment: known(&self.environment).unwrap_or_default().into(),
            path: known(&self.path).unwrap_or(DEFAULT_PATH).into(),
            key: key.into(),
        }
    }

    /// The comment to send.
    pub fn comment_text(&self) -> &str {
        known(&self.comment).unwrap_or("")
    }

    /// Plan-time checks, each reported against its attribute. Unknown values are skipped.
    pub fn validate(&self, diags: &mut Diagnostics) {
        for (name, value) in [
            ("kubeconfig_key", &self.kubeconfig_key),
            ("talosconfig_key", &self.talosconfig_key),
        ] {
            if let Some(key) = known(value) {
                if let Err(message) = check_key(key) {
                    diags.error("Invalid secret name", message, AttributePath::new(name));
                }
            }
        }
        if let Some(path) = known(&self.path) {
            if let Err(message) = check_path(path) {
                diags.error(
                    "Invalid Infisical path",
                    message,
                    AttributePath::new("path"),
                );
            }
        }
        for (name, value) in [
            ("project_id", &self.project_id),
            ("environment", &self.environment),
        ] {
            if known(value).is_some_and(|v| v.trim().is_empty()) {
                diags.error_short(
                    format!("{name} must not be empty"),
                    AttributePath::new(name),
                );
            }
        }
        // Null means "not set"; a value or an unknown (computed elsewhere) means "set".
        match (self.talosconfig_key.is_null(), self.talosconfig.is_null()) {
            (true, false) => diags.error(
                "Missing talosconfig_key",
                "talosconfig is set, so talosconfig_key must name the secret to store it in.",
                AttributePath::new("talosconfig_key"),
            ),
            (false, true) => diags.error(
                "Missing talosconfig",
                "talosconfig_key is set, so talosconfig must be set too (or remove talosconfig_key).",
                AttributePath::new("talosconfig"),
            ),
            _ => {}
        }
        if let (Some(k), Some(t)) = (known(&self.kubeconfig_key), known(&self.talosconfig_key)) {
            if k == t {
                diags.error(
                    "Duplicate secret name",
                    format!("kubeconfig_key and talosconfig_key are both {k:?}."),
                    AttributePath::new("talosconfig_key"),
                );
            }
        }
        if let Some(timeouts) = self.timeouts.as_ref_option() {
            timeouts.validate(diags);
        }
    }
}

/// `project_id:environment:path:key`.
pub fn make_id(project_id: &str, environment: &str, path: &str, key: &str) -> String {
    format!("{project_id}:{environment}:{path}:{key}")
}

/// Splits an import id: project and environment from the left, the key from the right, the
/// path (which may hold `/` and even `:`) in between.
pub fn parse_id(id: &str) -> Result<(String, String, String, String), String> {
    let usage = "expected project_id:environment:path:kubeconfig_key, e.g. 3f2a...:prod:/clusters/home:KUBECONFIG";
    let mut left = id.splitn(3, ':');
    let (Some(project), Some(environment), Some(rest)) = (left.next(), left.next(), left.next())
    else {
        return Err(format!("import id {id:?}: {usage}"));
    };
    let Some((path, key)) = rest.rsplit_once(':') else {
        return Err(format!("import id {id:?}: {usage}"));
    };
    if project.is_empty() || environment.is_empty() || key.is_empty() {
        return Err(format!("import id {id:?}: {usage}"));
    }
    check_path(path).map_err(|m| format!("import id {id:?}: {m}"))?;
    check_key(key).map_err(|m| format!("import id {id:?}: {m}"))?;
    Ok((project.into(), environment.into(), path.into(), key.into()))
}

/// Secret names: not blank, no whitespace (Infisical refuses spaces), no `:` (the id's
/// separator) and no `/` (it would read as a folder).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err("the secret name is empty".into());
    }
    if let Some(c) = key
        .chars()
        .find(|c| c.is_whitespace() || *c == ':' || *c == '/')
    {
        return Err(format!(
            "the secret name {key:?} contains {c:?}; use letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// Folder paths: start with `/`; every folder name is letters, digits, `-` or `_`, the only
/// characters Infisical accepts in a folder name (`isValidFolderName` in its
/// `lib/validator/validate-folder-name.ts`; anything else is a 422 when the folder is created).
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "the path {path:?} must start with \"/\", e.g. \"/clusters/home\""
        ));
    }
    if path.len() > 1
        && path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .any(str::is_empty)
    {
        return Err(format!(
            "the path {path:?} has an empty folder name (\"//\")"
        ));
    }
    for name in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "the folder name {name:?} in path {path:?} contains {c:?}; Infisical allows only \
                 letters, digits, '-' and '_' in folder names (e.g. \"/clusters/home-lab\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_with_slashes_in_the_path() {
        let id = make_id("p1", "prod", "/clusters/home", "KUBECONFIG");
        assert_eq!(id, "p1:prod:/clusters/home:KUBECONFIG");
        assert_eq!(
            parse_id(&id).unwrap(),
            (
                "p1".into(),
                "prod".into(),
                "/clusters/home".into(),
                "KUBECONFIG".into()
            )
        );
        assert_eq!(parse_id("p:dev:/:K").unwrap().2, "/");
        assert!(parse_id("p:dev:K").is_err());
        assert!(parse_id("p:dev:clusters:K").is_err());
        assert!(parse_id("p:dev:/:").is_err());
    }

    #[test]
    fn bad_names_and_paths_are_refused() {
        assert!(check_key("KUBECONFIG").is_ok());
        assert!(check_key("  ").is_err());
        assert!(check_key("KUBE CONFIG").is_err());
        assert!(check_key("a:b").is_err());
        assert!(check_path("/").is_ok());
        assert!(check_path("/a/b").is_ok());
        assert!(check_path("a/b").is_err());
        assert!(check_path("/a//b").is_err());
        assert!(check_path("/a b").is_err());
        assert!(check_path("/clusters/home_lab-2/").is_ok());
        assert_eq!(
            check_path("/clusters/home.lab").unwrap_err(),
            "the folder name \"home.lab\" in path \"/clusters/home.lab\" contains '.'; Infisical \
             allows only letters, digits, '-' and '_' in folder names (e.g. \"/clusters/home-lab\")"
        );
    }

    #[test]
    fn talosconfig_without_its_key_names_the_attribute() {
        let state = KubeconfigSecretState {
            talosconfig: Value::Value("x".into()),
            ..Default::default()
        };
        let mut diags = Diagnostics::default();
        state.validate(&mut diags);
        assert_eq!(diags.errors.len(), 1);
        assert_eq!(
            diags.errors[0].attribute,
            AttributePath::new("talosconfig_key")
        );
    }

    #[test]
    fn debug_shows_no_value() {
        let state = KubeconfigSecretState {
            kubeconfig: Value::Value("secret-kubeconfig".into()),
            ..Default::default()
        };
        assert!(!format!("{state:?}").contains("secret-kubeconfig"));
    }
}

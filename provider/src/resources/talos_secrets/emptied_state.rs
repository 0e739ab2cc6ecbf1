//! A local state file emptied by a killed run, found before new secrets are generated.
//!
//! Terraform's local backend rewrites the state file in place: on a run's first write it reads
//! what the file holds as the backup snapshot, writes `terraform.tfstate.backup` from it, then
//! for every write seeks to the start, truncates the file and writes the new snapshot
//! (Terraform `internal/states/statemgr/filesystem.go` v1.15.5, createStateFiles and
//! writeState; its own comment says it should write a temporary file and rename it). A kill
//! between the truncate and the write leaves the file empty, which Terraform reads as no state
//! at all (refreshState: `ErrNoState` is "fine"). The next plan then creates everything again,
//! `castle_talos_secrets` included, and new secrets make the nodes that took the old ones
//! answer as another cluster's.
//!
//! A migration to another backend also empties the local file (`internal/command/meta_backend.go`:
//! after copying the state it calls `WriteState(nil)` on the local state), so only a working
//! directory whose backend is the local one counts.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The emptied state file and the backup that still holds castle's resources.
#[derive(Debug, PartialEq, Eq)]
pub struct EmptiedState {
    /// The state file, as a path relative to Terraform's working directory.
    pub state: PathBuf,
    /// Its backup.
    pub backup: PathBuf,
    /// How many castle resources the backup holds.
    pub castle_resources: usize,
}

/// Looks in `dir` (Terraform runs providers in its working directory) for the local state file
/// of the current workspace: empty (0 bytes) while its backup holds castle resources.
pub fn find(dir: &Path) -> Option<EmptiedState> {
    let state = local_state_path(dir)?;
    if std::fs::metadata(dir.join(&state)).ok()?.len() != 0 {
        return None;
    }
    let mut backup = state.clone().into_os_string();
    backup.push(".backup");
    let backup = PathBuf::from(backup);
    let text = std::fs::read(dir.join(&backup)).ok()?;
    let castle_resources = castle_resources(&text);
    (castle_resources > 0).then_some(EmptiedState {
        state,
        backup,
        castle_resources,
    })
}

/// The local backend's state file for the current workspace, or `None` when another backend
/// keeps the state. `.terraform/terraform.tfstate` records the initialised backend (absent for
/// the implicit local one); the default workspace's state is `terraform.tfstate` (or the local
/// backend's `path`), another workspace's `terraform.tfstate.d/<name>/terraform.tfstate`.
fn local_state_path(dir: &Path) -> Option<PathBuf> {
    let data = std::env::var_os("TF_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".terraform"));
    let backend = std::fs::read(dir.join(&data).join("terraform.tfstate"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|record| record.get("backend").cloned())
        .filter(|backend| !backend.is_null());
    let configured_path = match &backend {
        None => None,
        Some(backend) if backend.get("type").and_then(Value::as_str) == Some("local") => backend
            .pointer("/config/path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        Some(_) => return None,
    };
    let workspace = std::env::var("TF_WORKSPACE")
        .ok()
        .or_else(|| std::fs::read_to_string(dir.join(&data).join("environment")).ok())
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "default".to_string());
    if workspace != "default" {
        return Some(
            Path::new("terraform.tfstate.d")
                .join(workspace)
                .join("terraform.tfstate"),
        );
    }
    Some(configured_path.unwrap_or_else(|| PathBuf::from("terraform.tfstate")))
}

/// The number of `castle_` resources a state snapshot lists (only their types are looked at).
fn castle_resources(snapshot: &[u8]) -> usize {
    let Ok(state) = serde_json::from_slice::<Value>(snapshot) else {
        return 0;
    };
    state
        .get("resources")
        .and_then(Value::as_array)
        .map(|resources| {
            resources
                .iter()
                .filter(|r| {
                    r.get("mode").and_then(Value::as_str) == Some("managed")
                        && r.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| t.starts_with("castle_"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workdir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("castle-emptied-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const BACKUP: &str = r#"{"version":4,"resources":[
        {"mode":"managed","type":"castle_talos_secrets","name":"this","instances":[]},
        {"mode":"managed","type":"castle_proxmox_vm","name":"node","instances":[]},
        {"mode":"data","type":"castle_x","name":"d","instances":[]}]}"#;

    #[test]
    fn an_empty_state_file_beside_a_backup_of_castle_resources_is_found() {
        let dir = workdir("found");
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        assert_eq!(
            find(&dir),
            Some(EmptiedState {
                state: "terraform.tfstate".into(),
                backup: "terraform.tfstate.backup".into(),
                castle_resources: 2,
            })
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_with_content_or_a_backup_without_castle_is_left_alone() {
        let dir = workdir("alone");
        std::fs::write(dir.join("terraform.tfstate"), "{}").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        assert_eq!(find(&dir), None);
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(
            dir.join("terraform.tfstate.backup"),
            r#"{"resources":[{"mode":"managed","type":"null_resource"}]}"#,
        )
        .unwrap();
        assert_eq!(find(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_migrated_to_another_backend_is_not_taken_for_an_emptied_one() {
        // Terraform empties the local file after copying it to the new backend.
        let dir = workdir("migrated");
        std::fs::create_dir_all(dir.join(".terraform")).unwrap();
        std::fs::write(
            dir.join(".terraform/terraform.tfstate"),
            r#"{"version":3,"backend":{"type":"s3","config":{}}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        assert_eq!(find(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

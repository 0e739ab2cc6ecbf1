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
//!
//! The backup survives the next run: Terraform backs up what the state file held when the run
//! first writes, and an empty file is nothing to back up (`createStateFiles` reads no snapshot,
//! `writeState` then skips the backup). The next run's own writes truncate the file too, for an
//! instant: a file emptied after the current Terraform command started is one of those, never a
//! killed run's ([`find`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;
use tf_provider::Diagnostics;

use crate::resources::terraform_command;

/// The emptied state file and the backup that still holds castle's resources.
#[derive(Debug, PartialEq, Eq)]
pub struct EmptiedState {
    /// The state file, as a path relative to Terraform's working directory.
    pub state: PathBuf,
    /// Its backup.
    pub backup: PathBuf,
    /// How many castle resources the backup holds.
    pub castle_resources: usize,
    /// The backup's snapshot (Terraform's state JSON, version 4).
    pub snapshot: Value,
}

impl EmptiedState {
    /// Refuses a Terraform command with an error saying what it would do wrong (`consequence`)
    /// and how to put the backup back before running `then` again.
    pub fn refuse(&self, diags: &mut Diagnostics, consequence: &str, then: &str) {
        let (state, backup) = (self.state.display(), self.backup.display());
        diags.root_error(
            "The state file was emptied by a killed run",
            format!(
                "{state} is empty while {backup} holds {} castle resources: a Terraform run killed while it \
                 rewrote the state file (Terraform's local backend truncates it before writing it) left it empty, \
                 and Terraform now believes nothing exists. {consequence} Put the backup back, then run the \
                 command again:\n\n  cp {backup} {state}\n  {then}\n\n\
                 If that backup is of resources you removed on purpose, delete {backup} instead.",
                self.castle_resources
            ),
        );
    }
}

/// Refuses a destroy (`terraform destroy`, `apply -destroy`, `plan -destroy`) over an emptied
/// state file: Terraform would destroy nothing, say so, and leave every resource the backup
/// lists in place. Terraform v1.15.5 still validates the configuration first
/// (`ValidateProviderConfig`, `ValidateResourceConfig`), even with nothing in state, which is
/// where the provider is called from.
pub fn refuse_a_destroy(diags: &mut Diagnostics) {
    if !terraform_command::Command::of_parent().is_some_and(|c| c.destroys()) {
        return;
    }
    let Some(emptied) = std::env::current_dir().ok().and_then(|dir| find(&dir)) else {
        return;
    };
    emptied.refuse(
        diags,
        "This destroy would see nothing to destroy and leave them all running.",
        "terraform destroy",
    );
}

/// Looks in `dir` (Terraform runs providers in its working directory) for the local state file
/// of the current workspace: empty (0 bytes) while its backup holds castle resources, and
/// emptied before the current Terraform command started (where that is known).
pub fn find(dir: &Path) -> Option<EmptiedState> {
    find_before(dir, terraform_command::started())
}

fn find_before(dir: &Path, command_started: Option<SystemTime>) -> Option<EmptiedState> {
    let state = local_state_path(dir)?;
    let metadata = std::fs::metadata(dir.join(&state)).ok()?;
    if metadata.len() != 0 {
        return None;
    }
    if let (Some(started), Ok(emptied)) = (command_started, metadata.modified()) {
        if emptied >= started {
            return None;
        }
    }
    let mut backup = state.clone().into_os_string();
    backup.push(".backup");
    let backup = PathBuf::from(backup);
    let snapshot: Value = serde_json::from_slice(&std::fs::read(dir.join(&backup)).ok()?).ok()?;
    let castle_resources = castle_instances(&snapshot);
    (castle_resources > 0).then_some(EmptiedState {
        state,
        backup,
        castle_resources,
        snapshot,
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

/// The managed `castle_` resources of a state snapshot (Terraform's state JSON, version 4).
pub fn castle_resources(snapshot: &Value) -> impl Iterator<Item = &Value> {
    let resources = snapshot.get("resources").and_then(Value::as_array);
    resources.into_iter().flatten().filter(|r| {
        r.get("mode").and_then(Value::as_str) == Some("managed")
            && r.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.starts_with("castle_"))
    })
}

/// The number of `castle_` resource instances a state snapshot lists (each VM of a `for_each`
/// counts).
fn castle_instances(snapshot: &Value) -> usize {
    castle_resources(snapshot)
        .map(|r| {
            r.get("instances")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum()
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
        {"mode":"managed","type":"castle_talos_secrets","name":"this","instances":[{}]},
        {"mode":"managed","type":"castle_proxmox_vm","name":"node","instances":[{},{}]},
        {"mode":"data","type":"castle_x","name":"d","instances":[{}]}]}"#;

    #[test]
    fn an_empty_state_file_beside_a_backup_of_castle_resources_is_found() {
        let dir = workdir("found");
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        let found = find_before(&dir, None).expect("found");
        assert_eq!(found.state, PathBuf::from("terraform.tfstate"));
        assert_eq!(found.backup, PathBuf::from("terraform.tfstate.backup"));
        assert_eq!(found.castle_resources, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_with_content_or_a_backup_without_castle_is_left_alone() {
        let dir = workdir("alone");
        std::fs::write(dir.join("terraform.tfstate"), "{}").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        assert_eq!(find_before(&dir, None), None);
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(
            dir.join("terraform.tfstate.backup"),
            r#"{"resources":[{"mode":"managed","type":"null_resource"}]}"#,
        )
        .unwrap();
        assert_eq!(find_before(&dir, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_the_current_command_is_rewriting_is_not_taken_for_an_emptied_one() {
        // Terraform truncates the file for an instant before each write of its own.
        let dir = workdir("rewriting");
        std::fs::write(dir.join("terraform.tfstate"), "").unwrap();
        std::fs::write(dir.join("terraform.tfstate.backup"), BACKUP).unwrap();
        let hour = std::time::Duration::from_secs(3600);
        let before = SystemTime::now() - hour;
        assert!(find_before(&dir, Some(before)).is_none());
        assert!(find_before(&dir, Some(SystemTime::now() + hour)).is_some());
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
        assert_eq!(find_before(&dir, None), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

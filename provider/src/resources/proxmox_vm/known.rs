//! Which VMs Terraform's state holds, as the current Terraform command has shown them to castle.
//!
//! A VM whose create finished but whose state Terraform never saved (a remote backend that had
//! not uploaded it when Terraform was killed, a local state file emptied by a kill) looks, in
//! Proxmox, exactly like the VM a `create_before_destroy` replacement replaces: both are finished
//! VMs of this workspace with this name. Only Terraform's state tells them apart, and Terraform
//! shows it to the provider during the plan walk: the prior state of every object it plans an
//! update, replacement or deletion for, and a refresh (`ReadResource`) of every object, tainted
//! ones included, unless `-refresh=false`.
//!
//! The create itself runs in the apply walk, in another provider process, after Terraform has
//! planned it again from a null prior state (Terraform `internal/terraform/node_resource_apply_instance.go`
//! managedResourceExecute, v1.15.5): the private data planned in the plan walk never reaches it,
//! and for a `create_before_destroy` replacement the old object is deposed before anything of it
//! is shown to the apply walk's provider. So the plan walk writes what it saw to a file of this
//! Terraform command (one per provider process, under the working directory's `.terraform`),
//! and the apply walk's create reads them all ([ADR 0016](../../../../docs/adr/0016-adopting-a-vm-whose-state-was-lost.md)).
//!
//! A Terraform command is its process: the provider's parent, named by its PID and its start
//! time (so that a PID used again is another command). A plan saved and applied by another
//! command finds no file of its own command, and then castle clones, as it always did.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::resources::terraform_command;

/// A finished VM of this workspace found while planning a create under its name and node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Namesake {
    /// Proxmox node.
    pub node: String,
    /// VM name.
    pub name: String,
    /// VMID.
    pub vmid: u32,
}

/// What one provider process was shown.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Walk {
    /// VMIDs of objects in Terraform's state: prior states, refreshes, imports, and the VMs
    /// this process created (they are in state from then on).
    #[serde(default)]
    pub in_state: BTreeSet<u32>,
    /// VMIDs Terraform asked castle to refresh.
    #[serde(default)]
    pub refreshed: BTreeSet<u32>,
    /// VMIDs imported in this process (an import reads the VM even with `-refresh=false`).
    #[serde(default)]
    pub imported: BTreeSet<u32>,
    /// Finished VMs with the name and node of a planned create.
    #[serde(default)]
    pub namesakes: BTreeSet<Namesake>,
    /// The VMs an emptied state file's backup lists for a planned create, to adopt
    /// ([`super::from_backup`]).
    #[serde(default)]
    pub from_backup: BTreeSet<Namesake>,
}

impl Walk {
    fn merge(&mut self, other: Walk) {
        self.in_state.extend(other.in_state);
        self.refreshed.extend(other.refreshed);
        self.imported.extend(other.imported);
        self.namesakes.extend(other.namesakes);
        self.from_backup.extend(other.from_backup);
    }
}

/// Why a create may take an existing VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// No object in state holds it, though the plan refreshed state.
    FromState(u32),
    /// The state file was emptied and its backup lists it.
    ListedInBackup(u32),
}

/// The VM a create on `node` named `name` may adopt, from everything the command's provider
/// processes were shown. First the VM the backup of an emptied state file lists for it (the
/// plan decided that, [`super::from_backup`]). Otherwise a namesake found while planning that no
/// object in state holds, only when the plan refreshed: with `-refresh=false` a tainted VM is
/// shown to no one, and it is the one a replacement replaces. The plan refreshed when it read a
/// VM other than for an import, or when `refreshing`, the command is known to refresh (an apply
/// or a plan without `-refresh=false`): then an empty state shows nothing, and a namesake is
/// lost (a first create killed after its VMs were made, before Terraform saved any of them).
/// Only one: two VMs lost under one name are not told apart, and a clone is the safe side.
pub fn adoptable(walks: &[Walk], node: &str, name: &str, refreshing: bool) -> Option<Lost> {
    let mut all = Walk::default();
    for walk in walks {
        all.merge(walk.clone());
    }
    let only = |candidates: &BTreeSet<Namesake>| {
        let mut lost = candidates
            .iter()
            .filter(|n| n.node == node && n.name == name && !all.in_state.contains(&n.vmid))
            .map(|n| n.vmid)
            .collect::<BTreeSet<_>>()
            .into_iter();
        match (lost.next(), lost.next()) {
            (Some(vmid), None) => Some(vmid),
            _ => None,
        }
    };
    if let Some(vmid) = only(&all.from_backup) {
        return Some(Lost::ListedInBackup(vmid));
    }
    // Refreshed at all?
    if !refreshing {
        all.refreshed.difference(&all.imported).next()?;
    }
    only(&all.namesakes).map(Lost::FromState)
}

/// This process's walk memory, kept in a file of the Terraform command.
pub struct KnownVms {
    walk: Mutex<Walk>,
    files: Option<CommandFiles>,
}

impl Default for KnownVms {
    fn default() -> Self {
        Self {
            walk: Mutex::default(),
            files: CommandFiles::of_this_process(),
        }
    }
}

impl KnownVms {
    /// Terraform showed an object of its state holding `vmid`.
    pub fn in_state(&self, vmid: u32) {
        self.change(|walk| walk.in_state.insert(vmid));
    }

    /// Terraform asked for a refresh of the object holding `vmid`.
    pub fn refreshed(&self, vmid: u32) {
        self.change(|walk| walk.in_state.insert(vmid) | walk.refreshed.insert(vmid));
    }

    /// `vmid` was imported.
    pub fn imported(&self, vmid: u32) {
        self.change(|walk| walk.in_state.insert(vmid) | walk.imported.insert(vmid));
    }

    /// A planned create found these finished VMs of the workspace under its name and node.
    pub fn namesakes(&self, found: impl IntoIterator<Item = Namesake>) {
        let found: Vec<_> = found.into_iter().collect();
        self.change(|walk| {
            found
                .into_iter()
                .fold(false, |changed, n| walk.namesakes.insert(n) | changed)
        });
    }

    /// The plan found the VM an emptied state file's backup lists for a create.
    pub fn listed_in_backup(&self, vm: Namesake) {
        self.change(|walk| walk.from_backup.insert(vm));
    }

    /// The VM a create may adopt (see [`adoptable`]), from every process of this command.
    pub fn adoptable(&self, node: &str, name: &str) -> Option<Lost> {
        let files = self.files.as_ref()?;
        let mut walks = files.read_all();
        walks.push(self.walk.lock().expect("walk memory poisoned").clone());
        let refreshing = terraform_command::Command::of_parent().is_some_and(|c| c.refreshes());
        adoptable(&walks, node, name, refreshing)
    }

    fn change(&self, f: impl FnOnce(&mut Walk) -> bool) {
        let mut walk = self.walk.lock().expect("walk memory poisoned");
        if f(&mut walk) {
            if let Some(files) = &self.files {
                files.write(&walk);
            }
        }
    }
}

/// The files of one Terraform command: `<data dir>/castle-walks/<command>.<pid>.json`.
struct CommandFiles {
    dir: PathBuf,
    command: String,
    pid: u32,
    swept: Mutex<bool>,
}

impl CommandFiles {
    fn of_this_process() -> Option<Self> {
        let command = terraform_command::key(terraform_command::parent_pid()?)?;
        // Terraform runs providers in its working directory; TF_DATA_DIR moves `.terraform`.
        let data = std::env::var_os("TF_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".terraform"));
        Some(Self {
            dir: data.join("castle-walks"),
            command,
            pid: std::process::id(),
            swept: Mutex::new(false),
        })
    }

    fn write(&self, walk: &Walk) {
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            self.sweep();
            let path = self.dir.join(format!("{}.{}.json", self.command, self.pid));
            let partial = path.with_extension("partial");
            std::fs::write(&partial, serde_json::to_vec(walk)?)?;
            std::fs::rename(&partial, &path)
        })();
        if let Err(error) = result {
            // Without the file the apply clones, as castle always did.
            tracing::warn!(%error, dir = %self.dir.display(), "could not record the VMs state holds");
        }
    }

    fn read_all(&self) -> Vec<Walk> {
        let prefix = format!("{}.", self.command);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && file_name(p).is_some_and(|n| n.starts_with(&prefix))
            })
            .filter_map(|p| std::fs::read(&p).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// Removes the files of commands that have ended, once per process.
    fn sweep(&self) {
        let mut swept = self.swept.lock().expect("sweep flag poisoned");
        if *swept {
            return;
        }
        *swept = true;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.flatten().map(|e| e.path()) {
            let Some(name) = file_name(&path) else {
                continue;
            };
            let Some((pid, _)) = name.split_once('-') else {
                continue;
            };
            let alive = pid
                .parse()
                .ok()
                .and_then(terraform_command::key)
                .is_some_and(|key| name.starts_with(&format!("{key}.")));
            if !alive {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namesake(vmid: u32) -> Namesake {
        Namesake {
            node: "pve1".into(),
            name: "cp-1".into(),
            vmid,
        }
    }

    fn walk(in_state: &[u32], refreshed: &[u32], namesakes: &[u32]) -> Walk {
        Walk {
            in_state: in_state.iter().copied().collect(),
            refreshed: refreshed.iter().copied().collect(),
            imported: BTreeSet::new(),
            namesakes: namesakes.iter().copied().map(namesake).collect(),
            from_backup: BTreeSet::new(),
        }
    }

    #[test]
    fn a_vm_no_object_in_state_holds_is_adopted() {
        // The plan refreshed w-1 (VM 101); cp-1's VM 105 is in no state object.
        let plan = walk(&[101], &[101], &[105]);
        assert_eq!(
            adoptable(&[plan], "pve1", "cp-1", false),
            Some(Lost::FromState(105))
        );
    }

    #[test]
    fn the_vm_a_replacement_replaces_is_never_adopted() {
        // -replace and create_before_destroy: the prior state showed VM 105.
        let plan = walk(&[101, 105], &[101, 105], &[105]);
        assert_eq!(adoptable(&[plan], "pve1", "cp-1", false), None);
    }

    #[test]
    fn a_vm_seen_by_another_process_of_the_command_is_not_adopted() {
        // A second provider configuration (alias) refreshed the VM holding the name.
        let mine = walk(&[101], &[101], &[105]);
        let other = walk(&[105], &[105], &[]);
        assert_eq!(adoptable(&[mine, other], "pve1", "cp-1", false), None);
    }

    #[test]
    fn without_a_refresh_nothing_is_adopted() {
        // -refresh=false: a tainted VM is shown to no one, so no VM is known to be lost.
        let plan = walk(&[101], &[], &[105]);
        assert_eq!(adoptable(&[plan], "pve1", "cp-1", false), None);
        // An import reads the VM even then; that is no refresh.
        let mut imported = walk(&[101], &[101], &[105]);
        imported.imported.insert(101);
        assert_eq!(adoptable(&[imported], "pve1", "cp-1", false), None);
    }

    #[test]
    fn a_command_known_to_refresh_adopts_a_namesake_even_when_state_showed_nothing() {
        // A first create killed after its VM was made, before Terraform saved it: the state is
        // empty, so the refresh reads nothing, yet the command refreshes.
        let plan = walk(&[], &[], &[105]);
        assert_eq!(
            adoptable(std::slice::from_ref(&plan), "pve1", "cp-1", true),
            Some(Lost::FromState(105))
        );
        assert_eq!(adoptable(&[plan], "pve1", "cp-1", false), None);
    }

    #[test]
    fn the_vm_the_backup_of_an_emptied_state_lists_is_adopted_without_a_refresh() {
        // Nothing in state, so nothing refreshed: only the plan's reading of the backup counts.
        let mut plan = walk(&[], &[], &[105]);
        assert_eq!(
            adoptable(std::slice::from_ref(&plan), "pve1", "cp-1", false),
            None
        );
        plan.from_backup.insert(namesake(105));
        assert_eq!(
            adoptable(std::slice::from_ref(&plan), "pve1", "cp-1", false),
            Some(Lost::ListedInBackup(105))
        );
        assert_eq!(adoptable(&[plan], "pve1", "cp-2", false), None);
    }

    #[test]
    fn two_vms_lost_under_one_name_are_not_told_apart() {
        let plan = walk(&[101], &[101], &[105, 106]);
        assert_eq!(adoptable(&[plan], "pve1", "cp-1", false), None);
    }

    #[test]
    fn a_namesake_on_another_node_or_under_another_name_is_not_this_creates() {
        let plan = walk(&[101], &[101], &[105]);
        assert_eq!(
            adoptable(std::slice::from_ref(&plan), "pve2", "cp-1", false),
            None
        );
        assert_eq!(adoptable(&[plan], "pve1", "cp-2", false), None);
    }

    #[test]
    fn the_walks_of_one_command_are_read_back_and_others_are_not() {
        let dir = std::env::temp_dir().join(format!("castle-walks-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = |command: &str, pid| CommandFiles {
            dir: dir.clone(),
            command: command.into(),
            pid,
            swept: Mutex::new(true),
        };
        let plan = walk(&[101], &[101], &[105]);
        files("1-1", 10).write(&plan);
        files("2-1", 20).write(&walk(&[105], &[105], &[]));
        assert_eq!(files("1-1", 30).read_all(), vec![plan]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

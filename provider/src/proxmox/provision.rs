//! The create, update and delete workflows of a cloned VM, as plain client calls.
//!
//! Create: wait for the template's clones a killed run left running, adopt a leftover VM of
//! this workspace or else pick a VMID (retrying a clash), clone, wait for the clone task (which
//! holds the lock), write the config, grow disks, start. A failure after the clone removes the VM again,
//! so nothing is left half-made; if even that fails, the error carries the VMID so the caller
//! can keep it in state and the next apply replaces it.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::ClusterVm;
use super::retry::{unless_done, with_policy, Policy, API_CALL, ELSEWHERE_IF_DOWN, LOCKED};
use super::tasks::TaskOutcome;
use super::vm_config::{
    config_changes, facts, needs_reboot, parse_tags, VmFacts, VmSpec, MANAGED_TAG,
    WORKSPACE_TAG_PREFIX,
};
use super::vms::{CloneRequest, VmConfig};
use super::{Client, Error};
use crate::retry::POLL;

/// Which template to clone, and how.
#[derive(Debug, Clone)]
pub struct CloneSource {
    /// Template VMID, or
    pub template_id: Option<u32>,
    /// template name (looked up across the cluster).
    pub template_name: Option<String>,
    /// Full clone (default) or linked clone.
    pub full: bool,
    /// Target storage for a full clone.
    pub storage: Option<String>,
    /// Pool to join.
    pub pool: Option<String>,
}

/// A VM to create.
#[derive(Debug, Clone)]
pub struct NewVm {
    /// Node to create it on.
    pub node: String,
    /// Fixed VMID, or `None` to allocate one.
    pub vm_id: Option<u32>,
    /// What to clone.
    pub clone: CloneSource,
    /// What to set.
    pub spec: VmSpec,
    /// Leave it running.
    pub started: bool,
    /// A finished VM of this workspace with this name that Terraform's state does not hold
    /// (its state was lost), to take instead of cloning another.
    pub adopt: Option<LostVm>,
}

/// A VM whose state was lost, and how that is known (for the warning).
#[derive(Debug, Clone)]
pub struct LostVm {
    /// VMID.
    pub vmid: u32,
    /// Why state does not hold it, e.g. "a run killed before its state was saved".
    pub why: String,
}

/// A create that failed; `left_behind` names a VM that could not be removed.
#[derive(Debug)]
pub struct CreateFailure {
    /// Why it failed.
    pub error: Error,
    /// A VMID that still exists and must be kept in state.
    pub left_behind: Option<u32>,
}

/// The template a clone starts from.
#[derive(Debug, Clone)]
pub struct Template {
    /// VMID.
    pub vmid: u32,
    /// Node it lives on.
    pub node: String,
}

/// Finds the template by id or name; says clearly when it is missing or not a template. By
/// name, the template on `node` comes first: people keep one template per node under one name.
/// A template only another node has is refused when any of its volumes is on local storage:
/// PVE clones across nodes only from shared storage (qemu-server `src/PVE/API2/Qemu.pm`
/// clone_vm: `can't clone VM to node 'X' (VM uses local storage)`).
pub async fn find_template(
    client: &Client,
    source: &CloneSource,
    node: &str,
) -> Result<Template, Error> {
    let vms = client.cluster_vms().await?;
    let found = match (&source.template_id, &source.template_name) {
        (Some(id), _) => vms.iter().find(|vm| vm.vmid == *id),
        (None, Some(name)) => {
            let named = || {
                vms.iter()
                    .filter(|vm| vm.name.as_deref() == Some(name.as_str()) && vm.is_template())
            };
            named()
                .find(|vm| vm.node == node)
                .or_else(|| named().next())
        }
        (None, None) => None,
    };
    let what = match (&source.template_id, &source.template_name) {
        (Some(id), _) => format!("template {id}"),
        (None, Some(name)) => format!("template named {name:?}"),
        _ => "template".to_string(),
    };
    let vm =
        found.ok_or_else(|| Error::NotFound(format!("{what} does not exist in the cluster")))?;
    let template = Template {
        vmid: vm.vmid,
        node: vm.node.clone(),
    };
    if !node.is_empty() && template.node != node {
        let local = local_volumes(client, &template).await?;
        if !local.is_empty() {
            return Err(Error::Unsupported(format!(
                "{what} (VM {}) is on node {} and its volumes {} are on storage that node {node} cannot \
                 see, so Proxmox cannot clone it to {node}. Make a template with the same name on \
                 {node} (castle picks the one on the VM's node first), or keep the template on shared storage.",
                template.vmid,
                template.node,
                local.join(", ")
            )));
        }
    }
    Ok(template)
}

/// The template's volumes (disks, cloud-init drive, ISOs) on storage that is not shared.
async fn local_volumes(client: &Client, template: &Template) -> Result<Vec<String>, Error> {
    let config = client.vm_config(&template.node, template.vmid).await?;
    let shared = client.shared_storages().await?;
    Ok(config
        .0
        .iter()
        .filter(|(key, _)| is_volume_key(key))
        .filter_map(|(key, value)| {
            let volume = value.split(',').next()?;
            let (storage, _) = volume.split_once(':')?;
            (!shared.contains(storage)).then(|| format!("{key} ({storage})"))
        })
        .collect())
}

/// A `*cloudinit*` volume on any drive of the config.
fn has_cloud_init_drive(config: &VmConfig) -> bool {
    config
        .0
        .iter()
        .any(|(key, value)| is_volume_key(key) && value.contains("cloudinit"))
}

/// Config keys that hold volumes: `scsi0`, `virtio1`, `ide2`, `efidisk0`, `unused0`, ...
fn is_volume_key(key: &str) -> bool {
    let bus = key.trim_end_matches(|c: char| c.is_ascii_digit());
    bus.len() < key.len()
        && matches!(
            bus,
            "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate" | "unused"
        )
}

/// The cluster's node names.
pub async fn node_names(client: &Client) -> Result<Vec<String>, Error> {
    let nodes: Vec<serde_json::Value> = client.get("/nodes", &[]).await?;
    Ok(nodes
        .iter()
        .filter_map(|n| n.get("node").and_then(|v| v.as_str()).map(str::to_string))
        .collect())
}

/// Creates the VM; returns its VMID and the task warnings.
pub async fn create(
    client: &Client,
    vm: &NewVm,
    deadline: Instant,
) -> Result<(u32, Vec<String>), CreateFailure> {
    let fail = |error| CreateFailure {
        error,
        left_behind: None,
    };
    let template = with_policy(API_CALL, deadline, "find the template", || {
        find_template(client, &vm.clone, &vm.node)
    })
    .await
    .map_err(fail)?;
    let mut vm = vm.clone();
    vm.spec.mark_managed = true;
    vm.spec.workspace_tag = Some(workspace_tag());
    // The clone carries the clone marker as its notes (see [`clone_marker`]) until the create has
    // done everything else; then the wanted notes replace it (or none, when none are wanted).
    let notes = vm.spec.description.take().unwrap_or_default();
    let vm = &vm;
    // A clone a killed castle started may still run: its VM shows neither name nor notes until
    // it ends, so it is waited for before anything is looked for (see [`super::clone_tasks`]).
    client
        .wait_for_others_clones(&template.node, template.vmid, deadline)
        .await
        .map_err(fail)?;
    let leftover = with_policy(API_CALL, deadline, "look for a leftover VM", || {
        find_leftover(client, vm)
    })
    .await
    .map_err(fail)?;
    let (vmid, mut warnings) = match leftover {
        Some(vmid) => {
            tracing::warn!(vmid, name = %vm.spec.name, "adopting the VM an interrupted create left behind");
            (vmid, vec![format!(
                "VM {vmid} ({}) was left behind by an interrupted create; castle adopted it instead of cloning again.",
                vm.spec.name
            )])
        }
        None => match adoptable_namesake(client, vm, deadline)
            .await
            .map_err(fail)?
        {
            Some(LostVm { vmid, why }) => {
                tracing::warn!(vmid, name = %vm.spec.name, "adopting a finished VM that Terraform's state lost");
                (vmid, vec![format!(
                    "VM {vmid} ({}) of this workspace was not in Terraform's state ({why}); castle adopted it \
                     instead of cloning another.",
                    vm.spec.name
                )])
            }
            None => clone_with_free_id(client, vm, &template, deadline).await?,
        },
    };
    let mut result = configure_new(client, vm, vmid, deadline).await;
    if result.is_ok() {
        // The last call of the create: from here the VM is no longer a leftover.
        if let Err(e) = clear_clone_marker(client, &vm.node, vmid, &notes, deadline).await {
            result = Err(e);
        }
    }
    client.release_vmid(vmid);
    match result {
        Ok(more) => {
            warnings.extend(more);
            Ok((vmid, warnings))
        }
        Err(error) => {
            tracing::warn!(vmid, %error, "create failed after the clone; removing the VM");
            // Give the clean-up its own short budget: the create deadline may be spent.
            let cleanup_deadline = Instant::now() + Duration::from_secs(120);
            match delete(client, &vm.node, vmid, 30, cleanup_deadline).await {
                Ok(()) => Err(CreateFailure {
                    error,
                    left_behind: None,
                }),
                Err(cleanup) => {
                    tracing::error!(vmid, %cleanup, "could not remove the half-created VM");
                    Err(CreateFailure {
                        error,
                        left_behind: Some(vmid),
                    })
                }
            }
        }
    }
}

/// The notes a clone is created with: PVE's clone call takes a name and a description but no
/// tags (qemu-server `src/PVE/API2/Qemu.pm` clone_vm), so until the configuration that follows
/// sets [`MANAGED_TAG`] and the workspace tag, this marker is what says the VM is this
/// workspace's. A crash inside that window (the whole clone task, minutes for a full clone)
/// leaves a VM that only the marker tells apart from someone else's.
fn clone_marker(workspace: &str) -> String {
    format!("castle: clone in progress ({workspace}); the next terraform apply finishes it")
}

/// Replaces the clone marker with the wanted notes (removes it when there are none).
async fn clear_clone_marker(
    client: &Client,
    node: &str,
    vmid: u32,
    notes: &str,
    deadline: Instant,
) -> Result<(), Error> {
    let (params, delete) = if notes.trim_end().is_empty() {
        (vec![], vec!["description".to_string()])
    } else {
        (vec![("description".to_string(), notes.to_string())], vec![])
    };
    with_policy(LOCKED, deadline, "write the notes", || {
        client.set_vm_config(node, vmid, params.clone(), &delete)
    })
    .await
}

/// A VM with this name on this node that castle created from this workspace and no create of
/// this process holds: what a crash inside a create leaves behind. Its notes are still the
/// [`clone_marker`] of this workspace (the create never finished), running or not; or, from a
/// castle that cleared the marker earlier, it is stopped and carries [`MANAGED_TAG`] and this
/// workspace's [`workspace_tag`]. A running VM without the marker is never taken: it may be the
/// one a `create_before_destroy` replaces, whose create finished.
///
/// The cluster list's names are pvestatd's, up to 10 s old (pve-manager `PVE/API2Tools.pm`
/// extract_vm_stats): a clone that ended moments ago is still listed without a name or as
/// `VM <vmid>` (what PVE calls a VM whose config has none). Those are looked at too, by their
/// config, which is current.
async fn find_leftover(client: &Client, vm: &NewVm) -> Result<Option<u32>, Error> {
    let reserved = client
        .reserved_ids
        .lock()
        .expect("vmid reservations poisoned")
        .clone();
    let Some(workspace) = vm.spec.workspace_tag.as_deref() else {
        return Ok(None);
    };
    let name = vm.spec.name.as_str();
    let candidates: Vec<ClusterVm> = client
        .cluster_vms()
        .await?
        .into_iter()
        .filter(|found| {
            found.node == vm.node
                && (found.name.as_deref() == Some(name) || listed_unnamed(found))
                && !found.is_template()
                && vm.vm_id.is_none_or(|id| id == found.vmid)
                && !reserved.contains(&found.vmid)
        })
        .collect();
    for found in &candidates {
        let tags = found.tags.as_deref().map(parse_tags).unwrap_or_default();
        if found.name.as_deref() == Some(name)
            && found.status.as_deref() == Some("stopped")
            && tags.contains(MANAGED_TAG)
            && tags.contains(workspace)
        {
            return Ok(Some(found.vmid));
        }
    }
    let marker = clone_marker(workspace);
    for found in candidates {
        let config = match client.vm_config(&vm.node, found.vmid).await {
            Ok(config) => config,
            // Gone since the list was made (a failed clone PVE removed).
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if config.get("name") == Some(name)
            && config.get("description").map(str::trim_end) == Some(marker.as_str())
        {
            return Ok(Some(found.vmid));
        }
    }
    Ok(None)
}

/// Listed without a name of its own: no name yet, or PVE's `VM <vmid>` for a config without one.
fn listed_unnamed(found: &ClusterVm) -> bool {
    found
        .name
        .as_deref()
        .is_none_or(|listed| listed == format!("VM {}", found.vmid))
}

/// The finished VMs of this workspace with `name` on `node`: castle made them (they carry
/// [`MANAGED_TAG`] and the workspace's tag) and their create ended (their notes are no longer
/// the [`clone_marker`]; the listing does not show notes, so that is checked where it matters,
/// by [`find_leftover`] first). `vm_id`, when the configuration fixes one, narrows it to that.
pub async fn finished_namesakes(
    client: &Client,
    node: &str,
    name: &str,
    vm_id: Option<u32>,
) -> Result<Vec<u32>, Error> {
    Ok(namesakes(client, node, name)
        .await?
        .into_iter()
        .filter(|&(vmid, ours)| ours && vm_id.is_none_or(|id| id == vmid))
        .map(|(vmid, _)| vmid)
        .collect())
}

/// The VMs (not templates) named `name` on `node`, each with whether it carries
/// [`MANAGED_TAG`] and this workspace's tag. A VM the list shows unnamed (pvestatd has not seen
/// its name yet, see [`find_leftover`]) is named by its config, which is current; so are the
/// tags the list shows (read from the config).
pub async fn namesakes(client: &Client, node: &str, name: &str) -> Result<Vec<(u32, bool)>, Error> {
    let workspace = workspace_tag();
    let mut found = Vec::new();
    for listed in client.cluster_vms().await? {
        if listed.node != node || listed.is_template() {
            continue;
        }
        let named = match listed.name.as_deref() {
            Some(listed_name) if listed_name == name => true,
            _ if listed_unnamed(&listed) => match client.vm_config(node, listed.vmid).await {
                Ok(config) => config.get("name") == Some(name),
                // Gone since the list was made.
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(e),
            },
            _ => false,
        };
        if named {
            let tags = listed.tags.as_deref().map(parse_tags).unwrap_or_default();
            let ours = tags.contains(MANAGED_TAG) && tags.contains(workspace.as_str());
            found.push((listed.vmid, ours));
        }
    }
    Ok(found)
}

/// The VM the plan found lost from state ([`NewVm::adopt`]), if it is still there under this
/// name and no create of this process holds it.
async fn adoptable_namesake(
    client: &Client,
    vm: &NewVm,
    deadline: Instant,
) -> Result<Option<LostVm>, Error> {
    let Some(lost) = &vm.adopt else {
        return Ok(None);
    };
    let vmid = lost.vmid;
    let reserved = client
        .reserved_ids
        .lock()
        .expect("vmid reservations poisoned")
        .contains(&vmid);
    let found = with_policy(API_CALL, deadline, "look for the lost VM", || {
        finished_namesakes(client, &vm.node, &vm.spec.name, vm.vm_id)
    })
    .await?;
    Ok((found.contains(&vmid) && !reserved).then(|| lost.clone()))
}

/// This Terraform working directory's and workspace's marker: `castle-ws-` and 8 hex digits of
/// a SHA-256 over the directory Terraform runs the provider in and the workspace name
/// (`TF_WORKSPACE`, else `.terraform/environment`, else `default`).
pub fn workspace_tag() -> String {
    use sha2::{Digest, Sha256};
    let dir = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let workspace = std::env::var("TF_WORKSPACE")
        .ok()
        .or_else(|| std::fs::read_to_string(".terraform/environment").ok())
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let digest = Sha256::digest(format!("{dir}\n{workspace}").as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{WORKSPACE_TAG_PREFIX}{hex}")
}

async fn clone_with_free_id(
    client: &Client,
    vm: &NewVm,
    template: &Template,
    deadline: Instant,
) -> Result<(u32, Vec<String>), CreateFailure> {
    let fail = |error| CreateFailure {
        error,
        left_behind: None,
    };
    let mut clashed: Vec<u32> = Vec::new();
    // A clone task that failed on a lock is sent again, after a pause, within the deadline.
    let mut lock_pauses = LOCKED.backoff.until(deadline);
    let mut vmid = None;
    loop {
        let id = match (vm.vm_id, vmid) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => with_policy(API_CALL, deadline, "pick a VMID", || {
                client.reserve_vmid(&clashed)
            })
            .await
            .map_err(fail)?,
        };
        vmid = Some(id);
        let request = CloneRequest {
            node: template.node.clone(),
            template_id: template.vmid,
            new_id: id,
            name: vm.spec.name.clone(),
            full: vm.clone.full,
            storage: vm.clone.storage.clone(),
            pool: vm.clone.pool.clone(),
            target: (template.node != vm.node).then(|| vm.node.clone()),
            description: vm.spec.workspace_tag.as_deref().map(clone_marker),
        };
        let started = unless_done(
            deadline,
            "clone",
            || async { client.start_clone(&request).await.map(Some) },
            || async {
                Ok(lost_clone_started(client, id, &request.name)
                    .await?
                    .then_some(None))
            },
        )
        .await;
        let upid = match started {
            Ok(Some(upid)) => upid,
            // A clone whose answer was lost is running: its lock shows when it ends, and
            // `configure_new` waits for that.
            Ok(None) => return Ok((id, Vec::new())),
            Err(e) if e.is_vmid_taken(id) && vm.vm_id.is_none() => {
                // Another client took this id between our look and our clone: try the next.
                tracing::info!(vmid = id, "VMID taken by someone else; picking another");
                client.release_vmid(id);
                clashed.push(id);
                vmid = None;
                continue;
            }
            Err(e) => {
                client.release_vmid(id);
                return Err(fail(e));
            }
        };
        match client.wait_task(&upid, deadline).await {
            Ok(outcome) => return Ok((id, outcome.warnings)),
            Err(e) if e.is_vmid_taken(id) && vm.vm_id.is_none() => {
                tracing::info!(vmid = id, error = %e, "clone found the VMID taken; picking another");
                client.release_vmid(id);
                clashed.push(id);
                vmid = None;
            }
            // qemu-server takes the template's, the new id's and the storage's locks inside
            // the clone worker (`src/PVE/API2/Qemu.pm` clone_vm: lock_config_full, and
            // pve-storage `src/PVE/Storage/Plugin.pm` cluster_lock_storage): on a timeout its
            // failure path has freed the volumes and unlinked the new config. Check that, then
            // send the clone again.
            Err(e) if e.is_lock_timeout() || e.is_vm_locked() => {
                let left =
                    with_policy(API_CALL, deadline, "read the failed clone's config", || {
                        client.vm_config(&template.node, id)
                    })
                    .await;
                match left {
                    Err(gone) if gone.is_not_found() => {}
                    Ok(_) => {
                        client.release_vmid(id);
                        return Err(CreateFailure {
                            error: e,
                            left_behind: Some(id),
                        });
                    }
                    Err(other) => {
                        client.release_vmid(id);
                        return Err(fail(other));
                    }
                }
                tracing::info!(vmid = id, error = %e, "clone task failed on a lock; sending it again");
                if !lock_pauses.sleep(None).await {
                    client.release_vmid(id);
                    return Err(fail(e));
                }
            }
            Err(Error::Timeout(what)) => {
                // The clone still runs: stop it and remove what it made, so no orphan stays.
                let left_behind = stop_clone(client, &upid, &template.node, &vm.node, id).await;
                client.release_vmid(id);
                return Err(CreateFailure {
                    error: Error::Timeout(what),
                    left_behind,
                });
            }
            Err(e) => {
                client.release_vmid(id);
                return Err(fail(e));
            }
        }
    }
}

/// Stops a clone task that outlived the create's timeout and destroys the VM it made (its
/// config sits on the template's node until the clone ends: qemu-server moves it to the
/// target node last). Returns the VMID when something could not be removed.
async fn stop_clone(
    client: &Client,
    upid: &str,
    template_node: &str,
    node: &str,
    vmid: u32,
) -> Option<u32> {
    let cleanup_deadline = Instant::now() + Duration::from_secs(120);
    if let Err(error) = client.stop_task(upid).await {
        tracing::warn!(%error, upid, "could not stop the clone task");
    }
    // The stopped task runs its failure path (frees volumes, unlinks the config); wait for
    // it, then destroy whatever is left on either node.
    let _ = client.wait_task(upid, cleanup_deadline).await;
    for on in [template_node, node] {
        match delete(client, on, vmid, 30, cleanup_deadline).await {
            Ok(()) => {}
            Err(error) => {
                tracing::error!(vmid, %error, "could not remove the VM of a clone that timed out");
                return Some(vmid);
            }
        }
    }
    None
}

/// Whether a clone whose answer was lost started after all. The cluster list's names lag by
/// up to 10 s (pve-manager `PVE/API2Tools.pm` takes them from pvestatd's broadcast,
/// `PVE/Service/pvestatd.pm`), so the VM's own config decides: our name, or the clone's lock.
/// Anything else with that id is someone else's; sending the clone again then reports the
/// clash.
async fn lost_clone_started(client: &Client, vmid: u32, name: &str) -> Result<bool, Error> {
    let vms = client.cluster_vms().await?;
    let Some(listed) = vms.iter().find(|vm| vm.vmid == vmid) else {
        return Ok(false);
    };
    match client.vm_config(&listed.node, vmid).await {
        Ok(config) => Ok(is_our_clone(&config, name)),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A config that our clone wrote: our name, or still locked by the clone.
fn is_our_clone(config: &VmConfig, name: &str) -> bool {
    config.get("name") == Some(name) || config.get("lock") == Some("clone")
}

async fn configure_new(
    client: &Client,
    vm: &NewVm,
    vmid: u32,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    wait_unlocked(client, &vm.node, vmid, deadline).await?;
    apply_spec(client, &vm.node, vmid, &vm.spec, deadline).await?;
    let mut warnings = Vec::new();
    if vm.started {
        warnings.extend(start(client, &vm.node, vmid, deadline).await?);
    }
    Ok(warnings)
}

/// Starts the VM and returns the task's warnings. A start whose answer was lost is not sent
/// again once the VM runs, and a VM that already runs is what was asked for. A start task that
/// failed on a lock did nothing (qemu-server `src/PVE/QemuServer.pm` vm_start locks first) and
/// is sent again within the deadline. For an HA-managed VM the task only queues a request to
/// the HA manager (`src/PVE/API2/Qemu.pm` vm_start: `ha-manager set --state started`), so
/// castle waits until the VM runs.
pub(crate) async fn start(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    let mut lock_pauses = LOCKED.backoff.until(deadline);
    loop {
        let upid = unless_done(
            deadline,
            "start",
            || async { client.start_vm(node, vmid).await.map(Some) },
            || async {
                let status = client.vm_status(node, vmid).await?;
                Ok((status.status == "running").then_some(None))
            },
        )
        .await?;
        let Some(upid) = upid else {
            return Ok(Vec::new());
        };
        let warnings = match client.wait_task(&upid, deadline).await {
            Ok(outcome) => outcome.warnings,
            Err(e) if e.is_already_running() => Vec::new(),
            Err(e) if e.is_lock_timeout() || e.is_vm_locked() => {
                tracing::info!(vmid, error = %e, "start failed on a lock; sending it again");
                if !lock_pauses.sleep(None).await {
                    return Err(e);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        wait_power_state(client, node, vmid, "running", deadline).await?;
        return Ok(warnings);
    }
}

/// Waits until the VM reports `state` (`running` or `stopped`): an HA-managed VM changes only
/// when the HA manager acts on the request the power task queued.
async fn wait_power_state(
    client: &Client,
    node: &str,
    vmid: u32,
    state: &str,
    deadline: Instant,
) -> Result<(), Error> {
    let mut pauses = POLL.until(deadline);
    loop {
        let status = with_policy(API_CALL, deadline, "status", || {
            client.vm_status(node, vmid)
        })
        .await?;
        if status.status == state {
            return Ok(());
        }
        if !pauses.sleep(None).await {
            return Err(Error::Timeout(format!(
                "waiting for VM {vmid} to be {state} (it is {}{})",
                status.status,
                if status.ha_managed() {
                    "; the HA manager has the request"
                } else {
                    ""
                }
            )));
        }
    }
}

/// Sends a request that starts a task and waits for the task. A task that failed on a lock
/// (a lock timeout inside the worker, or a backup's or migration's lock) changed nothing, so it
/// is sent again after a pause, within the deadline.
async fn run_task<F, Fut>(
    client: &Client,
    what: &str,
    deadline: Instant,
    mut send: F,
) -> Result<TaskOutcome, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String, Error>>,
{
    let mut lock_pauses = LOCKED.backoff.until(deadline);
    loop {
        let upid = with_policy(LOCKED, deadline, what, &mut send).await?;
        match client.wait_task(&upid, deadline).await {
            Err(e) if e.is_lock_timeout() || e.is_vm_locked() => {
                tracing::info!(error = %e, "{what} failed on a lock; sending it again");
                if !lock_pauses.sleep(None).await {
                    return Err(e);
                }
            }
            other => return other,
        }
    }
}

/// Waits until no task holds the VM's config lock (a clone holds it to the end).
async fn wait_unlocked(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<(), Error> {
    let mut pauses = POLL.until(deadline);
    loop {
        let status = with_policy(API_CALL, deadline, "status", || {
            client.vm_status(node, vmid)
        })
        .await?;
        let Some(lock) = status.lock else {
            return Ok(());
        };
        if !pauses.sleep(None).await {
            return Err(Error::Timeout(format!(
                "waiting for the {lock:?} lock on VM {vmid} to clear"
            )));
        }
    }
}

/// Writes changed config keys and grows disks. Returns the keys written.
async fn apply_spec(
    client: &Client,
    node: &str,
    vmid: u32,
    spec: &VmSpec,
    deadline: Instant,
) -> Result<Vec<String>, Error> {
    let current = with_policy(API_CALL, deadline, "read config", || {
        client.vm_config(node, vmid)
    })
    .await?;
    let wants_cloud_init =
        spec.ipv4.is_some() || spec.nameservers.is_some() || spec.search_domain.is_some();
    if wants_cloud_init && !has_cloud_init_drive(&current) {
        // PVE accepts ipconfig0 without a cloud-init drive, and then nothing reaches the guest.
        return Err(Error::Unsupported(format!(
            "VM {vmid} has no cloud-init drive, so ipv4, nameservers and search_domain would never \
             reach it. Add one to the template (qm set <template> --ide2 <storage>:cloudinit) or \
             remove those settings."
        )));
    }
    let (params, delete) = config_changes(spec, &current);
    let mut keys: Vec<String> = params
        .iter()
        .map(|(k, _)| k.clone())
        .chain(delete.iter().cloned())
        .collect();
    if !params.is_empty() || !delete.is_empty() {
        with_policy(LOCKED, deadline, "write config", || {
            client.set_vm_config(node, vmid, params.clone(), &delete)
        })
        .await?;
    }
    let sizes = facts(&current).disks;
    for disk in &spec.disks {
        match sizes.get(&disk.slot) {
            None => {
                return Err(Error::NotFound(format!(
                    "VM {vmid} has no disk {} to size (the template's disks are: {})",
                    disk.slot,
                    sizes.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            Some(size) if size.gib() > disk.size_gb => {
                return Err(Error::Api {
                    status: 400,
                    message: format!(
                        "disk {} is {size} and cannot shrink to {} GiB; set size_gb to at least {}",
                        disk.slot,
                        disk.size_gb,
                        size.gib()
                    ),
                    errors: Default::default(),
                })
            }
            Some(size) if !size.below(disk.size_gb) => {}
            Some(_) => {
                run_task(client, "resize", deadline, || async {
                    client
                        .resize_disk(node, vmid, &disk.slot, disk.size_gb)
                        .await
                })
                .await?;
                keys.push(disk.slot.clone());
            }
        }
    }
    Ok(keys)
}

/// Reads a VM: its config facts and whether it runs. `Ok(None)` when it is gone.
pub async fn read(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<Option<(VmFacts, bool)>, Error> {
    read_with(API_CALL, client, node, vmid, deadline).await
}

async fn read_with(
    policy: Policy,
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<Option<(VmFacts, bool)>, Error> {
    let config = with_policy(policy, deadline, "read config", || {
        client.vm_config(node, vmid)
    });
    let status = with_policy(policy, deadline, "read status", || {
        client.vm_status(node, vmid)
    });
    match tokio::try_join!(config, status) {
        Ok((config, status)) => Ok(Some((facts(&config), status.status == "running"))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a VM that may have migrated: where `node` no longer has it, the cluster list is asked
/// for a VM with this VMID and `name` on another node. Returns the node it was found on.
///
/// A node that does not answer (pveproxy's 595/596) is not waited for: the cluster list, asked
/// once, says whether the VM moved (HA), or is still on that node and the node is down
/// (pve-manager `PVE/API2/Cluster.pm` resources: a guest of an offline node has status
/// `unknown`); only when the list shows the node up is the read tried again.
pub async fn read_following(
    client: &Client,
    node: &str,
    vmid: u32,
    name: &str,
    deadline: Instant,
) -> Result<Option<(String, VmFacts, bool)>, Error> {
    let unreachable = match read_with(ELSEWHERE_IF_DOWN, client, node, vmid, deadline).await {
        Ok(Some((facts, running))) => return Ok(Some((node.to_string(), facts, running))),
        Ok(None) => None,
        Err(e) if e.is_node_unreachable() => {
            tracing::warn!(node, vmid, error = %e, "node unreachable; looking for the VM elsewhere");
            Some(e)
        }
        Err(e) => return Err(e),
    };
    let vms = with_policy(API_CALL, deadline, "list VMs", || client.cluster_vms()).await?;
    let Some(moved) = moved_to(&vms, vmid, name, node) else {
        let Some(unreachable) = unreachable else {
            return Ok(None);
        };
        if listed_on_a_node_up(&vms, vmid, node) {
            // The node is up for the cluster: a passing hiccup of pveproxy's link to it.
            return Ok(read(client, node, vmid, deadline)
                .await?
                .map(|(facts, running)| (node.to_string(), facts, running)));
        }
        // Still on the node that is down: not gone, just out of reach.
        return Err(unreachable);
    };
    Ok(read(client, &moved, vmid, deadline)
        .await?
        .map(|(facts, running)| (moved, facts, running)))
}

/// The cluster list shows this VMID on `node` with a known status: the node is up.
fn listed_on_a_node_up(vms: &[ClusterVm], vmid: u32, node: &str) -> bool {
    vms.iter().any(|vm| {
        vm.vmid == vmid && vm.node == node && vm.status.as_deref().is_some_and(|s| s != "unknown")
    })
}

/// The other node that lists this VMID under the same name: the VM was migrated there.
fn moved_to(vms: &[ClusterVm], vmid: u32, name: &str, node: &str) -> Option<String> {
    vms.iter()
        .find(|vm| vm.vmid == vmid && vm.node != node && vm.name.as_deref() == Some(name))
        .map(|vm| vm.node.clone())
}

/// Brings an existing VM to `spec`, rebooting it if a changed key only applies at boot, and
/// starting or stopping it as `started` says. Returns whether it was rebooted.
pub async fn update(
    client: &Client,
    node: &str,
    vmid: u32,
    spec: &VmSpec,
    started: bool,
    shutdown_timeout_secs: u64,
    deadline: Instant,
) -> Result<bool, Error> {
    let keys = apply_spec(client, node, vmid, spec, deadline).await?;
    let status = with_policy(API_CALL, deadline, "status", || {
        client.vm_status(node, vmid)
    })
    .await?;
    let running = status.status == "running";
    let mut rebooted = false;
    if running && !started {
        power_off(client, node, vmid, shutdown_timeout_secs, deadline).await?;
    } else if !running && started {
        start(client, node, vmid, deadline).await?;
    } else if running && needs_reboot(&keys) {
        let pending = client
            .vm_pending_keys(node, vmid)
            .await
            .unwrap_or_else(|_| keys.clone());
        if !pending.is_empty()
            || keys
                .iter()
                .any(|k| k.starts_with("ipconfig") || k == "nameserver" || k == "searchdomain")
        {
            // Cloud-init and hardware changes only reach the guest at the next boot.
            power_off(client, node, vmid, shutdown_timeout_secs, deadline).await?;
            start(client, node, vmid, deadline).await?;
            rebooted = true;
        }
    }
    Ok(rebooted)
}

/// A hard stop (`status/stop`), waiting until the VM reports it is stopped; a VM already
/// stopped is left alone.
pub(crate) async fn stop(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<(), Error> {
    if is_stopped(client, node, vmid).await {
        return Ok(());
    }
    let stop = async {
        run_task(client, "stop", deadline, || client.stop_vm(node, vmid)).await?;
        wait_power_state(client, node, vmid, "stopped", deadline).await
    }
    .await;
    match stop {
        Err(e) if !e.is_not_found() && is_stopped(client, node, vmid).await => Ok(()),
        other => other,
    }
}

/// Shutdown that falls back to a hard stop.
async fn power_off(
    client: &Client,
    node: &str,
    vmid: u32,
    timeout_secs: u64,
    deadline: Instant,
) -> Result<(), Error> {
    let shutdown = async {
        run_task(client, "shutdown", deadline, || {
            client.shutdown_vm(node, vmid, timeout_secs)
        })
        .await?;
        wait_power_state(client, node, vmid, "stopped", deadline).await
    }
    .await;
    let Err(e) = shutdown else {
        return Ok(());
    };
    if e.is_not_found() {
        return Err(e);
    }
    // What counts is that the VM is off: a shutdown sent again after a lost answer fails on a
    // VM the first one already stopped.
    if is_stopped(client, node, vmid).await {
        return Ok(());
    }
    tracing::warn!(vmid, %e, "shutdown did not finish; stopping");
    let stop = async {
        run_task(client, "stop", deadline, || client.stop_vm(node, vmid)).await?;
        wait_power_state(client, node, vmid, "stopped", deadline).await
    }
    .await;
    match stop {
        Err(_) if is_stopped(client, node, vmid).await => Ok(()),
        other => other,
    }
}

async fn is_stopped(client: &Client, node: &str, vmid: u32) -> bool {
    client
        .vm_status(node, vmid)
        .await
        .is_ok_and(|status| status.status == "stopped")
}

/// Takes a VM that is about to be destroyed out of HA first (what `ha-manager remove` does):
/// otherwise the HA manager, acting on its own schedule, may start it again or move it between
/// castle's stop and the destroy, and the stop itself only queues a request to it. Without
/// `Sys.Console` on `/` (the README's role has none) the destroy's `purge` removes the
/// resource instead (qemu-server `src/PVE/API2/Qemu.pm` destroy_vm: "removed VM N from HA
/// resource configuration"), after the stop went through the HA manager.
async fn leave_ha(client: &Client, vmid: u32, deadline: Instant) -> Result<(), Error> {
    let removed = with_policy(API_CALL, deadline, "remove the HA resource", || {
        client.remove_ha_resource(vmid)
    })
    .await;
    match removed {
        Ok(()) => {
            tracing::info!(vmid, "removed the VM's HA resource before destroying it");
            Ok(())
        }
        Err(e) if e.is_permission_denied() => {
            tracing::warn!(vmid, error = %e, "cannot remove the HA resource; the destroy's purge will");
            Ok(())
        }
        // Someone removed it meanwhile.
        Err(e) if e.is_not_found() || e.text().contains("not HA managed") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Stops and destroys the VM with its disks. A VM that is already gone is success.
pub async fn delete(
    client: &Client,
    node: &str,
    vmid: u32,
    shutdown_timeout_secs: u64,
    deadline: Instant,
) -> Result<(), Error> {
    let result: Result<(), Error> = async {
        let status = with_policy(API_CALL, deadline, "status", || {
            client.vm_status(node, vmid)
        })
        .await?;
        if status.ha_managed() {
            leave_ha(client, vmid, deadline).await?;
        }
        if status.status == "running" {
            power_off(client, node, vmid, shutdown_timeout_secs, deadline).await?;
        }
        // `purge` also removes the VM's HA resource (if it is still there), backup and
        // replication jobs. `destroy-unreferenced-disks` scans every enabled storage and fails
        // when one is offline (qemu-server `src/PVE/QemuServer.pm` destroy_vm, pve-storage
        // activate_storage: `storage 'X' is not online`): then destroy without the scan.
        let scan = run_task(client, "delete", deadline, || client.delete_vm(node, vmid, true)).await;
        match scan {
            Err(e) if e.is_storage_offline() => {
                tracing::warn!(vmid, error = %e, "a storage is offline; destroying without the unreferenced-disk scan");
                run_task(client, "delete", deadline, || client.delete_vm(node, vmid, false)).await?;
            }
            other => {
                other?;
            }
        }
        Ok(())
    }
    .await;
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(vmid: u32, name: &str, lock: Option<&str>) -> ClusterVm {
        ClusterVm {
            vmid,
            node: "pve1".into(),
            name: Some(name.into()),
            status: Some("stopped".into()),
            template: None,
            lock: lock.map(str::to_string),
            tags: None,
            kind: Some("qemu".into()),
        }
    }

    fn config(pairs: &[(&str, &str)]) -> VmConfig {
        VmConfig(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_clone_whose_answer_was_lost_is_not_cloned_twice() {
        assert!(is_our_clone(&config(&[("name", "cp-1")]), "cp-1"));
        // While the clone runs its config is PVE's temporary file: the clone lock, no name.
        assert!(is_our_clone(
            &config(&[
                ("lock", "clone"),
                ("description", " qmclone temporary file\n")
            ]),
            "cp-1"
        ));
    }

    #[test]
    fn a_clone_that_never_arrived_is_sent_again() {
        // Someone else's VM with our id: the resend reports the clash and a new id is picked.
        assert!(!is_our_clone(&config(&[("name", "other")]), "cp-1"));
        assert!(!is_our_clone(
            &config(&[("name", "other"), ("lock", "backup")]),
            "cp-1"
        ));
    }

    #[test]
    fn a_clone_listed_before_pvestatd_saw_its_name_is_looked_at_by_its_config() {
        let mut fresh = listed(100, "cp-1", Some("clone"));
        fresh.name = None;
        assert!(listed_unnamed(&fresh));
        fresh.name = Some("VM 100".into());
        assert!(listed_unnamed(&fresh));
        // Someone's VM named after another id, or a named one, is not.
        assert!(!listed_unnamed(&listed(100, "VM 7", None)));
        assert!(!listed_unnamed(&listed(100, "w-1", None)));
    }

    #[test]
    fn a_migrated_vm_is_found_on_its_new_node_by_id_and_name() {
        let mut moved = listed(105, "cp-1", None);
        moved.node = "pve2".into();
        assert_eq!(
            moved_to(&[moved.clone()], 105, "cp-1", "pve1"),
            Some("pve2".into())
        );
        // Another VM that got the id after ours was deleted is not ours.
        assert_eq!(moved_to(&[moved], 105, "w-1", "pve1"), None);
    }

    #[test]
    fn a_vm_on_a_node_the_cluster_lists_offline_is_not_read_again() {
        // PVE lists the guests of an offline node with status `unknown`.
        let mut down = listed(105, "cp-1", None);
        down.status = Some("unknown".into());
        assert!(!listed_on_a_node_up(&[down], 105, "pve1"));
        // Up for the cluster: the 595 was a passing hiccup, the read is tried again.
        assert!(listed_on_a_node_up(
            &[listed(105, "cp-1", None)],
            105,
            "pve1"
        ));
        assert!(!listed_on_a_node_up(
            &[listed(105, "cp-1", None)],
            105,
            "pve2"
        ));
    }
}

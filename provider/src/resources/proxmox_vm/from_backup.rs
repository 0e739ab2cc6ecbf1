//! The VM a create takes over when a killed run emptied the state file: the one the backup
//! lists under the create's name and node ([`crate::resources::emptied_state`]).
//!
//! With the state file empty Terraform plans every VM as a create, and castle would clone each
//! one again beside the one it already has. The backup is the state as the killed run found it:
//! a VM it lists under this name and node, that still exists and carries this workspace's tags,
//! is the very VM this resource instance held, so the create adopts it. Where the backup and the
//! configuration disagree in a way that would have replaced the VM (node, `vm_id`, the clone
//! source), or the command asks for a replacement (`-replace`), adopting would keep what the
//! user wants gone and cloning would leave the old one behind: only the state can do it right,
//! so the plan is refused with the command that puts the backup back.

use serde_json::Value;

use crate::resources::emptied_state;

/// A `castle_proxmox_vm` instance of the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVm {
    /// Its address in the configuration, for messages.
    pub address: String,
    /// Proxmox node.
    pub node: String,
    /// VM name.
    pub name: String,
    /// VMID.
    pub vmid: u32,
    /// Its clone block, when it has one (an imported VM has none until its first apply).
    pub clone: Option<CloneSource>,
}

/// What a VM was cloned from: the attributes whose change replaces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneSource {
    /// `clone.template_id`.
    pub template_id: Option<i64>,
    /// `clone.template_name`.
    pub template_name: Option<String>,
    /// `clone.full`.
    pub full: Option<bool>,
    /// `clone.storage`.
    pub storage: Option<String>,
    /// `clone.pool`.
    pub pool: Option<String>,
}

/// The create being planned (`None` where the configuration leaves a value unknown or unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Proxmox node.
    pub node: String,
    /// VM name.
    pub name: String,
    /// A VMID the configuration fixes.
    pub vm_id: Option<u32>,
    /// The clone block.
    pub clone: CloneSource,
}

/// A VM of that name on that node, as Proxmox lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// VMID.
    pub vmid: u32,
    /// It carries castle's tag and this workspace's.
    pub ours: bool,
}

/// What the create does.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The backup lists no VM under this name, or its VM is gone: clone as always.
    Clone,
    /// Take this VM.
    Adopt(u32),
    /// Refuse the plan: only the restored state can do it right, for this reason.
    Restore(String),
}

/// The `castle_proxmox_vm` instances of a state snapshot (deposed objects left out).
pub fn listed_vms(snapshot: &Value) -> Vec<BackupVm> {
    emptied_state::castle_resources(snapshot)
        .filter(|r| r.get("type").and_then(Value::as_str) == Some("castle_proxmox_vm"))
        .flat_map(|r| {
            let module = r.get("module").and_then(Value::as_str).unwrap_or_default();
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            let base = if module.is_empty() {
                format!("castle_proxmox_vm.{name}")
            } else {
                format!("{module}.castle_proxmox_vm.{name}")
            };
            let instances = r.get("instances").and_then(Value::as_array);
            instances
                .into_iter()
                .flatten()
                .filter(|i| i.get("deposed").is_none())
                .filter_map(move |i| instance(&base, i))
        })
        .collect()
}

fn instance(base: &str, instance: &Value) -> Option<BackupVm> {
    let attributes = instance.get("attributes")?;
    let text = |key: &str| {
        attributes
            .get(key)
            .and_then(Value::as_str)
            .map(String::from)
    };
    let (node, vmid) = text("id")?
        .split_once('/')
        .and_then(|(n, v)| Some((n.to_string(), v.parse().ok()?)))?;
    let address = match instance.get("index_key") {
        Some(Value::String(key)) => format!("{base}[{key:?}]"),
        Some(Value::Number(key)) => format!("{base}[{key}]"),
        _ => base.to_string(),
    };
    let clone = attributes
        .get("clone")
        .and_then(Value::as_array)
        .and_then(|blocks| blocks.first())
        .map(|c| CloneSource {
            template_id: c.get("template_id").and_then(Value::as_i64),
            template_name: c
                .get("template_name")
                .and_then(Value::as_str)
                .map(String::from),
            full: c.get("full").and_then(Value::as_bool),
            storage: c.get("storage").and_then(Value::as_str).map(String::from),
            pool: c.get("pool").and_then(Value::as_str).map(String::from),
        });
    Some(BackupVm {
        address,
        node,
        name: text("name")?,
        vmid,
        clone,
    })
}

/// Decides a planned create over an emptied state file, from the VMs the backup lists, the VMs
/// Proxmox lists under the wanted name and node, and whether the command asks for a replacement.
pub fn decide(
    backup: &[BackupVm],
    wanted: &Wanted,
    listed: &[Listed],
    replacing: bool,
) -> Decision {
    let named: Vec<&BackupVm> = backup.iter().filter(|b| b.name == wanted.name).collect();
    if named.is_empty() {
        return Decision::Clone;
    }
    let here: Vec<&&BackupVm> = named.iter().filter(|b| b.node == wanted.node).collect();
    let vm = match here.as_slice() {
        [] => {
            return Decision::Restore(format!(
                "the backup lists VM {} ({}) on node {}, and this configuration puts {} on node {}, which replaces it",
                named[0].vmid, named[0].address, named[0].node, wanted.name, wanted.node
            ))
        }
        [vm] => vm,
        more => {
            return Decision::Restore(format!(
                "the backup lists {} VMs named {} on node {}, and castle cannot tell which one this is",
                more.len(),
                wanted.name,
                wanted.node
            ))
        }
    };
    let which = format!("VM {} ({})", vm.vmid, vm.address);
    if replacing {
        return Decision::Restore(format!(
            "this command asks for a replacement (-replace), and the backup lists {which}, which only the state can \
             replace"
        ));
    }
    if let Some(id) = wanted.vm_id.filter(|id| *id != vm.vmid) {
        return Decision::Restore(format!(
            "the backup lists {which}, and this configuration sets vm_id = {id}, which replaces it"
        ));
    }
    if let Some(attribute) = vm
        .clone
        .as_ref()
        .and_then(|c| clone_changed(c, &wanted.clone))
    {
        return Decision::Restore(format!(
            "the backup lists {which}, and this configuration changes clone.{attribute}, which replaces it"
        ));
    }
    match listed.iter().find(|l| l.vmid == vm.vmid) {
        // Deleted since (or renamed): there is nothing to take.
        None => Decision::Clone,
        Some(l) if l.ours => Decision::Adopt(vm.vmid),
        Some(_) => Decision::Restore(format!(
            "the backup lists {which}, which does not carry this workspace's castle tags, so castle cannot tell it \
             is the same VM"
        )),
    }
}

/// The clone attribute whose change replaces the VM: one the configuration sets to another
/// value (`storage` and `pool` also when it leaves them out where they were set).
pub fn clone_changed(prior: &CloneSource, wanted: &CloneSource) -> Option<&'static str> {
    if wanted.template_id.is_some() && wanted.template_id != prior.template_id {
        return Some("template_id");
    }
    if wanted.template_name.is_some() && wanted.template_name != prior.template_name {
        return Some("template_name");
    }
    if wanted.full.is_some() && wanted.full != prior.full {
        return Some("full");
    }
    if wanted.storage != prior.storage {
        return Some("storage");
    }
    if wanted.pool != prior.pool {
        return Some("pool");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKUP: &str = r#"{"version":4,"resources":[
        {"mode":"managed","type":"castle_proxmox_vm","name":"node","instances":[
          {"index_key":"cp-1","attributes":{"id":"pve1/105","name":"home-cp-1","node":"pve1",
            "clone":[{"template_name":"talos","template_id":null,"full":true,"storage":null,"pool":null}]}},
          {"index_key":"cp-1","deposed":"00000001","attributes":{"id":"pve1/101","name":"home-cp-1","node":"pve1"}},
          {"index_key":"w-1","attributes":{"id":"pve1/106","name":"home-w-1","node":"pve1","clone":[]}}]},
        {"mode":"managed","type":"castle_talos_secrets","name":"this","instances":[{"attributes":{"id":"x"}}]}]}"#;

    fn backup() -> Vec<BackupVm> {
        listed_vms(&serde_json::from_str(BACKUP).unwrap())
    }

    fn wanted(name: &str) -> Wanted {
        Wanted {
            node: "pve1".into(),
            name: name.into(),
            vm_id: None,
            clone: CloneSource {
                template_name: Some("talos".into()),
                full: Some(true),
                ..Default::default()
            },
        }
    }

    fn ours(vmid: u32) -> Vec<Listed> {
        vec![Listed { vmid, ours: true }]
    }

    #[test]
    fn the_backup_lists_each_vm_with_its_address_deposed_ones_left_out() {
        let vms = backup();
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].address, r#"castle_proxmox_vm.node["cp-1"]"#);
        assert_eq!((vms[0].node.as_str(), vms[0].vmid), ("pve1", 105));
        assert_eq!(vms[1].clone, None);
    }

    #[test]
    fn the_vm_the_backup_lists_is_adopted_when_it_is_still_there_and_ours() {
        assert_eq!(
            decide(&backup(), &wanted("home-cp-1"), &ours(105), false),
            Decision::Adopt(105)
        );
        // An imported VM has no clone block in state: the configuration's is no change.
        assert_eq!(
            decide(&backup(), &wanted("home-w-1"), &ours(106), false),
            Decision::Adopt(106)
        );
    }

    #[test]
    fn a_vm_the_backup_does_not_list_or_that_is_gone_is_cloned() {
        assert_eq!(
            decide(&backup(), &wanted("home-w-2"), &[], false),
            Decision::Clone
        );
        assert_eq!(
            decide(&backup(), &wanted("home-cp-1"), &ours(107), false),
            Decision::Clone
        );
    }

    #[test]
    fn a_replacement_only_the_state_can_make_is_refused() {
        let restore = |d: Decision| matches!(d, Decision::Restore(_));
        // -replace
        assert!(restore(decide(
            &backup(),
            &wanted("home-cp-1"),
            &ours(105),
            true
        )));
        // Another template, another node, another fixed VMID.
        let mut other = wanted("home-cp-1");
        other.clone.template_name = Some("talos-v2".into());
        assert!(restore(decide(&backup(), &other, &ours(105), false)));
        let mut moved = wanted("home-cp-1");
        moved.node = "pve2".into();
        assert!(restore(decide(&backup(), &moved, &[], false)));
        let mut fixed = wanted("home-cp-1");
        fixed.vm_id = Some(120);
        assert!(restore(decide(&backup(), &fixed, &ours(105), false)));
        // The VM is there but without this workspace's tags: not known to be the same one.
        let foreign = [Listed {
            vmid: 105,
            ours: false,
        }];
        assert!(restore(decide(
            &backup(),
            &wanted("home-cp-1"),
            &foreign,
            false
        )));
    }
}

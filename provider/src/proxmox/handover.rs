//! Handing a static address over from one VM to its replacement, so that two machines never
//! hold one address at the same moment.
//!
//! With `create_before_destroy`, Terraform creates a VM's replacement while the old VM still
//! runs at the same static address (cloud-init `ipconfig0`). The replacement is then cloned and
//! configured but left stopped, with [`AWAITS_ADDRESS_TAG`]; whoever takes the old machine out
//! starts it: the cluster's node replacement (after the old machine left etcd and Kubernetes,
//! was reset and its VM stopped), or, without a cluster, the old VM's deletion. Only VMs of
//! the same Terraform workspace (its `castle-ws-` marker) are considered: another workspace's
//! VM at the same address is someone else's mistake, not a hand-over.

use tokio::time::Instant;

use super::cluster::ClusterVm;
use super::provision::{self, workspace_tag};
use super::retry::{with_policy, API_CALL, LOCKED};
use super::vm_config::{parse_ipconfig, parse_tags, AWAITS_ADDRESS_TAG};
use super::{Client, Error};

/// A VM of this workspace, named for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceVm {
    /// Proxmox node.
    pub node: String,
    /// VMID.
    pub vmid: u32,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for WorkspaceVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}/{})", self.name, self.node, self.vmid)
    }
}

/// The bare address of a CIDR or of an `ipconfig0` `ip=` value.
fn bare(address: &str) -> &str {
    address.split('/').next().unwrap_or(address)
}

fn ours(vm: &ClusterVm, workspace: &str) -> bool {
    !vm.is_template()
        && vm
            .tags
            .as_deref()
            .map(parse_tags)
            .is_some_and(|t| t.contains(workspace))
}

fn awaits(vm: &ClusterVm) -> bool {
    vm.tags
        .as_deref()
        .map(parse_tags)
        .is_some_and(|t| t.contains(AWAITS_ADDRESS_TAG))
}

/// The workspace's VMs for which `wanted` holds, whose `ipconfig0` has `address`.
async fn with_address(
    client: &Client,
    address: &str,
    wanted: impl Fn(&ClusterVm) -> bool,
    deadline: Instant,
) -> Result<Vec<WorkspaceVm>, Error> {
    let workspace = workspace_tag();
    let vms = with_policy(API_CALL, deadline, "list VMs", || client.cluster_vms()).await?;
    let mut found = Vec::new();
    for vm in vms.iter().filter(|vm| ours(vm, &workspace) && wanted(vm)) {
        let config = match with_policy(API_CALL, deadline, "read config", || {
            client.vm_config(&vm.node, vm.vmid)
        })
        .await
        {
            Ok(config) => config,
            // Deleted between the list and the read.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        let holds = config
            .get("ipconfig0")
            .and_then(parse_ipconfig)
            .is_some_and(|ipv4| bare(&ipv4.address) == bare(address));
        if holds {
            found.push(WorkspaceVm {
                node: vm.node.clone(),
                vmid: vm.vmid,
                name: vm.name.clone().unwrap_or_default(),
            });
        }
    }
    Ok(found)
}

/// A running VM of this workspace that holds `address` (a CIDR or a bare address).
pub async fn running_holder(
    client: &Client,
    address: &str,
    deadline: Instant,
) -> Result<Option<WorkspaceVm>, Error> {
    Ok(with_address(
        client,
        address,
        |vm| vm.status.as_deref() == Some("running"),
        deadline,
    )
    .await?
    .into_iter()
    .next())
}

/// A stopped VM of this workspace that was created to take over `address`.
pub async fn awaiting(
    client: &Client,
    address: &str,
    deadline: Instant,
) -> Result<Option<WorkspaceVm>, Error> {
    Ok(with_address(
        client,
        address,
        |vm| vm.status.as_deref() == Some("stopped") && awaits(vm),
        deadline,
    )
    .await?
    .into_iter()
    .next())
}

/// Whether the VM still exists.
pub async fn exists(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<bool, Error> {
    match with_policy(API_CALL, deadline, "status", || {
        client.vm_status(node, vmid)
    })
    .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Starts a VM that took over an address: drops [`AWAITS_ADDRESS_TAG`] (so no later deletion
/// starts it again) and starts it; a VM that already runs is left running.
pub async fn take_over(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<(), Error> {
    let config = with_policy(API_CALL, deadline, "read config", || {
        client.vm_config(node, vmid)
    })
    .await?;
    if let Some(tags) = config.get("tags") {
        let mut kept = parse_tags(tags);
        if kept.remove(AWAITS_ADDRESS_TAG) {
            let kept: Vec<String> = kept.into_iter().collect();
            let (params, delete) = if kept.is_empty() {
                (vec![], vec!["tags".to_string()])
            } else {
                (vec![("tags".to_string(), kept.join(";"))], vec![])
            };
            with_policy(LOCKED, deadline, "write config", || {
                client.set_vm_config(node, vmid, params.clone(), &delete)
            })
            .await?;
        }
    }
    provision::start(client, node, vmid, deadline).await?;
    Ok(())
}

/// Stops a VM whose machine was taken out (reset, or gone), so that its address is free: a
/// hard stop, nothing is left on it to shut down. A VM already gone counts as stopped.
pub async fn release(
    client: &Client,
    node: &str,
    vmid: u32,
    deadline: Instant,
) -> Result<(), Error> {
    match provision::stop(client, node, vmid, deadline).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(status: &str, tags: &str) -> ClusterVm {
        serde_json::from_value(serde_json::json!({
            "vmid": 101, "node": "pve1", "name": "home-cp-2", "status": status,
            "tags": tags, "type": "qemu"
        }))
        .unwrap()
    }

    #[test]
    fn only_the_workspaces_own_vms_take_part_in_a_hand_over() {
        let mine = "castle-ws-0a1b2c3d";
        assert!(ours(
            &vm("running", "castle-managed;castle-ws-0a1b2c3d"),
            mine
        ));
        assert!(!ours(
            &vm("running", "castle-managed;castle-ws-ffffffff"),
            mine
        ));
        assert!(!ours(&vm("running", ""), mine));
    }

    #[test]
    fn a_vm_awaits_an_address_only_with_the_tag() {
        assert!(awaits(&vm(
            "stopped",
            "castle-awaits-address;castle-managed"
        )));
        assert!(!awaits(&vm("stopped", "castle-managed")));
    }

    #[test]
    fn addresses_compare_without_their_prefix() {
        assert_eq!(bare("10.0.0.12/24"), bare("10.0.0.12"));
    }
}

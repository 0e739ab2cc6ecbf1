//! Replacing the machine behind a node (a new VM at the node's address: a template change,
//! `terraform apply -replace`, a VM lost and rebuilt), one node at a time, never two machines
//! on one address:
//!
//! 1. The old machine goes. If it still exists it leaves gracefully, as a removed node does
//!    ([`super::remove_node`]: a control plane leaves etcd, the Node object goes, the machine
//!    is reset), then its VM is stopped. If its VM is gone (deleted outside Terraform), its
//!    ghost etcd member is removed through a healthy control plane and its Node object
//!    deleted, without waiting for a machine that cannot answer.
//! 2. The address is silent, then the new VM is started (it was created stopped, waiting for
//!    the address), answers in maintenance mode, gets its config, and a control plane joins
//!    etcd as a learner that Talos promotes once it caught up (Talos:
//!    internal/app/machined/pkg/system/services/etcd.go (v1.12.0) `addMember`,
//!    `promoteMember`).
//! 3. The cluster is healthy (every member voting, exactly the control planes) before the
//!    next node: a replaced control plane costs the cluster one voter at a time, so quorum
//!    holds throughout.

use std::net::IpAddr;

use async_trait::async_trait;
use tokio::time::Instant;

use super::poll::{bounded, ATTEMPT_TIMEOUT, NODE_POLL};
use super::{Access, ClusterError, ClusterNode, ResetOutcome};
use crate::kubernetes::KubeClient;
use crate::talos::client::{probe, NodeClient, NodeState};
use crate::talos::config::Role;

/// A node whose machine changes: what the previous apply knew of the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// Node name (the same before and after).
    pub node: String,
    /// The old machine's address.
    pub old_ip: IpAddr,
    /// Whether the old machine was a control plane.
    pub old_control_plane: bool,
    /// The old machine's VM (`node/vmid`), if the configuration named it.
    pub old_vm: Option<String>,
    /// The new machine's VM, if the configuration names it.
    pub new_vm: Option<String>,
}

impl Replacement {
    /// The old machine as the removal needs it.
    fn old_node(&self) -> ClusterNode {
        ClusterNode {
            name: self.node.clone(),
            ip: self.old_ip,
            role: if self.old_control_plane {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            config: String::new(),
            earlier: Default::default(),
            unfit: Default::default(),
        }
    }
}

/// Power over the VMs behind nodes, by their id (`node/vmid` for Proxmox). Errors are
/// messages for the user.
#[async_trait]
pub trait VmPower: Sync {
    /// Whether the VM still exists.
    async fn exists(&self, vm: &str, deadline: Instant) -> Result<bool, String>;
    /// Stops the VM (hard: its machine was reset or is gone); a VM already stopped or gone
    /// is what was asked for.
    async fn stop(&self, vm: &str, deadline: Instant) -> Result<(), String>;
    /// Starts the VM (it may wait for this address); a running VM is what was asked for.
    async fn start(&self, vm: &str, deadline: Instant) -> Result<(), String>;
    /// A VM of this workspace created stopped to take `address` over from a running one
    /// (named for messages), if there is one.
    async fn awaiting(&self, address: IpAddr, deadline: Instant) -> Result<Option<String>, String>;
}

/// What answers at the node's address when its VM id did not change but its MAC did: either
/// the VM was lost and Proxmox gave its rebuilt successor the freed VMID (the lowest free id),
/// or the same VM got a new NIC (`network.mac` changed: Proxmox swaps the NIC, and at its
/// next boot Talos takes the address from cloud-init on the new NIC and keeps its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SameVmId {
    /// The machine still runs this cluster's config: the same machine behind a new NIC. It
    /// keeps its etcd member and Node; only its config (the link's MAC) changes.
    SameMachine,
    /// A fresh machine (maintenance mode, or not ours): the old one is gone with its VM.
    Rebuilt,
}

/// Judges a probe of the node's address (see [`SameVmId`]); `None` while nothing answers yet.
fn judge_same_vm_id(state: &NodeState) -> Option<SameVmId> {
    match state {
        NodeState::Configured { .. } => Some(SameVmId::SameMachine),
        NodeState::Maintenance | NodeState::ForeignCluster => Some(SameVmId::Rebuilt),
        NodeState::Unreachable { .. } => None,
    }
}

/// Waits until something answers at the node's address and judges it.
async fn same_vm_id(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<SameVmId, ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    loop {
        let last = match bounded(deadline, probe(node.ip, &access.talos, &access.connect)).await {
            Some(state) => match judge_same_vm_id(&state) {
                Some(judged) => return Ok(judged),
                None => format!("{state:?}"),
            },
            None => "no answer yet".to_string(),
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "the machine behind the node's VM to answer".into(),
                node: format!("{} ({})", node.name, node.ip),
                last,
            });
        }
    }
}

fn power_error(vm: &str, what: &str, message: String) -> ClusterError {
    ClusterError::Credentials(format!("unable to {what} VM {vm}: {message}"))
}

/// Replaces the machine behind `node` (see the module). `cluster` is every node of the
/// desired cluster; `power` is `None` when the provider has no Proxmox client (then the VMs
/// are left as they are).
pub async fn replace_node(
    cluster: &[ClusterNode],
    node: &ClusterNode,
    replacement: &Replacement,
    power: Option<&dyn VmPower>,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let old = replacement.old_node();
    let old_vm = replacement.old_vm.as_deref().zip(power);
    if let (None, None, Some(power)) = (&replacement.old_vm, &replacement.new_vm, power) {
        refuse_unnamed_overlap(&old, power, deadline).await?;
    }
    // Proxmox hands out the lowest free VMID, so a VM rebuilt after its predecessor was deleted
    // outside Terraform often gets the same id: then the id names the new machine, which must
    // not be taken out. The same id with a new MAC is also a VM whose NIC changed: what answers
    // at the address tells them apart.
    let reused = replacement.old_vm.is_some() && replacement.old_vm == replacement.new_vm;
    if reused && same_vm_id(node, access, deadline).await? == SameVmId::SameMachine {
        tracing::info!(node = %node.name, "the same machine behind a new NIC: applying its config");
        super::apply_configs(std::slice::from_ref(node), access, deadline).await?;
        super::wait_configured(std::slice::from_ref(node), access, deadline).await?;
        return super::wait_healthy(cluster, access, deadline).await;
    }
    let gone = match old_vm {
        _ if reused => true,
        Some((vm, power)) => !power
            .exists(vm, deadline)
            .await
            .map_err(|e| power_error(vm, "look up", e))?,
        None => false,
    };
    if gone {
        tracing::info!(node = %node.name, "the old machine's VM is gone: removing what it left behind");
        remove_ghost(cluster, &old, access, deadline).await?;
    } else {
        tracing::info!(node = %node.name, "taking the old machine out of the cluster");
        let outcome = super::remove_node(&old, cluster, access, deadline).await?;
        if !matches!(
            outcome,
            ResetOutcome::Reset | ResetOutcome::AlreadyInMaintenance
        ) {
            tracing::warn!(node = %node.name, ?outcome, "the old machine was not reset");
        }
        if let Some((vm, power)) = old_vm {
            power
                .stop(vm, deadline)
                .await
                .map_err(|e| power_error(vm, "stop", e))?;
            wait_silent(&old, access, deadline).await?;
        }
    }
    if let (Some(vm), Some(power)) = (&replacement.new_vm, power) {
        power
            .start(vm, deadline)
            .await
            .map_err(|e| power_error(vm, "start", e))?;
    }
    tracing::info!(node = %node.name, "configuring the new machine");
    super::apply_configs(std::slice::from_ref(node), access, deadline).await?;
    super::wait_configured(std::slice::from_ref(node), access, deadline).await?;
    // Healthy means every etcd member votes and the members are exactly the control planes:
    // the new one was promoted from learner.
    super::wait_healthy(cluster, access, deadline).await
}

/// A node block without `vm_id` whose machine changes (a new MAC): castle cannot tell the
/// old VM from the new one, so it could neither stop the old nor start the new. If a VM of
/// the workspace waits, stopped, for the node's address (a replacement made with
/// `create_before_destroy`), carrying on would reset the old machine and configure it again
/// in maintenance mode, then leave the new VM to start unconfigured once Terraform deletes
/// the old one: refuse before anything changes.
async fn refuse_unnamed_overlap(
    old: &ClusterNode,
    power: &dyn VmPower,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let waiting = power
        .awaiting(old.ip, deadline)
        .await
        .map_err(|e| power_error(&old.ip.to_string(), "look up the VMs at", e))?;
    match waiting {
        Some(vm) => Err(ClusterError::Credentials(format!(
            "the machine of {} changes, and VM {vm} waits, stopped, to take its address {} over, but the node \
             block has no vm_id: castle cannot tell the old VM from the new one. Set vm_id in the node block \
             (vm_id = castle_proxmox_vm.<name>.id, as examples/ha-cluster does) and apply again.",
            old.name, old.ip
        ))),
        None => Ok(()),
    }
}

/// What a machine whose VM was deleted leaves behind: its etcd member (a voter that never
/// answers again, so one failure less before quorum is lost) and its Node object. The
/// member is removed through a healthy control plane, before the new machine joins.
async fn remove_ghost(
    cluster: &[ClusterNode],
    old: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    if old.is_control_plane() {
        let others: Vec<&ClusterNode> = cluster
            .iter()
            .filter(|n| n.is_control_plane() && n.name != old.name)
            .collect();
        let mut pauses = NODE_POLL.until(deadline);
        let mut last = String::from("no other control plane");
        loop {
            for other in &others {
                match bounded(deadline, remove_member_through(other, &old.name, access)).await {
                    Some(Ok(())) => {
                        return delete_node_object(old, access).await;
                    }
                    Some(Err(e)) => last = format!("{}: {e}", other.name),
                    None => {
                        last = format!(
                            "{}: no answer within {} s",
                            other.name,
                            ATTEMPT_TIMEOUT.as_secs()
                        )
                    }
                }
            }
            if !pauses.sleep(None).await {
                return Err(ClusterError::Timeout {
                    check: "a control plane to remove the lost machine's etcd member".into(),
                    node: format!("{} ({})", old.name, old.ip),
                    last,
                });
            }
        }
    }
    delete_node_object(old, access).await
}

/// Removes the etcd member named `hostname` through `through`; done when there is none.
async fn remove_member_through(
    through: &ClusterNode,
    hostname: &str,
    access: &Access,
) -> Result<(), String> {
    let client = NodeClient::connect(through.ip, &access.talos, &access.connect)
        .await
        .map_err(|e| e.describe())?;
    let members = client.etcd_member_list().await.map_err(|e| e.describe())?;
    for member in members.iter().filter(|m| m.hostname == hostname) {
        tracing::info!(member = %format!("{:x}", member.id), %hostname, through = %through.name, "removing the lost machine's etcd member");
        client
            .etcd_remove_member_by_id(member.id)
            .await
            .map_err(|e| e.describe())?;
    }
    Ok(())
}

async fn delete_node_object(old: &ClusterNode, access: &Access) -> Result<(), ClusterError> {
    if let Ok(kube) = KubeClient::new(&access.kube) {
        if let Err(e) = kube.delete_node(&old.name).await {
            tracing::warn!(node = %old.name, error = %e, "could not delete the Kubernetes node object");
        }
    }
    Ok(())
}

/// Waits until nothing answers at the old machine's address any more, so the new VM never
/// meets its predecessor on the network (a VM reported stopped may still be going down).
async fn wait_silent(
    old: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    loop {
        let last = match bounded(deadline, probe(old.ip, &access.talos, &access.connect)).await {
            Some(NodeState::Unreachable { .. }) => return Ok(()),
            Some(NodeState::Maintenance) => "a machine still answers in maintenance mode",
            Some(NodeState::Configured { .. }) => "the old machine still answers",
            Some(NodeState::ForeignCluster) => "a machine of another cluster answers",
            None => "no answer yet",
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "the old machine's address to be free".into(),
                node: format!("{} ({})", old.name, old.ip),
                last: last.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_vm_id_whose_machine_still_runs_our_config_is_the_same_machine_with_a_new_nic() {
        let configured = NodeState::Configured {
            talos_version: "v1.12.0".into(),
        };
        assert_eq!(judge_same_vm_id(&configured), Some(SameVmId::SameMachine));
    }

    #[test]
    fn a_reused_vm_id_answering_in_maintenance_is_a_rebuilt_vm_whose_predecessor_is_gone() {
        assert_eq!(
            judge_same_vm_id(&NodeState::Maintenance),
            Some(SameVmId::Rebuilt)
        );
        assert_eq!(
            judge_same_vm_id(&NodeState::ForeignCluster),
            Some(SameVmId::Rebuilt)
        );
    }

    #[test]
    fn a_reused_vm_id_is_judged_only_once_something_answers() {
        let booting = NodeState::Unreachable {
            reason: "connection refused".into(),
        };
        assert_eq!(judge_same_vm_id(&booting), None);
    }
}

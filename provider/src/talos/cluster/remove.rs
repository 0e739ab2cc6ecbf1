//! Taking one node out of a running cluster (scale-in), each step ending on what the cluster
//! shows rather than on a timer:
//!
//! 1. cordon and drain it through the Kubernetes API, as `kubectl drain --ignore-daemonsets
//!    --delete-emptydir-data` does ([`crate::kubernetes::drain`]): a PodDisruptionBudget that
//!    refuses until the deadline fails the removal here, with the node cordoned and nothing
//!    else changed;
//! 2. a control plane leaves etcd (`EtcdLeaveCluster`), done when another control plane's
//!    member list no longer holds it;
//! 3. a graceful reset, done when the machine is back in maintenance mode;
//! 4. its Kubernetes Node object is deleted (after the reset, so a running kubelet cannot
//!    register it again).
//!
//! A machine that cannot take part (it does not answer for [`UNREACHABLE_GRACE`], is already
//! in maintenance mode, or belongs to another cluster) is taken out from the outside: its etcd
//! member is removed through another control plane and its Node object deleted.

use tokio::time::Instant;

use super::poll::{bounded, ATTEMPT_TIMEOUT, NODE_POLL};
use super::teardown::reset_one;
use super::{Access, ClusterError, ClusterNode, ResetOutcome, UNREACHABLE_GRACE};
use crate::kubernetes::drain::DrainOptions;
use crate::kubernetes::KubeClient;
use crate::talos::client::{probe, NodeClient, NodeState, TalosError};
use crate::talos::proto::machine::EtcdMember;

/// Removes `node` from the cluster whose remaining nodes are `cluster`, within `deadline`.
pub async fn remove_node(
    node: &ClusterNode,
    cluster: &[ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<ResetOutcome, ClusterError> {
    let peers: Vec<&ClusterNode> = cluster
        .iter()
        .filter(|n| n.is_control_plane() && n.name != node.name)
        .collect();
    let outcome = match first_answer(node, access, deadline).await {
        NodeState::Configured { .. } => None,
        NodeState::Maintenance => Some(ResetOutcome::AlreadyInMaintenance),
        NodeState::ForeignCluster => {
            tracing::warn!(node = %node.name, "node no longer accepts this cluster's CA; leaving it alone");
            Some(ResetOutcome::ForeignCluster)
        }
        NodeState::Unreachable { reason } => {
            tracing::warn!(node = %node.name, %reason, "node does not answer; taking it for gone");
            Some(ResetOutcome::Unreachable { last: reason })
        }
    };
    // Through the VIP, which answers nothing for as long as a lost holder's election lease
    // lives (and this node, if it holds the VIP, cannot resign once it left etcd).
    let kube = KubeClient::new(&access.kube)
        .map_err(|e| ClusterError::Credentials(format!("Kubernetes API: {e}")))?
        .patient_until(deadline);
    if let Some(outcome) = outcome {
        if node.is_control_plane() {
            remove_member(node, &peers, access, deadline).await?;
        }
        delete_node_object(&kube, node, deadline).await?;
        return Ok(outcome);
    }
    let options = DrainOptions {
        timeout: deadline.saturating_duration_since(Instant::now()),
        ..DrainOptions::default()
    };
    let drained = kube.drain(&node.name, &options).await?;
    tracing::info!(node = %node.name, evicted = ?drained.evicted, "node cordoned and drained");
    if node.is_control_plane() {
        leave_etcd(node, &peers, access, deadline).await?;
    }
    let outcome = reset_one(node, &access.talos, &access.connect, true, deadline).await?;
    delete_node_object(&kube, node, deadline).await?;
    Ok(outcome)
}

/// The node's state once it answers, or `Unreachable` after [`UNREACHABLE_GRACE`] of silence
/// (a machine rebooting comes back within it; one whose VM was deleted never does).
async fn first_answer(node: &ClusterNode, access: &Access, deadline: Instant) -> NodeState {
    let give_up = deadline.min(Instant::now() + UNREACHABLE_GRACE);
    let mut pauses = NODE_POLL.until(deadline);
    loop {
        let state = bounded(deadline, probe(node.ip, &access.talos, &access.connect))
            .await
            .unwrap_or_else(|| NodeState::Unreachable {
                reason: format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            });
        if !matches!(state, NodeState::Unreachable { .. })
            || !pauses.sleep_before(None, give_up).await
        {
            return state;
        }
    }
}

async fn members_of(peer: &ClusterNode, access: &Access) -> Result<Vec<EtcdMember>, TalosError> {
    NodeClient::connect(peer.ip, &access.talos, &access.connect)
        .await?
        .etcd_member_list()
        .await
}

/// The node's etcd member id as the first control plane that answers sees it (`None`: not a
/// member), with that control plane; the last failure when none answers.
async fn member<'a>(
    node: &ClusterNode,
    peers: &[&'a ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<Option<(&'a ClusterNode, u64)>, String> {
    let mut last = "no other control plane to ask".to_string();
    for peer in peers {
        match bounded(deadline, members_of(peer, access)).await {
            Some(Ok(members)) => {
                return Ok(members
                    .iter()
                    .find(|m| m.hostname == node.name)
                    .map(|m| (*peer, m.id)))
            }
            Some(Err(e)) => last = format!("{}: {}", peer.name, e.describe()),
            None => {
                last = format!(
                    "{}: no answer within {} s",
                    peer.name,
                    ATTEMPT_TIMEOUT.as_secs()
                )
            }
        }
    }
    Err(last)
}

/// A control plane leaves etcd itself (Talos: internal/app/machined/internal/server/v1alpha1/
/// v1alpha1_server.go (v1.12.0) `EtcdLeaveCluster` removes the member, stops etcd and wipes its
/// data); done when another control plane's member list no longer holds it.
async fn leave_etcd(
    node: &ClusterNode,
    peers: &[&ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    let mut asked = false;
    loop {
        let found = member(node, peers, access, deadline).await;
        if let Ok(None) = found {
            tracing::info!(node = %node.name, "node left etcd");
            return Ok(());
        }
        let last = match found {
            // Asked once: wait for the member list to show it rather than asking again.
            Err(last) if asked => last,
            _ if asked => "still listed as a member".to_string(),
            _ => {
                let leave = bounded(deadline, async {
                    NodeClient::connect(node.ip, &access.talos, &access.connect)
                        .await?
                        .etcd_leave_cluster()
                        .await
                });
                match leave.await {
                    // No other control plane to confirm it (the plan refuses removing the last).
                    Some(Ok(())) if peers.is_empty() => return Ok(()),
                    Some(Ok(())) => {
                        asked = true;
                        "left; not yet confirmed by another control plane".to_string()
                    }
                    Some(Err(e)) => e.describe(),
                    None => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
                }
            }
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "the node to leave etcd (as another control plane's member list shows)"
                    .into(),
                node: format!("{} ({})", node.name, node.ip),
                last,
            });
        }
    }
}

/// Removes the etcd member of a control plane that cannot leave by itself, through another
/// control plane (`EtcdRemoveMemberByID`, what `talosctl etcd remove-member` does).
async fn remove_member(
    node: &ClusterNode,
    peers: &[&ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    loop {
        let last = match member(node, peers, access, deadline).await {
            Ok(None) => return Ok(()),
            Ok(Some((peer, id))) => {
                let removal = bounded(deadline, async {
                    NodeClient::connect(peer.ip, &access.talos, &access.connect)
                        .await?
                        .etcd_remove_member_by_id(id)
                        .await
                });
                match removal.await {
                    Some(Ok(())) => {
                        tracing::info!(node = %node.name, via = %peer.name, "etcd member removed");
                        continue;
                    }
                    Some(Err(e)) => format!("{}: {}", peer.name, e.describe()),
                    None => format!("{}: no answer", peer.name),
                }
            }
            Err(last) => last,
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "its etcd member to be removed through another control plane".into(),
                node: format!("{} ({})", node.name, node.ip),
                last,
            });
        }
    }
}

/// Deletes the node's Kubernetes Node object (one already gone is done).
async fn delete_node_object(
    kube: &KubeClient,
    node: &ClusterNode,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    loop {
        let last = match bounded(deadline, kube.delete_node(&node.name)).await {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => e.to_string(),
            None => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "its Kubernetes Node object to be deleted".into(),
                node: format!("{} ({})", node.name, node.ip),
                last,
            });
        }
    }
}

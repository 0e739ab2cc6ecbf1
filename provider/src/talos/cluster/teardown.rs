//! Taking nodes out: a control plane leaves etcd first, the Kubernetes node object goes, and
//! the machine is reset (STATE and EPHEMERAL wiped) back to maintenance mode, so it can be
//! reused without leaving a ghost behind.

use futures::future::join_all;
use tokio::time::Instant;

use super::poll::Backoff;
use super::{Access, ClusterError, ClusterNode};
use crate::kubernetes::KubeClient;
use crate::talos::client::{probe, NodeClient, NodeState};

/// Resets nodes, all at once: gracefully (cordon, drain, leave etcd) for workers and for a
/// control plane that leaves a running cluster, not gracefully when the whole cluster goes
/// (there is no quorum left to leave). A node already in maintenance mode or gone is done.
pub async fn reset_nodes(nodes: &[ClusterNode], access: &Access, whole_cluster: bool, deadline: Instant) -> Vec<(String, ClusterError)> {
    let results = join_all(nodes.iter().map(|node| async move {
        let graceful = !whole_cluster || !node.is_control_plane();
        reset_one(node, access, graceful, deadline).await.map_err(|e| (node.name.clone(), e))
    }))
    .await;
    results.into_iter().filter_map(Result::err).collect()
}

async fn reset_one(node: &ClusterNode, access: &Access, graceful: bool, deadline: Instant) -> Result<(), ClusterError> {
    let mut backoff = Backoff::new();
    loop {
        let last = match probe(node.ip, &access.talos, &access.connect).await {
            NodeState::Maintenance => return Ok(()),
            NodeState::ForeignCluster => {
                tracing::warn!(node = %node.name, "node no longer accepts this cluster's CA; leaving it alone");
                return Ok(());
            }
            NodeState::Unreachable { reason } if backoff_exhausted(&backoff) => {
                // A machine that is gone (its VM destroyed first) has nothing left to reset.
                tracing::warn!(node = %node.name, %reason, "node does not answer; nothing to reset");
                return Ok(());
            }
            NodeState::Unreachable { reason } => reason,
            NodeState::Configured { .. } => {
                let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
                    Ok(client) => client.reset(graceful, true).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        tracing::info!(node = %node.name, graceful, "node reset");
                        return Ok(());
                    }
                    Err(e) => e.describe(),
                }
            }
        };
        if !backoff.wait(deadline).await {
            return Err(super::bring_up::timeout("the node to accept a reset", node, last));
        }
    }
}

/// Unreachable for a few rounds: give up on it.
fn backoff_exhausted(backoff: &Backoff) -> bool {
    backoff.rounds() >= 4
}

/// Removes one node from a running cluster: a control plane leaves etcd, its Kubernetes node
/// object is deleted, then it is reset gracefully.
pub async fn remove_node(node: &ClusterNode, access: &Access, deadline: Instant) -> Result<(), ClusterError> {
    if node.is_control_plane() {
        if let Ok(client) = NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            if let Err(e) = client.etcd_leave_cluster().await {
                tracing::warn!(node = %node.name, error = %e.describe(), "leaving etcd failed; the reset will retry it");
            }
        }
    }
    if let Ok(kube) = KubeClient::new(&access.kube) {
        if let Err(e) = kube.delete_node(&node.name).await {
            tracing::warn!(node = %node.name, error = %e, "could not delete the Kubernetes node object");
        }
    }
    reset_one(node, access, true, deadline).await
}

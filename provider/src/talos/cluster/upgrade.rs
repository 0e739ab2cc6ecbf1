//! Rolling Talos upgrades: one node at a time, control planes first, each back from its
//! reboot on the new release and the cluster healthy again before the next, so etcd never
//! loses quorum.

use tokio::time::Instant;

use super::bring_up::pending;
use super::poll::{poll, poll_each, UPGRADE_ATTEMPT_TIMEOUT};
use super::reboot::{boot_id, wait_rebooted};
use super::{wait_healthy, Access, ClusterError, ClusterNode};
use crate::talos::client::{probe, ErrorClass, NodeClient, NodeState};

/// Upgrades each of `nodes` that is not yet on `target_tag` to the installer `image` (each of
/// them when `reinstall`: a new image of the same release, e.g. other system extensions).
/// `cluster` is the whole cluster, for the health checks between nodes.
///
/// A node is done when it is back under a new boot id (an Upgrade answers before the node
/// cordons, drains and reboots, and a reinstall keeps the release tag, so the tag alone would
/// pass at once) and reports `target_tag`.
pub async fn upgrade_nodes(
    cluster: &[ClusterNode],
    nodes: &[ClusterNode],
    image: &str,
    target_tag: &str,
    reinstall: bool,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut order: Vec<&ClusterNode> = nodes.iter().collect();
    order.sort_by_key(|n| (!n.is_control_plane(), n.name.clone()));
    for node in order {
        if let NodeState::Configured { talos_version } =
            probe(node.ip, &access.talos, &access.connect).await
        {
            if talos_version == target_tag && !reinstall {
                continue;
            }
        }
        let boot = boot_id(node, access, deadline).await?;
        start_upgrade(node, image, access, deadline).await?;
        wait_rebooted(node, &boot, access, deadline).await?;
        wait_for_version(node, target_tag, access, deadline).await?;
        wait_healthy(cluster, access, deadline).await?;
        tracing::info!(node = %node.name, version = target_tag, "node upgraded");
    }
    Ok(())
}

/// Sends the Upgrade. Talos refuses with plain errors (gRPC Unknown) for a bad image, an etcd
/// that cannot lose a member, or another upgrade under way (Talos:
/// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0) `Upgrade`,
/// internal/pkg/etcd/etcd.go `ValidateForUpgrade`); those that retrying cannot cure are told
/// apart by their text (see `TalosError::class`).
async fn start_upgrade(
    node: &ClusterNode,
    image: &str,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    const CHECK: &str = "the upgrade to be accepted";
    let waiting = pending(CHECK, node, String::new());
    poll_each(deadline, UPGRADE_ATTEMPT_TIMEOUT, waiting, || async {
        let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client.upgrade(image, true, false, false).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) if e.class() == ErrorClass::Final => Err(ClusterError::UpgradeRefused {
                node: node.name.clone(),
                ip: node.ip,
                message: e.describe(),
            }),
            Err(e) => Ok(Err(pending(CHECK, node, e.describe()))),
        }
    })
    .await
}

async fn wait_for_version(
    node: &ClusterNode,
    target_tag: &str,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let check = format!("the node to run Talos {target_tag}");
    poll(deadline, pending(&check, node, String::new()), || async {
        let last = match probe(node.ip, &access.talos, &access.connect).await {
            NodeState::Configured { talos_version } if talos_version == target_tag => {
                return Ok(Ok(()))
            }
            NodeState::Configured { talos_version } => format!("still runs {talos_version}"),
            NodeState::ForeignCluster => {
                return Err(ClusterError::ForeignNode {
                    node: node.name.clone(),
                    ip: node.ip,
                })
            }
            NodeState::Maintenance => "in maintenance mode".to_string(),
            NodeState::Unreachable { reason } => format!("rebooting: {reason}"),
        };
        Ok(Err(pending(&check, node, last)))
    })
    .await
}

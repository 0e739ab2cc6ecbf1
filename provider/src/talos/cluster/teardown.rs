//! Resetting machines (STATE and EPHEMERAL wiped) back to maintenance mode, so they can be
//! reused without leaving a ghost behind: every node when the cluster is destroyed, one node
//! at the end of its removal ([`super::remove`]).

use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;

use super::poll::{bounded, ATTEMPT_TIMEOUT, NODE_POLL};
use super::{ClusterError, ClusterNode};
use crate::talos::client::{probe, ConnectOptions, Credentials, NodeClient, NodeState};

/// How long a node may stay unreachable before a reset takes it for gone. A node in the middle
/// of an install or reboot (a create that failed half-way) comes back within this; a machine
/// whose VM was deleted never does.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(90);

/// How a node's reset ended (an error is returned when it answered but refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The node accepted the reset and is on its way back to maintenance mode.
    Reset,
    /// It already was in maintenance mode.
    AlreadyInMaintenance,
    /// It no longer accepts this cluster's CA: left alone.
    ForeignCluster,
    /// It did not answer for [`UNREACHABLE_GRACE`] (or until the deadline): taken for gone.
    Unreachable {
        /// The last answer seen.
        last: String,
    },
}

/// Resets nodes, all at once: gracefully (cordon, drain, leave etcd) for workers and for a
/// control plane that leaves a running cluster, not gracefully when the whole cluster goes
/// (there is no quorum left to leave). Only the Talos API is needed. Returns each node's
/// outcome, in node order.
pub async fn reset_nodes(
    nodes: &[ClusterNode],
    talos: &Credentials,
    connect: &ConnectOptions,
    whole_cluster: bool,
    deadline: Instant,
) -> Vec<(String, Result<ResetOutcome, ClusterError>)> {
    join_all(nodes.iter().map(|node| async move {
        let graceful = !whole_cluster || !node.is_control_plane();
        (
            node.name.clone(),
            reset_one(node, talos, connect, graceful, deadline).await,
        )
    }))
    .await
}

pub(super) async fn reset_one(
    node: &ClusterNode,
    talos: &Credentials,
    connect: &ConnectOptions,
    graceful: bool,
    deadline: Instant,
) -> Result<ResetOutcome, ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    let give_up = deadline.min(Instant::now() + UNREACHABLE_GRACE);
    loop {
        let attempt = bounded(deadline, async {
            match probe(node.ip, talos, connect).await {
                NodeState::Maintenance => Ok(Ok(ResetOutcome::AlreadyInMaintenance)),
                NodeState::ForeignCluster => {
                    tracing::warn!(node = %node.name, "node no longer accepts this cluster's CA; leaving it alone");
                    Ok(Ok(ResetOutcome::ForeignCluster))
                }
                NodeState::Unreachable { reason } => Err(reason),
                NodeState::Configured { .. } => {
                    let result = match NodeClient::connect(node.ip, talos, connect).await {
                        Ok(client) => client.reset(graceful, true).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(()) => {
                            tracing::info!(node = %node.name, graceful, "node reset");
                            Ok(Ok(ResetOutcome::Reset))
                        }
                        // It answers but refuses: keep trying, and fail at the deadline.
                        Err(e) => Ok(Err(e.describe())),
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|| Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())));
        match attempt {
            Ok(Ok(ResetOutcome::Reset)) => {
                wait_back_in_maintenance(node, talos, connect, deadline).await?;
                return Ok(ResetOutcome::Reset);
            }
            Ok(Ok(outcome)) => return Ok(outcome),
            Ok(Err(last)) => {
                if !pauses.sleep(None).await {
                    return Err(ClusterError::Timeout {
                        check: "the node to accept a reset".into(),
                        node: format!("{} ({})", node.name, node.ip),
                        last,
                    });
                }
            }
            Err(last) => {
                if !pauses.sleep_before(None, give_up).await {
                    // A machine that is gone (its VM deleted) has nothing left to reset.
                    tracing::warn!(node = %node.name, %last, "node does not answer; nothing to reset");
                    return Ok(ResetOutcome::Unreachable { last });
                }
            }
        }
    }
}

/// Waits for the observable end of a reset: Talos answers Reset at once and then cordons,
/// drains, leaves etcd, wipes and reboots, serving its old identity meanwhile (Talos:
/// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0) `Reset`,
/// v1alpha1_sequencer.go `Reset`). Reusing the machine before it is back in maintenance mode
/// would meet the old cluster's CA, or have the new config wiped by the reset. A machine that
/// stays silent for [`UNREACHABLE_GRACE`] after the reset (powered off meanwhile) has nothing
/// left to wait for.
async fn wait_back_in_maintenance(
    node: &ClusterNode,
    talos: &Credentials,
    connect: &ConnectOptions,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut pauses = NODE_POLL.until(deadline);
    let mut silent_since: Option<Instant> = None;
    loop {
        let last = match bounded(deadline, probe(node.ip, talos, connect)).await {
            Some(NodeState::Maintenance) => {
                tracing::info!(node = %node.name, "node is back in maintenance mode");
                return Ok(());
            }
            Some(NodeState::Unreachable { reason }) => {
                let since = *silent_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= UNREACHABLE_GRACE {
                    tracing::warn!(node = %node.name, %reason, "node did not come back after its reset");
                    return Ok(());
                }
                format!("rebooting: {reason}")
            }
            Some(NodeState::Configured { .. }) => {
                silent_since = None;
                "still runs its old configuration (cordoning, draining, leaving etcd)".to_string()
            }
            Some(NodeState::ForeignCluster) => {
                silent_since = None;
                "answers with another cluster's certificate".to_string()
            }
            None => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        if !pauses.sleep(None).await {
            return Err(ClusterError::Timeout {
                check: "the node to be back in maintenance mode after its reset".into(),
                node: format!("{} ({})", node.name, node.ip),
                last,
            });
        }
    }
}

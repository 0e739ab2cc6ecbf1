//! Telling that a node rebooted. Talos answers Reboot, Upgrade and an apply that needs a
//! reboot before the node goes down (the work runs after the reply: Talos:
//! internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)), and a node
//! keeps serving its old self while it cordons and drains. So the end of such a step is a new
//! boot id, as talosctl's tracker judges it (cmd/talosctl/pkg/talos/action/tracker.go
//! `BootIDChangedPostCheckFn`), never the request's answer.

use tokio::time::Instant;

use super::bring_up::pending;
use super::poll::{poll, Pending};
use super::{Access, ClusterError, ClusterNode};
use crate::talos::client::{ErrorClass, NodeClient, TalosError};

/// What a failed boot id read means to a wait for `check`: another cluster's node or a final
/// error ends it, anything else (rebooting, unreachable) is waited out.
pub(super) fn boot_id_failure(
    node: &ClusterNode,
    check: &str,
    e: TalosError,
) -> Result<Pending, ClusterError> {
    match e.class() {
        ErrorClass::ForeignCluster => Err(ClusterError::ForeignNode {
            node: node.name.clone(),
            ip: node.ip,
        }),
        ErrorClass::Final => Err(ClusterError::Talos {
            node: node.name.clone(),
            ip: node.ip,
            source: e,
        }),
        _ => Ok(pending(check, node, e.describe())),
    }
}

/// Waits until the node answers with our credentials under another boot id than `before`.
pub async fn wait_rebooted(
    node: &ClusterNode,
    before: &str,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    const CHECK: &str = "the node to reboot and come back";
    poll(deadline, pending(CHECK, node, String::new()), || async {
        let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client.boot_id().await,
            Err(e) => Err(e),
        };
        let last = match result {
            Ok(boot) if boot != before => {
                tracing::info!(node = %node.name, "the node is back from its reboot");
                return Ok(Ok(()));
            }
            Ok(_) => "still up, not rebooted yet (cordoning, draining or pulling)".to_string(),
            Err(e) if e.class() == ErrorClass::ForeignCluster => {
                return Err(ClusterError::ForeignNode {
                    node: node.name.clone(),
                    ip: node.ip,
                })
            }
            Err(e) => format!("rebooting: {}", e.describe()),
        };
        Ok(Err(pending(CHECK, node, last)))
    })
    .await
}

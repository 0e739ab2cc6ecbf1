//! From booted machines to a bootstrapped cluster: apply configs, wait for the reboot into
//! mutual TLS, bootstrap etcd on exactly one control plane.

use futures::future::try_join_all;
use tokio::time::Instant;

use super::poll::Backoff;
use super::{Access, ClusterError, ClusterNode};
use crate::talos::client::{probe, ApplyMode, BootstrapOutcome, ErrorClass, NodeClient, NodeState};

/// Applies each node's config, all nodes at once. A node in maintenance mode gets it over the
/// insecure channel; a node already running this cluster's CA (a retry after a partial apply)
/// gets it over mTLS; a node of another cluster is an error; a node that does not answer yet
/// (still booting) is waited for until `deadline`.
pub async fn apply_configs(nodes: &[ClusterNode], access: &Access, deadline: Instant) -> Result<(), ClusterError> {
    try_join_all(nodes.iter().map(|node| apply_one(node, access, deadline))).await?;
    Ok(())
}

async fn apply_one(node: &ClusterNode, access: &Access, deadline: Instant) -> Result<(), ClusterError> {
    let mut backoff = Backoff::new();
    let mut last;
    loop {
        let state = probe(node.ip, &access.talos, &access.connect).await;
        let attempt = match &state {
            NodeState::Maintenance => match NodeClient::connect_insecure(node.ip, &access.connect).await {
                Ok(client) => client.apply_configuration(node.config.as_bytes(), ApplyMode::Auto, false).await.map(|_| ()),
                Err(e) => Err(e),
            },
            NodeState::Configured { .. } => match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
                Ok(client) => client.apply_configuration(node.config.as_bytes(), ApplyMode::Auto, false).await.map(|_| ()),
                Err(e) => Err(e),
            },
            NodeState::ForeignCluster => {
                return Err(ClusterError::ForeignNode { node: node.name.clone(), ip: node.ip });
            }
            NodeState::Unreachable { reason } => {
                last = format!("unreachable: {reason}");
                if !backoff.wait(deadline).await {
                    return Err(timeout("the node to answer in maintenance mode", node, last));
                }
                continue;
            }
        };
        match attempt {
            Ok(()) => {
                tracing::info!(node = %node.name, ip = %node.ip, "machine configuration applied");
                return Ok(());
            }
            Err(e) if e.class() == ErrorClass::Final => {
                return Err(ClusterError::Rejected { node: node.name.clone(), ip: node.ip, message: e.describe() });
            }
            Err(e) => last = e.describe(),
        }
        if !backoff.wait(deadline).await {
            return Err(timeout("the machine configuration to be accepted", node, last));
        }
    }
}

/// Waits until every node answers over mTLS with this cluster's credentials (it installed,
/// rebooted and runs its config).
pub async fn wait_configured(nodes: &[ClusterNode], access: &Access, deadline: Instant) -> Result<(), ClusterError> {
    try_join_all(nodes.iter().map(|node| async move {
        let mut backoff = Backoff::new();
        loop {
            let last = match probe(node.ip, &access.talos, &access.connect).await {
                NodeState::Configured { .. } => return Ok(()),
                NodeState::ForeignCluster => return Err(ClusterError::ForeignNode { node: node.name.clone(), ip: node.ip }),
                NodeState::Maintenance => "still in maintenance mode".to_string(),
                NodeState::Unreachable { reason } => format!("unreachable (installing or rebooting?): {reason}"),
            };
            if !backoff.wait(deadline).await {
                return Err(timeout("the node to come back configured after install", node, last));
            }
        }
    }))
    .await?;
    Ok(())
}

/// Bootstraps etcd on `node` (a control plane). `AlreadyExists` counts as done: a bootstrap
/// whose result was lost must not fail the next apply. "Not available yet" is waited out.
pub async fn bootstrap(node: &ClusterNode, access: &Access, deadline: Instant) -> Result<(), ClusterError> {
    let mut backoff = Backoff::new();
    loop {
        let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client.bootstrap().await,
            Err(e) => Err(e),
        };
        let last = match result {
            Ok(BootstrapOutcome::Bootstrapped) => {
                tracing::info!(node = %node.name, "etcd bootstrapped");
                return Ok(());
            }
            Ok(BootstrapOutcome::AlreadyBootstrapped) => return Ok(()),
            Err(e) if e.class() == ErrorClass::Final => {
                return Err(ClusterError::Talos { node: node.name.clone(), ip: node.ip, source: e })
            }
            Err(e) => e.describe(),
        };
        if !backoff.wait(deadline).await {
            return Err(timeout("etcd bootstrap to be accepted", node, last));
        }
    }
}

pub(super) fn timeout(check: &str, node: &ClusterNode, last: String) -> ClusterError {
    ClusterError::Timeout { check: check.to_string(), node: format!("{} ({})", node.name, node.ip), last }
}

//! From booted machines to a bootstrapped cluster: apply configs, wait for the reboot into
//! mutual TLS, bootstrap etcd on exactly one control plane.

use futures::future::join_all;
use tokio::time::Instant;

use super::execute::Applied;
use super::poll::{poll, Pending};
use super::{Access, ClusterError, ClusterNode};
use crate::talos::client::{probe, ApplyMode, BootstrapOutcome, ErrorClass, NodeClient, NodeState};

/// Applies each node's config, all nodes at once. A node in maintenance mode gets it over the
/// insecure channel; a node already running this cluster's CA (a retry after a partial apply)
/// gets it over mTLS; a node of another cluster is an error; a node that does not answer yet
/// (still booting) is waited for until `deadline`.
///
/// Every node's apply runs to its end even when another one failed, so that no call is cut off
/// after the node got the config: the nodes are in a state the next apply (or a reset) knows.
/// The first error (in node order) is returned.
pub async fn apply_configs(
    nodes: &[ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let results = join_all(nodes.iter().map(|node| apply_one(node, access, deadline))).await;
    results.into_iter().collect()
}

/// Before anything is applied to any node: every node that answers in maintenance mode now and
/// runs an older release line that cannot run the cluster's Kubernetes (see
/// [`ClusterNode::unfit_for`]) fails the apply, the first in node order. Each node is asked
/// once, without waiting: a node that does not answer yet (still booting, or a replacement
/// waiting for its address) is checked again when it answers, before it is given its config.
pub async fn check_maintenance_releases(
    nodes: &[ClusterNode],
    access: &Access,
) -> Result<(), ClusterError> {
    let checks = nodes
        .iter()
        .filter(|n| !n.unfit.is_empty())
        .map(|node| async move {
            if probe(node.ip, &access.talos, &access.connect).await != NodeState::Maintenance {
                return Ok(());
            }
            let Ok(client) = NodeClient::connect_insecure(node.ip, &access.connect).await else {
                return Ok(());
            };
            let Ok(release) = client.release().await else {
                return Ok(());
            };
            unfit(node, release).map_or(Ok(()), Err)
        });
    join_all(checks).await.into_iter().collect()
}

/// The refusal of a node that runs `release` and cannot run the cluster's Kubernetes.
fn unfit(node: &ClusterNode, release: String) -> Option<ClusterError> {
    let reason = node.unfit_for(&release)?.to_string();
    Some(ClusterError::ReleaseCannotRunKubernetes {
        node: node.name.clone(),
        ip: node.ip,
        release,
        reason,
    })
}

/// What a wait on `node` still waits for.
pub(super) fn pending(check: &str, node: &ClusterNode, last: String) -> Pending {
    Pending {
        check: check.to_string(),
        node: format!("{} ({})", node.name, node.ip),
        last,
    }
}

const ANSWER_IN_MAINTENANCE: &str = "the node to answer in maintenance mode";
const CONFIG_ACCEPTED: &str = "the machine configuration to be accepted";

async fn apply_one(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    poll(deadline, pending(ANSWER_IN_MAINTENANCE, node, String::new()), || async {
        let state = probe(node.ip, &access.talos, &access.connect).await;
        let attempt = match &state {
            // A node booted from an older template gets the documents its release knows. Its
            // release comes from the COSI `version` resource: `Version` is Admin-only in
            // maintenance mode up to v1.12 (see `NodeClient::release`).
            NodeState::Maintenance => match NodeClient::connect_insecure(node.ip, &access.connect).await {
                Ok(client) => match client.release().await {
                    Ok(release) => {
                        if let Some(refusal) = unfit(node, release.clone()) {
                            return Err(refusal);
                        }
                        let config = node.config_for(&release);
                        if config != node.config {
                            tracing::info!(node = %node.name, release, "configuration in the documents of the node's release");
                        }
                        client.apply_configuration(config.as_bytes(), ApplyMode::Auto, false).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                },
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
                return Ok(Err(pending(ANSWER_IN_MAINTENANCE, node, format!("unreachable: {reason}"))));
            }
        };
        match attempt {
            Ok(()) => {
                tracing::info!(node = %node.name, ip = %node.ip, "machine configuration applied");
                Ok(Ok(()))
            }
            Err(e) if e.class() == ErrorClass::Final => {
                Err(ClusterError::Rejected { node: node.name.clone(), ip: node.ip, message: e.describe() })
            }
            Err(e) => Ok(Err(pending(CONFIG_ACCEPTED, node, e.describe()))),
        }
    })
    .await
}

/// Waits until every node answers over mTLS with this cluster's credentials (it installed,
/// rebooted and runs its config).
pub async fn wait_configured(
    nodes: &[ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    const CHECK: &str = "the node to come back configured after install";
    let results = join_all(nodes.iter().map(|node| {
        poll(
            deadline,
            pending(CHECK, node, String::new()),
            move || async move {
                let last = match probe(node.ip, &access.talos, &access.connect).await {
                    NodeState::Configured { .. } => return Ok(Ok(())),
                    NodeState::ForeignCluster => {
                        return Err(ClusterError::ForeignNode {
                            node: node.name.clone(),
                            ip: node.ip,
                        })
                    }
                    NodeState::Maintenance => "still in maintenance mode".to_string(),
                    NodeState::Unreachable { reason } => {
                        format!("unreachable (installing or rebooting?): {reason}")
                    }
                };
                Ok(Err(pending(CHECK, node, last)))
            },
        )
    }))
    .await;
    results.into_iter().collect()
}

/// Bootstraps etcd on `node` (a control plane). `AlreadyExists` counts as done: a bootstrap
/// whose result was lost must not fail the next apply. "Not available yet" is waited out.
pub async fn bootstrap(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    const CHECK: &str = "etcd bootstrap to be accepted";
    poll(deadline, pending(CHECK, node, String::new()), || async {
        let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client.bootstrap().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(BootstrapOutcome::Bootstrapped) => {
                tracing::info!(node = %node.name, "etcd bootstrapped");
                Ok(Ok(()))
            }
            Ok(BootstrapOutcome::AlreadyBootstrapped) => Ok(Ok(())),
            Err(e) if e.class() == ErrorClass::Final => Err(ClusterError::Talos {
                node: node.name.clone(),
                ip: node.ip,
                source: e,
            }),
            Err(e) => Ok(Err(pending(CHECK, node, e.describe()))),
        }
    })
    .await
}

/// Applies a changed config to a node that runs this cluster's config (AUTO, as talosctl
/// does) and says whether Talos reboots it for that: AUTO takes a change in place only when
/// it stays inside `CanApplyImmediate`'s allowlist, and otherwise answers REBOOT, "Applied
/// configuration with a reboot", then reboots after the reply (Talos:
/// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)
/// `ApplyConfiguration`).
pub async fn apply_running(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<Applied, ClusterError> {
    let boot = super::reboot::boot_id(node, access, deadline).await?;
    poll(deadline, pending(CONFIG_ACCEPTED, node, String::new()), || async {
        let result = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client.apply_configuration(node.config.as_bytes(), ApplyMode::Auto, false).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(reply) => {
                let reboots = reply.mode == ApplyMode::Reboot as i32 || reply.mode_details.contains("with a reboot");
                tracing::info!(node = %node.name, ip = %node.ip, details = %reply.mode_details, "machine configuration applied");
                Ok(Ok(if reboots { Applied::Rebooting { boot: boot.clone() } } else { Applied::InPlace }))
            }
            Err(e) if e.class() == ErrorClass::ForeignCluster => {
                Err(ClusterError::ForeignNode { node: node.name.clone(), ip: node.ip })
            }
            Err(e) if e.class() == ErrorClass::Final => {
                Err(ClusterError::Rejected { node: node.name.clone(), ip: node.ip, message: e.describe() })
            }
            Err(e) => Ok(Err(pending(CONFIG_ACCEPTED, node, e.describe()))),
        }
    })
    .await
}

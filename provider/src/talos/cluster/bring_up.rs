//! From booted machines to a bootstrapped cluster: apply configs, wait for the reboot into
//! mutual TLS, bootstrap etcd on exactly one control plane.

use futures::future::join_all;
use tokio::time::Instant;

use super::execute::Applied;
use super::poll::{poll, Pending};
use super::{Access, ClusterError, ClusterNode};
use crate::talos::client::{
    probe, ApplyMode, BootstrapOutcome, ErrorClass, NodeClient, NodeState, TalosError,
};

/// Applies each node's config, all nodes at once. A node in maintenance mode gets it over the
/// insecure channel; a node already running this cluster's CA (a retry after a partial apply,
/// perhaps with an older version of its config) gets it over mTLS as any running node does,
/// and a reboot that asks for is over before this returns; a node of another cluster is an
/// error; a node that does not answer yet (still booting) is waited for until `deadline`.
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

/// How a node took its first config of this apply.
enum Taken {
    /// Applied in maintenance mode: it installs and reboots.
    Installing,
    /// It runs this cluster's config already.
    Configured,
}

async fn apply_one(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let taken = poll(deadline, pending(ANSWER_IN_MAINTENANCE, node, String::new()), || async {
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
            NodeState::Configured { .. } => return Ok(Ok(Taken::Configured)),
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
                Ok(Ok(Taken::Installing))
            }
            // Over the insecure channel, only a refusal is final.
            Err(e) if e.class() == ErrorClass::Final => {
                Err(ClusterError::Rejected { node: node.name.clone(), ip: node.ip, message: e.describe() })
            }
            Err(e) => Ok(Err(pending(CONFIG_ACCEPTED, node, e.describe()))),
        }
    })
    .await?;
    if let Taken::Configured = taken {
        // A run that was killed or failed configured it, with the config of that run: the
        // configuration may have changed since (a patch). Talos takes the current one in place
        // or reboots for it; a Bootstrap asked while it drains would be lost in that reboot,
        // so the reboot is over before this node counts as configured.
        if let Applied::Rebooting { boot } = apply_running(node, access, deadline).await? {
            tracing::info!(node = %node.name, "the node reboots to take its current configuration");
            super::reboot::wait_rebooted(node, &boot, access, deadline).await?;
        }
    }
    Ok(())
}

/// What a failed ApplyConfiguration means: another cluster's node or a refusal ends the apply,
/// anything else is waited out.
fn apply_failed<T>(node: &ClusterNode, e: TalosError) -> Result<Result<T, Pending>, ClusterError> {
    match e.class() {
        ErrorClass::ForeignCluster => Err(ClusterError::ForeignNode {
            node: node.name.clone(),
            ip: node.ip,
        }),
        ErrorClass::Final => Err(ClusterError::Rejected {
            node: node.name.clone(),
            ip: node.ip,
            message: e.describe(),
        }),
        ErrorClass::Retryable => Ok(Err(pending(CONFIG_ACCEPTED, node, e.describe()))),
    }
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
///
/// Talos keeps an accepted Bootstrap in memory until etcd has written its data (Talos:
/// internal/app/machined/pkg/system/services/etcd.go (v1.12.0) `BootstrapEtcd` loads an
/// `Etcd{Bootstrap: true}` service): a node that loses power in between comes back waiting to
/// be bootstrapped. So the bootstrap is done once etcd is healthy on the node; a node that
/// rebooted first is asked again, and its answer tells whether etcd had written its data
/// (`AlreadyExists`). Only this node is ever asked: a second control plane would start a second
/// etcd cluster.
pub async fn bootstrap(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    loop {
        let (outcome, boot) = ask_bootstrap(node, access, deadline).await?;
        if outcome == BootstrapOutcome::AlreadyBootstrapped {
            return Ok(());
        }
        tracing::info!(node = %node.name, "etcd bootstrapped");
        if etcd_took_the_bootstrap(node, &boot, access, deadline).await? {
            return Ok(());
        }
        tracing::warn!(node = %node.name, "the node rebooted before etcd was healthy (power lost?): asking it to bootstrap again");
    }
}

/// What a failed call of the bootstrap means: a final error ends it, anything else is waited
/// out. That includes a certificate our CA did not sign: a control plane whose config was just
/// applied in maintenance mode serves that mode's self-signed certificate until it reboots.
fn not_yet(node: &ClusterNode, check: &str, e: TalosError) -> Result<Pending, ClusterError> {
    match e.class() {
        ErrorClass::Final => Err(ClusterError::Talos {
            node: node.name.clone(),
            ip: node.ip,
            source: e,
        }),
        _ => Ok(pending(check, node, e.describe())),
    }
}

/// The Bootstrap call, with the boot id the node had when it answered.
async fn ask_bootstrap(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<(BootstrapOutcome, String), ClusterError> {
    const CHECK: &str = "etcd bootstrap to be accepted";
    poll(deadline, pending(CHECK, node, String::new()), || async {
        let client = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(not_yet(node, CHECK, e)?)),
        };
        let boot = match client.boot_id().await {
            Ok(boot) => boot,
            Err(e) => return Ok(Err(not_yet(node, CHECK, e)?)),
        };
        match client.bootstrap().await {
            Ok(outcome) => Ok(Ok((outcome, boot))),
            Err(e) => Ok(Err(not_yet(node, CHECK, e)?)),
        }
    })
    .await
}

/// Waits until etcd is healthy on a node that accepted a Bootstrap under boot id `boot`
/// (`true`), or the node booted again meanwhile (`false`).
async fn etcd_took_the_bootstrap(
    node: &ClusterNode,
    boot: &str,
    access: &Access,
    deadline: Instant,
) -> Result<bool, ClusterError> {
    const CHECK: &str = "etcd to be healthy after its bootstrap";
    poll(deadline, pending(CHECK, node, String::new()), || async {
        let client = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(not_yet(node, CHECK, e)?)),
        };
        match client.boot_id().await {
            Ok(now) if now != boot => return Ok(Ok(false)),
            Ok(_) => {}
            Err(e) => return Ok(Err(not_yet(node, CHECK, e)?)),
        }
        let last = match client.service_list().await {
            Ok(services) => match services.iter().find(|s| s.id == "etcd") {
                Some(etcd) if etcd.health.as_ref().is_some_and(|h| h.healthy) => {
                    return Ok(Ok(true))
                }
                Some(etcd) => format!("etcd {}", etcd.state),
                None => "etcd is not listed".to_string(),
            },
            Err(e) => e.describe(),
        };
        Ok(Err(pending(CHECK, node, last)))
    })
    .await
}

/// Applies a changed config to a node that runs this cluster's config (AUTO, as talosctl
/// does) and says whether Talos reboots it for that: AUTO takes a change in place only when
/// it stays inside `CanApplyImmediate`'s allowlist, and otherwise answers REBOOT, "Applied
/// configuration with a reboot", then reboots after the reply (Talos:
/// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)
/// `ApplyConfiguration`).
///
/// The boot id the reboot is told by is read in the same attempt, just before the apply: a
/// node that lost power between two attempts (or before the first) comes back under another
/// boot id, and one read earlier would take that boot for the reboot this apply asks for.
pub async fn apply_running(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<Applied, ClusterError> {
    poll(deadline, pending(CONFIG_ACCEPTED, node, String::new()), || async {
        let client = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client,
            Err(e) => return apply_failed(node, e),
        };
        let boot = match client.boot_id().await {
            Ok(boot) => boot,
            Err(e) => return super::reboot::boot_id_failure(node, CONFIG_ACCEPTED, e).map(Err),
        };
        match client.apply_configuration(node.config.as_bytes(), ApplyMode::Auto, false).await {
            Ok(reply) => {
                let reboots = reply.mode == ApplyMode::Reboot as i32 || reply.mode_details.contains("with a reboot");
                tracing::info!(node = %node.name, ip = %node.ip, details = %reply.mode_details, "machine configuration applied");
                Ok(Ok(if reboots { Applied::Rebooting { boot } } else { Applied::InPlace }))
            }
            Err(e) => apply_failed(node, e),
        }
    })
    .await
}

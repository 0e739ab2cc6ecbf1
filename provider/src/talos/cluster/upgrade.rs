//! Rolling Talos upgrades: one node at a time, control planes first, each back from its
//! reboot on the new release and the cluster healthy again before the next, so etcd never
//! loses quorum.

use tokio::time::Instant;

use super::bring_up::{apply_running, pending};
use super::execute::Applied;
use super::poll::{poll, poll_each, UPGRADE_ATTEMPT_TIMEOUT};
use super::reboot::{boot_id_failure, wait_rebooted};
use super::{wait_healthy, Access, ClusterError, ClusterNode, Extensions};
use crate::talos::client::{probe, ErrorClass, NodeClient, NodeState};
use crate::talos::config::{check_upgrade_from, TalosVersion};
use crate::talos::proto::machine::EtcdMember;

/// What an upgrade brings nodes to.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The installer image.
    pub image: &'a str,
    /// The release tag the nodes must report after it.
    pub tag: &'a str,
    /// The extensions (and schematic) the nodes must run after it, when known.
    pub extensions: Option<&'a Extensions>,
}

/// Upgrades each of `nodes` that does not yet report the target's release and extensions to
/// the installer image (each of them when `reinstall`: a new image castle cannot tell apart by
/// what nodes report, e.g. another `install_image`). `cluster` is the whole cluster, for the
/// health checks between nodes.
///
/// A node is done when it is back under a new boot id (an Upgrade answers before the node
/// cordons, drains and reboots, and a reinstall keeps the release tag, so the tag alone would
/// pass at once) and reports the target release. A node that ran an older release line may
/// run the config of that line's contract (what it accepted in maintenance mode, see
/// [`ClusterNode::config_for`]): it then gets its own config again, and a reboot that asks for
/// is waited for, before the health check.
pub async fn upgrade_nodes(
    cluster: &[ClusterNode],
    nodes: &[ClusterNode],
    target: &Target<'_>,
    reinstall: bool,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut order: Vec<&ClusterNode> = nodes.iter().collect();
    order.sort_by_key(|n| (!n.is_control_plane(), n.name.clone()));
    for node in order {
        let release = match probe(node.ip, &access.talos, &access.connect).await {
            NodeState::Configured { talos_version } => Some(talos_version),
            _ => None,
        };
        if !reinstall && on_target(node, release.as_deref(), target, access).await {
            continue;
        }
        // The installer refuses a node too old for it only after the call answered and the
        // node drained (see `check_upgrade_from`): refuse first.
        let target_line = TalosVersion::parse(target.tag).map(|v| v.minor);
        if let (Some(release), Ok(line)) = (&release, target_line) {
            if let Err(reason) = check_upgrade_from(release, line) {
                return Err(ClusterError::UpgradeRefused {
                    node: node.name.clone(),
                    ip: node.ip,
                    message: reason,
                });
            }
        }
        let mut sent_again = false;
        loop {
            let boot = start_upgrade(node, target.image, access, deadline).await?;
            wait_rebooted(node, &boot, access, deadline).await?;
            const BACK: &str = "the node to answer after its upgrade";
            let back = wait_release(node, BACK, |_| true, access, deadline).await?;
            // Talos writes the installer after the drain, just before the reboot (Talos:
            // internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go (v1.12.0)
            // `Upgrade`): a node that lost power while it drained boots its old release. It
            // is asked once more; a second time, the wait below names it.
            if !sent_again && back != target.tag && Some(&back) == release.as_ref() {
                tracing::warn!(node = %node.name, release = %back, "the node came back on its old release: the upgrade was lost before it was written (power lost while it drained?); upgrading it again");
                sent_again = true;
                continue;
            }
            break;
        }
        let check = format!("the node to run Talos {}", target.tag);
        wait_release(node, &check, |r| r == target.tag, access, deadline).await?;
        if release.is_some_and(|r| node.ran_earlier_contract(&r)) {
            tracing::info!(node = %node.name, "configuration in the documents of talos_version");
            if let Applied::Rebooting { boot } = apply_running(node, access, deadline).await? {
                wait_rebooted(node, &boot, access, deadline).await?;
            }
        }
        wait_healthy(cluster, access, deadline).await?;
        tracing::info!(node = %node.name, version = target.tag, image = target.image, "node upgraded");
    }
    Ok(())
}

/// Whether the node, which reports `release`, already runs the target release and extensions.
async fn on_target(
    node: &ClusterNode,
    release: Option<&str>,
    target: &Target<'_>,
    access: &Access,
) -> bool {
    if release != Some(target.tag) {
        return false;
    }
    match target.extensions {
        None => true,
        Some(wanted) => super::node_extensions(node, access)
            .await
            .is_some_and(|reported| reported.runs(wanted)),
    }
}

/// Sends the Upgrade and answers the boot id the node had just before it, read in the same
/// attempt (a node that lost power between two attempts comes back under another boot id,
/// which must not pass for the upgrade's reboot). Talos refuses with plain errors (gRPC
/// Unknown) for a bad image, an etcd that cannot lose a member, or another upgrade under way
/// (Talos: internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)
/// `Upgrade`, internal/pkg/etcd/etcd.go `ValidateForUpgrade`); those that retrying cannot cure
/// are told apart by their text (see `TalosError::class`).
async fn start_upgrade(
    node: &ClusterNode,
    image: &str,
    access: &Access,
    deadline: Instant,
) -> Result<String, ClusterError> {
    const CHECK: &str = "the upgrade to be accepted";
    let waiting = pending(CHECK, node, String::new());
    poll_each(deadline, UPGRADE_ATTEMPT_TIMEOUT, waiting, || async {
        let client = match NodeClient::connect(node.ip, &access.talos, &access.connect).await {
            Ok(client) => client,
            Err(e) => return Ok(Err(pending(CHECK, node, e.describe()))),
        };
        let boot = match client.boot_id().await {
            Ok(boot) => boot,
            Err(e) => return boot_id_failure(node, CHECK, e).map(Err),
        };
        match client.upgrade(image, true, false, false).await {
            Ok(_) => Ok(Ok(boot)),
            Err(e) if e.class() == ErrorClass::Final => {
                let mut message = e.describe();
                // Talos names an etcd member by its ID: say which node that is.
                if message.contains("etcd member ") {
                    if let Ok(members) = client.etcd_member_list().await {
                        message = name_members(&message, &members);
                    }
                }
                Err(ClusterError::UpgradeRefused {
                    node: node.name.clone(),
                    ip: node.ip,
                    message,
                })
            }
            Err(e) => Ok(Err(pending(CHECK, node, e.describe()))),
        }
    })
    .await
}

/// The release a node reports once it answers with our credentials again and `accept` takes
/// that release; until then the wait says what the node last answered.
async fn wait_release(
    node: &ClusterNode,
    check: &str,
    accept: impl Fn(&str) -> bool,
    access: &Access,
    deadline: Instant,
) -> Result<String, ClusterError> {
    poll(deadline, pending(check, node, String::new()), || async {
        let last = match probe(node.ip, &access.talos, &access.connect).await {
            NodeState::Configured { talos_version } if accept(&talos_version) => {
                return Ok(Ok(talos_version))
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
        Ok(Err(pending(check, node, last)))
    })
    .await
}

/// `message` with each etcd member ID it quotes (`etcd member 0123456789abcdef`, as Talos
/// prints them) followed by that member's name.
fn name_members(message: &str, members: &[EtcdMember]) -> String {
    let mut out = message.to_string();
    for member in members {
        let id = format!("etcd member {:016x}", member.id);
        if out.contains(&id) && !member.hostname.is_empty() {
            out = out.replace(&id, &format!("{id} ({})", member.hostname));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_member_talos_names_by_id_is_named_by_its_node() {
        let members = vec![EtcdMember {
            id: 0xab,
            hostname: "cp-3".into(),
            ..Default::default()
        }];
        let message =
            "error validating etcd for upgrade: etcd member 00000000000000ab is not healthy";
        assert_eq!(
            name_members(message, &members),
            "error validating etcd for upgrade: etcd member 00000000000000ab (cp-3) is not healthy"
        );
    }
}

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
/// pass at once) and reports the target release. A node that comes back on what it ran
/// before lost the upgrade to a power cut while it drained ([`lost_in_drain`]): it is asked
/// once more, in the same apply. A node that ran an older release line may
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
        let before = match &release {
            Some(release) => Some(installed(node, release.clone(), target, access).await),
            None => None,
        };
        if !reinstall && before.as_ref().is_some_and(|b| target.reached_by(b)) {
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
            let back = wait_configured_release(node, access, deadline).await?;
            let back = installed(node, back, target, access).await;
            if !sent_again && lost_in_drain(before.as_ref(), &back, target) {
                tracing::warn!(node = %node.name, release = %back.release, "the node came back on its old install: the upgrade was lost before it was written (power lost while it drained?); upgrading it again");
                sent_again = true;
                continue;
            }
            if !target.reached_by(&back) && back.release == target.tag {
                tracing::warn!(node = %node.name, "the node came back without the configured extensions; the next apply installs them again");
            }
            break;
        }
        wait_for_version(node, target.tag, access, deadline).await?;
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

/// What a node runs, as far as an upgrade can tell: its release, and its extensions when the
/// target names them (read only then: a node that does not answer them counts as unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    release: String,
    extensions: Option<Extensions>,
}

impl Target<'_> {
    /// Whether a node that runs `installed` is on the target's release and extensions.
    fn reached_by(&self, installed: &Installed) -> bool {
        installed.release == self.tag
            && match self.extensions {
                None => true,
                Some(wanted) => installed
                    .extensions
                    .as_ref()
                    .is_some_and(|e| e.runs(wanted)),
            }
    }
}

/// What the node, which reports `release`, runs.
async fn installed(
    node: &ClusterNode,
    release: String,
    target: &Target<'_>,
    access: &Access,
) -> Installed {
    let extensions = match target.extensions {
        Some(_) => super::node_extensions(node, access).await,
        None => None,
    };
    Installed {
        release,
        extensions,
    }
}

/// Whether a node back from the reboot its Upgrade asked for lost that upgrade: Talos writes
/// the installer after the drain, just before the reboot (Talos:
/// internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go (v1.12.0) `Upgrade`:
/// `drain`, `cleanup`, `stopServices`, ..., then `upgrade`), so a node that lost power while it
/// drained boots what it ran `before`: its old release, or for a reinstall on the same release
/// its old extensions (schematic). A node that comes back on the target, or on anything else
/// than before, did not lose it. A reinstall castle cannot tell by what nodes report (another
/// `install_image` of the same release) never counts as lost. Extensions a node did not answer
/// are not compared: the release alone tells a lost version upgrade.
fn lost_in_drain(before: Option<&Installed>, back: &Installed, target: &Target<'_>) -> bool {
    let Some(before) = before else {
        return false;
    };
    let same_extensions = match (&before.extensions, &back.extensions) {
        (Some(before), Some(back)) => before == back,
        _ => true,
    };
    !target.reached_by(back) && before.release == back.release && same_extensions
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

/// The release a node reports once it answers with our credentials again.
async fn wait_configured_release(
    node: &ClusterNode,
    access: &Access,
    deadline: Instant,
) -> Result<String, ClusterError> {
    const CHECK: &str = "the node to answer after its upgrade";
    poll(deadline, pending(CHECK, node, String::new()), || async {
        let last = match probe(node.ip, &access.talos, &access.connect).await {
            NodeState::Configured { talos_version } => return Ok(Ok(talos_version)),
            NodeState::ForeignCluster => {
                return Err(ClusterError::ForeignNode {
                    node: node.name.clone(),
                    ip: node.ip,
                })
            }
            NodeState::Maintenance => "in maintenance mode".to_string(),
            NodeState::Unreachable { reason } => format!("rebooting: {reason}"),
        };
        Ok(Err(pending(CHECK, node, last)))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(release: &str, schematic: Option<&str>) -> Installed {
        Installed {
            release: release.into(),
            extensions: schematic.map(|id| Extensions {
                names: vec!["iscsi-tools".into()],
                schematic: Some(id.into()),
            }),
        }
    }

    #[test]
    fn a_node_back_on_what_it_ran_before_lost_its_upgrade_and_is_sent_it_again() {
        let wanted = Extensions {
            names: vec!["iscsi-tools".into()],
            schematic: Some("new".into()),
        };
        // A version upgrade: back on the old release.
        let upgrade = Target {
            image: "factory/installer/new:v1.13.0",
            tag: "v1.13.0",
            extensions: Some(&wanted),
        };
        let before = runs("v1.12.0", Some("old"));
        assert!(lost_in_drain(Some(&before), &before, &upgrade));
        // Its extensions not read after the reboot: the release tells.
        assert!(lost_in_drain(
            Some(&before),
            &runs("v1.12.0", None),
            &upgrade
        ));
        assert!(!lost_in_drain(
            Some(&before),
            &runs("v1.13.0", Some("new")),
            &upgrade
        ));
        // A reinstall on the same release (other extensions): back on the old schematic.
        let reinstall = Target {
            tag: "v1.12.0",
            ..upgrade
        };
        assert!(lost_in_drain(Some(&before), &before, &reinstall));
        assert!(!lost_in_drain(
            Some(&before),
            &runs("v1.12.0", Some("new")),
            &reinstall
        ));
        // Back on something else than before or the target: not a lost upgrade.
        assert!(!lost_in_drain(
            Some(&before),
            &runs("v1.12.0", Some("third")),
            &reinstall
        ));
        // What the node ran before is unknown: nothing to compare with.
        assert!(!lost_in_drain(None, &before, &reinstall));
        // Another `install_image` of the same release: nothing tells, never sent again.
        let image = Target {
            image: "registry.home/installer:v1.12.0",
            tag: "v1.12.0",
            extensions: None,
        };
        assert!(!lost_in_drain(
            Some(&runs("v1.12.0", None)),
            &runs("v1.12.0", None),
            &image
        ));
    }

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

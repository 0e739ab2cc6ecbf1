//! What an apply does to a cluster, decided from what the cluster had and what it should be,
//! without touching a node: the steps and their order. The executor ([`super::execute`]) runs
//! them; plan time reads them to say what apply will do.
//!
//! The order follows what `talosctl` and the Talos Terraform provider do: apply every new
//! machine's config, bootstrap etcd on one control plane, and only then wait for the nodes. A
//! worker gets its API certificate from trustd through the control-plane endpoint (Talos:
//! `internal/app/machined/pkg/controllers/secrets/api.go` (v1.12.0) and
//! `controllers/k8s/static_endpoint.go`), and a VIP endpoint answers only once etcd runs
//! (`controllers/network/operator/vip.go`), so waiting for workers before the bootstrap hangs.

use std::collections::{BTreeMap, BTreeSet};

use super::{ClusterNode, Replacement};
use crate::talos::config::{component_tag, Component};

/// What tells one machine from another behind a node name: its VM and its NIC's MAC, when
/// the configuration gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// The VM's id (`node/vmid` for Proxmox).
    pub vm: Option<String>,
    /// The MAC address of the NIC that carries the node's address.
    pub mac: Option<String>,
}

impl Machine {
    /// Whether `other` is another machine: another VM, or another MAC, where both are known.
    fn differs(&self, other: &Machine) -> bool {
        let vm = matches!((&self.vm, &other.vm), (Some(a), Some(b)) if a != b);
        let mac =
            matches!((&self.mac, &other.mac), (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b));
        vm || mac
    }
}

/// What the cluster had before this apply.
#[derive(Debug, Clone, Default)]
pub struct Current {
    /// The nodes of the previous configuration (their configs are not needed).
    pub nodes: Vec<ClusterNode>,
    /// The config last applied to each node, by name. A node missing here runs none of ours
    /// (new, or found back in maintenance mode).
    pub applied: BTreeMap<String, String>,
    /// The Talos release each node last reported, by name.
    pub versions: BTreeMap<String, String>,
    /// The system extensions each node last reported (and its image's schematic), by name. A
    /// node missing here has not reported any yet.
    pub extensions: BTreeMap<String, Extensions>,
    /// The installer image of the previous configuration.
    pub image: Option<String>,
    /// The machine behind each node, by name.
    pub machines: BTreeMap<String, Machine>,
    /// Control planes that did not answer when castle looked (only asked when control planes
    /// leave or get a new machine): their etcd members count as lost.
    pub unreachable: BTreeSet<String>,
}

/// What the cluster should be.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Every node with its config, control planes first.
    pub nodes: Vec<ClusterNode>,
    /// The installer image (release and system extensions).
    pub image: String,
    /// The release tag the nodes should report, e.g. `v1.12.0`.
    pub target: String,
    /// The Kubernetes release the nodes should run, e.g. `v1.35.0`.
    pub kubernetes: String,
    /// The CoreDNS image Talos renders for the release (its bootstrap manifest).
    pub coredns_image: String,
    /// The flannel image Talos renders for the release (its bootstrap manifest).
    pub flannel_image: String,
    /// The system extensions the nodes should report and the schematic of the installer;
    /// `None` when castle cannot know them (a custom `install_image`).
    pub extensions: Option<Extensions>,
    /// The machine behind each node, by name.
    pub machines: BTreeMap<String, Machine>,
}

#[cfg(test)]
impl Desired {
    /// `nodes` on Talos v1.12.0 with the official installer and Kubernetes v1.35.0, for unit
    /// tests.
    pub(crate) fn on_v1_12(nodes: Vec<ClusterNode>) -> Self {
        Desired {
            nodes,
            image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
            target: "v1.12.0".into(),
            kubernetes: "v1.35.0".into(),
            coredns_image: "registry.k8s.io/coredns/coredns:v1.13.2".into(),
            extensions: Some(Extensions::default()),
            ..Default::default()
        }
    }
}

#[cfg(test)]
impl Current {
    /// `nodes` running their configs on Talos v1.12.0 with the official installer, for unit
    /// tests: what [`Desired::on_v1_12`] leaves behind.
    pub(crate) fn running_v1_12(nodes: &[ClusterNode]) -> Self {
        Current {
            nodes: nodes.to_vec(),
            applied: nodes
                .iter()
                .map(|n| (n.name.clone(), n.config.clone()))
                .collect(),
            versions: nodes
                .iter()
                .map(|n| (n.name.clone(), "v1.12.0".into()))
                .collect(),
            extensions: nodes
                .iter()
                .map(|n| (n.name.clone(), Extensions::default()))
                .collect(),
            image: Some("ghcr.io/siderolabs/installer:v1.12.0".into()),
            ..Default::default()
        }
    }
}

/// The names nodes report for configured official extensions: `siderolabs/iscsi-tools` runs
/// as `iscsi-tools` (Talos: the extension's manifest `metadata.name`). Sorted, no duplicates.
pub fn extension_names(extensions: &[String]) -> Vec<String> {
    let mut names: Vec<String> = extensions
        .iter()
        .map(|e| e.trim().rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// What an image holds besides its release: its system extensions, by the names nodes report
/// (sorted, see [`extension_names`]), and its Image Factory schematic id, if it came from the
/// factory. Every image the factory builds carries an extension named `schematic` whose
/// version is that id (it is how `talosctl get extensions` shows it); a plain Sidero image
/// has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// Extension names, e.g. `iscsi-tools`.
    pub names: Vec<String>,
    /// The Image Factory schematic id.
    pub schematic: Option<String>,
}

impl Extensions {
    /// Whether a node that reports `self` runs what `wanted` describes. The schematic decides
    /// where both are known: the same names can come from another schematic (kernel arguments,
    /// another list order, which the factory does not sort), and the node then does not run
    /// castle's installer. A node whose image has no schematic is judged by the names.
    pub fn runs(&self, wanted: &Extensions) -> bool {
        match (&self.schematic, &wanted.schematic) {
            (Some(reported), Some(wanted)) => reported == wanted,
            _ => self.names == wanted.names,
        }
    }
}

/// One step of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A node that left the configuration: out of etcd and Kubernetes, then reset.
    Remove(String),
    /// Bring nodes to the installer image, one at a time (control planes first), each back and
    /// the cluster healthy before the next. Without `reinstall`, a node that reports the
    /// target release and the configured extensions is left alone: that is how a machine
    /// booted from a disk image of another release or other extensions is brought to the
    /// target after it joined (a disk image does not install:
    /// Talos: internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go (v1.12.0)
    /// `Install` runs only when the machine is not installed yet).
    Upgrade {
        /// The nodes that run this cluster's config.
        nodes: Vec<String>,
        /// Upgrade nodes already on the target release too.
        reinstall: bool,
    },
    /// Move the running nodes to another Kubernetes release as `talosctl upgrade-k8s` does:
    /// kube-apiserver, kube-controller-manager, kube-scheduler one control plane at a time
    /// (each static pod Ready on the new release before the next), kube-proxy's image in the
    /// control planes' configs, the kubelets node by node (each Node reporting the release and
    /// Ready), then the bootstrap manifests (kube-proxy, CoreDNS) applied again. What already
    /// runs `version` is left alone, so an upgrade cut short resumes where it stopped. Each
    /// node ends on its desired config.
    UpgradeKubernetes {
        /// The running nodes, in configuration order (control planes are taken first).
        nodes: Vec<String>,
        /// The release, e.g. `v1.35.0`.
        version: String,
    },
    /// A node whose machine changed: the old one out, the new one in, the cluster healthy
    /// before the next step ([`super::replace_node`]).
    Replace(Replacement),
    /// Apply to machines that run none of our configs yet, all at once.
    ApplyNew(Vec<String>),
    /// Apply a changed config to one running node; if Talos answers that it reboots, wait for
    /// the reboot and for health before the next step.
    ApplyRunning(String),
    /// A running node whose address changed (its VM booted at the new one, see
    /// [`readdressed`]): apply its config (new static address and certificate SANs) there,
    /// then wait until the cluster is healthy at the new address (its etcd member's peer URL,
    /// its Node's InternalIP, the `kubernetes` endpoints) before any other node is touched.
    ApplyReaddressed(String),
    /// Bootstrap etcd on this control plane (a no-op once bootstrapped).
    Bootstrap(String),
    /// Wait until these nodes answer over mutual TLS with this cluster's credentials.
    WaitConfigured(Vec<String>),
    /// Wait until the whole cluster is healthy.
    WaitHealthy,
}

/// Why the nodes are upgraded, for the plan's warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeReason {
    /// Nodes report another release than the target: (node, release) pairs.
    Release(Vec<(String, String)>),
    /// Nodes run other system extensions (or another schematic) than configured: (node,
    /// what it runs) pairs.
    Extensions(Vec<(String, Extensions)>),
    /// Same release, another installer image (extensions or `install_image`).
    Reinstall,
}

fn names<'a>(nodes: impl IntoIterator<Item = &'a ClusterNode>) -> Vec<String> {
    nodes.into_iter().map(|n| n.name.clone()).collect()
}

/// Why an apply upgrades the running nodes, if it does. Nodes that report another release
/// than the target are brought to it (upgraded or rolled back outside Terraform, or booted
/// from a template of another release); a new installer image of the same release is
/// installed the same way, since Talos installs an image only on an upgrade.
pub fn upgrade_reason(current: &Current, desired: &Desired) -> Option<UpgradeReason> {
    let wanted: BTreeSet<&String> = desired.nodes.iter().map(|n| &n.name).collect();
    let off: Vec<(String, String)> = current
        .versions
        .iter()
        .filter(|(name, _)| wanted.contains(name) && current.applied.contains_key(*name))
        .filter(|(_, version)| **version != desired.target)
        .map(|(name, version)| (name.clone(), version.clone()))
        .collect();
    if !off.is_empty() {
        return Some(UpgradeReason::Release(off));
    }
    if let Some(wanted_extensions) = &desired.extensions {
        let other: Vec<(String, Extensions)> = current
            .extensions
            .iter()
            .filter(|(name, _)| wanted.contains(name) && current.applied.contains_key(*name))
            .filter(|(_, reported)| !reported.runs(wanted_extensions))
            .map(|(name, reported)| (name.clone(), reported.clone()))
            .collect();
        if !other.is_empty() {
            return Some(UpgradeReason::Extensions(other));
        }
    }
    match &current.image {
        Some(image) if *image != desired.image && !current.applied.is_empty() => {
            Some(UpgradeReason::Reinstall)
        }
        _ => None,
    }
}

/// The Kubernetes releases the running nodes' configs name now, when any differs from what
/// `desired` wants: the nodes then go through [`Step::UpgradeKubernetes`].
pub fn kubernetes_upgrade(current: &Current, desired: &Desired) -> Option<Vec<String>> {
    let mut from: Vec<String> = Vec::new();
    let mut differs = false;
    for node in desired.nodes.iter() {
        let Some(applied) = current.applied.get(&node.name) else {
            continue;
        };
        for component in Component::ALL {
            let (Some(old), Some(new)) = (
                component_tag(applied, component),
                component_tag(&node.config, component),
            ) else {
                continue;
            };
            differs |= old != new;
            if !from.contains(&old) {
                from.push(old);
            }
        }
    }
    from.sort();
    differs.then_some(from)
}

/// Running nodes (one of our configs applied) whose address is not the one they had: their
/// VM booted at the new address with the config of the old one. Talos keeps the config and
/// merges the platform's address with the config's static one (Talos:
/// internal/app/machined/pkg/controllers/network/address_merge.go (v1.12.0)), so the node
/// answers at the new address with its old identity, and its etcd member keeps its ID.
pub fn readdressed(current: &Current, desired: &Desired) -> Vec<String> {
    desired
        .nodes
        .iter()
        .filter(|n| current.applied.contains_key(&n.name))
        .filter(|n| {
            current
                .nodes
                .iter()
                .any(|old| old.name == n.name && old.ip != n.ip)
        })
        .map(|n| n.name.clone())
        .collect()
}

/// The nodes that left the configuration, in the order apply removes them: control planes
/// that do not answer first (their members are lost already, so taking them out first leaves
/// the answering majority larger at every step), then the others in the previous
/// configuration's order.
pub fn leaving<'a>(current: &'a Current, desired: &Desired) -> Vec<&'a ClusterNode> {
    let wanted: BTreeSet<&String> = desired.nodes.iter().map(|n| &n.name).collect();
    let (mut first, rest): (Vec<&ClusterNode>, Vec<&ClusterNode>) = current
        .nodes
        .iter()
        .filter(|n| !wanted.contains(&n.name))
        .partition(|n| n.is_control_plane() && current.unreachable.contains(&n.name));
    first.extend(rest);
    first
}

/// The steps of an apply: `current` is `None` for a new cluster.
pub fn plan(current: Option<&Current>, desired: &Desired) -> Vec<Step> {
    let everyone = names(&desired.nodes);
    let first_control_plane = desired.nodes.iter().find(|n| n.is_control_plane());
    let Some(current) = current else {
        // A new cluster: the control planes' configs, etcd on the first of them, then the
        // workers' configs and the wait. A worker's apid gets its certificate only through the
        // VIP (Talos: controllers/network/operator/vip.go), which needs etcd; so a worker
        // configured before the bootstrap (by a run that failed or was killed) could neither
        // answer nor be reset, and waiting for it first would never end.
        let (control_planes, workers): (Vec<&ClusterNode>, Vec<&ClusterNode>) =
            desired.nodes.iter().partition(|n| n.is_control_plane());
        let mut steps = vec![Step::ApplyNew(names(control_planes))];
        steps.extend(first_control_plane.map(|n| Step::Bootstrap(n.name.clone())));
        if !workers.is_empty() {
            steps.push(Step::ApplyNew(names(workers)));
        }
        steps.push(Step::WaitConfigured(everyone.clone()));
        steps.push(Step::WaitHealthy);
        steps.push(Step::Upgrade {
            nodes: everyone,
            reinstall: false,
        });
        return steps;
    };
    let mut steps: Vec<Step> = leaving(current, desired)
        .into_iter()
        .map(|gone| Step::Remove(gone.name.clone()))
        .collect();
    let replacements = replacements(current, desired);
    let replaced: BTreeSet<&String> = replacements.iter().map(|r| &r.node).collect();
    // Moved nodes next, one at a time: until a moved control plane runs its new config and
    // etcd has its new peer URL, the other members reach it only one way, so no other node may
    // go down before. Before an upgrade too: its health checks want every member at its
    // address. A replaced node is a new machine, not a moved one.
    let moved: Vec<String> = readdressed(current, desired)
        .into_iter()
        .filter(|name| !replaced.contains(name))
        .collect();
    steps.extend(
        moved
            .iter()
            .map(|name| Step::ApplyReaddressed(name.clone())),
    );
    // A new release first: configs for a newer contract are refused by an older node.
    let running: Vec<&ClusterNode> = desired
        .nodes
        .iter()
        .filter(|n| current.applied.contains_key(&n.name) && !replaced.contains(&n.name))
        .collect();
    if let Some(reason) = upgrade_reason(current, desired) {
        steps.push(Step::Upgrade {
            nodes: names(running.iter().copied()),
            reinstall: reason == UpgradeReason::Reinstall,
        });
    }
    // Then Kubernetes, before any new machine joins: a kubelet newer than the API servers is
    // outside the version skew policy. The upgrade leaves each node on its desired config.
    let kubernetes = kubernetes_upgrade(current, desired).is_some();
    if kubernetes {
        steps.push(Step::UpgradeKubernetes {
            nodes: names(running.iter().copied()),
            version: desired.kubernetes.clone(),
        });
    }
    // Replaced machines one at a time, control planes first, each joined and the cluster
    // healthy before the next.
    steps.extend(replacements.iter().cloned().map(Step::Replace));
    let new: Vec<&ClusterNode> = desired
        .nodes
        .iter()
        .filter(|n| !current.applied.contains_key(&n.name))
        .collect();
    let changed: Vec<&ClusterNode> = running
        .iter()
        .copied()
        .filter(|n| current.applied.get(&n.name) != Some(&n.config))
        .filter(|n| !moved.contains(&n.name))
        .collect();
    let reapplied: Vec<&ClusterNode> = if kubernetes {
        Vec::new()
    } else {
        changed.clone()
    };
    if !new.is_empty() {
        steps.push(Step::ApplyNew(names(new.iter().copied())));
    }
    // Running nodes one by one, so that a config that reboots them keeps etcd's quorum.
    steps.extend(reapplied.iter().map(|n| Step::ApplyRunning(n.name.clone())));
    // Ask a control plane that already was a member: Talos bootstraps any control plane whose
    // etcd directory is empty (Talos: internal/app/machined/internal/server/v1alpha1/
    // v1alpha1_server.go (v1.12.0) Bootstrap), so a node that just joined would start a second
    // etcd. Without one (every control plane is new), the first control plane.
    let established = running
        .iter()
        .find(|n| n.is_control_plane())
        .copied()
        .or(first_control_plane);
    steps.extend(established.map(|n| Step::Bootstrap(n.name.clone())));
    let touched: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| {
            moved.contains(&n.name) || new.iter().chain(reapplied.iter()).any(|c| c.name == n.name)
        })
        .map(|n| n.name.clone())
        .collect();
    if !touched.is_empty() {
        steps.push(Step::WaitConfigured(touched));
    }
    steps.push(Step::WaitHealthy);
    // New machines (replacements too) may have booted another release than the target.
    let fresh: Vec<String> = desired
        .nodes
        .iter()
        .filter(|n| !current.applied.contains_key(&n.name) || replaced.contains(&n.name))
        .map(|n| n.name.clone())
        .collect();
    if !fresh.is_empty() {
        steps.push(Step::Upgrade {
            nodes: fresh,
            reinstall: false,
        });
    }
    steps
}

/// The nodes whose machine changes (another VM or another MAC than the previous apply
/// recorded), in the desired order (control planes first). Only nodes that ran this
/// cluster's config count: a node that never did is simply new.
pub fn replacements(current: &Current, desired: &Desired) -> Vec<Replacement> {
    desired
        .nodes
        .iter()
        .filter(|n| current.applied.contains_key(&n.name))
        .filter_map(|n| {
            let old = current.nodes.iter().find(|o| o.name == n.name)?;
            let before = current.machines.get(&n.name)?;
            let after = desired.machines.get(&n.name)?;
            before.differs(after).then(|| Replacement {
                node: n.name.clone(),
                old_ip: old.ip,
                old_control_plane: old.is_control_plane(),
                old_vm: before.vm.clone(),
                new_vm: after.vm.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::config::Role;

    fn node(name: &str, role: Role, config: &str) -> ClusterNode {
        ClusterNode::on_loopback(name, role, config)
    }

    fn cluster(config: &str) -> Vec<ClusterNode> {
        vec![
            node("cp-1", Role::ControlPlane, config),
            node("cp-2", Role::ControlPlane, config),
            node("w-1", Role::Worker, config),
        ]
    }

    fn desired(nodes: Vec<ClusterNode>) -> Desired {
        Desired::on_v1_12(nodes)
    }

    fn running(nodes: &[ClusterNode]) -> Current {
        Current::running_v1_12(nodes)
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_cluster_bootstraps_before_it_waits_for_its_workers() {
        let steps = plan(None, &desired(cluster("a")));
        assert_eq!(
            steps,
            vec![
                Step::ApplyNew(strings(&["cp-1", "cp-2"])),
                Step::Bootstrap("cp-1".into()),
                Step::ApplyNew(strings(&["w-1"])),
                Step::WaitConfigured(strings(&["cp-1", "cp-2", "w-1"])),
                Step::WaitHealthy,
                Step::Upgrade {
                    nodes: strings(&["cp-1", "cp-2", "w-1"]),
                    reinstall: false
                },
            ]
        );
    }

    #[test]
    fn an_unchanged_cluster_is_only_checked() {
        let nodes = cluster("a");
        let steps = plan(Some(&running(&nodes)), &desired(nodes));
        assert_eq!(
            steps,
            vec![Step::Bootstrap("cp-1".into()), Step::WaitHealthy]
        );
    }

    #[test]
    fn a_changed_config_rolls_running_nodes_one_at_a_time() {
        let steps = plan(Some(&running(&cluster("a"))), &desired(cluster("b")));
        assert_eq!(
            steps,
            vec![
                Step::ApplyRunning("cp-1".into()),
                Step::ApplyRunning("cp-2".into()),
                Step::ApplyRunning("w-1".into()),
                Step::Bootstrap("cp-1".into()),
                Step::WaitConfigured(strings(&["cp-1", "cp-2", "w-1"])),
                Step::WaitHealthy,
            ]
        );
    }

    #[test]
    fn a_new_control_plane_is_never_the_one_asked_to_bootstrap() {
        let before = cluster("a");
        let mut after = cluster("a");
        after.insert(0, node("cp-0", Role::ControlPlane, "a"));
        let steps = plan(Some(&running(&before)), &desired(after));
        assert!(steps.contains(&Step::ApplyNew(strings(&["cp-0"]))));
        assert!(steps.contains(&Step::Bootstrap("cp-1".into())), "{steps:?}");
    }

    #[test]
    fn a_removed_node_leaves_before_anything_else() {
        let before = cluster("a");
        let after: Vec<ClusterNode> = before[..2].to_vec();
        let steps = plan(Some(&running(&before)), &desired(after));
        assert_eq!(steps.first(), Some(&Step::Remove("w-1".into())));
    }

    #[test]
    fn control_planes_that_do_not_answer_are_removed_first_then_the_rest_by_name() {
        let mut before = cluster("a");
        before.push(node("cp-3", Role::ControlPlane, "a"));
        let mut current = running(&before);
        current.unreachable.insert("cp-3".into());
        let steps = plan(Some(&current), &desired(before[..1].to_vec()));
        assert_eq!(
            steps[..3],
            [
                Step::Remove("cp-3".into()),
                Step::Remove("cp-2".into()),
                Step::Remove("w-1".into())
            ]
        );
    }

    #[test]
    fn a_node_on_another_release_is_upgraded_before_configs_change() {
        let before = cluster("a");
        let mut current = running(&before);
        current.versions.insert("cp-2".into(), "v1.11.5".into());
        let steps = plan(Some(&current), &desired(cluster("b")));
        assert_eq!(
            steps.first(),
            Some(&Step::Upgrade {
                nodes: strings(&["cp-1", "cp-2", "w-1"]),
                reinstall: false
            })
        );
        assert_eq!(
            upgrade_reason(&current, &desired(cluster("b"))),
            Some(UpgradeReason::Release(vec![(
                "cp-2".into(),
                "v1.11.5".into()
            )]))
        );
    }

    #[test]
    fn other_extensions_on_the_same_release_reinstall_every_node() {
        let nodes = cluster("a");
        let mut wanted = desired(nodes.clone());
        wanted.image = "factory.talos.dev/installer/abc:v1.12.0".into();
        let steps = plan(Some(&running(&nodes)), &wanted);
        assert_eq!(
            steps.first(),
            Some(&Step::Upgrade {
                nodes: strings(&["cp-1", "cp-2", "w-1"]),
                reinstall: true
            })
        );
    }

    fn at(mut nodes: Vec<ClusterNode>, name: &str, ip: &str) -> Vec<ClusterNode> {
        for n in nodes.iter_mut().filter(|n| n.name == name) {
            n.ip = ip.parse().unwrap();
            n.config = format!("{}-at-{ip}", n.config);
        }
        nodes
    }

    #[test]
    fn a_moved_control_plane_is_applied_and_healthy_at_its_new_address_before_the_others() {
        let before = cluster("a");
        // cp-2 moved; cp-1's config changed too (another edit in the same apply).
        let mut after = at(cluster("a"), "cp-2", "127.0.0.220");
        after[0].config = "b".into();
        let steps = plan(Some(&running(&before)), &desired(after));
        assert_eq!(
            steps,
            vec![
                Step::ApplyReaddressed("cp-2".into()),
                Step::ApplyRunning("cp-1".into()),
                Step::Bootstrap("cp-1".into()),
                Step::WaitConfigured(strings(&["cp-1", "cp-2"])),
                Step::WaitHealthy,
            ]
        );
    }

    #[test]
    fn a_moved_node_is_settled_before_an_upgrade_and_a_new_node_is_not_moved() {
        let before = cluster("a");
        let mut current = running(&before);
        current.versions.insert("w-1".into(), "v1.11.5".into());
        let mut after = at(cluster("a"), "w-1", "127.0.0.230");
        after.push(node("w-2", Role::Worker, "a"));
        let steps = plan(Some(&current), &desired(after.clone()));
        assert_eq!(steps[0], Step::ApplyReaddressed("w-1".into()));
        assert!(matches!(steps[1], Step::Upgrade { .. }), "{steps:?}");
        assert_eq!(readdressed(&current, &desired(after)), strings(&["w-1"]));
    }

    #[test]
    fn a_node_without_the_configured_extensions_is_upgraded_and_the_reason_names_it() {
        let nodes = cluster("a");
        let mut current = running(&nodes);
        let iscsi = Extensions {
            names: strings(&["iscsi-tools"]),
            schematic: None,
        };
        current.extensions.insert("w-1".into(), iscsi.clone());
        let wanted = desired(nodes);
        assert_eq!(
            upgrade_reason(&current, &wanted),
            Some(UpgradeReason::Extensions(vec![("w-1".into(), iscsi)]))
        );
        assert_eq!(
            plan(Some(&current), &wanted).first(),
            Some(&Step::Upgrade {
                nodes: strings(&["cp-1", "cp-2", "w-1"]),
                reinstall: false
            })
        );
    }

    #[test]
    fn a_node_with_the_same_extensions_from_another_schematic_is_upgraded() {
        let nodes = cluster("a");
        let names = strings(&["iscsi-tools", "util-linux-tools"]);
        let from = |schematic: Option<&str>| Extensions {
            names: names.clone(),
            schematic: schematic.map(str::to_string),
        };
        let mut wanted = desired(nodes.clone());
        wanted.extensions = Some(from(Some("castle")));
        let mut current = running(&nodes);
        for node in ["cp-1", "cp-2", "w-1"] {
            current.extensions.insert(node.into(), from(Some("castle")));
        }
        assert_eq!(upgrade_reason(&current, &wanted), None);
        // w-1 booted from a factory image with the same extensions and extra kernel arguments.
        current
            .extensions
            .insert("w-1".into(), from(Some("kernel-args")));
        // cp-2 runs a plain image (no schematic): the names decide, and they agree.
        current.extensions.insert("cp-2".into(), from(None));
        assert_eq!(
            upgrade_reason(&current, &wanted),
            Some(UpgradeReason::Extensions(vec![(
                "w-1".into(),
                from(Some("kernel-args"))
            )]))
        );
    }

    #[test]
    fn official_extensions_are_compared_by_the_names_nodes_report() {
        assert_eq!(
            extension_names(&[
                "siderolabs/util-linux-tools".into(),
                "siderolabs/iscsi-tools".into(),
                "siderolabs/iscsi-tools".into()
            ]),
            vec!["iscsi-tools".to_string(), "util-linux-tools".into()]
        );
    }

    #[test]
    fn a_node_found_in_maintenance_gets_its_config_then_the_target_release() {
        let nodes = cluster("a");
        let mut current = running(&nodes);
        current.applied.remove("w-1");
        current.versions.insert("w-1".into(), "v1.10.0".into());
        let steps = plan(Some(&current), &desired(nodes));
        assert_eq!(
            steps,
            vec![
                Step::ApplyNew(strings(&["w-1"])),
                Step::Bootstrap("cp-1".into()),
                Step::WaitConfigured(strings(&["w-1"])),
                Step::WaitHealthy,
                Step::Upgrade {
                    nodes: strings(&["w-1"]),
                    reinstall: false
                },
            ]
        );
    }

    fn kube_config(version: &str) -> String {
        format!(
            "version: v1alpha1\nmachine:\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:{version}\n\
             cluster:\n  apiServer:\n    image: registry.k8s.io/kube-apiserver:{version}\n"
        )
    }

    #[test]
    fn a_new_kubernetes_release_upgrades_the_running_nodes_before_a_new_node_joins() {
        let before = cluster(&kube_config("v1.34.2"));
        let mut after = cluster(&kube_config("v1.35.0"));
        after.push(node("w-2", Role::Worker, &kube_config("v1.35.0")));
        let current = running(&before);
        let wanted = desired(after);
        assert_eq!(
            kubernetes_upgrade(&current, &wanted),
            Some(vec!["v1.34.2".to_string()])
        );
        let steps = plan(Some(&current), &wanted);
        assert_eq!(
            steps,
            vec![
                Step::UpgradeKubernetes {
                    nodes: strings(&["cp-1", "cp-2", "w-1"]),
                    version: "v1.35.0".into()
                },
                Step::ApplyNew(strings(&["w-2"])),
                Step::Bootstrap("cp-1".into()),
                Step::WaitConfigured(strings(&["w-2"])),
                Step::WaitHealthy,
                Step::Upgrade {
                    nodes: strings(&["w-2"]),
                    reinstall: false
                },
            ]
        );
    }

    #[test]
    fn the_same_kubernetes_release_plans_no_kubernetes_upgrade() {
        let nodes = cluster(&kube_config("v1.35.0"));
        let current = running(&nodes);
        assert_eq!(kubernetes_upgrade(&current, &desired(nodes.clone())), None);
        assert!(!plan(Some(&current), &desired(nodes))
            .iter()
            .any(|s| matches!(s, Step::UpgradeKubernetes { .. })));
    }

    fn on_vms(
        current: &mut Current,
        desired: &mut Desired,
        before: &[(&str, &str)],
        after: &[(&str, &str)],
    ) {
        let machines = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(name, vm)| {
                    (
                        name.to_string(),
                        Machine {
                            vm: Some(vm.to_string()),
                            mac: None,
                        },
                    )
                })
                .collect()
        };
        current.machines = machines(before);
        desired.machines = machines(after);
    }

    #[test]
    fn a_node_on_a_new_vm_is_replaced_instead_of_reconfigured() {
        let before = cluster("a");
        let mut current = running(&before);
        // The new machine's config differs (its MAC), but it is a new machine, not a change.
        let mut after = cluster("a");
        after[1].config = "b".into();
        let mut wanted = desired(after);
        on_vms(
            &mut current,
            &mut wanted,
            &[
                ("cp-1", "pve1/100"),
                ("cp-2", "pve1/101"),
                ("w-1", "pve1/102"),
            ],
            &[
                ("cp-1", "pve1/100"),
                ("cp-2", "pve1/201"),
                ("w-1", "pve1/102"),
            ],
        );
        let steps = plan(Some(&current), &wanted);
        assert_eq!(
            steps,
            vec![
                Step::Replace(Replacement {
                    node: "cp-2".into(),
                    old_ip: "127.0.0.1".parse().unwrap(),
                    old_control_plane: true,
                    old_vm: Some("pve1/101".into()),
                    new_vm: Some("pve1/201".into()),
                }),
                Step::Bootstrap("cp-1".into()),
                Step::WaitHealthy,
                Step::Upgrade {
                    nodes: strings(&["cp-2"]),
                    reinstall: false
                },
            ]
        );
    }

    #[test]
    fn a_new_mac_is_a_new_machine_and_machine_ids_given_only_now_are_not() {
        let nodes = cluster("a");
        let mut current = running(&nodes);
        let mut wanted = desired(nodes.clone());
        // vm_id added to a configuration that had none: the same machines.
        wanted.machines.insert(
            "w-1".into(),
            Machine {
                vm: Some("pve1/102".into()),
                mac: None,
            },
        );
        current.machines.insert("w-1".into(), Machine::default());
        assert!(replacements(&current, &wanted).is_empty());
        current.machines.insert(
            "w-1".into(),
            Machine {
                vm: None,
                mac: Some("bc:24:11:00:00:01".into()),
            },
        );
        wanted.machines.insert(
            "w-1".into(),
            Machine {
                vm: None,
                mac: Some("BC:24:11:00:00:01".into()),
            },
        );
        assert!(
            replacements(&current, &wanted).is_empty(),
            "MACs compare case-insensitively"
        );
        wanted.machines.get_mut("w-1").unwrap().mac = Some("bc:24:11:00:00:02".into());
        let names: Vec<String> = replacements(&current, &wanted)
            .into_iter()
            .map(|r| r.node)
            .collect();
        assert_eq!(names, strings(&["w-1"]));
    }
}

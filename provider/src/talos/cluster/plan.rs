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
    /// The installer image of the previous configuration.
    pub image: Option<String>,
    /// The machine behind each node, by name.
    pub machines: BTreeMap<String, Machine>,
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
    /// The machine behind each node, by name.
    pub machines: BTreeMap<String, Machine>,
}

/// One step of an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A node that left the configuration: out of etcd and Kubernetes, then reset.
    Remove(String),
    /// Bring nodes to the installer image, one at a time (control planes first), each back and
    /// the cluster healthy before the next. Without `reinstall`, a node that reports the
    /// target release is left alone: that is how a machine booted from a disk image of another
    /// release is brought to the target after it joined (a disk image does not install:
    /// Talos: internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go (v1.12.0)
    /// `Install` runs only when the machine is not installed yet).
    Upgrade {
        /// The nodes that run this cluster's config.
        nodes: Vec<String>,
        /// Upgrade nodes already on the target release too.
        reinstall: bool,
    },
    /// A node whose machine changed: the old one out, the new one in, the cluster healthy
    /// before the next step ([`super::replace_node`]).
    Replace(Replacement),
    /// Apply to machines that run none of our configs yet, all at once.
    ApplyNew(Vec<String>),
    /// Apply a changed config to one running node; if Talos answers that it reboots, wait for
    /// the reboot and for health before the next step.
    ApplyRunning(String),
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
    match &current.image {
        Some(image) if *image != desired.image && !current.applied.is_empty() => {
            Some(UpgradeReason::Reinstall)
        }
        _ => None,
    }
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
    let mut steps = Vec::new();
    let wanted: BTreeSet<&String> = desired.nodes.iter().map(|n| &n.name).collect();
    for gone in current.nodes.iter().filter(|n| !wanted.contains(&n.name)) {
        steps.push(Step::Remove(gone.name.clone()));
    }
    let replacements = replacements(current, desired);
    let replaced: BTreeSet<&String> = replacements.iter().map(|r| &r.node).collect();
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
    // One machine at a time, control planes first, each joined and the cluster healthy
    // before the next.
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
        .collect();
    if !new.is_empty() {
        steps.push(Step::ApplyNew(names(new.iter().copied())));
    }
    // Running nodes one by one, so that a config that reboots them keeps etcd's quorum.
    steps.extend(changed.iter().map(|n| Step::ApplyRunning(n.name.clone())));
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
    let touched: Vec<String> = names(new.iter().chain(changed.iter()).copied());
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
        ClusterNode {
            name: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            role,
            config: config.into(),
        }
    }

    fn cluster(config: &str) -> Vec<ClusterNode> {
        vec![
            node("cp-1", Role::ControlPlane, config),
            node("cp-2", Role::ControlPlane, config),
            node("w-1", Role::Worker, config),
        ]
    }

    fn desired(nodes: Vec<ClusterNode>) -> Desired {
        Desired {
            nodes,
            image: "ghcr.io/siderolabs/installer:v1.12.0".into(),
            target: "v1.12.0".into(),
            ..Default::default()
        }
    }

    fn running(nodes: &[ClusterNode]) -> Current {
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
            image: Some("ghcr.io/siderolabs/installer:v1.12.0".into()),
            ..Default::default()
        }
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

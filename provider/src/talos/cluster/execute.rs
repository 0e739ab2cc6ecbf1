//! Runs the steps of a [`plan`](super::plan::plan) against the nodes, through
//! [`NodeOperations`]: the real one talks to the Talos and Kubernetes APIs, tests inject their
//! own to see the order of calls.

use async_trait::async_trait;
use tokio::time::Instant;

use super::kubernetes_upgrade::{self, Releases};
use super::plan::Step;
use super::{Access, ClusterError, ClusterNode, Replacement, ResetOutcome, VmPower};
use crate::talos::config::bootstrap_manifests::ReleaseImages;
use crate::talos::config::Component;

/// What Talos answered to a config applied to a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Taken in place.
    InPlace,
    /// The node reboots to take it (Talos's "Applied configuration with a reboot"); `boot` is
    /// the boot id it had before, to tell when it came back.
    Rebooting {
        /// `/proc/sys/kernel/random/boot_id` before the apply.
        boot: String,
    },
}

/// The operations a reconcile needs, each waiting for its own observable end and bounded by
/// the deadline the implementation was made with.
#[async_trait]
pub trait NodeOperations: Sync {
    /// Takes a node out of the cluster whose remaining nodes are `cluster`: drained, out of
    /// etcd, reset, its Kubernetes Node deleted.
    async fn remove(
        &self,
        node: &ClusterNode,
        cluster: &[ClusterNode],
    ) -> Result<ResetOutcome, ClusterError>;
    /// Replaces the machine behind `node` (see [`super::replace_node`]); `cluster` is every
    /// node.
    async fn replace(
        &self,
        cluster: &[ClusterNode],
        node: &ClusterNode,
        replacement: &Replacement,
    ) -> Result<(), ClusterError>;
    /// Applies configs to machines that run none of ours yet, all at once.
    async fn apply_new(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError>;
    /// Applies a config to a running node and says whether it reboots for it.
    async fn apply_running(&self, node: &ClusterNode) -> Result<Applied, ClusterError>;
    /// Waits until a node's boot id differs from `boot` and it answers with our credentials.
    async fn wait_rebooted(&self, node: &ClusterNode, boot: &str) -> Result<(), ClusterError>;
    /// Bootstraps etcd on a control plane (done when it already was).
    async fn bootstrap(&self, node: &ClusterNode) -> Result<(), ClusterError>;
    /// Waits until the nodes answer over mutual TLS with this cluster's credentials.
    async fn wait_configured(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError>;
    /// Waits until the whole cluster is healthy.
    async fn wait_healthy(&self, cluster: &[ClusterNode]) -> Result<(), ClusterError>;
    /// Upgrades `nodes` one at a time (see [`Step::Upgrade`]); `cluster` is every node.
    async fn upgrade(
        &self,
        cluster: &[ClusterNode],
        nodes: &[ClusterNode],
        reinstall: bool,
    ) -> Result<(), ClusterError>;
    /// The release each Kubernetes component of a node runs, as the cluster reports it (a
    /// component it does not report is left out).
    async fn kubernetes_releases(&self, node: &ClusterNode) -> Result<Releases, ClusterError>;
    /// Waits until `component` runs `version` on the node and is Ready.
    async fn wait_component(
        &self,
        node: &ClusterNode,
        component: Component,
        version: &str,
    ) -> Result<(), ClusterError>;
    /// Applies the bootstrap manifests (flannel, kube-proxy, CoreDNS) `cluster`'s control
    /// planes' configs render, with server-side apply, and waits for their rollouts.
    async fn sync_bootstrap_manifests(&self, cluster: &[ClusterNode]) -> Result<(), ClusterError>;
}

/// What the executor tells the caller besides an error: nodes it found not reset.
#[derive(Debug, Default)]
pub struct Report {
    /// Removed nodes whose reset did not happen (gone, or another cluster's), with the outcome.
    pub not_reset: Vec<(ClusterNode, ResetOutcome)>,
}

fn pick(nodes: &[ClusterNode], names: &[String]) -> Vec<ClusterNode> {
    nodes
        .iter()
        .filter(|n| names.contains(&n.name))
        .cloned()
        .collect()
}

fn one<'a>(nodes: &'a [ClusterNode], name: &str) -> Result<&'a ClusterNode, ClusterError> {
    nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ClusterError::Credentials(format!("node {name} is not in the plan")))
}

/// Runs `steps` in order; `cluster` is every node of the desired cluster and `removed` the
/// nodes of the previous one that left it. Stops at the first error.
pub async fn execute(
    steps: &[Step],
    cluster: &[ClusterNode],
    removed: &[ClusterNode],
    ops: &impl NodeOperations,
    report: &mut Report,
) -> Result<(), ClusterError> {
    for step in steps {
        match step {
            Step::Remove(name) => {
                let node = one(removed, name)?;
                // One at a time: each removal is over (a control plane out of etcd, as another
                // control plane's member list shows) before the next starts.
                let outcome = ops.remove(node, cluster).await?;
                if !matches!(
                    outcome,
                    ResetOutcome::Reset | ResetOutcome::AlreadyInMaintenance
                ) {
                    report.not_reset.push((node.clone(), outcome));
                }
            }
            Step::Upgrade { nodes, reinstall } => {
                ops.upgrade(cluster, &pick(cluster, nodes), *reinstall)
                    .await?
            }
            Step::UpgradeKubernetes { nodes, version } => {
                kubernetes_upgrade::upgrade_kubernetes(ops, cluster, &pick(cluster, nodes), version)
                    .await?
            }
            Step::Replace(replacement) => {
                let node = one(cluster, &replacement.node)?;
                ops.replace(cluster, node, replacement).await?
            }
            Step::ApplyNew(names) => ops.apply_new(&pick(cluster, names)).await?,
            Step::ApplyRunning(name) => {
                let node = one(cluster, name)?;
                if let Applied::Rebooting { boot } = ops.apply_running(node).await? {
                    // The node answers before it reboots: the next one waits until this one
                    // is back and the cluster healthy, or two control planes could be down.
                    tracing::info!(node = %node.name, "the node reboots to take its new configuration");
                    ops.wait_rebooted(node, &boot).await?;
                    ops.wait_healthy(cluster).await?;
                }
            }
            Step::ApplyReaddressed(name) => {
                let node = one(cluster, name)?;
                if let Applied::Rebooting { boot } = ops.apply_running(node).await? {
                    ops.wait_rebooted(node, &boot).await?;
                }
                // Healthy means: its etcd member advertises the new peer URL, its Node reports
                // the new InternalIP and the old API server lease has expired.
                ops.wait_healthy(cluster).await?;
            }
            Step::Bootstrap(name) => ops.bootstrap(one(cluster, name)?).await?,
            Step::WaitConfigured(names) => ops.wait_configured(&pick(cluster, names)).await?,
            Step::WaitHealthy => ops.wait_healthy(cluster).await?,
        }
    }
    Ok(())
}

/// The real operations, over the Talos and Kubernetes APIs, all bounded by `deadline`.
pub struct Live<'a> {
    /// Credentials of both APIs.
    pub access: &'a Access,
    /// When every wait gives up.
    pub deadline: Instant,
    /// The installer image upgrades install.
    pub image: &'a str,
    /// The release tag upgraded nodes must report.
    pub target: &'a str,
    /// The images Talos renders in the bootstrap manifests for the cluster's release.
    pub release_images: ReleaseImages<'a>,
    /// The extensions (and schematic) upgraded nodes must report, when castle knows them.
    pub extensions: Option<&'a super::Extensions>,
    /// Power over the nodes' VMs, for replacements; `None` without a Proxmox client.
    pub power: Option<&'a dyn VmPower>,
}

#[async_trait]
impl NodeOperations for Live<'_> {
    async fn remove(
        &self,
        node: &ClusterNode,
        cluster: &[ClusterNode],
    ) -> Result<ResetOutcome, ClusterError> {
        super::remove_node(node, cluster, self.access, self.deadline).await
    }

    async fn replace(
        &self,
        cluster: &[ClusterNode],
        node: &ClusterNode,
        replacement: &Replacement,
    ) -> Result<(), ClusterError> {
        super::replace_node(
            cluster,
            node,
            replacement,
            self.power,
            self.access,
            self.deadline,
        )
        .await
    }

    async fn apply_new(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError> {
        super::apply_configs(nodes, self.access, self.deadline).await
    }

    async fn apply_running(&self, node: &ClusterNode) -> Result<Applied, ClusterError> {
        super::bring_up::apply_running(node, self.access, self.deadline).await
    }

    async fn wait_rebooted(&self, node: &ClusterNode, boot: &str) -> Result<(), ClusterError> {
        super::reboot::wait_rebooted(node, boot, self.access, self.deadline).await
    }

    async fn bootstrap(&self, node: &ClusterNode) -> Result<(), ClusterError> {
        super::bootstrap(node, self.access, self.deadline).await
    }

    async fn wait_configured(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError> {
        super::wait_configured(nodes, self.access, self.deadline).await
    }

    async fn wait_healthy(&self, cluster: &[ClusterNode]) -> Result<(), ClusterError> {
        super::wait_healthy(cluster, self.access, self.deadline).await
    }

    async fn upgrade(
        &self,
        cluster: &[ClusterNode],
        nodes: &[ClusterNode],
        reinstall: bool,
    ) -> Result<(), ClusterError> {
        super::upgrade_nodes(
            cluster,
            nodes,
            &super::upgrade::Target {
                image: self.image,
                tag: self.target,
                extensions: self.extensions,
            },
            reinstall,
            self.access,
            self.deadline,
        )
        .await
    }

    async fn kubernetes_releases(&self, node: &ClusterNode) -> Result<Releases, ClusterError> {
        Ok(kubernetes_upgrade::read_releases(node, self.access, self.deadline).await)
    }

    async fn wait_component(
        &self,
        node: &ClusterNode,
        component: Component,
        version: &str,
    ) -> Result<(), ClusterError> {
        kubernetes_upgrade::wait_component(node, component, version, self.access, self.deadline)
            .await
    }

    async fn sync_bootstrap_manifests(&self, cluster: &[ClusterNode]) -> Result<(), ClusterError> {
        let objects = super::manifests_sync::manifests_for(cluster, self.release_images)
            .map_err(ClusterError::Credentials)?;
        super::manifests_sync::sync_manifests(&objects, self.access, self.deadline).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::talos::cluster::plan::{plan, Current, Desired};
    use crate::talos::config::Role;

    /// Records every call; `reboots` names the nodes whose apply answers with a reboot.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
        reboots: Vec<String>,
        refuse_apply: Option<String>,
        refuse_remove: Option<String>,
    }

    impl Recorder {
        fn log(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn joined(nodes: &[ClusterNode]) -> String {
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    #[async_trait]
    impl NodeOperations for Recorder {
        async fn remove(
            &self,
            node: &ClusterNode,
            _cluster: &[ClusterNode],
        ) -> Result<ResetOutcome, ClusterError> {
            self.log(format!("remove {}", node.name));
            match &self.refuse_remove {
                Some(name) if *name == node.name => Err(ClusterError::Credentials(format!(
                    "draining node {name}: pod default/web could not be evicted"
                ))),
                _ => Ok(ResetOutcome::Reset),
            }
        }
        async fn replace(
            &self,
            _cluster: &[ClusterNode],
            node: &ClusterNode,
            replacement: &Replacement,
        ) -> Result<(), ClusterError> {
            self.log(format!(
                "replace {} {:?} -> {:?}",
                node.name, replacement.old_vm, replacement.new_vm
            ));
            Ok(())
        }
        async fn apply_new(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError> {
            self.log(format!("apply {}", joined(nodes)));
            match &self.refuse_apply {
                Some(name) if nodes.iter().any(|n| &n.name == name) => {
                    Err(ClusterError::Rejected {
                        node: name.clone(),
                        ip: nodes[0].ip,
                        message: "unknown keys found during decoding".into(),
                    })
                }
                _ => Ok(()),
            }
        }
        async fn apply_running(&self, node: &ClusterNode) -> Result<Applied, ClusterError> {
            self.log(format!("apply {}", node.name));
            Ok(if self.reboots.contains(&node.name) {
                Applied::Rebooting {
                    boot: format!("boot-of-{}", node.name),
                }
            } else {
                Applied::InPlace
            })
        }
        async fn wait_rebooted(&self, node: &ClusterNode, boot: &str) -> Result<(), ClusterError> {
            self.log(format!("wait rebooted {} from {boot}", node.name));
            Ok(())
        }
        async fn bootstrap(&self, node: &ClusterNode) -> Result<(), ClusterError> {
            self.log(format!("bootstrap {}", node.name));
            Ok(())
        }
        async fn wait_configured(&self, nodes: &[ClusterNode]) -> Result<(), ClusterError> {
            self.log(format!("wait configured {}", joined(nodes)));
            Ok(())
        }
        async fn wait_healthy(&self, _cluster: &[ClusterNode]) -> Result<(), ClusterError> {
            self.log("wait healthy".into());
            Ok(())
        }
        async fn upgrade(
            &self,
            _cluster: &[ClusterNode],
            nodes: &[ClusterNode],
            reinstall: bool,
        ) -> Result<(), ClusterError> {
            self.log(format!("upgrade {} reinstall={reinstall}", joined(nodes)));
            Ok(())
        }
        async fn kubernetes_releases(&self, _: &ClusterNode) -> Result<Releases, ClusterError> {
            Ok(Releases::new())
        }
        async fn wait_component(
            &self,
            node: &ClusterNode,
            component: Component,
            version: &str,
        ) -> Result<(), ClusterError> {
            self.log(format!("wait {} {} {version}", node.name, component.name()));
            Ok(())
        }
        async fn sync_bootstrap_manifests(&self, _: &[ClusterNode]) -> Result<(), ClusterError> {
            self.log("sync manifests".into());
            Ok(())
        }
    }

    fn node(name: &str, role: Role, config: &str) -> ClusterNode {
        ClusterNode::on_loopback(name, role, config)
    }

    fn cluster(config: &str) -> Vec<ClusterNode> {
        vec![
            node("cp-1", Role::ControlPlane, config),
            node("cp-2", Role::ControlPlane, config),
            node("cp-3", Role::ControlPlane, config),
            node("w-1", Role::Worker, config),
        ]
    }

    fn desired(nodes: &[ClusterNode]) -> Desired {
        Desired::on_v1_12(nodes.to_vec())
    }

    fn running(nodes: &[ClusterNode]) -> Current {
        Current::running_v1_12(nodes)
    }

    async fn run(
        current: Option<&Current>,
        nodes: &[ClusterNode],
        ops: &Recorder,
    ) -> Result<(), ClusterError> {
        let steps = plan(current, &desired(nodes));
        let removed: Vec<ClusterNode> = current
            .map(|c| c.nodes.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !nodes.iter().any(|m| m.name == n.name))
            .collect();
        execute(&steps, nodes, &removed, ops, &mut Report::default()).await
    }

    #[tokio::test]
    async fn a_new_cluster_waits_for_its_workers_only_after_the_bootstrap() {
        let ops = Recorder::default();
        run(None, &cluster("a"), &ops).await.unwrap();
        assert_eq!(
            ops.calls(),
            vec![
                "apply cp-1,cp-2,cp-3",
                "bootstrap cp-1",
                "apply w-1",
                "wait configured cp-1,cp-2,cp-3,w-1",
                "wait healthy",
                "upgrade cp-1,cp-2,cp-3,w-1 reinstall=false",
            ]
        );
    }

    #[tokio::test]
    async fn a_config_that_reboots_is_rolled_one_control_plane_at_a_time() {
        let ops = Recorder {
            reboots: vec!["cp-1".into(), "cp-2".into(), "cp-3".into(), "w-1".into()],
            ..Default::default()
        };
        run(Some(&running(&cluster("a"))), &cluster("b"), &ops)
            .await
            .unwrap();
        let calls = ops.calls();
        // Each node is back from its reboot and the cluster healthy before the next is touched.
        let expected_head: Vec<String> = ["cp-1", "cp-2", "cp-3", "w-1"]
            .iter()
            .flat_map(|n| {
                [
                    format!("apply {n}"),
                    format!("wait rebooted {n} from boot-of-{n}"),
                    "wait healthy".to_string(),
                ]
            })
            .collect();
        assert_eq!(calls[..12], expected_head[..], "{calls:#?}");
    }

    #[tokio::test]
    async fn a_config_taken_in_place_does_not_wait_for_a_reboot() {
        let ops = Recorder::default();
        run(Some(&running(&cluster("a"))), &cluster("b"), &ops)
            .await
            .unwrap();
        assert!(
            !ops.calls().iter().any(|c| c.starts_with("wait rebooted")),
            "{:?}",
            ops.calls()
        );
    }

    #[tokio::test]
    async fn a_control_plane_that_refuses_its_config_stops_before_any_worker_is_touched() {
        let ops = Recorder {
            refuse_apply: Some("cp-2".into()),
            ..Default::default()
        };
        let error = run(None, &cluster("a"), &ops).await.unwrap_err();
        assert!(error.to_string().contains("unknown keys"), "{error}");
        assert_eq!(ops.calls(), vec!["apply cp-1,cp-2,cp-3"]);
    }

    #[tokio::test]
    async fn a_moved_control_plane_is_healthy_at_its_new_address_before_any_other_node_changes() {
        let before = cluster("a");
        let mut after = cluster("b");
        after[1].ip = "127.0.0.220".parse().unwrap();
        let ops = Recorder::default();
        run(Some(&running(&before)), &after, &ops).await.unwrap();
        assert_eq!(
            ops.calls()[..4],
            ["apply cp-2", "wait healthy", "apply cp-1", "apply cp-3"],
            "{:?}",
            ops.calls()
        );
    }

    #[tokio::test]
    async fn a_removed_control_plane_is_reset_before_the_others_are_touched() {
        let before = cluster("a");
        let after: Vec<ClusterNode> = before
            .iter()
            .filter(|n| n.name != "cp-3")
            .cloned()
            .collect();
        let ops = Recorder::default();
        run(Some(&running(&before)), &after, &ops).await.unwrap();
        assert_eq!(ops.calls()[0], "remove cp-3");
        assert_eq!(ops.calls()[1], "bootstrap cp-1");
    }

    #[tokio::test]
    async fn replaced_machines_go_one_at_a_time_control_planes_first() {
        let before = cluster("a");
        let mut current = running(&before);
        let mut wanted = desired(&before);
        for (name, old, new) in [
            ("cp-1", "pve1/100", "pve1/200"),
            ("w-1", "pve1/103", "pve1/203"),
            ("cp-3", "pve1/102", "pve1/202"),
        ] {
            let machine = |vm: &str| crate::talos::cluster::Machine {
                vm: Some(vm.into()),
                mac: None,
            };
            current.machines.insert(name.into(), machine(old));
            wanted.machines.insert(name.into(), machine(new));
        }
        let steps = plan(Some(&current), &wanted);
        let ops = Recorder::default();
        execute(&steps, &before, &[], &ops, &mut Report::default())
            .await
            .unwrap();
        let calls = ops.calls();
        assert_eq!(
            calls[..3],
            [
                "replace cp-1 Some(\"pve1/100\") -> Some(\"pve1/200\")",
                "replace cp-3 Some(\"pve1/102\") -> Some(\"pve1/202\")",
                "replace w-1 Some(\"pve1/103\") -> Some(\"pve1/203\")",
            ],
            "{calls:#?}"
        );
        assert_eq!(
            calls[3], "bootstrap cp-2",
            "the control plane that kept its machine is asked: {calls:#?}"
        );
    }

    #[tokio::test]
    async fn a_replaced_machine_from_an_older_template_is_upgraded_to_talos_version_after_it_joined(
    ) {
        // cp-2's new VM boots an older template (it is given that release's documents when it
        // answers in maintenance, see `ClusterNode::config_for`): once it joined and the
        // cluster is healthy, it goes through the upgrade to the target release, alone.
        let mut before = cluster("a");
        before[1]
            .earlier
            .insert("v1.11".into(), "a in v1.11 documents".into());
        let mut current = running(&before);
        let mut wanted = desired(&before);
        let machine = |vm: &str| crate::talos::cluster::Machine {
            vm: Some(vm.into()),
            mac: None,
        };
        current.machines.insert("cp-2".into(), machine("pve1/101"));
        wanted.machines.insert("cp-2".into(), machine("pve1/201"));
        let steps = plan(Some(&current), &wanted);
        let ops = Recorder::default();
        execute(&steps, &before, &[], &ops, &mut Report::default())
            .await
            .unwrap();
        let calls = ops.calls();
        let replaced = calls
            .iter()
            .position(|c| c.starts_with("replace cp-2"))
            .expect("cp-2 replaced");
        let upgraded = calls
            .iter()
            .position(|c| c == "upgrade cp-2 reinstall=false")
            .unwrap_or_else(|| panic!("cp-2 is not upgraded: {calls:#?}"));
        assert!(replaced < upgraded, "{calls:#?}");
        assert_eq!(
            calls[upgraded - 1],
            "wait healthy",
            "upgraded once the cluster is healthy: {calls:#?}"
        );
        // Only the new machine: the others already run the target release.
        assert_eq!(
            calls.iter().filter(|c| c.starts_with("upgrade")).count(),
            1,
            "{calls:#?}"
        );
    }

    #[tokio::test]
    async fn a_node_that_cannot_be_drained_fails_the_apply_before_anything_else_changes() {
        let mut before = cluster("a");
        before.push(node("w-2", Role::Worker, "a"));
        let after: Vec<ClusterNode> = before[..3].to_vec();
        let ops = Recorder {
            refuse_remove: Some("w-1".into()),
            ..Default::default()
        };
        let error = run(Some(&running(&before)), &after, &ops)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("pod default/web"), "{error}");
        // w-2 is not touched, no config is applied: the next apply starts from the same place.
        assert_eq!(ops.calls(), vec!["remove w-1"]);
    }

    #[tokio::test]
    async fn removed_control_planes_leave_one_at_a_time() {
        let mut before = cluster("a");
        before.push(node("cp-4", Role::ControlPlane, "a"));
        before.push(node("cp-5", Role::ControlPlane, "a"));
        let after: Vec<ClusterNode> = before[..4].to_vec();
        let ops = Recorder::default();
        run(Some(&running(&before)), &after, &ops).await.unwrap();
        assert_eq!(ops.calls()[..2], ["remove cp-4", "remove cp-5"]);
    }
}

//! Kubernetes upgrades as `talosctl upgrade-k8s` runs them (Talos: pkg/cluster/kubernetes/
//! talos_managed.go, kubelet.go, patch.go (v1.12.0)): each component in turn, one node at a
//! time, through the node's machine config; kube-apiserver, kube-controller-manager and
//! kube-scheduler on the control planes, each static pod Ready on the new release before the
//! next node; kube-proxy's image in the control planes' configs; the kubelets, control planes
//! first, each Node reporting the release and Ready; then the bootstrap manifests (flannel,
//! kube-proxy, CoreDNS) applied again through the Kubernetes API, since Talos creates them only
//! once, 1.13 included (internal/app/machined/pkg/controllers/k8s/manifest_apply.go); see
//! [`super::manifests_sync`].
//!
//! talosctl patches the running config; castle applies the node's desired config with the
//! components not yet due held at the release they run. Like talosctl (`errUpdateSkipped`),
//! a component that already runs the release is skipped: the releases are read back from the
//! cluster, never assumed, so an upgrade cut short resumes where it stopped.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::bring_up::pending;
use super::execute::{Applied, NodeOperations};
use super::poll::poll;
use super::{Access, ClusterError, ClusterNode};
use crate::kubernetes::versions::Running;
use crate::kubernetes::KubeClient;
use crate::talos::config::{component_tag, with_component_tags, Component};

/// What each component of a node runs now, by component.
pub type Releases = BTreeMap<Component, String>;

/// Runs [`super::Step::UpgradeKubernetes`]: `nodes` are the running nodes, `cluster` every
/// node (for health checks after a config that reboots).
pub async fn upgrade_kubernetes(
    ops: &impl NodeOperations,
    cluster: &[ClusterNode],
    nodes: &[ClusterNode],
    version: &str,
) -> Result<(), ClusterError> {
    let mut order: Vec<&ClusterNode> = nodes.iter().filter(|n| n.is_control_plane()).collect();
    order.extend(nodes.iter().filter(|n| !n.is_control_plane()));
    let mut running: BTreeMap<String, Releases> = BTreeMap::new();
    for node in &order {
        running.insert(node.name.clone(), ops.kubernetes_releases(node).await?);
    }
    for component in Component::ALL {
        for node in order.iter().copied() {
            if component_tag(&node.config, component).is_none() {
                continue;
            }
            let live = running.entry(node.name.clone()).or_default();
            let done = live.get(&component).map(String::as_str) == Some(version);
            // The kubelet is the last stage of every node: its config goes in even when the
            // kubelet already runs the release, so that each node ends on its desired config.
            if done && component != Component::Kubelet {
                tracing::info!(node = %node.name, component = component.name(), version, "already upgraded");
                continue;
            }
            let held: Vec<(Component, String)> = Component::ALL
                .into_iter()
                .filter(|later| *later > component)
                .filter_map(|later| Some((later, live.get(&later)?.clone())))
                .filter(|(_, release)| release != version)
                .collect();
            let config = if held.is_empty() {
                node.config.clone()
            } else {
                with_component_tags(&node.config, &held)
                    .map_err(|e| ClusterError::Credentials(format!("node {}: {e}", node.name)))?
            };
            let staged = ClusterNode {
                config,
                ..(*node).clone()
            };
            if !done {
                tracing::info!(node = %node.name, component = component.name(), version, "upgrading");
            }
            if let Applied::Rebooting { boot } = ops.apply_running(&staged).await? {
                ops.wait_rebooted(&staged, &boot).await?;
                ops.wait_healthy(cluster).await?;
            }
            // kube-proxy runs from the bootstrap manifests, synced below.
            if !done && component != Component::Proxy {
                ops.wait_component(node, component, version).await?;
            }
            live.insert(component, version.to_string());
        }
    }
    ops.sync_bootstrap_manifests(cluster).await
}

fn kube_error(node: &ClusterNode, check: &str, e: impl std::fmt::Display) -> super::poll::Pending {
    pending(check, node, e.to_string())
}

/// The releases the components of `node` run, read from the Kubernetes API (a VIP that
/// answers nothing between two holders is waited out until `deadline`); a component it
/// cannot see (the API down, a pod not posted yet) is left out and goes to the target at once.
pub async fn read_releases(node: &ClusterNode, access: &Access, deadline: Instant) -> Releases {
    let mut releases = Releases::new();
    let Ok(kube) = KubeClient::new(&access.kube).map(|k| k.patient_until(deadline)) else {
        return releases;
    };
    if node.is_control_plane() {
        for component in Component::ALL.into_iter().filter(|c| c.is_static_pod()) {
            if let Ok(Some(pod)) = kube.static_pod(&node.name, component.name()).await {
                releases.insert(component, pod.version);
            }
        }
        if let Ok(Some(tag)) = kube
            .workload_tag("daemonsets", "kube-proxy", "kube-proxy")
            .await
        {
            releases.insert(Component::Proxy, tag);
        }
    }
    if let Ok(Some(kubelet)) = kube.kubelet(&node.name).await {
        releases.insert(Component::Kubelet, kubelet.version);
    }
    releases
}

/// Waits until `component` runs `version` on `node` and is Ready: its static pod, or its Node.
pub async fn wait_component(
    node: &ClusterNode,
    component: Component,
    version: &str,
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let check = format!("{} to run {version} and be Ready", component.name());
    let kube = KubeClient::new(&access.kube).map_err(|source| ClusterError::Kubernetes {
        action: "reach".into(),
        object: "the cluster's API".into(),
        source,
    })?;
    poll(deadline, pending(&check, node, String::new()), || async {
        let seen = if component == Component::Kubelet {
            kube.kubelet(&node.name).await
        } else {
            kube.static_pod(&node.name, component.name()).await
        };
        Ok(match seen {
            Ok(Some(Running {
                version: v,
                ready: true,
            })) if v == version => Ok(()),
            Ok(Some(Running { version: v, ready })) => Err(pending(
                &check,
                node,
                format!("runs {v}{}", if ready { "" } else { ", not Ready" }),
            )),
            Ok(None) => Err(pending(&check, node, "not reported yet".into())),
            Err(e) => Err(kube_error(node, &check, e)),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::talos::cluster::ResetOutcome;
    use crate::talos::config::Role;

    fn config(role: Role, version: &str) -> String {
        let mut c = format!(
            "version: v1alpha1\nmachine:\n  kubelet:\n    image: ghcr.io/siderolabs/kubelet:{version}\n"
        );
        if role == Role::ControlPlane {
            c.push_str(&format!(
                "cluster:\n  apiServer:\n    image: registry.k8s.io/kube-apiserver:{version}\n  controllerManager:\n    \
                 image: registry.k8s.io/kube-controller-manager:{version}\n  scheduler:\n    \
                 image: registry.k8s.io/kube-scheduler:{version}\n  proxy:\n    image: registry.k8s.io/kube-proxy:{version}\n"
            ));
        }
        c
    }

    fn node(name: &str, role: Role) -> ClusterNode {
        ClusterNode::on_loopback(name, role, &config(role, "v1.35.0"))
    }

    /// A cluster whose components move when a config names a new image; `fail_once` names a
    /// node whose next apply is refused (a fault), once.
    #[derive(Default)]
    struct FakeCluster {
        releases: Mutex<BTreeMap<String, Releases>>,
        calls: Mutex<Vec<String>>,
        fail_once: Mutex<Option<String>>,
        /// The next manifests sync fails (the API server goes away), once.
        fail_sync_once: Mutex<bool>,
    }

    impl FakeCluster {
        fn at(nodes: &[ClusterNode], version: &str) -> Self {
            let fake = FakeCluster::default();
            for n in nodes {
                let releases = Component::ALL
                    .into_iter()
                    .filter(|c| component_tag(&n.config, *c).is_some())
                    .map(|c| (c, version.to_string()))
                    .collect();
                fake.releases
                    .lock()
                    .unwrap()
                    .insert(n.name.clone(), releases);
            }
            fake
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl NodeOperations for FakeCluster {
        async fn remove(
            &self,
            _: &ClusterNode,
            _: &[ClusterNode],
        ) -> Result<ResetOutcome, ClusterError> {
            unreachable!()
        }
        async fn replace(
            &self,
            _: &[ClusterNode],
            _: &ClusterNode,
            _: &crate::talos::cluster::Replacement,
        ) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn apply_new(&self, _: &[ClusterNode]) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn apply_running(&self, node: &ClusterNode) -> Result<Applied, ClusterError> {
            if self
                .fail_once
                .lock()
                .unwrap()
                .take_if(|n| *n == node.name)
                .is_some()
            {
                return Err(ClusterError::Rejected {
                    node: node.name.clone(),
                    ip: node.ip,
                    message: "injected".into(),
                });
            }
            let mut releases = self.releases.lock().unwrap();
            let live = releases.entry(node.name.clone()).or_default();
            let mut moved = Vec::new();
            for c in Component::ALL {
                if let Some(tag) = component_tag(&node.config, c) {
                    if live.get(&c) != Some(&tag) {
                        moved.push(format!("{} {tag}", c.name()));
                        live.insert(c, tag);
                    }
                }
            }
            self.calls
                .lock()
                .unwrap()
                .push(format!("apply {}: {}", node.name, moved.join(", ")));
            Ok(Applied::InPlace)
        }
        async fn wait_rebooted(&self, _: &ClusterNode, _: &str) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn bootstrap(&self, _: &ClusterNode) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn wait_configured(&self, _: &[ClusterNode]) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn wait_healthy(&self, _: &[ClusterNode]) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn upgrade(
            &self,
            _: &[ClusterNode],
            _: &[ClusterNode],
            _: bool,
        ) -> Result<(), ClusterError> {
            unreachable!()
        }
        async fn kubernetes_releases(&self, node: &ClusterNode) -> Result<Releases, ClusterError> {
            Ok(self
                .releases
                .lock()
                .unwrap()
                .get(&node.name)
                .cloned()
                .unwrap_or_default())
        }
        async fn wait_component(
            &self,
            node: &ClusterNode,
            component: Component,
            version: &str,
        ) -> Result<(), ClusterError> {
            let live = self.releases.lock().unwrap()[&node.name][&component].clone();
            assert_eq!(
                live,
                version,
                "{} on {} waited for before it moved",
                component.name(),
                node.name
            );
            self.calls
                .lock()
                .unwrap()
                .push(format!("wait {} {}", node.name, component.name()));
            Ok(())
        }
        async fn sync_bootstrap_manifests(&self, _: &[ClusterNode]) -> Result<(), ClusterError> {
            if std::mem::take(&mut *self.fail_sync_once.lock().unwrap()) {
                return Err(ClusterError::Timeout {
                    check: "the rollout of DaemonSet kube-system/kube-proxy".into(),
                    node: "the cluster".into(),
                    last: "1 of 3 pods ready".into(),
                });
            }
            self.calls.lock().unwrap().push("sync manifests".into());
            Ok(())
        }
    }

    fn cluster() -> Vec<ClusterNode> {
        vec![
            node("cp-1", Role::ControlPlane),
            node("cp-2", Role::ControlPlane),
            node("w-1", Role::Worker),
        ]
    }

    #[tokio::test]
    async fn components_move_one_control_plane_at_a_time_then_kubelets_then_manifests() {
        let nodes = cluster();
        let fake = FakeCluster::at(&nodes, "v1.34.2");
        upgrade_kubernetes(&fake, &nodes, &nodes, "v1.35.0")
            .await
            .unwrap();
        assert_eq!(
            fake.calls(),
            vec![
                "apply cp-1: kube-apiserver v1.35.0",
                "wait cp-1 kube-apiserver",
                "apply cp-2: kube-apiserver v1.35.0",
                "wait cp-2 kube-apiserver",
                "apply cp-1: kube-controller-manager v1.35.0",
                "wait cp-1 kube-controller-manager",
                "apply cp-2: kube-controller-manager v1.35.0",
                "wait cp-2 kube-controller-manager",
                "apply cp-1: kube-scheduler v1.35.0",
                "wait cp-1 kube-scheduler",
                "apply cp-2: kube-scheduler v1.35.0",
                "wait cp-2 kube-scheduler",
                "apply cp-1: kube-proxy v1.35.0",
                "apply cp-2: kube-proxy v1.35.0",
                "apply cp-1: kubelet v1.35.0",
                "wait cp-1 kubelet",
                "apply cp-2: kubelet v1.35.0",
                "wait cp-2 kubelet",
                "apply w-1: kubelet v1.35.0",
                "wait w-1 kubelet",
                "sync manifests",
            ]
        );
    }

    /// The calls of an upgrade from v1.34.2 to v1.35.0 run again after a first run that `cut`
    /// made fail with an error naming `named`.
    async fn calls_resuming_after(cut: impl FnOnce(&FakeCluster), named: &str) -> Vec<String> {
        let nodes = cluster();
        let fake = FakeCluster::at(&nodes, "v1.34.2");
        cut(&fake);
        let error = upgrade_kubernetes(&fake, &nodes, &nodes, "v1.35.0")
            .await
            .unwrap_err();
        assert!(error.to_string().contains(named), "{error}");
        fake.calls.lock().unwrap().clear();
        upgrade_kubernetes(&fake, &nodes, &nodes, "v1.35.0")
            .await
            .unwrap();
        fake.calls()
    }

    #[tokio::test]
    async fn an_upgrade_cut_short_resumes_where_it_stopped() {
        let calls = calls_resuming_after(
            |fake| *fake.fail_once.lock().unwrap() = Some("w-1".into()),
            "w-1",
        )
        .await;
        // The control planes only get their (unchanged) final config; nothing waits again
        // but the worker that did not move.
        assert_eq!(
            calls,
            vec![
                "apply cp-1: ",
                "apply cp-2: ",
                "apply w-1: kubelet v1.35.0",
                "wait w-1 kubelet",
                "sync manifests",
            ]
        );
    }

    #[tokio::test]
    async fn an_upgrade_cut_short_after_the_kubelets_resumes_with_the_manifests() {
        let calls = calls_resuming_after(
            |fake| *fake.fail_sync_once.lock().unwrap() = true,
            "kube-proxy",
        )
        .await;
        // Every component already runs the release: no wait, only the final configs (which
        // change nothing) and the manifests.
        assert_eq!(
            calls,
            vec![
                "apply cp-1: ",
                "apply cp-2: ",
                "apply w-1: ",
                "sync manifests"
            ]
        );
    }
}

//! The last stage of a Kubernetes upgrade: the bootstrap manifests a control plane's config
//! renders (flannel, kube-proxy, CoreDNS with their RBAC, ConfigMaps and Service) applied
//! again with server-side apply, then every Deployment and DaemonSet among them waited for
//! until its rollout is complete. Talos before 1.13 creates these objects once and never
//! updates them; `talosctl upgrade-k8s` does it after the kubelets.
// Talos: pkg/cluster/kubernetes/talos_managed.go (v1.12.0 syncManifests; v1.13 syncManifestsSSA
// with go-kubernetes kubernetes/ssa, field manager "talos"); go-kubernetes
// kubernetes/manifests/sync.go (each object retried on retryable errors and conflicts) and
// rollout.go (Deployments, then DaemonSets: generation observed, every pod updated, ready,
// available).

use serde_json::Value;
use tokio::time::Instant;

use super::poll::{bounded, poll, Pending};
use super::{Access, ClusterError, ClusterNode};
use crate::kubernetes::{KubeClient, KubeError};
use crate::talos::config::bootstrap_manifests::{bootstrap_manifests, describe, ReleaseImages};

/// The objects to apply: what the first control plane's desired config renders.
pub fn manifests_for(
    cluster: &[ClusterNode],
    images: ReleaseImages<'_>,
) -> Result<Vec<Value>, String> {
    let Some(control_plane) = cluster.iter().find(|n| n.is_control_plane()) else {
        return Ok(Vec::new());
    };
    bootstrap_manifests(&control_plane.config, images)
        .map_err(|e| format!("node {}: {e}", control_plane.name))
}

/// A refusal worth retrying: the API server busy or restarting, an optimistic-lock conflict.
// go-kubernetes: kubernetes/errors.go IsRetryableError (timeouts, too many requests, service
// unavailable, connection refused/reset), and sync.go retries apierrors.IsConflict.
fn retryable(error: &KubeError) -> bool {
    match error {
        KubeError::Transport { .. } => true,
        KubeError::Status { status, .. } => matches!(status, 409 | 429 | 500 | 502 | 503 | 504),
        KubeError::Credentials(_) => false,
    }
}

/// Applies `objects` in order, then waits for the rollouts; all bounded by `deadline`.
pub async fn sync_manifests(
    objects: &[Value],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    if objects.is_empty() {
        return Ok(());
    }
    let kube = KubeClient::new(&access.kube).map_err(|source| ClusterError::Kubernetes {
        action: "reach".into(),
        object: "the cluster's API".into(),
        source,
    })?;
    let endpoint = format!("the cluster ({})", access.kube.server);
    for object in objects {
        let what = describe(object);
        let waiting = Pending {
            check: format!("the server-side apply of {what}"),
            node: endpoint.clone(),
            last: String::new(),
        };
        poll(deadline, waiting.clone(), || async {
            match bounded(deadline, kube.server_side_apply(object)).await {
                None => Ok(Err(Pending {
                    last: "no answer".into(),
                    ..waiting.clone()
                })),
                Some(Ok(_)) => Ok(Ok(())),
                Some(Err(e)) if retryable(&e) => Ok(Err(Pending {
                    last: e.to_string(),
                    ..waiting.clone()
                })),
                Some(Err(source)) => Err(ClusterError::Kubernetes {
                    action: "server-side apply".into(),
                    object: what.clone(),
                    source,
                }),
            }
        })
        .await?;
        tracing::info!(object = %what, "bootstrap manifest applied");
    }
    let mut workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    workloads.extend(objects.iter().filter(|o| o["kind"] == "DaemonSet"));
    for object in workloads {
        let what = describe(object);
        let waiting = Pending {
            check: format!("the rollout of {what}"),
            node: endpoint.clone(),
            last: String::new(),
        };
        poll(deadline, waiting.clone(), || async {
            let pending = |last: String| {
                Ok(Err(Pending {
                    last,
                    ..waiting.clone()
                }))
            };
            match bounded(deadline, kube.rollout(object)).await {
                None => pending("no answer".into()),
                Some(Ok(None)) => pending("not found".into()),
                Some(Ok(Some(rollout))) => match rollout.pending() {
                    None => Ok(Ok(())),
                    Some(missing) => pending(missing),
                },
                Some(Err(e)) if retryable(&e) => pending(e.to_string()),
                Some(Err(source)) => Err(ClusterError::Kubernetes {
                    action: "read the rollout of".into(),
                    object: what.clone(),
                    source,
                }),
            }
        })
        .await?;
        tracing::info!(object = %what, "rolled out");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::config::Role;

    fn node(name: &str, role: Role, config: &str) -> ClusterNode {
        ClusterNode::on_loopback(name, role, config)
    }

    const IMAGES: ReleaseImages<'static> = ReleaseImages {
        coredns: "registry.k8s.io/coredns/coredns:v1.13.2",
        flannel: "ghcr.io/siderolabs/flannel:v0.27.4",
    };

    #[test]
    fn the_set_comes_from_a_control_planes_config_never_a_workers() {
        let worker = node("w-1", Role::Worker, "version: v1alpha1\nmachine: {}\n");
        let cp = node(
            "cp-1",
            Role::ControlPlane,
            "version: v1alpha1\ncluster:\n  proxy:\n    image: registry.k8s.io/kube-proxy:v1.35.0\n  coreDNS:\n    disabled: true\n",
        );
        let objects = manifests_for(&[worker.clone(), cp], IMAGES).unwrap();
        let kinds: Vec<String> = objects.iter().map(describe).collect();
        assert!(kinds.contains(&"DaemonSet kube-system/kube-proxy".to_string()));
        assert!(kinds.contains(&"DaemonSet kube-system/kube-flannel".to_string()));
        assert!(!kinds.iter().any(|k| k.contains("coredns")), "{kinds:?}");
        assert!(manifests_for(&[worker], IMAGES).unwrap().is_empty());
    }

    #[test]
    fn conflicts_and_an_api_server_restarting_are_retried_an_invalid_object_is_not() {
        let status = |status| KubeError::Status {
            url: "https://127.0.0.1:6443/x".into(),
            status,
            message: String::new(),
        };
        assert!(retryable(&status(409)));
        assert!(retryable(&status(503)));
        assert!(!retryable(&status(422)));
        assert!(!retryable(&status(403)));
    }
}

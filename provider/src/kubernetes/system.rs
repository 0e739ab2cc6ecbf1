//! The Kubernetes part of `talosctl health` (Talos: pkg/cluster/check/default.go and
//! kubernetes.go): the static pods of every control plane Ready, kube-proxy and CoreDNS Ready
//! when the cluster runs them, every node schedulable. Failures are worded as talosctl words
//! them.

use serde::Deserialize;

use super::{KubeClient, KubeError};

#[derive(Debug, Deserialize)]
pub(crate) struct List<T> {
    #[serde(default = "Vec::new")]
    pub(crate) items: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectMeta {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) namespace: String,
    #[serde(default)]
    pub(crate) uid: String,
    #[serde(default)]
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) owner_references: Vec<OwnerReference>,
    /// When the pod's deletion was asked (RFC 3339); it goes once its kubelet confirms.
    #[serde(default)]
    pub(crate) deletion_timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct OwnerReference {
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) controller: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Pod {
    #[serde(default)]
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    pub(crate) status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PodStatus {
    #[serde(default)]
    pub(crate) phase: String,
    #[serde(default)]
    pub(crate) conditions: Vec<Condition>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Condition {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) status: String,
}

impl Pod {
    pub(crate) fn ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True")
    }
}

#[derive(Debug, Deserialize)]
struct Node {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: NodeSpec,
}

#[derive(Debug, Default, Deserialize)]
struct NodeSpec {
    #[serde(default)]
    unschedulable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DaemonSetStatus {
    #[serde(default)]
    desired_number_scheduled: usize,
}

#[derive(Debug, Deserialize)]
struct DaemonSet {
    status: DaemonSetStatus,
}

#[derive(Debug, Deserialize)]
struct DeploymentSpec {
    #[serde(default)]
    replicas: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Deployment {
    spec: DeploymentSpec,
}

/// Why the cluster is not healthy yet, or why we could not tell.
#[derive(Debug)]
pub enum SystemError {
    /// The API did not answer as expected.
    Api(KubeError),
    /// A check failed: talosctl's words.
    Unhealthy(String),
}

impl std::fmt::Display for SystemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SystemError::Api(e) => e.fmt(f),
            SystemError::Unhealthy(m) => f.write_str(m),
        }
    }
}

impl From<KubeError> for SystemError {
    fn from(e: KubeError) -> Self {
        SystemError::Api(e)
    }
}

fn unhealthy(message: String) -> SystemError {
    SystemError::Unhealthy(message)
}

/// Names of the pods that are not Ready, as talosctl lists them (`[a b]`).
fn not_ready(pods: &[Pod]) -> Vec<&str> {
    pods.iter()
        .filter(|p| !p.ready())
        .map(|p| p.metadata.name.as_str())
        .collect()
}

/// Every control plane runs its kube-apiserver, kube-scheduler and kube-controller-manager
/// static pods (mirror pods `APP-NODE`), Ready (Talos: pkg/cluster/check/kubernetes.go
/// `K8sControlPlaneStaticPods` and `K8sFullControlPlaneAssertion`).
pub(crate) fn check_static_pods(pods: &[Pod], control_planes: &[&str]) -> Result<(), String> {
    for node in control_planes {
        let missing: Vec<String> = STATIC_PODS
            .iter()
            .filter(|app| {
                !pods
                    .iter()
                    .any(|p| p.metadata.name == format!("{app}-{node}"))
            })
            .map(|app| format!("kube-system/{app}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing static pods on node {node}: [{}]",
                missing.join(" ")
            ));
        }
    }
    for app in STATIC_PODS {
        let waiting: Vec<&str> = pods
            .iter()
            .filter(|p| p.metadata.name.starts_with(&format!("{app}-")))
            .filter(|p| {
                control_planes
                    .iter()
                    .any(|n| p.metadata.name == format!("{app}-{n}"))
            })
            .filter(|p| !p.ready())
            .map(|p| p.metadata.name.as_str())
            .collect();
        if !waiting.is_empty() {
            return Err(format!(
                "some pods are not ready for {app}: [{}]",
                waiting.join(" ")
            ));
        }
    }
    Ok(())
}

const STATIC_PODS: [&str; 3] = [
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
];

/// `replicas` pods matching a selector are Ready (Talos: `K8sPodReadyAssertion`).
pub(crate) fn check_pods_ready(
    pods: &[Pod],
    replicas: usize,
    selector: &str,
) -> Result<(), String> {
    if pods.is_empty() {
        return Err(format!(
            "no pods found for namespace \"kube-system\" and label selector \"{selector}\""
        ));
    }
    let ready = pods.iter().filter(|p| p.ready()).count();
    if ready == 0 {
        return Err(format!(
            "no ready pods found for namespace \"kube-system\" and label selector \"{selector}\""
        ));
    }
    if ready != replicas {
        return Err(format!("expected {replicas} ready pods, got {ready}"));
    }
    let waiting = not_ready(pods);
    if !waiting.is_empty() {
        return Err(format!("some pods are not ready: [{}]", waiting.join(" ")));
    }
    Ok(())
}

impl KubeClient {
    async fn kube_system_pods(&self, selector: &str) -> Result<Vec<Pod>, KubeError> {
        let path = format!(
            "/api/v1/namespaces/kube-system/pods?labelSelector={}",
            urlencode(selector)
        );
        Ok(self.get_json::<List<Pod>>(&path).await?.items)
    }

    /// The Kubernetes checks of `talosctl health` after nodes are Ready, in its order: full
    /// control plane (the static pods of each of `control_planes`), kube-proxy Ready if its
    /// DaemonSet exists, CoreDNS Ready if its Deployment exists, every node schedulable.
    pub async fn check_system(&self, control_planes: &[&str]) -> Result<(), SystemError> {
        let statics = self
            .kube_system_pods("k8s-app in (kube-apiserver,kube-scheduler,kube-controller-manager)")
            .await?;
        check_static_pods(&statics, control_planes).map_err(unhealthy)?;

        let selector = "k8s-app=kube-proxy";
        let proxies: List<DaemonSet> = self
            .get_json(&format!(
                "/apis/apps/v1/namespaces/kube-system/daemonsets?labelSelector={}",
                urlencode(selector)
            ))
            .await?;
        if let Some(ds) = proxies.items.first() {
            let pods = self.kube_system_pods(selector).await?;
            check_pods_ready(&pods, ds.status.desired_number_scheduled, selector)
                .map_err(unhealthy)?;
        }

        let selector = "k8s-app=kube-dns";
        let dns: List<Deployment> = self
            .get_json(&format!(
                "/apis/apps/v1/namespaces/kube-system/deployments?labelSelector={}",
                urlencode(selector)
            ))
            .await?;
        if let Some(deployment) = dns.items.first() {
            let pods = self.kube_system_pods(selector).await?;
            check_pods_ready(&pods, deployment.spec.replicas.unwrap_or(1), selector)
                .map_err(unhealthy)?;
        }

        let nodes: List<Node> = self.get_json("/api/v1/nodes").await?;
        let cordoned: Vec<&str> = nodes
            .items
            .iter()
            .filter(|n| n.spec.unschedulable)
            .map(|n| n.metadata.name.as_str())
            .collect();
        if !cordoned.is_empty() {
            return Err(unhealthy(format!(
                "some nodes are not schedulable: [{}]",
                cordoned.join(" ")
            )));
        }
        Ok(())
    }
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
        }))
        .unwrap()
    }

    #[test]
    fn a_control_plane_without_its_scheduler_is_named() {
        let pods = vec![
            pod("kube-apiserver-cp-1", true),
            pod("kube-apiserver-cp-2", true),
            pod("kube-scheduler-cp-1", true),
            pod("kube-controller-manager-cp-1", true),
            pod("kube-controller-manager-cp-2", true),
        ];
        assert_eq!(
            check_static_pods(&pods, &["cp-1", "cp-2"]).unwrap_err(),
            "missing static pods on node cp-2: [kube-system/kube-scheduler]"
        );
    }

    #[test]
    fn a_static_pod_that_is_not_ready_is_named() {
        let pods = vec![
            pod("kube-apiserver-cp-1", false),
            pod("kube-scheduler-cp-1", true),
            pod("kube-controller-manager-cp-1", true),
        ];
        assert_eq!(
            check_static_pods(&pods, &["cp-1"]).unwrap_err(),
            "some pods are not ready for kube-apiserver: [kube-apiserver-cp-1]"
        );
    }

    #[test]
    fn coredns_with_one_of_two_replicas_ready_is_not_healthy() {
        let pods = vec![pod("coredns-a", true), pod("coredns-b", false)];
        assert_eq!(
            check_pods_ready(&pods, 2, "k8s-app=kube-dns").unwrap_err(),
            "expected 2 ready pods, got 1"
        );
        assert!(check_pods_ready(&[], 2, "k8s-app=kube-dns")
            .unwrap_err()
            .starts_with("no pods found"));
    }

    #[test]
    fn selectors_are_percent_encoded() {
        assert_eq!(urlencode("k8s-app in (a,b)"), "k8s-app%20in%20%28a%2Cb%29");
    }
}

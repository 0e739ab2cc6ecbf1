//! What releases the Kubernetes components run, as the cluster reports them (the mirror pods
//! of the static pods, the Node's kubelet version, the kube-proxy DaemonSet): what
//! `talosctl upgrade-k8s` reads through the Kubernetes API to know where an upgrade stands.

use serde_json::Value;

use super::{status_message, KubeClient, KubeError};

/// One component on one node as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The image's tag (`v1.35.0`), or the kubelet's reported version.
    pub version: String,
    /// The pod, or the Node, is Ready.
    pub ready: bool,
}

fn tag(image: &str) -> Option<String> {
    crate::talos::config::kubernetes::image_tag(image).map(str::to_string)
}

fn ready(conditions: &Value) -> bool {
    conditions.as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The image of the container `name` in a pod template or pod spec.
fn container_image(spec: &Value, name: &str) -> Option<String> {
    spec["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?
        .get("image")?
        .as_str()
        .map(str::to_string)
}

impl KubeClient {
    /// The mirror pod of static pod `component` on `node` (label `k8s-app`, as Talos labels
    /// them): its image's tag and Ready condition; `None` when the kubelet has not posted it.
    // Talos: pkg/cluster/kubernetes/talos_managed.go (v1.12.0) checkPodStatus watches the pods
    // labelled `k8s-app=<component>` in kube-system, on the node, until one is Ready.
    pub async fn static_pod(
        &self,
        node: &str,
        component: &str,
    ) -> Result<Option<Running>, KubeError> {
        let path = format!(
            "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3D{component}&fieldSelector=spec.nodeName%3D{node}"
        );
        let list: Value = self.get_json(&path).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["spec"]["nodeName"] == node && p["metadata"]["deletionTimestamp"].is_null()
            })
            .find_map(|p| {
                Some(Running {
                    version: tag(&container_image(&p["spec"], component)?)?,
                    ready: ready(&p["status"]["conditions"]),
                })
            }))
    }

    /// The Node's `status.nodeInfo.kubeletVersion` and Ready condition; `None` when it is not
    /// registered.
    // Talos: pkg/cluster/kubernetes/kubelet.go (v1.12.0) checkNodeKubeletVersion.
    pub async fn kubelet(&self, node: &str) -> Result<Option<Running>, KubeError> {
        let (status, body) = self
            .send(reqwest::Method::GET, &format!("/api/v1/nodes/{node}"), None)
            .await?;
        if status == 404 {
            return Ok(None);
        }
        let item: Value = serde_json::from_str(&body).map_err(|_| KubeError::Status {
            url: format!("{}/api/v1/nodes/{node}", self.server()),
            status,
            message: status_message(&body),
        })?;
        if status != 200 {
            return Err(KubeError::Status {
                url: format!("{}/api/v1/nodes/{node}", self.server()),
                status,
                message: status_message(&body),
            });
        }
        Ok(item["status"]["nodeInfo"]["kubeletVersion"]
            .as_str()
            .map(|v| Running {
                version: v.to_string(),
                ready: ready(&item["status"]["conditions"]),
            }))
    }

    /// The tag of the image of container `container` in a kube-system workload's pod
    /// template (`daemonsets` or `deployments`); `None` when the object is absent.
    pub async fn workload_tag(
        &self,
        resource: &str,
        name: &str,
        container: &str,
    ) -> Result<Option<String>, KubeError> {
        let path = format!("/apis/apps/v1/namespaces/kube-system/{resource}/{name}");
        let (status, body) = self.send(reqwest::Method::GET, &path, None).await?;
        match status {
            404 => Ok(None),
            200 => {
                let object: Value = serde_json::from_str(&body).unwrap_or_default();
                Ok(
                    container_image(&object["spec"]["template"]["spec"], container)
                        .and_then(|i| tag(&i)),
                )
            }
            _ => Err(KubeError::Status {
                url: format!("{}{path}", self.server()),
                status,
                message: status_message(&body),
            }),
        }
    }
}

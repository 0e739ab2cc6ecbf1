//! Server-side apply of whole objects, and the rollout state of a DaemonSet or Deployment:
//! what `talosctl upgrade-k8s` does with the bootstrap manifests once the kubelets run the
//! new release.
// go-kubernetes: kubernetes/ssa (v0.2.38, Talos v1.13 `syncManifestsSSA`) applies each object
// with server-side apply as field manager "talos" (pkg/machinery/constants
// KubernetesFieldManagerName); kubernetes/manifests/rollout.go (v0.2.28) waits for each
// Deployment, then each DaemonSet, by generation and replica counts.

use serde_json::Value;

use super::{status_message, KubeClient, KubeError};

/// The field manager Talos applies its manifests as.
pub const FIELD_MANAGER: &str = "talos";

/// Where an object of one of the bootstrap manifests' kinds lives in the API: the path of the
/// object itself; `None` for a kind castle does not apply.
pub fn object_path(object: &Value) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    let (prefix, plural) = match kind {
        "ConfigMap" | "ServiceAccount" | "Service" => {
            ("/api/v1", format!("{}s", kind.to_lowercase()))
        }
        "ClusterRole" | "ClusterRoleBinding" => (
            "/apis/rbac.authorization.k8s.io/v1",
            format!("{}s", kind.to_lowercase()),
        ),
        "DaemonSet" | "Deployment" => ("/apis/apps/v1", format!("{}s", kind.to_lowercase())),
        _ => return None,
    };
    Some(match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{plural}/{name}"),
        None => format!("{prefix}/{plural}/{name}"),
    })
}

/// How far a DaemonSet's or Deployment's rollout got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed: i64,
    /// Pods wanted (`desiredNumberScheduled`, or `status.replicas`).
    pub desired: i64,
    /// Pods on the current template (`updatedNumberScheduled`, `updatedReplicas`).
    pub updated: i64,
    /// Pods Ready (`numberReady`, `readyReplicas`).
    pub ready: i64,
    /// Pods available (`numberAvailable`; a Deployment's ready count).
    pub available: i64,
}

impl Rollout {
    fn read(kind: &str, object: &Value) -> Self {
        let n = |p: &str| object.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        let generation = n("/metadata/generation");
        let observed = n("/status/observedGeneration");
        if kind == "DaemonSet" {
            Rollout {
                generation,
                observed,
                desired: n("/status/desiredNumberScheduled"),
                updated: n("/status/updatedNumberScheduled"),
                ready: n("/status/numberReady"),
                available: n("/status/numberAvailable"),
            }
        } else {
            Rollout {
                generation,
                observed,
                desired: n("/status/replicas"),
                updated: n("/status/updatedReplicas"),
                ready: n("/status/readyReplicas"),
                available: n("/status/readyReplicas"),
            }
        }
    }

    /// `None` when done, or what is still missing, in the words of the check that failed.
    pub fn pending(&self) -> Option<String> {
        if self.observed < self.generation {
            return Some(format!(
                "generation {} not observed yet (observed {})",
                self.generation, self.observed
            ));
        }
        let missing = [
            ("up to date", self.updated),
            ("ready", self.ready),
            ("available", self.available),
        ]
        .into_iter()
        .find(|(_, n)| *n != self.desired)?;
        Some(format!(
            "{} of {} pods {}",
            missing.1, self.desired, missing.0
        ))
    }
}

impl KubeClient {
    /// Server-side applies `object` as [`FIELD_MANAGER`], taking over fields another manager
    /// set (`force`); the object as the API server stored it.
    // Kubernetes: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (PATCH with
    // application/apply-patch+yaml creates the object when it is absent; `fieldManager` is
    // required for apply, `force` resolves conflicts in the applier's favour).
    pub async fn server_side_apply(&self, object: &Value) -> Result<Value, KubeError> {
        let path = object_path(object).ok_or_else(|| KubeError::Status {
            url: self.server().to_string(),
            status: 0,
            message: format!("castle cannot apply objects of kind {}", object["kind"]),
        })?;
        let query = format!("{path}?fieldManager={FIELD_MANAGER}&force=true");
        let (status, text) = self
            .send(
                reqwest::Method::PATCH,
                &query,
                Some(("application/apply-patch+yaml", object.to_string())),
            )
            .await?;
        match status {
            200 | 201 => Ok(serde_json::from_str(&text).unwrap_or_default()),
            _ => Err(KubeError::Status {
                url: format!("{}{query}", self.server()),
                status,
                message: status_message(&text),
            }),
        }
    }

    /// The rollout of a DaemonSet or Deployment `object` names; `None` when it is absent.
    pub async fn rollout(&self, object: &Value) -> Result<Option<Rollout>, KubeError> {
        let kind = object["kind"].as_str().unwrap_or_default();
        let Some(path) = object_path(object) else {
            return Ok(None);
        };
        let (status, text) = self.send(reqwest::Method::GET, &path, None).await?;
        match status {
            404 => Ok(None),
            200 => Ok(Some(Rollout::read(
                kind,
                &serde_json::from_str(&text).unwrap_or_default(),
            ))),
            _ => Err(KubeError::Status {
                url: format!("{}{path}", self.server()),
                status,
                message: status_message(&text),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_are_found_at_their_group_and_namespace() {
        let cm = json!({ "kind": "ConfigMap", "metadata": { "name": "coredns", "namespace": "kube-system" } });
        assert_eq!(
            object_path(&cm).unwrap(),
            "/api/v1/namespaces/kube-system/configmaps/coredns"
        );
        let role = json!({ "kind": "ClusterRole", "metadata": { "name": "system:coredns" } });
        assert_eq!(
            object_path(&role).unwrap(),
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns"
        );
        assert_eq!(
            object_path(&json!({ "kind": "Secret", "metadata": { "name": "x" } })),
            None
        );
    }

    #[test]
    fn a_rollout_is_done_when_the_new_generation_is_observed_and_every_pod_is_updated_and_ready() {
        let ds = |generation: i64, observed: i64, updated: i64, ready: i64| {
            Rollout::read(
                "DaemonSet",
                &json!({ "metadata": { "generation": generation }, "status": {
                    "observedGeneration": observed, "desiredNumberScheduled": 3,
                    "updatedNumberScheduled": updated, "numberReady": ready, "numberAvailable": ready } }),
            )
        };
        assert_eq!(ds(2, 2, 3, 3).pending(), None);
        assert_eq!(
            ds(3, 2, 3, 3).pending().unwrap(),
            "generation 3 not observed yet (observed 2)"
        );
        assert_eq!(ds(2, 2, 1, 3).pending().unwrap(), "1 of 3 pods up to date");
        assert_eq!(ds(2, 2, 3, 2).pending().unwrap(), "2 of 3 pods ready");
    }
}

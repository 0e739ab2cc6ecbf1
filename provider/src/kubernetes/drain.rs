//! Draining a node the way `kubectl drain --ignore-daemonsets --delete-emptydir-data --force`
//! does (Kubernetes: staging/src/k8s.io/kubectl/pkg/drain/drain.go, filters.go, cordon.go):
//! cordon, evict every pod that is neither a mirror pod nor a DaemonSet's through the policy/v1
//! Eviction subresource, retry evictions a PodDisruptionBudget refuses (429) every few seconds,
//! wait for the evicted pods to be gone, all within one deadline. The node stays cordoned.
//!
//! On a node whose kubelet is dead (Ready `False` or `Unknown`) an evicted pod only gets its
//! deletion timestamp: nothing confirms its end, so it stays Terminating until the Node object
//! goes. As `kubectl drain --skip-wait-for-delete-timeout` does (drain.go `waitForDelete` and
//! `shouldSkipPod`, filters.go `skipDeletedFilter`), a pod whose deletion timestamp is older
//! than [`DrainOptions::skip_wait_for_delete`] is not waited for there.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::time::Instant;

use super::system::{urlencode, Condition, List, Pod};
use super::{status_message, KubeClient, KubeError};

/// Bounds and pacing of a drain.
#[derive(Debug, Clone, Copy)]
pub struct DrainOptions {
    /// The whole drain (cordon, evictions, waiting for the pods to go).
    pub timeout: Duration,
    /// Pause before evicting again a pod whose budget refused (kubectl: 5 s).
    pub budget_retry: Duration,
    /// Interval of the checks that evicted pods are gone (kubectl: 1 s).
    pub poll: Duration,
    /// On a node that is not Ready, pods deleted longer ago than this are not waited for
    /// (kubectl's `--skip-wait-for-delete-timeout`).
    pub skip_wait_for_delete: Duration,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            timeout: Duration::from_secs(300),
            budget_retry: Duration::from_secs(5),
            poll: Duration::from_secs(1),
            skip_wait_for_delete: Duration::from_secs(1),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// `namespace/name` of the evicted pods.
    pub evicted: Vec<String>,
    /// DaemonSet pods left in place (they tolerate the cordon).
    pub ignored: Vec<String>,
}

/// Why a drain did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The API failed.
    #[error("draining node {node}: {source}")]
    Api {
        /// Node.
        node: String,
        /// What failed.
        #[source]
        source: KubeError,
    },
    /// A PodDisruptionBudget refused an eviction until the deadline.
    #[error(
        "draining node {node}: pod {pod} could not be evicted within {} s: {message} \
         Let the budget allow a disruption (more ready replicas, a lower minAvailable), then apply again; \
         the node stays cordoned",
        waited.as_secs()
    )]
    Blocked {
        /// Node.
        node: String,
        /// `namespace/name`.
        pod: String,
        /// The API server's refusal and its cause (the budget's name and counts).
        message: String,
        /// How long the drain tried.
        waited: Duration,
    },
    /// Evicted pods were still there at the deadline (terminating on a node that does not
    /// answer, or a long grace period).
    #[error("draining node {node}: pods {} were evicted but still exist after {} s", pods.join(", "), waited.as_secs())]
    Lingering {
        /// Node.
        node: String,
        /// `namespace/name` of each.
        pods: Vec<String>,
        /// How long the drain tried.
        waited: Duration,
    },
}

/// How `kubectl drain` treats a pod (drain/filters.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodAction {
    /// A static pod's mirror: the kubelet owns it; skipped.
    SkipMirror,
    /// Managed by a DaemonSet: ignored (`--ignore-daemonsets`).
    IgnoreDaemonSet,
    /// Evicted.
    Evict,
}

/// The filter of one pod.
pub(crate) fn action(pod: &Pod) -> PodAction {
    if pod
        .metadata
        .annotations
        .contains_key("kubernetes.io/config.mirror")
    {
        return PodAction::SkipMirror;
    }
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    if daemon && !matches!(pod.status.phase.as_str(), "Succeeded" | "Failed") {
        return PodAction::IgnoreDaemonSet;
    }
    PodAction::Evict
}

/// Whether the drain stops waiting for `pod`, an evicted pod still there: only on a node
/// that is not Ready, once its deletion timestamp is older than `after` (kubectl: drain.go
/// `shouldSkipPod`, whole seconds, strictly older).
fn skip_wait(pod: &Pod, node_ready: bool, after: Duration, now: OffsetDateTime) -> bool {
    let Some(deleted) = pod
        .metadata
        .deletion_timestamp
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    else {
        return false;
    };
    !node_ready && (now - deleted).whole_seconds() > after.as_secs() as i64
}

#[derive(Debug, Default, Deserialize)]
struct NodeObject {
    #[serde(default)]
    status: NodeConditions,
}

#[derive(Debug, Default, Deserialize)]
struct NodeConditions {
    #[serde(default)]
    conditions: Vec<Condition>,
}

/// Whether the node's Ready condition is `True`, from its object as the API answers it.
fn node_ready(body: &str) -> bool {
    serde_json::from_str::<NodeObject>(body)
        .map(|n| {
            n.status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True")
        })
        .unwrap_or(true)
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name)
}

/// The message of a 429 with its causes: "Cannot evict ... budget. (The disruption budget web
/// needs 1 healthy pods and has 1 currently)".
fn refusal(body: &str) -> String {
    let mut message = status_message(body);
    let causes: Vec<String> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["details"]["causes"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["message"].as_str().map(str::to_string))
        .collect();
    if !causes.is_empty() {
        message = format!("{message} ({})", causes.join("; "));
    }
    message
}

impl KubeClient {
    /// Sets `spec.unschedulable` as kubectl cordon does (a strategic merge patch). `Ok(false)`
    /// when the node is not registered.
    pub async fn cordon(&self, node: &str) -> Result<bool, KubeError> {
        Ok(self.cordon_node(node).await?.is_some())
    }

    /// Cordons `node`; whether it is Ready, `None` when it is not registered.
    async fn cordon_node(&self, node: &str) -> Result<Option<bool>, KubeError> {
        let path = format!("/api/v1/nodes/{node}");
        let (status, body) = self
            .send(
                Method::PATCH,
                &path,
                Some((
                    "application/strategic-merge-patch+json",
                    json!({ "spec": { "unschedulable": true } }).to_string(),
                )),
            )
            .await?;
        match status {
            200..=299 => Ok(Some(node_ready(&body))),
            404 => Ok(None),
            _ => Err(KubeError::Status {
                url: format!("{}{path}", self.server),
                status,
                message: status_message(&body),
            }),
        }
    }

    /// Cordons `node`, evicts its pods (budgets respected) and waits until they are gone,
    /// within `options.timeout`. A node that is not registered has nothing to drain.
    pub async fn drain(&self, node: &str, options: &DrainOptions) -> Result<Drained, DrainError> {
        let start = Instant::now();
        let deadline = start + options.timeout;
        let api = |source| DrainError::Api {
            node: node.to_string(),
            source,
        };
        let Some(ready) = self.cordon_node(node).await.map_err(api)? else {
            return Ok(Drained::default());
        };
        let path = format!(
            "/api/v1/pods?fieldSelector={}",
            urlencode(&format!("spec.nodeName={node}"))
        );
        let pods: List<Pod> = self.get_json(&path).await.map_err(api)?;
        let mut drained = Drained::default();
        let mut pending: Vec<&Pod> = Vec::new();
        for pod in &pods.items {
            match action(pod) {
                PodAction::SkipMirror => {}
                PodAction::IgnoreDaemonSet => drained.ignored.push(key(pod)),
                PodAction::Evict => pending.push(pod),
            }
        }
        let mut evicted: Vec<&Pod> = Vec::new();
        while !pending.is_empty() {
            let mut blocked = Vec::new();
            for pod in pending {
                let m = &pod.metadata;
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}/eviction",
                    m.namespace, m.name
                );
                let body = json!({
                    "apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": { "name": m.name, "namespace": m.namespace },
                    "deleteOptions": {},
                });
                let (status, answer) = self
                    .send(
                        Method::POST,
                        &path,
                        Some(("application/json", body.to_string())),
                    )
                    .await
                    .map_err(api)?;
                match status {
                    200..=299 => {
                        tracing::info!(node, pod = %key(pod), "evicted");
                        evicted.push(pod);
                    }
                    404 => {}
                    429 => {
                        tracing::info!(node, pod = %key(pod), "eviction refused by a disruption budget; retrying");
                        blocked.push((pod, refusal(&answer)));
                    }
                    _ => {
                        return Err(api(KubeError::Status {
                            url: format!("{}{path}", self.server),
                            status,
                            message: status_message(&answer),
                        }))
                    }
                }
            }
            if let Some((pod, message)) = blocked.first() {
                if Instant::now() + options.budget_retry > deadline {
                    return Err(DrainError::Blocked {
                        node: node.to_string(),
                        pod: key(pod),
                        message: message.clone(),
                        waited: start.elapsed(),
                    });
                }
                tokio::time::sleep(options.budget_retry).await;
            }
            pending = blocked.into_iter().map(|(p, _)| p).collect();
        }
        // Wait until each evicted pod is gone (or replaced by another with its name).
        loop {
            let mut lingering = Vec::new();
            for pod in &evicted {
                let m = &pod.metadata;
                let path = format!("/api/v1/namespaces/{}/pods/{}", m.namespace, m.name);
                let (status, body) = self.send(Method::GET, &path, None).await.map_err(api)?;
                let same = (status == 200)
                    .then(|| serde_json::from_str::<Pod>(&body).ok())
                    .flatten()
                    .filter(|p| p.metadata.uid == m.uid);
                match same {
                    Some(p)
                        if skip_wait(
                            &p,
                            ready,
                            options.skip_wait_for_delete,
                            OffsetDateTime::now_utc(),
                        ) =>
                    {
                        tracing::info!(node, pod = %key(pod), "not waiting for the pod: its node is not Ready and its deletion is older than {} s", options.skip_wait_for_delete.as_secs());
                    }
                    Some(_) => lingering.push(key(pod)),
                    None => {}
                }
            }
            if lingering.is_empty() {
                break;
            }
            if Instant::now() + options.poll > deadline {
                return Err(DrainError::Lingering {
                    node: node.to_string(),
                    pods: lingering,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(options.poll).await;
        }
        drained.evicted = evicted.iter().map(|p| key(p)).collect();
        Ok(drained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn at(t: &str) -> OffsetDateTime {
        OffsetDateTime::parse(t, &Rfc3339).unwrap()
    }

    #[test]
    fn a_pod_evicted_from_a_dead_node_is_not_waited_for_once_its_deletion_is_older_than_the_limit()
    {
        let terminating = pod(json!({ "metadata": { "name": "web-1",
            "deletionTimestamp": "2026-12-01T10:00:00Z" } }));
        let limit = Duration::from_secs(1);
        assert!(skip_wait(
            &terminating,
            false,
            limit,
            at("2026-12-01T10:00:02Z")
        ));
        // kubectl: strictly older, in whole seconds.
        assert!(!skip_wait(
            &terminating,
            false,
            limit,
            at("2026-12-01T10:00:01Z")
        ));
    }

    #[test]
    fn a_pod_on_a_ready_node_or_not_yet_deleted_is_waited_for() {
        let terminating = pod(json!({ "metadata": { "name": "web-1",
            "deletionTimestamp": "2026-12-01T10:00:00Z" } }));
        let running = pod(json!({ "metadata": { "name": "web-2" } }));
        let limit = Duration::from_secs(1);
        let later = at("2026-12-01T10:05:00Z");
        assert!(!skip_wait(&terminating, true, limit, later));
        assert!(!skip_wait(&running, false, limit, later));
    }

    #[test]
    fn a_node_whose_kubelet_stopped_posting_is_not_ready() {
        let unknown = json!({ "status": { "conditions": [
            { "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown" }] } });
        let not_ready =
            json!({ "status": { "conditions": [{ "type": "Ready", "status": "False" }] } });
        let ready = json!({ "status": { "conditions": [{ "type": "Ready", "status": "True" }] } });
        assert!(!node_ready(&unknown.to_string()));
        assert!(!node_ready(&not_ready.to_string()));
        assert!(node_ready(&ready.to_string()));
    }

    #[test]
    fn mirror_and_daemonset_pods_stay_and_the_rest_is_evicted() {
        let mirror = pod(json!({ "metadata": { "name": "kube-apiserver-cp-1",
            "annotations": { "kubernetes.io/config.mirror": "x" } } }));
        let daemon = pod(json!({ "metadata": { "name": "kube-proxy-abcde",
            "ownerReferences": [{ "kind": "DaemonSet", "controller": true }] } }));
        let replica = pod(json!({ "metadata": { "name": "web-1",
            "ownerReferences": [{ "kind": "ReplicaSet", "controller": true }] } }));
        let bare = pod(json!({ "metadata": { "name": "debug" } }));
        assert_eq!(action(&mirror), PodAction::SkipMirror);
        assert_eq!(action(&daemon), PodAction::IgnoreDaemonSet);
        assert_eq!(action(&replica), PodAction::Evict);
        assert_eq!(action(&bare), PodAction::Evict);
    }

    #[test]
    fn a_budget_refusal_names_the_budget_and_its_counts() {
        let body = json!({
            "kind": "Status", "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests", "code": 429,
            "details": { "causes": [{ "reason": "DisruptionBudget",
                "message": "The disruption budget web needs 1 healthy pods and has 1 currently" }] },
        });
        assert_eq!(
            refusal(&body.to_string()),
            "Cannot evict pod as it would violate the pod's disruption budget. \
             (The disruption budget web needs 1 healthy pods and has 1 currently)"
        );
    }

    #[test]
    fn a_blocked_drain_says_which_pod_and_what_to_do() {
        let e = DrainError::Blocked {
            node: "worker-1".into(),
            pod: "default/web-1".into(),
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            waited: Duration::from_secs(60),
        };
        let text = e.to_string();
        assert!(text.starts_with("draining node worker-1: pod default/web-1 could not be evicted within 60 s: Cannot evict pod"), "{text}");
        assert!(text.contains("the node stays cordoned"), "{text}");
    }
}

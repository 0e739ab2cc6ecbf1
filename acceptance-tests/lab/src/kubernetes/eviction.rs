//! The `pods/eviction` subresource (policy/v1 Eviction), as
//! Kubernetes: pkg/registry/core/pod/storage/eviction.go decides it: a pod covered by a
//! PodDisruptionBudget that allows no disruption is refused with 429 TooManyRequests and the
//! budget named in the details; a pod with two budgets is a 500; otherwise the pod gets the
//! `DisruptionTarget` condition `EvictionByEvictionAPI` and is deleted with the grace period of
//! the Eviction's DeleteOptions.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::api::grace_period;
use super::cluster::{Disruption, KubeCluster};
use super::render::View;
use super::status;

/// What the budgets say about evicting one pod.
enum Verdict {
    Allowed,
    /// Budget name, pods it needs healthy, pods healthy now.
    Blocked(String, u32, u32),
    TooManyBudgets,
}

pub(crate) fn evict(cluster: &KubeCluster, namespace: &str, name: &str, body: &[u8]) -> Response {
    let mut store = cluster.sync();
    let now = Instant::now();
    let key = (namespace.to_string(), name.to_string());
    let Some(pod) = store.pods.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        );
    };
    let verdict = {
        let view = View {
            store: &store,
            timings: &cluster.timings,
            now,
        };
        let budgets: Vec<_> = store
            .budgets
            .values()
            .filter(|b| b.namespace == namespace)
            .filter(|b| b.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
            .collect();
        match budgets.as_slice() {
            // A pod already being deleted, or one no budget covers, goes.
            _ if pod.deletion.is_some() => Verdict::Allowed,
            [] => Verdict::Allowed,
            [budget] => {
                let (healthy, desired, allowed) = view
                    .budget_status(&budget.namespace, &budget.name)
                    .unwrap_or_default();
                // An unready pod may go while the budget is met (unhealthyPodEvictionPolicy
                // IfHealthyBudget).
                let ready = store.pod_ready(&pod, &cluster.timings, now);
                if allowed > 0 || (!ready && healthy >= desired) {
                    Verdict::Allowed
                } else {
                    Verdict::Blocked(budget.name.clone(), desired, healthy)
                }
            }
            _ => Verdict::TooManyBudgets,
        }
    };
    match verdict {
        Verdict::Blocked(budget, needs, has) => {
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests",
                "details": { "causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!("The disruption budget {budget} needs {needs} healthy pods and has {has} currently"),
                }] },
                "code": 429,
            });
            (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response()
        }
        Verdict::TooManyBudgets => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ),
        Verdict::Allowed => {
            if let Some(pod) = store.pods.get_mut(&key) {
                if pod.deletion.is_none() {
                    pod.disruption = Some(Disruption::EvictionApi);
                }
            }
            store.delete_pod(&key, grace_period(&HashMap::new(), body), &cluster.timings, now);
            let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 });
            (StatusCode::CREATED, Json(body)).into_response()
        }
    }
}

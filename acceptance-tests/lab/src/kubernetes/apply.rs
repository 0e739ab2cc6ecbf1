//! Server-side apply (`PATCH` with `application/apply-patch+yaml`) of the objects the
//! bootstrap manifests hold besides their workloads: any stored kind (ConfigMaps,
//! ServiceAccounts, RBAC, ...: kept as applied) and Services (the lab's own, whose cluster
//! IPs cannot change). What every apply must carry is checked for all kinds.
// Kubernetes: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (an apply creates
// an absent object; the body's name must match the URL's), staging/src/k8s.io/apimachinery/
// pkg/apis/meta/v1/validation/validation.go ValidatePatchOptions (fieldManager required for
// apply), pkg/apis/core/validation/validation.go ValidateServiceUpdate (cluster IPs "may not
// change once set").

use std::collections::HashMap;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::cluster::KubeCluster;
use super::discovery::Resource;
use super::manifests::ManifestRule;
use super::status;

/// Whether the request is a server-side apply.
pub(crate) fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/apply-patch"))
}

/// The applied object, or the API server's refusal: no field manager, a body that is not
/// YAML, or another name than the URL's.
pub(crate) fn applied_object(
    name: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Value, Response> {
    if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let Ok(doc) = serde_yaml::from_slice::<Value>(body) else {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "error decoding YAML: the body of the request was in an unknown format",
        ));
    };
    let given = doc["metadata"]["name"].as_str().unwrap_or_default();
    if given != name {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            ),
        ));
    }
    Ok(doc)
}

/// Keeps an applied object of a stored kind (ConfigMap, ServiceAccount, RBAC, ...) as the
/// applier wrote it (one manager owns every field): 201 with the metadata the API server adds
/// when it was created, 200 otherwise (a changed object gets a new resourceVersion, and a new
/// generation when its spec changed).
pub(crate) fn apply_kept(
    cluster: &KubeCluster,
    resource: &Resource,
    namespace: Option<&str>,
    doc: Value,
    current: impl Fn(&KubeCluster) -> Option<Value>,
) -> Response {
    let name = doc["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = (
        resource.group.clone(),
        resource.kind.clone(),
        namespace.unwrap_or_default().to_string(),
        name,
    );
    let created = {
        let mut store = cluster.lock();
        match store.objects.get(&key).cloned() {
            None => {
                store.create(&key.0, &key.1, &key.2, doc, ManifestRule::Inventory);
                true
            }
            Some(existing) => {
                let mut updated = doc;
                let body_of = |o: &Value| {
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("metadata");
                        m.remove("status");
                    }
                    o
                };
                if body_of(&updated) != body_of(&existing) {
                    store.revision += 1;
                    let mut metadata = existing["metadata"].clone();
                    metadata["resourceVersion"] = json!(store.revision.to_string());
                    if updated["spec"] != existing["spec"] {
                        let generation = existing["metadata"]["generation"].as_i64().unwrap_or(1);
                        metadata["generation"] = json!(generation + 1);
                    }
                    for field in ["labels", "annotations"] {
                        if !updated["metadata"][field].is_null() {
                            metadata[field] = updated["metadata"][field].clone();
                        }
                    }
                    updated["metadata"] = metadata;
                    store.objects.insert(key, updated);
                }
                false
            }
        }
    };
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, Json(current(cluster).unwrap_or(Value::Null))).into_response()
}

/// An apply of one of the lab's own Services (`kubernetes`, `kube-dns`): refused when it would
/// move the cluster IP; otherwise the Service stays as the lab renders it.
pub(crate) fn apply_service(existing: Option<Value>, doc: &Value) -> Response {
    let Some(existing) = existing else {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the lab serves only its own Services; services \"{name}\" is not one"),
        );
    };
    let wanted: Vec<&str> = match doc["spec"]["clusterIPs"].as_array() {
        Some(ips) => ips.iter().filter_map(Value::as_str).collect(),
        None => doc["spec"]["clusterIP"].as_str().into_iter().collect(),
    };
    let have: Vec<&str> = existing["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !wanted.is_empty() && wanted.first() != have.first() {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "Service \"{}\" is invalid: spec.clusterIPs[0]: Invalid value: {}: may not change once set",
                existing["metadata"]["name"].as_str().unwrap_or_default(),
                json!(wanted)
            ),
        );
    }
    Json(existing).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(manager: Option<&str>) -> HashMap<String, String> {
        manager
            .map(|m| HashMap::from([("fieldManager".to_string(), m.to_string())]))
            .unwrap_or_default()
    }

    #[test]
    fn an_apply_needs_a_field_manager_and_the_urls_name() {
        let body = br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns"}}"#;
        let refused = applied_object("coredns", &query(None), body).unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let refused = applied_object("other", &query(Some("talos")), body).unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(applied_object("coredns", &query(Some("talos")), body).is_ok());
    }

    #[test]
    fn a_services_cluster_ip_may_not_change_once_set() {
        let existing = json!({ "metadata": { "name": "kube-dns" },
            "spec": { "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"] } });
        let moved =
            json!({ "metadata": { "name": "kube-dns" }, "spec": { "clusterIP": "10.96.0.99" } });
        assert_eq!(
            apply_service(Some(existing.clone()), &moved).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let same =
            json!({ "metadata": { "name": "kube-dns" }, "spec": { "clusterIPs": ["10.96.0.10"] } });
        assert_eq!(
            apply_service(Some(existing), &same).status(),
            StatusCode::OK
        );
    }
}

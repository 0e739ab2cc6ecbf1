//! The REST paths of the served resources: list and get (JSON, or a `Table` when kubectl asks),
//! Node patch (cordon) and delete, Pod delete with a grace period, PodDisruptionBudget delete,
//! and the `pods/eviction` subresource that honours PodDisruptionBudgets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::cluster::KubeCluster;
use super::discovery::{self, Resource};
use super::render::{self, View};
use super::{authorize, status, Identity};

/// What a path names.
struct Target<'a> {
    resource: Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn not_found_path(uri: &Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            uri.path()
        ),
    )
}

fn not_found(resource: &Resource, name: &str) -> Response {
    let what = if resource.group.is_empty() {
        resource.name.to_string()
    } else {
        format!("{}.{}", resource.name, resource.group)
    };
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{what} \"{name}\" not found"),
    )
}

/// Splits `/api/v1/...` and `/apis/GROUP/VERSION/...` into group, version and the rest.
fn split(path: &str) -> Option<(&str, &str, Vec<&str>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", version, rest @ ..] => Some(("", *version, rest.to_vec())),
        ["apis", group, version, rest @ ..] => Some((*group, *version, rest.to_vec())),
        _ => None,
    }
}

fn target<'a>(
    served: &[Resource],
    group: &str,
    version: &str,
    rest: &[&'a str],
) -> Option<Target<'a>> {
    let find = |name: &str| discovery::find(served, group, version, name);
    let t = match rest {
        ["namespaces", ns] if group.is_empty() => Target {
            resource: find("namespaces")?,
            namespace: None,
            name: Some(ns),
            subresource: None,
        },
        ["namespaces", ns, res] => Target {
            resource: find(res)?,
            namespace: Some(ns),
            name: None,
            subresource: None,
        },
        ["namespaces", ns, res, name] => Target {
            resource: find(res)?,
            namespace: Some(ns),
            name: Some(name),
            subresource: None,
        },
        ["namespaces", ns, res, name, sub] => Target {
            resource: find(res)?,
            namespace: Some(ns),
            name: Some(name),
            subresource: Some(sub),
        },
        [res] => Target {
            resource: find(res)?,
            namespace: None,
            name: None,
            subresource: None,
        },
        [res, name] => Target {
            resource: find(res)?,
            namespace: None,
            name: Some(name),
            subresource: None,
        },
        _ => return None,
    };
    // A namespaced object needs its namespace; a cluster-wide one has none.
    if t.name.is_some() && t.resource.namespaced != t.namespace.is_some() {
        return None;
    }
    Some(t)
}

/// kubectl asks for a Table in its Accept header; plain clients get the objects.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// Every request the explicit routes do not take.
pub(crate) async fn dispatch(
    State(cluster): State<Arc<KubeCluster>>,
    Extension(id): Extension<Identity>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    let Some((group, version, rest)) = split(uri.path()) else {
        return not_found_path(&uri);
    };
    let served = cluster.lock().served();
    if rest.is_empty() && method == Method::GET {
        return match discovery::resource_list(&served, group, version) {
            Some(list) => Json(list).into_response(),
            None => not_found_path(&uri),
        };
    }
    let Some(t) = target(&served, group, version, &rest) else {
        return not_found_path(&uri);
    };
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    match (&method, t.name, t.subresource) {
        (&Method::GET, None, None) => list(&cluster, &t, &query, wants_table(&headers)),
        (&Method::GET, Some(name), None) => get(&cluster, &t, name, wants_table(&headers)),
        (&Method::PATCH, Some(name), None) if t.resource.name == "nodes" => {
            patch_node(&cluster, name, &body)
        }
        (&Method::PATCH, Some(name), None)
            if matches!(t.resource.name.as_str(), "daemonsets" | "deployments") =>
        {
            patch_workload(&cluster, &t, name, &body)
        }
        (&Method::DELETE, Some(name), None) if t.resource.name == "nodes" => {
            delete_node(&cluster, name)
        }
        (&Method::DELETE, Some(name), None) if t.resource.name == "pods" => delete_pod(
            &cluster,
            t.namespace.unwrap_or_default(),
            name,
            &query,
            &body,
        ),
        (&Method::DELETE, Some(name), None) if t.resource.name == "poddisruptionbudgets" => {
            delete_budget(&cluster, &t, name)
        }
        (&Method::POST, Some(name), Some("eviction")) if t.resource.name == "pods" => {
            super::eviction::evict(&cluster, t.namespace.unwrap_or_default(), name, &body)
        }
        (&Method::DELETE, Some(name), None) if !discovery::modelled(&t.resource) => {
            delete_object(&cluster, &t, name)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({method} {})",
                uri.path()
            ),
        ),
    }
}

/// Label and field selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`,
/// comma-separated, all must hold (Kubernetes: staging/src/k8s.io/apimachinery/pkg/labels/selector.go).
fn matches_selector(selector: &str, lookup: impl Fn(&str) -> Option<String>) -> bool {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let set = |list: &str| -> Vec<String> {
        list.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|v| v.trim().to_string())
            .collect()
    };
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once(" notin ") {
                !lookup(k.trim()).is_some_and(|x| set(v).contains(&x))
            } else if let Some((k, v)) = term.split_once(" in ") {
                lookup(k.trim()).is_some_and(|x| set(v).contains(&x))
            } else if let Some((k, v)) = term.split_once("!=") {
                lookup(k.trim()).as_deref() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                lookup(k.trim()).as_deref() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                lookup(k.trim()).is_none()
            } else {
                lookup(term).is_some()
            }
        })
}

fn field(object: &Value, path: &str) -> Option<String> {
    let mut v = object;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn list(
    cluster: &KubeCluster,
    t: &Target,
    query: &HashMap<String, String>,
    table: bool,
) -> Response {
    let store = cluster.sync();
    let view = View {
        store: &store,
        timings: &cluster.timings,
        now: Instant::now(),
    };
    let mut objects = view.objects(&t.resource, t.namespace);
    if let Some(selector) = query.get("labelSelector") {
        objects.retain(|o| {
            matches_selector(selector, |k| {
                o["metadata"]["labels"]
                    .get(k)
                    .and_then(|v| v.as_str().map(str::to_string))
            })
        });
    }
    if let Some(selector) = query.get("fieldSelector") {
        objects.retain(|o| matches_selector(selector, |k| field(o, k)));
    }
    if table {
        return Json(render::table(&t.resource.name, &objects)).into_response();
    }
    let api_version = if t.resource.group.is_empty() {
        t.resource.version.to_string()
    } else {
        format!("{}/{}", t.resource.group, t.resource.version)
    };
    Json(json!({
        "kind": format!("{}List", t.resource.kind), "apiVersion": api_version,
        "metadata": { "resourceVersion": store.revision.to_string() },
        "items": objects,
    }))
    .into_response()
}

fn one(cluster: &KubeCluster, t: &Target, name: &str) -> Option<Value> {
    let store = cluster.sync();
    let view = View {
        store: &store,
        timings: &cluster.timings,
        now: Instant::now(),
    };
    view.objects(&t.resource, t.namespace)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
}

fn get(cluster: &KubeCluster, t: &Target, name: &str, table: bool) -> Response {
    match one(cluster, t, name) {
        Some(o) if table => Json(render::table(&t.resource.name, &[o])).into_response(),
        Some(o) => Json(o).into_response(),
        None => not_found(&t.resource, name),
    }
}

/// kubectl cordon/uncordon send `{"spec":{"unschedulable":true}}` / `{"spec":{"unschedulable":null}}`
/// as a strategic merge patch (staging/src/k8s.io/kubectl/pkg/drain/cordon.go); labels merge
/// the same way, a null value removing the label.
fn patch_node(cluster: &KubeCluster, name: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    };
    {
        let mut store = cluster.sync();
        let Some(record) = store.nodes.get_mut(name) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("nodes \"{name}\" not found"),
            );
        };
        if let Some(u) = patch["spec"].get("unschedulable") {
            record.unschedulable = u.as_bool().unwrap_or(false);
        }
        if let Some(labels) = patch["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                match v.as_str() {
                    Some(v) => {
                        record.extra_labels.insert(k.clone(), v.to_string());
                    }
                    None => {
                        record.extra_labels.remove(k);
                    }
                }
            }
        }
        store.revision += 1;
    }
    let store = cluster.sync();
    let view = View {
        store: &store,
        timings: &cluster.timings,
        now: Instant::now(),
    };
    Json(view.node(name).unwrap_or_default()).into_response()
}

/// Deletes the Node object; a running kubelet registers it again when it restarts.
fn delete_node(cluster: &KubeCluster, name: &str) -> Response {
    let node = {
        let store = cluster.sync();
        let view = View {
            store: &store,
            timings: &cluster.timings,
            now: Instant::now(),
        };
        view.node(name)
    };
    let Some(node) = node else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        );
    };
    cluster.source.delete(name);
    cluster.lock().delete_node(name);
    Json(node).into_response()
}

/// Deletes a PodDisruptionBudget (`kubectl delete pdb NAME`): evictions of its pods are no
/// longer refused. The answer is the object as it was, as the API server returns a deleted
/// object without finalizers (Kubernetes: staging/src/k8s.io/apiserver/pkg/registry/generic/
/// registry/store.go `Delete`).
fn delete_budget(cluster: &KubeCluster, t: &Target, name: &str) -> Response {
    let Some(object) = one(cluster, t, name) else {
        return not_found(&t.resource, name);
    };
    let key = (
        t.namespace.unwrap_or_default().to_string(),
        name.to_string(),
    );
    cluster.lock().budgets.remove(&key);
    Json(object).into_response()
}

/// Deletes a stored object (`kubectl delete configmap NAME`); the answer is the object as it
/// was. A deleted CustomResourceDefinition takes its custom resources with it (Kubernetes:
/// staging/src/k8s.io/apiextensions-apiserver/pkg/controller/finalizer/crd_finalizer.go).
fn delete_object(cluster: &KubeCluster, t: &Target, name: &str) -> Response {
    let mut store = cluster.lock();
    let key = (
        t.resource.group.clone(),
        t.resource.kind.clone(),
        t.namespace.unwrap_or_default().to_string(),
        name.to_string(),
    );
    let Some(object) = store.objects.remove(&key) else {
        return not_found(&t.resource, name);
    };
    if t.resource.name == "customresourcedefinitions" {
        let group = object["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = object["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        store
            .objects
            .retain(|(g, k, _, _), _| !(*g == group && *k == kind));
    }
    store.revision += 1;
    Json(object).into_response()
}

/// `gracePeriodSeconds` from the query or the DeleteOptions body.
pub(crate) fn grace_period(query: &HashMap<String, String>, body: &[u8]) -> Option<u64> {
    query
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| {
            let options: Value = serde_json::from_slice(body).ok()?;
            options["gracePeriodSeconds"]
                .as_u64()
                .or_else(|| options["deleteOptions"]["gracePeriodSeconds"].as_u64())
        })
}

fn delete_pod(
    cluster: &KubeCluster,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Response {
    let mut store = cluster.sync();
    let key = (namespace.to_string(), name.to_string());
    match store.delete_pod(
        &key,
        grace_period(query, body),
        &cluster.timings,
        Instant::now(),
    ) {
        Some(pod) => {
            let view = View {
                store: &store,
                timings: &cluster.timings,
                now: Instant::now(),
            };
            Json(view.pod(&pod)).into_response()
        }
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        ),
    }
}

/// A patch of a DaemonSet or Deployment (server-side apply, merge or strategic merge: the body
/// is YAML or JSON): the images of the pod template's containers, by name, which is what the
/// bootstrap manifests change from one release to the next. The workload rolls its pods.
fn patch_workload(cluster: &KubeCluster, t: &Target, name: &str, body: &[u8]) -> Response {
    let Ok(patch) = serde_yaml::from_slice::<Value>(body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body of the request was in an unknown format",
        );
    };
    let kind = if t.resource.name == "daemonsets" {
        "DaemonSet"
    } else {
        "Deployment"
    };
    let namespace = t.namespace.unwrap_or_default();
    let containers: Vec<(String, String)> = patch
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c.get("name")?.as_str()?.to_string(),
                c.get("image")?.as_str()?.to_string(),
            ))
        })
        .collect();
    {
        let mut store = cluster.sync();
        let exists = match kind {
            "DaemonSet" => namespace == "kube-system" && store.daemonsets.contains_key(name),
            _ => store
                .workloads
                .contains_key(&(namespace.to_string(), name.to_string())),
        };
        if !exists {
            return not_found(&t.resource, name);
        }
        for (container, image) in &containers {
            if !store.set_image(kind, namespace, name, container, image) {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("{kind}.apps \"{name}\" is invalid: spec.template.spec.containers[0].name: Not found: {container:?}"),
                );
            }
        }
    }
    get(cluster, t, name, false)
}

#[cfg(test)]
mod tests {
    use super::matches_selector;

    #[test]
    fn selectors_as_talos_health_and_kubectl_send_them() {
        let labels = |k: &str| match k {
            "k8s-app" => Some("kube-apiserver".to_string()),
            "tier" => Some("control-plane".to_string()),
            _ => None,
        };
        assert!(matches_selector("k8s-app = kube-apiserver", labels));
        assert!(matches_selector(
            "k8s-app in (kube-apiserver,kube-scheduler),tier",
            labels
        ));
        assert!(!matches_selector("k8s-app notin (kube-apiserver)", labels));
        assert!(!matches_selector("k8s-app=kube-dns", labels));
        assert!(matches_selector("!missing,tier!=worker", labels));
    }
}

//! The emulated Kubernetes API server behind the VIP (port 6443).
//!
//! Just enough of kube-apiserver for `kubectl get nodes` and node deletion: discovery
//! (`/version`, `/api`, `/apis`, `/api/v1`), health (`/readyz`, `/livez`, `/healthz`), nodes as a
//! `NodeList` or, when kubectl asks with `as=Table`, as a `Table`. Clients authenticate with a
//! certificate of the cluster's Kubernetes CA (user = CN, groups = O); anything else gets 401.
//!
//! The node list is not stored here: a [`NodeSource`] (the Talos fleet) computes it on each
//! request, so registration follows the emulated nodes' state.

// Handlers answer with tonic `Status` / axum `Response` errors by design of those frameworks.
#![allow(clippy::result_large_err)]

mod objects;
mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

pub use tls::{run, KubeTls};

/// What the API shows of one node.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// `metadata.name` (the node's hostname).
    pub name: String,
    /// `InternalIP` address.
    pub internal_ip: IpAddr,
    /// Carries the `node-role.kubernetes.io/control-plane` label.
    pub control_plane: bool,
    /// `Ready` condition.
    pub ready: bool,
    /// `metadata.creationTimestamp`.
    pub created: SystemTime,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `status.nodeInfo.osImage`, e.g. `Talos (v1.12.0)`.
    pub os_image: String,
}

/// Where the API reads its nodes from and deletes them.
pub trait NodeSource: Send + Sync + 'static {
    /// Registered nodes, in name order.
    fn nodes(&self) -> Vec<NodeView>;
    /// Deletes a node; returns it, or `None` when absent.
    fn delete(&self, name: &str) -> Option<NodeView>;
}

/// Who sent a request, from the verified client certificate.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A certificate of the cluster CA: user and groups.
    User {
        /// Certificate CN.
        name: String,
        /// Certificate Organizations.
        groups: Vec<String>,
    },
    /// No certificate, or one the CA did not sign.
    Anonymous,
}

/// The routes, for one cluster's node source.
pub fn router(source: Arc<dyn NodeSource>, kubernetes_version: String) -> Router<()> {
    Router::new()
        .route("/version", get(version))
        .route("/readyz", get(health))
        .route("/livez", get(health))
        .route("/healthz", get(health))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(api_v1_resources))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/:name", get(get_node).delete(delete_node))
        .fallback(not_found)
        .with_state(AppState {
            source,
            kubernetes_version,
        })
}

#[derive(Clone)]
struct AppState {
    source: Arc<dyn NodeSource>,
    kubernetes_version: String,
}

/// A `Status` object, kube-apiserver's error body.
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

/// Every route but health and version requires a verified user, as with anonymous auth off.
fn authorize(identity: &Identity) -> Result<(), Response> {
    match identity {
        Identity::User { .. } => Ok(()),
        Identity::Anonymous => Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        )),
    }
}

async fn version(State(app): State<AppState>, Extension(id): Extension<Identity>) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    let v = app.kubernetes_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    Json(json!({
        "major": major, "minor": minor, "gitVersion": format!("v{v}"),
        "gitCommit": "castle-lab", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

async fn health(Extension(id): Extension<Identity>, uri: axum::http::Uri) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    let verbose = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "verbose" || p.starts_with("verbose="))
    });
    let body = if verbose {
        let checks = [
            "ping",
            "log",
            "etcd",
            "poststarthook/start-kube-apiserver-admission-initializer",
        ];
        let mut out: String = checks.iter().map(|c| format!("[+]{c} ok\n")).collect();
        out.push_str(&format!(
            "{} check passed\n",
            uri.path().trim_start_matches('/')
        ));
        out
    } else {
        "ok".to_string()
    };
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn api_versions(Extension(id): Extension<Identity>) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "0.0.0.0:6443" }],
    }))
    .into_response()
}

async fn api_groups(Extension(id): Extension<Identity>) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [] })).into_response()
}

async fn api_v1_resources(Extension(id): Extension<Identity>) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    Json(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [{
            "name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["no"],
        }],
    }))
    .into_response()
}

/// kubectl asks for a Table in its Accept header; plain clients get the object itself.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

async fn list_nodes(
    State(app): State<AppState>,
    Extension(id): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    let nodes = app.source.nodes();
    let body: Value = if wants_table(&headers) {
        objects::table(&nodes)
    } else {
        objects::node_list(&nodes)
    };
    Json(body).into_response()
}

async fn get_node(
    State(app): State<AppState>,
    Extension(id): Extension<Identity>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    match app.source.nodes().into_iter().find(|n| n.name == name) {
        Some(node) if wants_table(&headers) => Json(objects::table(&[node])).into_response(),
        Some(node) => Json(objects::node(&node)).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        ),
    }
}

async fn delete_node(
    State(app): State<AppState>,
    Extension(id): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    match app.source.delete(&name) {
        Some(node) => Json(objects::node(&node)).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("nodes \"{name}\" not found"),
        ),
    }
}

async fn not_found(Extension(id): Extension<Identity>, uri: axum::http::Uri) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "the server could not find the requested resource ({})",
            uri.path()
        ),
    )
}

//! The emulated Kubernetes API server behind the VIP (port 6443).
//!
//! What a user of a Talos cluster and castle's day-2 paths touch: discovery (`/version`, `/api`,
//! `/apis`, group versions), health (`/readyz`, `/livez`, `/healthz`), and the objects of
//! [`cluster`]: Nodes (cordon, delete), Namespaces, Pods (delete, `pods/eviction`), Services,
//! Endpoints, EndpointSlices, DaemonSets, Deployments, PodDisruptionBudgets and
//! VolumeAttachments, as JSON or, when kubectl asks with `as=Table`, as a `Table`. Clients
//! authenticate with a certificate of the cluster's Kubernetes CA (user = CN, groups = O);
//! anything else gets 401.
//!
//! Which nodes run is not stored here: a [`NodeSource`] (the Talos fleet) says so on each
//! request, and the controllers of [`cluster`] follow.

// Handlers answer with tonic `Status` / axum `Response` errors by design of those frameworks.
#![allow(clippy::result_large_err)]

mod api;
pub mod cluster;
mod discovery;
mod eviction;
mod extra;
mod manifests;
mod render;
mod tls;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

pub use cluster::{KubeAddons, KubeCluster, KubeSettings, KubeTimings, WorkloadSpec};
pub use manifests::ManifestRule;
pub use tls::{run, KubeTls};

/// What the kubelet of one running node reports.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// `metadata.name` (the node's hostname).
    pub name: String,
    /// `InternalIP` address.
    pub internal_ip: IpAddr,
    /// Carries the `node-role.kubernetes.io/control-plane` label.
    pub control_plane: bool,
    /// The kubelet is up and posts Ready (the Node is Ready once the network add-ons are in
    /// too, see [`cluster`]).
    pub ready: bool,
    /// `metadata.creationTimestamp`.
    pub created: SystemTime,
    /// `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// The static pods the kubelet runs (control planes), `k8s-app` name and image.
    pub static_pods: Vec<(String, String)>,
    /// `status.nodeInfo.osImage`, e.g. `Talos (v1.12.0)`.
    pub os_image: String,
}

/// Where the API learns which kubelets and API servers run, and deletes Nodes.
pub trait NodeSource: Send + Sync + 'static {
    /// Nodes whose kubelet runs and posts status, in name order. A Node that drops out of this
    /// list stays in the API (its kubelet stopped posting), as with a real control plane.
    fn nodes(&self) -> Vec<NodeView>;
    /// A Node was deleted through the API; returns it, or `None` when absent.
    fn delete(&self, name: &str) -> Option<NodeView>;
    /// Addresses of the API servers that run (they renew their lease in the `kubernetes`
    /// endpoints). By default, the control planes among [`NodeSource::nodes`].
    fn api_servers(&self) -> Vec<IpAddr> {
        self.nodes()
            .into_iter()
            .filter(|n| n.control_plane)
            .map(|n| n.internal_ip)
            .collect()
    }
    /// The release of the kube-apiserver that answers (`v1.35.0`), when known.
    fn api_server_version(&self) -> Option<String> {
        None
    }
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

/// The routes of one cluster's API (every listener of the cluster shares `cluster`).
pub fn router(cluster: Arc<KubeCluster>) -> Router<()> {
    Router::new()
        .route("/version", get(version))
        .route("/readyz", get(health))
        .route("/livez", get(health))
        .route("/healthz", get(health))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/apis/:group", get(api_group))
        .fallback(api::dispatch)
        .with_state(cluster)
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

async fn version(
    State(app): State<Arc<KubeCluster>>,
    Extension(id): Extension<Identity>,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    // The kube-apiserver that answers tells its own release: after an upgrade, the new one.
    let running = app.source.api_server_version();
    let v = running
        .as_deref()
        .unwrap_or(&app.kubernetes_version)
        .trim_start_matches('v');
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
    Json(discovery::api_versions()).into_response()
}

async fn api_groups(
    State(app): State<Arc<KubeCluster>>,
    Extension(id): Extension<Identity>,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    Json(discovery::api_groups(&app.lock().served())).into_response()
}

async fn api_group(
    State(app): State<Arc<KubeCluster>>,
    Extension(id): Extension<Identity>,
    axum::extract::Path(group): axum::extract::Path<String>,
) -> Response {
    if let Err(r) = authorize(&id) {
        return r;
    }
    let served = app.lock().served();
    match discovery::api_group(&served, &group) {
        Some(g) => Json(g).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource (/apis/{group})"),
        ),
    }
}

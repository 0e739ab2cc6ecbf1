//! Errors of cluster operations, each naming the node and saying what to do.

use std::net::IpAddr;

use crate::kubernetes::drain::DrainError;
use crate::kubernetes::KubeError;
use crate::talos::client::TalosError;

/// What went wrong, on which node.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The node runs Talos for another cluster: it is not in maintenance mode and does not
    /// accept this cluster's CA (the "ghost" that keeps etcd from forming).
    #[error(
        "node {node} ({ip}) already belongs to another Talos cluster: it is not in maintenance mode and rejects this \
         cluster's certificates. Wipe it back to maintenance mode (talosctl reset --graceful=false --reboot with that \
         cluster's talosconfig, or recreate the VM), then apply again."
    )]
    ForeignNode {
        /// Node name.
        node: String,
        /// Its address.
        ip: IpAddr,
    },
    /// The node refused its configuration.
    #[error("node {node} ({ip}) rejected its machine configuration: {message}")]
    Rejected {
        /// Node name.
        node: String,
        /// Its address.
        ip: IpAddr,
        /// Talos's reason.
        message: String,
    },
    /// The node refused to upgrade.
    #[error("node {node} ({ip}) refused the upgrade: {message}")]
    UpgradeRefused {
        /// Node name.
        node: String,
        /// Its address.
        ip: IpAddr,
        /// Talos's reason.
        message: String,
    },
    /// The Kubernetes endpoint answers with another cluster's API server: no wait can help.
    #[error(
        "the Kubernetes API at {endpoint} presents a certificate this cluster's Kubernetes CA did not sign: another \
         cluster's API server answers at that address ({detail}). Point castle_talos_cluster's `endpoint` (or `vip`) at \
         this cluster's control planes, or free the address from the cluster that holds it, then apply again."
    )]
    AnotherClustersEndpoint {
        /// The endpoint, e.g. `https://10.0.0.10:6443`.
        endpoint: String,
        /// rustls's verdict.
        detail: String,
    },
    /// A wait ran out of time; says which check, on which node, and the last answer seen.
    #[error("timed out waiting for {check} on {node}: last answer: {last}")]
    Timeout {
        /// The check, e.g. "etcd to be healthy".
        check: String,
        /// Node name (or "the cluster").
        node: String,
        /// What was seen last.
        last: String,
    },
    /// A Talos API call failed for good.
    #[error("Talos API call to {node} ({ip}) failed: {source}")]
    Talos {
        /// Node name.
        node: String,
        /// Its address.
        ip: IpAddr,
        /// The error.
        #[source]
        source: TalosError,
    },
    /// A node that leaves the cluster could not be drained (a PodDisruptionBudget refused until
    /// the deadline, or the Kubernetes API failed); the message names the pod and what to do.
    #[error("{0}")]
    Drain(#[from] DrainError),
    /// The Kubernetes API refused or could not take a call castle needs (during a Kubernetes
    /// upgrade: a bootstrap manifest's object); names the object and what to do.
    #[error(
        "unable to {action} {object} through the Kubernetes API: {source}. {}",
        kube_hint(source, object)
    )]
    Kubernetes {
        /// What castle was doing, e.g. "server-side apply".
        action: String,
        /// The object, e.g. "DaemonSet kube-system/kube-proxy", or "the cluster's API".
        object: String,
        /// The error.
        #[source]
        source: KubeError,
    },
    /// Bad credentials in state or settings.
    #[error("{0}")]
    Credentials(String),
    /// A node booted an older release than `talos_version` that cannot run
    /// `kubernetes_version` before its upgrade (the reason names both and what to do); it was
    /// given nothing.
    #[error("node {node} ({ip}) reports Talos {release}. {reason}")]
    ReleaseCannotRunKubernetes {
        /// Node name.
        node: String,
        /// Its address.
        ip: IpAddr,
        /// What it reported, e.g. `v1.11.5`.
        release: String,
        /// Why, and what to set.
        reason: String,
    },
}

/// What to do about a Kubernetes API error, by its kind. Whatever was done before stays done:
/// the next apply resumes from what the cluster reports.
fn kube_hint(error: &KubeError, object: &str) -> String {
    match error {
        KubeError::Credentials(_) => "The admin kubeconfig's certificates in state cannot be used: the state \
            is damaged; restore it from a backup, then apply again."
            .into(),
        KubeError::Transport { .. } => "Check that the control planes are up and the API server answers at \
            the cluster endpoint, then apply again: the upgrade resumes where it stopped."
            .into(),
        KubeError::Status { status, .. } if *status == 401 || *status == 403 => format!(
            "The admin credentials were refused for {object}; check the cluster's RBAC and that the \
             kubeconfig in state belongs to this cluster, then apply again."
        ),
        KubeError::Status { .. } => format!(
            "Look at {object} in the cluster (kubectl get -o yaml) for what conflicts with the manifest \
             Talos renders (a field changed by hand that Kubernetes does not allow to change); fix or \
             delete it, then apply again: the upgrade resumes with the manifests."
        ),
    }
}

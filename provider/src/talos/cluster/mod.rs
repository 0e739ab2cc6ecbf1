//! Cluster operations over the Talos API and the Kubernetes API, as plain async functions the
//! resource calls: bring nodes up from maintenance mode, bootstrap etcd once, judge health the
//! way talosctl does (but polling in a fraction of a second), re-apply configs, remove and
//! reset nodes. No Terraform types; every wait takes the caller's deadline.

mod bring_up;
mod error;
mod health;
mod poll;
mod teardown;
mod upgrade;

use std::net::IpAddr;

pub use bring_up::{apply_configs, bootstrap, bootstrap_and_wait_healthy, wait_configured};
pub use error::ClusterError;
pub use health::{wait_healthy, HealthCheck};
pub use teardown::{remove_node, reset_nodes, ResetOutcome, UNREACHABLE_GRACE};
pub use upgrade::upgrade_nodes;

use crate::kubernetes::KubeAccess;
use crate::talos::client::{ConnectOptions, Credentials};
use crate::talos::config::Role;

/// One node as the operations need it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// Name in the configuration (also its hostname and Kubernetes node name).
    pub name: String,
    /// Address of its Talos API.
    pub ip: IpAddr,
    /// Control plane or worker.
    pub role: Role,
    /// The machine configuration to apply (YAML documents).
    pub config: String,
}

impl ClusterNode {
    /// True for control planes.
    pub fn is_control_plane(&self) -> bool {
        self.role == Role::ControlPlane
    }
}

/// Credentials for both APIs.
#[derive(Debug, Clone)]
pub struct Access {
    /// The talosconfig's OS CA and `os:admin` client certificate.
    pub talos: Credentials,
    /// The admin kubeconfig's server, CA and client certificate.
    pub kube: KubeAccess,
    /// Port and connect timeout of the Talos API.
    pub connect: ConnectOptions,
}

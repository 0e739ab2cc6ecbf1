//! Cluster operations over the Talos API and the Kubernetes API. `plan.rs` decides, without a
//! node, what an apply does and in which order; `execute.rs` runs those steps through
//! [`NodeOperations`] (the real one calls the functions of the other files: bring nodes up
//! from maintenance mode, bootstrap etcd once, judge health the way talosctl does, upgrade,
//! remove and reset nodes). No Terraform types; every wait takes the caller's deadline.

mod bring_up;
mod error;
mod execute;
mod health;
mod kubernetes_upgrade;
mod manifests_sync;
mod plan;
mod poll;
mod quorum;
mod readiness;
mod reboot;
mod remove;
mod replace;
mod teardown;
mod upgrade;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use bring_up::{apply_configs, bootstrap, check_maintenance_releases, wait_configured};
pub use error::ClusterError;
pub use execute::{execute, Applied, Live, NodeOperations, Report};
pub use health::{wait_healthy, HealthCheck};
pub use plan::{
    extension_names, kubernetes_upgrade, plan, readdressed, replacements, upgrade_reason, Current,
    Desired, Extensions, Machine, Step, UpgradeReason,
};
pub use quorum::{check_quorum, check_replacements, leaving_control_planes};
pub use readiness::{unready_nodes, Unready};
pub use remove::remove_node;
pub use replace::{replace_node, Replacement, VmPower};
pub use teardown::{reset_nodes, ResetOutcome, UNREACHABLE_GRACE};
pub use upgrade::{upgrade_nodes, Target};

use crate::kubernetes::KubeAccess;
use crate::talos::client::{probe, ConnectOptions, Credentials, NodeClient, NodeState};
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
    /// The same configuration in the documents of older release lines, by line (`v1.11`):
    /// what a node still on that release accepts in maintenance mode (see
    /// [`crate::talos::config::earlier_contracts`]). Empty when there is none.
    pub earlier: BTreeMap<String, String>,
    /// Older release lines (`v1.11`) whose node cannot run the cluster's Kubernetes before
    /// its upgrade, with the reason (see
    /// [`crate::talos::config::check_release_runs_kubernetes`]): such a node gets nothing.
    pub unfit: BTreeMap<String, String>,
}

#[cfg(test)]
impl ClusterNode {
    /// A node at 127.0.0.1 with `config`, for unit tests.
    pub(crate) fn on_loopback(name: &str, role: Role, config: &str) -> Self {
        ClusterNode {
            name: name.into(),
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            role,
            config: config.into(),
            earlier: Default::default(),
            unfit: Default::default(),
        }
    }
}

impl ClusterNode {
    /// True for control planes.
    pub fn is_control_plane(&self) -> bool {
        self.role == Role::ControlPlane
    }

    /// The configuration a node that runs `release` (e.g. `v1.11.5`) accepts: the one of its
    /// release line when that is older than the cluster's, else [`ClusterNode::config`].
    pub fn config_for(&self, release: &str) -> &str {
        line_of(&self.earlier, release)
            .map(String::as_str)
            .unwrap_or(&self.config)
    }

    /// Why a node that runs `release` must not be given its config, if it must not.
    pub fn unfit_for(&self, release: &str) -> Option<&str> {
        line_of(&self.unfit, release).map(String::as_str)
    }

    /// Whether a node that ran `release` may run a config of an older contract than
    /// [`ClusterNode::config`]'s, so that it needs its own config again once upgraded.
    pub fn ran_earlier_contract(&self, release: &str) -> bool {
        self.config_for(release) != self.config
    }
}

/// The entry of `by_line` (keyed `v1.11`) of the release line `release` (`v1.11.5`) is on.
fn line_of<'a>(by_line: &'a BTreeMap<String, String>, release: &str) -> Option<&'a String> {
    by_line
        .iter()
        .find(|(line, _)| {
            release
                .strip_prefix(line.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .map(|(_, value)| value)
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

/// The Talos release each node reports now, by name; nodes that do not answer with our
/// credentials are left out.
pub async fn reported_versions(nodes: &[ClusterNode], access: &Access) -> BTreeMap<String, String> {
    let states = futures::future::join_all(
        nodes
            .iter()
            .map(|n| probe(n.ip, &access.talos, &access.connect)),
    )
    .await;
    nodes
        .iter()
        .zip(states)
        .filter_map(|(node, state)| match state {
            NodeState::Configured { talos_version } => Some((node.name.clone(), talos_version)),
            _ => None,
        })
        .collect()
}

/// What the nodes report, releases and extensions, asked at once: a node that does not answer
/// costs one probe timeout, not two (a failed apply must end within its timeout).
pub async fn reported(
    nodes: &[ClusterNode],
    access: &Access,
) -> (BTreeMap<String, String>, BTreeMap<String, Extensions>) {
    tokio::join!(
        reported_versions(nodes, access),
        reported_extensions(nodes, access)
    )
}

/// The system extensions each node runs now and its image's schematic; nodes that do not
/// answer with our credentials are left out.
pub async fn reported_extensions(
    nodes: &[ClusterNode],
    access: &Access,
) -> BTreeMap<String, Extensions> {
    let lists = futures::future::join_all(nodes.iter().map(|n| node_extensions(n, access))).await;
    nodes
        .iter()
        .zip(lists)
        .filter_map(|(node, list)| list.map(|l| (node.name.clone(), l)))
        .collect()
}

/// One node's extensions (names sorted, without the Image Factory's own `schematic`, whose
/// version is the schematic id), or `None` if it does not answer.
pub async fn node_extensions(node: &ClusterNode, access: &Access) -> Option<Extensions> {
    let call = async {
        let client = NodeClient::connect(node.ip, &access.talos, &access.connect).await?;
        client.extensions().await
    };
    let listed = tokio::time::timeout(
        crate::talos::client::probe::PROBE_STEP_TIMEOUT + access.connect.connect_timeout,
        call,
    )
    .await
    .ok()?
    .ok()?;
    let (schematic, others): (Vec<_>, Vec<_>) =
        listed.into_iter().partition(|e| e.name == "schematic");
    let mut names: Vec<String> = others.into_iter().map(|e| e.name).collect();
    names.sort();
    names.dedup();
    Some(Extensions {
        names,
        schematic: schematic.into_iter().next().map(|e| e.version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_on_an_older_release_line_is_sent_that_lines_config() {
        let node = ClusterNode {
            name: "cp-1".into(),
            ip: "127.0.0.1".parse().unwrap(),
            role: Role::ControlPlane,
            config: "v1.12 documents".into(),
            earlier: [("v1.10", "v1.10 documents"), ("v1.11", "v1.11 documents")]
                .map(|(l, c)| (l.to_string(), c.to_string()))
                .into(),
            unfit: Default::default(),
        };
        assert_eq!(node.config_for("v1.11.5"), "v1.11 documents");
        assert_eq!(node.config_for("v1.10.0"), "v1.10 documents");
        assert_eq!(node.config_for("v1.12.0"), "v1.12 documents");
        assert_eq!(node.config_for("v1.13.1"), "v1.12 documents");
        assert_eq!(node.config_for("v1.1.0"), "v1.12 documents");
        assert!(node.ran_earlier_contract("v1.11.5"));
        assert!(!node.ran_earlier_contract("v1.12.0"));
    }
}

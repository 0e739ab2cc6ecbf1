//! Which nodes of a running cluster are not Ready, as a refresh sees them: the node's Ready
//! condition in Kubernetes (what `kubectl get nodes` shows) and whether its Talos API answers.
//! A machine stopped outside Terraform shows both ways: apid stops answering at once, and the
//! node lifecycle controller turns the Node's Ready condition to Unknown once the kubelet has
//! not posted for the node-monitor grace period (Kubernetes:
//! pkg/controller/nodelifecycle/node_lifecycle_controller.go `tryUpdateNodeHealth`).

use std::time::Duration;

use super::ClusterNode;
use crate::kubernetes::{KubeAccess, KubeClient};
use crate::talos::client::NodeState;

/// Bound of the Kubernetes question: a refresh must not hang on an API that does not answer.
const KUBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A node that is not Ready, and how that shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unready {
    /// Name in the configuration (its Kubernetes node name).
    pub name: String,
    /// Its Ready condition when Kubernetes reports it other than `True`, e.g.
    /// "Unknown (NodeStatusUnknown: Kubelet stopped posting node status.)".
    pub kubernetes: Option<String>,
    /// Why its Talos API does not answer, when it does not.
    pub talos: Option<String>,
}

/// The nodes that Kubernetes reports not Ready or whose Talos API does not answer, in the
/// order of `nodes`. `states` are the probes of `nodes`, in the same order. Nodes in
/// maintenance mode or of another cluster are left to their own handling; a node Kubernetes
/// does not know (not registered yet) is not judged by Kubernetes.
pub async fn unready_nodes(
    nodes: &[ClusterNode],
    states: &[NodeState],
    kube: &KubeAccess,
) -> Vec<Unready> {
    let registered = match tokio::time::timeout(KUBE_TIMEOUT, kube_nodes(kube)).await {
        Ok(Ok(registered)) => registered,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "the Kubernetes API did not list the nodes");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!("the Kubernetes API did not list the nodes in time");
            Vec::new()
        }
    };
    judge(nodes, states, &registered)
}

async fn kube_nodes(
    kube: &KubeAccess,
) -> Result<Vec<crate::kubernetes::NodeHealth>, crate::kubernetes::KubeError> {
    KubeClient::new(kube)?.nodes().await
}

fn judge(
    nodes: &[ClusterNode],
    states: &[NodeState],
    registered: &[crate::kubernetes::NodeHealth],
) -> Vec<Unready> {
    nodes
        .iter()
        .zip(states)
        .filter_map(|(node, state)| {
            let kubernetes = registered
                .iter()
                .find(|n| n.name == node.name && !n.ready)
                .map(|n| n.condition.clone());
            let talos = match state {
                NodeState::Unreachable { reason } => Some(reason.clone()),
                _ => None,
            };
            (kubernetes.is_some() || talos.is_some()).then(|| Unready {
                name: node.name.clone(),
                kubernetes,
                talos,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::NodeHealth;
    use crate::talos::config::Role;

    fn node(name: &str) -> ClusterNode {
        ClusterNode::on_loopback(name, Role::Worker, "")
    }

    fn health(name: &str, ready: bool) -> NodeHealth {
        NodeHealth {
            name: name.into(),
            ready,
            condition: if ready {
                String::new()
            } else {
                "Unknown (NodeStatusUnknown: Kubelet stopped posting node status.)".into()
            },
            internal_ip: None,
        }
    }

    fn configured() -> NodeState {
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        }
    }

    #[test]
    fn a_stopped_worker_is_named_with_its_condition_and_its_silent_talos_api() {
        let nodes = [node("w-1"), node("w-2")];
        let states = [
            NodeState::Unreachable {
                reason: "connection refused".into(),
            },
            configured(),
        ];
        let unready = judge(
            &nodes,
            &states,
            &[health("w-1", false), health("w-2", true)],
        );
        assert_eq!(
            unready,
            vec![Unready {
                name: "w-1".into(),
                kubernetes: Some(
                    "Unknown (NodeStatusUnknown: Kubelet stopped posting node status.)".into()
                ),
                talos: Some("connection refused".into()),
            }]
        );
    }

    #[test]
    fn a_machine_just_stopped_is_unready_before_kubernetes_notices() {
        let unready = judge(
            &[node("w-1")],
            &[NodeState::Unreachable {
                reason: "connection refused".into(),
            }],
            &[health("w-1", true)],
        );
        assert_eq!(unready.len(), 1);
        assert_eq!(unready[0].kubernetes, None);
    }

    #[test]
    fn maintenance_and_unregistered_nodes_are_not_judged_here() {
        let unready = judge(
            &[node("w-1"), node("w-2")],
            &[NodeState::Maintenance, configured()],
            &[health("w-1", true)],
        );
        assert!(unready.is_empty());
    }
}

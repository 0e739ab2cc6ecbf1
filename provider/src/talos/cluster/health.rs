//! Health the way talosctl judges it, checked in one pass and repeated until it holds: etcd
//! healthy on every control plane, the same member list everywhere with exactly the control
//! planes in it, each advertising its node's address, apid and kubelet up on every node, then
//! the Kubernetes API ready through the endpoint with every node registered and Ready at its
//! address, the `kubernetes` endpoints exactly the control planes' addresses, then what
//! talosctl checks inside Kubernetes: static pods, kube-proxy, CoreDNS, every node
//! schedulable ([`KubeClient::check_system`]).
//!
//! The addresses matter after a node changed its address: Talos moves the etcd member's peer
//! URL itself once etcd runs at the new address (Talos:
//! internal/app/machined/pkg/controllers/etcd/advertised_peer.go (v1.12.0)), the kubelet
//! reports its new InternalIP, and the old API server lease expires (Kubernetes:
//! pkg/controlplane/reconcilers/lease.go); until then the cluster is not as configured.

use std::collections::BTreeSet;
use std::fmt;

use futures::future::join_all;
use tokio::time::Instant;

use super::poll::{bounded, poll, Pending, ATTEMPT_TIMEOUT};
use super::{Access, ClusterError, ClusterNode};
use crate::kubernetes::KubeClient;
use crate::talos::client::NodeClient;
use crate::talos::proto::machine::{EtcdMember, ServiceInfo};

/// The checks, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// apid answers with our credentials.
    TalosApi,
    /// The etcd service is healthy.
    EtcdHealthy,
    /// Every control plane sees the same members, one per control plane.
    EtcdMembers,
    /// The kubelet service is healthy.
    Kubelet,
    /// `/readyz` through the endpoint.
    KubernetesApi,
    /// Every node registered and Ready.
    NodesReady,
    /// The `kubernetes` endpoints list exactly the control planes' addresses.
    ApiEndpoints,
    /// Static pods, kube-proxy and CoreDNS Ready, every node schedulable.
    SystemPods,
}

impl fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthCheck::TalosApi => "the Talos API (apid) to answer",
            HealthCheck::EtcdHealthy => "etcd to be healthy",
            HealthCheck::EtcdMembers => {
                "the etcd member list to hold exactly the control planes, each at its address"
            }
            HealthCheck::Kubelet => "kubelet to be healthy",
            HealthCheck::KubernetesApi => "the Kubernetes API to be ready through the endpoint",
            HealthCheck::NodesReady => {
                "every node to be registered and Ready in Kubernetes at its address"
            }
            HealthCheck::ApiEndpoints => {
                "the kubernetes endpoints to list exactly the control planes' addresses"
            }
            HealthCheck::SystemPods => {
                "the control plane's static pods, kube-proxy and CoreDNS to be Ready and every node schedulable"
            }
        })
    }
}

/// A failed check: which, where, and what was seen.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The check.
    pub check: HealthCheck,
    /// Node (or "the cluster").
    pub node: String,
    /// The last answer.
    pub last: String,
    /// The endpoint answered with another cluster's API server: waiting cannot help.
    pub another_cluster: bool,
}

impl Failure {
    fn new(check: HealthCheck, node: String, last: String) -> Self {
        Self {
            check,
            node,
            last,
            another_cluster: false,
        }
    }

    /// What the wait does with it: poll again, or stop at once when the endpoint is another
    /// cluster's (`endpoint` is named in the error).
    fn settle(self, endpoint: &str) -> Result<Pending, ClusterError> {
        if self.another_cluster {
            return Err(ClusterError::AnotherClustersEndpoint {
                endpoint: endpoint.to_string(),
                detail: self.last,
            });
        }
        Ok(Pending {
            check: self.check.to_string(),
            node: self.node,
            last: self.last,
        })
    }
}

fn service_state(services: &[ServiceInfo], id: &str) -> Result<(), String> {
    let Some(service) = services.iter().find(|s| s.id == id) else {
        return Err(format!("no {id} service"));
    };
    match &service.health {
        Some(health) if health.healthy => Ok(()),
        Some(health) => Err(format!(
            "{id} is {} ({})",
            service.state, health.last_message
        )),
        None => Err(format!("{id} is {}", service.state)),
    }
}

async fn check_node(
    node: &ClusterNode,
    access: &Access,
) -> Result<Option<Vec<EtcdMember>>, Failure> {
    let fail =
        |check, last: String| Failure::new(check, format!("{} ({})", node.name, node.ip), last);
    let client = NodeClient::connect(node.ip, &access.talos, &access.connect)
        .await
        .map_err(|e| fail(HealthCheck::TalosApi, e.describe()))?;
    let services = client
        .service_list()
        .await
        .map_err(|e| fail(HealthCheck::TalosApi, e.describe()))?;
    if node.is_control_plane() {
        service_state(&services, "etcd").map_err(|last| fail(HealthCheck::EtcdHealthy, last))?;
    }
    service_state(&services, "kubelet").map_err(|last| fail(HealthCheck::Kubelet, last))?;
    if !node.is_control_plane() {
        return Ok(None);
    }
    let members = client
        .etcd_member_list()
        .await
        .map_err(|e| fail(HealthCheck::EtcdMembers, e.describe()))?;
    if let Some(last) = unready_member(&members) {
        return Err(fail(HealthCheck::EtcdMembers, last));
    }
    Ok(Some(members))
}

/// One pass of every check; the first failure found.
pub async fn check(
    nodes: &[ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), Failure> {
    // Each node on its own bound, so a node that hangs is named, not the whole pass.
    let results = join_all(nodes.iter().map(|node| async move {
        bounded(deadline, check_node(node, access))
            .await
            .unwrap_or_else(|| {
                Err(Failure::new(
                    HealthCheck::TalosApi,
                    format!("{} ({})", node.name, node.ip),
                    format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
                ))
            })
    }))
    .await;
    let expected: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.clone())
        .collect();
    for (node, result) in nodes.iter().zip(results) {
        if let Some(members) = result? {
            let names: BTreeSet<String> = members.iter().map(|m| m.hostname.clone()).collect();
            let last = if names != expected {
                Some(member_difference(&names, &expected))
            } else {
                stale_peer_url(&members, nodes)
            };
            if let Some(last) = last {
                return Err(Failure::new(
                    HealthCheck::EtcdMembers,
                    format!("{} ({})", node.name, node.ip),
                    last,
                ));
            }
        }
    }
    let cluster = |check, last: String| {
        Failure::new(check, format!("the cluster ({})", access.kube.server), last)
    };
    let kube = KubeClient::new(&access.kube)
        .map_err(|e| cluster(HealthCheck::KubernetesApi, e.to_string()))?;
    kube.readyz().await.map_err(|e| Failure {
        another_cluster: e.another_cluster_answers(),
        ..cluster(HealthCheck::KubernetesApi, e.to_string())
    })?;
    let registered = kube
        .nodes()
        .await
        .map_err(|e| cluster(HealthCheck::NodesReady, e.to_string()))?;
    for node in nodes {
        match registered.iter().find(|n| n.name == node.name) {
            Some(n) if n.ready && n.internal_ip.as_deref() == Some(&node.ip.to_string()) => {}
            Some(n) if n.ready => {
                return Err(cluster(
                    HealthCheck::NodesReady,
                    format!(
                        "node {} reports InternalIP {}, not {}",
                        node.name,
                        n.internal_ip.as_deref().unwrap_or("(none)"),
                        node.ip
                    ),
                ))
            }
            Some(_) => {
                return Err(cluster(
                    HealthCheck::NodesReady,
                    format!("node {} is registered but not Ready", node.name),
                ))
            }
            None => {
                return Err(cluster(
                    HealthCheck::NodesReady,
                    format!("node {} is not registered", node.name),
                ))
            }
        }
    }
    let endpoints = kube
        .api_server_endpoints()
        .await
        .map_err(|e| cluster(HealthCheck::ApiEndpoints, e.to_string()))?;
    if let Some(last) = endpoint_difference(&endpoints, nodes) {
        return Err(cluster(HealthCheck::ApiEndpoints, last));
    }
    let control_planes: Vec<&str> = nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.as_str())
        .collect();
    kube.check_system(&control_planes)
        .await
        .map_err(|e| cluster(HealthCheck::SystemPods, e.to_string()))?;
    Ok(())
}

/// A member that does not vote yet: a learner (Talos promotes a joining control plane once it
/// caught up, `services/etcd.go` `promoteMember`) or one that has not started (no name yet).
/// Taking a voter down meanwhile could lose quorum.
fn unready_member(members: &[EtcdMember]) -> Option<String> {
    members.iter().find_map(|m| {
        if m.hostname.is_empty() {
            Some(format!("member {:x} has not started yet", m.id))
        } else if m.is_learner {
            Some(format!("member {} is still a learner", m.hostname))
        } else {
            None
        }
    })
}

/// etcd's peer URL of a control plane at `ip` (Talos: `https://<address>:2380`).
fn peer_url(ip: std::net::IpAddr) -> String {
    format!("https://{}", std::net::SocketAddr::new(ip, 2380))
}

/// A member whose peer URLs do not name its control plane's address: one whose machine came
/// back at another address, before Talos updated its member.
fn stale_peer_url(members: &[EtcdMember], nodes: &[ClusterNode]) -> Option<String> {
    members.iter().find_map(|m| {
        let node = nodes.iter().find(|n| n.name == m.hostname)?;
        let wanted = peer_url(node.ip);
        (!m.peer_urls.contains(&wanted)).then(|| {
            format!(
                "member {} advertises {}, not {wanted}",
                m.hostname,
                m.peer_urls.join(", ")
            )
        })
    })
}

/// Says how the `kubernetes` endpoints differ from the control planes' addresses: a stale
/// address of a control plane that moved, or one that is missing.
fn endpoint_difference(endpoints: &BTreeSet<String>, nodes: &[ClusterNode]) -> Option<String> {
    let expected: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.ip.to_string())
        .collect();
    if *endpoints == expected {
        return None;
    }
    let join = |set: Vec<&String>| {
        set.into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("endpoints {}", join(endpoints.iter().collect()));
    let missing: Vec<&String> = expected.difference(endpoints).collect();
    if !missing.is_empty() {
        text += &format!("; missing {}", join(missing));
    }
    let extra: Vec<&String> = endpoints.difference(&expected).collect();
    if !extra.is_empty() {
        text += &format!("; not a control plane's address: {}", join(extra));
    }
    Some(text)
}

/// Says how a member list differs from the control planes: "members cp-1, cp-3; missing cp-2".
fn member_difference(members: &BTreeSet<String>, expected: &BTreeSet<String>) -> String {
    let join = |set: Vec<&String>| {
        set.into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("members {}", join(members.iter().collect()));
    let missing: Vec<&String> = expected.difference(members).collect();
    if !missing.is_empty() {
        text += &format!("; missing {}", join(missing));
    }
    let extra: Vec<&String> = members.difference(expected).collect();
    if !extra.is_empty() {
        text += &format!("; not a control plane of this cluster: {}", join(extra));
    }
    text
}

/// Repeats [`check`] until it passes (polling from 100 ms, so a healthy cluster is seen at
/// once); at `deadline`, says which check failed where, with the last answer seen.
pub async fn wait_healthy(
    nodes: &[ClusterNode],
    access: &Access,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let waiting = Pending {
        check: "the cluster to be healthy".into(),
        node: "the cluster".into(),
        last: String::new(),
    };
    poll(deadline, waiting, || async {
        match check(nodes, access, deadline).await {
            Ok(()) => Ok(Ok(())),
            Err(failure) => {
                tracing::debug!(check = %failure.check, node = %failure.node, last = %failure.last, "not healthy yet");
                failure.settle(&access.kube.server).map(Err)
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_lost_member_is_named() {
        let text = member_difference(&set(&["cp-1", "cp-3"]), &set(&["cp-1", "cp-2", "cp-3"]));
        assert_eq!(text, "members cp-1, cp-3; missing cp-2");
    }

    #[test]
    fn a_learner_or_an_unstarted_member_keeps_the_cluster_unhealthy() {
        let member = |id, name: &str, learner| EtcdMember {
            id,
            hostname: name.into(),
            is_learner: learner,
            ..Default::default()
        };
        let voting = [member(1, "cp-1", false), member(2, "cp-2", false)];
        assert_eq!(unready_member(&voting), None);
        let learning = [member(1, "cp-1", false), member(2, "cp-2", true)];
        assert_eq!(
            unready_member(&learning).as_deref(),
            Some("member cp-2 is still a learner")
        );
        let unstarted = [member(1, "cp-1", false), member(0x2a, "", true)];
        assert_eq!(
            unready_member(&unstarted).as_deref(),
            Some("member 2a has not started yet")
        );
    }

    fn control_plane(name: &str, ip: &str) -> ClusterNode {
        ClusterNode {
            name: name.into(),
            ip: ip.parse().unwrap(),
            role: crate::talos::config::Role::ControlPlane,
            config: String::new(),
            earlier: Default::default(),
            unfit: Default::default(),
        }
    }

    #[test]
    fn a_member_still_at_its_old_address_is_named() {
        let nodes = [
            control_plane("cp-1", "127.0.0.211"),
            control_plane("cp-2", "127.0.0.220"),
        ];
        let member = |name: &str, url: &str| EtcdMember {
            hostname: name.into(),
            peer_urls: vec![url.into()],
            ..Default::default()
        };
        let moved = [
            member("cp-1", "https://127.0.0.211:2380"),
            member("cp-2", "https://127.0.0.212:2380"),
        ];
        assert_eq!(
            stale_peer_url(&moved, &nodes).as_deref(),
            Some("member cp-2 advertises https://127.0.0.212:2380, not https://127.0.0.220:2380")
        );
        let updated = [
            member("cp-1", "https://127.0.0.211:2380"),
            member("cp-2", "https://127.0.0.220:2380"),
        ];
        assert_eq!(stale_peer_url(&updated, &nodes), None);
    }

    #[test]
    fn a_stale_kubernetes_endpoint_is_named() {
        let nodes = [
            control_plane("cp-1", "127.0.0.211"),
            control_plane("cp-2", "127.0.0.220"),
        ];
        let stale = set(&["127.0.0.211", "127.0.0.212", "127.0.0.220"]);
        assert_eq!(
            endpoint_difference(&stale, &nodes).as_deref(),
            Some("endpoints 127.0.0.211, 127.0.0.212, 127.0.0.220; not a control plane's address: 127.0.0.212")
        );
        let missing = set(&["127.0.0.211"]);
        assert_eq!(
            endpoint_difference(&missing, &nodes).as_deref(),
            Some("endpoints 127.0.0.211; missing 127.0.0.220")
        );
        assert_eq!(
            endpoint_difference(&set(&["127.0.0.211", "127.0.0.220"]), &nodes),
            None
        );
    }

    #[test]
    fn a_member_that_is_not_a_control_plane_is_named() {
        let text = member_difference(&set(&["cp-1", "old-cp"]), &set(&["cp-1"]));
        assert_eq!(
            text,
            "members cp-1, old-cp; not a control plane of this cluster: old-cp"
        );
    }

    #[test]
    fn another_clusters_api_server_at_the_endpoint_ends_the_wait_naming_the_setting() {
        let endpoint = "https://10.5.0.10:6443";
        let failure = |another_cluster| Failure {
            another_cluster,
            ..Failure::new(
                HealthCheck::KubernetesApi,
                format!("the cluster ({endpoint})"),
                "invalid peer certificate: UnknownIssuer".into(),
            )
        };
        let error = failure(true).settle(endpoint).unwrap_err().to_string();
        assert!(
            error.contains("Kubernetes API at https://10.5.0.10:6443")
                && error.contains("`endpoint` (or `vip`)")
                && error.contains("UnknownIssuer"),
            "{error}"
        );
        // Anything else is waited out, and the timeout names the check.
        let pending = failure(false).settle(endpoint).unwrap();
        assert_eq!(pending.check, HealthCheck::KubernetesApi.to_string());
    }
}

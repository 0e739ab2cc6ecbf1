//! Plan-time judgement of a change of control planes against etcd's quorum. A removal goes
//! member by member, in the plan's order ([`super::plan`] removes nodes one at a time), and etcd
//! serves (and accepts the next member removal) only while a majority of its members answer
//! (etcd: server/etcdserver/api/membership/cluster.go `IsReadyToRemoveVotingMember`; Talos
//! refuses the same way in `EtcdRemoveMemberByID`). Members that did not answer when the plan
//! looked count as lost. (An even number of control planes is warned of by the config
//! library's validation, for every plan.)

use std::collections::BTreeSet;

use super::{Current, Desired};

fn list(names: &[&str]) -> String {
    names.join(", ")
}

/// The control planes that leave, in the order apply removes them.
pub fn leaving_control_planes<'a>(current: &'a Current, desired: &Desired) -> Vec<&'a str> {
    current
        .nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .filter(|n| !desired.nodes.iter().any(|d| d.name == n.name))
        .map(|n| n.name.as_str())
        .collect()
}

/// Judges `desired` against the running `current` cluster; `lost` names the control planes
/// that did not answer when the plan looked. `Some(reason)` when the change must be refused.
pub fn check_quorum(
    current: &Current,
    desired: &Desired,
    lost: &BTreeSet<String>,
) -> Option<String> {
    let leaving = leaving_control_planes(current, desired);
    // etcd's members: the running cluster's control planes.
    let mut remaining: Vec<&str> = current
        .nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.as_str())
        .collect();
    for name in &leaving {
        remaining.retain(|m| m != name);
        let healthy = remaining.iter().filter(|m| !lost.contains(**m)).count();
        if remaining.is_empty() {
            return Some(format!(
                    "Removing the node blocks {} takes every control plane of the running cluster out of etcd: \
                     etcd and the cluster's state would be lost (a new control plane cannot join an etcd with no \
                     member). Keep at least one of them in the configuration, add the new control planes in one \
                     apply and remove the old ones in the next.",
                    list(&leaving)
                ));
        }
        if 2 * healthy <= remaining.len() {
            let down: Vec<&str> = remaining
                .iter()
                .copied()
                .filter(|m| lost.contains(*m))
                .collect();
            return Some(format!(
                    "Removing the node blocks {} would lose etcd's quorum: once {name} has left, {} of the {} remaining \
                     members ({}) answer{}, and etcd needs a majority. {}",
                    list(&leaving),
                    healthy,
                    remaining.len(),
                    list(&remaining),
                    if down.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} did not answer when the plan looked)", list(&down))
                    },
                    if down.is_empty() {
                        "Remove fewer control planes at a time.".to_string()
                    } else {
                        format!(
                            "Bring {} back first, or remove the control planes that do not answer before the others.",
                            list(&down)
                        )
                    }
                ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::cluster::ClusterNode;
    use crate::talos::config::Role;

    fn node(name: &str) -> ClusterNode {
        ClusterNode {
            name: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            role: if name.starts_with("cp") {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            config: String::new(),
            earlier: Default::default(),
        }
    }

    fn current(names: &[&str]) -> Current {
        Current {
            nodes: names.iter().map(|n| node(n)).collect(),
            ..Default::default()
        }
    }

    fn desired(names: &[&str]) -> Desired {
        Desired {
            nodes: names.iter().map(|n| node(n)).collect(),
            image: String::new(),
            target: String::new(),
            ..Default::default()
        }
    }

    fn lost(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn scaling_workers_says_nothing() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3", "w-1", "w-2"]),
            &desired(&["cp-1", "cp-2", "cp-3", "w-1"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn removing_one_of_three_healthy_control_planes_is_allowed() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-2"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn going_from_four_back_to_three_is_allowed() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4"]),
            &desired(&["cp-1", "cp-2", "cp-3"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn adding_control_planes_while_one_is_down_is_allowed() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-2", "cp-3", "cp-4"]),
            &lost(&["cp-3"]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn removing_every_control_plane_is_refused_naming_them() {
        let error = check_quorum(
            &current(&["cp-1", "w-1"]),
            &desired(&["cp-9", "w-1"]),
            &lost(&[]),
        );
        let error = error.unwrap();
        assert!(
            error.starts_with("Removing the node blocks cp-1 takes every control plane"),
            "{error}"
        );
    }

    #[test]
    fn removing_a_healthy_member_while_another_is_down_is_refused() {
        // 3 members, cp-3 down: without cp-2, cp-1 and cp-3 remain and only cp-1 answers.
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-3"]),
            &lost(&["cp-3"]),
        );
        let error = error.unwrap();
        assert!(
            error.contains("once cp-2 has left, 1 of the 2 remaining members (cp-1, cp-3) answer"),
            "{error}"
        );
        assert!(error.contains("Bring cp-3 back first"), "{error}");
    }

    #[test]
    fn removing_the_member_that_is_down_is_allowed() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-2"]),
            &lost(&["cp-3"]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn a_step_of_a_sequential_removal_that_loses_quorum_is_refused() {
        // 5 members, cp-5 down; removing cp-1, cp-2 then cp-3 in that order: after cp-2,
        // 3 remain (cp-3, cp-4, cp-5) with 2 answering: fine; after cp-3, cp-4 and cp-5 remain
        // with 1 answering: lost.
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]),
            &desired(&["cp-4", "cp-5"]),
            &lost(&["cp-5"]),
        );
        let error = error.unwrap();
        assert!(error.contains("once cp-3 has left"), "{error}");
    }

    #[test]
    fn removing_two_of_five_healthy_control_planes_is_allowed() {
        let error = check_quorum(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]),
            &desired(&["cp-1", "cp-2", "cp-3"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }
}

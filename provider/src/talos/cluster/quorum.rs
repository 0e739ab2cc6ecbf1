//! Plan-time judgement of a change of control planes against etcd's quorum. A removal goes
//! member by member, in the plan's order ([`super::plan`] removes nodes one at a time), and etcd
//! serves (and accepts the next member removal) only while a majority of its members answer
//! (etcd: server/etcdserver/api/membership/cluster.go `IsReadyToRemoveVotingMember`; Talos
//! refuses the same way in `EtcdRemoveMemberByID`). Members that did not answer when the plan
//! looked count as lost. (An even number of control planes is warned of by the config
//! library's validation, for every plan.)

use super::{Current, Desired};

fn list(names: &[&str]) -> String {
    names.join(", ")
}

/// The control planes that leave, in the order apply removes them ([`super::plan::leaving`]).
pub fn leaving_control_planes<'a>(current: &'a Current, desired: &Desired) -> Vec<&'a str> {
    super::plan::leaving(current, desired)
        .into_iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.as_str())
        .collect()
}

/// Judges the replacement of the machines of `replaced` (node names): a replaced control
/// plane leaves etcd before its new machine joins, one at a time, so each must leave a
/// majority of the other members answering; the only control plane of a cluster cannot be
/// replaced at all (its etcd would go with it). `Some(reason)` when it must be refused.
pub fn check_replacements(current: &Current, replaced: &[String]) -> Option<String> {
    let members: Vec<&str> = current
        .nodes
        .iter()
        .filter(|n| n.is_control_plane())
        .map(|n| n.name.as_str())
        .collect();
    for name in replaced.iter().filter(|r| members.contains(&r.as_str())) {
        let others: Vec<&str> = members.iter().copied().filter(|m| m != name).collect();
        if others.is_empty() {
            return Some(format!(
                "The machine of {name}, the cluster's only control plane, would be replaced: its old machine leaves etcd \
                 before the new one joins, so etcd and the cluster's state would be lost. Add a control plane first \
                 (control_planes = 3 in examples/ha-cluster) and apply, then replace {name}'s machine in another apply."
            ));
        }
        let answering = others
            .iter()
            .filter(|m| !current.unreachable.contains(**m))
            .count();
        if 2 * answering <= others.len() && !current.unreachable.contains(name) {
            let down: Vec<&str> = others
                .iter()
                .copied()
                .filter(|m| current.unreachable.contains(*m))
                .collect();
            return Some(format!(
                "Replacing the machine of {name} would lose etcd's quorum: while it is out of etcd, {answering} of the \
                 {} other members answer ({} did not answer when the plan looked), and etcd needs a majority. \
                 Bring {} back first.",
                others.len(),
                list(&down),
                list(&down)
            ));
        }
    }
    None
}

/// Judges `desired` against the running `current` cluster; control planes in
/// `current.unreachable` count as lost members. `Some(reason)` when the change must be refused.
pub fn check_quorum(current: &Current, desired: &Desired) -> Option<String> {
    let lost = &current.unreachable;
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
    use std::collections::BTreeSet;

    fn node(name: &str) -> ClusterNode {
        let role = if name.starts_with("cp") {
            Role::ControlPlane
        } else {
            Role::Worker
        };
        ClusterNode::on_loopback(name, role, "")
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

    fn judge(current: &Current, desired: &Desired, lost: &BTreeSet<String>) -> Option<String> {
        let mut current = current.clone();
        current.unreachable = lost.clone();
        check_quorum(&current, desired)
    }

    fn lost(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn scaling_workers_says_nothing() {
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3", "w-1", "w-2"]),
            &desired(&["cp-1", "cp-2", "cp-3", "w-1"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn removing_one_of_three_healthy_control_planes_is_allowed() {
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-2"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn going_from_four_back_to_three_is_allowed() {
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4"]),
            &desired(&["cp-1", "cp-2", "cp-3"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn adding_control_planes_while_one_is_down_is_allowed() {
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3"]),
            &desired(&["cp-1", "cp-2", "cp-3", "cp-4"]),
            &lost(&["cp-3"]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn removing_every_control_plane_is_refused_naming_them() {
        let error = judge(
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
        let error = judge(
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
        let error = judge(
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
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]),
            &desired(&["cp-4", "cp-5"]),
            &lost(&["cp-5"]),
        );
        let error = error.unwrap();
        assert!(error.contains("once cp-3 has left"), "{error}");
    }

    #[test]
    fn removing_two_of_five_healthy_control_planes_is_allowed() {
        let error = judge(
            &current(&["cp-1", "cp-2", "cp-3", "cp-4", "cp-5"]),
            &desired(&["cp-1", "cp-2", "cp-3"]),
            &lost(&[]),
        );
        assert_eq!(error, None);
    }

    #[test]
    fn removing_a_control_plane_that_is_down_together_with_a_healthy_one_takes_the_lost_one_first()
    {
        // cp-3 is down; cp-2 and cp-3 leave. By name, cp-2 would go first and leave cp-1
        // alone with the silent cp-3: no majority. The silent one first keeps it.
        let current = current(&["cp-1", "cp-2", "cp-3"]);
        let desired = desired(&["cp-1"]);
        assert_eq!(judge(&current, &desired, &lost(&["cp-3"])), None);
        let mut judged = current.clone();
        judged.unreachable = lost(&["cp-3"]);
        assert_eq!(
            leaving_control_planes(&judged, &desired),
            vec!["cp-3", "cp-2"]
        );
    }

    #[test]
    fn replacing_the_only_control_plane_is_refused_naming_it_and_what_to_do() {
        let error = check_replacements(&current(&["cp-1", "w-1"]), &["cp-1".to_string()]).unwrap();
        assert!(
            error.contains("cp-1, the cluster's only control plane"),
            "{error}"
        );
        assert!(error.contains("Add a control plane first"), "{error}");
    }

    #[test]
    fn replacing_one_of_three_control_planes_or_a_worker_is_allowed() {
        let current = current(&["cp-1", "cp-2", "cp-3", "w-1"]);
        assert_eq!(check_replacements(&current, &["cp-2".to_string()]), None);
        assert_eq!(check_replacements(&current, &["w-1".to_string()]), None);
        let single = self::current(&["cp-1", "w-1"]);
        assert_eq!(check_replacements(&single, &["w-1".to_string()]), None);
    }

    #[test]
    fn replacing_a_lost_control_plane_is_allowed_but_a_healthy_one_while_another_is_down_is_not() {
        let mut current = current(&["cp-1", "cp-2", "cp-3"]);
        current.unreachable = lost(&["cp-3"]);
        assert_eq!(check_replacements(&current, &["cp-3".to_string()]), None);
        let error = check_replacements(&current, &["cp-2".to_string()]).unwrap();
        assert!(error.contains("Bring cp-3 back first"), "{error}");
    }
}

//! etcd on the control planes: Bootstrap, joining, the member list, removing and leaving.

use std::net::IpAddr;

use serde::Serialize;
use tonic::Status;

use super::config::MachineType;
use super::{hostname, Fleet, FleetError, State};

/// One etcd member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Node address.
    pub address: IpAddr,
    /// Node hostname.
    pub hostname: String,
}

impl Fleet {
    /// Once a node that came up running has settled, its etcd rejoins the cluster.
    pub(crate) fn after_settle(&self, address: IpAddr) {
        let fleet = self.clone();
        let settle = self.scaled(self.inner.options.settle_delay);
        tokio::spawn(async move {
            tokio::time::sleep(settle).await;
            if let Ok(mut state) = fleet.lock() {
                fleet.join_etcd(&mut state, address);
                fleet.reconcile_kube(&mut state);
            }
        });
    }

    /// The Bootstrap call: a new etcd on this control plane, which the others then join.
    pub(crate) fn bootstrap(&self, address: IpAddr) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        let config = state.config_of(address)?;
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "bootstrap can only be performed on a control plane node",
            ));
        }
        let node = state.serving(address)?;
        if !self.settled(node) {
            return Err(Status::failed_precondition(
                "bootstrap is not available yet",
            ));
        }
        let etcd_data = node.etcd_data;
        let cluster = state.clusters.entry(config.cluster_id.clone()).or_default();
        if etcd_data || cluster.bootstrapped {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        cluster.bootstrapped = true;
        // The bootstrapped node first, then every other settled control plane joins.
        self.join_etcd(&mut state, address);
        let others: Vec<IpAddr> = state
            .nodes
            .keys()
            .copied()
            .filter(|a| *a != address)
            .collect();
        for other in others {
            self.join_etcd(&mut state, other);
        }
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// Adds a settled control plane of a bootstrapped cluster to etcd, if not a member yet.
    pub(crate) fn join_etcd(&self, state: &mut State, address: IpAddr) {
        let Some(node) = state.nodes.get(&address) else {
            return;
        };
        let Some(config) = node.config.clone() else {
            return;
        };
        if config.machine_type != MachineType::Controlplane || !self.settled(node) {
            return;
        }
        let cluster = state.clusters.entry(config.cluster_id.clone()).or_default();
        if !cluster.bootstrapped || cluster.members.iter().any(|m| m.address == address) {
            return;
        }
        cluster.members.push(Member {
            id: rand::random(),
            address,
            hostname: hostname(&config, address),
        });
        if let Some(node) = state.nodes.get_mut(&address) {
            node.etcd_data = true;
        }
    }

    /// The EtcdMemberList call, answered by this node's etcd.
    pub(crate) fn etcd_members(&self, address: IpAddr) -> Result<Vec<Member>, Status> {
        let state = self.lock_api()?;
        let config = state.config_of(address)?;
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "etcd is not running on a worker node",
            ));
        }
        let cluster = state.clusters.get(&config.cluster_id);
        let members = cluster.map(|c| c.members.clone()).unwrap_or_default();
        // Only a member's etcd answers; a node that lost its membership has no etcd to ask.
        if !members.iter().any(|m| m.address == address) {
            return Err(Status::failed_precondition(
                "etcd is not running on this node",
            ));
        }
        Ok(members)
    }

    /// The EtcdRemoveMemberByID call, sent to the etcd of the node at `address`.
    pub(crate) fn remove_etcd_member(&self, address: IpAddr, id: u64) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        let cluster_id = state.config_of(address)?.cluster_id.clone();
        let cluster = state.clusters.entry(cluster_id).or_default();
        let before = cluster.members.len();
        cluster.members.retain(|m| m.id != id);
        if cluster.members.len() == before {
            return Err(Status::not_found(format!("etcd member {id:x} not found")));
        }
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// The EtcdLeaveCluster call: the node leaves its cluster's etcd and wipes its data.
    pub(crate) fn leave_etcd(&self, address: IpAddr) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        state.config_of(address)?;
        leave(&mut state, address);
        if let Some(node) = state.nodes.get_mut(&address) {
            node.etcd_data = false;
        }
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// The `lose_etcd_member` fault: the node's member disappears from its cluster.
    pub(crate) fn lose_etcd_member(
        &self,
        state: &mut State,
        address: IpAddr,
    ) -> Result<(), FleetError> {
        if !is_member(state, address) {
            return Err(FleetError::Fault(format!(
                "{address} is not an etcd member"
            )));
        }
        leave(state, address);
        self.reconcile_kube(state);
        Ok(())
    }

    /// Whether the etcd service of this node is healthy (it is a member of its cluster).
    pub(crate) fn etcd_healthy(&self, state: &State, address: IpAddr) -> bool {
        is_member(state, address)
    }
}

fn is_member(state: &State, address: IpAddr) -> bool {
    let cluster_id = state
        .nodes
        .get(&address)
        .and_then(|n| n.config.as_ref())
        .map(|c| c.cluster_id.clone());
    cluster_id
        .and_then(|id| state.clusters.get(&id))
        .is_some_and(|c| c.members.iter().any(|m| m.address == address))
}

/// Removes the node's member from its cluster's etcd (the one rule behind leaving, a graceful
/// reset and a lost member).
pub(crate) fn leave(state: &mut State, address: IpAddr) {
    let cluster_id = state
        .nodes
        .get(&address)
        .and_then(|n| n.config.as_ref())
        .map(|c| c.cluster_id.clone());
    if let Some(cluster) = cluster_id.and_then(|id| state.clusters.get_mut(&id)) {
        cluster.members.retain(|m| m.address != address);
    }
}

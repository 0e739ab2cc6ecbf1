//! Faults injected into nodes through the Rust API or the admin HTTP API. The connection faults
//! take effect in `server.rs` (what the node's listener does), `reject_next_config` in
//! `apply.rs`, `slow_reboot` and `power_cycle` in `power.rs`, `etcd_stopped` in `etcd/mod.rs`
//! (`start_etcd`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::{MachineConfig, MachineType};
use super::etcd::Stop;
use super::{Fleet, FleetError, Phase};
use crate::pki::Ca;

/// Faults to inject into one node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Faults {
    /// Accept TCP connections and never answer (not even the TLS handshake).
    pub never_answer: bool,
    /// Accept TCP connections and close them at once.
    pub drop_connections: bool,
    /// The next ApplyConfiguration answers InvalidArgument with this reason.
    pub reject_next_config: Option<String>,
    /// Replaces install and reboot delays (before time scaling). Clearing the faults ends a
    /// reboot slowed by it after the ordinary reboot delay.
    #[serde(serialize_with = "ser_duration_ms")]
    pub slow_reboot: Option<Duration>,
    /// The node's etcd is down (its process stopped, its member still listed) until the faults
    /// are cleared: the member is not healthy.
    pub etcd_stopped: bool,
    /// A power cut armed to strike while the node drains for its next Upgrade (after it
    /// answered, before the installer is written), off for this long (before time scaling).
    #[serde(serialize_with = "ser_duration_ms")]
    pub power_cycle_in_upgrade: Option<Duration>,
    /// A power cut armed to strike right after the node answers its next Bootstrap, before
    /// etcd has written its data, off for this long (before time scaling).
    #[serde(serialize_with = "ser_duration_ms")]
    pub power_cycle_in_bootstrap: Option<Duration>,
}

fn ser_duration_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    d.map(|d| d.as_millis() as u64).serialize(s)
}

/// One fault to inject, as the admin API names them.
#[derive(Debug, Clone)]
pub enum Fault {
    /// See [`Faults::never_answer`].
    NeverAnswer,
    /// See [`Faults::drop_connections`].
    DropConnections,
    /// See [`Faults::reject_next_config`].
    RejectNextConfig(String),
    /// See [`Faults::slow_reboot`].
    SlowReboot(Duration),
    /// The node holds the state of another cluster: configured, running, with an OS CA nobody
    /// else has, so it rejects our client certificates (the "ghost").
    ForeignCluster,
    /// The node's etcd member disappears from its cluster's member list.
    LoseEtcdMember,
    /// See [`Faults::etcd_stopped`].
    StopEtcd,
    /// The machine loses power at once (no drain, no etcd leave) and comes back on after this
    /// long (before time scaling): see [`Fleet::power_cycle`].
    PowerCycle(Duration),
    /// See [`Faults::power_cycle_in_upgrade`].
    PowerCycleInUpgrade(Duration),
    /// See [`Faults::power_cycle_in_bootstrap`].
    PowerCycleInBootstrap(Duration),
}

impl Fleet {
    /// Injects a fault into a node.
    pub fn inject(&self, address: IpAddr, fault: Fault) -> Result<(), FleetError> {
        if let Fault::PowerCycle(off) = fault {
            return self.power_cycle(address, off);
        }
        let mut state = self.lock()?;
        let node = state.node_mut(address)?;
        match fault {
            Fault::NeverAnswer => {
                node.faults.never_answer = true;
                node.wake();
            }
            Fault::DropConnections => {
                node.faults.drop_connections = true;
                node.wake();
            }
            Fault::RejectNextConfig(reason) => node.faults.reject_next_config = Some(reason),
            Fault::SlowReboot(d) => node.faults.slow_reboot = Some(d),
            Fault::ForeignCluster => {
                let config = foreign_config(address)?;
                node.config = Some(Arc::new(config));
                node.phase = Phase::running();
                // Its disk holds the etcd data of that other cluster.
                let member = node.disk.join("etcd").join("member");
                std::fs::create_dir_all(&member).map_err(|e| FleetError::Disk(member, e))?;
                node.wake();
            }
            Fault::LoseEtcdMember => self.lose_etcd_member(&mut state, address)?,
            Fault::StopEtcd => {
                if node.etcd.member_id.is_none() {
                    return Err(FleetError::Fault(format!(
                        "{address} is not an etcd member"
                    )));
                }
                node.faults.etcd_stopped = true;
                node.etcd.stop(Stop::Hard);
                // The API server and the VIP follow etcd.
                self.reconcile_kube(&mut state);
            }
            Fault::PowerCycle(_) => unreachable!("handled above, without the lock"),
            Fault::PowerCycleInUpgrade(off) => node.faults.power_cycle_in_upgrade = Some(off),
            Fault::PowerCycleInBootstrap(off) => node.faults.power_cycle_in_bootstrap = Some(off),
        }
        Ok(())
    }

    /// Counts a connection `address` closed at once under `drop_connections`.
    pub(crate) fn count_dropped(&self, address: IpAddr) {
        if let Ok(mut state) = self.lock() {
            if let Ok(node) = state.node_mut(address) {
                node.connections_dropped += 1;
            }
        }
    }

    /// Clears every fault of a node (a hanging node starts answering again; a slowed reboot
    /// ends after the ordinary reboot delay; a stopped etcd starts again from its data).
    pub fn clear_faults(&self, address: IpAddr) -> Result<(), FleetError> {
        let ordinary = Instant::now() + self.scaled(self.inner.options.reboot_delay);
        let mut state = self.lock()?;
        let node = state.node_mut(address)?;
        if node.faults.slow_reboot.is_some() {
            if let Phase::Rebooting { until, .. } = &mut node.phase {
                *until = (*until).min(ordinary);
            }
        }
        let etcd_stopped = node.faults.etcd_stopped;
        node.faults = Faults::default();
        node.wake();
        if etcd_stopped {
            self.start_etcd(&mut state, address);
        }
        Ok(())
    }
}

/// A config of a cluster that nobody else knows, for the foreign-cluster fault.
fn foreign_config(address: IpAddr) -> Result<MachineConfig, FleetError> {
    let os_ca = Ca::generate("talos", "talos", &rcgen::PKCS_ED25519)?;
    Ok(MachineConfig {
        machine_type: MachineType::Controlplane,
        hostname: Some(format!(
            "ghost-{}",
            address.to_string().replace(['.', ':'], "-")
        )),
        os_ca_key: Some(os_ca.key_pem()),
        os_ca_crt: os_ca.cert_pem,
        cluster_id: format!("foreign-{}", rand::random::<u64>()),
        cluster_name: "foreign".into(),
        endpoint: format!("https://{address}:6443"),
        k8s_ca_crt: None,
        k8s_ca_key: None,
        etcd_ca_crt: None,
        etcd_ca_key: None,
        vip: None,
        static_addresses: vec![address],
        apiserver_refusal: None,
        kubelet_version: "v1.31.0".into(),
        static_pods: Vec::new(),
        install_version: None,
        install_image: None,
        kube_addons: Default::default(),
        reboot_part: serde_json::Value::Null,
        documents: vec!["v1alpha1".into()],
        v1alpha1: serde_json::Value::Null,
    })
}

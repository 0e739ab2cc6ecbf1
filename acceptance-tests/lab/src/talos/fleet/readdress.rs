//! A machine that boots with another address than it had: its VM's cloud-init network config
//! changed while it was off (a Proxmox `ipconfig0` edit reaches the guest at its next boot).
//!
//! Talos keeps what is on its disk: the machine config, its identity, the etcd data. Its
//! network merges the platform's address (nocloud's network config, layer `platform`) with
//! the static address of its machine config (layer `configuration`); two different addresses
//! are two resources, so both are assigned (Talos:
//! internal/app/machined/pkg/controllers/network/address_merge.go (v1.12.0), IDs are
//! link/address, a duplicate only keeps the higher layer; platform_config_apply.go writes
//! the platform's addresses). apid serves on every address with a certificate for every node
//! address (controllers/secrets/api.go); etcd advertises one routed address
//! (controllers/etcd/spec.go) and the AdvertisedPeerController updates its member's peer URLs
//! to it (controllers/etcd/advertised_peer.go), so the member keeps its ID and data. Once
//! the config's static address is the new one too, the old address is gone.
//!
//! The lab serves the node's Talos API at both addresses while both are assigned: the address
//! its VM booted with, and the old static address of its config until a config without it is
//! applied (see `server::still_assigned`). Everything else is kept: config, disk, etcd member.
//! The Kubernetes API and etcd of a moved control plane are served at its new address only.

use std::net::IpAddr;
use std::time::Instant;

use tokio::sync::watch;

use super::power::{After, Phase};
use super::{etcd, server, Fleet, FleetError};

impl Fleet {
    /// The VM of the node at `from` booted with the address `to`. A configured node boots
    /// from its disk at `to` (after the boot delay): same config, same disk, same etcd
    /// member. A blank machine is a new maintenance node at `to`, as before.
    pub fn readdress(&self, from: IpAddr, to: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        if state.nodes.contains_key(&to) {
            return Err(FleetError::NodeExists(to));
        }
        let configured = state.node_mut(from)?.config.is_some();
        if !configured {
            drop(state);
            self.remove_node(from)?;
            return self.add_booting_node(to, None);
        }
        let Some(mut node) = state.nodes.remove(&from) else {
            return Err(FleetError::NoSuchNode(from));
        };
        // Its VM was stopped: everything died at once.
        node.etcd.power_down(etcd::Stop::Hard);
        if let Some(task) = node.task.take() {
            task.abort();
        }
        // The disk goes with the machine: the lab keeps disks by address.
        let disk = etcd::node_disk(&self.inner.disks, to);
        let _ = std::fs::remove_dir_all(&disk);
        if let Err(e) = std::fs::rename(&node.disk, &disk) {
            // Put the node back where it was rather than lose it.
            state.nodes.insert(from, node);
            self.reconcile_kube(&mut state);
            return Err(FleetError::Disk(disk, e));
        }
        node.disk = disk;
        let (wake, wake_rx) = watch::channel(0);
        // The former static address stays assigned, and answered, until a config without it
        // is applied; that task ends by itself then.
        let keeps_former = node
            .config
            .as_ref()
            .is_some_and(|c| c.static_addresses.contains(&from));
        if keeps_former {
            tokio::spawn(server::node_loop(
                self.clone(),
                to,
                from,
                wake.subscribe(),
                self.inner.shutdown.subscribe(),
            ));
        }
        node.wake = wake;
        node.task = Some(tokio::spawn(server::node_loop(
            self.clone(),
            to,
            to,
            wake_rx,
            self.inner.shutdown.subscribe(),
        )));
        node.phase = Phase::Rebooting {
            until: Instant::now() + self.scaled(self.inner.options.boot_delay),
            then: After::Running,
        };
        state.nodes.insert(to, node);
        self.reconcile_kube(&mut state);
        tracing::info!(%from, %to, "a configured machine booted at another address");
        Ok(())
    }
}

//! The wiring between the lab's Proxmox and its Talos fleet: a VM started with a lab address in
//! `ipconfig0` is a Talos machine booting at that address.
//!
//! A watcher polls Proxmox's API like any client would (`/cluster/resources?type=vm`, then the
//! config of each VM that just started) and turns what changed into fleet calls:
//!
//! | VM | node |
//! | --- | --- |
//! | started, first time, `ip=127.x.y.z/NN` | [`Fleet::add_booting_node`]: maintenance mode after the boot delay |
//! | stopped (`qmstop`) | [`Fleet::power_off`]: gone from the network, disk kept; etcd killed, a VIP it held stays dark until its election lease expires |
//! | shut down or rebooted through ACPI (`qmshutdown`, `qmreboot`) | [`Fleet::shut_down`]: the same, after Talos's shutdown sequence (the VIP election resigned, etcd stopped with SIGTERM) |
//! | started again | [`Fleet::power_on`]: boots its installed config, or maintenance if blank |
//! | started again with another address | [`Fleet::readdress`]: boots from its disk at the new address |
//! | destroyed | [`Fleet::remove_node`] |
//! | started at the address of another running VM | no node; [`Fleet::record_address_clash`] |
//!
//! So a Terraform run against the lab meets the same ordering as against real hardware: a
//! node answers only once its VM has been cloned, configured and started.

pub mod machines;
pub mod pve;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use crate::talos::{Fleet, FleetError};
use machines::{lab_address, Change, Machines};
use pve::Pve;

/// How often the watcher looks at Proxmox.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Watches `pve` and drives `fleet` until `shutdown` completes.
pub async fn run(
    mut pve: Pve,
    fleet: Fleet,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut machines = Machines::default();
    let mut last_error = None::<String>;
    tokio::pin!(shutdown);
    loop {
        match poll(&mut pve, &mut machines).await {
            Ok(changes) => {
                last_error = None;
                for change in changes {
                    apply(&fleet, &change);
                }
            }
            Err(e) => {
                // Say it once, not four times a second: Proxmox may be restarting.
                let text = error_chain(&e);
                if last_error.as_deref() != Some(&text) {
                    tracing::warn!("unable to watch Proxmox: {text}");
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One look at Proxmox: the changes since the last one.
async fn poll(pve: &mut Pve, machines: &mut Machines) -> Result<Vec<Change>, pve::PveError> {
    let guests = pve.guests().await?;
    let mut booted = Vec::new();
    for guest in machines.booted(&guests) {
        let ipconfig = pve.ipconfig0(&guest.node, guest.vmid).await?;
        booted.push((guest.vmid, ipconfig.as_deref().and_then(lab_address)));
    }
    let mut changes = machines.update(&guests, &booted);
    // A VM shut down and started again with another address between two looks is known by
    // its new address by now.
    let moves: Vec<(IpAddr, IpAddr)> = changes
        .iter()
        .filter_map(|c| match *c {
            Change::Readdress { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    for change in &mut changes {
        let Change::PowerOff(address) = *change else {
            continue;
        };
        let now_at = moves
            .iter()
            .find(|(from, _)| *from == address)
            .map_or(address, |(_, to)| *to);
        let vm = machines
            .vm_at(now_at)
            .and_then(|vmid| guests.iter().find(|g| g.vmid == vmid));
        if let Some(guest) = vm {
            if pve.last_task_was_acpi(&guest.node, guest.vmid).await? {
                *change = Change::ShutDown(address);
            }
        }
    }
    Ok(changes)
}

fn apply(fleet: &Fleet, change: &Change) {
    let outcome = match *change {
        Change::Boot(address) => fleet.add_booting_node(address, None),
        Change::PowerOn(address) => match fleet.power_on(address) {
            // Removed through the admin API meanwhile: the machine boots blank.
            Err(FleetError::NoSuchNode(_)) => fleet.add_booting_node(address, None),
            other => other,
        },
        Change::PowerOff(address) => fleet.power_off(address),
        Change::ShutDown(address) => fleet.shut_down(address),
        Change::Readdress { from, to } => match fleet.readdress(from, to) {
            // Removed through the admin API meanwhile: the machine boots blank.
            Err(FleetError::NoSuchNode(_)) => fleet.add_booting_node(to, None),
            other => other,
        },
        Change::Remove(address) => match fleet.remove_node(address) {
            Err(FleetError::NoSuchNode(_)) => Ok(()),
            other => other,
        },
        Change::Clash {
            address,
            vmid,
            holder,
        } => {
            fleet.record_address_clash(address, vmid, holder);
            Ok(())
        }
    };
    match outcome {
        Ok(()) => tracing::info!(?change, "VM change applied to the Talos fleet"),
        Err(e) => tracing::warn!(?change, "unable to apply a VM change to the fleet: {e}"),
    }
}

/// An error with its causes, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

//! Which Talos machines the Proxmox VMs stand for, and what changes between two looks at the
//! hypervisor. Pure: no network, no fleet, so unit tests check every transition.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// A guest as `GET /cluster/resources?type=vm` lists it (templates left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// VM id, unique in the cluster.
    pub vmid: u32,
    /// Proxmox node the VM is on.
    pub node: String,
    /// VM name.
    pub name: String,
    /// Whether the VM is running.
    pub running: bool,
    /// Seconds since it started (0 when stopped): a smaller number than at the last look
    /// means it was restarted in between, even if no look saw it stopped.
    pub uptime: u64,
}

/// What to do to the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A VM with a blank disk booted at this address: a new node in maintenance mode after the
    /// boot delay.
    Boot(IpAddr),
    /// The VM of this node was started again: the node boots from its disk.
    PowerOn(IpAddr),
    /// The VM of this node stopped: the node goes off, keeping its disk.
    PowerOff(IpAddr),
    /// The VM of this node stopped after an ACPI shutdown or reboot (`qmshutdown`,
    /// `qmreboot`): Talos ran its shutdown sequence first. Made from a `PowerOff` by the
    /// watcher, which asks Proxmox for the VM's last task.
    ShutDown(IpAddr),
    /// The VM of this node was destroyed, or its address went to another VM: the node is gone
    /// for good.
    Remove(IpAddr),
    /// The VM of the node at `from` booted with the address `to`: the machine boots from its
    /// disk at the new address (a configured node keeps its config).
    Readdress {
        /// The address it had.
        from: IpAddr,
        /// The address its cloud-init config gives now.
        to: IpAddr,
    },
    /// VM `vmid` started with the address of VM `holder`, which still runs: on a real network
    /// both would answer ARP for it. The newcomer gets no node; the clash is recorded.
    Clash {
        /// The address both claim.
        address: IpAddr,
        /// The VM that started last.
        vmid: u32,
        /// The running VM that held the address.
        holder: u32,
    },
}

/// What the lab knows of one VM it has seen running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Machine {
    /// The lab address the VM booted with; `None` when its `ipconfig0` had none (no node), or
    /// when another running VM held the address.
    address: Option<IpAddr>,
    running: bool,
    uptime: u64,
}

/// The VMs seen so far and the nodes they have. Fed with one snapshot of the hypervisor at a
/// time, it answers with the [`Change`]s that bring the fleet in line.
#[derive(Debug, Default)]
pub struct Machines {
    known: BTreeMap<u32, Machine>,
}

impl Machines {
    /// The VM whose machine has or had `address`.
    pub fn vm_at(&self, address: IpAddr) -> Option<u32> {
        self.known
            .iter()
            .find(|(_, m)| m.address == Some(address))
            .map(|(vmid, _)| *vmid)
    }

    /// VMs that are running now and were not running at the last look, or were restarted
    /// since (their uptime went down): their config must be read (a VM reads its cloud-init
    /// network config when it boots, so this is the moment that counts).
    pub fn booted<'a>(&self, guests: &'a [Guest]) -> Vec<&'a Guest> {
        guests
            .iter()
            .filter(|g| {
                g.running
                    && !self
                        .known
                        .get(&g.vmid)
                        .is_some_and(|m| m.running && g.uptime >= m.uptime)
            })
            .collect()
    }

    /// Takes the new snapshot `guests` and, for the VMs [`Machines::booted`] named, the lab
    /// address their config gives (`None` if none). Returns the changes, removals first so
    /// that an address is free before another VM boots on it.
    pub fn update(&mut self, guests: &[Guest], booted: &[(u32, Option<IpAddr>)]) -> Vec<Change> {
        let mut changes = Vec::new();
        // Destroyed VMs: their node goes for good.
        let present: Vec<u32> = guests.iter().map(|g| g.vmid).collect();
        let gone: Vec<u32> = self
            .known
            .keys()
            .copied()
            .filter(|v| !present.contains(v))
            .collect();
        for vmid in gone {
            if let Some(Machine {
                address: Some(address),
                ..
            }) = self.known.remove(&vmid)
            {
                changes.push(Change::Remove(address));
            }
        }
        // Stopped VMs: their node powers off.
        for guest in guests.iter().filter(|g| !g.running) {
            if let Some(machine) = self.known.get_mut(&guest.vmid) {
                if machine.running {
                    machine.running = false;
                    if let Some(address) = machine.address {
                        changes.push(Change::PowerOff(address));
                    }
                }
            }
        }
        // Started VMs.
        for &(vmid, address) in booted {
            let previous = self.known.get(&vmid).copied();
            let uptime = guests
                .iter()
                .find(|g| g.vmid == vmid)
                .map_or(0, |g| g.uptime);
            let mut machine = Machine {
                address,
                running: true,
                uptime,
            };
            // Restarted between two looks: the node went down first.
            if let Some(Machine {
                address: Some(old),
                running: true,
                ..
            }) = previous
            {
                changes.push(Change::PowerOff(old));
            }
            match (previous.and_then(|m| m.address), address) {
                (Some(old), Some(new)) if old == new => changes.push(Change::PowerOn(new)),
                (old, None) => {
                    // No lab address any more: the machine is unreachable for good.
                    changes.extend(old.map(Change::Remove));
                }
                (old, Some(new)) => match self.holder(new, vmid) {
                    Some((holder, true)) => {
                        // Another running VM has this address: an address conflict on a
                        // real network; the newcomer gets no node (the clash is recorded), and
                        // the old address is no longer where its machine is.
                        tracing::warn!(vmid, holder, %new, "address already used by a running VM");
                        machine.address = None;
                        changes.extend(old.map(Change::Remove));
                        changes.push(Change::Clash {
                            address: new,
                            vmid,
                            holder,
                        });
                    }
                    holder => {
                        if let Some((other, _)) = holder {
                            // The address belonged to a stopped VM: this machine takes it
                            // over.
                            self.known.remove(&other);
                            changes.push(Change::Remove(new));
                        }
                        // The machine keeps its disk: booted at another address, a
                        // configured node keeps its config (see `Fleet::readdress`).
                        changes.push(match old {
                            Some(from) => Change::Readdress { from, to: new },
                            None => Change::Boot(new),
                        });
                    }
                },
            }
            self.known.insert(vmid, machine);
        }
        // Uptimes of the VMs that kept running.
        for guest in guests.iter().filter(|g| g.running) {
            if let Some(machine) = self.known.get_mut(&guest.vmid) {
                machine.uptime = guest.uptime;
            }
        }
        changes
    }

    /// The other VM whose node has `address`, and whether it runs.
    fn holder(&self, address: IpAddr, vmid: u32) -> Option<(u32, bool)> {
        self.known
            .iter()
            .find(|(v, m)| **v != vmid && m.address == Some(address))
            .map(|(v, m)| (*v, m.running))
    }
}

/// The lab address of a VM's `ipconfig0` (`ip=127.0.3.11/24,gw=127.0.3.1`): an IPv4 address
/// in 127.0.0.0/8 (the lab binds nothing else), else `None` (`ip=dhcp`, another network).
pub fn lab_address(ipconfig: &str) -> Option<IpAddr> {
    let cidr = ipconfig
        .split(',')
        .find_map(|part| part.trim().strip_prefix("ip="))?;
    let ip: Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
    ip.is_loopback().then_some(IpAddr::V4(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guest(vmid: u32, running: bool) -> Guest {
        Guest {
            vmid,
            node: "pve1".into(),
            name: format!("vm-{vmid}"),
            running,
            uptime: if running { 10 } else { 0 },
        }
    }

    /// One poll: the VMs named as booted get their address from `addresses`.
    fn poll(machines: &mut Machines, guests: &[Guest], addresses: &[(u32, &str)]) -> Vec<Change> {
        let booted: Vec<(u32, Option<IpAddr>)> = machines
            .booted(guests)
            .into_iter()
            .map(|g| {
                let a = addresses.iter().find(|(v, _)| *v == g.vmid);
                (g.vmid, a.and_then(|(_, s)| lab_address(s)))
            })
            .collect();
        machines.update(guests, &booted)
    }

    #[test]
    fn ipconfig_with_a_loopback_address_gives_the_node_address() {
        assert_eq!(
            lab_address("ip=127.0.3.11/24,gw=127.0.3.1"),
            Some(ip("127.0.3.11"))
        );
        assert_eq!(
            lab_address("gw=127.0.3.1, ip=127.9.0.5/8"),
            Some(ip("127.9.0.5"))
        );
        assert_eq!(lab_address("ip=127.0.3.11"), Some(ip("127.0.3.11")));
    }

    #[test]
    fn ipconfig_without_a_lab_address_gives_no_node() {
        assert_eq!(lab_address("ip=dhcp"), None);
        assert_eq!(lab_address("ip=192.168.1.10/24,gw=192.168.1.1"), None);
        assert_eq!(lab_address("ip6=auto"), None);
        assert_eq!(lab_address("ip=not-an-ip/24"), None);
        assert_eq!(lab_address(""), None);
    }

    #[test]
    fn a_started_vm_boots_a_node_and_a_stopped_one_powers_it_off() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24,gw=127.0.3.1")];
        assert_eq!(poll(&mut m, &[guest(100, false)], &cfg), vec![]);
        assert_eq!(
            poll(&mut m, &[guest(100, true)], &cfg),
            vec![Change::Boot(ip("127.0.3.11"))]
        );
        // Still running: nothing to do, and its config is not read again.
        assert!(m.booted(&[guest(100, true)]).is_empty());
        assert_eq!(poll(&mut m, &[guest(100, true)], &cfg), vec![]);
        assert_eq!(
            poll(&mut m, &[guest(100, false)], &cfg),
            vec![Change::PowerOff(ip("127.0.3.11"))]
        );
        assert_eq!(
            poll(&mut m, &[guest(100, true)], &cfg),
            vec![Change::PowerOn(ip("127.0.3.11"))]
        );
    }

    #[test]
    fn a_destroyed_vm_removes_its_node_and_a_new_vm_there_boots_blank() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24"), (101, "ip=127.0.3.11/24")];
        poll(&mut m, &[guest(100, true)], &cfg);
        poll(&mut m, &[guest(100, false)], &cfg);
        assert_eq!(
            poll(&mut m, &[], &cfg),
            vec![Change::Remove(ip("127.0.3.11"))]
        );
        assert_eq!(
            poll(&mut m, &[guest(101, true)], &cfg),
            vec![Change::Boot(ip("127.0.3.11"))]
        );
    }

    #[test]
    fn a_vm_destroyed_between_two_looks_while_running_is_removed() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24")];
        poll(&mut m, &[guest(100, true)], &cfg);
        assert_eq!(
            poll(&mut m, &[], &cfg),
            vec![Change::Remove(ip("127.0.3.11"))]
        );
    }

    #[test]
    fn a_vm_without_a_lab_address_has_no_node() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=dhcp")];
        assert_eq!(poll(&mut m, &[guest(100, true)], &cfg), vec![]);
        assert_eq!(poll(&mut m, &[guest(100, false)], &cfg), vec![]);
        assert_eq!(poll(&mut m, &[], &cfg), vec![]);
    }

    #[test]
    fn a_vm_restarted_with_another_address_moves_its_machine_there() {
        let mut m = Machines::default();
        poll(&mut m, &[guest(100, true)], &[(100, "ip=127.0.3.11/24")]);
        poll(&mut m, &[guest(100, false)], &[]);
        assert_eq!(
            poll(&mut m, &[guest(100, true)], &[(100, "ip=127.0.3.12/24")]),
            vec![Change::Readdress {
                from: ip("127.0.3.11"),
                to: ip("127.0.3.12")
            }]
        );
        // Stopping it now powers off the node at its new address.
        assert_eq!(
            poll(&mut m, &[guest(100, false)], &[]),
            vec![Change::PowerOff(ip("127.0.3.12"))]
        );
    }

    #[test]
    fn a_vm_restarted_between_two_looks_is_seen_by_its_uptime() {
        let mut m = Machines::default();
        poll(&mut m, &[guest(100, true)], &[(100, "ip=127.0.3.11/24")]);
        let restarted = Guest {
            uptime: 0,
            ..guest(100, true)
        };
        assert_eq!(
            poll(
                &mut m,
                std::slice::from_ref(&restarted),
                &[(100, "ip=127.0.3.12/24")]
            ),
            vec![
                Change::PowerOff(ip("127.0.3.11")),
                Change::Readdress {
                    from: ip("127.0.3.11"),
                    to: ip("127.0.3.12")
                }
            ]
        );
        // Its uptime growing again is no restart.
        assert!(m.booted(&[guest(100, true)]).is_empty());
    }

    #[test]
    fn a_vm_restarted_without_a_lab_address_loses_its_node() {
        let mut m = Machines::default();
        poll(&mut m, &[guest(100, true)], &[(100, "ip=127.0.3.11/24")]);
        poll(&mut m, &[guest(100, false)], &[]);
        assert_eq!(
            poll(&mut m, &[guest(100, true)], &[(100, "ip=dhcp")]),
            vec![Change::Remove(ip("127.0.3.11"))]
        );
    }

    #[test]
    fn a_second_running_vm_on_a_taken_address_gets_no_node() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24"), (101, "ip=127.0.3.11/24")];
        poll(&mut m, &[guest(100, true)], &cfg);
        assert_eq!(
            poll(&mut m, &[guest(100, true), guest(101, true)], &cfg),
            vec![Change::Clash {
                address: ip("127.0.3.11"),
                vmid: 101,
                holder: 100
            }]
        );
        // Stopping the newcomer leaves the first VM's node alone.
        assert_eq!(
            poll(&mut m, &[guest(100, true), guest(101, false)], &cfg),
            vec![]
        );
    }

    #[test]
    fn a_vm_stopped_and_its_successor_started_between_two_looks_is_a_hand_over_not_a_clash() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24"), (101, "ip=127.0.3.11/24")];
        poll(&mut m, &[guest(100, true), guest(101, false)], &cfg);
        assert_eq!(
            poll(&mut m, &[guest(100, false), guest(101, true)], &cfg),
            vec![
                Change::PowerOff(ip("127.0.3.11")),
                Change::Remove(ip("127.0.3.11")),
                Change::Boot(ip("127.0.3.11"))
            ]
        );
    }

    #[test]
    fn a_new_vm_takes_over_the_address_of_a_stopped_one() {
        let mut m = Machines::default();
        let cfg = [(100, "ip=127.0.3.11/24"), (101, "ip=127.0.3.11/24")];
        poll(&mut m, &[guest(100, true)], &cfg);
        poll(&mut m, &[guest(100, false)], &cfg);
        assert_eq!(
            poll(&mut m, &[guest(100, false), guest(101, true)], &cfg),
            vec![
                Change::Remove(ip("127.0.3.11")),
                Change::Boot(ip("127.0.3.11"))
            ]
        );
        // The old VM coming back finds its address taken.
        assert_eq!(
            poll(&mut m, &[guest(100, true), guest(101, true)], &cfg),
            vec![Change::Clash {
                address: ip("127.0.3.11"),
                vmid: 100,
                holder: 101
            }]
        );
    }
}

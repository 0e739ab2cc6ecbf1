//! The resource's state, and its conversions to and from the Proxmox client's types.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tf_provider::value::{self, Value};

use crate::proxmox::provision::CloneSource;
use crate::proxmox::vm_config::{DiskSpec, Ipv4Spec, NetworkSpec, VmFacts, VmSpec};
use crate::resources::timeouts::TimeoutsBlock;

/// `clone { ... }`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloneBlock {
    /// Template VMID.
    pub template_id: Value<i64>,
    /// Template name.
    pub template_name: Value<String>,
    /// Full clone.
    pub full: Value<bool>,
    /// Target storage.
    pub storage: Value<String>,
    /// Pool.
    pub pool: Value<String>,
}

impl CloneBlock {
    /// Its known values, as [`super::from_backup::clone_changed`] compares them.
    pub fn source(&self) -> super::from_backup::CloneSource {
        super::from_backup::CloneSource {
            template_id: known(&self.template_id),
            template_name: known(&self.template_name),
            full: known(&self.full),
            storage: known(&self.storage),
            pool: known(&self.pool),
        }
    }
}

/// `disk { ... }`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskBlock {
    /// e.g. `scsi0`.
    pub slot: Value<String>,
    /// GiB.
    pub size_gb: Value<i64>,
}

/// `network { ... }`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkBlock {
    /// Bridge.
    pub bridge: Value<String>,
    /// VLAN tag.
    pub vlan: Value<i64>,
    /// MAC.
    pub mac: Value<String>,
    /// NIC model.
    pub model: Value<String>,
}

/// `ipv4 { ... }`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ipv4Block {
    /// CIDR.
    pub address: Value<String>,
    /// Gateway.
    pub gateway: Value<String>,
}

/// The whole resource.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    /// `node/vmid`.
    pub id: Value<String>,
    /// Proxmox node.
    pub node: Value<String>,
    /// VM name.
    pub name: Value<String>,
    /// VMID.
    pub vm_id: Value<i64>,
    /// Template to clone.
    #[serde(with = "value::serde_as_vec")]
    pub clone: Value<CloneBlock>,
    /// Cores.
    pub cores: Value<i64>,
    /// Sockets.
    pub sockets: Value<i64>,
    /// Memory MiB.
    pub memory: Value<i64>,
    /// Disks.
    pub disk: Value<Vec<DiskBlock>>,
    /// First NIC.
    #[serde(with = "value::serde_as_vec")]
    pub network: Value<NetworkBlock>,
    /// Static IPv4.
    #[serde(with = "value::serde_as_vec")]
    pub ipv4: Value<Ipv4Block>,
    /// DNS servers.
    pub nameservers: Value<Vec<Value<String>>>,
    /// Search domain.
    pub search_domain: Value<String>,
    /// Tags.
    pub tags: Value<BTreeSet<Value<String>>>,
    /// Notes.
    pub description: Value<String>,
    /// Start at host boot.
    pub on_boot: Value<bool>,
    /// Keep running.
    pub started: Value<bool>,
    /// Timeouts.
    #[serde(with = "value::serde_as_vec")]
    pub timeouts: Value<TimeoutsBlock>,
    /// MAC of net0.
    pub mac_address: Value<String>,
    /// Bare IPv4 of ipconfig0.
    pub ipv4_address: Value<String>,
}

/// `node/vmid`.
pub fn format_id(node: &str, vmid: u32) -> String {
    format!("{node}/{vmid}")
}

/// Parses `node/vmid`.
pub fn parse_id(id: &str) -> Option<(String, u32)> {
    let (node, vmid) = id.split_once('/')?;
    let vmid = vmid.parse().ok()?;
    (!node.is_empty()).then(|| (node.to_string(), vmid))
}

/// The bare address of a CIDR.
pub fn bare_ip(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

fn known<T: Clone>(value: &Value<T>) -> Option<T> {
    value.as_ref_option().cloned()
}

/// What Proxmox reports, unless the value held (the configuration's, through the plan or the
/// prior state) says the same in another spelling: Terraform wants back what was planned.
fn keep_spelling(
    held: &Value<String>,
    read: Option<String>,
    same: fn(&str, &str) -> bool,
) -> Value<String> {
    match (held, read) {
        (Value::Value(held_text), read) if same(held_text, read.as_deref().unwrap_or("")) => {
            held.clone()
        }
        (_, Some(read)) => Value::Value(read),
        (_, None) => Value::Null,
    }
}

/// Proxmox keeps no trailing newline (a heredoc ends with one) and drops an empty description.
fn same_text(a: &str, b: &str) -> bool {
    a.trim_end() == b.trim_end()
}

/// Proxmox writes MACs in capitals; `bc:24:...` is the same address.
fn same_mac(a: &str, b: &str) -> bool {
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

impl VmState {
    /// Node and VMID from `id`.
    pub fn node_vmid(&self) -> Option<(String, u32)> {
        self.id.as_ref_option().and_then(|id| parse_id(id))
    }

    /// What the client should set.
    pub fn to_spec(&self) -> VmSpec {
        VmSpec {
            name: known(&self.name).unwrap_or_default(),
            cores: known(&self.cores).map(|v| v as u64),
            sockets: known(&self.sockets).map(|v| v as u64),
            memory: known(&self.memory).map(|v| v as u64),
            disks: self
                .disk
                .as_ref_option()
                .map(|disks| {
                    disks
                        .iter()
                        .filter_map(|d| {
                            Some(DiskSpec {
                                slot: known(&d.slot)?,
                                size_gb: known(&d.size_gb)? as u64,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            network: self.network.as_ref_option().map(|n| NetworkSpec {
                bridge: known(&n.bridge).unwrap_or_else(|| "vmbr0".into()),
                vlan: known(&n.vlan).map(|v| v as u16),
                mac: known(&n.mac).map(|m| m.to_ascii_uppercase()),
                model: known(&n.model).unwrap_or_else(|| "virtio".into()),
            }),
            ipv4: self.ipv4.as_ref_option().and_then(|i| {
                Some(Ipv4Spec {
                    address: known(&i.address)?,
                    gateway: known(&i.gateway),
                })
            }),
            nameservers: self
                .nameservers
                .as_ref_option()
                .map(|list| list.iter().filter_map(known).collect()),
            search_domain: known(&self.search_domain),
            tags: self
                .tags
                .as_ref_option()
                .map(|set| set.iter().filter_map(known).collect()),
            description: known(&self.description),
            on_boot: known(&self.on_boot),
            mark_managed: false,
            workspace_tag: None,
            awaits_address: false,
        }
    }

    /// Replaces the computed values still unknown with null: a state Terraform keeps after a
    /// failed apply may hold no unknowns.
    pub fn fill_unknowns(&mut self) {
        for value in [&mut self.cores, &mut self.sockets, &mut self.memory] {
            if value.is_unknown() {
                *value = Value::Null;
            }
        }
        for value in [&mut self.mac_address, &mut self.ipv4_address] {
            if value.is_unknown() {
                *value = Value::Null;
            }
        }
        if let Value::Value(net) = &mut self.network {
            if net.mac.is_unknown() {
                net.mac = Value::Null;
            }
        }
    }

    /// The clone source.
    pub fn clone_source(&self) -> CloneSource {
        let block = self.clone.as_ref_option().cloned().unwrap_or_default();
        CloneSource {
            template_id: known(&block.template_id).map(|v| v as u32),
            template_name: known(&block.template_name),
            full: known(&block.full).unwrap_or(true),
            storage: known(&block.storage),
            pool: known(&block.pool),
        }
    }

    /// The planned create, as [`super::from_backup`] compares it with a backup's VM.
    pub fn wanted(&self) -> super::from_backup::Wanted {
        super::from_backup::Wanted {
            node: known(&self.node).unwrap_or_default(),
            name: known(&self.name).unwrap_or_default(),
            vm_id: known(&self.vm_id).map(|v| v as u32),
            clone: self
                .clone
                .as_ref_option()
                .cloned()
                .unwrap_or_default()
                .source(),
        }
    }

    /// Refreshes every managed attribute from what Proxmox reports. Attributes the
    /// configuration leaves out (null) stay null unless they are computed, so a template's
    /// values never show up as a diff.
    pub fn refresh_from(&mut self, node: &str, vmid: u32, facts: &VmFacts, running: bool) {
        self.id = Value::Value(format_id(node, vmid));
        self.node = Value::Value(node.to_string());
        self.vm_id = Value::Value(vmid as i64);
        self.name = Value::Value(facts.name.clone());
        self.cores = Value::Value(facts.cores as i64);
        self.sockets = Value::Value(facts.sockets as i64);
        self.memory = Value::Value(facts.memory as i64);
        // Disks: the ones the configuration manages, in its order; all data disks on import.
        let managed: Vec<DiskBlock> = match self.disk.as_ref_option() {
            Some(disks) if !disks.is_empty() => disks
                .iter()
                .filter_map(|d| {
                    let slot = known(&d.slot)?;
                    let size = facts.disks.get(&slot)?;
                    Some(DiskBlock {
                        slot: Value::Value(slot),
                        size_gb: Value::Value(size.gib() as i64),
                    })
                })
                .collect(),
            _ if self.clone.is_null() => facts
                .disks
                .iter()
                .map(|(slot, size)| DiskBlock {
                    slot: Value::Value(slot.clone()),
                    size_gb: Value::Value(size.gib() as i64),
                })
                .collect(),
            _ => Vec::new(),
        };
        self.disk = Value::Value(managed);
        let importing = self.clone.is_null();
        let held_mac = self
            .network
            .as_ref_option()
            .map(|n| n.mac.clone())
            .unwrap_or_default();
        if self.network.is_value() || (importing && facts.network.is_some()) {
            self.network = match &facts.network {
                Some(net) => Value::Value(NetworkBlock {
                    bridge: Value::Value(net.bridge.clone()),
                    vlan: net
                        .vlan
                        .map(|v| Value::Value(v as i64))
                        .unwrap_or(Value::Null),
                    mac: keep_spelling(&held_mac, net.mac.clone(), same_mac),
                    model: Value::Value(net.model.clone()),
                }),
                None => Value::Null,
            };
        }
        self.mac_address = keep_spelling(
            &self.mac_address,
            facts.network.as_ref().and_then(|n| n.mac.clone()),
            same_mac,
        );
        if self.ipv4.is_value() || (importing && facts.ipv4.is_some()) {
            self.ipv4 = match &facts.ipv4 {
                Some(ip) => Value::Value(Ipv4Block {
                    address: Value::Value(ip.address.clone()),
                    gateway: ip.gateway.clone().map(Value::Value).unwrap_or(Value::Null),
                }),
                None => Value::Null,
            };
        }
        self.ipv4_address = facts
            .ipv4
            .as_ref()
            .map(|ip| Value::Value(bare_ip(&ip.address)))
            .unwrap_or(Value::Null);
        if self.nameservers.is_value() || (importing && !facts.nameservers.is_empty()) {
            self.nameservers = Value::Value(
                facts
                    .nameservers
                    .iter()
                    .cloned()
                    .map(Value::Value)
                    .collect(),
            );
        }
        if self.search_domain.is_value() || (importing && facts.search_domain.is_some()) {
            self.search_domain = facts
                .search_domain
                .clone()
                .map(Value::Value)
                .unwrap_or(Value::Null);
        }
        if self.tags.is_value() || (importing && !facts.tags.is_empty()) {
            self.tags = Value::Value(facts.tags.iter().cloned().map(Value::Value).collect());
        }
        if self.description.is_value() || (importing && facts.description.is_some()) {
            self.description =
                keep_spelling(&self.description, facts.description.clone(), same_text);
        }
        if self.on_boot.is_value() || (importing && facts.on_boot) {
            self.on_boot = Value::Value(facts.on_boot);
        }
        self.started = Value::Value(running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxmox::vm_config::NetworkSpec;

    fn facts_with_mac(mac: &str) -> VmFacts {
        VmFacts {
            name: "solo".into(),
            network: Some(NetworkSpec {
                bridge: "vmbr0".into(),
                vlan: None,
                mac: Some(mac.into()),
                model: "virtio".into(),
            }),
            ..Default::default()
        }
    }

    fn planned_with_mac(mac: &str) -> VmState {
        VmState {
            clone: Value::Value(CloneBlock::default()),
            network: Value::Value(NetworkBlock {
                mac: Value::Value(mac.into()),
                ..Default::default()
            }),
            mac_address: Value::Value(mac.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_lowercase_mac_in_the_configuration_stays_lowercase_in_state() {
        let mut state = planned_with_mac("bc:24:11:00:00:01");
        state.refresh_from("pve1", 105, &facts_with_mac("BC:24:11:00:00:01"), true);
        assert_eq!(state.mac_address, Value::Value("bc:24:11:00:00:01".into()));
        let net = state.network.as_ref_option().unwrap();
        assert_eq!(net.mac, Value::Value("bc:24:11:00:00:01".into()));
    }

    #[test]
    fn a_heredoc_or_empty_description_stays_as_written_in_state() {
        for written in ["Talos node\n", ""] {
            let mut state = planned_with_mac("BC:24:11:00:00:01");
            state.description = Value::Value(written.into());
            let facts = VmFacts {
                description: Some(written.trim_end().to_string()).filter(|d| !d.is_empty()),
                ..facts_with_mac("BC:24:11:00:00:01")
            };
            state.refresh_from("pve1", 105, &facts, true);
            assert_eq!(state.description, Value::Value(written.into()));
        }
    }

    #[test]
    fn a_mac_changed_in_proxmox_shows_as_drift() {
        let mut state = planned_with_mac("bc:24:11:00:00:01");
        state.refresh_from("pve1", 105, &facts_with_mac("BC:24:11:00:00:02"), true);
        assert_eq!(state.mac_address, Value::Value("BC:24:11:00:00:02".into()));
    }
}

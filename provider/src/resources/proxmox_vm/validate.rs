//! Checks of a configuration that need no API call, each naming its attribute.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tf_provider::value::Value;
use tf_provider::Diagnostics;

use super::state::VmState;
use crate::resources::diag::path;

const NIC_MODELS: &[&str] = &["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];

/// qemu-server `src/PVE/QemuServer.pm`: `description` has maxLength 8192.
const DESCRIPTION_MAX: usize = 8192;

/// pve-common `src/PVE/JSONSchema.pm` format `dns-name`: labels of letters, digits and inner
/// `-`, joined by `.`.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// pve-common `src/PVE/JSONSchema.pm` format `pve-tag`: `[a-z0-9_][a-z0-9_\-+.]*`. PVE lower-cases
/// tags unless datacenter `tag-style` says case-sensitive (pve-guest-common
/// `src/PVE/GuestHelpers.pm`), so only lower-case tags come back as written.
fn is_pve_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-+.".contains(c))
}

/// Reports every problem of the configuration at once.
pub fn validate(config: &VmState, diags: &mut Diagnostics) {
    if let Value::Value(name) = &config.name {
        if !is_dns_name(name) {
            diags.error("Invalid VM name", format!("{name:?} must be a DNS name: labels of letters, digits and '-' (not at either end) joined by '.', as Proxmox requires."), path(&["name"]));
        }
    }
    if let Value::Value(description) = &config.description {
        // qemu-server `src/PVE/QemuServer.pm`: description maxLength 8192.
        let length = description.chars().count();
        if length > DESCRIPTION_MAX {
            diags.error(
                "Description too long",
                format!("description has {length} characters; Proxmox accepts at most {DESCRIPTION_MAX}."),
                path(&["description"]),
            );
        }
    }
    if let Value::Value(tags) = &config.tags {
        for tag in tags {
            if let Value::Value(tag) = tag {
                if !is_pve_tag(tag) {
                    diags.error(
                        "Invalid tag",
                        format!(
                            "{tag:?} is not a Proxmox tag: lower-case letters, digits, '_', '-', '+' and '.', \
                             starting with a letter, digit or '_' (Proxmox lower-cases tags, so {:?} would \
                             come back changed).",
                            tag.to_ascii_lowercase()
                        ),
                        path(&["tags"]),
                    );
                }
            }
        }
    }
    if let Value::Value(id) = config.vm_id {
        if !(100..=999_999_999).contains(&id) {
            diags.error(
                "Invalid vm_id",
                format!("{id} is outside Proxmox's VMID range 100-999999999."),
                path(&["vm_id"]),
            );
        }
    }
    for (attribute, value, min) in [
        ("cores", config.cores, 1),
        ("sockets", config.sockets, 1),
        ("memory", config.memory, 16),
    ] {
        if let Value::Value(v) = value {
            if v < min {
                let unit = if attribute == "memory" { " MiB" } else { "" };
                diags.error(
                    format!("Invalid {attribute}"),
                    format!("{attribute} = {v} is below the minimum of {min}{unit}."),
                    path(&[attribute]),
                );
            }
        }
    }
    match &config.clone {
        // Only a create needs it (checked in plan_create): an imported VM may have none.
        Value::Null => {}
        Value::Value(clone) => {
            if clone.template_id.is_null() && clone.template_name.is_null() {
                diags.error(
                    "Missing template",
                    "Set clone.template_id or clone.template_name.",
                    path(&["clone", "0", "template_id"]),
                );
            }
            if clone.template_id.is_value() && clone.template_name.is_value() {
                diags.error(
                    "Conflicting template",
                    "Set only one of clone.template_id and clone.template_name.",
                    path(&["clone", "0", "template_name"]),
                );
            }
            if clone.full == Value::Value(false) && clone.storage.is_value() {
                diags.error(
                    "Storage needs a full clone",
                    "clone.storage only applies to full clones; remove it or set full = true.",
                    path(&["clone", "0", "storage"]),
                );
            }
        }
        Value::Unknown => {}
    }
    validate_disks(config, diags);
    if let Value::Value(net) = &config.network {
        if let Value::Value(vlan) = net.vlan {
            if !(1..=4094).contains(&vlan) {
                diags.error(
                    "Invalid VLAN",
                    format!("vlan = {vlan} must be between 1 and 4094."),
                    path(&["network", "0", "vlan"]),
                );
            }
        }
        if let Value::Value(mac) = &net.mac {
            let parts: Vec<&str> = mac.split(':').collect();
            if parts.len() != 6
                || !parts
                    .iter()
                    .all(|p| p.len() == 2 && u8::from_str_radix(p, 16).is_ok())
            {
                diags.error(
                    "Invalid MAC address",
                    format!("{mac:?} is not a MAC address like BC:24:11:00:00:01."),
                    path(&["network", "0", "mac"]),
                );
            }
        }
        if let Value::Value(model) = &net.model {
            if !NIC_MODELS.contains(&model.as_str()) {
                diags.error(
                    "Invalid NIC model",
                    format!("{model:?} is not one of {}.", NIC_MODELS.join(", ")),
                    path(&["network", "0", "model"]),
                );
            }
        }
    }
    validate_ipv4(config, diags);
    if let Value::Value(servers) = &config.nameservers {
        for (i, server) in servers.iter().enumerate() {
            if let Value::Value(server) = server {
                if server.parse::<std::net::IpAddr>().is_err() {
                    diags.error(
                        "Invalid nameserver",
                        format!("{server:?} is not an IP address."),
                        path(&["nameservers", &i.to_string()]),
                    );
                }
            }
        }
    }
    if let Value::Value(timeouts) = &config.timeouts {
        timeouts.validate(diags);
    }
}

fn validate_disks(config: &VmState, diags: &mut Diagnostics) {
    let Value::Value(disks) = &config.disk else {
        return;
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, disk) in disks.iter().enumerate() {
        let index = i.to_string();
        if let Value::Value(slot) = &disk.slot {
            let bus = slot.trim_end_matches(|c: char| c.is_ascii_digit());
            if !matches!(bus, "scsi" | "virtio" | "sata" | "ide") || bus.len() == slot.len() {
                diags.error(
                    "Invalid disk slot",
                    format!("{slot:?} is not a disk slot like scsi0, virtio0, sata0 or ide0."),
                    path(&["disk", &index, "slot"]),
                );
            }
            if let Some(first) = seen.insert(slot.clone(), i) {
                diags.error(
                    "Duplicate disk slot",
                    format!("disk {slot} is listed twice (blocks {first} and {i})."),
                    path(&["disk", &index, "slot"]),
                );
            }
        }
        if let Value::Value(size) = disk.size_gb {
            if size < 1 {
                diags.error(
                    "Invalid disk size",
                    format!("size_gb = {size} must be at least 1."),
                    path(&["disk", &index, "size_gb"]),
                );
            }
        }
    }
}

fn validate_ipv4(config: &VmState, diags: &mut Diagnostics) {
    let Value::Value(ipv4) = &config.ipv4 else {
        return;
    };
    let Value::Value(address) = &ipv4.address else {
        return;
    };
    let net: Ipv4Net = match address.parse() {
        Ok(net) => net,
        Err(_) => {
            diags.error(
                "Invalid IPv4 address",
                format!("{address:?} is not an IPv4 address with prefix, e.g. 10.0.0.11/24 (DHCP breaks Talos certificates: castle needs static addresses)."),
                path(&["ipv4", "0", "address"]),
            );
            return;
        }
    };
    if let Value::Value(gateway) = &ipv4.gateway {
        match gateway.parse::<Ipv4Addr>() {
            Err(_) => diags.error(
                "Invalid gateway",
                format!("{gateway:?} is not an IPv4 address."),
                path(&["ipv4", "0", "gateway"]),
            ),
            Ok(gw) if !net.contains(&gw) => diags.error(
                "Gateway outside the subnet",
                format!(
                    "gateway {gw} is not inside {} ({address}); the VM could not reach it.",
                    net.trunc()
                ),
                path(&["ipv4", "0", "gateway"]),
            ),
            Ok(gw) if gw == net.addr() => diags.error(
                "Gateway equals the address",
                format!("gateway {gw} is the VM's own address."),
                path(&["ipv4", "0", "gateway"]),
            ),
            Ok(_) => {}
        }
    }
}

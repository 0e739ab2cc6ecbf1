//! The schema of `castle_proxmox_vm`.

use tf_provider::map;
use tf_provider::schema::{
    AttributeConstraint, AttributeType, Block, Description, NestedBlock, Schema,
};

use crate::resources::attributes::attr;
use crate::resources::timeouts;

/// The resource schema.
pub fn schema() -> Schema {
    use AttributeConstraint::*;
    use AttributeType::*;
    let clone = Block {
        description: Description::plain("The template to clone. Changing it replaces the VM."),
        attributes: map! {
            "template_id" => attr(Number, Optional, "VMID of the template. Give this or `template_name`."),
            "template_name" => attr(String, Optional, "Name of the template, looked up across the cluster."),
            "full" => attr(Bool, OptionalComputed, "Full clone (default `true`); `false` makes a linked clone."),
            "storage" => attr(String, Optional, "Storage for the new disks (full clones only)."),
            "pool" => attr(String, Optional, "Resource pool the VM joins.")
        },
        ..Default::default()
    };
    let disk = Block {
        description: Description::plain(
            "A disk of the template to grow. Disks only grow: a smaller size is an error.",
        ),
        attributes: map! {
            "slot" => attr(String, Required, "Disk slot, e.g. `scsi0` or `virtio0`."),
            "size_gb" => attr(Number, Required, "Size in GiB.")
        },
        ..Default::default()
    };
    let network = Block {
        description: Description::plain("The first NIC (`net0`)."),
        attributes: map! {
            "bridge" => attr(String, OptionalComputed, "Bridge (default `vmbr0`)."),
            "vlan" => attr(Number, Optional, "VLAN tag (1-4094)."),
            "mac" => attr(String, OptionalComputed, "MAC address; kept from the clone when not set."),
            "model" => attr(String, OptionalComputed, "NIC model (default `virtio`).")
        },
        ..Default::default()
    };
    let ipv4 = Block {
        description: Description::plain(
            "Static IPv4 written to cloud-init `ipconfig0` (Talos nocloud reads it).",
        ),
        attributes: map! {
            "address" => attr(String, Required, "Address with prefix, e.g. `10.0.0.11/24`."),
            "gateway" => attr(String, Optional, "Default gateway, inside the address's subnet.")
        },
        ..Default::default()
    };
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown(
                "A Proxmox VE VM cloned from a template, with static networking through cloud-init, \
                 sized, started and kept in line. Talos-ready: no QEMU guest agent is needed.",
            ),
            attributes: map! {
                "id" => attr(String, Computed, "`node/vmid`."),
                "node" => attr(String, Required, "Proxmox node to run on. Changing it replaces the VM."),
                "name" => attr(String, Required, "VM name (a DNS label)."),
                "vm_id" => attr(Number, OptionalComputed, "VMID; allocated safely when not set, even for many VMs created at once."),
                "cores" => attr(Number, OptionalComputed, "Cores per socket (template's value when not set)."),
                "sockets" => attr(Number, OptionalComputed, "CPU sockets (template's value when not set)."),
                "memory" => attr(Number, OptionalComputed, "Memory in MiB, at least 16 (template's value when not set)."),
                "nameservers" => attr(List(String.into()), Optional, "DNS servers for cloud-init."),
                "search_domain" => attr(String, Optional, "DNS search domain for cloud-init."),
                "tags" => attr(Set(String.into()), Optional, "Tags; order does not matter."),
                "description" => attr(String, Optional, "Notes shown in the Proxmox UI."),
                "on_boot" => attr(Bool, Optional, "Start the VM when the host boots."),
                "started" => attr(Bool, OptionalComputed, "Keep the VM running (default `true`)."),
                "mac_address" => attr(String, Computed, "MAC address of `net0`."),
                "ipv4_address" => attr(String, Computed, "The bare IPv4 address from `ipv4.address`, for wiring into a cluster.")
            },
            blocks: map! {
                "clone" => NestedBlock::Optional(clone),
                "disk" => NestedBlock::List(disk),
                "network" => NestedBlock::Optional(network),
                "ipv4" => NestedBlock::Optional(ipv4),
                "timeouts" => timeouts::schema("15m", "15m", "10m")
            },
            ..Default::default()
        },
    }
}

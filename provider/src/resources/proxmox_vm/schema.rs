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
        description: Description::markdown("The template to clone; required to create a VM. Changing any of its arguments replaces the VM. An imported VM has no `clone` block (Proxmox does not record which template a VM came from); adding one later only records it."),
        attributes: map! {
            "template_id" => attr(Number, Optional, "VMID of the template. Give exactly one of `template_id` and `template_name`."),
            "template_name" => attr(String, Optional, "Name of the template. The one on the VM's `node` comes first (keep one template per node under one name); a template only another node has, with a volume on local storage such as `local-lvm`, is refused at plan time, since Proxmox clones across nodes only from shared storage. Give exactly one of `template_id` and `template_name`."),
            "full" => attr(Bool, OptionalComputed, "Full clone (default `true`); `false` makes a linked clone."),
            "storage" => attr(String, Optional, "Storage for the new disks (full clones only); the template's storage when not set."),
            "pool" => attr(String, Optional, "Resource pool the VM joins.")
        },
        ..Default::default()
    };
    let disk = Block {
        description: Description::markdown(
            "A disk of the template to grow, one block per disk. Disks only grow: a smaller size is a plan-time error.",
        ),
        attributes: map! {
            "slot" => attr(String, Required, "A disk slot of the template: `scsi0`, `virtio0`, `sata0`, `ide0`..."),
            "size_gb" => attr(Number, Required, "Size in GiB.")
        },
        ..Default::default()
    };
    let network = Block {
        description: Description::markdown("The first network interface (`net0`). Changes reach a running VM at its next boot: apply restarts it."),
        attributes: map! {
            "bridge" => attr(String, OptionalComputed, "Bridge the NIC is plugged into (default `vmbr0`)."),
            "vlan" => attr(Number, Optional, "VLAN tag (1-4094)."),
            "mac" => attr(String, OptionalComputed, "MAC address; kept from the clone when not set."),
            "model" => attr(String, OptionalComputed, "NIC model: `virtio` (default), `e1000`, `e1000e`, `rtl8139` or `vmxnet3`.")
        },
        ..Default::default()
    };
    let ipv4 = Block {
        description: Description::markdown(
            "Static IPv4 written to cloud-init `ipconfig0`; Talos's nocloud image reads it, so the node boots in maintenance mode at this address. DHCP is not offered: Talos certificates carry the node address.",
        ),
        attributes: map! {
            "address" => attr(String, Required, "Address with prefix, e.g. `10.0.0.11/24`."),
            "gateway" => attr(String, Optional, "Default gateway; it must lie inside the address's subnet.")
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
                "name" => attr(String, Required, "VM name, a DNS name as Proxmox checks it: labels of letters, digits and inner `-`, joined by `.`."),
                "vm_id" => attr(Number, OptionalComputed, "VMID. When not set castle picks a free one, safely even when many VMs are created at once. Changing it replaces the VM."),
                "cores" => attr(Number, OptionalComputed, "Cores per socket (template's value when not set)."),
                "sockets" => attr(Number, OptionalComputed, "CPU sockets (template's value when not set)."),
                "memory" => attr(Number, OptionalComputed, "Memory in MiB, at least 16 (template's value when not set)."),
                "nameservers" => attr(List(String.into()), Optional, "DNS servers for cloud-init."),
                "search_domain" => attr(String, Optional, "DNS search domain for cloud-init."),
                "tags" => attr(Set(String.into()), Optional, "Tags, lower case: `[a-z0-9_][a-z0-9_-+.]*` (Proxmox lower-cases tags). Order does not matter (Proxmox sorts them); the tags `castle-managed` and `castle-ws-...` (the workspace's marker) that castle adds are not shown."),
                "description" => attr(String, Optional, "Notes shown in the Proxmox UI, at most 8192 characters."),
                "on_boot" => attr(Bool, Optional, "Start the VM when the host boots."),
                "started" => attr(Bool, OptionalComputed, "Keep the VM running (default `true`): a VM stopped outside Terraform shows as drift and the next apply starts it again. `false` shuts it down."),
                "mac_address" => attr(String, Computed, "MAC address of `net0`."),
                "ipv4_address" => attr(String, Computed, "The bare IPv4 address from `ipv4.address`, known at plan time, for wiring into `castle_talos_cluster`.")
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

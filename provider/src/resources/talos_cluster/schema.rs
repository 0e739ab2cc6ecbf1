//! The schema of `castle_talos_cluster`.

use tf_provider::map;
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, NestedBlock, Schema,
};

use crate::resources::attributes::{attr, sensitive};
use crate::resources::timeouts;

fn secret(attr_type: AttributeType, description: &str) -> Attribute {
    sensitive(attr(attr_type, AttributeConstraint::Computed, description))
}

/// The resource schema.
pub fn schema() -> Schema {
    use AttributeConstraint::*;
    use AttributeType::*;
    let strings = || List(String.into());
    let node = Block {
        description: Description::markdown(
            "One node, e.g. `node { name = \"cp-1\", address = \"10.0.0.11/24\", role = \"controlplane\" }`. \
             Nodes are told apart by name: adding or removing a block changes that node only.",
        ),
        attributes: map! {
        "name" => attr(String, Required, "Node name: its hostname and Kubernetes node name, unique in the cluster."),
        "address" => attr(String, Required, "Static address with prefix, e.g. `10.0.0.11/24` (from `castle_proxmox_vm.x.ipv4[0].address`)."),
        "role" => attr(String, Required, "`controlplane` or `worker`."),
        "install_disk" => attr(String, Optional, "Disk Talos installs to (default `/dev/sda`)."),
        "mac_address" => attr(String, Optional, "MAC address of the NIC that carries `address` (e.g. `castle_proxmox_vm.x.mac_address`). Without it, the machine's only physical NIC is used: the VM must then have exactly one NIC."),
        "patches" => attr(List(String.into()), Optional, "Patches for this node only, applied last (strategic-merge YAML or RFC 6902 JSON patches, as `patches`).")
        },
        ..Default::default()
    };
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown(
                "A Talos Linux Kubernetes cluster: its PKI, one machine configuration per node, applied over the \
                 Talos API, etcd bootstrapped once, and a wait until the cluster is healthy. Returns kubeconfig \
                 and talosconfig. Adding or removing a `node` block changes that node only.",
            ),
            attributes: map! {
                "id" => attr(String, Computed, "The cluster name."),
                "name" => attr(String, Required, "Cluster name. Changing it builds a new cluster."),
                "endpoint" => attr(String, OptionalComputed, "Kubernetes API as an `https://` URL or a host; port 6443 is added when none is given (`k8s.lan` and `https://k8s.lan` mean `https://k8s.lan:6443`). Default `https://<vip>:6443`."),
                "vip" => attr(String, Optional, "Layer 2 virtual IP shared by the control planes, in their subnet."),
                "talos_version" => attr(String, Required, "Talos release the nodes run, e.g. `v1.12.0` (v1.10 to v1.13)."),
                "kubernetes_version" => attr(String, OptionalComputed, "Kubernetes version, e.g. `v1.35.2`, inside the Talos release's window (v1.10: 1.28-1.33, v1.11: 1.29-1.34, v1.12: 1.30-1.35, v1.13: 1.31-1.36). Default: the release's own (v1.10: `v1.33.0`, v1.11: `v1.34.0`, v1.12: `v1.35.0`, v1.13: `v1.36.0`), following `talos_version` when that changes."),
                "gateway" => attr(String, Required, "Default gateway of the nodes."),
                "nameservers" => attr(strings(), Optional, "DNS servers of the nodes."),
                "install_image" => attr(String, Optional, "Installer image; by default the Image Factory image for `extensions`."),
                "extensions" => attr(strings(), Optional, "Official system extensions, e.g. `siderolabs/iscsi-tools` and `siderolabs/util-linux-tools` for Longhorn."),
                "disk_encryption" => attr(String, Optional, "Encrypt STATE and EPHEMERAL with `nodeID` or `tpm` keys."),
                "patches" => attr(strings(), Optional, "Patches for every node, applied first: Talos strategic-merge YAML (maps merge, lists append except pod/service subnets, `machine.network.interfaces` merge by interface) or RFC 6902 JSON patches (a list of `op`/`path`/`value`) on the v1alpha1 document."),
                "controlplane_patches" => attr(strings(), Optional, "YAML patches for control planes."),
                "worker_patches" => attr(strings(), Optional, "YAML patches for workers."),
                "inline_manifests" => attr(Map(String.into()), Optional, "Manifests applied at bootstrap, by name (e.g. Flux)."),
                "extra_manifests" => attr(strings(), Optional, "Manifest URLs applied at bootstrap."),
                "kubeconfig_file" => attr(String, Optional, "Path where castle keeps the admin kubeconfig, written with mode 0600 after every create, update and renewal and removed on destroy. A file changed or removed outside Terraform shows as drift."),
                "cert_sans" => attr(strings(), Optional, "Extra certificate SANs for the API server and Talos API."),
                "kubeconfig" => secret(String, "Admin kubeconfig (`system:masters`), renewed within 30 days of expiry."),
                "talosconfig" => secret(String, "talosconfig with an `os:admin` certificate, renewed within 30 days of expiry."),
                "machine_configs" => secret(Map(String.into()), "The machine configuration applied to each node, by node name."),
                "node_versions" => attr(Map(String.into()), Computed, "The Talos release each node ran when last read. A node found on another release than `talos_version` is upgraded (or brought back) by the next apply."),
                "client_certificate_expires_at" => attr(String, Computed, "When the kubeconfig and talosconfig certificates expire (RFC 3339).")
            },
            blocks: map! {
                "node" => NestedBlock::Set(node),
                "timeouts" => timeouts::schema("20m", "20m", "10m")
            },
            ..Default::default()
        },
    }
}

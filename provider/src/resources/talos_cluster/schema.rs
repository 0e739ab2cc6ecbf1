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
        "address" => attr(String, Required, "The node's static address with prefix as it booted, e.g. `10.0.0.11/24` (for Proxmox VMs: `castle_proxmox_vm.x.ipv4[0].address`). Addresses must be distinct."),
        "role" => attr(String, Required, "`controlplane` or `worker`. Use an odd number of control planes (1, 3 or 5): an even number is allowed but warned about, since it tolerates no more failures than one less."),
        "install_disk" => attr(String, Optional, "Disk Talos installs to (default `/dev/sda`)."),
        "mac_address" => attr(String, Optional, "MAC address of the NIC that carries `address` (e.g. `castle_proxmox_vm.x.mac_address`). Without it, the machine's only physical NIC is used: the VM must then have exactly one NIC (with `vm_id` and the provider's `proxmox` block, a VM with more is a plan-time error)."),
        "patches" => attr(List(String.into()), Optional, "Patches for this node only, applied last (strategic-merge YAML or RFC 6902 JSON patches, as `patches`)."),
        "vm_id" => attr(String, Optional, "The VM behind the node, `node/vmid` (`castle_proxmox_vm.x.id`); needs the provider's `proxmox` block. When it changes (a new template, `terraform apply -replace`, a VM rebuilt after it was lost), castle replaces the node's machine: the old one leaves etcd and Kubernetes and is reset and its VM stopped (or, if its VM is gone, its etcd member and Node object are removed), then the new VM, created stopped while the old one held the address, is started, configured and joins etcd as a learner that is promoted; one node at a time, the cluster healthy in between. A changed `mac_address` is a new machine too, except on the same VM: with an unchanged `vm_id` (Proxmox hands a rebuilt VM its predecessor's freed VMID) castle asks the address, and a machine still running the cluster's config is the same one behind a new NIC, which keeps its etcd member. Replacing the only control plane is refused at plan time.")
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
                "name" => attr(String, Required, "Cluster name (`cluster.clusterName`, the kubeconfig and talosconfig context). Changing it builds a new cluster: the old one is reset first."),
                "secrets" => sensitive(attr(String, Optional, "The cluster's identity, from `castle_talos_secrets.x.secrets` (Talos `secrets.yaml` format). Stored in state before any node sees it, so an apply killed midway is finished by the next one. Without it the cluster keeps its own secrets in private state (deprecated: a run killed during create loses them). Other secrets than the cluster's replace the cluster.")),
                "endpoint" => attr(String, OptionalComputed, "Kubernetes API as an `https://` URL or a host, known at plan time; port 6443 is added when none is given (`k8s.lan` and `https://k8s.lan` mean `https://k8s.lan:6443`). Default `https://<vip>:6443`, else the first control plane."),
                "vip" => attr(String, Optional, "Layer 2 virtual IP the control planes share for the Kubernetes API, in their subnet, neither a node address nor the gateway. Without it (and without `endpoint`) the API is reached through the first control plane only, and the plan warns about it."),
                "talos_version" => attr(String, Required, "The Talos release the nodes run, with its patch release, e.g. `v1.12.0`; v1.10 to v1.13 are supported. Configs follow this release's config contract: set it to what the machines booted. Changing it upgrades every node in place, control planes first."),
                "kubernetes_version" => attr(String, OptionalComputed, "Kubernetes version, e.g. `v1.35.2`, inside the Talos release's window (v1.10: 1.28-1.33, v1.11: 1.29-1.34, v1.12: 1.30-1.35, v1.13: 1.31-1.36). Default: the release's own (v1.10: `v1.33.0`, v1.11: `v1.34.0`, v1.12: `v1.35.0`, v1.13: `v1.36.0`), following `talos_version` when that changes. Changing it upgrades Kubernetes as `talosctl upgrade-k8s` does (control-plane static pods one node at a time, then the kubelets, then the bootstrap manifests: flannel, kube-proxy, CoreDNS), one minor release at a time: a jump over a minor release, or back to an older one, is refused at plan time."),
                "gateway" => attr(String, Required, "Default gateway of the nodes; it must lie in their subnet and must not be a node address."),
                "nameservers" => attr(strings(), Optional, "DNS servers of the nodes."),
                "install_image" => attr(String, Optional, "Installer image. Default: the Image Factory installer for `extensions` and `talos_version`; do not combine with `extensions`."),
                "extensions" => attr(strings(), Optional, "Official system extensions, e.g. `siderolabs/iscsi-tools` and `siderolabs/util-linux-tools` for Longhorn."),
                "disk_encryption" => attr(String, Optional, "Encrypt the STATE and EPHEMERAL partitions with keys derived from the node (`nodeID`) or sealed by its TPM (`tpm`). `tpm` needs a SecureBoot installer and a UEFI VM with SecureBoot and a TPM: Talos seals the key against the PCR signing key only signed images carry. Without `install_image` castle then installs the Image Factory's SecureBoot installer of `extensions` (`<factory>/installer-secureboot/<schematic>:<version>`); an `install_image` that is no `installer-secureboot` is a plan-time error."),
                "patches" => attr(strings(), Optional, "Patches for every node, applied first, merged as Talos merges them: strategic-merge YAML (maps merge, scalars replace, lists append except `cluster.network.podSubnets`/`serviceSubnets` and `auditPolicy`, which replace; `machine.network.interfaces` merge by `interface` or `deviceSelector`, their `vlans` by `vlanId`, `admissionControl` by `name`; `$patch: delete` removes a key or a document), or an RFC 6902 JSON patch (a list of `op`/`path`/`value`) on the v1alpha1 document. So a `certSANs` or `extraMounts` patch from a Talos guide adds to castle's entries. Each must be valid for `talos_version`'s schema: a bad patch is a plan-time error pointing at it."),
                "controlplane_patches" => attr(strings(), Optional, "Patches for control planes (either form, as `patches`), applied after `patches`."),
                "worker_patches" => attr(strings(), Optional, "Patches for workers (either form, as `patches`), applied after `patches`."),
                "inline_manifests" => attr(Map(String.into()), Optional, "Manifests applied at bootstrap, by name (for example Flux or a CNI). Talos creates each object once and never updates it: change it later with kubectl or a GitOps tool."),
                "extra_manifests" => attr(strings(), Optional, "Manifest URLs applied at bootstrap, as `inline_manifests` are."),
                "kubeconfig_file" => attr(String, Optional, "Path where castle keeps the admin kubeconfig, written with mode 0600 after every create, update and renewal and removed on destroy. A file changed or removed outside Terraform shows as drift and is written again. The directory must exist."),
                "cert_sans" => attr(strings(), Optional, "Extra SANs for the Kubernetes API server and Talos API certificates (a DNS name in front of the VIP, for example)."),
                "kubeconfig" => secret(String, "Admin kubeconfig (`system:masters` client certificate valid one year) for `endpoint`, renewed by the first apply within 30 days of expiry."),
                "talosconfig" => secret(String, "talosconfig whose context is the cluster name, with the control planes as endpoints and no default nodes, as `talosctl gen config` writes it (so every command names its targets with `-n`, and a bare `talosctl reboot` reaches no node), and an `os:admin` client certificate (one year), renewed like `kubeconfig` and when the control planes change."),
                "machine_configs" => secret(Map(String.into()), "The machine configuration applied to each node, by node name. Known at plan time on update, so a plan shows which nodes change."),
                "node_versions" => attr(Map(String.into()), Computed, "The Talos release each node ran when last read. A node found on another release than `talos_version` is upgraded (or brought back) by the next apply."),
                "node_extensions" => attr(Map(strings().into()), Computed, "The system extensions each node ran when last read, by name as `talosctl get extensions` shows them (`iscsi-tools` for `siderolabs/iscsi-tools`; the Image Factory's own `schematic` left out). A node that runs other extensions than `extensions` is upgraded to the installer image by the next apply."),
                "node_schematics" => attr(Map(String.into()), Computed, "The Image Factory schematic id of the image each node ran when last read (nodes booted from a plain Sidero image are left out). A node on another schematic than the one of `extensions`, even with the same extension names (kernel arguments, another list order), is upgraded to the installer image by the next apply."),
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

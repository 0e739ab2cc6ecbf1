//! The cluster description: what a user declares, with no Terraform types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs etcd and the Kubernetes control plane.
    #[serde(rename = "controlplane")]
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    /// The Talos name, `controlplane` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "controlplane",
            Role::Worker => "worker",
        }
    }
}

/// How the node's network interface is found.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkLink {
    /// The machine's only physical NIC (the usual Proxmox VM with one virtio NIC).
    #[default]
    Physical,
    /// A link by kernel name, e.g. `ens18`.
    Name(String),
    /// The NIC with this MAC address (most robust when the VM's MAC is known).
    Mac(String),
}

/// Key source for STATE/EPHEMERAL encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncryptionKeyKind {
    /// Key derived from the node's identity (no hardware needed).
    NodeId,
    /// Key sealed by the TPM (needs a vTPM on the VM).
    Tpm,
}

/// Disk encryption of the STATE and EPHEMERAL partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskEncryption {
    /// Where the LUKS2 key comes from.
    pub key: EncryptionKeyKind,
}

/// A manifest applied by Talos at bootstrap (`cluster.inlineManifests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineManifest {
    /// Unique name.
    pub name: String,
    /// The Kubernetes YAML.
    pub contents: String,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Static address with prefix length, e.g. `10.0.0.11/24`.
    pub address: String,
    /// Control plane or worker.
    pub role: Role,
    /// Install disk, e.g. `/dev/sda`.
    pub install_disk: String,
    /// Hostname; defaults to the node's name in [`ClusterSpec::nodes`].
    pub hostname: Option<String>,
    /// Which NIC carries the address.
    #[serde(default)]
    pub link: NetworkLink,
    /// YAML patches for this node only, applied last.
    #[serde(default)]
    pub patches: Vec<String>,
}

#[cfg(test)]
impl NodeSpec {
    /// A node at `address` installed on `/dev/sda`, no hostname, patches or NIC choice: the
    /// unit tests' node.
    pub(crate) fn plain(address: &str, role: Role) -> Self {
        NodeSpec {
            address: address.into(),
            role,
            install_disk: "/dev/sda".into(),
            hostname: None,
            link: NetworkLink::Physical,
            patches: vec![],
        }
    }
}

/// The whole cluster as the user describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Cluster name (`cluster.clusterName`, kubeconfig and talosconfig context).
    pub name: String,
    /// Kubernetes API endpoint: a URL used as given (`https://k8s.example:443`), or a host
    /// (DNS name or IP) reached on 6443. Takes precedence over the VIP for the API URL; the VIP
    /// is still shared by the control planes.
    pub endpoint: Option<String>,
    /// Layer 2 virtual IP shared by the control planes, e.g. `10.0.0.10`.
    pub vip: Option<String>,
    /// `v1.12` or `v1.12.3`.
    pub talos_version: String,
    /// `v1.33.2`.
    pub kubernetes_version: String,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeSpec>,
    /// Default gateway, e.g. `10.0.0.1`.
    pub gateway: String,
    /// DNS servers.
    pub nameservers: Vec<String>,
    /// Installer image; when unset it comes from [`ClusterSpec::extensions`].
    pub install_image: Option<String>,
    /// Official system extensions, e.g. `siderolabs/iscsi-tools` (Image Factory schematic).
    pub extensions: Vec<String>,
    /// Registry host of the Image Factory the installer comes from, e.g. `127.0.0.1:4443`;
    /// `None` for factory.talos.dev.
    #[serde(default)]
    pub factory_host: Option<String>,
    /// STATE and EPHEMERAL encryption.
    pub disk_encryption: Option<DiskEncryption>,
    /// Patches for every node, applied first.
    pub patches: Vec<String>,
    /// Patches per role, applied after the cluster patches.
    pub role_patches: BTreeMap<Role, Vec<String>>,
    /// Manifests Talos applies at bootstrap (e.g. Flux).
    pub inline_manifests: Vec<InlineManifest>,
    /// Manifest URLs Talos applies at bootstrap.
    pub extra_manifests: Vec<String>,
    /// Extra SANs for the API server and Talos API certificates.
    pub extra_cert_sans: Vec<String>,
}

impl ClusterSpec {
    /// Control-plane nodes, by name.
    pub fn control_planes(&self) -> impl Iterator<Item = (&String, &NodeSpec)> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.role == Role::ControlPlane)
    }
}

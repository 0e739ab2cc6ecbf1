//! The resource's state and private state, and the mapping to the pure config library's spec.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tf_provider::value::{self, Value};

use crate::resources::timeouts::TimeoutsBlock;
use crate::talos::config::{
    ClusterSpec, DiskEncryption, EncryptionKeyKind, InlineManifest, KnownNode, KnownSpec,
    NetworkLink, NodeSpec, Role,
};
use crate::talos::pki::{IssuedCertificate, SecretsBundle};

/// One entry of `nodes`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Name (hostname, Kubernetes node name).
    pub name: Value<String>,
    /// CIDR.
    pub address: Value<String>,
    /// `controlplane` / `worker`.
    pub role: Value<String>,
    /// Install disk.
    pub install_disk: Value<String>,
    /// MAC of the NIC.
    pub mac_address: Value<String>,
    /// The VM behind the node (`node/vmid`), for replacing its machine.
    #[serde(default)]
    pub vm_id: Value<String>,
    /// Node patches.
    pub patches: Value<Vec<Value<String>>>,
}

/// A list of strings as Terraform sends it.
pub type Strings = Value<Vec<Value<String>>>;

/// The whole resource.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Cluster name.
    pub id: Value<String>,
    /// Cluster name.
    pub name: Value<String>,
    /// The identity (Talos secrets YAML from `castle_talos_secrets`); null for a cluster that
    /// keeps its own in private state.
    pub secrets: Value<String>,
    /// API URL.
    pub endpoint: Value<String>,
    /// VIP.
    pub vip: Value<String>,
    /// Talos version.
    pub talos_version: Value<String>,
    /// Kubernetes version.
    pub kubernetes_version: Value<String>,
    /// `node { ... }` blocks (a set: nodes are told apart by name).
    pub node: Value<Vec<Value<NodeEntry>>>,
    /// Gateway.
    pub gateway: Value<String>,
    /// DNS.
    pub nameservers: Strings,
    /// Installer image.
    pub install_image: Value<String>,
    /// Extensions.
    pub extensions: Strings,
    /// `nodeID` / `tpm`.
    pub disk_encryption: Value<String>,
    /// Cluster patches.
    pub patches: Strings,
    /// Control-plane patches.
    pub controlplane_patches: Strings,
    /// Worker patches.
    pub worker_patches: Strings,
    /// Inline manifests.
    pub inline_manifests: Value<BTreeMap<String, Value<String>>>,
    /// Manifest URLs.
    pub extra_manifests: Strings,
    /// Extra SANs.
    pub cert_sans: Strings,
    /// Where to keep a copy of the kubeconfig.
    pub kubeconfig_file: Value<String>,
    /// Admin kubeconfig.
    pub kubeconfig: Value<String>,
    /// talosconfig.
    pub talosconfig: Value<String>,
    /// Node name to applied YAML.
    pub machine_configs: Value<BTreeMap<String, Value<String>>>,
    /// Node name to the Talos release it runs.
    pub node_versions: Value<BTreeMap<String, Value<String>>>,
    /// Node name to the system extensions it runs.
    pub node_extensions: Value<BTreeMap<String, Value<Vec<Value<String>>>>>,
    /// Node name to the Image Factory schematic of the image it runs (factory images only).
    /// Absent from states written before it existed.
    #[serde(default)]
    pub node_schematics: Value<BTreeMap<String, Value<String>>>,
    /// Expiry of the client certificates.
    pub client_certificate_expires_at: Value<String>,
    /// Timeouts.
    #[serde(with = "value::serde_as_vec")]
    pub timeouts: Value<TimeoutsBlock>,
    /// Registry host of the provider's Image Factory (not an attribute: the resource sets it
    /// from the provider configuration before it maps the state to a spec).
    #[serde(skip)]
    pub factory_host: Option<String>,
}

/// What never leaves the provider: the secrets bundle and the issued client certificates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterSecrets {
    /// The bundle as JSON (stable across struct changes of the encoding).
    pub bundle: String,
    /// The talosconfig client certificate.
    pub talos_client: Option<IssuedCertificate>,
    /// The kubeconfig client certificate.
    pub kube_client: Option<IssuedCertificate>,
}

impl ClusterSecrets {
    /// The bundle, decoded.
    pub fn bundle(&self) -> Result<SecretsBundle, String> {
        serde_json::from_str(&self.bundle)
            .map_err(|e| format!("the stored secrets bundle is unreadable: {e}"))
    }
}

/// The default install disk.
pub const DEFAULT_INSTALL_DISK: &str = "/dev/sda";

fn strings(value: &Strings) -> Option<Vec<String>> {
    match value {
        Value::Null => Some(Vec::new()),
        Value::Unknown => None,
        Value::Value(list) => list.iter().map(|v| v.as_ref_option().cloned()).collect(),
    }
}

fn known<T: Clone>(value: &Value<T>) -> Option<T> {
    value.as_ref_option().cloned()
}

fn optional(value: &Value<String>) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::Unknown => None,
        Value::Value(v) => Some(Some(v.clone())),
    }
}

/// The bare address of a CIDR.
pub fn bare_ip(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

fn role(value: &str) -> Role {
    match value {
        "controlplane" => Role::ControlPlane,
        _ => Role::Worker,
    }
}

fn encryption(kind: &str) -> DiskEncryption {
    DiskEncryption {
        key: if kind == "tpm" {
            EncryptionKeyKind::Tpm
        } else {
            EncryptionKeyKind::NodeId
        },
    }
}

fn link(mac: Option<String>) -> NetworkLink {
    match mac {
        Some(mac) => NetworkLink::Mac(mac.to_ascii_lowercase()),
        None => NetworkLink::default(),
    }
}

impl ClusterState {
    /// What is known at plan time, for the checks that need only part of the description.
    pub fn to_known_spec(&self) -> KnownSpec {
        let nodes = self.node.as_ref_option().and_then(|entries| {
            entries
                .iter()
                .map(|entry| {
                    let entry = entry.as_ref_option()?;
                    Some(KnownNode {
                        name: known(&entry.name),
                        address: known(&entry.address),
                        role: entry.role.as_ref_option().map(|r| role(r)),
                        install_disk: optional(&entry.install_disk)
                            .map(|d| d.unwrap_or_else(|| DEFAULT_INSTALL_DISK.to_string())),
                        hostname: Some(None),
                        link: optional(&entry.mac_address).map(link),
                    })
                })
                .collect()
        });
        KnownSpec {
            name: known(&self.name),
            endpoint: optional(&self.endpoint),
            vip: optional(&self.vip),
            talos_version: known(&self.talos_version),
            kubernetes_version: known(&self.kubernetes_version),
            nodes,
            gateway: known(&self.gateway),
            nameservers: match &self.nameservers {
                Value::Null => Some(Vec::new()),
                Value::Unknown => None,
                Value::Value(list) => Some(list.iter().map(known).collect()),
            },
            install_image: optional(&self.install_image),
            extensions: strings(&self.extensions),
            disk_encryption: optional(&self.disk_encryption).map(|k| k.as_deref().map(encryption)),
        }
    }

    /// The spec for the config library, or `None` while any input is still unknown.
    pub fn to_spec(&self) -> Option<ClusterSpec> {
        let mut nodes = BTreeMap::new();
        for entry in known(&self.node)? {
            let entry = known(&entry)?;
            let name = known(&entry.name)?;
            let role = role(&known(&entry.role)?);
            nodes.insert(
                name,
                NodeSpec {
                    address: known(&entry.address)?,
                    role,
                    install_disk: optional(&entry.install_disk)?
                        .unwrap_or_else(|| DEFAULT_INSTALL_DISK.to_string()),
                    hostname: None,
                    link: link(optional(&entry.mac_address)?),
                    patches: strings(&entry.patches)?,
                },
            );
        }
        let mut role_patches = BTreeMap::new();
        role_patches.insert(Role::ControlPlane, strings(&self.controlplane_patches)?);
        role_patches.insert(Role::Worker, strings(&self.worker_patches)?);
        let inline_manifests = match &self.inline_manifests {
            Value::Null => Vec::new(),
            Value::Unknown => return None,
            Value::Value(map) => map
                .iter()
                .map(|(name, contents)| {
                    Some(InlineManifest {
                        name: name.clone(),
                        contents: known(contents)?,
                    })
                })
                .collect::<Option<_>>()?,
        };
        let disk_encryption = optional(&self.disk_encryption)?.as_deref().map(encryption);
        let endpoint = optional(&self.endpoint)?;
        Some(ClusterSpec {
            name: known(&self.name)?,
            endpoint,
            vip: optional(&self.vip)?,
            talos_version: known(&self.talos_version)?,
            kubernetes_version: known(&self.kubernetes_version)?,
            nodes,
            gateway: known(&self.gateway)?,
            nameservers: strings(&self.nameservers)?,
            install_image: optional(&self.install_image)?,
            extensions: strings(&self.extensions)?,
            factory_host: self.factory_host.clone(),
            disk_encryption,
            patches: strings(&self.patches)?,
            role_patches,
            inline_manifests,
            extra_manifests: strings(&self.extra_manifests)?,
            extra_cert_sans: strings(&self.cert_sans)?,
        })
    }
}

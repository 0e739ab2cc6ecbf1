//! A minimal but schema-valid cluster for tests and demos: CAs made with rcgen and Talos v1.12
//! configs that the emulator (and a real node) accepts.
//!
//! It is deliberately independent of castle's own config generator, so that the emulator's
//! checks are not written by the code they check.

use std::net::IpAddr;

use base64::Engine as _;
use castle::talos::client::Credentials;
use serde_json::{json, Value};

use crate::pki::{Ca, PkiError};

/// The secrets of one sample cluster.
pub struct SampleCluster {
    /// Cluster name.
    pub name: String,
    /// The VIP, which is also the Kubernetes endpoint's host.
    pub vip: IpAddr,
    /// `cluster.id`.
    pub cluster_id: String,
    /// OS CA (Ed25519).
    pub os_ca: Ca,
    /// Kubernetes CA (ECDSA P-256).
    pub k8s_ca: Ca,
    /// etcd CA (ECDSA P-256).
    pub etcd_ca: Ca,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn token() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    let mut part = |n: usize| -> String {
        (0..n)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
            .collect()
    };
    format!("{}.{}", part(6), part(16))
}

impl SampleCluster {
    /// Fresh CAs and identifiers.
    pub fn generate(name: &str, vip: IpAddr) -> Result<Self, PkiError> {
        let id: [u8; 32] = rand::random();
        Ok(SampleCluster {
            name: name.to_string(),
            vip,
            cluster_id: base64::engine::general_purpose::STANDARD.encode(id),
            os_ca: Ca::generate("talos", "talos", &rcgen::PKCS_ED25519)?,
            k8s_ca: Ca::generate("kubernetes", "kubernetes", &rcgen::PKCS_ECDSA_P256_SHA256)?,
            etcd_ca: Ca::generate("etcd", "etcd", &rcgen::PKCS_ECDSA_P256_SHA256)?,
        })
    }

    /// The multi-document Talos v1.12 config of one node.
    pub fn config(&self, controlplane: bool, hostname: &str) -> String {
        let os_key = if controlplane {
            Some(b64(&self.os_ca.key_pem()))
        } else {
            None
        };
        let mut machine_ca = json!({ "crt": b64(&self.os_ca.cert_pem) });
        if let Some(key) = os_key {
            machine_ca["key"] = Value::String(key);
        }
        let main = json!({
            "version": "v1alpha1",
            "debug": false,
            "machine": {
                "type": if controlplane { "controlplane" } else { "worker" },
                "token": token(),
                "ca": machine_ca,
                "certSANs": [],
                "kubelet": { "image": "ghcr.io/siderolabs/kubelet:v1.32.3" },
                "install": { "disk": "/dev/sda", "image": "ghcr.io/siderolabs/installer:v1.12.0", "wipe": false },
            },
            "cluster": {
                "id": self.cluster_id,
                "secret": base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
                "clusterName": self.name,
                "controlPlane": { "endpoint": format!("https://{}:6443", self.vip) },
                "network": {
                    "dnsDomain": "cluster.local",
                    "podSubnets": ["10.244.0.0/16"],
                    "serviceSubnets": ["10.96.0.0/12"],
                },
                "token": token(),
                "ca": { "crt": b64(&self.k8s_ca.cert_pem), "key": b64(&self.k8s_ca.key_pem()) },
                "etcd": { "ca": { "crt": b64(&self.etcd_ca.cert_pem), "key": b64(&self.etcd_ca.key_pem()) } },
            },
        });
        let hostname_doc =
            json!({ "apiVersion": "v1alpha1", "kind": "HostnameConfig", "hostname": hostname });
        let mut docs = vec![main, hostname_doc];
        if controlplane {
            docs.push(json!({
                "apiVersion": "v1alpha1", "kind": "Layer2VIPConfig",
                "name": self.vip.to_string(), "link": "eth0",
            }));
        }
        docs.iter()
            .map(|d| serde_yaml::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n")
    }

    /// talosconfig credentials with role `os:admin`.
    pub fn credentials(&self) -> Result<Credentials, PkiError> {
        self.credentials_with_role("os:admin")
    }

    /// talosconfig credentials whose certificate carries `role` as Organization.
    pub fn credentials_with_role(&self, role: &str) -> Result<Credentials, PkiError> {
        let (cert_pem, key_pem) =
            self.os_ca
                .issue("talosctl", &[role], &[], &rcgen::PKCS_ED25519)?;
        Ok(Credentials {
            ca_pem: self.os_ca.cert_pem.clone(),
            cert_pem,
            key_pem,
        })
    }
}

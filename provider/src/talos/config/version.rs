//! Talos and Kubernetes versions castle generates for.

use std::fmt;

use super::ConfigError;

/// A Talos release line with its own config shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TalosMinor {
    /// v1.10: network in `machine.network`, encryption in `machine.systemDiskEncryption`.
    V1_10,
    /// v1.11: network in `machine.network`, encryption in `VolumeConfig` documents.
    V1_11,
    /// v1.12: network in `LinkConfig`/`Layer2VIPConfig`/`HostnameConfig`/`ResolverConfig`.
    V1_12,
    /// v1.13: as v1.12; `machine.network` is gone from the schema.
    V1_13,
}

impl TalosMinor {
    /// Every supported release line, oldest first.
    pub const ALL: [TalosMinor; 4] = [
        TalosMinor::V1_10,
        TalosMinor::V1_11,
        TalosMinor::V1_12,
        TalosMinor::V1_13,
    ];

    /// `v1.12` style name.
    pub fn as_str(self) -> &'static str {
        match self {
            TalosMinor::V1_10 => "v1.10",
            TalosMinor::V1_11 => "v1.11",
            TalosMinor::V1_12 => "v1.12",
            TalosMinor::V1_13 => "v1.13",
        }
    }

    /// Whether the network is described by separate documents (v1.12 and later).
    pub fn has_network_documents(self) -> bool {
        self >= TalosMinor::V1_12
    }

    /// Whether disk encryption is described by `VolumeConfig` documents (v1.11 and later).
    pub fn has_volume_encryption(self) -> bool {
        self >= TalosMinor::V1_11
    }

    /// The Kubernetes minors this release runs, oldest and newest (`1.x`).
    // Talos: pkg/machinery/compatibility/talos110..talos113 (MinKubernetesVersion /
    // MaxKubernetesVersion); enforced by v1alpha1_validation.go RuntimeValidate from v1.11.
    pub fn kubernetes_window(self) -> (u32, u32) {
        match self {
            TalosMinor::V1_10 => (28, 33),
            TalosMinor::V1_11 => (29, 34),
            TalosMinor::V1_12 => (30, 35),
            TalosMinor::V1_13 => (31, 36),
        }
    }

    /// The Kubernetes version `talosctl gen config` writes for the release's `.0`.
    // Talos: pkg/machinery/constants/constants.go DefaultKubernetesVersion at v1.10.0..v1.13.0.
    pub fn default_kubernetes_version(self) -> &'static str {
        match self {
            TalosMinor::V1_10 => "v1.33.0",
            TalosMinor::V1_11 => "v1.34.0",
            TalosMinor::V1_12 => "v1.35.0",
            TalosMinor::V1_13 => "v1.36.0",
        }
    }

    /// The CoreDNS image Talos renders in its bootstrap manifests when the config names none
    /// (`cluster.coreDNS.image`).
    // Talos: pkg/machinery/constants/constants.go CoreDNSImage, DefaultCoreDNSVersion at
    // v1.10.0..v1.13.0.
    pub fn default_coredns_image(self) -> &'static str {
        match self {
            TalosMinor::V1_10 => "registry.k8s.io/coredns/coredns:v1.12.1",
            TalosMinor::V1_11 => "registry.k8s.io/coredns/coredns:v1.12.2",
            TalosMinor::V1_12 => "registry.k8s.io/coredns/coredns:v1.13.2",
            TalosMinor::V1_13 => "registry.k8s.io/coredns/coredns:v1.14.2",
        }
    }

    /// The flannel image Talos renders in its bootstrap manifests (the config cannot name
    /// another).
    // Talos: pkg/images/list.go (ghcr.io/siderolabs/flannel:<FlannelVersion>),
    // pkg/machinery/constants/constants.go FlannelVersion at v1.10.0..v1.13.0.
    pub fn flannel_image(self) -> &'static str {
        match self {
            TalosMinor::V1_10 => "ghcr.io/siderolabs/flannel:v0.26.7",
            TalosMinor::V1_11 => "ghcr.io/siderolabs/flannel:v0.27.2",
            TalosMinor::V1_12 => "ghcr.io/siderolabs/flannel:v0.27.4",
            TalosMinor::V1_13 => "ghcr.io/siderolabs/flannel:v0.28.4",
        }
    }
}

/// A Talos version: a release line, optionally with its patch number (`v1.12` or `v1.12.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalosVersion {
    /// The release line, which decides the config shape.
    pub minor: TalosMinor,
    /// The patch release, needed to name an installer image.
    pub patch: Option<u32>,
}

impl TalosVersion {
    /// Parses `v1.12`, `v1.12.3`, `1.12.3` (the `v` is optional).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let err = || ConfigError::UnsupportedVersion {
            attribute: "talos_version",
            value: value.to_string(),
            reason: "expected v1.10, v1.11, v1.12 or v1.13, optionally with a patch (v1.12.3)"
                .into(),
        };
        let v = value.strip_prefix('v').unwrap_or(value);
        let parts: Vec<&str> = v.split('.').collect();
        let minor = match (parts.first(), parts.get(1)) {
            (Some(&"1"), Some(&"10")) => TalosMinor::V1_10,
            (Some(&"1"), Some(&"11")) => TalosMinor::V1_11,
            (Some(&"1"), Some(&"12")) => TalosMinor::V1_12,
            (Some(&"1"), Some(&"13")) => TalosMinor::V1_13,
            _ => return Err(err()),
        };
        let patch = match parts.len() {
            2 => None,
            3 if is_number(parts[2]) => Some(parts[2].parse().map_err(|_| err())?),
            _ => return Err(err()),
        };
        Ok(Self { minor, patch })
    }

    /// The full tag, `v1.12.3`, when the patch is known.
    pub fn tag(&self) -> Option<String> {
        self.patch.map(|p| format!("{}.{p}", self.minor.as_str()))
    }
}

impl fmt::Display for TalosVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.tag() {
            Some(tag) => f.write_str(&tag),
            None => f.write_str(self.minor.as_str()),
        }
    }
}

/// A Kubernetes version, `v1.33.2` (the `v` is optional on input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesVersion(String);

impl KubernetesVersion {
    /// Parses `1.33.2` or `v1.33.2`; the three numbers are required (they name images).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let v = value.strip_prefix('v').unwrap_or(value);
        let parts: Vec<&str> = v.split('.').collect();
        if parts.len() == 3 && parts.iter().all(|p| is_number(p)) && parts[0] == "1" {
            Ok(Self(format!("v{v}")))
        } else {
            Err(ConfigError::UnsupportedVersion {
                attribute: "kubernetes_version",
                value: value.to_string(),
                reason: "expected a full Kubernetes release such as v1.33.2".into(),
            })
        }
    }

    /// The image tag, `v1.33.2`.
    pub fn tag(&self) -> &str {
        &self.0
    }

    /// The minor number: 33 for `v1.33.2`.
    pub fn minor(&self) -> u32 {
        self.0
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or_default()
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

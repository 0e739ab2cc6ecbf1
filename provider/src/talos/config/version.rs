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

/// The oldest release, `(major, minor)`, a node may run for the installer of `target` to upgrade
/// it.
// Talos: pkg/machinery/compatibility/talos110..talos113 `MinimumHostUpgradeVersion` (1.8.0,
// 1.9.0, 1.10.0, 1.11.0), checked by the installer's pre-flight check
// (cmd/installer/pkg/install/preflight.go (v1.12.0), compatibility/talos_version.go
// `UpgradeableFrom`: "host version … is too old to upgrade to Talos …"). The installer runs
// after the Upgrade call has answered and the node has drained, so castle checks first.
fn minimum_upgrade_from(target: TalosMinor) -> (u32, u32) {
    match target {
        TalosMinor::V1_10 => (1, 8),
        TalosMinor::V1_11 => (1, 9),
        TalosMinor::V1_12 => (1, 10),
        TalosMinor::V1_13 => (1, 11),
    }
}

/// Refuses an upgrade to `target` of a node that reports `host` (e.g. `v1.10.4`) when the
/// target's installer does not upgrade from that release; a release that does not read as one
/// passes (the node decides).
pub fn check_upgrade_from(host: &str, target: TalosMinor) -> Result<(), String> {
    let mut parts = host.trim_start_matches('v').split('.');
    let (Some(Ok(major)), Some(Ok(minor))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u32>),
    ) else {
        return Ok(());
    };
    let (min_major, min_minor) = minimum_upgrade_from(target);
    if (major, minor) >= (min_major, min_minor) {
        return Ok(());
    }
    let between: Vec<String> = TalosMinor::ALL
        .iter()
        .filter(|m| **m < target && minimum_upgrade_from(**m) <= (major, minor))
        .map(|m| m.as_str().to_string())
        .collect();
    let first = match between.last() {
        Some(line) => format!(
            "upgrade it to a {line} release first, then to {}",
            target.as_str()
        ),
        None => "rebuild it from a newer template".to_string(),
    };
    Err(format!(
        "it runs Talos {host}, and the installer of {} upgrades only from v{min_major}.{min_minor}.0 on \
         (Talos's MinimumHostUpgradeVersion): {first}.",
        target.as_str()
    ))
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

#[cfg(test)]
mod upgrade_from_tests {
    use super::*;

    #[test]
    fn a_jump_below_the_installers_minimum_is_refused_with_the_release_to_go_through() {
        let err = check_upgrade_from("v1.10.4", TalosMinor::V1_13).unwrap_err();
        assert!(err.contains("it runs Talos v1.10.4"), "{err}");
        assert!(err.contains("only from v1.11.0 on"), "{err}");
        assert!(
            err.contains("upgrade it to a v1.12 release first, then to v1.13"),
            "{err}"
        );
        assert!(check_upgrade_from("v1.11.0", TalosMinor::V1_13).is_ok());
        assert!(check_upgrade_from("v1.10.0", TalosMinor::V1_12).is_ok());
        assert!(check_upgrade_from("", TalosMinor::V1_13).is_ok());
    }
}

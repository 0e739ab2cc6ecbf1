//! The images a node runs: the template's disk image, which does not install; an ISO boot, which
//! installs `machine.install.image`; and the Upgrade call, which pulls an installer image (from
//! the lab's Image Factory, or Sidero's plain installer) and reboots into it.

use std::net::IpAddr;

use tonic::Status;

use super::config::{self, MachineConfig, MachineType};
use super::{After, Fleet, Node};

/// What an installer image holds, once pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Its release tag.
    pub(crate) tag: String,
    /// Its system extensions (official names).
    pub(crate) extensions: Vec<String>,
    /// Its Image Factory schematic, for factory images.
    pub(crate) schematic: Option<String>,
}

impl Node {
    /// Installing (ISO boot) writes the installer image's release and extensions to disk:
    /// that is what the node runs after the reboot.
    pub(crate) fn install(&mut self, config: &MachineConfig, resolved: Option<Resolved>) {
        if let Some(version) = config.install_version.clone() {
            self.pending_version = Some(version);
        }
        if let Some(image) = config.install_image.clone() {
            self.installed_images.push(image);
        }
        if let Some(resolved) = resolved {
            self.pending_extensions = Some((resolved.extensions, resolved.schematic));
        }
    }
}

impl Fleet {
    /// The Upgrade call: the node pulls `image` before it answers (Talos:
    /// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0) `Upgrade`
    /// runs `install.PullAndValidateInstallerImage` in the request), then writes it to disk
    /// and reboots into its release after draining.
    pub(crate) async fn upgrade(
        &self,
        address: IpAddr,
        image: &str,
        force: bool,
    ) -> Result<(), Status> {
        tokio::time::sleep(self.scaled(self.inner.options.pull_delay)).await;
        let tag = image
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        // Talos refuses an upgrade with plain errors (gRPC Unknown).
        let refuse = |why: String| {
            Status::unknown(format!("error validating installer image {image:?}: {why}"))
        };
        if config::version_line(&tag).is_none() {
            return Err(refuse(format!(
                "{tag:?} is not a Talos release the lab has"
            )));
        }
        let resolved = self.resolve(image).map_err(refuse)?;
        let control_plane = {
            let state = self.lock_api()?;
            let host = state.serving(address)?.talos_version.clone();
            // Talos's installer refuses an older host in its pre-flight check, once the
            // upgrade sequence runs it after the answer (cmd/installer/pkg/install/preflight.go
            // (v1.12.0), compatibility/talos_version.go `UpgradeableFrom`); the lab refuses in
            // the request, with Talos's text.
            if let Some(minimum) = minimum_upgrade_from(&tag) {
                if minor(&host) < Some(minimum) {
                    return Err(refuse(format!(
                        "host version {} is too old to upgrade to Talos {}",
                        host.trim_start_matches('v'),
                        tag.trim_start_matches('v')
                    )));
                }
            }
            state.config_of(address)?.machine_type == MachineType::Controlplane
        };
        // A control plane checks that etcd can lose it for the reboot, unless forced (Talos:
        // v1alpha1_server.go (v1.12.0) `Upgrade`, internal/pkg/etcd/etcd.go
        // `ValidateForUpgrade`; see `etcd/upgrade_check.rs`).
        if control_plane && !force {
            self.validate_etcd_for_upgrade(address).await?;
        }
        let mut state = self.lock_api()?;
        let node = state.serving_mut(address)?;
        node.pending_version = Some(tag);
        node.pending_extensions = Some((resolved.extensions, resolved.schematic));
        node.installed_images.push(image.to_string());
        let power_cut = node.faults.power_cycle_in_upgrade.take();
        drop(state);
        self.reboot_after_drain(address, true, After::Running, |_| {});
        if let Some(off) = power_cut {
            // Halfway through the drain: the answer is out, the installer not written yet.
            let fleet = self.clone();
            let drain = self.scaled(self.inner.options.drain_delay);
            tokio::spawn(async move {
                tokio::time::sleep(drain / 2).await;
                let _ = fleet.power_cycle(address, off);
            });
        }
        Ok(())
    }
}

impl Fleet {
    /// What pulling `image` gives, or why the pull fails. The lab's Image Factory serves
    /// `<host>/installer/<schematic id>:<tag>` (and `installer-secureboot`) for the schematics
    /// it knows, as factory.talos.dev does; `ghcr.io/siderolabs/installer:<tag>` is the plain
    /// release. Anything else cannot be pulled on loopback.
    pub(crate) fn resolve(&self, image: &str) -> Result<Resolved, String> {
        let (name, tag) = image
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .ok_or_else(|| format!("failed to parse reference {image:?}: no tag"))?;
        let not_found = || format!("failed to resolve reference {image:?}: {image}: not found");
        if name == "ghcr.io/siderolabs/installer"
            || name == "ghcr.io/siderolabs/installer-secureboot"
        {
            return Ok(Resolved {
                tag: tag.to_string(),
                extensions: Vec::new(),
                schematic: None,
            });
        }
        let factory = &self.inner.options.factory;
        let (host, path) = name.split_once('/').unwrap_or((name, ""));
        if host != factory.host() {
            return Err(format!(
                "failed to resolve reference {image:?}: failed to do request: Head \"https://{host}/v2/{path}/manifests/{tag}\": \
                 dial tcp: lookup {host}: no such host"
            ));
        }
        let id = path
            .strip_prefix("installer/")
            .or_else(|| path.strip_prefix("installer-secureboot/"))
            .ok_or_else(not_found)?;
        let extensions = factory.extensions(id).ok_or_else(not_found)?;
        Ok(Resolved {
            tag: tag.to_string(),
            extensions,
            schematic: Some(id.to_string()),
        })
    }
}

/// The `(major, minor)` of a release tag, `v1.12.3` → `(1, 12)`.
fn minor(tag: &str) -> Option<(u32, u32)> {
    let mut parts = tag.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The oldest release the installer of `tag` upgrades from (Talos:
/// pkg/machinery/compatibility/talos112/talos112.go (v1.12.0) `MinimumHostUpgradeVersion`
/// 1.10.0, talos113 1.11.0, talos111 1.9.0, talos110 1.8.0).
fn minimum_upgrade_from(tag: &str) -> Option<(u32, u32)> {
    match minor(tag)? {
        (1, m) if m >= 10 => Some((1, m - 2)),
        _ => None,
    }
}

//! ApplyConfiguration: in maintenance mode the node installs and reboots; a configured node
//! takes the config in place, with a reboot, or stages it, as the mode says.

use std::net::IpAddr;
use std::sync::Arc;

use castle::talos::proto::machine::apply_configuration_request::Mode as ApplyMode;
use tonic::Status;

use super::config;
use super::{After, Fleet};
use crate::talos::maintenance::Server;

/// What the node did with an applied config, for the answer's `mode` and `mode_details`.
pub(crate) enum Applied {
    DryRun,
    /// In maintenance mode: the config is taken and the node leaves maintenance mode.
    Leaving(Server),
    /// In maintenance mode (v1.13): kept for the next boot.
    StagedInMaintenance,
    Staged,
    Rebooting,
    InPlace,
}

impl Applied {
    /// The mode the answer reports: AUTO resolved to what the node did. Machined's maintenance
    /// server leaves the field unset (REBOOT is its zero value); v1.13 reports NO_REBOOT for
    /// AUTO and REBOOT there.
    pub(crate) fn mode(&self, requested: ApplyMode) -> ApplyMode {
        match self {
            Applied::Rebooting => ApplyMode::Reboot,
            Applied::InPlace | Applied::Leaving(Server::Apid) => match requested {
                ApplyMode::Try => ApplyMode::Try,
                _ => ApplyMode::NoReboot,
            },
            Applied::Leaving(Server::Machined) => ApplyMode::Reboot,
            Applied::Staged | Applied::StagedInMaintenance => ApplyMode::Staged,
            Applied::DryRun => requested,
        }
    }

    /// The answer's `mode_details`, as Talos words them.
    pub(crate) fn details(&self, maintenance: Option<Server>) -> &'static str {
        match self {
            Applied::DryRun if maintenance == Some(Server::Machined) => {
                "Dry run summary:\nNode is running in maintenance mode and does not have a config yet."
            }
            Applied::DryRun => "Dry run: the config is valid and would be applied",
            Applied::Leaving(Server::Machined) => "",
            Applied::Staged | Applied::StagedInMaintenance => {
                "Staged configuration to be applied after the next reboot"
            }
            Applied::Rebooting => "Applied configuration with a reboot",
            Applied::InPlace | Applied::Leaving(Server::Apid) => "Applied configuration without a reboot",
        }
    }
}

impl Fleet {
    /// The ApplyConfiguration call on the node at `address`, in maintenance mode or configured.
    pub(crate) fn apply_config(
        &self,
        address: IpAddr,
        maintenance: bool,
        data: &[u8],
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<Applied, Status> {
        let mut state = self.lock_api()?;
        let node = state.serving_mut(address)?;
        // What serves maintenance mode depends on the release (see `maintenance.rs`).
        let server = maintenance.then(|| Server::of(&node.talos_version));
        if let Some(server) = server {
            server.admit_mode(mode)?;
        }
        if let Some(reason) = node.faults.reject_next_config.take() {
            return Err(Status::invalid_argument(reason));
        }
        // A config that does not decode is a plain error (gRPC Unknown) from machined's
        // maintenance server, InvalidArgument elsewhere; validation is InvalidArgument (Talos:
        // internal/app/maintenance/server.go (v1.12.0) `ApplyConfiguration`).
        let parsed = config::parse(data, &node.talos_version).map_err(|e| match server {
            Some(server) if e.starts_with("failed to parse config") => server.undecodable(e),
            _ => Status::invalid_argument(e),
        })?;
        if dry_run {
            return Ok(Applied::DryRun);
        }
        if let Some(server) = server {
            // v1.13 keeps a staged config for the next boot and stays in maintenance mode
            // (v1alpha1_server.go (v1.13.0) `ApplyConfiguration`: STAGED only persists). Like a
            // configured node's staged config, the lab does not keep it.
            if mode == ApplyMode::Staged {
                return Ok(Applied::StagedInMaintenance);
            }
            // A disk image is installed already (its META partition says so): the node
            // reboots into the release it booted, and `machine.install.image` waits for an
            // upgrade (Talos: internal/app/machined/pkg/runtime/v1alpha1/
            // v1alpha1_sequencer.go (v1.12.0) runs `Install` only when not installed). An ISO
            // boot installs that image.
            if self.inner.options.iso_boot {
                let image = parsed.install_image.clone();
                let resolved = image.as_deref().and_then(|i| self.resolve(i).ok());
                node.install(&parsed, resolved);
            }
            node.config = Some(Arc::new(parsed));
            self.start_reboot(&mut state, address, true, After::Running);
            return Ok(Applied::Leaving(server));
        }
        // AUTO reboots when the change is outside what Talos applies in place (Talos:
        // internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0)
        // `ApplyConfiguration`, `CanApplyImmediate`).
        let immediate = node
            .config
            .as_ref()
            .is_some_and(|running| running.reboot_part == parsed.reboot_part);
        let mode = match mode {
            ApplyMode::Auto if !immediate => ApplyMode::Reboot,
            other => other,
        };
        match mode {
            ApplyMode::Staged => Ok(Applied::Staged),
            ApplyMode::Reboot => {
                node.config = Some(Arc::new(parsed));
                drop(state);
                self.reboot_after_drain(address, false, After::Running, |_| {});
                Ok(Applied::Rebooting)
            }
            _ => {
                node.config = Some(Arc::new(parsed));
                self.reconcile_kube(&mut state);
                Ok(Applied::InPlace)
            }
        }
    }
}

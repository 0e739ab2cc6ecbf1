//! ApplyConfiguration: in maintenance mode the node installs and reboots; a configured node
//! takes the config in place, with a reboot, or stages it, as the mode says.

use std::net::IpAddr;
use std::sync::Arc;

use castle::talos::proto::machine::apply_configuration_request::Mode as ApplyMode;
use tonic::Status;

use super::config;
use super::{After, Fleet};

/// What the node did with an applied config, for the answer's `mode_details`.
pub(crate) enum Applied {
    DryRun,
    Installing,
    Staged,
    Rebooting,
    InPlace,
}

impl Applied {
    /// The mode the answer reports: AUTO resolved to what the node did.
    pub(crate) fn mode(&self, requested: ApplyMode) -> ApplyMode {
        match self {
            Applied::Rebooting => ApplyMode::Reboot,
            Applied::InPlace => ApplyMode::NoReboot,
            Applied::Staged => ApplyMode::Staged,
            Applied::DryRun | Applied::Installing => requested,
        }
    }

    /// The answer's `mode_details`.
    pub(crate) fn details(&self) -> &'static str {
        match self {
            Applied::DryRun => "Dry run: the config is valid and would be applied",
            Applied::Installing => "Applied configuration; the node installs and reboots",
            Applied::Staged => "Staged configuration to be applied after a reboot",
            Applied::Rebooting => "Applied configuration with a reboot",
            Applied::InPlace => "Applied configuration without a reboot",
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
        // Maintenance mode takes AUTO, REBOOT and TRY only.
        if maintenance && matches!(mode, ApplyMode::NoReboot | ApplyMode::Staged) {
            return Err(Status::unimplemented(format!(
                "apply configuration --mode='{}' is not supported in maintenance mode",
                mode.as_str_name().to_lowercase().replace('_', "-")
            )));
        }
        let mut state = self.lock_api()?;
        let node = state.serving_mut(address)?;
        if let Some(reason) = node.faults.reject_next_config.take() {
            return Err(Status::invalid_argument(reason));
        }
        // In maintenance mode a config that does not decode is a plain error (gRPC Unknown);
        // only validation is InvalidArgument (Talos: internal/app/maintenance/server.go
        // (v1.12.0) `ApplyConfiguration`). A configured node answers InvalidArgument to both.
        let parsed = config::parse(data, &node.talos_version).map_err(|e| {
            if maintenance && e.starts_with("failed to parse config") {
                Status::unknown(e)
            } else {
                Status::invalid_argument(e)
            }
        })?;
        if dry_run {
            return Ok(Applied::DryRun);
        }
        if maintenance {
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
            return Ok(Applied::Installing);
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

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
        let mut state = self.lock_api()?;
        let node = state.serving_mut(address)?;
        if let Some(reason) = node.faults.reject_next_config.take() {
            return Err(Status::invalid_argument(reason));
        }
        let parsed = config::parse(data, &node.talos_version).map_err(Status::invalid_argument)?;
        if dry_run {
            return Ok(Applied::DryRun);
        }
        if maintenance {
            node.install(&parsed);
            node.config = Some(Arc::new(parsed));
            self.start_reboot(&mut state, address, true, After::Running);
            return Ok(Applied::Installing);
        }
        match mode {
            ApplyMode::Staged => Ok(Applied::Staged),
            ApplyMode::Reboot => {
                node.config = Some(Arc::new(parsed));
                self.start_reboot(&mut state, address, false, After::Running);
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

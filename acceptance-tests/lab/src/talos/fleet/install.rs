//! Installing Talos from `machine.install.image`, and the Upgrade call.

use std::net::IpAddr;

use tonic::Status;

use super::config::{self, MachineConfig};
use super::{After, Fleet, Node};

impl Node {
    /// Installing writes the installer image's release to disk: that is what the node runs
    /// after the reboot, whatever it booted from.
    pub(crate) fn install(&mut self, config: &MachineConfig) {
        if let Some(version) = config.install_version.clone() {
            self.pending_version = Some(version);
        }
        if let Some(image) = config.install_image.clone() {
            self.installed_images.push(image);
        }
    }
}

impl Fleet {
    /// The Upgrade call: the node writes `image` to disk and reboots into its release.
    pub(crate) fn upgrade(&self, address: IpAddr, image: &str) -> Result<(), Status> {
        let tag = image
            .rsplit_once(':')
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        if config::version_line(&tag).is_none() {
            return Err(Status::invalid_argument(format!(
                "installer image {image:?} has no supported Talos version tag"
            )));
        }
        let mut state = self.lock_api()?;
        let node = state.serving_mut(address)?;
        node.pending_version = Some(tag);
        node.installed_images.push(image.to_string());
        self.start_reboot(&mut state, address, true, After::Running);
        Ok(())
    }
}

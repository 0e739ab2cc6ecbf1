//! The Reset call: the node forgets its config and etcd data and reboots into maintenance.

use std::net::IpAddr;

use tonic::Status;

use super::etcd::leave;
use super::{After, Fleet};

impl Fleet {
    /// Resets the node at `address`. A graceful reset leaves etcd first; a forced one leaves a
    /// dead member behind.
    pub(crate) fn reset(&self, address: IpAddr, graceful: bool) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        state.config_of(address)?;
        if graceful {
            leave(&mut state, address);
        }
        let node = state.serving_mut(address)?;
        node.config = None;
        node.etcd_data = false;
        self.start_reboot(&mut state, address, false, After::Maintenance);
        Ok(())
    }
}

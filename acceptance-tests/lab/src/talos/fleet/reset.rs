//! The Reset call: the node forgets its config and etcd data and reboots into maintenance.
//!
//! Talos: `internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go` (v1.12.0) `Reset`:
//! the request returns at once; a graceful reset of a control plane leaves etcd
//! (`LeaveCluster`, while its own etcd still runs, so that a two-member cluster keeps the
//! quorum the removal needs) before it wipes the disk and reboots.

use std::net::IpAddr;

use tonic::Status;

use super::etcd::wipe_etcd;
use super::{After, Fleet, State};

impl Fleet {
    /// Resets the node at `address`. A graceful reset leaves etcd first; a forced one leaves a
    /// dead member behind.
    pub(crate) fn reset(&self, address: IpAddr, graceful: bool) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        state.config_of(address)?;
        let leaving = if graceful {
            self.leave_etcd_then(&mut state, address, move |fleet, state| {
                fleet.wipe_and_reboot(state, address)
            })
        } else {
            false
        };
        if !leaving {
            self.wipe_and_reboot(&mut state, address);
        }
        Ok(())
    }

    fn wipe_and_reboot(&self, state: &mut State, address: IpAddr) {
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        node.config = None;
        node.etcd.stop();
        wipe_etcd(&node.disk);
        self.start_reboot(state, address, false, After::Maintenance);
    }
}

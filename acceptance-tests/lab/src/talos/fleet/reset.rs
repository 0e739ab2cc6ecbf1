//! The Reset call: the node forgets its config and etcd data and reboots into maintenance.
//!
//! Talos: `internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go` (v1.12.0) `Reset`:
//! the request returns at once; a graceful reset of a control plane leaves etcd
//! (`LeaveCluster`, while its own etcd still runs, so that a two-member cluster keeps the
//! quorum the removal needs), then drains, wipes the disk and reboots.

use std::net::IpAddr;

use tonic::Status;

use super::etcd::wipe_etcd;
use super::{After, Fleet, Node};

impl Fleet {
    /// Resets the node at `address`. A graceful reset leaves etcd first; a forced one leaves a
    /// dead member behind.
    pub(crate) fn reset(&self, address: IpAddr, graceful: bool) -> Result<(), Status> {
        let mut state = self.lock_api()?;
        state.config_of(address)?;
        state.serving(address)?;
        // The wipe comes at the end of the reset sequence: until then the node still serves
        // its old identity. etcd stops right after it, gracefully, as the node goes down
        // (start_reboot).
        let wipe: fn(&mut Node) = |node| {
            node.config = None;
            wipe_etcd(&node.disk);
        };
        let leaving = graceful
            && self.leave_etcd_then(&mut state, address, move |fleet, _| {
                fleet.reboot_after_drain(address, false, After::Maintenance, wipe)
            });
        if !leaving {
            // A forced reset stops the pods first too (`StopAllPods`): the VIP operator
            // resigns while etcd still serves.
            if let Some(node) = state.nodes.get(&address) {
                drop(node.etcd.resign());
            }
            self.reboot_after_drain(address, false, After::Maintenance, wipe);
        }
        Ok(())
    }
}

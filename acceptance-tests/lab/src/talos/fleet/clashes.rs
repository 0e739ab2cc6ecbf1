//! Address clashes: a VM started while another running VM held its static address. On a real
//! network both machines would answer for the address (ARP flapping, connections reset at
//! random); the lab gives the newcomer no node and keeps a record, so tests can assert that a
//! replacement never put two machines on one address.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::Serialize;

use super::Fleet;

/// One clash, as the admin API shows it (`GET /address-clashes`).
#[derive(Debug, Clone, Serialize)]
pub struct AddressClash {
    /// The address both VMs claimed.
    pub address: IpAddr,
    /// The VM that started last and got no node.
    pub vmid: u32,
    /// The running VM that held the address.
    pub holder: u32,
    /// When the lab saw it (seconds since the Unix epoch).
    pub seen_at: u64,
}

impl Fleet {
    /// Records that VM `vmid` started at `address` while VM `holder` ran there.
    pub fn record_address_clash(&self, address: IpAddr, vmid: u32, holder: u32) {
        let seen_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if let Ok(mut clashes) = self.inner.clashes.lock() {
            clashes.push(AddressClash {
                address,
                vmid,
                holder,
                seen_at,
            });
        }
    }

    /// Every clash seen since the lab started, oldest first.
    pub fn address_clashes(&self) -> Vec<AddressClash> {
        self.inner
            .clashes
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
}

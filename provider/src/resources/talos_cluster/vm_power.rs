//! The cluster's power over the VMs behind its nodes, through the provider's Proxmox client:
//! what a node replacement needs to hand an address over (see [`crate::proxmox::handover`]).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::proxmox::{self, handover};
use crate::talos::cluster::VmPower;

/// VMs by `castle_proxmox_vm` id (`node/vmid`).
pub struct ProxmoxPower(pub Arc<proxmox::Client>);

/// `node/vmid`, as `castle_proxmox_vm.x.id` gives it.
pub fn parse_vm_id(id: &str) -> Option<(&str, u32)> {
    let (node, vmid) = id.split_once('/')?;
    let vmid = vmid.parse().ok()?;
    (!node.is_empty()).then_some((node, vmid))
}

fn parsed(id: &str) -> Result<(&str, u32), String> {
    parse_vm_id(id).ok_or_else(|| format!("{id:?} is not node/vmid"))
}

#[async_trait]
impl VmPower for ProxmoxPower {
    async fn exists(&self, vm: &str, deadline: Instant) -> Result<bool, String> {
        let (node, vmid) = parsed(vm)?;
        handover::exists(&self.0, node, vmid, deadline)
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop(&self, vm: &str, deadline: Instant) -> Result<(), String> {
        let (node, vmid) = parsed(vm)?;
        handover::release(&self.0, node, vmid, deadline)
            .await
            .map_err(|e| e.to_string())
    }

    async fn start(&self, vm: &str, deadline: Instant) -> Result<(), String> {
        let (node, vmid) = parsed(vm)?;
        handover::take_over(&self.0, node, vmid, deadline)
            .await
            .map_err(|e| e.to_string())
    }

    async fn awaiting(&self, address: IpAddr, deadline: Instant) -> Result<Option<String>, String> {
        handover::awaiting(&self.0, &address.to_string(), deadline)
            .await
            .map(|vm| vm.map(|vm| vm.to_string()))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_id_is_node_slash_vmid() {
        assert_eq!(parse_vm_id("pve1/105"), Some(("pve1", 105)));
        assert_eq!(parse_vm_id("105"), None);
        assert_eq!(parse_vm_id("/105"), None);
        assert_eq!(parse_vm_id("pve1/x"), None);
    }
}

//! Client of the Proxmox VE API, mirroring its tree: `cluster` (next id, resources),
//! `nodes/vms` (clone, config, resize, power, delete) and `nodes/tasks` (waiting on UPIDs).

mod client;
mod error;

pub use client::{Auth, Client, ClientConfig};
pub use error::Error;

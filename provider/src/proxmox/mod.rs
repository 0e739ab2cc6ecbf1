//! Client of the Proxmox VE API, mirroring its tree: [`cluster`] (next id, resources),
//! [`vms`] (`nodes/{node}/qemu`: clone, config, resize, power, delete) and [`tasks`]
//! (`nodes/{node}/tasks`: waiting on UPIDs), [`clone_tasks`] (this process's clones and
//! the running ones others started). [`vm_config`] turns a wanted VM into API
//! parameters and back (pure), and [`provision`] strings the calls together into the
//! create, update and delete workflows the resource uses.

mod client;
pub mod clone_tasks;
pub mod cluster;
mod error;
pub mod handover;
pub mod provision;
pub mod retry;
pub mod tasks;
pub mod vm_config;
pub mod vms;

pub use client::{Auth, Client, ClientConfig};
pub use error::Error;

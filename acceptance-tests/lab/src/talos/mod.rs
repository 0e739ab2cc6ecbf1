//! Emulated Talos nodes: the machine API on port 50000 of each node address.
//!
//! A [`Fleet`] holds the nodes; each listens on its own loopback address (`127.0.0.211:50000`
//! …) and goes through what a real node does: maintenance mode (self-signed TLS, only readers
//! and `ApplyConfiguration`), install and reboot (nothing listens), then mutual TLS with the
//! config's OS CA. Every control plane runs a real etcd (ports 2379/2380 of its address); those
//! whose etcd has quorum serve an emulated Kubernetes API on their own addresses and the VIP
//! (port 6443).
//!
//! Faults ([`Fault`]) are injected through the Rust API or the admin HTTP API ([`admin`]).

pub mod admin;
pub mod config;
mod fleet;
mod immediate;
mod maintenance;
pub mod sample;
mod server;
mod service;

pub use fleet::{Fault, Faults, Fleet, FleetError, FleetOptions, Member, NodeSummary};
pub use service::{Mode, NodeApi, Peer};

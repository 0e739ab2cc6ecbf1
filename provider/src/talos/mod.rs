//! Everything Talos: the pure PKI and machine-config generators, the gRPC types and the client.

pub mod client;
pub mod cluster;
pub mod config;
pub mod factory;
pub mod pki;
pub mod proto;

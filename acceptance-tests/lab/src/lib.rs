//! castle's lab: test doubles of Talos nodes, the Kubernetes API behind the VIP and Infisical,
//! all on loopback. Each emulator takes an already-bound listener and a shutdown signal.

pub mod factory;
pub mod infisical;
pub mod kubernetes;
pub mod pki;
pub mod stack;
pub mod talos;
pub mod wiring;

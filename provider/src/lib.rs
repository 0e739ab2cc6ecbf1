//! castle: a Terraform provider for Proxmox VE, Talos Linux and Infisical.
//!
//! Layers, top to bottom:
//! - [`resources`] and [`provider`]: the only code that knows Terraform types.
//! - API clients ([`proxmox`], [`talos::client`], [`infisical`]): plain Rust, no Terraform.
//! - [`retry`]: the one deadline-bounded backoff every client's retries and polls use.
//! - [`talos::pki`] and [`talos::config`]: pure generation of the cluster PKI and machine configs
//!   (no network, no async runtime).

pub mod infisical;
pub mod kubernetes;
pub mod logging;
pub mod provider;
pub mod proxmox;
pub mod resources;
pub mod retry;
pub mod talos;
pub mod tls;

/// The version castle reports: Cargo's, which `make release` checks against the release tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `User-Agent` of every client castle runs, so a server's logs name castle and its version.
pub const USER_AGENT: &str = concat!("terraform-provider-castle/", env!("CARGO_PKG_VERSION"));

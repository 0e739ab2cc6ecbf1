//! Errors of the Proxmox client.

/// Everything that can go wrong talking to Proxmox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (bad endpoint URL, bad CA certificate).
    #[error("invalid Proxmox client settings: {0}")]
    Settings(String),
}

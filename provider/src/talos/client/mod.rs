//! Client of the Talos machine API (gRPC over TLS on port 50000).
//!
//! - [`tls`]: the two rustls configs (maintenance: unverified, no client cert; configured: mTLS
//!   against the OS CA).
//! - [`connect`]: dialling one node with our own TLS under tonic.
//! - [`NodeClient`]: the calls castle makes, one node per client.
//! - [`probe`](probe::probe): maintenance / configured / foreign cluster / unreachable.
//! - [`TalosError`]: every failure, with [`TalosError::class`] to decide on retries.
//!
//! No call has a hidden timeout beyond dialling: callers bound waits with `tokio::time::timeout`.

pub mod connect;
pub mod error;
pub mod node;
pub mod probe;
pub mod tls;

pub use connect::{ConnectOptions, TALOS_API_PORT};
pub use error::{ErrorClass, TalosError};
pub use node::{ApplyMode, BootstrapOutcome, Extension, NodeClient};
pub use probe::{probe, NodeState};
pub use tls::Credentials;

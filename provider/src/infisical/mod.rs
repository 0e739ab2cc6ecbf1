//! Client of the Infisical API (Universal Auth, secrets, folders).

mod config;

pub use config::{ClientConfig, DEFAULT_HOST};

/// Errors of the Infisical client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be built (bad host URL, TLS setup).
    #[error("invalid Infisical client settings: {0}")]
    Settings(String),
}

/// An Infisical API client (one connection pool, one token per provider process).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
}

impl Client {
    /// Builds a client; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        if !(config.host.starts_with("https://") || config.host.starts_with("http://")) {
            return Err(Error::Settings(format!("host {:?} is not a URL", config.host)));
        }
        Ok(Self { config })
    }

    /// The server this client talks to.
    pub fn host(&self) -> &str {
        &self.config.host
    }
}

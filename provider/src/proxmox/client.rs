//! The HTTP client: one connection pool per provider process, token or ticket auth.

use std::fmt;

use super::Error;

/// How to authenticate.
#[derive(Clone)]
pub enum Auth {
    /// `USER@REALM!TOKENID=SECRET`, sent as `Authorization: PVEAPIToken=...`.
    Token(String),
    /// Ticket login, renewed on 401.
    Password {
        /// e.g. `root@pam`.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(token) => {
                let id = token.split('=').next().unwrap_or("");
                write!(f, "Token({id}=<redacted>)")
            }
            Auth::Password { username, .. } => write!(f, "Password({username}, <redacted>)"),
        }
    }
}

/// Where the API is and how to reach it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://pve.example:8006` (with or without `/api2/json`).
    pub endpoint: String,
    /// Credentials.
    pub auth: Auth,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Extra CA to trust (PEM).
    pub ca_cert_pem: Option<String>,
}

/// A Proxmox VE API client.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
}

impl Client {
    /// Builds the client; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        Ok(Self { config })
    }

    /// The configured endpoint.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }
}

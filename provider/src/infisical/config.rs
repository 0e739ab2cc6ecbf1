//! Settings of the Infisical client.

use std::fmt;

/// Infisical Cloud, used when no host is set.
pub const DEFAULT_HOST: &str = "https://app.infisical.com";

/// Where and how to log in (Universal Auth).
#[derive(Clone)]
pub struct ClientConfig {
    /// Server URL, without `/api`.
    pub host: String,
    /// Machine identity client id.
    pub client_id: String,
    /// Machine identity client secret: never printed.
    pub client_secret: String,
    /// PEM of the CA certificate(s) to trust besides the system's, for a self-hosted Infisical
    /// behind a private CA. Several certificates (a bundle) are accepted.
    pub ca_cert_pem: Option<String>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("host", &self.host)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .finish()
    }
}

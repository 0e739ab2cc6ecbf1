//! The Talos secrets bundle and certificates (pure: no network, no runtime).
//!
//! [`SecretsBundle`] holds every CA, key and token a cluster needs; it serialises to JSON so the
//! resource layer can keep it in private state, and reloads to sign new leaves later
//! ([`talosconfig`] for the Talos API, [`kubeconfig`] for Kubernetes). Every function that issues a
//! certificate takes the current time: only the `*_now` wrappers read the system clock.

mod bundle;
mod ca;
mod client_cert;
mod keys;
pub mod kubeconfig;
mod secrets_yaml;
pub mod talosconfig;
mod tokens;

pub use bundle::SecretsBundle;
pub use ca::{CaKind, CertificateAuthority};
pub use client_cert::{needs_renewal, IssuedCertificate, RENEW_BEFORE};
pub use kubeconfig::{issue_admin_kubeconfig, AdminKubeconfig};
pub use talosconfig::{issue_talosconfig, Talosconfig};
pub use tokens::{random_base64, random_token};

/// Everything that can go wrong while generating or reloading PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key generation or certificate signing failed inside rcgen/ring.
    #[error("unable to {action}")]
    Sign {
        /// What was being done, e.g. "sign the etcd CA".
        action: String,
        /// The underlying rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// The RSA service-account key could not be generated or encoded.
    #[error("unable to generate the service-account RSA key")]
    Rsa(#[source] rsa::Error),
    /// The RSA key could not be PEM encoded.
    #[error("unable to encode the service-account RSA key")]
    RsaEncode(#[source] rsa::pkcs1::Error),
    /// A stored PEM block (certificate or key) is not what castle wrote.
    #[error("the stored {what} is not valid: {reason}")]
    BadPem {
        /// Which item, e.g. "Kubernetes CA key".
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// A certificate could not be parsed back.
    #[error("unable to parse the {what} certificate")]
    Parse {
        /// Which certificate.
        what: String,
    },
    /// A client credential document could not be serialised.
    #[error("unable to write the {what} YAML")]
    Yaml {
        /// Which document.
        what: String,
        /// The underlying serde_yaml error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A time computation overflowed or could not be formatted.
    #[error("invalid certificate validity time")]
    Time,
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, PkiError>;

pub(crate) fn sign_err(action: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Sign {
        action: action.to_string(),
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests;

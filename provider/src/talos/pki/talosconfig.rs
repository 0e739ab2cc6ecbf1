//! The talosconfig: the client configuration of talosctl and of castle's own Talos client.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::client_cert::{issue_client_certificate, ClientSubject, IssuedCertificate};
use super::{PkiError, Result, SecretsBundle};

/// talosconfig client certificates live one year.
pub const TALOSCONFIG_VALIDITY: Duration = Duration::days(365);
/// The Talos RBAC role castle's client certificate carries.
pub const ADMIN_ROLE: &str = "os:admin";

/// A talosconfig document and the certificate inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Talosconfig {
    /// The talosconfig YAML, as talosctl reads it.
    pub yaml: String,
    /// The `os:admin` client certificate (also in the YAML, base64).
    pub certificate: IssuedCertificate,
}

/// The on-disk talosconfig shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct TalosconfigFile {
    /// Name of the current context.
    pub context: String,
    /// Contexts by name.
    pub contexts: BTreeMap<String, TalosconfigContext>,
}

/// One talosconfig context.
#[derive(Debug, Serialize, Deserialize)]
pub struct TalosconfigContext {
    /// Addresses talosctl dials.
    pub endpoints: Vec<String>,
    /// Nodes commands target by default: none, as `talosctl gen config` writes it (commands
    /// then need `-n`; the field is still read, for a talosconfig edited by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// base64 of the OS CA certificate PEM.
    pub ca: String,
    /// base64 of the client certificate PEM.
    pub crt: String,
    /// base64 of the client key PEM.
    pub key: String,
}

/// Issues an `os:admin` client certificate from the bundle's OS CA (valid one year from `now`)
/// and writes the talosconfig with one context named `context` whose endpoints are
/// `endpoints` (the control planes) and which names no nodes.
pub fn issue_talosconfig(
    bundle: &SecretsBundle,
    context: &str,
    endpoints: &[String],
    now: OffsetDateTime,
) -> Result<Talosconfig> {
    let certificate = issue_client_certificate(
        &bundle.os_ca,
        "OS CA",
        ClientSubject {
            common_name: "admin",
            organization: ADMIN_ROLE,
        },
        TALOSCONFIG_VALIDITY,
        now,
    )?;
    let file = TalosconfigFile {
        context: context.to_string(),
        contexts: BTreeMap::from([(
            context.to_string(),
            TalosconfigContext {
                endpoints: endpoints.to_vec(),
                nodes: Vec::new(),
                ca: bundle.os_ca.crt_base64(),
                crt: STANDARD.encode(certificate.crt.as_bytes()),
                key: STANDARD.encode(certificate.key.as_bytes()),
            },
        )]),
    };
    let yaml = serde_yaml::to_string(&file).map_err(|source| PkiError::Yaml {
        what: "talosconfig".into(),
        source,
    })?;
    Ok(Talosconfig { yaml, certificate })
}

/// [`issue_talosconfig`] with the system clock.
pub fn issue_talosconfig_now(
    bundle: &SecretsBundle,
    context: &str,
    endpoints: &[String],
) -> Result<Talosconfig> {
    issue_talosconfig(bundle, context, endpoints, OffsetDateTime::now_utc())
}

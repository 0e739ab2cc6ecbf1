//! The admin kubeconfig, generated locally from the Kubernetes CA (no call to a node).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::client_cert::{issue_client_certificate, ClientSubject, IssuedCertificate};
use super::{PkiError, Result, SecretsBundle};

/// Admin kubeconfig client certificates live one year.
pub const KUBECONFIG_VALIDITY: Duration = Duration::days(365);
/// The Kubernetes group bound to cluster-admin.
pub const ADMIN_GROUP: &str = "system:masters";

/// An admin kubeconfig and the certificate inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminKubeconfig {
    /// The kubeconfig YAML, as kubectl reads it.
    pub yaml: String,
    /// The API server URL it points at.
    pub server: String,
    /// The `system:masters` client certificate (also in the YAML, base64).
    pub certificate: IssuedCertificate,
}

// The standard kubeconfig layout; field names are kubectl's.
#[derive(Serialize)]
struct KubeconfigFile<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    clusters: Vec<Named<ClusterEntry>>,
    users: Vec<Named<UserEntry>>,
    contexts: Vec<Named<ContextEntry>>,
    #[serde(rename = "current-context")]
    current_context: String,
    preferences: Empty,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Named<T> {
    name: String,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry {
    cluster: ClusterData,
}

#[derive(Serialize, Deserialize)]
struct ClusterData {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct UserEntry {
    user: UserData,
}

#[derive(Serialize)]
struct UserData {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: String,
    #[serde(rename = "client-key-data")]
    client_key_data: String,
}

#[derive(Serialize)]
struct ContextEntry {
    context: ContextData,
}

#[derive(Serialize)]
struct ContextData {
    cluster: String,
    user: String,
}

/// Issues a `system:masters` client certificate (CN `admin`, P-256) from the bundle's Kubernetes
/// CA, valid one year from `now`, and writes a kubeconfig for `server`
/// (e.g. `https://10.0.0.10:6443`). Cluster, user and context are named after `cluster_name`.
pub fn issue_admin_kubeconfig(
    bundle: &SecretsBundle,
    cluster_name: &str,
    server: &str,
    now: OffsetDateTime,
) -> Result<AdminKubeconfig> {
    let certificate = issue_client_certificate(
        &bundle.kubernetes_ca,
        "Kubernetes CA",
        ClientSubject {
            common_name: "admin",
            organization: ADMIN_GROUP,
        },
        KUBECONFIG_VALIDITY,
        now,
    )?;
    let user = format!("admin@{cluster_name}");
    let file = KubeconfigFile {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: cluster_name.to_string(),
            value: ClusterEntry {
                cluster: ClusterData {
                    server: server.to_string(),
                    certificate_authority_data: bundle.kubernetes_ca.crt_base64(),
                },
            },
        }],
        users: vec![Named {
            name: user.clone(),
            value: UserEntry {
                user: UserData {
                    client_certificate_data: STANDARD.encode(certificate.crt.as_bytes()),
                    client_key_data: STANDARD.encode(certificate.key.as_bytes()),
                },
            },
        }],
        contexts: vec![Named {
            name: user.clone(),
            value: ContextEntry {
                context: ContextData {
                    cluster: cluster_name.to_string(),
                    user: user.clone(),
                },
            },
        }],
        current_context: user,
        preferences: Empty {},
    };
    let yaml = serde_yaml::to_string(&file).map_err(|source| PkiError::Yaml {
        what: "kubeconfig".into(),
        source,
    })?;
    Ok(AdminKubeconfig {
        yaml,
        server: server.to_string(),
        certificate,
    })
}

/// [`issue_admin_kubeconfig`] with the system clock.
pub fn issue_admin_kubeconfig_now(
    bundle: &SecretsBundle,
    cluster_name: &str,
    server: &str,
) -> Result<AdminKubeconfig> {
    issue_admin_kubeconfig(bundle, cluster_name, server, OffsetDateTime::now_utc())
}

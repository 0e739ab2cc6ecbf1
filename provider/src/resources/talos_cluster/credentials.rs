//! The cluster's client credentials (talosconfig, kubeconfig) and the access they give.

use std::net::IpAddr;

use time::OffsetDateTime;

use super::state::{bare_ip, ClusterSecrets};
use crate::kubernetes::KubeAccess;
use crate::talos::client::{ConnectOptions, Credentials};
use crate::talos::cluster::{Access, ClusterNode};
use crate::talos::config::{control_plane_endpoint, ClusterSpec, Role};
use crate::talos::pki::talosconfig::TalosconfigFile;
use crate::talos::pki::{issue_admin_kubeconfig, issue_talosconfig, SecretsBundle};

/// Freshly issued credentials.
pub struct Issued {
    /// talosconfig YAML.
    pub talosconfig: String,
    /// kubeconfig YAML.
    pub kubeconfig: String,
    /// The earlier of the two expiries.
    pub expires_at: String,
}

/// The talosconfig's endpoints: the control planes' addresses. It names no nodes, as
/// `talosctl gen config` writes it (Talos: pkg/machinery/config/generate/talosconfig.go
/// (v1.12.0) → pkg/machinery/client/config/config.go `NewConfig` sets endpoints only) and as the
/// Talos Terraform provider does unless told (`talos_client_configuration` `nodes`, optional):
/// a bare `talosctl reboot` or `reset` must not reach every node at once. Commands take `-n`.
fn talos_endpoints(spec: &ClusterSpec) -> Vec<String> {
    spec.control_planes()
        .map(|(_, n)| bare_ip(&n.address).to_string())
        .collect()
}

/// Issues a talosconfig and an admin kubeconfig from the bundle, recording the certificates in
/// `secrets`.
pub fn issue(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
    secrets: &mut ClusterSecrets,
    now: OffsetDateTime,
) -> Result<Issued, String> {
    let talosconfig = issue_talosconfig(bundle, &spec.name, &talos_endpoints(spec), now)
        .map_err(|e| e.to_string())?;
    let server = control_plane_endpoint(spec).map_err(|e| e.to_string())?;
    let kubeconfig =
        issue_admin_kubeconfig(bundle, &spec.name, &server, now).map_err(|e| e.to_string())?;
    let expires_at = std::cmp::min(
        &talosconfig.certificate.not_after,
        &kubeconfig.certificate.not_after,
    )
    .clone();
    secrets.talos_client = Some(talosconfig.certificate.clone());
    secrets.kube_client = Some(kubeconfig.certificate.clone());
    Ok(Issued {
        talosconfig: talosconfig.yaml,
        kubeconfig: kubeconfig.yaml,
        expires_at,
    })
}

/// Talos API credentials issued afresh from the bundle: for a destroy that has the cluster's
/// secrets but no stored client certificate (a tainted cluster being replaced).
pub fn talos_access(spec: &ClusterSpec, bundle: &SecretsBundle) -> Result<Credentials, String> {
    let issued = issue_talosconfig(
        bundle,
        &spec.name,
        &talos_endpoints(spec),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    Ok(Credentials {
        ca_pem: bundle.os_ca.crt.clone(),
        cert_pem: issued.certificate.crt,
        key_pem: issued.certificate.key,
    })
}

/// What the cluster operations need to reach both APIs.
pub fn access(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
    secrets: &ClusterSecrets,
) -> Result<Access, String> {
    let talos_client = secrets
        .talos_client
        .as_ref()
        .ok_or("no talosconfig certificate in state")?;
    let kube_client = secrets
        .kube_client
        .as_ref()
        .ok_or("no kubeconfig certificate in state")?;
    Ok(Access {
        talos: Credentials {
            ca_pem: bundle.os_ca.crt.clone(),
            cert_pem: talos_client.crt.clone(),
            key_pem: talos_client.key.clone(),
        },
        kube: KubeAccess {
            server: control_plane_endpoint(spec).map_err(|e| e.to_string())?,
            ca_pem: bundle.kubernetes_ca.crt.clone(),
            cert_pem: kube_client.crt.clone(),
            key_pem: kube_client.key.clone(),
        },
        connect: ConnectOptions::default(),
    })
}

/// The nodes with their configs, control planes first (in name order).
pub fn cluster_nodes(
    spec: &ClusterSpec,
    configs: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<ClusterNode>, String> {
    let mut nodes: Vec<ClusterNode> = spec
        .nodes
        .iter()
        .map(|(name, node)| {
            let ip: IpAddr = bare_ip(&node.address).parse().map_err(|_| {
                format!(
                    "nodes[{name:?}].address {:?} is not an IP address",
                    node.address
                )
            })?;
            Ok(ClusterNode {
                name: name.clone(),
                ip,
                role: node.role,
                config: configs.get(name).cloned().unwrap_or_default(),
                earlier: Default::default(),
                unfit: Default::default(),
            })
        })
        .collect::<Result<_, String>>()?;
    nodes.sort_by_key(|n| (n.role != Role::ControlPlane, n.name.clone()));
    Ok(nodes)
}

/// The Talos credentials of a talosconfig's current context.
///
/// Destroy uses them when its private state is empty: when Terraform replaces a tainted
/// cluster, the destroy half gets the *create's* planned private state (nothing), not the one
/// stored with the resource, but the talosconfig in state still holds the CA and `os:admin`
/// certificate the nodes trust.
pub fn talos_credentials(talosconfig: &str) -> Result<Credentials, String> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let file: TalosconfigFile = serde_yaml::from_str(talosconfig)
        .map_err(|e| format!("the talosconfig in state is unreadable: {e}"))?;
    let context = file
        .contexts
        .get(&file.context)
        .ok_or("the talosconfig in state has no current context")?;
    let pem = |field: &str, b64: &str| -> Result<String, String> {
        let bytes = STANDARD
            .decode(b64)
            .map_err(|e| format!("talosconfig {field} is not base64: {e}"))?;
        String::from_utf8(bytes).map_err(|_| format!("talosconfig {field} is not PEM"))
    };
    Ok(Credentials {
        ca_pem: pem("ca", &context.ca)?,
        cert_pem: pem("crt", &context.crt)?,
        key_pem: pem("key", &context.key)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::config::{ClusterSpec, NodeSpec};
    use std::collections::BTreeMap;

    #[test]
    fn the_talosconfig_in_state_gives_back_the_credentials_of_the_private_state() {
        let now = OffsetDateTime::now_utc();
        let bundle = SecretsBundle::generate(now).unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "cp-1".to_string(),
            NodeSpec::plain("10.0.0.11/24", Role::ControlPlane),
        );
        let spec = ClusterSpec {
            name: "home".into(),
            vip: Some("10.0.0.10".into()),
            talos_version: "v1.12.0".into(),
            kubernetes_version: "v1.33.2".into(),
            gateway: "10.0.0.1".into(),
            nodes,
            ..Default::default()
        };
        let mut secrets = ClusterSecrets::default();
        let issued = issue(&spec, &bundle, &mut secrets, now).unwrap();
        let from_state = talos_credentials(&issued.talosconfig).unwrap();
        let from_private = access(&spec, &bundle, &secrets).unwrap().talos;
        assert_eq!(from_state.ca_pem, from_private.ca_pem);
        assert_eq!(from_state.cert_pem, from_private.cert_pem);
        assert_eq!(from_state.key_pem, from_private.key_pem);
    }
}

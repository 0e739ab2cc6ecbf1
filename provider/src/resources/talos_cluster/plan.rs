//! Plan-time work: defaults, validation through the config library, and which computed values
//! the plan can already know.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};
use time::OffsetDateTime;

use super::state::{ClusterSecrets, ClusterState};
use crate::talos::config::{self, generate_cluster_configs, ClusterSpec, PathStep, Severity};
use crate::talos::pki::{needs_renewal, SecretsBundle};

/// Fills defaults the configuration may leave out.
pub fn fill_defaults(state: &mut ClusterState) {
    state.id = state.name.clone();
    if state.kubernetes_version.is_null() {
        // The release's own default, as `talosctl gen config` writes it; unknown while the
        // release is.
        state.kubernetes_version = match &state.talos_version {
            Value::Value(talos) => config::TalosVersion::parse(talos)
                .map(|v| Value::Value(v.minor.default_kubernetes_version().to_string()))
                .unwrap_or(Value::Null),
            _ => Value::Unknown,
        };
    }
    if state.endpoint.is_null() {
        state.endpoint = match state.to_spec() {
            Some(spec) => config::control_plane_endpoint(&spec)
                .map(Value::Value)
                .unwrap_or(Value::Unknown),
            None if state.vip.is_value() => state
                .vip
                .as_ref_option()
                .and_then(|vip| config::endpoint_url(vip).ok())
                .map(Value::Value)
                .unwrap_or(Value::Unknown),
            None => Value::Unknown,
        };
    }
}

/// Maps the library's issue paths onto the resource's attribute names.
fn attribute_path(steps: &[PathStep]) -> AttributePath {
    // Set elements cannot be addressed: an issue about one node points at the `node` blocks
    // (its message names the node).
    if matches!(steps.first(), Some(PathStep::Attribute(name)) if name == "nodes") {
        return AttributePath::new("node");
    }
    let mut path: Option<AttributePath> = None;
    for step in steps {
        path = Some(match (path, step) {
            (None, PathStep::Attribute(name)) => AttributePath::new(match name.as_str() {
                "extra_cert_sans" => "cert_sans".to_string(),
                "role_patches" => "controlplane_patches".to_string(),
                other => other.to_string(),
            }),
            (None, other) => AttributePath::new(format!("{other:?}")),
            (Some(p), PathStep::Attribute(name)) => p.attribute(name.clone()),
            (Some(p), PathStep::Key(key)) => p.key(key.clone()),
            (Some(p), PathStep::Index(i)) => p.index(*i as i64),
        });
    }
    path.unwrap_or_else(AttributePath::root)
}

/// A bundle used only to check at plan time that every node's config generates and passes
/// Talos's schema (patches included); made once per provider process.
fn check_bundle() -> Option<&'static SecretsBundle> {
    static BUNDLE: OnceLock<Option<SecretsBundle>> = OnceLock::new();
    BUNDLE
        .get_or_init(|| SecretsBundle::for_checks(OffsetDateTime::now_utc()).ok())
        .as_ref()
}

/// Runs every check whose inputs are known, while other values are still unknown (e.g. node
/// addresses or MACs from VMs created in the same apply). `None` when there were errors.
pub fn check_known(state: &ClusterState, diags: &mut Diagnostics) -> Option<()> {
    report(config::validate_known(&state.to_known_spec()), diags)
}

fn report(issues: Vec<config::Issue>, diags: &mut Diagnostics) -> Option<()> {
    let mut failed = false;
    for issue in issues {
        let path = attribute_path(&issue.path);
        match issue.severity {
            Severity::Error => {
                failed = true;
                diags.error(issue.summary, issue.detail, path);
            }
            Severity::Warning => diags.warning(issue.summary, issue.detail, path),
        }
    }
    (!failed).then_some(())
}

/// Validates the spec and, when `bundle` is given, generates every node's config. Returns the
/// configs, or `None` when there were errors.
pub fn check_spec(
    spec: &ClusterSpec,
    bundle: Option<&SecretsBundle>,
    diags: &mut Diagnostics,
) -> Option<BTreeMap<String, String>> {
    report(config::validate(spec), diags)?;
    let bundle = match bundle {
        Some(bundle) => bundle,
        None => check_bundle()?,
    };
    match generate_cluster_configs(spec, bundle) {
        Ok(configs) => Some(configs),
        Err(e) => {
            diags.root_error("Invalid Talos machine configuration", e.to_string());
            None
        }
    }
}

/// The configs as state holds them.
pub fn configs_value(configs: &BTreeMap<String, String>) -> Value<BTreeMap<String, Value<String>>> {
    Value::Value(
        configs
            .iter()
            .map(|(k, v)| (k.clone(), Value::Value(v.clone())))
            .collect(),
    )
}

/// True when the client certificates are within 30 days of expiry (or unreadable).
pub fn renewal_due(secrets: &ClusterSecrets, now: OffsetDateTime) -> bool {
    [&secrets.talos_client, &secrets.kube_client]
        .iter()
        .any(|cert| {
            cert.as_ref()
                .map(|c| needs_renewal(&c.not_after, now).unwrap_or(true))
                .unwrap_or(true)
        })
}

/// What the talosconfig and kubeconfig are made from: cluster name, Kubernetes endpoint and the
/// control planes' addresses (the talosconfig's endpoints; it names no nodes, so workers
/// coming and going change nothing).
pub fn credential_inputs(spec: &ClusterSpec) -> (String, String, Vec<String>) {
    let endpoint = config::control_plane_endpoint(spec).unwrap_or_default();
    let endpoints = spec
        .control_planes()
        .map(|(_, n)| n.address.clone())
        .collect();
    (spec.name.clone(), endpoint, endpoints)
}

/// The Talos release the nodes should run: the tag of the installer image (Image Factory or
/// `install_image`), else `talos_version` itself.
pub fn target_version(spec: &ClusterSpec) -> Option<String> {
    config::installer_image(spec)
        .ok()
        .and_then(|image| image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .filter(|tag| tag.starts_with('v'))
        .or_else(|| config::TalosVersion::parse(&spec.talos_version).ok()?.tag())
}

/// Refuses, at plan time, an upgrade the target release's installer would refuse: a node whose
/// last reported release (`node_versions`) is older than the installer upgrades from (see
/// [`config::check_upgrade_from`]). Talos refuses that only after the Upgrade call answered and
/// the node drained; the plan names the node before anything changes.
pub fn check_upgrade_from(
    spec: &ClusterSpec,
    reported: &Value<BTreeMap<String, Value<String>>>,
    diags: &mut Diagnostics,
) -> Option<()> {
    let Ok(target) = config::TalosVersion::parse(&spec.talos_version) else {
        return Some(());
    };
    let Value::Value(reported) = reported else {
        return Some(());
    };
    for (name, release) in reported {
        let Value::Value(release) = release else {
            continue;
        };
        if !spec.nodes.contains_key(name) {
            continue;
        }
        if let Err(reason) = config::check_upgrade_from(release, target.minor) {
            diags.error(
                "Unsupported Talos upgrade",
                format!(
                    "Node {name} cannot be upgraded to {}: {reason}",
                    spec.talos_version
                ),
                AttributePath::new("talos_version"),
            );
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::config::{NodeSpec, Role};

    fn with_node(mut spec: ClusterSpec, name: &str, address: &str, role: Role) -> ClusterSpec {
        spec.nodes
            .insert(name.into(), NodeSpec::plain(address, role));
        spec
    }

    #[test]
    fn a_new_worker_keeps_the_credentials_and_a_new_control_plane_renews_them() {
        let spec = ClusterSpec {
            name: "homelab".into(),
            endpoint: Some("https://10.0.0.11:6443".into()),
            talos_version: "v1.12.0".into(),
            kubernetes_version: "v1.35.0".into(),
            gateway: "10.0.0.1".into(),
            ..Default::default()
        };
        let spec = with_node(spec, "cp-1", "10.0.0.11/24", Role::ControlPlane);
        let before = credential_inputs(&spec);
        let worker = with_node(spec.clone(), "w-1", "10.0.0.21/24", Role::Worker);
        assert_eq!(credential_inputs(&worker), before);
        let control_plane = with_node(spec, "cp-2", "10.0.0.12/24", Role::ControlPlane);
        assert_ne!(credential_inputs(&control_plane), before);
    }
}

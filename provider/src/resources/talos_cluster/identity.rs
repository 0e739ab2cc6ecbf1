//! Where a cluster's secrets bundle comes from: the `secrets` input (a `castle_talos_secrets`
//! resource, stored by Terraform before the cluster is created), or, for clusters made before
//! it existed, the bundle the cluster generated itself and keeps in private state.

use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use super::state::{ClusterSecrets, ClusterState};
use crate::talos::pki::SecretsBundle;

/// The bundle given in `secrets`, when it is set and known.
pub fn given(state: &ClusterState) -> Option<Result<SecretsBundle, String>> {
    state.secrets.as_ref_option().map(|text| {
        SecretsBundle::from_talos_yaml(text).map_err(|e| format!("the secrets are not usable: {e}"))
    })
}

/// Plan-time checks of `secrets`: readable when known, and a deprecation warning when absent.
pub fn check(diags: &mut Diagnostics, state: &ClusterState) -> Option<()> {
    match given(state) {
        Some(Err(e)) => {
            diags.error("Invalid secrets", e, AttributePath::new("secrets"));
            None
        }
        Some(Ok(_)) => Some(()),
        None if state.secrets.is_null() => {
            diags.warning(
                "The cluster keeps its secrets to itself",
                "Without `secrets`, the cluster generates its CAs during create: an apply killed at that moment \
                 (closed laptop, CI timeout) loses them, and the nodes that got them must be wiped by hand. Add \
                 `resource \"castle_talos_secrets\" \"this\" {}` and `secrets = castle_talos_secrets.this.secrets`. \
                 A running cluster keeps its identity: give its own secrets (docs/resources/talos_secrets.md, \
                 Migration). Clusters without `secrets` are deprecated.",
                AttributePath::new("secrets"),
            );
            Some(())
        }
        None => Some(()),
    }
}

/// What a plan does about `secrets` on an existing cluster: `Ok(true)` when they name another
/// identity (the cluster must be replaced), `Ok(false)` when nothing changes, an error when a
/// cluster that keeps its own secrets would be handed different ones (its nodes would be wiped
/// to adopt them: refused, with what to do).
pub fn replaced(
    diags: &mut Diagnostics,
    prior: &ClusterState,
    planned: &ClusterState,
    own: Option<&ClusterSecrets>,
) -> Option<bool> {
    let now = match &planned.secrets {
        Value::Null => return Some(false),
        Value::Unknown => None,
        Value::Value(_) => Some(given(planned)?.ok()?),
    };
    let before = match &prior.secrets {
        Value::Value(_) => given(prior).and_then(Result::ok),
        _ => own.and_then(|s| s.bundle().ok()),
    };
    match (prior.secrets.is_value(), now, before) {
        (_, Some(now), Some(before)) if now == before => Some(false),
        (true, _, _) => Some(true),
        (false, _, _) => {
            diags.error(
                "These secrets are not the cluster's",
                "This cluster keeps its own secrets in state and its nodes trust only them: adopting others would \
                 wipe every node. To keep the cluster, give castle_talos_secrets its current secrets (talosctl gen \
                 secrets --from-controlplane-config with a control plane's entry of machine_configs, then \
                 secrets_yaml = file(...)); to rebuild it from scratch, terraform apply -replace.",
                AttributePath::new("secrets"),
            );
            None
        }
    }
}

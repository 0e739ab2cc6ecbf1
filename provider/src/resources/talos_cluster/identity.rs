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

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn bundle() -> SecretsBundle {
        SecretsBundle::for_checks(OffsetDateTime::now_utc()).unwrap()
    }

    fn with_secrets(bundle: Option<&SecretsBundle>) -> ClusterState {
        ClusterState {
            secrets: match bundle {
                Some(b) => Value::Value(b.to_talos_yaml().unwrap()),
                None => Value::Null,
            },
            ..Default::default()
        }
    }

    fn own(bundle: &SecretsBundle) -> ClusterSecrets {
        ClusterSecrets {
            bundle: serde_json::to_string(bundle).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_given_its_own_secrets_back_changes_nothing() {
        let b = bundle();
        let mut diags = Diagnostics::default();
        let replace = replaced(
            &mut diags,
            &with_secrets(None),
            &with_secrets(Some(&b)),
            Some(&own(&b)),
        );
        assert_eq!(replace, Some(false));
        assert!(diags.errors.is_empty());
    }

    #[test]
    fn a_cluster_that_keeps_its_own_secrets_refuses_others_instead_of_wiping_its_nodes() {
        let mut diags = Diagnostics::default();
        let replace = replaced(
            &mut diags,
            &with_secrets(None),
            &with_secrets(Some(&bundle())),
            Some(&own(&bundle())),
        );
        assert_eq!(replace, None);
        assert!(diags.errors[0].summary.contains("not the cluster's"));
    }

    #[test]
    fn other_secrets_replace_a_cluster_that_was_given_secrets() {
        let mut diags = Diagnostics::default();
        let (before, after) = (bundle(), bundle());
        let prior = with_secrets(Some(&before));
        assert_eq!(
            replaced(&mut diags, &prior, &with_secrets(Some(&before)), None),
            Some(false)
        );
        assert_eq!(
            replaced(&mut diags, &prior, &with_secrets(Some(&after)), None),
            Some(true)
        );
        let unknown = ClusterState {
            secrets: Value::Unknown,
            ..Default::default()
        };
        assert_eq!(replaced(&mut diags, &prior, &unknown, None), Some(true));
        assert!(diags.errors.is_empty());
    }
}

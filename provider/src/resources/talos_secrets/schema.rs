//! The schema of `castle_talos_secrets`.

use tf_provider::map;
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};

use crate::resources::attributes::{attr, sensitive};

/// The resource schema.
pub fn schema() -> Schema {
    use AttributeConstraint::*;
    use AttributeType::*;
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::markdown(
                "The identity of a Talos cluster: its four CAs, service-account key, tokens and encryption secret, \
                 generated once and kept in Terraform state. Pass `secrets` to `castle_talos_cluster`: Terraform \
                 stores this resource before the cluster is created, so a run killed while the cluster forms \
                 leaves the nodes' CA where the next apply finds it. Bring an existing cluster's identity with \
                 `secrets_yaml` (the output of `talosctl gen secrets`), or `terraform import` from such a file.",
            ),
            attributes: map! {
                "id" => attr(String, Computed, "The cluster id (`cluster.id` of the secrets)."),
                "secrets_yaml" => sensitive(attr(String, Optional, "An existing cluster's secrets, as `talosctl gen secrets` writes them (e.g. `file(\"secrets.yaml\")`), used instead of new ones when migrating a cluster to castle. Setting it to other secrets than the stored ones replaces the resource, and so the cluster.")),
                "secrets" => sensitive(attr(String, Computed, "The secrets in `talosctl gen secrets` format, for `castle_talos_cluster.secrets` (and for `talosctl gen config --with-secrets`)."))
            },
            ..Default::default()
        },
    }
}

//! The schema of `castle_talos_secrets`.

use tf_provider::map;
use tf_provider::schema::{
    AttributeConstraint, AttributeType, Block, Description, NestedBlock, Schema,
};

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
                 `secrets_yaml` (the output of `talosctl gen secrets`), or `terraform import` from such a file. \
                 With an `escrow` block, a copy also goes to Infisical before the create returns, so an apply \
                 whose Terraform state was lost finds the same secrets there instead of generating others.",
            ),
            attributes: map! {
                "id" => attr(String, Computed, "The cluster id (`cluster.id` of the secrets)."),
                "secrets_yaml" => sensitive(attr(String, Optional, "An existing cluster's secrets, as `talosctl gen secrets` writes them (e.g. `file(\"secrets.yaml\")`), used instead of new ones when migrating a cluster to castle. Setting it to other secrets than the stored ones replaces the resource, and so the cluster.")),
                "secrets" => sensitive(attr(String, Computed, "The secrets in `talosctl gen secrets` format, for `castle_talos_cluster.secrets` (and for `talosctl gen config --with-secrets`)."))
            },
            blocks: map! {
                "escrow" => escrow()
            },
            ..Default::default()
        },
    }
}

/// The optional `escrow { ... }` block.
fn escrow() -> NestedBlock {
    use AttributeConstraint::*;
    use AttributeType::*;
    NestedBlock::Optional(Block {
        description: Description::markdown(
            "A copy of the secrets in Infisical (the provider's `infisical` block), written before the \
             create returns. A create that finds a secrets bundle already there takes it instead of \
             generating new secrets (with a warning): after a lost Terraform state (a remote backend's \
             last 20 s, an emptied `terraform.tfstate`), the next apply finds the same cluster identity \
             and the nodes recognise it. With `secrets_yaml`, a different bundle already escrowed is \
             refused. Changing the location moves the copy; removing the block or destroying the \
             resource deletes it. A secret deleted or changed in Infisical shows as drift and is \
             written again.",
        ),
        attributes: map! {
            "project_id" => attr(String, Required, "Infisical project (workspace) id."),
            "environment" => attr(String, Required, "Environment slug, e.g. `prod`. In an environment whose change policy applies to machine identities, the write waits in a change request (a warning says so) and protects nothing until it is merged."),
            "path" => attr(String, OptionalComputed, "Folder path starting with `/` (default `/`); missing folders are created."),
            "name" => attr(String, Required, "The cluster's name, from which the default `key` is derived."),
            "key" => attr(String, OptionalComputed, "Secret name of the escrowed bundle (default `TALOS_SECRETS_<NAME>`: `name` in upper case, other characters than letters and digits as `_`)."),
            "version" => attr(Number, Computed, "Infisical's version of the escrowed secret (null while Infisical holds none)."),
            "sha256" => attr(String, Computed, "SHA-256 of the bundle Infisical holds, in its canonical form: shows that the escrow differs from the stored secrets without showing them (null while Infisical holds none).")
        },
        ..Default::default()
    })
}

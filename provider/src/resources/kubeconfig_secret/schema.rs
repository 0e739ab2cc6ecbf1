//! Schema of `castle_kubeconfig_secret`.

use tf_provider::map;
use tf_provider::schema::{
    Attribute, AttributeConstraint, AttributeType, Block, Description, Schema,
};

use crate::resources::timeouts;

fn attr(
    attr_type: AttributeType,
    constraint: AttributeConstraint,
    sensitive: bool,
    text: &str,
) -> Attribute {
    Attribute {
        attr_type,
        description: Description::plain(text),
        constraint,
        sensitive,
        ..Default::default()
    }
}

/// The resource's schema (version 1).
pub fn schema() -> Schema {
    use AttributeConstraint::{Computed, Optional, OptionalComputed, Required};
    use AttributeType::{Bool, Number, String};
    Schema {
        version: 1,
        block: Block {
            version: 1,
            description: Description::plain(
                "Stores a cluster's kubeconfig (and optionally its talosconfig) as secrets in Infisical.",
            ),
            attributes: map! {
                "id" => attr(String, Computed, false, "project_id:environment:path:kubeconfig_key."),
                "project_id" => attr(String, Required, false, "Infisical project (workspace) id. Changing it moves the secret (replace)."),
                "environment" => attr(String, Required, false, "Environment slug, e.g. \"prod\". Changing it moves the secret (replace)."),
                "path" => attr(String, OptionalComputed, false, "Folder path starting with \"/\" (default \"/\"). Changing it moves the secret (replace)."),
                "kubeconfig_key" => attr(String, OptionalComputed, false, "Secret name of the kubeconfig (default \"KUBECONFIG\")."),
                "kubeconfig" => attr(String, Required, true, "The kubeconfig. Infisical trims surrounding whitespace (keeping one trailing newline); values equal after trimming are the same."),
                "talosconfig_key" => attr(String, Optional, false, "Secret name of the talosconfig; set together with talosconfig."),
                "talosconfig" => attr(String, Optional, true, "The talosconfig; set together with talosconfig_key."),
                "comment" => attr(String, Optional, false, "Comment stored with the secrets."),
                "create_folders" => attr(Bool, OptionalComputed, false, "Create the folders of path when missing (default true)."),
                "kubeconfig_version" => attr(Number, Computed, false, "Infisical's version of the kubeconfig secret."),
                "talosconfig_version" => attr(Number, Computed, false, "Infisical's version of the talosconfig secret.")
            },
            blocks: map! {
                "timeouts" => timeouts::schema("5m", "5m", "5m")
            },
            ..Default::default()
        },
    }
}

//! Schema of `castle_kubeconfig_secret`.

use tf_provider::map;
use tf_provider::schema::{AttributeConstraint, AttributeType, Block, Description, Schema};

use crate::resources::attributes::{attr, sensitive};
use crate::resources::timeouts;

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
                "id" => attr(String, Computed, "`project_id:environment:path:kubeconfig_key`."),
                "project_id" => attr(String, Required, "Infisical project (workspace) id. Changing it moves the secret (replace)."),
                "environment" => attr(String, Required, "Environment slug, e.g. `prod`. Changing it moves the secret (replace)."),
                "path" => attr(String, OptionalComputed, "Folder path starting with `/` (default `/`); folder names hold only letters, digits, `-` and `_`. Changing it moves the secret (replace)."),
                "kubeconfig_key" => attr(String, OptionalComputed, "Secret name of the kubeconfig (default `KUBECONFIG`): no blanks, whitespace, `:` or `/`. Changing it moves the secret (replace)."),
                "kubeconfig" => sensitive(attr(String, Required, "The kubeconfig. Infisical trims surrounding whitespace (keeping one trailing newline); values equal after trimming are the same.")),
                "talosconfig_key" => attr(String, Optional, "Secret name of the talosconfig; set together with `talosconfig`. Changing it moves the talosconfig secret in place."),
                "talosconfig" => sensitive(attr(String, Optional, "The talosconfig; set together with `talosconfig_key`.")),
                "comment" => attr(String, Optional, "Comment stored with the secrets."),
                "create_folders" => attr(Bool, OptionalComputed, "Create the folders of `path` when missing (default `true`)."),
                "kubeconfig_version" => attr(Number, Computed, "Infisical's version of the kubeconfig secret."),
                "talosconfig_version" => attr(Number, Computed, "Infisical's version of the talosconfig secret (null without a talosconfig).")
            },
            blocks: map! {
                "timeouts" => timeouts::schema("5m", "5m", "5m")
            },
            ..Default::default()
        },
    }
}

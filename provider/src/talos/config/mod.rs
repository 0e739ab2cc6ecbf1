//! Talos machine configuration generation (pure: no network, no runtime).
//!
//! A [`ClusterSpec`] describes the cluster the way a Terraform user writes it; [`validate`] lists
//! what is wrong with it as [`Issue`]s (attribute path, severity, summary, detail), and
//! [`generate_node_config`] turns it plus a [`SecretsBundle`](crate::talos::pki::SecretsBundle)
//! into the multi-document YAML one node receives, in the shape of its Talos release line
//! ([`TalosVersion`]). Output is deterministic: same spec and bundle, same bytes.
//!
//! User patches are applied cluster, then role, then node; see [`patch`] for the merge rule.

pub mod bootstrap_manifests;
mod documents;
mod endpoint;
mod generate;
pub mod kubernetes;
mod network;
pub mod patch;
pub mod schema;
mod schematic;
mod spec;
mod validate;
mod version;

pub use endpoint::endpoint_url;
pub use generate::{
    control_plane_endpoint, earlier_contracts, generate_cluster_configs, generate_node_config,
    generate_node_config_for, installer_image,
};
pub use kubernetes::{
    check_upgrade_path, component_image, component_tag, with_component_tags, Component,
};
pub use schematic::{schematic_id, schematic_yaml};
pub use spec::{
    ClusterSpec, DiskEncryption, EncryptionKeyKind, InlineManifest, NetworkLink, NodeSpec, Role,
};
pub use validate::{
    check_release_runs_kubernetes, validate, validate_known, Issue, KnownNode, KnownSpec, PathStep,
    Severity,
};
pub use version::{check_upgrade_from, KubernetesVersion, TalosMinor, TalosVersion};

/// Everything that can go wrong while generating a machine configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The spec has error-level issues (see [`validate`]); nothing was generated.
    #[error("the cluster description is invalid: {}", summarize(.0))]
    Invalid(Vec<Issue>),
    /// A version string is not one castle generates for.
    #[error("unsupported {attribute} {value:?}: {reason}")]
    UnsupportedVersion {
        /// The attribute holding it, e.g. `talos_version`.
        attribute: &'static str,
        /// What the user wrote.
        value: String,
        /// What is accepted.
        reason: String,
    },
    /// The named node is not in the spec.
    #[error("no node named {0:?} in the cluster description")]
    UnknownNode(String),
    /// A user patch is not YAML, or not a mapping.
    #[error("{patch} is not a valid patch: {reason}")]
    PatchParse {
        /// Where the patch is, e.g. `nodes["cp-1"].patches[0]`.
        patch: String,
        /// Why it was refused.
        reason: String,
    },
    /// After a user patch, a document no longer matches the Talos schema.
    #[error("{patch} makes the {document} document invalid for Talos {version}: {reason}")]
    PatchSchema {
        /// Where the patch is.
        patch: String,
        /// Which document broke (`v1alpha1`, `LinkConfig`, ...).
        document: String,
        /// The release line.
        version: String,
        /// The schema violations.
        reason: String,
    },
    /// castle generated a document its own schema check refuses: a bug in castle.
    #[error("internal error: the generated {document} document is invalid for Talos {version}: {reason}")]
    Generated {
        /// Which document.
        document: String,
        /// The release line.
        version: String,
        /// The schema violations.
        reason: String,
    },
    /// YAML could not be written.
    #[error("unable to write the machine configuration YAML")]
    Yaml(#[source] serde_yaml::Error),
}

fn summarize(issues: &[Issue]) -> String {
    issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| format!("{}: {}", validate::display_path(&i.path), i.summary))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod gen_parity;
#[cfg(test)]
mod tests;

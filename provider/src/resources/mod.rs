//! Terraform resources: schema, plan and the mapping of state to client calls.
//!
//! Each resource lives in its own folder (`schema.rs`, `state.rs`, the trait impl in `mod.rs`),
//! with helpers shared by all of them beside this file.

use std::collections::HashMap;
use std::sync::Arc;

use tf_provider::DynamicResource;

use crate::provider::ProviderData;

pub mod attributes;
pub mod diag;
pub mod emptied_state;
pub mod infisical_access;
pub mod kubeconfig_secret;
pub mod proxmox_vm;
pub mod talos_cluster;
pub mod talos_secrets;
pub mod terraform_command;
pub mod timeouts;

/// Every resource of the provider, by name without the `castle_` prefix.
pub fn all(data: &Arc<ProviderData>) -> HashMap<String, Box<dyn DynamicResource>> {
    let mut resources: HashMap<String, Box<dyn DynamicResource>> = HashMap::new();
    resources.insert(
        "talos_cluster".into(),
        Box::new(talos_cluster::TalosClusterResource::new(data.clone())),
    );
    resources.insert(
        "talos_secrets".into(),
        Box::new(talos_secrets::TalosSecretsResource::new(data.clone())),
    );
    resources.insert(
        "proxmox_vm".into(),
        Box::new(proxmox_vm::ProxmoxVmResource::new(data.clone())),
    );
    resources.insert(
        "kubeconfig_secret".into(),
        Box::new(kubeconfig_secret::KubeconfigSecretResource::new(
            data.clone(),
        )),
    );
    resources
}

//! Fields a Talos release still decodes but leaves out of its published JSON schema
//! (`docgen:nodoc`: deprecated, or hidden by the config contract). A real node takes them, so a
//! patch copied from an older Talos guide (`machine.network.interfaces` on v1.12) must pass
//! castle's schema check and the lab's node alike; nothing else the schema lacks is accepted.

use serde_json::Value;

use super::version::TalosMinor;

/// The fields each release line decodes without documenting, as `($defs name, field)`.
// Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_types.go at v1.10.0, v1.11.0, v1.12.0 and
// v1.13.0 (the same fields at v1.10.9, v1.11.6, v1.12.11, v1.13.9), each field marked
// `docgen:nodoc`; e.g. v1.12.0 APIServerConfig `DisablePodSecurityPolicyConfig *bool
// yaml:"disablePodSecurityPolicy,omitempty"` (line 1093), read by nothing since v1.12 and
// written by `gen config` up to contract 1.11 (contract.go `HideDisablePSP`).
pub fn undocumented_fields(minor: TalosMinor) -> Vec<(&'static str, &'static str)> {
    const EVERY_LINE: &[(&str, &str)] = &[
        ("v1alpha1.Config", "persist"),
        ("v1alpha1.MachineConfig", "disks"),
        ("v1alpha1.ClusterConfig", "allowSchedulingOnMasters"),
        ("v1alpha1.InstallConfig", "extensions"),
        ("v1alpha1.InstallConfig", "bootloader"),
        ("v1alpha1.EtcdConfig", "subnet"),
        ("v1alpha1.Device", "cidr"),
        ("v1alpha1.Vlan", "cidr"),
    ];
    const V1_11: &[(&str, &str)] = &[("v1alpha1.MachineConfig", "systemDiskEncryption")];
    const V1_12: &[(&str, &str)] = &[
        ("v1alpha1.MachineConfig", "systemDiskEncryption"),
        ("v1alpha1.MachineConfig", "time"),
        ("v1alpha1.MachineConfig", "registries"),
        ("v1alpha1.NetworkConfig", "hostname"),
        ("v1alpha1.NetworkConfig", "interfaces"),
        ("v1alpha1.NetworkConfig", "nameservers"),
        ("v1alpha1.NetworkConfig", "searchDomains"),
        ("v1alpha1.NetworkConfig", "extraHostEntries"),
        ("v1alpha1.NetworkConfig", "disableSearchDomain"),
        ("v1alpha1.InstallConfig", "extraKernelArgs"),
        ("v1alpha1.APIServerConfig", "disablePodSecurityPolicy"),
        ("v1alpha1.FeaturesConfig", "rbac"),
        ("v1alpha1.FeaturesConfig", "stableHostname"),
        ("v1alpha1.FeaturesConfig", "apidCheckExtKeyUsage"),
    ];
    // v1.13 hides `machine.network` as a whole (and `env`); its old content is still decoded.
    const V1_13: &[(&str, &str)] = &[
        ("v1alpha1.MachineConfig", "systemDiskEncryption"),
        ("v1alpha1.MachineConfig", "time"),
        ("v1alpha1.MachineConfig", "registries"),
        ("v1alpha1.MachineConfig", "network"),
        ("v1alpha1.MachineConfig", "env"),
        ("v1alpha1.InstallConfig", "extraKernelArgs"),
        ("v1alpha1.APIServerConfig", "disablePodSecurityPolicy"),
        ("v1alpha1.FeaturesConfig", "rbac"),
        ("v1alpha1.FeaturesConfig", "stableHostname"),
        ("v1alpha1.FeaturesConfig", "apidCheckExtKeyUsage"),
    ];
    match minor {
        TalosMinor::V1_10 => &[][..],
        TalosMinor::V1_11 => V1_11,
        TalosMinor::V1_12 => V1_12,
        TalosMinor::V1_13 => V1_13,
    }
    .iter()
    .chain(EVERY_LINE)
    .copied()
    .collect()
}

/// Adds the fields of [`undocumented_fields`] to a schema's `$defs` as fields of any content
/// (those of types the schema does not describe at all, such as `Device` on v1.12, come in with
/// their parent).
pub fn add_to_schema(schema: &mut Value, minor: TalosMinor) {
    for (def, field) in undocumented_fields(minor) {
        if let Some(properties) = schema
            .pointer_mut(&format!("/$defs/{def}/properties"))
            .and_then(Value::as_object_mut)
        {
            properties
                .entry(field.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
        }
    }
}

/// What Talos refuses among these fields in a `v1alpha1` document, with Talos's messages.
// Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (v1.12.0) `Validate`
// (line 341): `.persist should be enabled` when `persist` is false.
pub fn refusals(main: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if main.get("persist") == Some(&Value::Bool(false)) {
        problems.push(".persist should be enabled".to_string());
    }
    problems
}

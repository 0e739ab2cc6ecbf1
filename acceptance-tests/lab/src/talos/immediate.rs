//! Which config changes a running node takes without a reboot. Talos compares the new v1alpha1
//! document with the running one after copying over the fields it can change in place; any
//! other difference turns an AUTO apply into a reboot (Talos:
//! internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_runtime.go (v1.12.0)
//! `CanApplyImmediate`; the answer says "Applied configuration with a reboot").

use serde_json::Value;

/// `machine` fields a running node changes in place.
const MACHINE_IMMEDIATE: [&str; 18] = [
    "ca",
    "acceptedCAs",
    "time",
    "certSANs",
    "install",
    "network",
    "sysfs",
    "sysctls",
    "logging",
    "controlPlane",
    "kubelet",
    "kernel",
    "registries",
    "pods",
    "seccompProfiles",
    "nodeAnnotations",
    "nodeLabels",
    "nodeTaints",
];

/// `machine.features` fields a running node changes in place.
const FEATURES_IMMEDIATE: [&str; 5] = [
    "kubernetesTalosAPIAccess",
    "kubePrism",
    "hostDNS",
    "imageCache",
    "nodeAddressSortAlgorithm",
];

/// The part of a v1alpha1 document whose change needs a reboot: the document without `debug`,
/// `cluster` and the immediate `machine` fields.
pub fn reboot_part(v1alpha1: &Value) -> Value {
    let mut doc = v1alpha1.clone();
    if let Some(root) = doc.as_object_mut() {
        root.remove("debug");
        root.remove("cluster");
    }
    if let Some(machine) = doc.get_mut("machine").and_then(Value::as_object_mut) {
        for field in MACHINE_IMMEDIATE {
            machine.remove(field);
        }
        if let Some(features) = machine.get_mut("features").and_then(Value::as_object_mut) {
            for field in FEATURES_IMMEDIATE {
                features.remove(field);
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_cluster_changes_are_immediate_but_files_and_type_are_not() {
        let base = serde_json::json!({
            "version": "v1alpha1",
            "machine": {"type": "controlplane", "network": {"hostname": "a"}, "files": []},
            "cluster": {"clusterName": "c"}
        });
        let mut immediate = base.clone();
        immediate["machine"]["network"]["hostname"] = "b".into();
        immediate["cluster"]["clusterName"] = "d".into();
        assert_eq!(reboot_part(&base), reboot_part(&immediate));
        let mut files = base.clone();
        files["machine"]["files"] = serde_json::json!([{"path": "/var/x", "content": "y"}]);
        assert_ne!(reboot_part(&base), reboot_part(&files));
        let mut kind = base.clone();
        kind["machine"]["type"] = "worker".into();
        assert_ne!(reboot_part(&base), reboot_part(&kind));
    }
}

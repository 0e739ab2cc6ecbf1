//! Discovery documents: `/api`, `/apis` and each group version's resource list, as legacy
//! (non-aggregated) discovery answers them (Kubernetes:
//! staging/src/k8s.io/apiserver/pkg/endpoints/discovery/). kubectl falls back to these when the
//! aggregated form is not offered.

use serde_json::{json, Value};

/// One served resource.
pub(crate) struct Resource {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) name: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
    pub(crate) verbs: &'static [&'static str],
    pub(crate) short_names: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];
const READ_DELETE: &[&str] = &["delete", "get", "list", "watch"];
const READ_PATCH: &[&str] = &["get", "list", "patch", "watch"];
/// Objects kept as written: read and server-side applied.
const READ_APPLY: &[&str] = &["create", "get", "list", "patch", "watch"];
const READ_PATCH_DELETE: &[&str] = &["delete", "get", "list", "patch", "update", "watch"];

/// Every resource the emulated API serves.
pub(crate) const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        name: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: READ,
        short_names: &["ns"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        verbs: READ_PATCH_DELETE,
        short_names: &["no"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: READ_DELETE,
        short_names: &["po"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        verbs: READ_PATCH,
        short_names: &["svc"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        verbs: READ,
        short_names: &["ep"],
    },
    Resource {
        group: "apps",
        version: "v1",
        name: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        verbs: READ_PATCH,
        short_names: &["ds"],
    },
    Resource {
        group: "apps",
        version: "v1",
        name: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        verbs: READ_PATCH,
        short_names: &["deploy"],
    },
    Resource {
        group: "policy",
        version: "v1",
        name: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: READ_DELETE,
        short_names: &["pdb"],
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        name: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        verbs: READ,
        short_names: &[],
    },
    Resource {
        group: "storage.k8s.io",
        version: "v1",
        name: "volumeattachments",
        singular: "volumeattachment",
        kind: "VolumeAttachment",
        namespaced: false,
        verbs: READ,
        short_names: &[],
    },
    Resource {
        group: "",
        version: "v1",
        name: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        verbs: READ_APPLY,
        short_names: &["cm"],
    },
    Resource {
        group: "",
        version: "v1",
        name: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        verbs: READ_APPLY,
        short_names: &["sa"],
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        verbs: READ_APPLY,
        short_names: &[],
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        name: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        verbs: READ_APPLY,
        short_names: &[],
    },
];

pub(crate) fn find(group: &str, version: &str, name: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
}

pub(crate) fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "0.0.0.0:6443" }],
    })
}

fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups
}

pub(crate) fn api_groups() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| {
            let gv = json!({ "groupVersion": format!("{g}/v1"), "version": "v1" });
            json!({ "name": g, "versions": [gv], "preferredVersion": gv })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(crate) fn api_group(group: &str) -> Option<Value> {
    groups().contains(&group).then(|| {
        let gv = json!({ "groupVersion": format!("{group}/v1"), "version": "v1" });
        json!({ "kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [gv], "preferredVersion": gv })
    })
}

/// The resource list of one group version. The core list carries `pods/eviction` with group
/// `policy` and version `v1`: kubectl drain looks for exactly that to choose policy/v1
/// evictions (Kubernetes: staging/src/k8s.io/kubectl/pkg/drain/drain.go `CheckEvictionSupport`).
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.name, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": r.verbs, "shortNames": r.short_names,
            })
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    if group.is_empty() {
        resources.push(json!({
            "name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy",
            "version": "v1", "kind": "Eviction", "verbs": ["create"],
        }));
        resources.push(json!({
            "name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node",
            "verbs": ["get", "patch", "update"],
        }));
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

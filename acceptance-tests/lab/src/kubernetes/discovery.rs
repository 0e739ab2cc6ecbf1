//! Discovery documents: `/api`, `/apis` and each group version's resource list, as legacy
//! (non-aggregated) discovery answers them (Kubernetes:
//! staging/src/k8s.io/apiserver/pkg/endpoints/discovery/). kubectl falls back to these when the
//! aggregated form is not offered.

use serde_json::{json, Value};

/// One served resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) name: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) verbs: &'static [&'static str],
    pub(crate) short_names: Vec<String>,
}

const READ: &[&str] = &["get", "list", "watch"];
const READ_DELETE: &[&str] = &["delete", "get", "list", "watch"];
const READ_PATCH: &[&str] = &["get", "list", "patch", "watch"];
const READ_PATCH_DELETE: &[&str] = &["delete", "get", "list", "patch", "update", "watch"];

/// group, version, plural, singular, kind, namespaced, verbs, short names.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

/// The resources whose objects the lab's controllers make (see [`super::render`]).
const MODELLED: &[Row] = &[
    (
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        READ,
        &["ns"],
    ),
    (
        "",
        "v1",
        "nodes",
        "node",
        "Node",
        false,
        READ_PATCH_DELETE,
        &["no"],
    ),
    ("", "v1", "pods", "pod", "Pod", true, READ_DELETE, &["po"]),
    (
        "",
        "v1",
        "services",
        "service",
        "Service",
        true,
        READ,
        &["svc"],
    ),
    (
        "",
        "v1",
        "endpoints",
        "endpoints",
        "Endpoints",
        true,
        READ,
        &["ep"],
    ),
    (
        "apps",
        "v1",
        "daemonsets",
        "daemonset",
        "DaemonSet",
        true,
        READ_PATCH,
        &["ds"],
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        true,
        READ_PATCH,
        &["deploy"],
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        READ_DELETE,
        &["pdb"],
    ),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
        READ,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "volumeattachment",
        "VolumeAttachment",
        false,
        READ,
        &[],
    ),
];

/// Built-in resources the lab keeps as plain objects (what the cluster's manifests declare,
/// see [`super::objects`]): a real API server serves them whether any object exists or not.
/// Names, scopes and short names as kube-apiserver's discovery lists them
/// (Kubernetes: pkg/registry/*/rest/storage_*.go and each type's `ShortNames`).
const STORED: &[Row] = &[
    (
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        READ_DELETE,
        &["cm"],
    ),
    (
        "",
        "v1",
        "secrets",
        "secret",
        "Secret",
        true,
        READ_DELETE,
        &[],
    ),
    (
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        READ_DELETE,
        &["sa"],
    ),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        "PersistentVolumeClaim",
        true,
        READ_DELETE,
        &["pvc"],
    ),
    (
        "apps",
        "v1",
        "statefulsets",
        "statefulset",
        "StatefulSet",
        true,
        READ_DELETE,
        &["sts"],
    ),
    ("batch", "v1", "jobs", "job", "Job", true, READ_DELETE, &[]),
    (
        "batch",
        "v1",
        "cronjobs",
        "cronjob",
        "CronJob",
        true,
        READ_DELETE,
        &["cj"],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "role",
        "Role",
        true,
        READ_DELETE,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        true,
        READ_DELETE,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        false,
        READ_DELETE,
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        READ_DELETE,
        &[],
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        READ_DELETE,
        &["crd", "crds"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networkpolicy",
        "NetworkPolicy",
        true,
        READ_DELETE,
        &["netpol"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        READ_DELETE,
        &["ing"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
        false,
        READ_DELETE,
        &[],
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "storageclass",
        "StorageClass",
        false,
        READ_DELETE,
        &["sc"],
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "priorityclass",
        "PriorityClass",
        false,
        READ_DELETE,
        &["pc"],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "MutatingWebhookConfiguration",
        false,
        READ_DELETE,
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        "ValidatingWebhookConfiguration",
        false,
        READ_DELETE,
        &[],
    ),
];

fn resource(row: &Row) -> Resource {
    let (group, version, name, singular, kind, namespaced, verbs, short_names) = *row;
    Resource {
        group: group.into(),
        version: version.into(),
        name: name.into(),
        singular: singular.into(),
        kind: kind.into(),
        namespaced,
        verbs,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
    }
}

/// Every resource the API serves: the modelled ones, the built-in stored ones, and those of
/// the CustomResourceDefinitions in the cluster, once per served version (Kubernetes:
/// staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_discovery_controller.go).
pub(crate) fn served(crds: &[Value]) -> Vec<Resource> {
    let mut all: Vec<Resource> = MODELLED.iter().chain(STORED).map(resource).collect();
    for crd in crds {
        let spec = &crd["spec"];
        let names = &spec["names"];
        let (Some(group), Some(plural), Some(kind)) = (
            spec["group"].as_str(),
            names["plural"].as_str(),
            names["kind"].as_str(),
        ) else {
            continue;
        };
        for version in spec["versions"].as_array().into_iter().flatten() {
            let Some(v) = version["name"].as_str() else {
                continue;
            };
            if version["served"] == false {
                continue;
            }
            all.push(Resource {
                group: group.into(),
                version: v.into(),
                name: plural.into(),
                singular: names["singular"]
                    .as_str()
                    .map_or_else(|| kind.to_lowercase(), str::to_string),
                kind: kind.into(),
                namespaced: spec["scope"] != "Cluster",
                verbs: READ_DELETE,
                short_names: names["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect(),
            });
        }
    }
    all
}

/// Whether the lab's controllers make the objects of `resource` (else they are stored ones).
pub(crate) fn modelled(resource: &Resource) -> bool {
    MODELLED
        .iter()
        .any(|r| r.0 == resource.group && r.2 == resource.name)
}

pub(crate) fn find(
    served: &[Resource],
    group: &str,
    version: &str,
    name: &str,
) -> Option<Resource> {
    served
        .iter()
        .find(|r| r.group == group && r.version == version && r.name == name)
        .cloned()
}

/// The served resource of a manifest's `apiVersion` and `kind` (the REST mapping Talos asks
/// discovery for).
pub(crate) fn by_kind(served: &[Resource], api_version: &str, kind: &str) -> Option<Resource> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    served
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
        .cloned()
}

pub(crate) fn api_versions() -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "0.0.0.0:6443" }],
    })
}

/// Each named group with its versions, in the order first served.
fn groups(served: &[Resource]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for r in served.iter().filter(|r| !r.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => {
                versions.push(r.version.clone())
            }
            Some(_) => {}
            None => groups.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    groups
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    json!({ "name": group, "versions": versions, "preferredVersion": versions[0] })
}

pub(crate) fn api_groups(served: &[Resource]) -> Value {
    let groups: Vec<Value> = groups(served)
        .iter()
        .map(|(g, versions)| group_json(g, versions))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(crate) fn api_group(served: &[Resource], group: &str) -> Option<Value> {
    groups(served)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, versions)| {
            let mut body = group_json(g, versions);
            body["kind"] = json!("APIGroup");
            body["apiVersion"] = json!("v1");
            body
        })
}

/// The resource list of one group version. The core list carries `pods/eviction` with group
/// `policy` and version `v1`: kubectl drain looks for exactly that to choose policy/v1
/// evictions (Kubernetes: staging/src/k8s.io/kubectl/pkg/drain/drain.go `CheckEvictionSupport`).
pub(crate) fn resource_list(served: &[Resource], group: &str, version: &str) -> Option<Value> {
    let mut resources: Vec<Value> = served
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

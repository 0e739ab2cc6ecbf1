//! Talos's manifest apply controller: the bootstrap manifests (kube-proxy, CoreDNS, flannel)
//! and those of `cluster.inlineManifests` / `cluster.extraManifests` become API objects.
//!
//! Talos: internal/app/machined/pkg/controllers/k8s/manifest_apply.go. On every release it
//! sorts Namespaces first, then CustomResourceDefinitions, maps each object's kind through
//! discovery (a kind the API does not serve is skipped and tried again at the next run),
//! defaults a namespaced object's namespace to `default`, and **creates only objects that do
//! not exist**: a changed manifest never updates an object, on any release. What 1.13 changed
//! is how it creates:
//! - v1.12.0 `apply`: `Get`, and on NotFound `Create` (field manager `talos`). An object deleted
//!   by hand comes back at the next run, with the manifest's current content.
//! - v1.13.0 `apply`: an inventory (ConfigMap `kube-system/talos-bootstrap-manifests-inventory`,
//!   one key per object, go-kubernetes `kubernetes/ssa/internal/inventory/configmap`) records
//!   what Talos created; an object in it is skipped, an existing one is added to it, a missing
//!   one is created by server-side apply (field manager `talos`) with the annotation
//!   `config.k8s.io/owning-inventory`. An object deleted by hand stays deleted.
//!
//! Updating the objects is `talosctl upgrade-k8s`'s job (castle's Kubernetes upgrade does it for
//! the bootstrap manifests' images).

use std::collections::BTreeSet;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value};

use super::cluster::{uid, KubeCluster, Namespace, ObjectKey, Store};
use super::render::{rfc3339, View};
use super::KubeAddons;

/// How the node's Talos release creates manifest objects (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestRule {
    /// Before Talos 1.13: create what is missing, every run.
    CreateMissing,
    /// From Talos 1.13: server-side apply what is missing and not in the inventory yet.
    Inventory,
}

impl ManifestRule {
    /// The rule of a Talos release (`v1.12.3` -> create missing; `v1.13.0` -> inventory).
    pub fn of_release(talos_version: &str) -> Self {
        let minor: u32 = talos_version
            .trim_start_matches('v')
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if minor >= 13 {
            ManifestRule::Inventory
        } else {
            ManifestRule::CreateMissing
        }
    }
}

/// Namespace and name of the inventory (Talos: pkg/machinery/constants/constants.go (v1.13.0)
/// `KubernetesInventoryNamespace`, `KubernetesBootstrapManifestsInventoryName`).
const INVENTORY: (&str, &str) = ("kube-system", "talos-bootstrap-manifests-inventory");

/// The annotation naming the inventory that owns an object (go-kubernetes:
/// kubernetes/ssa/inventory.go `InventoryAnnotationKey`).
const OWNING_INVENTORY: &str = "config.k8s.io/owning-inventory";

/// An inventory entry: `NAMESPACE_NAME_GROUP_KIND`, colons of the name doubled as `__`
/// (fluxcd/cli-utils pkg/object/objmetadata.go `ObjMetadata.String`).
fn inventory_entry(group: &str, kind: &str, namespace: &str, name: &str) -> String {
    format!("{namespace}_{}_{group}_{kind}", name.replace(':', "__"))
}

impl KubeCluster {
    /// The add-ons of a control plane's config: network settings, then the bootstrap and the
    /// cluster's manifests, as the node's Talos release applies them.
    pub fn apply_addons(&self, addons: &KubeAddons, default_coredns: &str, rule: ManifestRule) {
        if self.lock().settings != addons.settings {
            self.configure(addons.settings.clone());
        }
        self.apply_bootstrap(
            addons.proxy_image.as_deref(),
            addons.coredns_image.as_deref().unwrap_or(default_coredns),
            rule,
        );
        self.apply_manifests(&addons.manifests, rule);
    }

    /// The bootstrap manifests' images: kube-proxy's and CoreDNS's as the first control plane's
    /// config renders them, set once; a later change is applied by a Kubernetes upgrade
    /// (`talosctl upgrade-k8s`, castle's upgrade). From 1.13 the inventory records them.
    fn apply_bootstrap(&self, proxy: Option<&str>, coredns: &str, rule: ManifestRule) {
        let mut store = self.lock();
        if !store.bootstrapped {
            store.bootstrapped = true;
            if let Some(image) = proxy {
                store.set_image(
                    "DaemonSet",
                    "kube-system",
                    "kube-proxy",
                    "kube-proxy",
                    image,
                );
            }
            store.set_image("Deployment", "kube-system", "coredns", "coredns", coredns);
        }
        if rule == ManifestRule::Inventory {
            let mut entries = store.inventory();
            let before = entries.len();
            entries.insert(inventory_entry(
                "apps",
                "Deployment",
                "kube-system",
                "coredns",
            ));
            entries.insert(inventory_entry("", "Service", "kube-system", "kube-dns"));
            for name in store.daemonsets.keys() {
                entries.insert(inventory_entry("apps", "DaemonSet", "kube-system", name));
            }
            if entries.len() != before || !store.has_inventory() {
                store.write_inventory(&entries);
            }
        }
    }

    /// One run of the manifest apply controller over `documents` (see the module doc).
    pub fn apply_manifests(&self, documents: &[Value], rule: ManifestRule) {
        let mut docs: Vec<&Value> = documents.iter().collect();
        // Namespaces first, then CRDs, each by name; the rest keeps its order.
        let rank = |d: &Value| match (d["apiVersion"].as_str(), d["kind"].as_str()) {
            (Some("v1"), Some("Namespace")) => 0,
            (Some(v), Some("CustomResourceDefinition"))
                if v.starts_with("apiextensions.k8s.io/") =>
            {
                1
            }
            _ => 2,
        };
        docs.sort_by(|a, b| {
            let (ra, rb) = (rank(a), rank(b));
            ra.cmp(&rb).then_with(|| match ra {
                2 => std::cmp::Ordering::Equal,
                _ => a["metadata"]["name"]
                    .as_str()
                    .cmp(&b["metadata"]["name"].as_str()),
            })
        });
        let mut store = self.lock();
        let mut inventory = (rule == ManifestRule::Inventory).then(|| store.inventory());
        for doc in docs {
            let (Some(api_version), Some(kind), Some(name)) = (
                doc["apiVersion"].as_str(),
                doc["kind"].as_str(),
                doc["metadata"]["name"].as_str(),
            ) else {
                continue;
            };
            // The REST mapping: a kind not served (a custom resource before its CRD) is skipped.
            let Some(resource) = super::discovery::by_kind(&store.served(), api_version, kind)
            else {
                tracing::warn!(%api_version, %kind, %name, "error creating mapping for object: no matches for kind, will retry");
                continue;
            };
            let namespace = if resource.namespaced {
                doc["metadata"]["namespace"].as_str().unwrap_or("default")
            } else {
                ""
            };
            let entry = inventory_entry(&resource.group, kind, namespace, name);
            if inventory.as_ref().is_some_and(|i| i.contains(&entry)) {
                continue;
            }
            let exists = View {
                store: &store,
                timings: &self.timings,
                now: Instant::now(),
            }
            .objects(&resource, (!namespace.is_empty()).then_some(namespace))
            .iter()
            .any(|o| o["metadata"]["name"] == name);
            if exists {
                if let Some(i) = inventory.as_mut() {
                    i.insert(entry);
                }
                continue;
            }
            if resource.namespaced && !store.namespaces.contains_key(namespace) {
                // A NotFound from Create ends the run; the next one tries again.
                tracing::warn!(%kind, %name, %namespace, "error creating object: namespace not found, will retry");
                break;
            }
            let mut object = doc.clone();
            if rule == ManifestRule::Inventory {
                if let Some(owner) = object["metadata"]["annotations"][OWNING_INVENTORY].as_str() {
                    if owner != INVENTORY.1 {
                        tracing::warn!(%kind, %name, "unexpected foreign inventory annotation");
                        continue;
                    }
                }
                object["metadata"]["annotations"][OWNING_INVENTORY] = json!(INVENTORY.1);
            }
            store.create(&resource.group, kind, namespace, object, rule);
            if let Some(i) = inventory.as_mut() {
                i.insert(entry);
            }
        }
        if let Some(entries) = inventory {
            if entries != store.inventory() || !store.has_inventory() {
                store.write_inventory(&entries);
            }
        }
    }
}

impl Store {
    fn inventory_key() -> ObjectKey {
        (
            String::new(),
            "ConfigMap".into(),
            INVENTORY.0.into(),
            INVENTORY.1.into(),
        )
    }

    fn has_inventory(&self) -> bool {
        self.objects.contains_key(&Self::inventory_key())
    }

    /// The entries of the inventory ConfigMap (none when it is missing: Talos creates it empty).
    fn inventory(&self) -> BTreeSet<String> {
        self.objects
            .get(&Self::inventory_key())
            .and_then(|cm| cm["data"].as_object())
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn write_inventory(&mut self, entries: &BTreeSet<String>) {
        let data: serde_json::Map<String, Value> =
            entries.iter().map(|e| (e.clone(), json!(""))).collect();
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": INVENTORY.1, "namespace": INVENTORY.0 },
            "data": data,
        });
        match self.objects.get_mut(&Self::inventory_key()) {
            Some(existing) => {
                existing["data"] = object["data"].clone();
                self.revision += 1;
                existing["metadata"]["resourceVersion"] = json!(self.revision.to_string());
            }
            None => self.create(
                "",
                "ConfigMap",
                INVENTORY.0,
                object,
                ManifestRule::CreateMissing,
            ),
        }
    }

    /// Stores a new object with the metadata the API server adds: namespace, uid, creation
    /// time, resourceVersion, generation and the field manager `talos` (an `Update` for a
    /// create, an `Apply` for a server-side apply). A Namespace becomes a namespace.
    pub(crate) fn create(
        &mut self,
        group: &str,
        kind: &str,
        namespace: &str,
        mut object: Value,
        rule: ManifestRule,
    ) {
        let now = SystemTime::now();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.revision += 1;
        if group.is_empty() && kind == "Namespace" {
            self.namespaces.insert(
                name,
                Namespace {
                    created: now,
                    uid: uid(),
                },
            );
            return;
        }
        let metadata = &mut object["metadata"];
        if namespace.is_empty() {
            if let Some(m) = metadata.as_object_mut() {
                m.remove("namespace");
            }
        } else {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(uid());
        metadata["creationTimestamp"] = json!(rfc3339(now));
        metadata["resourceVersion"] = json!(self.revision.to_string());
        metadata["generation"] = json!(1);
        let operation = match rule {
            ManifestRule::CreateMissing => "Update",
            ManifestRule::Inventory => "Apply",
        };
        let api_version = object["apiVersion"].clone();
        object["metadata"]["managedFields"] = json!([{
            "manager": "talos", "operation": operation, "apiVersion": api_version,
            "time": rfc3339(now), "fieldsType": "FieldsV1",
        }]);
        self.objects.insert(
            (
                group.to_string(),
                kind.to_string(),
                namespace.to_string(),
                name,
            ),
            object,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kubernetes::{KubeTimings, NodeSource, NodeView};

    struct NoNodes;

    impl NodeSource for NoNodes {
        fn nodes(&self) -> Vec<NodeView> {
            Vec::new()
        }
        fn delete(&self, _name: &str) -> Option<NodeView> {
            None
        }
    }

    fn cluster() -> Arc<KubeCluster> {
        KubeCluster::new(
            Arc::new(NoNodes),
            "v1.35.0".into(),
            KubeTimings::scaled(0.1, "v1.35.0"),
        )
    }

    fn namespace(name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
    }

    fn config_map(value: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": "settings", "namespace": "apps" },
            "data": { "mode": value },
        })
    }

    fn key(group: &str, kind: &str, namespace: &str, name: &str) -> ObjectKey {
        (group.into(), kind.into(), namespace.into(), name.into())
    }

    fn mode(cluster: &KubeCluster) -> Option<Value> {
        cluster
            .lock()
            .objects
            .get(&key("", "ConfigMap", "apps", "settings"))
            .map(|o| o["data"]["mode"].clone())
    }

    #[test]
    fn a_changed_manifest_keeps_its_object_on_every_release() {
        for rule in [ManifestRule::CreateMissing, ManifestRule::Inventory] {
            let cluster = cluster();
            cluster.apply_manifests(&[config_map("first"), namespace("apps")], rule);
            assert_eq!(mode(&cluster), Some(json!("first")), "{rule:?}");
            cluster.apply_manifests(&[namespace("apps"), config_map("second")], rule);
            assert_eq!(mode(&cluster), Some(json!("first")), "{rule:?}");
        }
    }

    #[test]
    fn a_deleted_object_comes_back_before_1_13_and_stays_deleted_from_1_13() {
        for (rule, back) in [
            (ManifestRule::CreateMissing, Some(json!("second"))),
            (ManifestRule::Inventory, None),
        ] {
            let cluster = cluster();
            cluster.apply_manifests(&[namespace("apps"), config_map("first")], rule);
            cluster
                .lock()
                .objects
                .remove(&key("", "ConfigMap", "apps", "settings"));
            cluster.apply_manifests(&[namespace("apps"), config_map("second")], rule);
            assert_eq!(mode(&cluster), back, "{rule:?}");
        }
    }

    #[test]
    fn from_1_13_objects_are_applied_by_talos_and_listed_in_its_inventory() {
        let cluster = cluster();
        cluster.apply_manifests(
            &[namespace("apps"), config_map("first")],
            ManifestRule::Inventory,
        );
        let store = cluster.lock();
        let cm = &store.objects[&key("", "ConfigMap", "apps", "settings")];
        assert_eq!(
            cm["metadata"]["annotations"][OWNING_INVENTORY],
            "talos-bootstrap-manifests-inventory"
        );
        assert_eq!(cm["metadata"]["managedFields"][0]["operation"], "Apply");
        assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "talos");
        let inventory = store.inventory();
        assert!(
            inventory.contains("apps_settings__ConfigMap"),
            "{inventory:?}"
        );
        assert!(inventory.contains("_apps__Namespace"), "{inventory:?}");
    }

    #[test]
    fn a_custom_resource_appears_with_its_definition_and_namespaces_default() {
        let cluster = cluster();
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": { "name": "gitrepositories.source.toolkit.fluxcd.io" },
            "spec": { "group": "source.toolkit.fluxcd.io", "scope": "Namespaced",
                      "names": { "plural": "gitrepositories", "kind": "GitRepository", "shortNames": ["gitrepo"] },
                      "versions": [{ "name": "v1", "served": true, "storage": true }] },
        });
        let repo = json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": { "name": "home" }, "spec": { "url": "https://example.invalid/home.git" },
        });
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "reader", "namespace": "ignored" }, "rules": [],
        });
        // The custom resource comes first in the manifest: the CRD is still applied before it.
        cluster.apply_manifests(&[repo, role, crd], ManifestRule::CreateMissing);
        let store = cluster.lock();
        assert!(store.objects.contains_key(&key(
            "source.toolkit.fluxcd.io",
            "GitRepository",
            "default",
            "home"
        )));
        assert!(store.objects.contains_key(&key(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "",
            "reader"
        )));
        let served = store.served();
        assert!(served
            .iter()
            .any(|r| r.name == "gitrepositories" && r.short_names == ["gitrepo"]));
    }
}

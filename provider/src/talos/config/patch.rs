//! User patches, merged as Talos merges them.
//!
//! A patch is either a strategic-merge patch or an RFC 6902 JSON patch.
//!
//! A strategic-merge patch is YAML, one or more documents (`---` separated). A document with a
//! `kind` applies to the generated document of that kind (and `name`, when the patch gives one),
//! or is added as a new document when there is none; a document without `kind` applies to the
//! `v1alpha1` machine config. Within a document, as Talos's `merge.Merge` does:
//!
//! - maps merge key by key, recursively; scalars replace;
//! - lists append, except those Talos replaces (`cluster.network.podSubnets` and
//!   `serviceSubnets`, `cluster.apiServer.auditPolicy`, a `NetworkRuleConfig`'s `ingress` and
//!   `ports`), and those Talos merges by key: `machine.network.interfaces` by `interface` or
//!   `deviceSelector`, their `vlans` by `vlanId`, `cluster.apiServer.admissionControl` by `name`;
//! - a key whose value is `{$patch: delete}` is removed;
//! - a document whose top level holds `$patch: delete` (with its `kind`/`name`) removes that
//!   whole document.
//!
//! A JSON patch is a list of operations (`op`, `path`, `value`, `from`) applied to the `v1alpha1`
//! document, as Talos applies them (only to that document).
// Talos: pkg/machinery/config/merge/merge.go (v1.12.0); v1alpha1_types.go NetworkDeviceList,
// VlanList, AdmissionPluginConfigList Merge, `merge:"replace"` tags; pkg/machinery/config/
// configpatcher (JSON patches apply to the v1alpha1 document only).

use serde::Deserialize as _;
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";

/// Parses a patch into its documents (JSON values), refusing anything that is not a mapping.
pub fn parse_patch(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(de).map_err(|e| format!("not YAML: {e}"))?;
        if yaml.is_null() {
            continue; // an empty document, e.g. a leading `---`
        }
        let json = serde_json::to_value(&yaml).map_err(|e| format!("document {i}: {e}"))?;
        if !json.is_object() {
            return Err(format!("document {i} is not a mapping"));
        }
        docs.push(json);
    }
    Ok(docs)
}

fn is_delete(v: &Value) -> bool {
    v.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// Identity of a document for matching: its `kind` (None for v1alpha1) and `name`.
pub(crate) fn doc_identity(doc: &Value) -> (Option<&str>, Option<&str>) {
    (
        doc.get("kind").and_then(Value::as_str),
        doc.get("name").and_then(Value::as_str),
    )
}

/// A parsed patch of either form.
#[derive(Debug, Clone)]
pub enum Patch {
    /// Strategic-merge documents.
    Strategic(Vec<Value>),
    /// RFC 6902 operations on the `v1alpha1` document.
    Json(Vec<Value>),
}

/// Parses a patch: a list of operations is a JSON patch, mappings are strategic-merge documents.
pub fn parse_any(text: &str) -> Result<Patch, String> {
    let first = serde_yaml::Deserializer::from_str(text)
        .next()
        .map(serde_yaml::Value::deserialize)
        .transpose()
        .map_err(|e| format!("not YAML: {e}"))?;
    let Some(serde_yaml::Value::Sequence(ops)) = first else {
        return parse_patch(text).map(Patch::Strategic);
    };
    let ops = serde_json::to_value(&ops).map_err(|e| e.to_string())?;
    let ops = ops.as_array().cloned().unwrap_or_default();
    for (i, op) in ops.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        if !matches!(
            name,
            "add" | "remove" | "replace" | "move" | "copy" | "test"
        ) {
            return Err(format!(
                "operation {i} is not a JSON patch operation (op add, remove, replace, move, copy or test)"
            ));
        }
        if op.get("path").and_then(Value::as_str).is_none() {
            return Err(format!("operation {i} has no path"));
        }
    }
    Ok(Patch::Json(ops))
}

/// Applies a patch of either form; a JSON patch that does not apply is an error.
pub(crate) fn apply_any(docs: &mut Vec<Value>, patch: &Patch) -> Result<(), String> {
    match patch {
        Patch::Strategic(p) => {
            apply(docs, p);
            Ok(())
        }
        Patch::Json(ops) => {
            let main = docs
                .iter_mut()
                .find(|d| d.get("kind").is_none())
                .ok_or("a JSON patch applies to the v1alpha1 document, and there is none")?;
            for (i, op) in ops.iter().enumerate() {
                json_patch_op(main, op).map_err(|e| format!("operation {i}: {e}"))?;
            }
            Ok(())
        }
    }
}

/// Applies one parsed patch to a set of documents (v1alpha1 first, then the others).
pub(crate) fn apply(docs: &mut Vec<Value>, patch: &[Value]) {
    for p in patch {
        let (kind, name) = doc_identity(p);
        let matches = |d: &Value| {
            let (dk, dn) = doc_identity(d);
            dk == kind && (kind.is_none() || name.is_none() || dn == name)
        };
        if is_delete(p) {
            docs.retain(|d| !matches(d));
            continue;
        }
        match docs.iter_mut().find(|d| matches(d)) {
            Some(target) => merge_at(target, p, kind.unwrap_or("v1alpha1"), ""),
            None => docs.push(strip_directives(p)),
        }
    }
}

/// Merges `patch` into `target` with the rule in the module documentation, for the v1alpha1
/// document.
pub fn merge(target: &mut Value, patch: &Value) {
    merge_at(target, patch, "v1alpha1", "");
}

/// Lists (and maps) Talos replaces instead of merging, by document kind and path.
const REPLACED: &[(&str, &str)] = &[
    ("v1alpha1", ".cluster.network.podSubnets"),
    ("v1alpha1", ".cluster.network.serviceSubnets"),
    ("v1alpha1", ".cluster.apiServer.auditPolicy"),
    ("NetworkRuleConfig", ".ingress"),
    ("NetworkRuleConfig", ".portSelector.ports"),
];

/// The key fields of lists Talos merges element by element, by document kind and path.
fn list_keys(kind: &str, path: &str) -> Option<&'static [&'static str]> {
    match (kind, path) {
        ("v1alpha1", ".machine.network.interfaces") => Some(&["interface", "deviceSelector"]),
        ("v1alpha1", ".machine.network.interfaces[].vlans") => Some(&["vlanId"]),
        ("v1alpha1", ".cluster.apiServer.admissionControl") => Some(&["name"]),
        _ => None,
    }
}

fn merge_at(target: &mut Value, patch: &Value, kind: &str, path: &str) {
    if REPLACED.contains(&(kind, path)) {
        *target = strip_directives(patch);
        return;
    }
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_maps(t, p, kind, path),
        (Value::Array(t), Value::Array(p)) => match list_keys(kind, path) {
            Some(keys) => merge_keyed(t, p, keys, kind, &format!("{path}[]")),
            None => t.extend(p.iter().map(strip_directives)),
        },
        (t, p) => *t = strip_directives(p),
    }
}

/// Each patch element merges into the element with the same key (the first key the patch
/// element has), or is appended.
fn merge_keyed(target: &mut Vec<Value>, patch: &[Value], keys: &[&str], kind: &str, path: &str) {
    for element in patch {
        let key = keys.iter().find_map(|k| element.get(*k).map(|v| (*k, v)));
        let existing = key.and_then(|(k, v)| target.iter_mut().find(|t| t.get(k) == Some(v)));
        match existing {
            Some(existing) => merge_at(existing, element, kind, path),
            None => target.push(strip_directives(element)),
        }
    }
}

fn merge_maps(target: &mut Map<String, Value>, patch: &Map<String, Value>, kind: &str, path: &str) {
    for (key, value) in patch {
        if key == DIRECTIVE {
            continue;
        }
        if is_delete(value) {
            target.remove(key);
        } else if let Some(existing) = target.get_mut(key) {
            merge_at(existing, value, kind, &format!("{path}.{key}"));
        } else {
            target.insert(key.clone(), strip_directives(value));
        }
    }
}

/// One RFC 6902 operation.
fn json_patch_op(doc: &mut Value, op: &Value) -> Result<(), String> {
    let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
    let value = || op.get("value").cloned().ok_or("needs a value".to_string());
    let from = || {
        op.get("from")
            .and_then(Value::as_str)
            .ok_or("needs a from".to_string())
    };
    match op.get("op").and_then(Value::as_str).unwrap_or_default() {
        "add" => pointer_add(doc, path, value()?),
        "remove" => pointer_remove(doc, path).map(drop),
        "replace" => {
            let slot = doc
                .pointer_mut(path)
                .ok_or(format!("{path} does not exist"))?;
            *slot = value()?;
            Ok(())
        }
        "move" => {
            let moved = pointer_remove(doc, from()?)?;
            pointer_add(doc, path, moved)
        }
        "copy" => {
            let copied = doc
                .pointer(from()?)
                .cloned()
                .ok_or(format!("{} does not exist", from()?))?;
            pointer_add(doc, path, copied)
        }
        "test" => (doc.pointer(path) == Some(&value()?))
            .then_some(())
            .ok_or(format!("test failed: {path} differs")),
        other => Err(format!("unknown op {other:?}")),
    }
}

fn split_pointer(path: &str) -> Result<(&str, String), String> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or(format!("{path:?} is not a JSON pointer"))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(list)) if last == "-" => {
            list.push(value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let i: usize = last.parse().map_err(|_| format!("{path}: not an index"))?;
            if i > list.len() {
                return Err(format!("{path}: index out of range"));
            }
            list.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{parent} does not exist")),
    }
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("{path} does not exist");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&last).ok_or_else(missing),
        Some(Value::Array(list)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            (i < list.len()).then(|| list.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| k.as_str() != DIRECTIVE && !is_delete(v))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_merge_lists_append_and_delete_removes_as_talos_merges() {
        let mut docs = vec![json!({
            "machine": {"install": {"disk": "/dev/sda", "wipe": false}, "certSANs": ["a", "b"],
                        "kubelet": {"image": "k"}},
            "cluster": {"network": {"podSubnets": ["10.244.0.0/16"]}}
        })];
        let patch = parse_patch(
            "machine:\n  install:\n    wipe: true\n  certSANs: [c]\n  kubelet:\n    $patch: delete\n\
             cluster:\n  network:\n    podSubnets: [10.32.0.0/16]\n",
        )
        .unwrap();
        apply(&mut docs, &patch);
        assert_eq!(
            docs[0],
            json!({"machine": {"install": {"disk": "/dev/sda", "wipe": true}, "certSANs": ["a", "b", "c"]},
                   "cluster": {"network": {"podSubnets": ["10.32.0.0/16"]}}})
        );
    }

    #[test]
    fn interfaces_merge_by_name_or_selector_and_admission_plugins_by_name() {
        let mut docs = vec![json!({
            "machine": {"network": {"interfaces": [
                {"deviceSelector": {"physical": true}, "addresses": ["10.0.0.11/24"], "mtu": 1500}
            ]}},
            "cluster": {"apiServer": {"admissionControl": [
                {"name": "PodSecurity", "configuration": {"defaults": {"enforce": "baseline"}}}
            ]}}
        })];
        let patch = parse_patch(
            "machine:\n  network:\n    interfaces:\n      - deviceSelector: {physical: true}\n        mtu: 9000\n\
             \x20     - interface: eth1\n        dhcp: true\n\
             cluster:\n  apiServer:\n    admissionControl:\n      - name: PodSecurity\n\
             \x20       configuration:\n          defaults:\n            enforce: restricted\n",
        )
        .unwrap();
        apply(&mut docs, &patch);
        let ifaces = docs[0]["machine"]["network"]["interfaces"]
            .as_array()
            .unwrap();
        assert_eq!(ifaces.len(), 2);
        assert_eq!(ifaces[0]["mtu"], 9000);
        assert_eq!(ifaces[0]["addresses"], json!(["10.0.0.11/24"]));
        let plugins = docs[0]["cluster"]["apiServer"]["admissionControl"]
            .as_array()
            .unwrap();
        assert_eq!(plugins.len(), 1);
        assert_eq!(
            plugins[0]["configuration"]["defaults"]["enforce"],
            "restricted"
        );
    }

    #[test]
    fn json_patches_apply_to_the_v1alpha1_document() {
        let mut docs = vec![
            json!({"machine": {"certSANs": ["a"], "install": {"wipe": false}}}),
            json!({"kind": "HostnameConfig", "hostname": "x"}),
        ];
        let patch = parse_any(
            "- op: add\n  path: /machine/certSANs/-\n  value: b\n\
             - op: remove\n  path: /machine/install/wipe\n\
             - op: add\n  path: /machine/nodeLabels\n  value: {zone: a}\n",
        )
        .unwrap();
        apply_any(&mut docs, &patch).unwrap();
        assert_eq!(
            docs[0],
            json!({"machine": {"certSANs": ["a", "b"], "install": {}, "nodeLabels": {"zone": "a"}}})
        );
        let bad = parse_any("- op: remove\n  path: /machine/nope\n").unwrap();
        assert!(apply_any(&mut docs, &bad)
            .unwrap_err()
            .contains("/machine/nope does not exist"));
        assert!(parse_any("- op: frobnicate\n  path: /x\n").is_err());
    }

    #[test]
    fn kind_documents_merge_add_or_delete() {
        let mut docs = vec![
            json!({"version": "v1alpha1"}),
            json!({"apiVersion": "v1alpha1", "kind": "ResolverConfig", "nameservers": []}),
        ];
        let patch = parse_patch(
            "apiVersion: v1alpha1\nkind: ResolverConfig\n$patch: delete\n---\n\
             apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: x\n",
        )
        .unwrap();
        apply(&mut docs, &patch);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"], "HostnameConfig");
    }

    #[test]
    fn a_list_that_is_not_json_patch_operations_is_refused() {
        assert!(parse_any("- a\n- b\n").is_err());
        assert!(parse_any("machine: [").is_err());
    }
}

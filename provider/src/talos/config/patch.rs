//! User patches: a small, documented strategic merge.
//!
//! A patch is YAML, one or more documents (`---` separated). A document with a `kind` applies to
//! the generated document of that kind (and `name`, when the patch gives one), or is added as a
//! new document when there is none; a document without `kind` applies to the `v1alpha1` machine
//! config. Within a document:
//!
//! - maps merge key by key, recursively;
//! - scalars and lists replace what was there (no list merging: the result is always what the
//!   patch says);
//! - a key whose value is `{$patch: delete}` is removed;
//! - a document whose top level holds `$patch: delete` (with its `kind`/`name`) removes that
//!   whole document.

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
            Some(target) => merge(target, p),
            None => docs.push(strip_directives(p)),
        }
    }
}

/// Merges `patch` into `target` with the rule in the module documentation.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => merge_maps(t, p),
        (t, p) => *t = strip_directives(p),
    }
}

fn merge_maps(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if key == DIRECTIVE {
            continue;
        }
        if is_delete(value) {
            target.remove(key);
        } else if let Some(existing) = target.get_mut(key) {
            merge(existing, value);
        } else {
            target.insert(key.clone(), strip_directives(value));
        }
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
    fn maps_merge_lists_replace_and_delete_removes() {
        let mut docs = vec![json!({
            "machine": {"install": {"disk": "/dev/sda", "wipe": false}, "certSANs": ["a", "b"],
                        "kubelet": {"image": "k"}}
        })];
        let patch = parse_patch(
            "machine:\n  install:\n    wipe: true\n  certSANs: [c]\n  kubelet:\n    $patch: delete\n",
        )
        .unwrap();
        apply(&mut docs, &patch);
        assert_eq!(
            docs[0],
            json!({"machine": {"install": {"disk": "/dev/sda", "wipe": true}, "certSANs": ["c"]}})
        );
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
    fn a_list_patch_is_refused() {
        assert!(parse_patch("- a\n- b\n").is_err());
        assert!(parse_patch("machine: [").is_err());
    }
}

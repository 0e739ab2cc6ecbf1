//! Talos's own JSON Schemas, embedded, to check every generated and patched document, plus
//! the fields each release still decodes without publishing them
//! ([`undocumented_fields`](super::undocumented_fields)).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::undocumented_fields::{add_to_schema, refusals};
use super::version::TalosMinor;

const V1_10: &str = include_str!("../../../schemas/talos/v1.10/config.schema.json");
const V1_11: &str = include_str!("../../../schemas/talos/v1.11/config.schema.json");
const V1_12: &str = include_str!("../../../schemas/talos/v1.12/config.schema.json");
const V1_13: &str = include_str!("../../../schemas/talos/v1.13/config.schema.json");

/// The root schema of a release line (a `oneOf` over every document type).
pub fn root_schema(minor: TalosMinor) -> &'static Value {
    static ROOTS: OnceLock<HashMap<TalosMinor, Value>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        TalosMinor::ALL
            .iter()
            .map(|&m| {
                let text = match m {
                    TalosMinor::V1_10 => V1_10,
                    TalosMinor::V1_11 => V1_11,
                    TalosMinor::V1_12 => V1_12,
                    TalosMinor::V1_13 => V1_13,
                };
                // The files are checked in and tested; failing here is a build defect.
                (
                    m,
                    serde_json::from_str(text).expect("embedded Talos schema is JSON"),
                )
            })
            .collect()
    });
    &roots[&minor]
}

/// The `$defs` entry that describes a document: `v1alpha1.Config` for the machine config, else
/// the definition whose `kind` enum names the document's kind.
fn definition_for(minor: TalosMinor, doc: &Value) -> Option<String> {
    let Some(kind) = doc.get("kind").and_then(Value::as_str) else {
        return Some("v1alpha1.Config".to_string());
    };
    let root = root_schema(minor);
    root["oneOf"].as_array()?.iter().find_map(|r| {
        let name = r["$ref"].as_str()?.strip_prefix("#/$defs/")?;
        let kinds = root["$defs"][name]["properties"]["kind"]["enum"].as_array()?;
        kinds.iter().any(|k| k == kind).then(|| name.to_string())
    })
}

type Validators = Mutex<HashMap<(TalosMinor, String), Arc<jsonschema::Validator>>>;

fn validator(minor: TalosMinor, definition: &str) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (minor, definition.to_string());
    if let Some(v) = cache.lock().map_err(|_| "schema cache poisoned")?.get(&key) {
        return Ok(v.clone());
    }
    // Validate against one definition, not the root oneOf, so errors say what is wrong.
    let root = root_schema(minor);
    let mut schema = serde_json::json!({
        "$schema": root["$schema"],
        "$defs": root["$defs"],
        "$ref": format!("#/$defs/{definition}"),
    });
    add_to_schema(&mut schema, minor);
    let compiled =
        Arc::new(jsonschema::draft202012::new(&schema).map_err(|e| format!("schema: {e}"))?);
    cache
        .lock()
        .map_err(|_| "schema cache poisoned")?
        .insert(key, compiled.clone());
    Ok(compiled)
}

/// Checks one document against its release line's schema (with the fields Talos decodes without
/// publishing them, refusing what Talos refuses among those); the error lists the violations.
pub fn validate_document(minor: TalosMinor, doc: &Value) -> Result<(), String> {
    let Some(definition) = definition_for(minor, doc) else {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        return Err(format!(
            "Talos {} has no document kind {kind:?}",
            minor.as_str()
        ));
    };
    let validator = validator(minor, &definition)?;
    let mut errors: Vec<String> = validator
        .iter_errors(doc)
        .take(5)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect();
    if definition == "v1alpha1.Config" {
        errors.extend(refusals(doc));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks one document against the root schema (`oneOf` every document type), as the Talos
/// schema is published; used by tests as an independent second check.
#[cfg(test)]
pub(crate) fn validate_against_root(minor: TalosMinor, doc: &Value) -> bool {
    static ROOT_VALIDATORS: OnceLock<Mutex<HashMap<TalosMinor, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = ROOT_VALIDATORS.get_or_init(Default::default);
    let v = {
        let mut guard = cache.lock().expect("root validator cache");
        guard
            .entry(minor)
            .or_insert_with(|| {
                Arc::new(jsonschema::draft202012::new(root_schema(minor)).expect("root schema"))
            })
            .clone()
    };
    v.is_valid(doc)
}

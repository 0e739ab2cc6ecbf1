//! A machine config as a stream of YAML documents: read into JSON values, written back.

use serde_json::Value;

use super::ConfigError;

/// The documents of a YAML stream, empty ones (a leading `---`) left out.
pub(super) fn documents(config: &str) -> Result<Vec<Value>, ConfigError> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(config) {
        let doc: Value = serde::Deserialize::deserialize(de).map_err(ConfigError::Yaml)?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Whether `doc` is the v1alpha1 machine config (a `version` and no `kind`, unlike the
/// multi-document kinds).
pub(super) fn is_v1alpha1(doc: &Value) -> bool {
    doc.get("version").is_some() && doc.get("kind").is_none()
}

/// The documents as one YAML stream, separated by `---`.
pub(super) fn yaml_stream(docs: &[Value]) -> Result<String, ConfigError> {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(doc).map_err(ConfigError::Yaml)?);
    }
    Ok(out)
}

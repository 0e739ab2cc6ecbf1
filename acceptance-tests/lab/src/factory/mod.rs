//! An Image Factory on loopback HTTPS: schematic upload, and the schematics the lab's nodes may
//! install.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /schematics` with the schematic YAML | 201 `{"id": "<schematic id>"}`; 400 for YAML that is no schematic |
//! | `GET /__lab/schematics` | 200 `{"uploads": [{"id", "extensions"}, ...]}` in upload order (for tests) |
//!
//! The id is what the real factory derives (siderolabs/image-factory
//! `pkg/schematic/schematic.go` `ID()`): the SHA-256 (hex) of the schematic marshalled back
//! to YAML, so two texts of the same schematic get the same id, and the extension list is
//! taken in the order given (the factory does not sort it). An installer
//! `<factory host>/installer/<id>:<tag>` only resolves for an id the factory was given; the
//! lab's Upgrade asks [`Factory::extensions`] the way a node's image pull would ask the
//! registry.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::infisical::{serve_tls, PrivateCa};

/// One schematic the factory knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schematic {
    /// Its id.
    pub id: String,
    /// Official system extensions, e.g. `siderolabs/iscsi-tools`, in the schematic's order.
    pub extensions: Vec<String>,
}

#[derive(Default)]
struct Known {
    /// Host (and port) installer references name, e.g. `127.0.0.1:4443`.
    host: String,
    /// Schematics uploaded, in order (a schematic uploaded twice is listed twice).
    uploads: Vec<Schematic>,
    /// Every schematic the factory can serve: uploaded, or known beforehand (the template's).
    schematics: Vec<Schematic>,
}

/// The factory's state, shared with the fleet. Cheap to clone.
#[derive(Clone, Default)]
pub struct Factory {
    known: Arc<Mutex<Known>>,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("host", &self.host())
            .finish()
    }
}

impl Factory {
    /// The host installer references of this factory name (empty until it serves).
    pub fn host(&self) -> String {
        self.known
            .lock()
            .map(|k| k.host.clone())
            .unwrap_or_default()
    }

    /// Makes a schematic known without an upload, as one uploaded before the lab started (the
    /// template's own schematic). Returns its id.
    pub fn preload(&self, extensions: &[String]) -> String {
        let schematic = Schematic {
            id: schematic_id(extensions),
            extensions: extensions.to_vec(),
        };
        let id = schematic.id.clone();
        if let Ok(mut known) = self.known.lock() {
            if !known.schematics.contains(&schematic) {
                known.schematics.push(schematic);
            }
        }
        id
    }

    /// The extensions of schematic `id`, if the factory knows it. Every factory knows the
    /// vanilla schematic (no customization), which nobody needs to upload.
    pub fn extensions(&self, id: &str) -> Option<Vec<String>> {
        if id == schematic_id(&[]) {
            return Some(Vec::new());
        }
        let known = self.known.lock().ok()?;
        known
            .schematics
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.extensions.clone())
    }

    /// Every upload so far.
    pub fn uploads(&self) -> Vec<Schematic> {
        self.known
            .lock()
            .map(|k| k.uploads.clone())
            .unwrap_or_default()
    }

    fn upload(&self, yaml: &str) -> Result<Schematic, String> {
        let extensions = parse(yaml)?;
        let schematic = Schematic {
            id: schematic_id(&extensions),
            extensions,
        };
        let mut known = self.known.lock().map_err(|_| "factory state poisoned")?;
        known.uploads.push(schematic.clone());
        if !known.schematics.contains(&schematic) {
            known.schematics.push(schematic.clone());
        }
        Ok(schematic)
    }

    /// Serves the factory over HTTPS on `listener` (certificate from `ca`) until `shutdown`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        ca: &PrivateCa,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let address: SocketAddr = listener.local_addr()?;
        if let Ok(mut known) = self.known.lock() {
            known.host = address.to_string();
        }
        serve_tls(listener, router(self.clone()), ca, shutdown).await;
        Ok(())
    }
}

fn router(factory: Factory) -> Router {
    Router::new()
        .route("/schematics", post(create))
        .route("/__lab/schematics", get(list))
        .with_state(factory)
}

async fn create(State(factory): State<Factory>, body: String) -> Response {
    match factory.upload(&body) {
        Ok(schematic) => (StatusCode::CREATED, Json(json!({ "id": schematic.id }))).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn list(State(factory): State<Factory>) -> Json<serde_json::Value> {
    let uploads: Vec<serde_json::Value> = factory
        .uploads()
        .into_iter()
        .map(|s| json!({ "id": s.id, "extensions": s.extensions }))
        .collect();
    Json(json!({ "uploads": uploads }))
}

/// The official extensions of a schematic YAML; an error for what is no schematic (unknown
/// keys are refused, as the factory's strict decoder does).
fn parse(yaml: &str) -> Result<Vec<String>, String> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("error unmarshaling schematic: {e}"))?;
    let allowed = |v: &serde_yaml::Value, keys: &[&str]| -> Result<(), String> {
        match v.as_mapping() {
            Some(m) => match m.keys().find(|k| !keys.contains(&k.as_str().unwrap_or(""))) {
                Some(k) => Err(format!(
                    "error unmarshaling schematic: field {k:?} not found"
                )),
                None => Ok(()),
            },
            None if v.is_null() => Ok(()),
            None => Err("error unmarshaling schematic: not a mapping".into()),
        }
    };
    allowed(&value, &["customization", "overlay"])?;
    let customization = &value["customization"];
    allowed(
        customization,
        &[
            "systemExtensions",
            "extraKernelArgs",
            "meta",
            "secureboot",
            "bootloader",
        ],
    )?;
    let extensions = &customization["systemExtensions"];
    allowed(extensions, &["officialExtensions"])?;
    match &extensions["officialExtensions"] {
        serde_yaml::Value::Null => Ok(vec![]),
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "error unmarshaling schematic: extension is not a string".into())
            })
            .collect(),
        _ => Err("error unmarshaling schematic: officialExtensions is not a list".into()),
    }
}

/// The schematic marshalled as the factory's YAML encoder writes it (four-space indent,
/// sequences under their key; an empty customization is `{}`).
fn marshal(extensions: &[String]) -> String {
    if extensions.is_empty() {
        return "customization: {}\n".into();
    }
    let mut out =
        String::from("customization:\n    systemExtensions:\n        officialExtensions:\n");
    for e in extensions {
        out.push_str(&format!("            - {e}\n"));
    }
    out
}

/// The schematic id: hex SHA-256 of the marshalled schematic.
pub fn schematic_id(extensions: &[String]) -> String {
    Sha256::digest(marshal(extensions).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vanilla_and_longhorn_schematics_get_the_ids_factory_talos_dev_gives() {
        assert_eq!(
            schematic_id(&[]),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
        let longhorn = parse(
            "customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/iscsi-tools, siderolabs/util-linux-tools]\n",
        )
        .unwrap();
        assert_eq!(
            schematic_id(&longhorn),
            "613e1592b2da41ae5e265e8789429f22e121aab91cb4deb6bc3c0b6262961245"
        );
    }

    #[test]
    fn an_upload_makes_its_installer_known_and_bad_yaml_is_refused() {
        let factory = Factory::default();
        assert!(factory.upload("customization:\n  colour: red\n").is_err());
        let s = factory
            .upload("customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/qemu-guest-agent\n")
            .unwrap();
        assert_eq!(
            factory.extensions(&s.id),
            Some(vec!["siderolabs/qemu-guest-agent".to_string()])
        );
        assert_eq!(factory.extensions(&schematic_id(&["x/y".into()])), None);
    }
}

//! The Image Factory (factory.talos.dev, or a self-hosted one): castle uploads the schematic of
//! the configured extensions before nodes pull `<factory host>/installer/<id>:<version>`.
//!
//! The factory resolves an installer only for a schematic it was given (siderolabs/image-factory
//! `POST /schematics` stores the YAML under the SHA-256 of its marshalled form and answers
//! `{"id": ...}`); the Talos Terraform provider uploads first for the same reason. Uploading is
//! idempotent: the same schematic gets the same id.

use std::time::Duration;

use serde::Deserialize;

use super::config::{schematic_id, schematic_yaml};

/// The public Image Factory.
pub const DEFAULT_URL: &str = "https://factory.talos.dev";

/// Where the factory is and what to trust for it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FactorySettings {
    /// Base URL, e.g. `https://factory.talos.dev`.
    pub url: String,
    /// Extra CA certificate(s) (PEM) for a factory behind a private CA.
    pub ca_cert_pem: Option<String>,
}

impl std::fmt::Debug for FactorySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactorySettings")
            .field("url", &self.url)
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .finish()
    }
}

impl FactorySettings {
    /// The public factory.
    pub fn public() -> Self {
        FactorySettings {
            url: DEFAULT_URL.into(),
            ca_cert_pem: None,
        }
    }

    /// The registry host installer references name: the URL without scheme and path, e.g.
    /// `factory.talos.dev` or `127.0.0.1:4443`.
    pub fn host(&self) -> Result<String, String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("image factory URL {:?} is not a URL: {e}", self.url))?;
        if url.scheme() != "https" {
            return Err(format!(
                "image factory URL {:?} must use https: nodes pull the installer from its registry over TLS",
                self.url
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("image factory URL {:?} has no host", self.url))?;
        Ok(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// Uploads the schematic of `extensions` and checks that the factory names it with the id the
/// machine configs were generated with. Returns that id.
pub async fn upload_schematic(
    settings: &FactorySettings,
    extensions: &[String],
) -> Result<String, String> {
    let expected = schematic_id(extensions);
    let mut builder = reqwest::Client::builder()
        .user_agent(crate::USER_AGENT)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Some(pem) = &settings.ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or("the image factory's ca_cert_pem holds no PEM certificate")?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let url = format!("{}/schematics", settings.url.trim_end_matches('/'));
    let failed = |e: &dyn std::fmt::Display| {
        format!("unable to upload the schematic of extensions {extensions:?} to {url}: {e}")
    };
    let response = client
        .post(&url)
        .header("Content-Type", "application/yaml")
        .body(schematic_yaml(extensions))
        .send()
        .await
        .map_err(|e| failed(&crate::talos::client::probe::chain(&e)))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| failed(&e))?;
    if !status.is_success() {
        return Err(failed(&format!("HTTP {status}: {}", text.trim())));
    }
    let created: Created = serde_json::from_str(&text)
        .map_err(|e| failed(&format!("unexpected answer {text:?}: {e}")))?;
    if created.id != expected {
        return Err(failed(&format!(
            "the factory named it {} where castle expected {expected}; the installer images in the machine \
             configurations would not resolve",
            created.id
        )));
    }
    Ok(created.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(url: &str) -> FactorySettings {
        FactorySettings {
            url: url.into(),
            ca_cert_pem: None,
        }
    }

    #[test]
    fn the_installer_host_is_the_factory_url_without_scheme_or_path() {
        assert_eq!(at(DEFAULT_URL).host().unwrap(), "factory.talos.dev");
        assert_eq!(
            at("https://127.0.0.1:4443/").host().unwrap(),
            "127.0.0.1:4443"
        );
        assert!(at("http://factory.lan")
            .host()
            .unwrap_err()
            .contains("https"));
        assert!(at("factory.lan").host().is_err());
    }
}

//! `cluster.extraManifests`: the control planes download each URL (with
//! `cluster.extraManifestHeaders`) and apply its documents as they apply the inline manifests;
//! a download that fails is tried again at the next reconcile. Talos:
//! internal/app/machined/pkg/controllers/k8s/extra_manifest.go (v1.12.0) `processURL`, then
//! `manifest_apply.go`.
//!
//! The lab talks to loopback only: a URL whose host is not an address in 127.0.0.0/8 is never
//! downloaded (logged once), so its objects never appear.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{KubeAddons, KubeCluster, ManifestRule};

impl KubeCluster {
    /// Starts the download of every extra manifest not downloaded yet; each applies its
    /// documents once it arrives, by the node's release's `rule`.
    pub fn fetch_extra_manifests(self: &Arc<Self>, addons: &KubeAddons, rule: ManifestRule) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        for url in &addons.extra_manifests {
            let fresh = self
                .extra_fetched
                .lock()
                .map(|mut set| set.insert(url.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            if !on_loopback(url) {
                tracing::warn!(%url, "extra manifest not downloaded: the lab only reaches 127.0.0.0/8");
                continue;
            }
            let cluster = self.clone();
            let url = url.clone();
            let headers = addons.extra_headers.clone();
            runtime.spawn(async move {
                match download(&url, &headers).await {
                    Ok(documents) => cluster.apply_manifests(&documents, rule),
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "error downloading the extra manifest, will retry");
                        if let Ok(mut set) = cluster.extra_fetched.lock() {
                            set.remove(&url);
                        }
                    }
                }
            });
        }
    }
}

fn on_loopback(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .and_then(|u| u.host_str()?.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback() && ip.is_ipv4())
}

async fn download(url: &str, headers: &[(String, String)]) -> Result<Vec<Value>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("bad response code: {}", response.status().as_u16()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    let mut documents = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let doc = <Value as serde::Deserialize>::deserialize(de).map_err(|e| e.to_string())?;
        if doc.is_object() {
            documents.push(doc);
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::on_loopback;

    #[test]
    fn only_loopback_urls_are_downloaded() {
        assert!(on_loopback("http://127.0.5.20:8080/ns.yaml"));
        assert!(on_loopback("https://127.0.0.1/gotk.yaml"));
        assert!(!on_loopback(
            "https://github.com/fluxcd/flux2/releases/latest/download/install.yaml"
        ));
        assert!(!on_loopback("http://10.0.0.1/ns.yaml"));
        assert!(!on_loopback("file:///etc/passwd"));
    }
}

//! A small client of the Kubernetes API: what castle needs to judge a cluster healthy
//! (`/readyz`, the nodes and their Ready condition, the system pods as `talosctl health` checks
//! them: [`system`]), to drain a node as `kubectl drain` does ([`drain`]) and to remove it.
//! No Terraform types.

pub mod apply;
pub mod drain;
pub mod endpoints;
pub mod system;
pub mod versions;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::time::Instant;

use crate::retry::Backoff;

/// Everything that can go wrong talking to the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The client could not be built (bad PEM).
    #[error("invalid Kubernetes credentials: {0}")]
    Credentials(String),
    /// No answer (connection refused, TLS, timeout).
    #[error(
        "cannot reach the Kubernetes API at {url}: {}",
        transport_reason(source)
    )]
    Transport {
        /// What was called.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than success.
    #[error("the Kubernetes API answered {status} to {url}: {message}")]
    Status {
        /// What was called.
        url: String,
        /// HTTP status.
        status: u16,
        /// `Status.message` or the body.
        message: String,
    },
}

impl KubeError {
    /// No API server answered: the connection was refused, reset or timed out before any
    /// answer (not a certificate of another cluster, which is an answer).
    pub fn nothing_answered(&self) -> bool {
        matches!(self, KubeError::Transport { source, .. }
            if !crate::tls::signed_by_another_ca(source)
                && (source.is_connect() || source.is_timeout() || source.is_request()))
    }

    /// The address answers with a certificate this cluster's Kubernetes CA did not sign:
    /// another cluster's API server is there. A setting to fix, not something to wait out.
    pub fn another_cluster_answers(&self) -> bool {
        matches!(self, KubeError::Transport { source, .. } if crate::tls::signed_by_another_ca(source))
    }
}

/// A transport failure with all its causes, and what a certificate from another CA means: the
/// address answers, but with another cluster's API server (a VIP still held by a cluster
/// that was destroyed, or an endpoint that points at the wrong machines).
fn transport_reason(error: &reqwest::Error) -> String {
    let mut line = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    if ["UnknownIssuer", "unknown issuer", "BadSignature"]
        .iter()
        .any(|needle| line.contains(needle))
    {
        line.push_str(
            " (the server there presents a certificate that this cluster's Kubernetes CA did not sign: another \
             cluster's API server answers at that address)",
        );
    }
    line
}

/// How to reach the API: server URL, cluster CA and a client certificate.
#[derive(Clone)]
pub struct KubeAccess {
    /// e.g. `https://10.0.0.10:6443`.
    pub server: String,
    /// PEM of the Kubernetes CA.
    pub ca_pem: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM of its key.
    pub key_pem: String,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A node as castle judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeHealth {
    /// `metadata.name`.
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// The `Ready` condition as `kubectl describe node` shows it when it is not `True`:
    /// status, reason and message, e.g. "Unknown (NodeStatusUnknown: Kubelet stopped posting
    /// node status.)"; empty when Ready.
    pub condition: String,
    /// The `InternalIP` of `status.addresses`, as its kubelet reports it.
    pub internal_ip: Option<String>,
}

/// The client.
#[derive(Debug, Clone)]
pub struct KubeClient {
    http: reqwest::Client,
    server: String,
    /// Until when a request that meets no API server is sent again (see
    /// [`KubeClient::patient_until`]); `None`: once.
    patience: Option<Instant>,
}

/// Sending a request again when no API server answered: a VIP between two holders answers
/// nothing until the lost holder's election lease expires (Talos: internal/app/machined/pkg/
/// controllers/network/operator/vip.go (v1.12.0), a 60 s etcd lease).
pub const NO_ANSWER: Backoff = Backoff {
    name: "kubernetes api without answer",
    first: Duration::from_millis(200),
    max: Duration::from_secs(2),
    jitter: 0.2,
};

#[derive(Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<NodeItem>,
}

#[derive(Deserialize)]
struct NodeItem {
    metadata: Metadata,
    #[serde(default)]
    status: Option<NodeStatus>,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default)]
    addresses: Vec<NodeAddress>,
}

#[derive(Deserialize)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// The `Ready` condition of a node's status: whether it is `True`, and how it reads otherwise.
fn ready_condition(status: Option<NodeStatus>) -> (bool, String) {
    let ready = status
        .into_iter()
        .flat_map(|s| s.conditions)
        .find(|c| c.kind == "Ready");
    match ready {
        Some(c) if c.status == "True" => (true, String::new()),
        Some(c) if c.reason.is_empty() => (false, c.status),
        Some(c) => (false, format!("{} ({}: {})", c.status, c.reason, c.message)),
        None => (false, "no Ready condition yet".into()),
    }
}

impl KubeClient {
    /// Builds a client that trusts only the cluster CA and presents the client certificate.
    pub fn new(access: &KubeAccess) -> Result<Self, KubeError> {
        let ca = reqwest::Certificate::from_pem(access.ca_pem.as_bytes())
            .map_err(|e| KubeError::Credentials(format!("cluster CA: {e}")))?;
        let identity = reqwest::Identity::from_pem(
            format!("{}\n{}", access.cert_pem, access.key_pem).as_bytes(),
        )
        .map_err(|e| KubeError::Credentials(format!("client certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(crate::USER_AGENT)
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| KubeError::Credentials(e.to_string()))?;
        Ok(Self {
            http,
            server: access.server.trim_end_matches('/').to_string(),
            patience: None,
        })
    }

    /// The same client, sending each request again while no API server answers it
    /// (connection refused, reset or timed out), until `deadline`: castle's day-2 steps go
    /// through the VIP, which answers nothing for as long as a lost holder's lease lives. An
    /// answer, even an error, or another cluster's certificate, ends the tries at once.
    pub fn patient_until(mut self, deadline: Instant) -> Self {
        self.patience = Some(deadline);
        self
    }

    async fn get_text(&self, path: &str) -> Result<String, KubeError> {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await?;
        if !(200..300).contains(&status) {
            return Err(KubeError::Status {
                url: format!("{}{}", self.server, path),
                status,
                message: status_message(&body),
            });
        }
        Ok(body)
    }

    /// Sends a request; the answer's status and body, or a transport error once the client's
    /// patience (if any) is over.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<(u16, String), KubeError> {
        let Some(deadline) = self.patience else {
            return self.send_once(method, path, body).await;
        };
        let mut pauses = NO_ANSWER.until(deadline);
        loop {
            let attempt = pauses
                .bounded(self.send_once(method.clone(), path, body.clone()))
                .await;
            match attempt {
                Some(Err(e)) if e.nothing_answered() => {
                    tracing::debug!(error = %e, "no Kubernetes API server answered; trying again");
                    if !pauses.sleep(None).await {
                        return Err(e);
                    }
                }
                Some(done) => return done,
                None => {
                    return Err(KubeError::Status {
                        url: format!("{}{}", self.server, path),
                        status: 504,
                        message: "no answer before the timeout".into(),
                    })
                }
            }
        }
    }

    /// One try of [`KubeClient::send`].
    async fn send_once(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<(u16, String), KubeError> {
        let url = format!("{}{}", self.server, path);
        let mut request = self
            .http
            .request(method, &url)
            .header("Accept", "application/json");
        if let Some((content_type, body)) = body {
            request = request.header("Content-Type", content_type).body(body);
        }
        let transport = |source| KubeError::Transport {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport)?;
        Ok((status, text))
    }

    /// `GET path` decoded as `T`.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, KubeError> {
        let body = self.get_text(path).await?;
        serde_json::from_str(&body).map_err(|e| KubeError::Status {
            url: format!("{}{}", self.server, path),
            status: 200,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// The server URL (for messages).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `GET /readyz`: `Ok(())` when the API server says `ok`.
    pub async fn readyz(&self) -> Result<(), KubeError> {
        let body = self.get_text("/readyz").await?;
        if body.trim() == "ok" {
            Ok(())
        } else {
            Err(KubeError::Status {
                url: format!("{}/readyz", self.server),
                status: 200,
                message: body,
            })
        }
    }

    /// Every registered node with its Ready condition.
    pub async fn nodes(&self) -> Result<Vec<NodeHealth>, KubeError> {
        let body = self.get_text("/api/v1/nodes").await?;
        let list: NodeList = serde_json::from_str(&body).map_err(|e| KubeError::Status {
            url: format!("{}/api/v1/nodes", self.server),
            status: 200,
            message: format!("not a NodeList: {e}"),
        })?;
        Ok(list
            .items
            .into_iter()
            .map(|item| {
                let internal_ip = item.status.as_ref().and_then(|s| {
                    s.addresses
                        .iter()
                        .find(|a| a.kind == "InternalIP")
                        .map(|a| a.address.clone())
                });
                let (ready, condition) = ready_condition(item.status);
                NodeHealth {
                    name: item.metadata.name,
                    ready,
                    condition,
                    internal_ip,
                }
            })
            .collect())
    }

    /// Deletes a node object; one that is already gone is success.
    pub async fn delete_node(&self, name: &str) -> Result<(), KubeError> {
        let path = format!("/api/v1/nodes/{name}");
        let (status, body) = self.send(reqwest::Method::DELETE, &path, None).await?;
        if (200..300).contains(&status) || status == 404 {
            return Ok(());
        }
        Err(KubeError::Status {
            url: format!("{}{path}", self.server),
            status,
            message: status_message(&body),
        })
    }
}

/// The `message` of a Kubernetes `Status`, or the body.
pub(crate) fn status_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::talos::pki::{CaKind, CertificateAuthority};

    #[tokio::test]
    async fn an_endpoint_that_answers_nothing_is_asked_again_while_the_client_is_patient() {
        // A VIP between two holders: connections open and close without an answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        let ca = CertificateAuthority::generate(
            CaKind::EcdsaP256,
            "kubernetes",
            None,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let access = KubeAccess {
            server: format!("https://127.0.0.1:{port}"),
            ca_pem: ca.crt.clone(),
            cert_pem: ca.crt,
            key_pem: ca.key,
        };
        let once = KubeClient::new(&access).unwrap();
        let error = once.readyz().await.unwrap_err();
        assert!(error.nothing_answered(), "{error}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        let patient = KubeClient::new(&access)
            .unwrap()
            .patient_until(Instant::now() + Duration::from_secs(1));
        let error = patient.readyz().await.unwrap_err();
        assert!(error.nothing_answered(), "{error}");
        assert!(accepted.load(Ordering::SeqCst) > 2, "asked again");
    }

    fn status(json: &str) -> Option<NodeStatus> {
        Some(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn a_lost_node_reads_as_kubectl_describe_shows_its_ready_condition() {
        let lost = status(
            r#"{"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status."}]}"#,
        );
        assert_eq!(
            ready_condition(lost),
            (
                false,
                "Unknown (NodeStatusUnknown: Kubelet stopped posting node status.)".into()
            )
        );
        let ready = status(r#"{"conditions": [{"type": "Ready", "status": "True"}]}"#);
        assert_eq!(ready_condition(ready), (true, String::new()));
        assert!(!ready_condition(None).0);
    }
}

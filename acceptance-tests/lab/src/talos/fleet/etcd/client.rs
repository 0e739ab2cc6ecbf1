//! A small client of etcd's v3 JSON gateway (`POST /v3/...` on the client port, the same
//! messages as the gRPC API in proto3 JSON), over mutual TLS with a certificate of the cluster's
//! etcd CA, as Talos's own etcd client uses `/system/secrets/etcd/admin.crt`. ADR 0007 says why
//! the gateway and not gRPC.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// Client port of etcd on every control plane (Talos `constants.EtcdClientPort`).
pub const CLIENT_PORT: u16 = 2379;
/// Peer port of etcd on every control plane (Talos `constants.EtcdPeerPort`).
pub const PEER_PORT: u16 = 2380;

/// An etcd member as the member list shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Member name: the node's hostname, empty until the member has started.
    pub hostname: String,
    /// Host of its first peer URL.
    pub address: Option<IpAddr>,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs, empty until the member has started.
    pub client_urls: Vec<String>,
    /// A learner does not vote until it is promoted.
    pub is_learner: bool,
}

impl Member {
    /// The host of its first client URL (none until it started).
    pub fn client_address(&self) -> Option<IpAddr> {
        self.client_urls.first().and_then(|u| url_host(u))
    }
}

/// A failure talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Nothing answered at this endpoint (not running, off, TLS refused).
    #[error("etcd at {endpoint} is unreachable: {source}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// etcd answered with an error, e.g. `etcdserver: member not found`.
    #[error("{message}")]
    Server {
        /// The gRPC code etcd gave.
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from etcd: {0}")]
    Decode(String),
}

impl EtcdError {
    /// Whether etcd refused for now: `rpctypes.ErrUnhealthy` ("unhealthy cluster") or
    /// `ErrStopped` ("server stopped"), the errors Talos's `LeaveCluster` retries.
    pub fn is_transient(&self) -> bool {
        matches!(self, EtcdError::Server { message, .. }
            if message.contains("unhealthy cluster") || message.contains("server stopped"))
    }

    /// Whether etcd said the member does not exist (`rpctypes.ErrMemberNotFound`).
    pub fn is_member_not_found(&self) -> bool {
        matches!(self, EtcdError::Server { message, .. } if message.contains("member not found"))
    }
}

/// The client URL of the etcd of a node.
pub fn client_url(address: IpAddr) -> String {
    format!("https://{address}:{CLIENT_PORT}")
}

/// The peer URL of the etcd of a node.
pub fn peer_url(address: IpAddr) -> String {
    format!("https://{address}:{PEER_PORT}")
}

/// A client of the etcd members of one cluster.
#[derive(Clone)]
pub struct EtcdClient {
    http: reqwest::Client,
}

impl EtcdClient {
    /// A client trusting `ca_pem` and presenting `cert_pem`/`key_pem`.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        let identity = reqwest::Identity::from_pem(format!("{cert_pem}\n{key_pem}").as_bytes())
            .map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .identity(identity)
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(EtcdClient { http })
    }

    async fn call(&self, address: IpAddr, path: &str, body: Value) -> Result<Value, EtcdError> {
        let endpoint = client_url(address);
        let response = self
            .http
            .post(format!("{endpoint}{path}"))
            // Like `clientv3.WithRequireLeader`: a member that lost its leader refuses at once
            // instead of answering from a stale view.
            .header("Grpc-Metadata-hasleader", "true")
            .json(&body)
            .send()
            .await
            .map_err(|source| EtcdError::Unreachable {
                endpoint: endpoint.clone(),
                source,
            })?;
        let ok = response.status().is_success();
        let value: Value = response
            .json()
            .await
            .map_err(|source| EtcdError::Unreachable { endpoint, source })?;
        if ok {
            return Ok(value);
        }
        let message = value
            .get("error")
            .or_else(|| value.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("etcd error")
            .to_string();
        let code = value.get("code").and_then(Value::as_i64).unwrap_or(2) as i32;
        Err(EtcdError::Server { code, message })
    }

    /// `MemberList` through the etcd at `address`.
    pub async fn members(&self, address: IpAddr) -> Result<Vec<Member>, EtcdError> {
        Ok(self.members_and_self(address).await?.1)
    }

    /// `MemberList` through the etcd at `address`, with the ID of the member answering.
    pub async fn members_and_self(&self, address: IpAddr) -> Result<(u64, Vec<Member>), EtcdError> {
        let answer = self
            .call(address, "/v3/cluster/member/list", json!({}))
            .await?;
        let me = answer
            .pointer("/header/member_id")
            .and_then(as_u64)
            .ok_or_else(|| EtcdError::Decode("member list without header.member_id".into()))?;
        Ok((me, members(&answer)?))
    }

    /// `MemberAddAsLearner` through the etcd at `address`: the new member's ID and the member
    /// list after the add.
    pub async fn add_learner(
        &self,
        address: IpAddr,
        peer_url: &str,
    ) -> Result<(u64, Vec<Member>), EtcdError> {
        let answer = self
            .call(
                address,
                "/v3/cluster/member/add",
                json!({ "peerURLs": [peer_url], "isLearner": true }),
            )
            .await?;
        let id = answer
            .pointer("/member/ID")
            .and_then(as_u64)
            .ok_or_else(|| EtcdError::Decode("member/add without member ID".into()))?;
        Ok((id, members(&answer)?))
    }

    /// `MemberRemove` through the etcd at `address`.
    pub async fn remove(&self, address: IpAddr, id: u64) -> Result<(), EtcdError> {
        self.call(
            address,
            "/v3/cluster/member/remove",
            json!({ "ID": id.to_string() }),
        )
        .await
        .map(drop)
    }

    /// `MemberPromote` through the etcd at `address`; refused until the learner caught up.
    pub async fn promote(&self, address: IpAddr, id: u64) -> Result<(), EtcdError> {
        self.call(
            address,
            "/v3/cluster/member/promote",
            json!({ "ID": id.to_string() }),
        )
        .await
        .map(drop)
    }

    /// `MemberUpdate`: the member's peer URLs become `peer_urls`.
    pub async fn update_peer_urls(
        &self,
        address: IpAddr,
        id: u64,
        peer_urls: &[String],
    ) -> Result<(), EtcdError> {
        self.call(
            address,
            "/v3/cluster/member/update",
            json!({ "ID": id.to_string(), "peerURLs": peer_urls }),
        )
        .await
        .map(drop)
    }

    /// Talos's `ValidateQuorum`: a linearizable read of the key `health` goes through consensus,
    /// so it answers only with quorum (and never on a learner).
    pub async fn quorum_read(&self, address: IpAddr) -> Result<(), EtcdError> {
        let key = base64::engine::general_purpose::STANDARD.encode("health");
        self.call(address, "/v3/kv/range", json!({ "key": key }))
            .await
            .map(drop)
    }
}

/// uint64 fields are strings in proto3 JSON.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        other => other.as_u64(),
    }
}

fn members(answer: &Value) -> Result<Vec<Member>, EtcdError> {
    let list = answer
        .get("members")
        .and_then(Value::as_array)
        .ok_or_else(|| EtcdError::Decode("no members in the answer".into()))?;
    let strings = |m: &Value, key: &str| -> Vec<String> {
        m.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    list.iter()
        .map(|m| {
            let peer_urls = strings(m, "peerURLs");
            let address = peer_urls.first().and_then(|u| url_host(u));
            Ok(Member {
                id: m
                    .get("ID")
                    .and_then(as_u64)
                    .ok_or_else(|| EtcdError::Decode("member without ID".into()))?,
                hostname: m
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                address,
                peer_urls,
                client_urls: strings(m, "clientURLs"),
                is_learner: m.get("isLearner").and_then(Value::as_bool) == Some(true),
            })
        })
        .collect()
}

/// The host of `https://127.0.0.1:2380`.
fn url_host(url: &str) -> Option<IpAddr> {
    let rest = url.split("://").nth(1)?;
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_matches(['[', ']']).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_list_answer_is_read_with_its_learners_and_unstarted_members() {
        let answer = json!({
            "header": { "member_id": "11" },
            "members": [
                { "ID": "10276657743932975437", "name": "cp-1", "peerURLs": ["https://127.0.1.11:2380"], "clientURLs": ["https://127.0.1.11:2379"] },
                { "ID": "42", "peerURLs": ["https://127.0.1.12:2380"], "isLearner": true }
            ]
        });
        let list = members(&answer).unwrap();
        assert_eq!(list[0].id, 10276657743932975437);
        assert_eq!(list[0].hostname, "cp-1");
        assert_eq!(list[0].address, Some("127.0.1.11".parse().unwrap()));
        assert!(!list[0].is_learner);
        assert_eq!(list[1].hostname, "");
        assert!(list[1].is_learner && list[1].client_urls.is_empty());
    }
}

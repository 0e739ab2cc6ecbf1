//! The admin HTTP API and the `castle-lab talos` command, as a test harness would use them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use castle::talos::client::NodeState;
use castle_lab::talos::admin;
use castle_lab::talos::sample::SampleCluster;
use common::{fleet, ip, options, wait_for, wait_state};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One HTTP/1.1 request; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn the_admin_api_adds_faults_and_removes_nodes() {
    let fleet = fleet();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stopping = fleet.clone();
    tokio::spawn(admin::run(listener, fleet.clone(), async move {
        stopping.stopped().await
    }));
    let node = ip("127.0.1.51");
    let credentials = SampleCluster::generate("admin", ip("127.0.1.50"))
        .unwrap()
        .credentials()
        .unwrap();

    let (status, body) = http(
        addr,
        "POST",
        "/nodes",
        Some(r#"{"address": "127.0.1.51", "talos_version": "v1.11.3"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _) = http(addr, "POST", "/nodes", Some(r#"{"address": "127.0.1.51"}"#))
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _) = http(
        addr,
        "POST",
        "/nodes",
        Some(r#"{"address": "127.0.1.52", "talos_version": "v0.9.0"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 400);

    let (status, body) = http(addr, "GET", "/nodes", None).await.unwrap();
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes[0]["address"], "127.0.1.51");
    assert_eq!(nodes[0]["state"], "maintenance");
    assert_eq!(nodes[0]["talos_version"], "v1.11.3");
    wait_state(node, &credentials, NodeState::Maintenance).await;

    let (status, body) = http(
        addr,
        "POST",
        "/nodes/127.0.1.51/faults",
        Some(r#"{"kind": "teleport"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = http(
        addr,
        "POST",
        "/nodes/127.0.1.51/faults",
        Some(r#"{"kind": "foreign_cluster"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 204);
    wait_state(node, &credentials, NodeState::ForeignCluster).await;
    let (_, body) = http(addr, "GET", "/nodes/127.0.1.51", None).await.unwrap();
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["state"], "running");
    assert!(summary["cluster_id"]
        .as_str()
        .unwrap()
        .starts_with("foreign-"));

    let (status, _) = http(
        addr,
        "POST",
        "/nodes/127.0.1.51/faults",
        Some(r#"{"kind": "lose_etcd_member"}"#),
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "the ghost has no etcd member in its own list");
    let (status, _) = http(addr, "DELETE", "/nodes/127.0.1.51/faults", None)
        .await
        .unwrap();
    assert_eq!(status, 204);

    let (status, _) = http(addr, "DELETE", "/nodes/127.0.1.51", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let state = castle::talos::client::probe(node, &credentials, &options()).await;
    assert!(matches!(state, NodeState::Unreachable { .. }), "{state:?}");
    let (status, _) = http(addr, "DELETE", "/nodes/127.0.1.51", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    fleet.shutdown();
}

#[tokio::test]
async fn castle_lab_talos_serves_its_nodes_until_sigterm() {
    let admin: SocketAddr = "127.0.1.60:7000".parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_castle-lab"))
        .args([
            "talos",
            "--nodes",
            "127.0.1.61,127.0.1.62",
            "--admin",
            "127.0.1.60:7000",
            "--time-scale",
            "0.2",
        ])
        .spawn()
        .unwrap();
    let body = wait_for("the admin API", Duration::from_secs(10), || async {
        http(admin, "GET", "/nodes", None)
            .await
            .ok()
            .map(|(_, b)| b)
    })
    .await;
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 2, "{body}");
    let credentials = SampleCluster::generate("cli", ip("127.0.1.60"))
        .unwrap()
        .credentials()
        .unwrap();
    wait_state(ip("127.0.1.62"), &credentials, NodeState::Maintenance).await;

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_for("castle-lab to exit", Duration::from_secs(10), || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status:?}");
}

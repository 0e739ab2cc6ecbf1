//! The real `/usr/bin/kubectl` against the emulated Kubernetes API behind the VIP, with the
//! kubeconfig the emulated Talos node hands out.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use castle::talos::client::ApplyMode;
use castle_lab::talos::sample::SampleCluster;
use common::{fleet, ip, wait_configured, wait_for, wait_maintenance};

const KUBECTL: &str = "/usr/bin/kubectl";

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("castle-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs kubectl with its own HOME (discovery cache) and returns (success, stdout + stderr).
/// It blocks: tests using it run on a multi-threaded runtime so that the emulator keeps serving.
fn kubectl(home: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(KUBECTL)
        .env("HOME", home)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--request-timeout=5s")
        .args(args)
        .output()
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_nodes_shows_every_node_ready_through_the_vip() {
    if !Path::new(KUBECTL).exists() {
        panic!("{KUBECTL} is required by this test");
    }
    let fleet = fleet();
    let cp = ip("127.0.2.11");
    let worker = ip("127.0.2.12");
    let cluster = SampleCluster::generate("lab-kube", ip("127.0.2.10")).unwrap();
    let credentials = cluster.credentials().unwrap();
    for (address, controlplane, name) in [(cp, true, "cp-1"), (worker, false, "worker-1")] {
        fleet.add_node(address, None).unwrap();
        let client = wait_maintenance(address).await;
        let config = cluster.config(controlplane, name);
        client
            .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
            .await
            .unwrap();
    }
    let client = wait_configured(cp, &credentials).await;
    // No Kubernetes API before etcd is bootstrapped.
    assert!(tokio::net::TcpStream::connect("127.0.2.10:6443")
        .await
        .is_err());
    wait_for("bootstrap", Duration::from_secs(10), || async {
        client.bootstrap().await.ok()
    })
    .await;
    wait_configured(worker, &credentials).await;

    let dir = scratch_dir("kubectl");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, client.kubeconfig().await.unwrap()).unwrap();

    // kubectl prints a Table: both nodes, Ready, with roles and the kubelet version.
    let output = wait_for(
        "both nodes Ready in kubectl",
        Duration::from_secs(30),
        || {
            let (home, kubeconfig) = (dir.clone(), kubeconfig.clone());
            async move {
                let (ok, text) = tokio::task::spawn_blocking(move || {
                    kubectl(&home, &kubeconfig, &["get", "nodes"])
                })
                .await
                .unwrap();
                (ok && text.lines().filter(|l| l.contains(" Ready ")).count() == 2).then_some(text)
            }
        },
    )
    .await;
    let lines: Vec<&str> = output.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{output}"
    );
    let cp_row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("cp-1"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (cp_row[1], cp_row[2], cp_row[4]),
        ("Ready", "control-plane", "v1.32.3"),
        "{output}"
    );
    let worker_row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("worker-1"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        (worker_row[1], worker_row[2]),
        ("Ready", "<none>"),
        "{output}"
    );

    // -o json: kubectl re-wraps the NodeList as a `List` of Nodes, as with a real server.
    let (ok, json) = kubectl(&dir, &kubeconfig, &["get", "nodes", "-o", "json"]);
    assert!(ok, "{json}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["items"][0]["kind"], "Node", "{json}");
    assert_eq!(
        list["items"][0]["status"]["nodeInfo"]["kubeletVersion"],
        "v1.32.3"
    );
    let addresses = &list["items"][0]["status"]["addresses"];
    assert_eq!(addresses[0]["type"], "InternalIP");

    // Deleting a node removes it; a second delete is NotFound.
    let (ok, text) = kubectl(&dir, &kubeconfig, &["delete", "node", "worker-1"]);
    assert!(ok, "{text}");
    let (ok, text) = kubectl(&dir, &kubeconfig, &["get", "node", "worker-1"]);
    assert!(!ok && text.contains("NotFound"), "{text}");

    // The control plane's own address answers too (its IP is in the server certificate).
    let direct = dir.join("kubeconfig-direct");
    let text = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace("127.0.2.10", "127.0.2.11");
    std::fs::write(&direct, text).unwrap();
    let (ok, text) = kubectl(&dir, &direct, &["get", "nodes"]);
    assert!(ok && text.contains("cp-1"), "{text}");

    // A client certificate of another CA is 401 Unauthorized.
    let other = SampleCluster::generate("other", ip("127.0.2.10")).unwrap();
    let (cert, key) = other
        .k8s_ca
        .issue(
            "intruder",
            &["system:masters"],
            &[],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut foreign: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(&kubeconfig).unwrap()).unwrap();
    foreign["users"][0]["user"]["client-certificate-data"] = b64(&cert).into();
    foreign["users"][0]["user"]["client-key-data"] = b64(&key).into();
    let foreign_path = dir.join("kubeconfig-foreign");
    std::fs::write(&foreign_path, serde_yaml::to_string(&foreign).unwrap()).unwrap();
    let (ok, text) = kubectl(&dir, &foreign_path, &["get", "nodes"]);
    assert!(!ok && text.contains("Unauthorized"), "{text}");

    fleet.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

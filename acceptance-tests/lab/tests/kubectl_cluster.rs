//! The real `/usr/bin/kubectl` against a bootstrapped lab cluster: what a user of a Talos
//! cluster sees (system pods, namespaces, services, the API servers' endpoints, cluster-info)
//! and the node operations of day 2 (cordon, uncordon, drain).

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use castle::kubernetes::drain::{DrainError, DrainOptions};
use castle::kubernetes::{KubeAccess, KubeClient};
use castle::talos::client::ApplyMode;
use castle_lab::kubernetes::WorkloadSpec;
use castle_lab::talos::sample::SampleCluster;
use castle_lab::talos::Fleet;
use common::{fleet, ip, wait_configured, wait_for, wait_maintenance};

const KUBECTL: &str = "/usr/bin/kubectl";

/// A scratch HOME (kubectl's discovery cache) and the cluster's kubeconfig.
struct Kubectl {
    home: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl; (success, stdout + stderr). Blocking: call from spawn_blocking or a
    /// multi-threaded runtime.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(KUBECTL)
            .env("HOME", &self.home)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
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

    /// Runs kubectl until `check` accepts its output.
    async fn until(&self, what: &str, args: &[&str], check: impl Fn(&str) -> bool) -> String {
        wait_for(what, Duration::from_secs(30), || async {
            let (ok, text) = self.run(args);
            (ok && check(&text)).then_some(text)
        })
        .await
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// Configures `nodes` (address, control plane, hostname) as one cluster behind `vip`,
/// bootstraps the first and returns kubectl with the cluster's kubeconfig.
async fn cluster(
    fleet: &Fleet,
    name: &str,
    vip: IpAddr,
    nodes: &[(IpAddr, bool, &str)],
) -> Kubectl {
    patched_cluster(fleet, name, vip, nodes, |c| c).await
}

/// [`cluster`] with each config passed through `patch` first.
async fn patched_cluster(
    fleet: &Fleet,
    name: &str,
    vip: IpAddr,
    nodes: &[(IpAddr, bool, &str)],
    patch: impl Fn(String) -> String,
) -> Kubectl {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is required by this test"
    );
    let cluster = SampleCluster::generate(name, vip).unwrap();
    let credentials = cluster.credentials().unwrap();
    for (address, controlplane, hostname) in nodes {
        fleet.add_node(*address, None).unwrap();
        let client = wait_maintenance(*address).await;
        client
            .apply_configuration(
                patch(cluster.config(*controlplane, hostname)).as_bytes(),
                ApplyMode::Auto,
                false,
            )
            .await
            .unwrap();
    }
    let first = wait_configured(nodes[0].0, &credentials).await;
    wait_for("bootstrap", Duration::from_secs(10), || async {
        first.bootstrap().await.ok()
    })
    .await;
    for (address, _, _) in nodes {
        wait_configured(*address, &credentials).await;
    }
    let home = std::env::temp_dir().join(format!("castle-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let kubeconfig = home.join("kubeconfig");
    std::fs::write(&kubeconfig, first.kubeconfig().await.unwrap()).unwrap();
    Kubectl { home, kubeconfig }
}

/// Rows of kubectl's table output whose first column starts with `prefix` (after NAMESPACE with -A).
fn rows<'a>(text: &'a str, column: usize, prefix: &str) -> Vec<Vec<&'a str>> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.get(column).is_some_and(|c| c.starts_with(prefix)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_system_pods_namespaces_services_and_api_server_endpoints() {
    let fleet = fleet();
    let vip = ip("127.0.3.10");
    let nodes = [
        (ip("127.0.3.11"), true, "cp-1"),
        (ip("127.0.3.12"), true, "cp-2"),
        (ip("127.0.3.13"), true, "cp-3"),
        (ip("127.0.3.14"), false, "worker-1"),
    ];
    let k = cluster(&fleet, "lab-system", vip, &nodes).await;

    // Every static pod per control plane, kube-proxy and flannel per node, two CoreDNS: Running.
    let pods = k
        .until("the system pods to run", &["get", "pods", "-A"], |t| {
            rows(t, 1, "")
                .iter()
                .filter(|r| r[3] == "Running" && r[2] == "1/1")
                .count()
                == 3 * 3 + 2 * 4 + 2
        })
        .await;
    assert_eq!(
        pods.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    for component in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        for cp in ["cp-1", "cp-2", "cp-3"] {
            let name = format!("{component}-{cp}");
            assert_eq!(rows(&pods, 1, &name).len(), 1, "{name} in\n{pods}");
        }
    }
    assert_eq!(rows(&pods, 1, "kube-proxy-").len(), 4, "{pods}");
    assert_eq!(rows(&pods, 1, "kube-flannel-").len(), 4, "{pods}");
    assert_eq!(rows(&pods, 1, "coredns-").len(), 2, "{pods}");
    assert!(rows(&pods, 0, "kube-system").len() == 19, "{pods}");

    let (ok, ns) = k.run(&["get", "ns"]);
    assert!(ok, "{ns}");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(rows(&ns, 0, name)[0][1], "Active", "{ns}");
    }

    let (ok, svc) = k.run(&["get", "svc", "-A"]);
    assert!(ok, "{svc}");
    let kubernetes = &rows(&svc, 1, "kubernetes")[0];
    assert_eq!(
        (kubernetes[0], kubernetes[3], kubernetes[5]),
        ("default", "10.96.0.1", "443/TCP"),
        "{svc}"
    );
    let dns = &rows(&svc, 1, "kube-dns")[0];
    assert_eq!(
        (dns[0], dns[3], dns[5]),
        ("kube-system", "10.96.0.10", "53/UDP,53/TCP,9153/TCP"),
        "{svc}"
    );

    // Each API server adds its address once it runs (on a healthy etcd member).
    k.until(
        "the three API servers in the kubernetes endpoints",
        &["get", "endpoints", "kubernetes"],
        |t| rows(t, 0, "kubernetes")[0][1] == "127.0.3.11:6443,127.0.3.12:6443,127.0.3.13:6443",
    )
    .await;
    let (ok, slice) = k.run(&[
        "get",
        "endpointslices",
        "kubernetes",
        "-o",
        "jsonpath={.endpoints[*].addresses[0]}",
    ]);
    assert!(ok && slice == "127.0.3.11 127.0.3.12 127.0.3.13", "{slice}");

    let (ok, info) = k.run(&["cluster-info"]);
    assert!(ok, "{info}");
    assert!(
        info.contains("Kubernetes control plane is running at https://127.0.3.10:6443"),
        "{info}"
    );
    assert!(info.contains("CoreDNS is running at https://127.0.3.10:6443/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy"), "{info}");

    // Labels and taints from the machine config: control planes carry the role label and taint
    // and are excluded from external load balancers; the worker carries neither.
    let (ok, labels) = k.run(&[
        "get",
        "node",
        "cp-1",
        "-o",
        "jsonpath={.metadata.labels}{\"\\n\"}{.spec.taints}",
    ]);
    assert!(ok, "{labels}");
    assert!(
        labels.contains("node.kubernetes.io/exclude-from-external-load-balancers"),
        "{labels}"
    );
    assert!(
        labels.contains("\"node-role.kubernetes.io/control-plane\",\"effect\":\"NoSchedule\"")
            || labels.contains(
                "\"effect\":\"NoSchedule\",\"key\":\"node-role.kubernetes.io/control-plane\""
            ),
        "{labels}"
    );
    let (ok, labels) = k.run(&[
        "get",
        "node",
        "worker-1",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        ok && !labels.contains("control-plane") && !labels.contains("exclude-from"),
        "{labels}"
    );

    // cp-3 goes off: its API server's address leaves the endpoints once its lease expired; the
    // Node stays Ready for the node-monitor grace period, then turns NotReady (Unknown).
    fleet.power_off(ip("127.0.3.13")).unwrap();
    let (ok, nodes_now) = k.run(&["get", "nodes"]);
    assert!(
        ok && rows(&nodes_now, 0, "cp-3")[0][1] == "Ready",
        "right after power-off\n{nodes_now}"
    );
    k.until(
        "cp-3 to leave the kubernetes endpoints",
        &["get", "endpoints", "kubernetes"],
        |t| rows(t, 0, "kubernetes")[0][1] == "127.0.3.11:6443,127.0.3.12:6443",
    )
    .await;
    k.until("cp-3 to turn NotReady", &["get", "nodes"], |t| {
        rows(t, 0, "cp-3")[0][1] == "NotReady"
    })
    .await;
    // Its pods stay (static and DaemonSet pods tolerate an unreachable node) but are not ready.
    let pods = k
        .until(
            "cp-3's pods to be not ready",
            &["get", "pods", "-n", "kube-system", "-o", "wide"],
            |t| {
                rows(t, 0, "kube-apiserver-cp-3")
                    .first()
                    .is_some_and(|r| r[1] == "0/1")
            },
        )
        .await;
    assert_eq!(rows(&pods, 0, "kube-apiserver-cp-1")[0][1], "1/1", "{pods}");

    fleet.shutdown();
}

/// The admin API's workload placement, as the Python harness calls it.
fn place(fleet: &Fleet, address: IpAddr, spec: serde_json::Value) {
    let spec: WorkloadSpec = serde_json::from_value(spec).unwrap();
    fleet.place_workload(address, &spec).unwrap();
}

/// castle's access to the API from the kubeconfig kubectl uses.
fn access(kubeconfig: &Path) -> KubeAccess {
    let config: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(kubeconfig).unwrap()).unwrap();
    let b64 = |v: &serde_yaml::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    KubeAccess {
        server: config["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
            .into(),
        ca_pem: b64(&config["clusters"][0]["cluster"]["certificate-authority-data"]),
        cert_pem: b64(&config["users"][0]["user"]["client-certificate-data"]),
        key_pem: b64(&config["users"][0]["user"]["client-key-data"]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_waits_for_disruption_budgets_and_castle_drain_names_the_blocking_pod() {
    let fleet = fleet();
    let vip = ip("127.0.4.10");
    let nodes = [
        (ip("127.0.4.11"), true, "cp-1"),
        (ip("127.0.4.12"), false, "worker-1"),
        (ip("127.0.4.13"), false, "worker-2"),
    ];
    let k = cluster(&fleet, "lab-drain", vip, &nodes).await;
    k.until("every node Ready", &["get", "nodes"], |t| {
        t.lines().filter(|l| l.contains(" Ready ")).count() == 3
    })
    .await;
    // web: one replica that its budget keeps, with a ReadWriteOnce volume; cache: an emptyDir;
    // api: two replicas of which the budget lets one go at a time.
    let cp = ip("127.0.4.11");
    place(
        &fleet,
        cp,
        serde_json::json!({ "name": "web", "node": "worker-1", "min_available": 1, "volume": true }),
    );
    place(
        &fleet,
        cp,
        serde_json::json!({ "name": "cache", "node": "worker-1", "empty_dir": true }),
    );
    place(
        &fleet,
        cp,
        serde_json::json!({ "name": "api", "node": "worker-2", "replicas": 2, "min_available": 1 }),
    );
    let (ok, text) = k.run(&["get", "volumeattachments"]);
    assert!(
        ok && rows(&text, 0, "csi-")
            .first()
            .is_some_and(|r| r[3] == "worker-1" && r[4] == "true"),
        "{text}"
    );
    let (ok, text) = k.run(&["get", "pdb"]);
    assert!(
        ok && rows(&text, 0, "api")[0][3] == "1" && rows(&text, 0, "web")[0][3] == "0",
        "{text}"
    );

    let (ok, text) = k.run(&["cordon", "worker-1"]);
    assert!(ok && text.contains("node/worker-1 cordoned"), "{text}");
    let (ok, text) = k.run(&["get", "nodes"]);
    assert!(
        ok && rows(&text, 0, "worker-1")[0][1] == "Ready,SchedulingDisabled",
        "{text}"
    );
    let (ok, text) = k.run(&["uncordon", "worker-1"]);
    assert!(ok && text.contains("node/worker-1 uncordoned"), "{text}");
    let (ok, text) = k.run(&["get", "nodes"]);
    assert!(ok && rows(&text, 0, "worker-1")[0][1] == "Ready", "{text}");

    // Draining worker-2: the first api pod goes, the second waits for its budget until the
    // replacement runs on worker-1, then goes too.
    let (ok, text) = k.run(&[
        "drain",
        "worker-2",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=30s",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains("Warning: ignoring DaemonSet-managed Pods: kube-system/kube-flannel-"),
        "{text}"
    );
    assert!(text.contains("(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."), "{text}");
    assert!(text.contains("node/worker-2 drained"), "{text}");
    let (ok, pods) = k.run(&["get", "pods", "-o", "wide"]);
    assert!(
        ok && rows(&pods, 0, "api-").iter().all(|r| r[6] == "worker-1"),
        "{pods}"
    );

    // Draining worker-1, where nothing can take web: kubectl retries until its timeout.
    let (ok, text) = k.run(&[
        "drain",
        "worker-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=6s",
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("error when evicting pods/\"web-"), "{text}");
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{text}"
    );
    let (ok, pods) = k.run(&["get", "pods"]);
    assert!(
        ok && rows(&pods, 0, "cache-").iter().all(|r| r[2] == "Pending"),
        "the cache pod was evicted and waits for a node\n{pods}"
    );

    // castle's drain does the same and names the pod whose budget blocks.
    let client = KubeClient::new(&access(&k.kubeconfig)).unwrap();
    let options = DrainOptions {
        timeout: Duration::from_secs(2),
        budget_retry: Duration::from_millis(300),
        poll: Duration::from_millis(100),
        ..DrainOptions::default()
    };
    match client.drain("worker-1", &options).await {
        Err(DrainError::Blocked { pod, message, .. }) => {
            assert!(
                pod.starts_with("default/web-") || pod.starts_with("default/api-"),
                "{pod}"
            );
            assert!(message.contains("The disruption budget"), "{message}");
        }
        other => panic!("expected a blocked drain, got {other:?}"),
    }
    // A node without budgets drains: its DaemonSet pods stay, the rest goes.
    let drained = client.drain("cp-1", &options).await.unwrap();
    assert!(
        drained
            .ignored
            .iter()
            .any(|p| p.starts_with("kube-system/kube-proxy-")),
        "{drained:?}"
    );
    assert!(
        !drained.ignored.iter().any(|p| p.contains("kube-apiserver")),
        "{drained:?}"
    );

    fleet.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cni_none_cluster_stays_not_ready_and_its_inline_and_extra_manifests_appear() {
    let fleet = fleet();
    let vip = ip("127.0.5.10");
    let nodes = [(ip("127.0.5.11"), true, "cp-1")];
    // An extra manifest on a web server of the LAN, which wants a token header.
    let served = tokio::net::TcpListener::bind("127.0.5.20:0").await.unwrap();
    let url = format!("http://{}/extra.yaml", served.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/extra.yaml",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            if headers.get("x-token").and_then(|v| v.to_str().ok()) != Some("lab") {
                return (axum::http::StatusCode::FORBIDDEN, String::new());
            }
            let body = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: extra-system\n";
            (axum::http::StatusCode::OK, body.to_string())
        }),
    );
    tokio::spawn(async move { axum::serve(served, app).await });
    let k = patched_cluster(&fleet, "lab-cni", vip, &nodes, |config| {
        let mut docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&config)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let main = docs.iter_mut().find(|d| d.get("cluster").is_some()).unwrap();
        let patch: serde_yaml::Value = serde_yaml::from_str(&format!(
            "network: {{ cni: {{ name: none }} }}\ninlineManifests:\n  - name: flux\n    contents: |\n      apiVersion: v1\n      kind: Namespace\n      metadata:\n        name: flux-system\n\
             extraManifests: [\"{url}\"]\nextraManifestHeaders: {{ X-Token: lab }}\n"
        ))
        .unwrap();
        let cluster = main.get_mut("cluster").unwrap().as_mapping_mut().unwrap();
        for (key, value) in patch.as_mapping().unwrap() {
            match (cluster.get_mut(key), value) {
                (Some(serde_yaml::Value::Mapping(existing)), serde_yaml::Value::Mapping(v)) => {
                    for (k2, v2) in v {
                        existing.insert(k2.clone(), v2.clone());
                    }
                }
                _ => {
                    cluster.insert(key.clone(), value.clone());
                }
            }
        }
        docs.iter().map(|d| serde_yaml::to_string(d).unwrap()).collect::<Vec<_>>().join("---\n")
    })
    .await;
    let ns = k
        .until(
            "the manifest's namespace",
            &["get", "ns", "flux-system"],
            |t| t.contains("flux-system"),
        )
        .await;
    assert!(rows(&ns, 0, "flux-system")[0][1] == "Active", "{ns}");
    k.until(
        "the extra manifest's namespace",
        &["get", "ns", "extra-system"],
        |t| t.contains("extra-system"),
    )
    .await;
    // The kubelet registers, but without a CNI the node never turns Ready, and no flannel runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, nodes) = k.run(&["get", "nodes"]);
    assert!(ok && rows(&nodes, 0, "cp-1")[0][1] == "NotReady", "{nodes}");
    let (ok, pods) = k.run(&["get", "pods", "-A"]);
    assert!(ok && rows(&pods, 1, "kube-flannel-").is_empty(), "{pods}");
    assert!(
        rows(&pods, 1, "coredns-").iter().all(|r| r[3] == "Pending"),
        "{pods}"
    );

    fleet.shutdown();
}

//! The Kubernetes API of a cluster: served on each control plane whose etcd answers a quorum
//! read (kube-apiserver needs etcd) and on the VIP, which one of them holds; with the cluster's
//! Node objects; and the Kubeconfig call.
//!
//! Talos: `internal/app/machined/pkg/controllers/network/operator/vip.go` (v1.12.0): the VIP is
//! held by the control plane that leads an election on the cluster's etcd. The lab holds that
//! election on the control planes' real etcd (`etcd/vip.rs`): each running control plane with
//! a healthy etcd campaigns with a key on a 60 s lease (lab-scaled), and the VIP is served
//! while the node whose key is the oldest runs. Going down gracefully (a reboot, reset,
//! upgrade or shutdown) a holder resigns first and the next candidate takes the VIP at once;
//! a holder lost without a shutdown (VM stopped or deleted, the lab's `power off`) leaves its
//! key behind, so the VIP answers nothing until that lease expires, then another takes it.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use tokio::task::JoinHandle;
use tonic::Status;

use super::config::{MachineConfig, MachineType};
use super::{hostname, Fleet, Node, Phase, State};
use crate::kubernetes::{
    self, KubeCluster, KubeTimings, KubeTls, ManifestRule, NodeSource, NodeView, WorkloadSpec,
};
use crate::pki::Ca;

pub(crate) struct KubeServing {
    /// The cluster's objects, shared by every listener.
    api: Arc<KubeCluster>,
    tls: Arc<RwLock<Arc<KubeTls>>>,
    sans: Vec<IpAddr>,
    listeners: HashMap<IpAddr, JoinHandle<()>>,
}

impl KubeServing {
    /// Closes every listener.
    pub(crate) fn stop(&self) {
        self.listeners.values().for_each(JoinHandle::abort);
    }
}

impl State {
    /// Whether the Kubernetes API of `cluster_id` answers at `address` (a running member's
    /// address, or the VIP once a control plane holds it).
    pub(crate) fn kube_answers_at(&self, cluster_id: &str, address: IpAddr) -> bool {
        self.clusters
            .get(cluster_id)
            .and_then(|c| c.kube.as_ref())
            .is_some_and(|k| k.listeners.contains_key(&address))
    }
}

impl Fleet {
    /// Brings the Kubernetes API listeners of every cluster in line with the nodes: served on
    /// each running control plane with a healthy etcd, and on the VIP.
    pub(crate) fn reconcile_kube(&self, state: &mut State) {
        let mut ids: Vec<String> = state.clusters.keys().cloned().collect();
        ids.extend(
            state
                .nodes
                .values()
                .filter_map(|n| n.config.as_ref().map(|c| c.cluster_id.clone())),
        );
        ids.sort();
        ids.dedup();
        for id in ids {
            self.reconcile_cluster_kube(state, &id);
        }
    }

    fn reconcile_cluster_kube(&self, state: &mut State, cluster_id: &str) {
        let same_cluster = |n: &Node| {
            n.config
                .as_ref()
                .is_some_and(|c| c.cluster_id == cluster_id)
        };
        let control_planes: Vec<(IpAddr, Arc<MachineConfig>)> = state
            .nodes
            .iter()
            .filter(|(_, n)| same_cluster(n))
            .filter_map(|(a, n)| n.config.clone().map(|c| (*a, c)))
            .filter(|(_, c)| c.machine_type == MachineType::Controlplane)
            .collect();
        let serving: Vec<IpAddr> = control_planes
            .iter()
            // A kube-apiserver that exits at start serves nothing (config::apiserver_refusal).
            .filter(|(_, c)| c.apiserver_refusal.is_none())
            .map(|(a, _)| *a)
            .filter(|a| {
                state
                    .nodes
                    .get(a)
                    .is_some_and(|n| n.etcd.healthy && matches!(n.phase, Phase::Running { .. }))
            })
            .collect();
        let vip = control_planes.iter().find_map(|(_, c)| c.vip);
        // The VIP is announced by the node whose own etcd says it leads the election; it keeps
        // it while it leads.
        let leads = |a: &IpAddr| {
            state
                .nodes
                .get(a)
                .is_some_and(|n| n.etcd.vip_leader && matches!(n.phase, Phase::Running { .. }))
        };
        let leading: Vec<IpAddr> = control_planes
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| leads(a))
            .collect();
        let cluster = state.clusters.entry(cluster_id.to_string()).or_default();
        let holder = match cluster.vip_holder {
            Some(h) if leading.contains(&h) => Some(h),
            _ => leading.first().copied(),
        };
        cluster.vip_holder = vip.and(holder);
        let mut wanted = serving.clone();
        if let (Some(vip), Some(_)) = (vip, cluster.vip_holder) {
            wanted.push(vip);
        }
        // Listeners of addresses no longer wanted close first: the API leaves with its nodes,
        // even when no control plane of the cluster is left.
        if let Some(kube) = cluster.kube.as_mut() {
            kube.listeners.retain(|addr, task| {
                let keep = wanted.contains(addr) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        let ca = control_planes
            .iter()
            .find_map(|(_, c)| Some((c.k8s_ca_crt.clone()?, c.k8s_ca_key.clone()?)));
        let Some((ca_crt, ca_key)) = ca else {
            // No control plane of this cluster is left: its API servers, and the VIP with
            // them, leave with their nodes (a new cluster on the same VIP must get it).
            if let Some(kube) = cluster.kube.take() {
                kube.stop();
            }
            return;
        };
        let mut sans: Vec<IpAddr> = control_planes.iter().map(|(a, _)| *a).chain(vip).collect();
        sans.sort();
        sans.dedup();
        // (Re-)issue the server certificate when the set of control planes changed.
        if !matches!(&cluster.kube, Some(k) if k.sans == sans) {
            let Ok(tls) = KubeTls::new(&ca_crt, &ca_key, &sans) else {
                return;
            };
            match &mut cluster.kube {
                Some(k) => {
                    if let Ok(mut slot) = k.tls.write() {
                        *slot = Arc::new(tls);
                    }
                    k.sans = sans;
                }
                None => {
                    let kubelet_version = control_planes
                        .first()
                        .map(|(_, c)| c.kubelet_version.clone())
                        .unwrap_or_default();
                    let source: Arc<dyn NodeSource> = Arc::new(ClusterNodes {
                        fleet: self.clone(),
                        cluster_id: cluster_id.to_string(),
                    });
                    let timings =
                        KubeTimings::scaled(self.inner.options.time_scale, &kubelet_version);
                    cluster.kube = Some(KubeServing {
                        api: KubeCluster::new(source, kubelet_version, timings),
                        tls: Arc::new(RwLock::new(Arc::new(tls))),
                        sans,
                        listeners: HashMap::new(),
                    })
                }
            }
        }
        let Some(kube) = cluster.kube.as_mut() else {
            return;
        };
        kube.listeners.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        // Talos applies the bootstrap, inline and extra manifests from the control planes, by
        // the rule of each one's release (see kubernetes::ManifestRule).
        for (address, config) in &control_planes {
            if !serving.contains(address) {
                continue;
            }
            let talos = state
                .nodes
                .get(address)
                .map(|n| n.talos_version.clone())
                .unwrap_or_default();
            let rule = ManifestRule::of_release(&talos);
            kube.api.apply_addons(
                &config.kube_addons,
                default_coredns_image(&talos),
                flannel_image(&talos),
                rule,
            );
            kube.api.fetch_extra_manifests(&config.kube_addons, rule);
        }
        for addr in wanted {
            if kube.listeners.contains_key(&addr) {
                continue;
            }
            let Ok(std_listener) =
                std::net::TcpListener::bind((addr, self.inner.options.kube_port))
            else {
                continue;
            };
            let _ = std_listener.set_nonblocking(true);
            let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                continue;
            };
            let router = kubernetes::router(kube.api.clone());
            let mut stop = self.inner.shutdown.subscribe();
            let task = tokio::spawn(kubernetes::run(
                listener,
                kube.tls.clone(),
                router,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
            kube.listeners.insert(addr, task);
        }
    }

    /// Places a workload (Deployment, optional budget and volume) in the Kubernetes of the
    /// cluster `address` belongs to, for day-2 tests.
    pub fn place_workload(&self, address: IpAddr, spec: &WorkloadSpec) -> Result<(), String> {
        let api = {
            let state = self.lock().map_err(|e| e.to_string())?;
            let cluster_id = state
                .nodes
                .get(&address)
                .and_then(|n| n.config.as_ref())
                .map(|c| c.cluster_id.clone())
                .ok_or_else(|| format!("{address} is not a configured node"))?;
            state
                .clusters
                .get(&cluster_id)
                .and_then(|c| c.kube.as_ref())
                .map(|k| k.api.clone())
                .ok_or_else(|| format!("the cluster of {address} has no Kubernetes API yet"))?
        };
        api.place_workload(spec)
    }

    /// The Kubeconfig call: an admin kubeconfig signed by the cluster's Kubernetes CA, as the
    /// `.tar.gz` the real stream carries.
    pub(crate) fn kubeconfig(&self, address: IpAddr) -> Result<Vec<u8>, Status> {
        let config = self.lock_api()?.config_of(address)?;
        if config.machine_type != MachineType::Controlplane {
            return Err(Status::failed_precondition(
                "kubeconfig is only available on control plane nodes",
            ));
        }
        let (Some(crt), Some(key)) = (config.k8s_ca_crt.as_deref(), config.k8s_ca_key.as_deref())
        else {
            return Err(Status::failed_precondition(
                "cluster.ca is missing from the configuration",
            ));
        };
        admin_kubeconfig_archive(&config.cluster_name, &config.endpoint, crt, key)
            .map_err(|e| Status::internal(format!("kubeconfig: {e}")))
    }
}

/// The nodes of one cluster as the Kubernetes API shows them.
struct ClusterNodes {
    fleet: Fleet,
    cluster_id: String,
}

impl ClusterNodes {
    /// The control planes whose kube-apiserver runs: running, with a healthy etcd (the same
    /// rule as the listeners).
    fn api_servers_in(&self, state: &State) -> Vec<IpAddr> {
        state
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.config.as_ref().is_some_and(|c| {
                    c.cluster_id == self.cluster_id && c.machine_type == MachineType::Controlplane
                })
            })
            .filter(|(_, n)| n.etcd.healthy && matches!(n.phase, Phase::Running { .. }))
            .map(|(a, _)| *a)
            .collect()
    }

    fn views(&self, state: &State) -> Vec<NodeView> {
        let ready_after = self.fleet.scaled(
            self.fleet.inner.options.settle_delay + self.fleet.inner.options.kube_ready_delay,
        );
        let deleted = state.clusters.get(&self.cluster_id).map(|c| &c.deleted);
        let mut views: Vec<NodeView> = state
            .nodes
            .iter()
            .filter_map(|(address, node)| {
                let config = node
                    .config
                    .as_ref()
                    .filter(|c| c.cluster_id == self.cluster_id)?;
                let Phase::Running { since, wall } = node.phase else {
                    return None;
                };
                // kubelet registers once the node has settled.
                if !self.fleet.settled(node) {
                    return None;
                }
                let name = hostname(config, *address);
                if deleted.and_then(|d| d.get(&name)) == Some(&wall) {
                    return None;
                }
                Some(NodeView {
                    name,
                    internal_ip: *address,
                    control_plane: config.machine_type == MachineType::Controlplane,
                    ready: since.elapsed() >= ready_after,
                    created: wall,
                    kubelet_version: config.kubelet_version.clone(),
                    static_pods: config.static_pods.clone(),
                    os_image: format!("Talos ({})", node.talos_version),
                })
            })
            .collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        views
    }
}

/// The CoreDNS image a Talos release renders when the config names none.
// Talos: pkg/machinery/constants/constants.go CoreDNSImage, DefaultCoreDNSVersion (v1.10.0..v1.13.0).
fn default_coredns_image(talos_version: &str) -> &'static str {
    match minor_version(talos_version) {
        ..=10 => "registry.k8s.io/coredns/coredns:v1.12.1",
        11 => "registry.k8s.io/coredns/coredns:v1.12.2",
        12 => "registry.k8s.io/coredns/coredns:v1.13.2",
        _ => "registry.k8s.io/coredns/coredns:v1.14.2",
    }
}

/// The flannel image a Talos release renders (the config cannot name another).
// Talos: pkg/images/list.go, pkg/machinery/constants/constants.go FlannelVersion (v1.10.0..v1.13.0).
fn flannel_image(talos_version: &str) -> &'static str {
    match minor_version(talos_version) {
        ..=10 => "ghcr.io/siderolabs/flannel:v0.26.7",
        11 => "ghcr.io/siderolabs/flannel:v0.27.2",
        12 => "ghcr.io/siderolabs/flannel:v0.27.4",
        _ => "ghcr.io/siderolabs/flannel:v0.28.4",
    }
}

/// `13` of `v1.13.0`.
fn minor_version(talos_version: &str) -> u32 {
    talos_version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

impl NodeSource for ClusterNodes {
    /// The control planes whose kube-apiserver runs: running, with a healthy etcd (the same
    /// rule as the listeners above).
    fn api_servers(&self) -> Vec<IpAddr> {
        let Ok(state) = self.fleet.lock() else {
            return Vec::new();
        };
        self.api_servers_in(&state)
    }

    /// The kube-apiserver behind the VIP (its holder), else the first that runs.
    fn api_server_version(&self) -> Option<String> {
        let state = self.fleet.lock().ok()?;
        let holder = state.clusters.get(&self.cluster_id)?.vip_holder;
        let serving = self.api_servers_in(&state);
        let address = holder
            .filter(|h| serving.contains(h))
            .or_else(|| serving.first().copied())?;
        let config = state.nodes.get(&address)?.config.as_ref()?;
        let (_, image) = config
            .static_pods
            .iter()
            .find(|(name, _)| name == "kube-apiserver")?;
        image.rsplit_once(':').map(|(_, tag)| tag.to_string())
    }

    fn nodes(&self) -> Vec<NodeView> {
        self.fleet
            .lock()
            .map(|s| self.views(&s))
            .unwrap_or_default()
    }

    fn delete(&self, name: &str) -> Option<NodeView> {
        let mut state = self.fleet.lock().ok()?;
        let view = self.views(&state).into_iter().find(|v| v.name == name)?;
        state
            .clusters
            .entry(self.cluster_id.clone())
            .or_default()
            .deleted
            .insert(name.to_string(), view.created);
        Some(view)
    }
}

/// The .tar.gz holding the admin kubeconfig (one file named `kubeconfig`).
fn admin_kubeconfig_archive(
    cluster_name: &str,
    endpoint: &str,
    ca_crt: &str,
    ca_key: &str,
) -> std::result::Result<Vec<u8>, Box<dyn std::error::Error>> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let ca = Ca::from_pem(ca_crt, ca_key)?;
    let (cert, key) = ca.issue(
        "admin",
        &["system:masters"],
        &[],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )?;
    let name = if cluster_name.is_empty() {
        "talos"
    } else {
        cluster_name
    };
    let context = format!("admin@{name}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": name, "cluster": { "server": endpoint, "certificate-authority-data": b64(ca_crt) } }],
        "users": [{ "name": context, "user": { "client-certificate-data": b64(&cert), "client-key-data": b64(&key) } }],
        "contexts": [{ "name": context, "context": { "cluster": name, "namespace": "default", "user": context } }],
        "current-context": context,
    });
    let yaml = serde_yaml::to_string(&kubeconfig)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(yaml.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "kubeconfig", yaml.as_bytes())?;
        tar.finish()?;
    }
    gz.flush()?;
    Ok(gz.finish()?)
}

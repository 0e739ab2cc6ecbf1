//! One cluster's Kubernetes objects and the controllers that keep them in line with the nodes.
//!
//! The objects live in a [`Store`] shared by every listener of the cluster (VIP and control
//! planes). The controllers do not run in the background: [`KubeCluster::sync`] runs them on each
//! request against the clock, which gives the same answers a real control plane would have
//! reached by then (grace periods and leases are deadlines, not timers).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::discovery::{self, Resource};
use super::{NodeSource, NodeView};

/// A stored object: API group, kind, namespace (empty for cluster-wide kinds) and name.
pub(crate) type ObjectKey = (String, String, String, String);

/// The control plane's durations in lab time: a real second is [`LAB_SECOND`] at time scale 1
/// (the lab's boots and reboots are about that much shorter than real ones), times the scale.
#[derive(Debug, Clone, Copy)]
pub struct KubeTimings {
    /// How long a Node keeps its last Ready status after its kubelet stops posting.
    /// Kubernetes: pkg/controller/nodelifecycle/config/v1alpha1/defaults.go
    /// (`--node-monitor-grace-period`, 40 s; 50 s from v1.32, kubernetes/kubernetes#127352).
    pub node_monitor_grace: Duration,
    /// `tolerationSeconds` of the `node.kubernetes.io/unreachable` / `not-ready` NoExecute
    /// tolerations every pod gets. Kubernetes:
    /// plugin/pkg/admission/defaulttolerationseconds/admission.go (300 s).
    pub unreachable_toleration: Duration,
    /// TTL of an API server's lease in `/masterleases/`. Kubernetes:
    /// pkg/controlplane/reconcilers/lease.go with `--endpoint-reconciler-type=lease`, TTL 15 s
    /// (pkg/controlplane/instance.go `DefaultEndpointReconcilerTTL`).
    pub lease_ttl: Duration,
    /// How long a scheduled pod takes to be Ready (image pull, start, readiness probe).
    pub container_start: Duration,
    /// How long an emulated container takes to exit on SIGTERM (a deleted pod on a live node
    /// is gone after this or its grace period, whichever comes first).
    pub container_stop: Duration,
}

/// One real second of the control plane's clocks in the lab (at time scale 1).
pub const LAB_SECOND: Duration = Duration::from_millis(100);

impl KubeTimings {
    /// Real durations in lab time times `scale`, for a cluster whose kubelets run `kubelet_version`.
    pub fn scaled(scale: f64, kubelet_version: &str) -> Self {
        let minor: u32 = kubelet_version
            .trim_start_matches('v')
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(32);
        let grace = if minor >= 32 { 50 } else { 40 };
        let s = |secs: f64| LAB_SECOND.mul_f64(secs * scale.max(0.0));
        KubeTimings {
            node_monitor_grace: s(grace as f64),
            unreachable_toleration: s(300.0),
            lease_ttl: s(15.0),
            container_start: s(3.0),
            container_stop: s(1.0),
        }
    }
}

/// What the machine config says about the cluster's network add-ons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// `cluster.network.cni.name`: `flannel` (default), `custom` or `none`.
    pub cni: String,
    /// `cluster.proxy.disabled` is not set.
    pub kube_proxy: bool,
    /// Control planes take ordinary pods (`cluster.allowSchedulingOnControlPlanes`).
    pub schedule_on_control_planes: bool,
}

impl Default for KubeSettings {
    fn default() -> Self {
        KubeSettings {
            cni: "flannel".into(),
            kube_proxy: true,
            schedule_on_control_planes: false,
        }
    }
}

/// The Kubernetes add-ons one machine config asks for.
#[derive(Debug, Clone, Default)]
pub struct KubeAddons {
    /// Network add-ons and scheduling on control planes.
    pub settings: KubeSettings,
    /// The documents of `cluster.inlineManifests[].contents`, in order.
    pub manifests: Vec<Value>,
    /// `cluster.proxy.image`: the image of the kube-proxy DaemonSet Talos renders.
    pub proxy_image: Option<String>,
    /// `cluster.coreDNS.image`: the CoreDNS image Talos renders (its release's default when unset).
    pub coredns_image: Option<String>,
    /// `cluster.extraManifests`: URLs Talos downloads and applies the same way.
    pub extra_manifests: Vec<String>,
    /// `cluster.extraManifestHeaders`, sent with each download.
    pub extra_headers: Vec<(String, String)>,
}

impl KubeAddons {
    /// Reads `cluster.network.cni.name`, `cluster.proxy.disabled`,
    /// `cluster.allowSchedulingOnControlPlanes`, `cluster.inlineManifests`,
    /// `cluster.extraManifests` and `cluster.extraManifestHeaders` of a v1alpha1
    /// document (Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_types.go).
    pub fn from_config(main: &Value) -> Self {
        let settings = KubeSettings {
            cni: main
                .pointer("/cluster/network/cni/name")
                .and_then(Value::as_str)
                .unwrap_or("flannel")
                .to_string(),
            kube_proxy: main
                .pointer("/cluster/proxy/disabled")
                .and_then(Value::as_bool)
                != Some(true),
            schedule_on_control_planes: main
                .pointer("/cluster/allowSchedulingOnControlPlanes")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        let mut manifests = Vec::new();
        for inline in main
            .pointer("/cluster/inlineManifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(text) = inline.get("contents").and_then(Value::as_str) else {
                continue;
            };
            for de in serde_yaml::Deserializer::from_str(text) {
                if let Ok(doc) = <Value as serde::Deserialize>::deserialize(de) {
                    if doc.is_object() {
                        manifests.push(doc);
                    }
                }
            }
        }
        let image = |pointer: &str| {
            main.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let extra_manifests = main
            .pointer("/cluster/extraManifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect();
        let extra_headers = main
            .pointer("/cluster/extraManifestHeaders")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        KubeAddons {
            settings,
            manifests,
            proxy_image: image("/cluster/proxy/image"),
            coredns_image: image("/cluster/coreDNS/image"),
            extra_manifests,
            extra_headers,
        }
    }
}

/// A workload the lab's admin API places on a node, for day-2 tests.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct WorkloadSpec {
    /// Namespace (created if missing).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Deployment name; pods are `NAME-HASH-XXXXX`.
    pub name: String,
    /// Node of the first pods.
    pub node: String,
    /// Replicas (1 unless given).
    #[serde(default = "one")]
    pub replicas: u32,
    /// A PodDisruptionBudget `NAME` with this `minAvailable`.
    #[serde(default)]
    pub min_available: Option<u32>,
    /// A ReadWriteOnce volume (PVC `NAME-data`), attached to the pod's node.
    #[serde(default)]
    pub volume: bool,
    /// An emptyDir volume (kubectl drain needs `--delete-emptydir-data`).
    #[serde(default)]
    pub empty_dir: bool,
    /// `tolerationSeconds` of the pods' own `node.kubernetes.io/unreachable` and `not-ready`
    /// NoExecute tolerations (as a stateful workload sets them to ride out a node's reboot);
    /// without it they get the admission plugin's default, 300 s.
    #[serde(default)]
    pub toleration_seconds: Option<u64>,
}

fn default_namespace() -> String {
    "default".into()
}

fn one() -> u32 {
    1
}

/// Who owns a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A static pod: the API holds its mirror pod, owned by the Node.
    Node,
    /// A DaemonSet pod.
    DaemonSet(String),
    /// A Deployment's pod, owned by its ReplicaSet (`DEPLOYMENT-HASH`).
    ReplicaSet(String),
}

/// A pod being deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deletion {
    /// `metadata.deletionTimestamp` (when the grace period ends).
    pub(crate) timestamp: SystemTime,
    /// `metadata.deletionGracePeriodSeconds`.
    pub(crate) grace: u64,
    /// When the kubelet may remove it (its containers stopped).
    pub(crate) gone_at: Instant,
}

/// Who disrupts a pod, as its `DisruptionTarget` condition says (Kubernetes:
/// staging/src/k8s.io/api/core/v1/types.go `DisruptionTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disruption {
    /// A NoExecute taint the pod no longer tolerates (pkg/controller/tainteviction/
    /// taint_eviction.go `addConditionAndDeletePod`).
    TaintManager,
    /// An Eviction (pkg/registry/core/pod/storage/eviction.go).
    EvictionApi,
}

impl Disruption {
    /// The condition's reason and message.
    pub(crate) fn reason(self) -> (&'static str, &'static str) {
        match self {
            Disruption::TaintManager => (
                "DeletionByTaintManager",
                "Taint manager: deleting due to NoExecute taint",
            ),
            Disruption::EvictionApi => ("EvictionByEvictionAPI", "Eviction API: evicting"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Pod {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) node: Option<String>,
    pub(crate) owner: Owner,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) created: SystemTime,
    pub(crate) containers: Vec<(String, String)>,
    pub(crate) host_network: bool,
    pub(crate) ip: Option<String>,
    pub(crate) empty_dir: bool,
    pub(crate) claim: Option<String>,
    pub(crate) priority_class: Option<&'static str>,
    pub(crate) deletion: Option<Deletion>,
    /// Why the control plane is removing it (the `DisruptionTarget` condition).
    pub(crate) disruption: Option<Disruption>,
    /// When its containers are up (Ready), once scheduled.
    pub(crate) ready_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) struct Workload {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) replicas: u32,
    pub(crate) hash: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) containers: Vec<(String, String)>,
    pub(crate) tolerates_control_plane: bool,
    pub(crate) priority_class: Option<&'static str>,
    pub(crate) empty_dir: bool,
    pub(crate) claim: Option<String>,
    pub(crate) preferred_node: Option<String>,
    /// The pods' own unreachable/not-ready `tolerationSeconds` (None: the default, 300 s).
    pub(crate) toleration_seconds: Option<u64>,
    pub(crate) created: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct DaemonSet {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) containers: Vec<(String, String)>,
    pub(crate) created: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) selector: BTreeMap<String, String>,
    pub(crate) min_available: u32,
    pub(crate) created: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct Attachment {
    pub(crate) name: String,
    pub(crate) claim: String,
    pub(crate) node: String,
    pub(crate) created: SystemTime,
}

#[derive(Debug, Clone)]
pub(crate) struct NodeRecord {
    pub(crate) view: NodeView,
    /// Last status the kubelet posted.
    pub(crate) heartbeat: Instant,
    pub(crate) heartbeat_wall: SystemTime,
    pub(crate) unschedulable: bool,
    /// Labels set through the API on top of the kubelet's.
    pub(crate) extra_labels: BTreeMap<String, String>,
    /// Since when the kubelet posts NotReady (kept while it stops posting), for the
    /// `not-ready` NoExecute taint.
    pub(crate) not_ready_since: Option<(Instant, SystemTime)>,
    /// Pod CIDR index (10.244.N.0/24).
    pub(crate) index: u8,
}

/// The Ready condition as the node lifecycle controller leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    Ready,
    NotReady,
    /// The kubelet stopped posting for longer than the grace period.
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    pub(crate) created: SystemTime,
    pub(crate) uid: String,
}

pub(crate) struct Store {
    pub(crate) nodes: BTreeMap<String, NodeRecord>,
    pub(crate) namespaces: BTreeMap<String, Namespace>,
    pub(crate) pods: BTreeMap<(String, String), Pod>,
    pub(crate) workloads: BTreeMap<(String, String), Workload>,
    pub(crate) daemonsets: BTreeMap<String, DaemonSet>,
    pub(crate) budgets: BTreeMap<(String, String), Budget>,
    pub(crate) attachments: BTreeMap<String, Attachment>,
    /// API server address -> lease expiry.
    pub(crate) leases: BTreeMap<IpAddr, Instant>,
    /// Objects of kinds the controllers do not model (ConfigMaps, Secrets, RBAC, CRDs and their
    /// custom resources, ...), as the manifests declared them (see [`super::manifests`]).
    pub(crate) objects: BTreeMap<ObjectKey, Value>,
    pub(crate) settings: KubeSettings,
    /// Talos applied its bootstrap manifests (kube-proxy, CoreDNS) once already.
    pub(crate) bootstrapped: bool,
    pub(crate) created: SystemTime,
    pub(crate) revision: u64,
    next_ip: u16,
}

/// One cluster's Kubernetes: its node source, its objects and its clock.
pub struct KubeCluster {
    pub(crate) source: Arc<dyn NodeSource>,
    pub(crate) kubernetes_version: String,
    pub(crate) timings: KubeTimings,
    store: Mutex<Store>,
    /// `cluster.extraManifests` URLs downloaded or being downloaded (see [`super::extra`]).
    pub(crate) extra_fetched: Mutex<BTreeSet<String>>,
}

const POD_SUFFIX: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random name suffix as Kubernetes' name generator makes them
/// (staging/src/k8s.io/apimachinery/pkg/util/rand/rand.go alphabet).
pub(crate) fn suffix(len: usize) -> String {
    (0..len)
        .map(|_| POD_SUFFIX[rand::random::<usize>() % POD_SUFFIX.len()] as char)
        .collect()
}

pub(crate) fn uid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl KubeCluster {
    /// A cluster's Kubernetes as Talos bootstraps it: the four namespaces, CoreDNS, kube-proxy
    /// and flannel (Talos: internal/app/machined/pkg/controllers/k8s/internal/k8stemplates/ coredns.go, kube-proxy.go, flannel.go).
    pub fn new(
        source: Arc<dyn NodeSource>,
        kubernetes_version: String,
        timings: KubeTimings,
    ) -> Arc<Self> {
        let now = SystemTime::now();
        let mut store = Store {
            nodes: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            pods: BTreeMap::new(),
            workloads: BTreeMap::new(),
            daemonsets: BTreeMap::new(),
            budgets: BTreeMap::new(),
            attachments: BTreeMap::new(),
            leases: BTreeMap::new(),
            objects: BTreeMap::new(),
            settings: KubeSettings::default(),
            bootstrapped: false,
            created: now,
            revision: 1,
            next_ip: 0,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store.namespaces.insert(
                ns.into(),
                Namespace {
                    created: now,
                    uid: uid(),
                },
            );
        }
        let version = kubernetes_version.clone();
        store.workloads.insert(
            ("kube-system".into(), "coredns".into()),
            Workload {
                namespace: "kube-system".into(),
                name: "coredns".into(),
                replicas: 2,
                hash: suffix(10),
                labels: labels(&[("k8s-app", "kube-dns")]),
                containers: vec![(
                    "coredns".into(),
                    "registry.k8s.io/coredns/coredns:v1.12.0".into(),
                )],
                // Talos's CoreDNS tolerates the control-plane taint
                // (Talos: internal/app/machined/pkg/controllers/k8s/internal/k8stemplates/coredns.go).
                tolerates_control_plane: true,
                priority_class: Some("system-cluster-critical"),
                empty_dir: false,
                claim: None,
                preferred_node: None,
                toleration_seconds: None,
                created: now,
            },
        );
        store.daemonsets.insert(
            "kube-proxy".into(),
            DaemonSet {
                name: "kube-proxy".into(),
                labels: labels(&[("k8s-app", "kube-proxy")]),
                containers: vec![(
                    "kube-proxy".into(),
                    format!("registry.k8s.io/kube-proxy:{version}"),
                )],
                created: now,
            },
        );
        store.daemonsets.insert(
            "kube-flannel".into(),
            DaemonSet {
                name: "kube-flannel".into(),
                labels: labels(&[("app", "flannel"), ("k8s-app", "flannel")]),
                containers: vec![(
                    "kube-flannel".into(),
                    "ghcr.io/siderolabs/flannel:v0.26.1".into(),
                )],
                created: now,
            },
        );
        Arc::new(KubeCluster {
            source,
            kubernetes_version,
            timings,
            store: Mutex::new(store),
            extra_fetched: Mutex::new(BTreeSet::new()),
        })
    }

    /// The store after the controllers caught up with the nodes and the clock.
    pub(crate) fn sync(&self) -> MutexGuard<'_, Store> {
        let views = self.source.nodes();
        let api_servers = self.source.api_servers();
        let mut store = self.lock();
        store.sync(&self.timings, &views, &api_servers, Instant::now());
        store
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The network add-ons the machine config asks for; kube-proxy's and flannel's DaemonSets
    /// follow them.
    pub fn configure(&self, settings: KubeSettings) {
        let mut store = self.lock();
        if !settings.kube_proxy {
            store.daemonsets.remove("kube-proxy");
        }
        if settings.cni != "flannel" {
            store.daemonsets.remove("kube-flannel");
        }
        store.settings = settings;
    }

    /// Places a Deployment (and its optional budget and volume) with its first pods on a node.
    pub fn place_workload(&self, spec: &WorkloadSpec) -> Result<(), String> {
        let views = self.source.nodes();
        let api_servers = self.source.api_servers();
        let mut store = self.lock();
        store.sync(&self.timings, &views, &api_servers, Instant::now());
        if !store.nodes.contains_key(&spec.node) {
            return Err(format!("nodes \"{}\" not found", spec.node));
        }
        let now = SystemTime::now();
        store
            .namespaces
            .entry(spec.namespace.clone())
            .or_insert_with(|| Namespace {
                created: now,
                uid: uid(),
            });
        let app = labels(&[("app", &spec.name)]);
        if let Some(min) = spec.min_available {
            store.budgets.insert(
                (spec.namespace.clone(), spec.name.clone()),
                Budget {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    selector: app.clone(),
                    min_available: min,
                    created: now,
                },
            );
        }
        store.workloads.insert(
            (spec.namespace.clone(), spec.name.clone()),
            Workload {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
                replicas: spec.replicas,
                hash: suffix(10),
                labels: app,
                containers: vec![(spec.name.clone(), "registry.k8s.io/pause:3.10".into())],
                tolerates_control_plane: false,
                priority_class: None,
                empty_dir: spec.empty_dir,
                claim: spec.volume.then(|| format!("{}-data", spec.name)),
                preferred_node: Some(spec.node.clone()),
                toleration_seconds: spec.toleration_seconds,
                created: now,
            },
        );
        store.revision += 1;
        store.sync(&self.timings, &views, &api_servers, Instant::now());
        Ok(())
    }
}

impl Store {
    /// Sets the image of a container of a DaemonSet or Deployment; `false` when there is no
    /// such workload or container. A Deployment whose template changed gets a new ReplicaSet
    /// (new pod-template-hash) and its old pods are deleted (Kubernetes:
    /// pkg/controller/deployment/sync.go); a DaemonSet's pods are replaced by the sync.
    pub(crate) fn set_image(
        &mut self,
        kind: &str,
        namespace: &str,
        name: &str,
        container: &str,
        image: &str,
    ) -> bool {
        let containers = match kind {
            "DaemonSet" => match self.daemonsets.get_mut(name) {
                Some(ds) => &mut ds.containers,
                None => return false,
            },
            _ => match self
                .workloads
                .get_mut(&(namespace.to_string(), name.to_string()))
            {
                Some(w) => &mut w.containers,
                None => return false,
            },
        };
        let Some(slot) = containers.iter_mut().find(|(n, _)| n == container) else {
            return false;
        };
        if slot.1 == image {
            return true;
        }
        slot.1 = image.to_string();
        self.revision += 1;
        if kind == "Deployment" {
            let key = (namespace.to_string(), name.to_string());
            if let Some(w) = self.workloads.get_mut(&key) {
                let old = Owner::ReplicaSet(format!("{}-{}", w.name, w.hash));
                w.hash = suffix(10);
                let now = SystemTime::now();
                for pod in self.pods.values_mut().filter(|p| p.owner == old) {
                    pod.deletion.get_or_insert(Deletion {
                        timestamp: now,
                        grace: 0,
                        gone_at: Instant::now(),
                    });
                }
            }
        }
        true
    }

    /// The Ready condition as the node lifecycle controller leaves it: a kubelet that has not
    /// posted for longer than `--node-monitor-grace-period` makes it Unknown ("Kubelet stopped
    /// posting node status."), and the node gets the `unreachable` NoExecute taint from which
    /// the taint eviction counts the pods' `tolerationSeconds`. Kubernetes:
    /// pkg/controller/nodelifecycle/node_lifecycle_controller.go (`tryUpdateNodeHealth`,
    /// `processTaintBaseEviction`), pkg/controller/tainteviction/taint_eviction.go.
    pub(crate) fn readiness(
        &self,
        node: &NodeRecord,
        timings: &KubeTimings,
        now: Instant,
    ) -> Readiness {
        if now.duration_since(node.heartbeat) > timings.node_monitor_grace {
            return Readiness::Unknown;
        }
        if node.view.ready && self.network_ready() {
            Readiness::Ready
        } else {
            Readiness::NotReady
        }
    }

    /// A kubelet reports the node Ready only once the container network is configured: a CNI
    /// (flannel, or any DaemonSet the manifests bring when `cni: none`/`custom`) and a service
    /// proxy (kube-proxy, or a CNI from the manifests that replaces it).
    /// Kubernetes: pkg/kubelet/kubelet_node_status.go (`NetworkReady` in the Ready condition).
    pub(crate) fn network_ready(&self) -> bool {
        let manifest_cni = self
            .objects
            .keys()
            .any(|(group, kind, _, _)| group == "apps" && kind == "DaemonSet");
        let cni = self.settings.cni == "flannel" || manifest_cni;
        let proxy = self.settings.kube_proxy || manifest_cni;
        cni && proxy
    }

    /// Every resource the API serves now (the CustomResourceDefinitions stored add theirs).
    pub(crate) fn served(&self) -> Vec<Resource> {
        let crds: Vec<Value> = self
            .objects
            .iter()
            .filter(|((group, kind, _, _), _)| {
                group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition"
            })
            .map(|(_, o)| o.clone())
            .collect();
        discovery::served(&crds)
    }

    /// Runs the controllers up to `now`.
    pub(crate) fn sync(
        &mut self,
        timings: &KubeTimings,
        views: &[NodeView],
        api_servers: &[IpAddr],
        now: Instant,
    ) {
        self.sync_nodes(views, now);
        self.sync_leases(timings, api_servers, now);
        self.sync_static_and_daemon_pods(now + timings.container_start);
        self.evict_from_tainted_nodes(timings, now);
        self.finish_deletions(views, now);
        self.sync_deployments(timings, now);
        self.sync_attachments();
    }

    /// Kubelets (re-)register and post status. Kubernetes: pkg/kubelet/kubelet_node_status.go.
    fn sync_nodes(&mut self, views: &[NodeView], now: Instant) {
        let wall = SystemTime::now();
        let network = self.network_ready();
        for view in views {
            match self.nodes.get_mut(&view.name) {
                Some(record) => {
                    record.view = view.clone();
                    record.heartbeat = now;
                    record.heartbeat_wall = wall;
                    if view.ready && network {
                        record.not_ready_since = None;
                    } else {
                        record.not_ready_since.get_or_insert((now, wall));
                    }
                }
                None => {
                    let used: BTreeSet<u8> = self.nodes.values().map(|n| n.index).collect();
                    let index = (0..=255).find(|i| !used.contains(i)).unwrap_or(255);
                    self.nodes.insert(
                        view.name.clone(),
                        NodeRecord {
                            view: view.clone(),
                            heartbeat: now,
                            heartbeat_wall: wall,
                            unschedulable: false,
                            extra_labels: BTreeMap::new(),
                            not_ready_since: (!(view.ready && network)).then_some((now, wall)),
                            index,
                        },
                    );
                    self.revision += 1;
                }
            }
        }
    }

    /// Each running API server renews its lease; the `kubernetes` endpoints are the addresses
    /// whose lease has not expired. Kubernetes: pkg/controlplane/reconcilers/lease.go.
    fn sync_leases(&mut self, timings: &KubeTimings, api_servers: &[IpAddr], now: Instant) {
        for ip in api_servers {
            self.leases.insert(*ip, now + timings.lease_ttl);
        }
        let before = self.leases.len();
        self.leases.retain(|_, expiry| *expiry > now);
        if self.leases.len() != before {
            self.revision += 1;
        }
    }

    /// Mirror pods of the static pods on control planes, one pod per DaemonSet per node, and
    /// the pod garbage collector for pods of deleted nodes
    /// (Kubernetes: pkg/controller/daemon/daemon_controller.go, pkg/controller/podgc/gc_controller.go).
    fn sync_static_and_daemon_pods(&mut self, ready_at: Instant) {
        let before = self.pods.len();
        let nodes = &self.nodes;
        self.pods
            .retain(|_, pod| pod.node.as_ref().is_none_or(|n| nodes.contains_key(n)));
        // A static pod whose image changed in the config is restarted by its kubelet (a new
        // mirror pod, not Ready until the container is up); a DaemonSet pod whose template
        // changed is replaced (Kubernetes: pkg/kubelet/config, pkg/controller/daemon/update.go).
        let stale: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| {
                let Some(record) = p.node.as_ref().and_then(|n| nodes.get(n)) else {
                    return false;
                };
                match &p.owner {
                    Owner::Node => p.containers.first().is_some_and(|(name, image)| {
                        record
                            .view
                            .static_pods
                            .iter()
                            .any(|(n, i)| n == name && i != image)
                    }),
                    Owner::DaemonSet(ds) => self
                        .daemonsets
                        .get(ds)
                        .is_some_and(|d| d.containers != p.containers),
                    Owner::ReplicaSet(_) => false,
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &stale {
            self.pods.remove(key);
        }
        let mut wanted: Vec<Pod> = Vec::new();
        for record in self.nodes.values() {
            let node = &record.view.name;
            if record.view.control_plane {
                for (component, image) in &record.view.static_pods {
                    let component = component.as_str();
                    wanted.push(Pod {
                        namespace: "kube-system".into(),
                        name: format!("{component}-{node}"),
                        uid: String::new(),
                        node: Some(node.clone()),
                        owner: Owner::Node,
                        labels: labels(&[("k8s-app", component), ("tier", "control-plane")]),
                        created: record.view.created,
                        containers: vec![(component.into(), image.clone())],
                        host_network: true,
                        ip: Some(record.view.internal_ip.to_string()),
                        empty_dir: false,
                        claim: None,
                        priority_class: Some("system-node-critical"),
                        deletion: None,
                        disruption: None,
                        ready_at: Some(ready_at),
                    });
                }
            }
            for ds in self.daemonsets.values() {
                let has = self.pods.values().any(|p| {
                    p.node.as_deref() == Some(node.as_str())
                        && p.owner == Owner::DaemonSet(ds.name.clone())
                });
                if !has {
                    wanted.push(Pod {
                        namespace: "kube-system".into(),
                        name: format!("{}-{}", ds.name, suffix(5)),
                        uid: String::new(),
                        node: Some(node.clone()),
                        owner: Owner::DaemonSet(ds.name.clone()),
                        labels: ds.labels.clone(),
                        created: record.view.created,
                        containers: ds.containers.clone(),
                        host_network: true,
                        ip: Some(record.view.internal_ip.to_string()),
                        empty_dir: false,
                        claim: None,
                        priority_class: Some("system-node-critical"),
                        deletion: None,
                        disruption: None,
                        ready_at: Some(ready_at),
                    });
                }
            }
        }
        for mut pod in wanted {
            let key = (pod.namespace.clone(), pod.name.clone());
            if let std::collections::btree_map::Entry::Vacant(slot) = self.pods.entry(key) {
                pod.uid = uid();
                slot.insert(pod);
            }
        }
        if self.pods.len() != before || !stale.is_empty() {
            self.revision += 1;
        }
    }

    /// Since when the node carries a NoExecute taint of the node lifecycle controller:
    /// `node.kubernetes.io/not-ready` while its kubelet posts NotReady, `unreachable` once it
    /// stopped posting for the grace period (the two swap in place, and the taint eviction
    /// keeps counting from the first). Kubernetes: pkg/controller/nodelifecycle/
    /// node_lifecycle_controller.go (`doNoExecuteTaintingPass`), pkg/controller/tainteviction/
    /// taint_eviction.go (`processPodOnNode` keeps the earlier scheduled eviction).
    pub(crate) fn tainted_since(
        &self,
        record: &NodeRecord,
        timings: &KubeTimings,
        now: Instant,
    ) -> Option<Instant> {
        let not_ready = record.not_ready_since.map(|(t, _)| t);
        match self.readiness(record, timings, now) {
            Readiness::Ready => None,
            Readiness::NotReady => not_ready,
            Readiness::Unknown => {
                let unreachable = record.heartbeat + timings.node_monitor_grace;
                Some(not_ready.map_or(unreachable, |t| t.min(unreachable)))
            }
        }
    }

    /// Pods on a NotReady or unreachable node past their `tolerationSeconds` are deleted, with
    /// the `DisruptionTarget` condition `DeletionByTaintManager` (no `NodeLost` reason: that
    /// came from the node controller's own pod eviction, gone with `--enable-taint-manager`;
    /// the pod shows Terminating); those of DaemonSets and static pods tolerate it forever
    /// and stay. Kubernetes: pkg/controller/tainteviction/taint_eviction.go,
    /// pkg/controller/daemon/util/daemonset_util.go (DaemonSet tolerations).
    fn evict_from_tainted_nodes(&mut self, timings: &KubeTimings, now: Instant) {
        let mut doomed = Vec::new();
        for (key, pod) in &self.pods {
            let Owner::ReplicaSet(rs) = &pod.owner else {
                continue;
            };
            if pod.deletion.is_some() {
                continue;
            }
            let Some(record) = pod.node.as_ref().and_then(|n| self.nodes.get(n)) else {
                continue;
            };
            if let Some(since) = self.tainted_since(record, timings, now) {
                if now.duration_since(since) >= self.toleration(rs, timings) {
                    doomed.push(key.clone());
                }
            }
        }
        for key in doomed {
            if let Some(pod) = self.pods.get_mut(&key) {
                pod.disruption = Some(Disruption::TaintManager);
            }
            self.delete_pod(&key, None, timings, now);
        }
    }

    /// How long the pods of ReplicaSet `rs` tolerate an unreachable node: their own
    /// `tolerationSeconds`, else the default the admission plugin gives
    /// (plugin/pkg/admission/defaulttolerationseconds/admission.go), in lab time.
    pub(crate) fn toleration(&self, rs: &str, timings: &KubeTimings) -> Duration {
        self.workloads
            .values()
            .find(|w| format!("{}-{}", w.name, w.hash) == rs)
            .and_then(|w| w.toleration_seconds)
            .map_or(timings.unreachable_toleration, |secs| {
                timings.unreachable_toleration.mul_f64(secs as f64 / 300.0)
            })
    }

    /// Marks a pod deleted with its grace period (30 s by default); the kubelet removes it once
    /// its containers stopped. Kubernetes: pkg/registry/core/pod/strategy.go
    /// (`CheckGracefulDelete`), a grace period of 0 removes it at once.
    pub(crate) fn delete_pod(
        &mut self,
        key: &(String, String),
        grace: Option<u64>,
        timings: &KubeTimings,
        now: Instant,
    ) -> Option<Pod> {
        let pod = self.pods.get_mut(key)?;
        let grace = grace.unwrap_or(30);
        if grace == 0 || pod.node.is_none() {
            self.revision += 1;
            return self.pods.remove(key);
        }
        if pod.deletion.is_none() {
            let stop = timings.container_stop.min(Duration::from_secs(grace));
            pod.deletion = Some(Deletion {
                timestamp: SystemTime::now() + Duration::from_secs(grace),
                grace,
                gone_at: now + stop,
            });
            self.revision += 1;
        }
        self.pods.get(key).cloned()
    }

    /// A live kubelet removes its deleted pods once their containers stopped; a lost one
    /// cannot, so they stay Terminating. Kubernetes: pkg/kubelet/status/status_manager.go.
    fn finish_deletions(&mut self, views: &[NodeView], now: Instant) {
        let live: BTreeSet<&str> = views.iter().map(|v| v.name.as_str()).collect();
        let before = self.pods.len();
        self.pods.retain(|_, pod| match (&pod.deletion, &pod.node) {
            (Some(d), Some(node)) => !(live.contains(node.as_str()) && now >= d.gone_at),
            _ => true,
        });
        if self.pods.len() != before {
            self.revision += 1;
        }
    }

    /// Whether a new pod of `workload` may go to `record`: Ready, schedulable, taints tolerated.
    /// Kubernetes: pkg/scheduler/framework/plugins/nodeunschedulable, tainttoleration.
    fn fits(
        &self,
        workload: &Workload,
        record: &NodeRecord,
        timings: &KubeTimings,
        now: Instant,
    ) -> bool {
        self.readiness(record, timings, now) == Readiness::Ready
            && !record.unschedulable
            && (!record.view.control_plane
                || workload.tolerates_control_plane
                || self.settings.schedule_on_control_planes)
    }

    /// The ReplicaSet controller keeps `replicas` pods that are not being deleted; the scheduler
    /// places each on the workload's preferred node while it fits (the admin API's placement,
    /// a stand-in for node affinity), else on a fitting node with the fewest pods of the
    /// workload. Kubernetes: pkg/controller/replicaset/replica_set.go.
    fn sync_deployments(&mut self, timings: &KubeTimings, now: Instant) {
        let workloads: Vec<Workload> = self.workloads.values().cloned().collect();
        for workload in workloads {
            let rs = format!("{}-{}", workload.name, workload.hash);
            let owner = Owner::ReplicaSet(rs.clone());
            // Pending pods get a node once one fits.
            let pending: Vec<(String, String)> = self
                .pods
                .iter()
                .filter(|(_, p)| p.owner == owner && p.node.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for key in pending {
                if let Some(node) = self.schedule(&workload, timings, now) {
                    let ip = self.pod_ip(&node);
                    if let Some(pod) = self.pods.get_mut(&key) {
                        pod.node = Some(node);
                        pod.ip = ip;
                        pod.ready_at = Some(now + timings.container_start);
                        self.revision += 1;
                    }
                }
            }
            let active = self
                .pods
                .values()
                .filter(|p| p.owner == owner && p.deletion.is_none())
                .count() as u32;
            for _ in active..workload.replicas {
                let node = self.schedule(&workload, timings, now);
                let ip = node.as_ref().and_then(|n| self.pod_ip(n));
                let ready_at = node.as_ref().map(|_| now + timings.container_start);
                let mut pod_labels = workload.labels.clone();
                pod_labels.insert("pod-template-hash".into(), workload.hash.clone());
                let pod = Pod {
                    namespace: workload.namespace.clone(),
                    name: format!("{rs}-{}", suffix(5)),
                    uid: uid(),
                    node,
                    owner: owner.clone(),
                    labels: pod_labels,
                    created: SystemTime::now(),
                    containers: workload.containers.clone(),
                    host_network: false,
                    ip,
                    empty_dir: workload.empty_dir,
                    claim: workload.claim.clone(),
                    priority_class: workload.priority_class,
                    deletion: None,
                    disruption: None,
                    ready_at,
                };
                self.pods
                    .insert((pod.namespace.clone(), pod.name.clone()), pod);
                self.revision += 1;
            }
        }
    }

    fn schedule(&self, workload: &Workload, timings: &KubeTimings, now: Instant) -> Option<String> {
        let owner_prefix = format!("{}-{}-", workload.name, workload.hash);
        let count = |node: &str| {
            self.pods
                .values()
                .filter(|p| p.name.starts_with(&owner_prefix) && p.deletion.is_none())
                .filter(|p| p.node.as_deref() == Some(node))
                .count()
        };
        let fitting: Vec<&NodeRecord> = self
            .nodes
            .values()
            .filter(|r| self.fits(workload, r, timings, now))
            .collect();
        if let Some(preferred) = &workload.preferred_node {
            if fitting.iter().any(|r| &r.view.name == preferred) {
                return Some(preferred.clone());
            }
        }
        fitting
            .iter()
            .min_by_key(|r| (count(&r.view.name), r.view.name.clone()))
            .map(|r| r.view.name.clone())
    }

    fn pod_ip(&mut self, node: &str) -> Option<String> {
        let index = self.nodes.get(node)?.index;
        self.next_ip = self.next_ip.wrapping_add(1);
        Some(format!("10.244.{index}.{}", self.next_ip % 250 + 2))
    }

    /// The attach/detach controller: a ReadWriteOnce volume is attached to the node of the pod
    /// using it, once no other node holds it; detached when no pod on that node uses it.
    /// Kubernetes: pkg/controller/volume/attachdetach/attach_detach_controller.go.
    fn sync_attachments(&mut self) {
        let before = self.attachments.len();
        let pods = &self.pods;
        self.attachments.retain(|_, a| {
            pods.values().any(|p| {
                p.claim.as_deref() == Some(a.claim.as_str())
                    && p.node.as_deref() == Some(a.node.as_str())
            })
        });
        let wanted: Vec<(String, String)> = self
            .pods
            .values()
            .filter(|p| p.deletion.is_none())
            .filter_map(|p| Some((p.claim.clone()?, p.node.clone()?)))
            .collect();
        for (claim, node) in wanted {
            if self.attachments.values().any(|a| a.claim == claim) {
                continue;
            }
            let name = format!("csi-{}", suffix(20));
            self.attachments.insert(
                name.clone(),
                Attachment {
                    name,
                    claim,
                    node,
                    created: SystemTime::now(),
                },
            );
        }
        if self.attachments.len() != before {
            self.revision += 1;
        }
    }

    /// A pod is Running once its node is up and its volume attached to that node;
    /// `ContainerCreating` while another node holds its volume.
    pub(crate) fn volume_ready(&self, pod: &Pod) -> bool {
        match (&pod.claim, &pod.node) {
            (Some(claim), Some(node)) => self
                .attachments
                .values()
                .any(|a| &a.claim == claim && &a.node == node),
            _ => true,
        }
    }

    /// A pod's Ready condition: scheduled, volume attached, node not lost (the node lifecycle
    /// controller marks pods of a lost node not Ready: pkg/controller/nodelifecycle
    /// `MarkPodsNotReady`), not being deleted.
    pub(crate) fn pod_ready(&self, pod: &Pod, timings: &KubeTimings, now: Instant) -> bool {
        let Some(node) = pod.node.as_ref().and_then(|n| self.nodes.get(n)) else {
            return false;
        };
        pod.deletion.is_none()
            && pod.ready_at.is_some_and(|t| now >= t)
            && self.volume_ready(pod)
            && self.readiness(node, timings, now) != Readiness::Unknown
            && (pod.host_network || self.network_ready())
    }

    /// Deletes a Node; its pods go with the pod garbage collector on the next sync.
    pub(crate) fn delete_node(&mut self, name: &str) -> Option<NodeRecord> {
        let record = self.nodes.remove(name)?;
        self.revision += 1;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::render::View;

    /// Two workers whose kubelets post what the test sets.
    struct Kubelets(Mutex<Vec<NodeView>>);

    impl NodeSource for Kubelets {
        fn nodes(&self) -> Vec<NodeView> {
            self.0.lock().unwrap().clone()
        }
        fn delete(&self, _name: &str) -> Option<NodeView> {
            None
        }
    }

    fn worker(name: &str, index: u8) -> NodeView {
        NodeView {
            name: name.into(),
            internal_ip: IpAddr::from([127, 0, 9, index]),
            control_plane: false,
            ready: true,
            created: SystemTime::now(),
            kubelet_version: "v1.35.0".into(),
            static_pods: Vec::new(),
            os_image: "Talos (v1.12.0)".into(),
        }
    }

    #[test]
    fn pods_of_a_not_ready_node_are_evicted_after_their_toleration_by_the_taint_manager() {
        let kubelets = Arc::new(Kubelets(Mutex::new(vec![
            worker("w-1", 1),
            worker("w-2", 2),
        ])));
        let timings = KubeTimings::scaled(0.1, "v1.35.0");
        let cluster = KubeCluster::new(kubelets.clone(), "v1.35.0".into(), timings);
        let spec: WorkloadSpec =
            serde_json::from_value(serde_json::json!({ "name": "web", "node": "w-1" })).unwrap();
        cluster.place_workload(&spec).unwrap();
        let web_on = |store: &Store, node: &str| {
            store
                .pods
                .values()
                .filter(|p| p.name.starts_with("web-") && p.node.as_deref() == Some(node))
                .cloned()
                .collect::<Vec<_>>()
        };
        // w-1's kubelet keeps posting, but NotReady.
        kubelets.0.lock().unwrap()[0].ready = false;
        let t0 = Instant::now();
        let mut store = cluster.lock();
        let views = kubelets.nodes();
        store.sync(&timings, &views, &[], t0);
        let node = View {
            store: &store,
            timings: &timings,
            now: t0,
        }
        .node("w-1")
        .unwrap();
        let taints = node["spec"]["taints"].to_string();
        assert!(
            taints.contains(r#""effect":"NoExecute","key":"node.kubernetes.io/not-ready""#),
            "{taints}"
        );
        // Within the toleration (300 s) the pod stays.
        store.sync(
            &timings,
            &views,
            &[],
            t0 + timings.unreachable_toleration / 2,
        );
        assert!(web_on(&store, "w-1")[0].deletion.is_none());
        // Past it, the taint manager deletes it: Terminating with DeletionByTaintManager; the
        // ReplicaSet makes a new one on w-2.
        let late = t0 + timings.unreachable_toleration;
        store.sync(&timings, &views, &[], late);
        let evicted = web_on(&store, "w-1");
        assert!(evicted[0].deletion.is_some());
        let shown = View {
            store: &store,
            timings: &timings,
            now: late,
        }
        .pod(&evicted[0]);
        assert!(
            shown["metadata"]["deletionTimestamp"].is_string(),
            "{shown}"
        );
        let conditions = shown["status"]["conditions"].to_string();
        assert!(
            conditions.contains(r#""reason":"DeletionByTaintManager""#),
            "{conditions}"
        );
        assert!(
            shown["status"].get("reason").is_none(),
            "no NodeLost: {shown}"
        );
        assert_eq!(web_on(&store, "w-2").len(), 1);
        // The NotReady kubelet still runs: it removes the pod once its containers stopped.
        store.sync(&timings, &views, &[], late + timings.container_stop * 2);
        assert!(web_on(&store, "w-1").is_empty());
    }
}

//! The store's objects as the API server shows them: JSON objects, and the `Table` rows
//! kubectl prints (columns as kube-apiserver's printers define them:
//! Kubernetes: pkg/printers/internalversion/printers.go).

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::cluster::{KubeTimings, Owner, Pod, Readiness, Store};
use super::discovery::{self, Resource};

pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t: time::OffsetDateTime = t.into();
    t.replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Age the way kubectl shows it (`5s`, `3m`, `2h`, `4d`).
fn age(created: &str) -> String {
    let parsed =
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .map(SystemTime::from)
            .unwrap_or_else(|_| SystemTime::now());
    let secs = SystemTime::now()
        .duration_since(parsed)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn meta(name: &str, namespace: Option<&str>, uid: &str, created: SystemTime, rv: u64) -> Value {
    let mut m = json!({
        "name": name, "uid": uid, "resourceVersion": rv.to_string(),
        "creationTimestamp": rfc3339(created),
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn labels_json<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    Value::Object(
        labels
            .into_iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect::<Map<_, _>>(),
    )
}

/// Where the objects of one request come from.
pub(crate) struct View<'a> {
    pub(crate) store: &'a Store,
    pub(crate) timings: &'a KubeTimings,
    pub(crate) now: Instant,
}

impl View<'_> {
    /// Every object of `resource`, in `namespace` if given: those the controllers make, then the
    /// stored ones of its kind (a manifest's Deployment beside the cluster's own).
    pub(crate) fn objects(&self, resource: &Resource, namespace: Option<&str>) -> Vec<Value> {
        let mut all: Vec<Value> = if discovery::modelled(resource) {
            match resource.name.as_str() {
                "nodes" => self
                    .store
                    .nodes
                    .keys()
                    .filter_map(|n| self.node(n))
                    .collect(),
                "namespaces" => self.namespaces(),
                "pods" => self.store.pods.values().map(|p| self.pod(p)).collect(),
                "services" => self.services(),
                "endpoints" => self.endpoints(),
                "endpointslices" => self.endpoint_slices(),
                "daemonsets" => self.daemonsets(),
                "deployments" => self.deployments(),
                "poddisruptionbudgets" => self.budgets(),
                "volumeattachments" => self.attachments(),
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        for ((group, kind, ns, name), object) in &self.store.objects {
            if *group != resource.group || *kind != resource.kind {
                continue;
            }
            let taken = all.iter().any(|o| {
                o["metadata"]["name"] == name.as_str()
                    && o["metadata"]["namespace"].as_str().unwrap_or_default() == ns
            });
            if !taken {
                all.push(object.clone());
            }
        }
        all.retain(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns));
        all
    }

    fn rv(&self) -> u64 {
        self.store.revision
    }

    /// A Node: labels and taints as Talos's kubelet registers them, `spec.unschedulable` from
    /// cordon, the Ready condition the node lifecycle controller leaves.
    pub(crate) fn node(&self, name: &str) -> Option<Value> {
        let record = self.store.nodes.get(name)?;
        let view = &record.view;
        let mut labels = json!({
            "kubernetes.io/hostname": view.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": "amd64",
        });
        let mut taints = Vec::new();
        if view.control_plane {
            // Talos: internal/app/machined/pkg/controllers/k8s/node_label_spec.go and
            // node_taint_spec.go (control-plane role label and NoSchedule taint, and the
            // exclude-from-external-load-balancers label Talos puts on control planes).
            labels["node-role.kubernetes.io/control-plane"] = json!("");
            labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
            if !self.store.settings.schedule_on_control_planes {
                taints.push(
                    json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}),
                );
            }
        }
        for (k, v) in &record.extra_labels {
            labels[k] = json!(v);
        }
        let readiness = self.store.readiness(record, self.timings, self.now);
        // Kubernetes: pkg/controller/nodelifecycle/node_lifecycle_controller.go (taints for
        // unreachable / not-ready nodes) and cordon's taint (pkg/controller/nodelifecycle
        // `taintNodeByCondition`, node.kubernetes.io/unschedulable).
        match readiness {
            Readiness::Unknown => {
                taints
                    .push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}));
                taints.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": rfc3339(record.heartbeat_wall + self.timings.node_monitor_grace)}));
            }
            Readiness::NotReady => {
                taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}));
                if let Some((_, since)) = record.not_ready_since {
                    taints.push(json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": rfc3339(since)}));
                }
            }
            Readiness::Ready => {}
        }
        if record.unschedulable {
            taints.push(json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": rfc3339(SystemTime::now())}));
        }
        let (status, reason, message) = match readiness {
            Readiness::Ready => ("True", "KubeletReady", "kubelet is posting ready status"),
            Readiness::NotReady => (
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            ),
            Readiness::Unknown => ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status."),
        };
        let mut spec = json!({ "podCIDR": format!("10.244.{}.0/24", record.index), "podCIDRs": [format!("10.244.{}.0/24", record.index)] });
        if !taints.is_empty() {
            spec["taints"] = json!(taints);
        }
        if record.unschedulable {
            spec["unschedulable"] = json!(true);
        }
        let mut metadata = meta(
            &view.name,
            None,
            &format!("node-{}", view.name),
            view.created,
            self.rv(),
        );
        metadata["labels"] = labels;
        Some(json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": metadata,
            "spec": spec,
            "status": {
                "conditions": [{
                    "type": "Ready", "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": rfc3339(record.heartbeat_wall),
                    "lastTransitionTime": rfc3339(view.created),
                }],
                "addresses": [
                    { "type": "InternalIP", "address": view.internal_ip.to_string() },
                    { "type": "Hostname", "address": view.name },
                ],
                "nodeInfo": {
                    "kubeletVersion": view.kubelet_version,
                    "kubeProxyVersion": view.kubelet_version,
                    "osImage": view.os_image,
                    "kernelVersion": "6.12.0-talos",
                    "containerRuntimeVersion": "containerd://2.0.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }))
    }

    fn namespaces(&self) -> Vec<Value> {
        self.store
            .namespaces
            .iter()
            .map(|(name, ns)| {
                let mut m = meta(name, None, &ns.uid, ns.created, self.rv());
                m["labels"] = json!({ "kubernetes.io/metadata.name": name });
                json!({
                    "kind": "Namespace", "apiVersion": "v1", "metadata": m,
                    "spec": { "finalizers": ["kubernetes"] }, "status": { "phase": "Active" },
                })
            })
            .collect()
    }

    /// A Pod with the status its kubelet and the control plane leave it in.
    pub(crate) fn pod(&self, pod: &Pod) -> Value {
        let mut m = meta(
            &pod.name,
            Some(&pod.namespace),
            &pod.uid,
            pod.created,
            self.rv(),
        );
        m["labels"] = labels_json(&pod.labels);
        let owner = match &pod.owner {
            Owner::Node => pod.node.clone().map(|n| ("v1", "Node", n)),
            Owner::DaemonSet(n) => Some(("apps/v1", "DaemonSet", n.clone())),
            Owner::ReplicaSet(n) => Some(("apps/v1", "ReplicaSet", n.clone())),
        };
        if let Some((api, kind, name)) = owner {
            m["ownerReferences"] = json!([{ "apiVersion": api, "kind": kind, "name": name, "uid": format!("{}-{name}", kind.to_lowercase()), "controller": true }]);
        }
        if pod.owner == Owner::Node {
            // A mirror pod: kubectl drain skips it. Kubernetes: pkg/kubelet/types (ConfigMirrorAnnotationKey).
            m["annotations"] = json!({ "kubernetes.io/config.mirror": pod.uid, "kubernetes.io/config.source": "file" });
        }
        if let Some(d) = &pod.deletion {
            m["deletionTimestamp"] = json!(rfc3339(d.timestamp));
            m["deletionGracePeriodSeconds"] = json!(d.grace);
        }
        let mut volumes = Vec::new();
        if pod.empty_dir {
            volumes.push(json!({ "name": "scratch", "emptyDir": {} }));
        }
        if let Some(claim) = &pod.claim {
            volumes
                .push(json!({ "name": "data", "persistentVolumeClaim": { "claimName": claim } }));
        }
        let mut spec = json!({
            "containers": pod.containers.iter().map(|(n, i)| json!({"name": n, "image": i})).collect::<Vec<_>>(),
            "volumes": volumes,
            "terminationGracePeriodSeconds": 30,
            "hostNetwork": pod.host_network,
        });
        if let Some(node) = &pod.node {
            spec["nodeName"] = json!(node);
        }
        if let Some(pc) = pod.priority_class {
            spec["priorityClassName"] = json!(pc);
        }
        if let Owner::ReplicaSet(rs) = &pod.owner {
            // The NoExecute tolerations of the taints a lost node gets; their seconds (in real
            // time) are how long the pod stays bound to it. Kubernetes:
            // plugin/pkg/admission/defaulttolerationseconds/admission.go.
            let seconds = self
                .store
                .workloads
                .values()
                .find(|w| &format!("{}-{}", w.name, w.hash) == rs)
                .and_then(|w| w.toleration_seconds)
                .unwrap_or(300);
            spec["tolerations"] = json!(["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"]
                .iter()
                .map(|key| json!({ "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds }))
                .collect::<Vec<_>>());
        }
        let ready = self.store.pod_ready(pod, self.timings, self.now);
        let scheduled = pod.node.is_some();
        let started = scheduled && self.store.volume_ready(pod);
        let phase = if started { "Running" } else { "Pending" };
        let container_statuses: Vec<Value> = pod
            .containers
            .iter()
            .filter(|_| scheduled)
            .map(|(n, i)| {
                let state = if started {
                    json!({ "running": { "startedAt": rfc3339(pod.created) } })
                } else {
                    json!({ "waiting": { "reason": "ContainerCreating" } })
                };
                json!({ "name": n, "image": i, "ready": ready, "restartCount": 0, "started": started, "state": state })
            })
            .collect();
        let mut conditions = vec![
            json!({ "type": "PodScheduled", "status": if scheduled { "True" } else { "False" } }),
        ];
        if !scheduled {
            conditions[0]["reason"] = json!("Unschedulable");
            conditions[0]["message"] =
                json!("0/N nodes are available: no node is Ready and schedulable.");
        }
        conditions.push(json!({ "type": "Ready", "status": if ready { "True" } else { "False" } }));
        if let Some(disruption) = pod.disruption {
            let (reason, message) = disruption.reason();
            conditions.push(json!({ "type": "DisruptionTarget", "status": "True", "reason": reason, "message": message }));
        }
        let node_ip = pod
            .node
            .as_ref()
            .and_then(|n| self.store.nodes.get(n))
            .map(|r| r.view.internal_ip.to_string());
        let mut status = json!({ "phase": phase, "conditions": conditions, "containerStatuses": container_statuses, "qosClass": "BestEffort" });
        if let Some(ip) = node_ip {
            status["hostIP"] = json!(ip);
        }
        if let (Some(ip), true) = (&pod.ip, started) {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        json!({ "kind": "Pod", "apiVersion": "v1", "metadata": m, "spec": spec, "status": status })
    }

    /// `kubernetes` (default) and `kube-dns` (kube-system), as kube-apiserver and Talos create them
    /// (Kubernetes: pkg/controlplane/controller/kubernetesservice; Talos: k8stemplates/coredns.go).
    fn services(&self) -> Vec<Value> {
        let created = self.store.created;
        let mut kubernetes = meta(
            "kubernetes",
            Some("default"),
            "svc-kubernetes",
            created,
            self.rv(),
        );
        kubernetes["labels"] = json!({ "component": "apiserver", "provider": "kubernetes" });
        let mut dns = meta(
            "kube-dns",
            Some("kube-system"),
            "svc-kube-dns",
            created,
            self.rv(),
        );
        dns["labels"] = json!({ "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS" });
        vec![
            json!({
                "kind": "Service", "apiVersion": "v1", "metadata": kubernetes,
                "spec": { "type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                          "ports": [{ "name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443 }],
                          "sessionAffinity": "None" },
                "status": { "loadBalancer": {} },
            }),
            json!({
                "kind": "Service", "apiVersion": "v1", "metadata": dns,
                "spec": { "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                          "selector": { "k8s-app": "kube-dns" },
                          "ports": [
                              { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53 },
                              { "name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53 },
                              { "name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153 },
                          ],
                          "sessionAffinity": "None" },
                "status": { "loadBalancer": {} },
            }),
        ]
    }

    /// Addresses of the API servers whose lease is current.
    pub(crate) fn api_addresses(&self) -> Vec<IpAddr> {
        self.store.leases.keys().copied().collect()
    }

    fn dns_addresses(&self) -> Vec<(String, String)> {
        self.store
            .pods
            .values()
            .filter(|p| p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
            .filter(|p| self.store.pod_ready(p, self.timings, self.now))
            .filter_map(|p| Some((p.ip.clone()?, p.node.clone()?)))
            .collect()
    }

    fn endpoints(&self) -> Vec<Value> {
        let created = self.store.created;
        let api: Vec<Value> = self
            .api_addresses()
            .iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect();
        let mut kubernetes = json!({
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": meta("kubernetes", Some("default"), "ep-kubernetes", created, self.rv()),
            "subsets": [],
        });
        kubernetes["metadata"]["labels"] =
            json!({ "endpointslice.kubernetes.io/skip-mirror": "true" });
        if !api.is_empty() {
            kubernetes["subsets"] = json!([{ "addresses": api, "ports": [{ "name": "https", "port": 6443, "protocol": "TCP" }] }]);
        }
        let dns: Vec<Value> = self
            .dns_addresses()
            .iter()
            .map(|(ip, node)| json!({ "ip": ip, "nodeName": node }))
            .collect();
        let mut kube_dns = json!({
            "kind": "Endpoints", "apiVersion": "v1",
            "metadata": meta("kube-dns", Some("kube-system"), "ep-kube-dns", created, self.rv()),
            "subsets": [],
        });
        if !dns.is_empty() {
            kube_dns["subsets"] = json!([{ "addresses": dns, "ports": [
                { "name": "dns", "port": 53, "protocol": "UDP" },
                { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
                { "name": "metrics", "port": 9153, "protocol": "TCP" },
            ] }]);
        }
        vec![kubernetes, kube_dns]
    }

    /// The `kubernetes` EndpointSlice kube-apiserver writes next to its Endpoints
    /// (Kubernetes: pkg/controlplane/reconcilers/endpointsadapter.go).
    fn endpoint_slices(&self) -> Vec<Value> {
        let created = self.store.created;
        let endpoints: Vec<Value> = self
            .api_addresses()
            .iter()
            .map(|ip| json!({ "addresses": [ip.to_string()], "conditions": { "ready": true } }))
            .collect();
        let mut m = meta(
            "kubernetes",
            Some("default"),
            "eps-kubernetes",
            created,
            self.rv(),
        );
        m["labels"] = json!({ "kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" });
        let dns: Vec<Value> = self
            .dns_addresses()
            .iter()
            .map(|(ip, node)| json!({ "addresses": [ip], "nodeName": node, "conditions": { "ready": true } }))
            .collect();
        let mut dm = meta(
            "kube-dns-lab",
            Some("kube-system"),
            "eps-kube-dns",
            created,
            self.rv(),
        );
        dm["labels"] = json!({ "kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" });
        vec![
            json!({
                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": m,
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{ "name": "https", "port": 6443, "protocol": "TCP" }],
            }),
            json!({
                "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": dm,
                "addressType": "IPv4", "endpoints": dns,
                "ports": [{ "name": "dns", "port": 53, "protocol": "UDP" }, { "name": "dns-tcp", "port": 53, "protocol": "TCP" }],
            }),
        ]
    }

    fn daemonsets(&self) -> Vec<Value> {
        self.store
            .daemonsets
            .values()
            .map(|ds| {
                let pods: Vec<&Pod> = self
                    .store
                    .pods
                    .values()
                    .filter(|p| p.owner == Owner::DaemonSet(ds.name.clone()))
                    .collect();
                let ready = pods.iter().filter(|p| self.store.pod_ready(p, self.timings, self.now)).count();
                let mut m = meta(&ds.name, Some("kube-system"), &format!("daemonset-{}", ds.name), ds.created, self.rv());
                m["labels"] = labels_json(&ds.labels);
                json!({
                    "kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": m,
                    "spec": { "selector": { "matchLabels": labels_json(&ds.labels) },
                              "template": { "metadata": { "labels": labels_json(&ds.labels) },
                                            "spec": { "containers": containers_json(&ds.containers) } } },
                    "status": { "desiredNumberScheduled": pods.len(), "currentNumberScheduled": pods.len(),
                                "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": pods.len(),
                                "numberMisscheduled": 0 },
                })
            })
            .collect()
    }

    fn deployments(&self) -> Vec<Value> {
        self.store
            .workloads
            .values()
            .map(|w| {
                let owner = Owner::ReplicaSet(format!("{}-{}", w.name, w.hash));
                let pods: Vec<&Pod> = self.store.pods.values().filter(|p| p.owner == owner).collect();
                let ready = pods.iter().filter(|p| self.store.pod_ready(p, self.timings, self.now)).count();
                let mut m = meta(&w.name, Some(&w.namespace), &format!("deployment-{}", w.name), w.created, self.rv());
                m["labels"] = labels_json(&w.labels);
                json!({
                    "kind": "Deployment", "apiVersion": "apps/v1", "metadata": m,
                    "spec": { "replicas": w.replicas, "selector": { "matchLabels": labels_json(&w.labels) },
                              "template": { "metadata": { "labels": labels_json(&w.labels) },
                                            "spec": { "containers": containers_json(&w.containers) } } },
                    "status": { "replicas": pods.len(), "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": pods.len() },
                })
            })
            .collect()
    }

    /// A budget's status as the disruption controller computes it
    /// (Kubernetes: pkg/controller/disruption/disruption.go).
    pub(crate) fn budget_status(&self, namespace: &str, name: &str) -> Option<(u32, u32, u32)> {
        let budget = self
            .store
            .budgets
            .get(&(namespace.to_string(), name.to_string()))?;
        let matching: Vec<&Pod> = self
            .store
            .pods
            .values()
            .filter(|p| p.namespace == namespace)
            .filter(|p| {
                budget
                    .selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .collect();
        let healthy = matching
            .iter()
            .filter(|p| self.store.pod_ready(p, self.timings, self.now))
            .count() as u32;
        let desired = budget.min_available;
        Some((healthy, desired, healthy.saturating_sub(desired)))
    }

    fn budgets(&self) -> Vec<Value> {
        self.store
            .budgets
            .values()
            .map(|b| {
                let (healthy, desired, allowed) = self.budget_status(&b.namespace, &b.name).unwrap_or_default();
                json!({
                    "kind": "PodDisruptionBudget", "apiVersion": "policy/v1",
                    "metadata": meta(&b.name, Some(&b.namespace), &format!("pdb-{}", b.name), b.created, self.rv()),
                    "spec": { "minAvailable": b.min_available, "selector": { "matchLabels": labels_json(&b.selector) } },
                    "status": { "currentHealthy": healthy, "desiredHealthy": desired, "disruptionsAllowed": allowed,
                                "expectedPods": healthy, "observedGeneration": 1 },
                })
            })
            .collect()
    }

    fn attachments(&self) -> Vec<Value> {
        self.store
            .attachments
            .values()
            .map(|a| {
                json!({
                    "kind": "VolumeAttachment", "apiVersion": "storage.k8s.io/v1",
                    "metadata": meta(&a.name, None, &a.name, a.created, self.rv()),
                    "spec": { "attacher": "lab.csi.castle.dev", "nodeName": a.node,
                              "source": { "persistentVolumeName": format!("pv-{}", a.claim) } },
                    "status": { "attached": true },
                })
            })
            .collect()
    }
}

/// A `meta.k8s.io/v1` `Table` of `objects` with the columns kube-apiserver prints for
/// `resource`.
pub(crate) fn table(resource: &str, objects: &[Value]) -> Value {
    let columns: &[(&str, u8)] = match resource {
        "nodes" => &[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ],
        "namespaces" => &[("Name", 0), ("Status", 0), ("Age", 0)],
        "pods" => &[
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ],
        "services" => &[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ],
        "endpoints" => &[("Name", 0), ("Endpoints", 0), ("Age", 0)],
        "endpointslices" => &[
            ("Name", 0),
            ("AddressType", 0),
            ("Ports", 0),
            ("Endpoints", 0),
            ("Age", 0),
        ],
        "daemonsets" => &[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Node Selector", 0),
            ("Age", 0),
        ],
        "deployments" => &[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
        ],
        "poddisruptionbudgets" => &[
            ("Name", 0),
            ("Min Available", 0),
            ("Max Unavailable", 0),
            ("Allowed Disruptions", 0),
            ("Age", 0),
        ],
        "configmaps" => &[("Name", 0), ("Data", 0), ("Age", 0)],
        "secrets" => &[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
        "volumeattachments" => &[
            ("Name", 0),
            ("Attacher", 0),
            ("PV", 0),
            ("Node", 0),
            ("Attached", 0),
            ("Age", 0),
        ],
        _ => &[("Name", 0), ("Age", 0)],
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut object = json!({ "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"] });
            object["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
            json!({ "cells": cells(resource, o), "object": object })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": { "resourceVersion": "1" },
        "columnDefinitions": columns.iter().map(|(name, priority)| json!({
            "name": name, "type": "string", "format": if *name == "Name" { "name" } else { "" },
            "description": "", "priority": priority,
        })).collect::<Vec<_>>(),
        "rows": rows,
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cells(resource: &str, o: &Value) -> Vec<Value> {
    let name = s(&o["metadata"]["name"]);
    let age = age(o["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default());
    let cells: Vec<String> = match resource {
        "nodes" => {
            let ready = o["status"]["conditions"][0]["status"].as_str() == Some("True");
            let mut status = if ready {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            };
            if o["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles =
                if o["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_string() {
                    "control-plane"
                } else {
                    "<none>"
                };
            let info = &o["status"]["nodeInfo"];
            vec![
                name,
                status,
                roles.into(),
                age,
                s(&info["kubeletVersion"]),
                s(&o["status"]["addresses"][0]["address"]),
                "<none>".into(),
                s(&info["osImage"]),
                s(&info["kernelVersion"]),
                s(&info["containerRuntimeVersion"]),
            ]
        }
        "namespaces" => vec![name, s(&o["status"]["phase"]), age],
        "pods" => {
            let statuses = o["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let waiting = statuses
                .iter()
                .find_map(|c| c["state"]["waiting"]["reason"].as_str().map(str::to_string));
            // kubectl's printer: Terminating once a deletion timestamp is set.
            let status = if o["metadata"]["deletionTimestamp"].is_string() {
                "Terminating".to_string()
            } else {
                waiting.unwrap_or_else(|| s(&o["status"]["phase"]))
            };
            let ip = o["status"]["podIP"]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            let node = o["spec"]["nodeName"]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            vec![
                name,
                format!("{ready}/{total}"),
                status,
                "0".into(),
                age,
                ip,
                node,
                "<none>".into(),
                "<none>".into(),
            ]
        }
        "services" => {
            let ports: Vec<String> = o["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| format!("{}/{}", s(&p["port"]), s(&p["protocol"])))
                .collect();
            let selector = o["spec"]["selector"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                s(&o["spec"]["type"]),
                s(&o["spec"]["clusterIP"]),
                "<none>".into(),
                ports.join(","),
                age,
                selector,
            ]
        }
        "endpoints" => {
            let mut list = Vec::new();
            for subset in o["subsets"].as_array().cloned().unwrap_or_default() {
                for a in subset["addresses"].as_array().cloned().unwrap_or_default() {
                    for p in subset["ports"].as_array().cloned().unwrap_or_default() {
                        list.push(format!("{}:{}", s(&a["ip"]), s(&p["port"])));
                    }
                }
            }
            let shown = if list.is_empty() {
                "<none>".to_string()
            } else if list.len() > 3 {
                format!("{} + {} more...", list[..3].join(","), list.len() - 3)
            } else {
                list.join(",")
            };
            vec![name, shown, age]
        }
        "endpointslices" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| s(&p["port"]))
                .collect();
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| s(&e["addresses"][0]))
                .collect();
            vec![
                name,
                s(&o["addressType"]),
                ports.join(","),
                if eps.is_empty() {
                    "<unset>".into()
                } else {
                    eps.join(",")
                },
                age,
            ]
        }
        "daemonsets" => {
            let st = &o["status"];
            vec![
                name,
                s(&st["desiredNumberScheduled"]),
                s(&st["currentNumberScheduled"]),
                s(&st["numberReady"]),
                s(&st["updatedNumberScheduled"]),
                s(&st["numberAvailable"]),
                "kubernetes.io/os=linux".into(),
                age,
            ]
        }
        "deployments" => {
            let st = &o["status"];
            vec![
                name,
                format!("{}/{}", s(&st["readyReplicas"]), s(&o["spec"]["replicas"])),
                s(&st["updatedReplicas"]),
                s(&st["availableReplicas"]),
                age,
            ]
        }
        "poddisruptionbudgets" => vec![
            name,
            s(&o["spec"]["minAvailable"]),
            "N/A".into(),
            s(&o["status"]["disruptionsAllowed"]),
            age,
        ],
        "volumeattachments" => vec![
            name,
            s(&o["spec"]["attacher"]),
            s(&o["spec"]["source"]["persistentVolumeName"]),
            s(&o["spec"]["nodeName"]),
            s(&o["status"]["attached"]),
            age,
        ],
        "configmaps" => {
            let count = |field: &str| o[field].as_object().map_or(0, |m| m.len());
            vec![name, (count("data") + count("binaryData")).to_string(), age]
        }
        "secrets" => {
            let count = |field: &str| o[field].as_object().map_or(0, |m| m.len());
            let kind = o["type"].as_str().unwrap_or("Opaque").to_string();
            vec![
                name,
                kind,
                (count("data") + count("stringData")).to_string(),
                age,
            ]
        }
        _ => vec![name, age],
    };
    cells.into_iter().map(Value::String).collect()
}

/// A pod template's `containers`.
fn containers_json(containers: &[(String, String)]) -> Value {
    Value::Array(
        containers
            .iter()
            .map(|(name, image)| json!({ "name": name, "image": image }))
            .collect(),
    )
}

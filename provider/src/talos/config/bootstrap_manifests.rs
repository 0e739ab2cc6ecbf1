//! The bootstrap manifests a control plane's machine config makes Talos render: flannel,
//! kube-proxy and CoreDNS with their service accounts, RBAC, ConfigMaps and the `kube-dns`
//! Service, as Kubernetes objects. `talosctl upgrade-k8s` reads them back from the node and
//! applies them all once the kubelets run the new release; castle renders them from the same
//! config, so it needs no COSI access to do the same.
//!
//! Which groups are rendered follows the config: flannel when `cluster.network.cni.name` is
//! `flannel` (the default), kube-proxy unless `cluster.proxy.disabled`, CoreDNS unless
//! `cluster.coreDNS.disabled`.
// Talos: internal/app/machined/pkg/controllers/k8s/manifest.go (v1.12.0) render (the groups
// "05-flannel", "10-kube-proxy", "11-core-dns", "11-core-dns-svc", applied in that ID order),
// control_plane.go NewControlPlaneBootstrapManifestsController and getProxyArgs (the inputs),
// k8stemplates/{flannel,kube-proxy,coredns}.go and their testdata (the objects' fields). The
// CSR bindings, bootstrap token, in-cluster kubeconfig and Talos RBAC objects are not rendered:
// they do not change between Kubernetes releases.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::documents::{documents, is_v1alpha1};
use super::kubernetes::image_tag;
use super::ConfigError;

/// The images Talos picks by itself for the cluster's Talos release.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseImages<'a> {
    /// CoreDNS, when `cluster.coreDNS.image` is unset.
    pub coredns: &'a str,
    /// flannel (`ghcr.io/siderolabs/flannel:<FlannelVersion>`; the config cannot change it).
    pub flannel: &'a str,
}

/// Which add-ons a control plane's config enables, and what their objects depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    flannel: bool,
    proxy: bool,
    coredns: bool,
    proxy_image: Option<String>,
    proxy_mode: Option<String>,
    proxy_extra_args: Vec<(String, String)>,
    coredns_image: Option<String>,
    flannel_extra_args: Vec<String>,
    cluster_domain: String,
    pod_cidrs: Vec<String>,
    service_cidrs: Vec<String>,
    kube_prism_port: Option<u64>,
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn v1alpha1(config: &str) -> Result<Value, ConfigError> {
    Ok(documents(config)?
        .into_iter()
        .find(is_v1alpha1)
        .unwrap_or(Value::Null))
}

impl Inputs {
    // Talos: pkg/machinery/config/types/v1alpha1 (v1.12.0) defaults: CNI flannel, DNS domain
    // cluster.local, pods 10.244.0.0/16, services 10.96.0.0/12.
    fn read(config: &str) -> Result<Self, ConfigError> {
        let doc = v1alpha1(config)?;
        let at = |p: &str| doc.pointer(p);
        let text = |p: &str| at(p).and_then(Value::as_str).map(str::to_string);
        let flag = |p: &str| at(p).and_then(Value::as_bool) == Some(true);
        let or = |list: Vec<String>, default: &str| {
            if list.is_empty() {
                vec![default.to_string()]
            } else {
                list
            }
        };
        let prism = at("/machine/features/kubePrism");
        Ok(Inputs {
            flannel: text("/cluster/network/cni/name").unwrap_or_else(|| "flannel".into())
                == "flannel",
            proxy: !flag("/cluster/proxy/disabled"),
            coredns: !flag("/cluster/coreDNS/disabled"),
            proxy_image: text("/cluster/proxy/image"),
            proxy_mode: text("/cluster/proxy/mode"),
            proxy_extra_args: at("/cluster/proxy/extraArgs")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            coredns_image: text("/cluster/coreDNS/image"),
            flannel_extra_args: string_list(at("/cluster/network/cni/flannel/extraArgs")),
            cluster_domain: text("/cluster/network/dnsDomain")
                .unwrap_or_else(|| "cluster.local".into()),
            pod_cidrs: or(
                string_list(at("/cluster/network/podSubnets")),
                "10.244.0.0/16",
            ),
            service_cidrs: or(
                string_list(at("/cluster/network/serviceSubnets")),
                "10.96.0.0/12",
            ),
            kube_prism_port: prism
                .filter(|p| p["enabled"] == true)
                .map(|p| p["port"].as_u64().unwrap_or(7445)),
        })
    }
}

/// The bootstrap manifests `config` (a control plane's) makes Talos render, in the order
/// Talos applies them; empty when the config is not a control plane's v1alpha1 document.
pub fn bootstrap_manifests(
    config: &str,
    images: ReleaseImages<'_>,
) -> Result<Vec<Value>, ConfigError> {
    let inputs = Inputs::read(config)?;
    let mut objects = Vec::new();
    if inputs.flannel {
        objects.extend(flannel(&inputs, images.flannel));
    }
    if inputs.proxy {
        if let Some(image) = &inputs.proxy_image {
            objects.extend(kube_proxy(&inputs, image));
        }
    }
    if inputs.coredns {
        let image = inputs.coredns_image.as_deref().unwrap_or(images.coredns);
        objects.extend(coredns(&inputs, image));
    }
    Ok(objects)
}

/// "kind namespace/name" of an object, for messages.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn meta(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = json!({ "name": name });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        m["labels"] = labels;
    }
    m
}

fn service_account(name: &str, labels: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, Some("kube-system"), labels) })
}

fn binding(name: &str, role: &str, account: &str, metadata: Value) -> Value {
    let mut m = metadata;
    m["name"] = json!(name);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": m,
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": "kube-system" }],
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

fn flannel(inputs: &Inputs, image: &str) -> Vec<Value> {
    let labels = json!({ "k8s-app": "flannel", "tier": "node" });
    let mut net = serde_json::Map::new();
    let mut v4 = false;
    for cidr in &inputs.pod_cidrs {
        if cidr.contains('.') {
            net.insert("Network".into(), json!(cidr));
            v4 = true;
        } else {
            net.insert("IPv6Network".into(), json!(cidr));
            net.insert("EnableIPv6".into(), json!(true));
        }
    }
    if !v4 {
        net.insert("EnableIPv4".into(), json!(false));
    }
    net.insert("Backend".into(), json!({ "Type": "vxlan", "Port": 4789 }));
    let cni = json!({
        "name": "cbr0", "cniVersion": "1.0.0",
        "plugins": [
            { "type": "flannel", "delegate": { "hairpinMode": true, "isDefaultGateway": true } },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        json!({ "name": "EVENT_QUEUE_DEPTH", "value": "5000" }),
        json!({ "name": "CONT_WHEN_CACHE_NOT_READY", "value": "false" }),
    ];
    if let Some(port) = inputs.kube_prism_port {
        env.push(json!({ "name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1" }));
        env.push(json!({ "name": "KUBERNETES_SERVICE_PORT", "value": port.to_string() }));
    }
    let mut args = vec!["--ip-masq".to_string(), "--kube-subnet-mgr".to_string()];
    args.extend(inputs.flannel_extra_args.iter().cloned());
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta("flannel", None, json!({ "k8s-app": "flannel" })),
            "rules": [
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] },
                { "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"] },
                { "apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"] },
            ],
        }),
        binding(
            "flannel",
            "flannel",
            "flannel",
            json!({ "labels": { "k8s-app": "flannel" } }),
        ),
        service_account("flannel", json!({ "k8s-app": "flannel" })),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta("kube-flannel-cfg", Some("kube-system"), labels.clone()),
            "data": { "cni-conf.json": pretty(&cni), "net-conf.json": pretty(&Value::Object(net)) },
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta("kube-flannel", Some("kube-system"), labels.clone()),
            "spec": {
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{ "matchExpressions": [
                                { "key": "kubernetes.io/os", "operator": "In", "values": ["linux"] },
                            ] }],
                        } } },
                        "containers": [{
                            "name": "kube-flannel", "image": image,
                            "command": ["/opt/bin/flanneld"], "args": args, "env": env,
                            "resources": { "requests": { "cpu": "100m", "memory": "50Mi" } },
                            "securityContext": { "privileged": false, "capabilities": { "add": ["NET_ADMIN", "NET_RAW"] } },
                            "volumeMounts": [
                                { "name": "run", "mountPath": "/run/flannel" },
                                { "name": "flannel-cfg", "mountPath": "/etc/kube-flannel/" },
                            ],
                        }],
                        "initContainers": [{
                            "name": "install-config", "image": image, "command": ["cp"],
                            "args": ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
                            "volumeMounts": [
                                { "name": "cni", "mountPath": "/etc/cni/net.d" },
                                { "name": "flannel-cfg", "mountPath": "/etc/kube-flannel/" },
                            ],
                        }],
                        "hostNetwork": true,
                        "priorityClassName": "system-node-critical",
                        "serviceAccountName": "flannel",
                        "tolerations": [
                            { "effect": "NoSchedule", "operator": "Exists" },
                            { "effect": "NoExecute", "operator": "Exists" },
                        ],
                        "volumes": [
                            { "name": "run", "hostPath": { "path": "/run/flannel" } },
                            { "name": "cni-plugin", "hostPath": { "path": "/opt/cni/bin" } },
                            { "name": "cni", "hostPath": { "path": "/etc/cni/net.d" } },
                            { "name": "flannel-cfg", "configMap": { "name": "kube-flannel-cfg" } },
                        ],
                    },
                },
            },
        }),
    ]
}

/// kube-proxy's command line: Talos's arguments with `cluster.proxy.extraArgs` merged over
/// them (all but `kubeconfig`), sorted by name as Talos's argsbuilder writes them. The mode
/// is `nftables` from Kubernetes 1.31 unless the config names one.
fn proxy_args(inputs: &Inputs, image: &str) -> Vec<String> {
    let mode = inputs.proxy_mode.clone().unwrap_or_else(|| {
        let minor = image_tag(image).and_then(|t| {
            t.trim_start_matches('v')
                .split('.')
                .nth(1)?
                .parse::<u32>()
                .ok()
        });
        if minor.is_some_and(|m| m >= 31) {
            "nftables".into()
        } else {
            "iptables".into()
        }
    });
    let mut args: std::collections::BTreeMap<String, String> = [
        ("cluster-cidr", inputs.pod_cidrs.join(",")),
        ("conntrack-max-per-core", "0".into()),
        ("hostname-override", "$(NODE_NAME)".into()),
        ("kubeconfig", "/etc/kubernetes/kubeconfig".into()),
        ("proxy-mode", mode),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in &inputs.proxy_extra_args {
        if k != "kubeconfig" {
            args.insert(k.clone(), v.clone());
        }
    }
    std::iter::once("/usr/local/bin/kube-proxy".to_string())
        .chain(args.into_iter().map(|(k, v)| format!("--{k}={v}")))
        .collect()
}

fn kube_proxy(inputs: &Inputs, image: &str) -> Vec<Value> {
    let labels = json!({ "k8s-app": "kube-proxy", "tier": "node" });
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta("kube-proxy", Some("kube-system"), labels.clone()),
            "spec": {
                "selector": { "matchLabels": labels },
                "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "containers": [{
                            "name": "kube-proxy", "image": image,
                            "command": proxy_args(inputs, image),
                            "env": [field_env("NODE_NAME", "spec.nodeName"), field_env("POD_IP", "status.podIP")],
                            "securityContext": { "privileged": true },
                            "volumeMounts": [
                                { "name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true },
                                { "name": "ssl-certs-host", "mountPath": "/etc/ssl/certs", "readOnly": true },
                                { "name": "kubeconfig", "mountPath": "/etc/kubernetes", "readOnly": true },
                            ],
                        }],
                        "hostNetwork": true,
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "kube-proxy",
                        "tolerations": [
                            { "effect": "NoSchedule", "operator": "Exists" },
                            { "effect": "NoExecute", "operator": "Exists" },
                        ],
                        "volumes": [
                            { "name": "lib-modules", "hostPath": { "path": "/usr/lib/modules" } },
                            { "name": "ssl-certs-host", "hostPath": { "path": "/etc/ssl/certs" } },
                            { "name": "kubeconfig", "configMap": { "name": "kubeconfig-in-cluster" } },
                        ],
                    },
                },
            },
        }),
        service_account("kube-proxy", json!({})),
        binding("kube-proxy", "system:node-proxier", "kube-proxy", json!({})),
    ]
}

/// The tenth address of a service subnet: the cluster DNS Service's.
// Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_provider.go DNSServiceIPs (the 10th IP
// of each service CIDR).
fn dns_service_ip(cidr: &str) -> Option<IpAddr> {
    let base: IpAddr = cidr.split('/').next()?.parse().ok()?;
    Some(match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).checked_add(10)?).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).checked_add(10)?).into()),
    })
}

fn corefile(domain: &str) -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n        lameduck 5s\n    }}\n    ready\n    log . {{\n        class error\n    }}\n    \
         prometheus :9153\n\n    kubernetes {domain} in-addr.arpa ip6.arpa {{\n        pods insecure\n        \
         fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }}\n    forward . /etc/resolv.conf {{\n       \
         max_concurrent 1000\n    }}\n    cache 30 {{\n       disable success {domain}\n       disable denial {domain}\n    \
         }}\n    loop\n    reload\n    loadbalance\n}}\n"
    )
}

fn coredns(inputs: &Inputs, image: &str) -> Vec<Value> {
    let rbac_defaults = json!({ "kubernetes.io/bootstrapping": "rbac-defaults" });
    let dns = json!({ "k8s-app": "kube-dns" });
    let ips: Vec<IpAddr> = {
        let v4 = inputs.service_cidrs.iter().find(|c| c.contains('.'));
        let v6 = inputs.service_cidrs.iter().find(|c| !c.contains('.'));
        v4.into_iter()
            .chain(v6)
            .filter_map(|c| dns_service_ip(c))
            .collect()
    };
    let families: Vec<&str> = ips
        .iter()
        .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
        .collect();
    let policy = if ips.len() > 1 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    let port = |name: &str, port: u16, protocol: &str| json!({ "name": name, "port": port, "protocol": protocol, "targetPort": port });
    vec![
        service_account("coredns", json!({})),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": meta("system:coredns", None, rbac_defaults.clone()),
            "rules": [
                { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"] },
                { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
            ],
        }),
        binding(
            "system:coredns",
            "system:coredns",
            "coredns",
            json!({
                "labels": rbac_defaults,
                "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" },
            }),
        ),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta("coredns", Some("kube-system"), json!({})),
            "data": { "Corefile": corefile(&inputs.cluster_domain) },
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta("coredns", Some("kube-system"), json!({ "k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS" })),
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": dns },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
                "template": {
                    "metadata": { "labels": dns },
                    "spec": {
                        "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": { "matchExpressions": [{ "key": "k8s-app", "operator": "In", "values": ["kube-dns"] }] },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }] } },
                        "containers": [{
                            "name": "coredns", "image": image, "imagePullPolicy": "IfNotPresent",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "env": [{ "name": "GOMEMLIMIT", "value": "161MiB" }],
                            "livenessProbe": {
                                "failureThreshold": 5, "initialDelaySeconds": 60, "successThreshold": 1, "timeoutSeconds": 5,
                                "httpGet": { "path": "/health", "port": 8080, "scheme": "HTTP" },
                            },
                            "readinessProbe": { "httpGet": { "path": "/ready", "port": 8181, "scheme": "HTTP" } },
                            "ports": [
                                { "name": "dns", "containerPort": 53, "protocol": "UDP" },
                                { "name": "dns-tcp", "containerPort": 53, "protocol": "TCP" },
                                { "name": "metrics", "containerPort": 9153, "protocol": "TCP" },
                            ],
                            "resources": { "limits": { "memory": "170Mi" }, "requests": { "cpu": "100m", "memory": "70Mi" } },
                            "securityContext": {
                                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": { "add": ["NET_BIND_SERVICE"], "drop": ["ALL"] },
                            },
                            "volumeMounts": [{ "name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true }],
                        }],
                        "dnsPolicy": "Default",
                        "nodeSelector": { "kubernetes.io/os": "linux" },
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "tolerations": [
                            { "effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane", "operator": "Exists" },
                            { "effect": "NoSchedule", "key": "node.cloudprovider.kubernetes.io/uninitialized", "operator": "Exists" },
                        ],
                        "volumes": [{
                            "name": "config-volume",
                            "configMap": { "name": "coredns", "items": [{ "key": "Corefile", "path": "Corefile" }] },
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "kube-dns", "namespace": "kube-system",
                "annotations": { "prometheus.io/port": "9153", "prometheus.io/scrape": "true" },
                "labels": { "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS" },
            },
            "spec": {
                "clusterIP": ips.first().map(ToString::to_string),
                "clusterIPs": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ipFamilies": families,
                "ipFamilyPolicy": policy,
                "ports": [port("dns", 53, "UDP"), port("dns-tcp", 53, "TCP"), port("metrics", 9153, "TCP")],
                "selector": dns,
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGES: ReleaseImages<'static> = ReleaseImages {
        coredns: "registry.k8s.io/coredns/coredns:v1.13.2",
        flannel: "ghcr.io/siderolabs/flannel:v0.27.4",
    };

    fn config(cluster_extra: &str) -> String {
        format!(
            "version: v1alpha1\nmachine:\n  features:\n    kubePrism:\n      enabled: true\n      port: 7445\n\
cluster:\n  network:\n    dnsDomain: cluster.local\n    podSubnets: [10.244.0.0/16]\n    serviceSubnets: [10.96.0.0/12]\n{cluster_extra}  \
proxy:\n    image: registry.k8s.io/kube-proxy:v1.35.0\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: cp-1\n"
        )
    }

    fn names(objects: &[Value]) -> Vec<String> {
        objects.iter().map(describe).collect()
    }

    fn find<'a>(objects: &'a [Value], what: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| describe(o) == what)
            .unwrap_or_else(|| panic!("{what} not rendered: {:?}", names(objects)))
    }

    #[test]
    fn a_default_control_plane_renders_flannel_then_kube_proxy_then_coredns() {
        let objects = bootstrap_manifests(&config(""), IMAGES).unwrap();
        assert_eq!(
            names(&objects),
            vec![
                "ClusterRole flannel",
                "ClusterRoleBinding flannel",
                "ServiceAccount kube-system/flannel",
                "ConfigMap kube-system/kube-flannel-cfg",
                "DaemonSet kube-system/kube-flannel",
                "DaemonSet kube-system/kube-proxy",
                "ServiceAccount kube-system/kube-proxy",
                "ClusterRoleBinding kube-proxy",
                "ServiceAccount kube-system/coredns",
                "ClusterRole system:coredns",
                "ClusterRoleBinding system:coredns",
                "ConfigMap kube-system/coredns",
                "Deployment kube-system/coredns",
                "Service kube-system/kube-dns",
            ]
        );
        let proxy = find(&objects, "DaemonSet kube-system/kube-proxy");
        let container = &proxy["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.k8s.io/kube-proxy:v1.35.0");
        assert!(container["command"]
            .as_array()
            .unwrap()
            .contains(&json!("--proxy-mode=nftables")));
        let dns = find(&objects, "Deployment kube-system/coredns");
        assert_eq!(
            dns["spec"]["template"]["spec"]["containers"][0]["image"],
            IMAGES.coredns
        );
        let svc = find(&objects, "Service kube-system/kube-dns");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.10");
        let flannel = find(&objects, "DaemonSet kube-system/kube-flannel");
        let env = &flannel["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(env
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "KUBERNETES_SERVICE_PORT", "value": "7445" })));
        let cfg = find(&objects, "ConfigMap kube-system/kube-flannel-cfg");
        assert!(cfg["data"]["net-conf.json"]
            .as_str()
            .unwrap()
            .contains("10.244.0.0/16"));
    }

    #[test]
    fn disabled_add_ons_are_left_out() {
        let objects = bootstrap_manifests(
            &config("    cni:\n      name: none\n  coreDNS:\n    disabled: true\n  proxy:\n    disabled: true\n")
                .replace("  proxy:\n    image: registry.k8s.io/kube-proxy:v1.35.0\n", ""),
            IMAGES,
        )
        .unwrap();
        assert!(objects.is_empty(), "{:?}", names(&objects));
        let custom =
            bootstrap_manifests(&config("    cni:\n      name: custom\n"), IMAGES).unwrap();
        assert!(!names(&custom).iter().any(|n| n.contains("flannel")));
        assert!(names(&custom).contains(&"DaemonSet kube-system/kube-proxy".to_string()));
    }

    #[test]
    fn a_coredns_image_in_the_config_wins_over_the_release_default() {
        let objects = bootstrap_manifests(
            &config("  coreDNS:\n    image: mirror.lan:5000/coredns:v1.12.9\n"),
            IMAGES,
        )
        .unwrap();
        let dns = find(&objects, "Deployment kube-system/coredns");
        assert_eq!(
            dns["spec"]["template"]["spec"]["containers"][0]["image"],
            "mirror.lan:5000/coredns:v1.12.9"
        );
    }

    #[test]
    fn kube_proxy_takes_extra_args_but_keeps_its_kubeconfig_and_older_releases_use_iptables() {
        let objects = bootstrap_manifests(
            &config("")
                .replace("kube-proxy:v1.35.0", "kube-proxy:v1.30.4")
                .replace(
                    "  proxy:\n",
                    "  proxy:\n    extraArgs:\n      kubeconfig: /x\n      metrics-bind-address: 0.0.0.0:10249\n",
                ),
            IMAGES,
        )
        .unwrap();
        let proxy = find(&objects, "DaemonSet kube-system/kube-proxy");
        let command = &proxy["spec"]["template"]["spec"]["containers"][0]["command"];
        assert_eq!(
            command,
            &json!([
                "/usr/local/bin/kube-proxy",
                "--cluster-cidr=10.244.0.0/16",
                "--conntrack-max-per-core=0",
                "--hostname-override=$(NODE_NAME)",
                "--kubeconfig=/etc/kubernetes/kubeconfig",
                "--metrics-bind-address=0.0.0.0:10249",
                "--proxy-mode=iptables",
            ])
        );
    }

    #[test]
    fn an_ipv6_service_subnet_gives_the_dns_service_its_tenth_address() {
        let objects = bootstrap_manifests(
            &config("").replace("[10.96.0.0/12]", "[fc00:db8:20::/112]"),
            IMAGES,
        )
        .unwrap();
        let svc = find(&objects, "Service kube-system/kube-dns");
        assert_eq!(svc["spec"]["clusterIP"], "fc00:db8:20::a");
        assert_eq!(svc["spec"]["ipFamilies"], json!(["IPv6"]));
    }
}

//! Per-node machine configuration: the v1alpha1 document plus the release line's other
//! documents, checked against the Talos schema before and after every user patch.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use super::documents::yaml_stream;
use super::endpoint::{endpoint_url, url_host};
use super::network::{machine_network, network_documents, NodeNetwork};
use super::patch;
use super::schema::validate_document;
use super::schematic::schematic_id;
use super::spec::{ClusterSpec, EncryptionKeyKind, NodeSpec, Role};
use super::validate::{has_errors, validate};
use super::version::{KubernetesVersion, TalosMinor, TalosVersion};
use super::ConfigError;
use crate::talos::pki::SecretsBundle;

/// The Kubernetes API URL: `endpoint` made a URL as `talosctl gen config` does (see
/// [`endpoint_url`]), else `https://<vip | first control plane>:6443`.
pub fn control_plane_endpoint(spec: &ClusterSpec) -> Result<String, ConfigError> {
    let host = match (&spec.endpoint, &spec.vip) {
        (Some(endpoint), _) => return endpoint_url(endpoint).map_err(|_| invalid(spec)),
        (None, Some(vip)) => vip.clone(),
        (None, None) => {
            let (_, first) = spec.control_planes().next().ok_or_else(|| invalid(spec))?;
            let net: IpNet = first.address.parse().map_err(|_| invalid(spec))?;
            net.addr().to_string()
        }
    };
    endpoint_url(&host).map_err(|_| invalid(spec))
}

/// The installer image: `install_image` if set, else the Image Factory installer of the
/// extensions' schematic (the vanilla schematic without extensions) at the Talos release. With
/// `tpm` disk encryption it is the factory's SecureBoot installer of the same schematic
/// (`installer-secureboot`, the signed UKI whose PCR key a `tpm` key is sealed against).
pub fn installer_image(spec: &ClusterSpec) -> Result<String, ConfigError> {
    if let Some(image) = &spec.install_image {
        return Ok(image.clone());
    }
    let version = TalosVersion::parse(&spec.talos_version)?;
    let tag = version.tag().ok_or_else(|| invalid(spec))?;
    let host = spec.factory_host.as_deref().unwrap_or("factory.talos.dev");
    let installer = if spec
        .disk_encryption
        .is_some_and(|e| e.key == EncryptionKeyKind::Tpm)
    {
        "installer-secureboot"
    } else {
        "installer"
    };
    Ok(format!(
        "{host}/{installer}/{}:{tag}",
        schematic_id(&spec.extensions)
    ))
}

fn invalid(spec: &ClusterSpec) -> ConfigError {
    ConfigError::Invalid(validate(spec))
}

/// The supported release lines older than `talos_version`, oldest first: the contracts a node
/// booted from an older template may need in maintenance mode. Talos decodes a config with its
/// own document registry, and a kind it does not know (the v1.12 network documents on v1.11)
/// fails the apply (Talos: pkg/machinery/config/configloader/internal/decoder/decoder.go
/// (v1.11.0) `decode` → `registry.New`: `"LinkConfig" "v1alpha1": not registered`), while a
/// newer release reads an older contract's documents.
pub fn earlier_contracts(spec: &ClusterSpec) -> Vec<TalosMinor> {
    match TalosVersion::parse(&spec.talos_version) {
        Ok(version) => TalosMinor::ALL
            .into_iter()
            .filter(|m| *m < version.minor)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Machine configs of every node, by node name.
pub fn generate_cluster_configs(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
) -> Result<BTreeMap<String, String>, ConfigError> {
    spec.nodes
        .keys()
        .map(|name| Ok((name.clone(), generate_node_config(spec, bundle, name)?)))
        .collect()
}

/// The multi-document YAML machine config of one node (documents separated by `---`).
///
/// Refuses a spec with error-level [`validate`] issues. Deterministic: no timestamps, nothing
/// random, and every map is built in a fixed order (JSON maps, sorted or insertion-ordered).
pub fn generate_node_config(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
    node_name: &str,
) -> Result<String, ConfigError> {
    let contract = TalosVersion::parse(&spec.talos_version)?.minor;
    generate_node_config_for(spec, bundle, node_name, contract)
}

/// The config of one node in the documents of an older release line `contract` (what a node
/// booted from an older template accepts in maintenance mode: Talos refuses documents its
/// release does not know, see [`earlier_contracts`]); everything else (installer image,
/// Kubernetes release, PKI) as for `talos_version`. A `contract` newer than `talos_version` is
/// taken as `talos_version`.
pub fn generate_node_config_for(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
    node_name: &str,
    contract: TalosMinor,
) -> Result<String, ConfigError> {
    let issues = validate(spec);
    if has_errors(&issues) {
        return Err(ConfigError::Invalid(issues));
    }
    let node = spec
        .nodes
        .get(node_name)
        .ok_or_else(|| ConfigError::UnknownNode(node_name.into()))?;
    let version = TalosVersion::parse(&spec.talos_version)?;
    let minor = contract.min(version.minor);
    let mut docs = base_documents(spec, bundle, node_name, node, minor)?;
    for doc in &docs {
        validate_document(minor, doc).map_err(|reason| ConfigError::Generated {
            document: document_name(doc),
            version: minor.as_str().into(),
            reason,
        })?;
    }
    for (label, text) in patches_for(spec, node_name, node) {
        let parsed = patch::parse_any(text).map_err(|reason| ConfigError::PatchParse {
            patch: label.clone(),
            reason: reason.clone(),
        })?;
        patch::apply_any(&mut docs, &parsed).map_err(|reason| ConfigError::PatchParse {
            patch: label.clone(),
            reason,
        })?;
        for doc in &docs {
            validate_document(minor, doc).map_err(|reason| ConfigError::PatchSchema {
                patch: label.clone(),
                document: document_name(doc),
                version: minor.as_str().into(),
                reason,
            })?;
        }
    }
    yaml_stream(&docs)
}

fn document_name(doc: &Value) -> String {
    match patch::doc_identity(doc) {
        (None, _) => "v1alpha1".into(),
        (Some(kind), None) => kind.into(),
        (Some(kind), Some(name)) => format!("{kind} {name:?}"),
    }
}

/// Cluster, then role, then node patches, each with the path a user would look for.
fn patches_for<'a>(
    spec: &'a ClusterSpec,
    node_name: &str,
    node: &'a NodeSpec,
) -> Vec<(String, &'a str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    for (i, p) in spec.patches.iter().enumerate() {
        out.push((format!("patches[{i}]"), p));
    }
    if let Some(role_patches) = spec.role_patches.get(&node.role) {
        for (i, p) in role_patches.iter().enumerate() {
            out.push((format!("role_patches[{:?}][{i}]", node.role.as_str()), p));
        }
    }
    for (i, p) in node.patches.iter().enumerate() {
        out.push((format!("nodes[{node_name:?}].patches[{i}]"), p));
    }
    out
}

/// Keeps the first occurrence of each entry.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// Host of the configured endpoint, for certificate SANs.
fn endpoint_host(spec: &ClusterSpec) -> Option<String> {
    let url = endpoint_url(spec.endpoint.as_ref()?).ok()?;
    Some(url_host(&url).to_string())
}

fn base_documents(
    spec: &ClusterSpec,
    bundle: &SecretsBundle,
    node_name: &str,
    node: &NodeSpec,
    minor: TalosMinor,
) -> Result<Vec<Value>, ConfigError> {
    let k8s = KubernetesVersion::parse(&spec.kubernetes_version)?;
    let address: IpNet = node.address.parse().map_err(|_| invalid(spec))?;
    let subnet = address.trunc().to_string();
    let control_plane = node.role == Role::ControlPlane;
    let hostname = node.hostname.as_deref().unwrap_or(node_name);
    let vip = if control_plane {
        spec.vip.as_deref()
    } else {
        None
    };

    let net = NodeNetwork {
        hostname,
        address,
        gateway: &spec.gateway,
        nameservers: &spec.nameservers,
        link: &node.link,
        vip,
    };

    // --- machine ---
    let mut machine = Map::new();
    machine.insert("type".into(), json!(node.role.as_str()));
    machine.insert("token".into(), json!(bundle.trustd_token));
    machine.insert(
        "ca".into(),
        if control_plane {
            json!({ "crt": bundle.os_ca.crt_base64(), "key": bundle.os_ca.key_base64() })
        } else {
            json!({ "crt": bundle.os_ca.crt_base64() })
        },
    );
    let mut machine_sans = vec![address.addr().to_string()];
    machine_sans.extend(vip.map(str::to_string));
    machine_sans.extend(endpoint_host(spec));
    machine_sans.extend(spec.extra_cert_sans.iter().cloned());
    machine.insert("certSANs".into(), json!(dedup(machine_sans)));
    machine.insert(
        "kubelet".into(),
        json!({
            "image": format!("ghcr.io/siderolabs/kubelet:{}", k8s.tag()),
            "defaultRuntimeSeccompProfileEnabled": true,
            "disableManifestsDirectory": true,
            // Keeps the kubelet off the VIP and any other address.
            "nodeIP": { "validSubnets": [subnet] },
        }),
    );
    if !minor.has_network_documents() {
        machine.insert("network".into(), machine_network(&net));
    }
    let mut install =
        json!({ "disk": node.install_disk, "image": installer_image(spec)?, "wipe": false });
    if minor >= TalosMinor::V1_12 {
        // Talos: contract.go GrubUseUKICmdlineDefault (>1.11): new installs take the UKI's cmdline.
        install["grubUseUKICmdline"] = json!(true);
    }
    machine.insert("install".into(), install);
    let mut features = json!({
        "diskQuotaSupport": true,
        "kubePrism": { "enabled": true, "port": 7445 },
        "hostDNS": { "enabled": true, "forwardKubeDNSToHost": true },
    });
    if minor < TalosMinor::V1_12 {
        // Always on from v1.12 (and gone from its schema).
        features["rbac"] = json!(true);
        features["stableHostname"] = json!(true);
        features["apidCheckExtKeyUsage"] = json!(true);
    }
    machine.insert("features".into(), features);
    if control_plane {
        // Talos: contract.go AddExcludeFromExternalLoadBalancer (>1.7), generate/init.go.
        machine.insert(
            "nodeLabels".into(),
            json!({ "node.kubernetes.io/exclude-from-external-load-balancers": "" }),
        );
    }
    if let (Some(enc), false) = (spec.disk_encryption, minor.has_volume_encryption()) {
        let config = json!({ "provider": "luks2", "keys": [encryption_key(enc.key)] });
        machine.insert(
            "systemDiskEncryption".into(),
            json!({ "state": config, "ephemeral": config }),
        );
    }

    // --- cluster ---
    let mut cluster = Map::new();
    cluster.insert("id".into(), json!(bundle.cluster_id));
    cluster.insert("secret".into(), json!(bundle.cluster_secret));
    cluster.insert(
        "controlPlane".into(),
        json!({ "endpoint": control_plane_endpoint(spec)? }),
    );
    // Discovery as gen writes it (docs/adr/0008-cluster-discovery.md).
    cluster.insert(
        "discovery".into(),
        json!({ "enabled": true, "registries": { "kubernetes": { "disabled": true } } }),
    );
    cluster.insert("clusterName".into(), json!(spec.name));
    let endpoint = control_plane_endpoint(spec)?;
    // Talos: generate/generate.go NewInput: an IPv6 endpoint gets IPv6 pod and service subnets.
    let (pods, services) = if url_host(&endpoint).parse::<Ipv6Addr>().is_ok() {
        ("fc00:db8:10::/56", "fc00:db8:20::/112")
    } else {
        ("10.244.0.0/16", "10.96.0.0/12")
    };
    cluster.insert(
        "network".into(),
        json!({
            "dnsDomain": "cluster.local",
            "podSubnets": [pods],
            "serviceSubnets": [services],
        }),
    );
    cluster.insert("token".into(), json!(bundle.bootstrap_token));
    if control_plane {
        cluster.insert(
            "secretboxEncryptionSecret".into(),
            json!(bundle.secretbox_secret),
        );
        cluster.insert(
            "ca".into(),
            json!({ "crt": bundle.kubernetes_ca.crt_base64(), "key": bundle.kubernetes_ca.key_base64() }),
        );
        cluster.insert(
            "aggregatorCA".into(),
            json!({ "crt": bundle.aggregator_ca.crt_base64(), "key": bundle.aggregator_ca.key_base64() }),
        );
        cluster.insert(
            "serviceAccount".into(),
            json!({ "key": bundle.service_account_key_base64() }),
        );
        let mut api_sans: Vec<String> = spec.vip.iter().cloned().collect();
        api_sans.extend(endpoint_host(spec));
        api_sans.extend(spec.control_planes().filter_map(|(_, n)| {
            n.address
                .parse::<IpNet>()
                .ok()
                .map(|a| a.addr().to_string())
        }));
        api_sans.extend(spec.extra_cert_sans.iter().cloned());
        let mut api_server = json!({
            "image": format!("registry.k8s.io/kube-apiserver:{}", k8s.tag()),
            "certSANs": dedup(api_sans),
            "admissionControl": [pod_security_admission()],
        });
        if minor < TalosMinor::V1_12 {
            // Unset, Talos 1.10/1.11 enable the PodSecurityPolicy admission plugin, which
            // Kubernetes removed in 1.25: kube-apiserver would not start.
            // Talos: contract.go HideDisablePSP (>1.11), generate/init.go.
            api_server["disablePodSecurityPolicy"] = json!(true);
        }
        cluster.insert("apiServer".into(), api_server);
        cluster.insert(
            "controllerManager".into(),
            json!({ "image": format!("registry.k8s.io/kube-controller-manager:{}", k8s.tag()) }),
        );
        cluster.insert(
            "scheduler".into(),
            json!({ "image": format!("registry.k8s.io/kube-scheduler:{}", k8s.tag()) }),
        );
        cluster.insert(
            "proxy".into(),
            json!({ "image": format!("registry.k8s.io/kube-proxy:{}", k8s.tag()) }),
        );
        cluster.insert(
            "etcd".into(),
            json!({
                "ca": { "crt": bundle.etcd_ca.crt_base64(), "key": bundle.etcd_ca.key_base64() },
                // etcd peers talk on the node subnet, never on the VIP.
                "advertisedSubnets": [subnet],
            }),
        );
        if !spec.inline_manifests.is_empty() {
            let manifests: Vec<Value> = spec
                .inline_manifests
                .iter()
                .map(|m| json!({ "name": m.name, "contents": m.contents }))
                .collect();
            cluster.insert("inlineManifests".into(), Value::Array(manifests));
        }
        if !spec.extra_manifests.is_empty() {
            cluster.insert("extraManifests".into(), json!(spec.extra_manifests));
        }
    } else {
        // Workers trust the Kubernetes CA but never hold its key.
        cluster.insert(
            "ca".into(),
            json!({ "crt": bundle.kubernetes_ca.crt_base64() }),
        );
    }

    let mut docs = vec![json!({
        "version": "v1alpha1",
        "debug": false,
        "machine": Value::Object(machine),
        "cluster": Value::Object(cluster),
    })];
    if minor.has_network_documents() {
        docs.extend(network_documents(&net));
    }
    if let (Some(enc), true) = (spec.disk_encryption, minor.has_volume_encryption()) {
        for volume in ["STATE", "EPHEMERAL"] {
            docs.push(json!({
                "apiVersion": "v1alpha1",
                "kind": "VolumeConfig",
                "name": volume,
                "encryption": { "provider": "luks2", "keys": [encryption_key(enc.key)] },
            }));
        }
    }
    Ok(docs)
}

/// Pod Security admission as `talosctl gen config` writes it: baseline enforced, restricted
/// audited and warned, kube-system exempt.
// Talos: contract.go PodSecurityAdmissionEnabled (>1.0), generate/init.go.
fn pod_security_admission() -> Value {
    json!({
        "name": "PodSecurity",
        "configuration": {
            "apiVersion": "pod-security.admission.config.k8s.io/v1alpha1",
            "kind": "PodSecurityConfiguration",
            "defaults": {
                "enforce": "baseline",
                "enforce-version": "latest",
                "audit": "restricted",
                "audit-version": "latest",
                "warn": "restricted",
                "warn-version": "latest",
            },
            "exemptions": {
                "usernames": [],
                "runtimeClasses": [],
                "namespaces": ["kube-system"],
            },
        },
    })
}

fn encryption_key(kind: EncryptionKeyKind) -> Value {
    match kind {
        EncryptionKeyKind::NodeId => json!({ "slot": 0, "nodeID": {} }),
        EncryptionKeyKind::Tpm => json!({ "slot": 0, "tpm": {} }),
    }
}

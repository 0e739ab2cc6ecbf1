//! Reading an applied machine config the way a node would: schema of its Talos version, then
//! the few fields the emulator acts on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use castle::talos::config::{undocumented_fields, TalosMinor};
use serde_json::Value;

/// Schemas embedded at build time: the node checks configs without touching the filesystem.
const SCHEMAS: [(&str, &str); 4] = [
    (
        "v1.10",
        include_str!("../../../../provider/schemas/talos/v1.10/config.schema.json"),
    ),
    (
        "v1.11",
        include_str!("../../../../provider/schemas/talos/v1.11/config.schema.json"),
    ),
    (
        "v1.12",
        include_str!("../../../../provider/schemas/talos/v1.12/config.schema.json"),
    ),
    (
        "v1.13",
        include_str!("../../../../provider/schemas/talos/v1.13/config.schema.json"),
    ),
];

/// Role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    /// Runs etcd and the Kubernetes control plane.
    Controlplane,
    /// Runs workloads only.
    Worker,
}

/// What the emulator keeps of an applied config.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    /// `machine.type`.
    pub machine_type: MachineType,
    /// Hostname from a `HostnameConfig` document or `machine.network.hostname`.
    pub hostname: Option<String>,
    /// OS CA certificate PEM (`machine.ca.crt`).
    pub os_ca_crt: String,
    /// OS CA key PEM (`machine.ca.key`), control planes only.
    pub os_ca_key: Option<String>,
    /// `cluster.id`, which keys the emulated cluster (etcd, Kubernetes API).
    pub cluster_id: String,
    /// `cluster.clusterName`.
    pub cluster_name: String,
    /// `cluster.controlPlane.endpoint`.
    pub endpoint: String,
    /// Kubernetes CA certificate PEM (`cluster.ca.crt`).
    pub k8s_ca_crt: Option<String>,
    /// Kubernetes CA key PEM (`cluster.ca.key`).
    pub k8s_ca_key: Option<String>,
    /// etcd CA certificate PEM (`cluster.etcd.ca.crt`), control planes only.
    pub etcd_ca_crt: Option<String>,
    /// etcd CA key PEM (`cluster.etcd.ca.key`): etcd's serving, peer and client certificates
    /// are issued from it.
    pub etcd_ca_key: Option<String>,
    /// The shared VIP (v1alpha1 interfaces or a `Layer2VIPConfig`).
    pub vip: Option<IpAddr>,
    /// The static addresses of the config (`machine.network.interfaces[].addresses`, or the
    /// `addresses` of a `LinkConfig`), without their prefix length: assigned for as long as
    /// this config runs, besides the platform's own address.
    pub static_addresses: Vec<IpAddr>,
    /// Why kube-apiserver would exit on this control plane, if it would (see
    /// [`apiserver_refusal`]).
    pub apiserver_refusal: Option<String>,
    /// Tag of the kubelet image, e.g. `v1.32.0`.
    pub kubelet_version: String,
    /// The static pods of a control plane with their images (`cluster.apiServer.image`,
    /// `cluster.controllerManager.image`, `cluster.scheduler.image`), by `k8s-app` name.
    pub static_pods: Vec<(String, String)>,
    /// Talos release of `machine.install.image` (its tag, when it names a supported release):
    /// what a node in maintenance mode installs, whatever release it booted.
    pub install_version: Option<String>,
    /// `machine.install.image`.
    pub install_image: Option<String>,
    /// CNI, kube-proxy, scheduling on control planes and inline manifests.
    pub kube_addons: crate::kubernetes::KubeAddons,
    /// The v1alpha1 document less what a running node changes in place: a new config that
    /// differs here reboots the node (see `immediate.rs`).
    pub reboot_part: Value,
    /// The kinds of its documents in order, `v1alpha1` for the main one (for tests: which
    /// contract the node was given).
    pub documents: Vec<String>,
    /// The v1alpha1 document as given (for tests: what the node runs, as `talosctl get
    /// machineconfig` shows it).
    pub v1alpha1: Value,
}

/// The addresses of `machine.network.interfaces[].addresses` (v1alpha1, `10.0.0.11/24`) and
/// of every `LinkConfig`'s `addresses[].address` (v1.12+), in that order (Talos:
/// internal/app/machined/pkg/controllers/network/address_config.go (v1.12.0), layer
/// `configuration`).
fn static_addresses(main: &Value, docs: &[Value]) -> Vec<IpAddr> {
    let v1alpha1 = main
        .pointer("/machine/network/interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("addresses").and_then(Value::as_array))
        .flatten();
    let links = docs
        .iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some("LinkConfig"))
        .filter_map(|d| d.get("addresses").and_then(Value::as_array))
        .flatten()
        .map(|a| a.get("address").unwrap_or(a));
    v1alpha1
        .chain(links)
        .filter_map(Value::as_str)
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect()
}

/// Schema version line ("v1.12") of a Talos version tag ("v1.12.3").
pub fn version_line(talos_version: &str) -> Option<&'static str> {
    let mut parts = talos_version.trim_start_matches('v').split('.');
    let line = format!("v{}.{}", parts.next()?, parts.next()?);
    SCHEMAS.iter().map(|(v, _)| *v).find(|v| *v == line)
}

/// Adds the fields the line's Talos decodes without publishing them, as castle's schema check
/// does: one list, castle's (`undocumented_fields`), with the Talos source of each.
fn with_decoded_fields(schema: &mut Value, line: &str) {
    if let Some(&minor) = TalosMinor::ALL.iter().find(|m| m.as_str() == line) {
        undocumented_fields::add_to_schema(schema, minor);
    }
}

type Validators = HashMap<(String, String), Arc<jsonschema::Validator>>;

/// A validator for one `$defs` entry of a version's schema, compiled once.
fn validator(line: &str, def: &str) -> Result<Arc<jsonschema::Validator>, String> {
    static CACHE: OnceLock<Mutex<Validators>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (line.to_string(), def.to_string());
    if let Some(v) = cache.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(v.clone());
    }
    let text = SCHEMAS
        .iter()
        .find(|(v, _)| *v == line)
        .ok_or("unknown schema")?
        .1;
    let mut schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    with_decoded_fields(&mut schema, line);
    // Validate against the one document type, not the root `oneOf`, so that the reason names
    // the offending key instead of "not valid under any of the schemas".
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("oneOf");
        obj.insert("$ref".into(), Value::String(format!("#/$defs/{def}")));
    }
    let compiled = Arc::new(jsonschema::validator_for(&schema).map_err(|e| e.to_string())?);
    cache
        .lock()
        .map_err(|e| e.to_string())?
        .insert(key, compiled.clone());
    Ok(compiled)
}

/// The `$defs` name of a document's type in a version's schema.
fn definition_for(line: &str, doc: &Value) -> Result<String, String> {
    if doc.get("version").is_some() && doc.get("kind").is_none() {
        return Ok("v1alpha1.Config".into());
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("document has no kind")?;
    let text = SCHEMAS
        .iter()
        .find(|(v, _)| *v == line)
        .ok_or("unknown schema")?
        .1;
    let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .ok_or("schema has no $defs")?;
    defs.iter()
        .find(|(_, d)| {
            d.pointer("/properties/kind/enum")
                .and_then(Value::as_array)
                .is_some_and(|e| e.iter().any(|k| k == kind))
        })
        .map(|(name, _)| name.clone())
        // Talos decodes each document with its release's registry; a kind it does not know
        // fails there (Talos: pkg/machinery/config/configloader/internal/decoder/decoder.go
        // (v1.11.0) `decode` → pkg/machinery/config/internal/registry/registry.go `New`).
        .ok_or_else(|| {
            let version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
            format!("{kind:?} {version:?}: not registered")
        })
}

fn b64_pem(value: Option<&Value>) -> Option<String> {
    let text = value?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// How Go's multierror (used by Talos's validation) prints its errors.
fn multierror(problems: &[String]) -> String {
    let items: Vec<String> = problems.iter().map(|p| format!("\t* {p}")).collect();
    match problems.len() {
        1 => format!("1 error occurred:\n{}\n\n", items.join("\n")),
        n => format!("{n} errors occurred:\n{}\n\n", items.join("\n")),
    }
}

/// The Kubernetes minors a Talos release line runs.
// Talos: pkg/machinery/compatibility/talos110..talos113 (Min/MaxKubernetesVersion).
fn kubernetes_window(line: &str) -> Option<(u32, u32)> {
    match line {
        "v1.10" => Some((28, 33)),
        "v1.11" => Some((29, 34)),
        "v1.12" => Some((30, 35)),
        "v1.13" => Some((31, 36)),
        _ => None,
    }
}

/// `1.35.2` from `registry.k8s.io/kube-apiserver:v1.35.2`, with its minor.
fn image_kubernetes_version(image: &str) -> Option<(String, u32)> {
    let (_, tag) = image.rsplit_once(":v")?;
    let tag = tag.split('@').next()?;
    let minor = tag.split('.').nth(1)?.parse().ok()?;
    Some((tag.to_string(), minor))
}

/// The semantic checks of Talos's config validation that castle could trip, each with Talos's
/// message (joined as multierror does; the node answers InvalidArgument).
// Talos: pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go (v1.12.0) Validate and
// RuntimeValidate; pkg/machinery/compatibility/kubernetes_version.go SupportedWith.
fn semantic_problems(main: &Value, talos_version: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let str_at = |p: &str| main.pointer(p).and_then(Value::as_str);
    let control_plane = str_at("/machine/type") == Some("controlplane");
    if main.pointer("/machine/install").is_some()
        && str_at("/machine/install/disk").is_none_or(str::is_empty)
        && main.pointer("/machine/install/diskSelector").is_none()
    {
        problems.push("either install disk or diskSelector should be defined".to_string());
    }
    if !control_plane {
        let vip_on_interface = main
            .pointer("/machine/network/interfaces")
            .and_then(Value::as_array)
            .is_some_and(|ifs| ifs.iter().any(|i| i.get("vip").is_some()));
        if vip_on_interface {
            problems.push("virtual (shared) IP is not allowed on non-controlplane nodes".into());
        }
    }
    for iface in main
        .pointer("/machine/network/interfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let named = iface.get("interface").is_some();
        let selected = iface.get("deviceSelector").is_some();
        if named == selected {
            problems.push(format!(
                "[networking.os.device.interface], [networking.os.device.deviceSelector]: {}",
                if named {
                    "config sections are mutually exclusive"
                } else {
                    "required either config section to be set"
                }
            ));
        }
    }
    problems.extend(undocumented_fields::refusals(main));
    match str_at("/cluster/controlPlane/endpoint") {
        None => problems.push("cluster controlplane endpoint is required".into()),
        Some(endpoint) => {
            let host = endpoint
                .split_once("://")
                .map(|(_, rest)| rest.split('/').next().unwrap_or_default());
            if host.is_none_or(str::is_empty) {
                problems.push(format!(
                    "invalid controlplane endpoint: {endpoint:?} is not a valid URL with a host"
                ));
            }
        }
    }
    // From v1.11 the node refuses Kubernetes images outside its release's window.
    let line = version_line(talos_version).unwrap_or_default();
    let talos = talos_version.trim_start_matches('v');
    if let (Some((min, max)), true) = (kubernetes_window(line), line != "v1.10") {
        let mut images = vec![("kubelet", str_at("/machine/kubelet/image"))];
        if control_plane {
            images.push(("kube-apiserver", str_at("/cluster/apiServer/image")));
            images.push((
                "kube-controller-manager",
                str_at("/cluster/controllerManager/image"),
            ));
            images.push(("kube-scheduler", str_at("/cluster/scheduler/image")));
        }
        for (name, image) in images {
            let Some((version, minor)) = image.and_then(image_kubernetes_version) else {
                continue;
            };
            let reason = if minor < min {
                "too old"
            } else if minor > max {
                "too new"
            } else {
                continue;
            };
            problems.push(format!(
                "{name} image is not valid: version of Kubernetes {version} is {reason} to be used with Talos {talos}"
            ));
        }
    }
    problems
}

/// Why kube-apiserver exits at start, if it does: Talos v1.10/v1.11 add the PodSecurityPolicy
/// admission plugin unless `cluster.apiServer.disablePodSecurityPolicy` is true, and Kubernetes
/// removed that plugin in 1.25 (every release those lines run).
// Talos: internal/app/machined/pkg/controllers/k8s/control_plane.go (v1.11.0)
// PodSecurityPolicyEnabled, control_plane_static_pod.go (enable-admission-plugins);
// Kubernetes: plugin/pkg/admission/security/podsecuritypolicy removed in v1.25.0.
fn apiserver_refusal(main: &Value, line: &str) -> Option<String> {
    if !matches!(line, "v1.10" | "v1.11") {
        return None;
    }
    if main.pointer("/cluster/apiServer/disablePodSecurityPolicy") == Some(&Value::Bool(true)) {
        return None;
    }
    let image = main
        .pointer("/cluster/apiServer/image")
        .or_else(|| main.pointer("/machine/kubelet/image"))
        .and_then(Value::as_str)?;
    let (_, minor) = image_kubernetes_version(image)?;
    (minor >= 25).then(|| {
        "kube-apiserver exited: Error: enable-admission-plugins plugin \"PodSecurityPolicy\" is unknown".to_string()
    })
}

/// Parses and checks a multi-document config for a node running `talos_version`.
/// The error is the reason a real node would give with `InvalidArgument`.
pub fn parse(yaml: &[u8], talos_version: &str) -> Result<MachineConfig, String> {
    let line = version_line(talos_version)
        .ok_or_else(|| format!("no schema for Talos version {talos_version}"))?;
    let text = std::str::from_utf8(yaml).map_err(|_| "config is not UTF-8".to_string())?;
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(de)
            .map_err(|e| format!("failed to parse config: {e}"))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    for (i, doc) in docs.iter().enumerate() {
        let def = definition_for(line, doc).map_err(|e| format!("failed to parse config: {e}"))?;
        let validator = validator(line, &def)?;
        let errors: Vec<_> = validator.iter_errors(doc).collect();
        if !errors.is_empty() {
            // Talos decodes strictly (configloader/internal/decoder/decoder.go `KnownFields`):
            // an unknown field or a wrong type fails the decoding; anything else is validation.
            let undecodable = errors.iter().any(|e| {
                matches!(
                    e.kind,
                    jsonschema::error::ValidationErrorKind::AdditionalProperties { .. }
                        | jsonschema::error::ValidationErrorKind::Type { .. }
                )
            });
            let text: Vec<String> = errors
                .iter()
                .map(|e| format!("{} at {:?}", e, e.instance_path.to_string()))
                .collect();
            return Err(format!(
                "{}document {i} ({def}) is invalid for Talos {line}: {}",
                if undecodable {
                    "failed to parse config: "
                } else {
                    ""
                },
                text.join("; ")
            ));
        }
    }
    let main = docs
        .iter()
        .find(|d| d.get("version").is_some() && d.get("kind").is_none())
        .ok_or("config has no v1alpha1 document")?;
    let problems = semantic_problems(main, talos_version);
    if !problems.is_empty() {
        return Err(multierror(&problems));
    }
    let machine_type = match main.pointer("/machine/type").and_then(Value::as_str) {
        Some("controlplane") => MachineType::Controlplane,
        Some("worker") => MachineType::Worker,
        other => {
            return Err(format!(
                "machine.type must be controlplane or worker, got {other:?}"
            ))
        }
    };
    let os_ca_crt = b64_pem(main.pointer("/machine/ca/crt")).ok_or("machine.ca.crt is missing")?;
    let os_ca_key = b64_pem(main.pointer("/machine/ca/key"));
    if machine_type == MachineType::Controlplane && os_ca_key.is_none() {
        return Err("machine.ca.key is required on a control plane".into());
    }
    crate::pki::certificate_der(&os_ca_crt).map_err(|e| format!("machine.ca.crt: {e}"))?;
    if let Some(key) = &os_ca_key {
        crate::pki::key_pair(key).map_err(|e| format!("machine.ca.key: {e}"))?;
    }
    let str_at = |p: &str| main.pointer(p).and_then(Value::as_str).map(str::to_string);
    let endpoint = str_at("/cluster/controlPlane/endpoint")
        .ok_or("cluster.controlPlane.endpoint is missing")?;
    let cluster_name = str_at("/cluster/clusterName").unwrap_or_default();
    let cluster_id = str_at("/cluster/id").unwrap_or_else(|| format!("{cluster_name}@{endpoint}"));
    let kind_doc = |kind: &str| {
        docs.iter()
            .find(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
    };
    let hostname = kind_doc("HostnameConfig")
        .and_then(|d| {
            d.get("hostname")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .or_else(|| str_at("/machine/network/hostname"));
    let vip_v1alpha1 = main
        .pointer("/machine/network/interfaces")
        .and_then(Value::as_array)
        .and_then(|ifs| {
            ifs.iter()
                .find_map(|i| i.pointer("/vip/ip").and_then(Value::as_str))
        });
    let vip_doc = kind_doc("Layer2VIPConfig").and_then(|d| d.get("name").and_then(Value::as_str));
    let vip = vip_doc
        .or(vip_v1alpha1)
        .map(|v| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("VIP {v:?} is not an IP address"))
        })
        .transpose()?;
    let static_addresses = static_addresses(main, &docs);
    let kubelet_version = str_at("/machine/kubelet/image")
        .and_then(|image| image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .unwrap_or_else(|| "v1.32.0".into());
    // Talos renders the static pods from these fields (Talos: internal/app/machined/pkg/
    // controllers/k8s/control_plane_static_pod.go (v1.12.0)); the defaults follow the kubelet.
    let static_pods = if machine_type == MachineType::Controlplane {
        [
            ("kube-apiserver", "/cluster/apiServer/image"),
            (
                "kube-controller-manager",
                "/cluster/controllerManager/image",
            ),
            ("kube-scheduler", "/cluster/scheduler/image"),
        ]
        .into_iter()
        .map(|(name, pointer)| {
            let image = str_at(pointer)
                .unwrap_or_else(|| format!("registry.k8s.io/{name}:{kubelet_version}"));
            (name.to_string(), image)
        })
        .collect()
    } else {
        Vec::new()
    };
    let install_image = str_at("/machine/install/image");
    let install_version = install_image
        .clone()
        .and_then(|image| image.rsplit_once(':').map(|(_, tag)| tag.to_string()))
        .filter(|tag| version_line(tag).is_some());
    let apiserver_refusal = (machine_type == MachineType::Controlplane)
        .then(|| apiserver_refusal(main, line))
        .flatten();
    let documents = docs
        .iter()
        .map(|d| {
            d.get("kind")
                .and_then(Value::as_str)
                .unwrap_or("v1alpha1")
                .to_string()
        })
        .collect();
    Ok(MachineConfig {
        documents,
        apiserver_refusal,
        machine_type,
        hostname,
        os_ca_crt,
        os_ca_key,
        cluster_id,
        cluster_name,
        endpoint,
        k8s_ca_crt: b64_pem(main.pointer("/cluster/ca/crt")),
        k8s_ca_key: b64_pem(main.pointer("/cluster/ca/key")),
        etcd_ca_crt: b64_pem(main.pointer("/cluster/etcd/ca/crt")),
        etcd_ca_key: b64_pem(main.pointer("/cluster/etcd/ca/key")),
        vip,
        static_addresses,
        kubelet_version,
        static_pods,
        install_version,
        install_image,
        kube_addons: crate::kubernetes::KubeAddons::from_config(main),
        reboot_part: super::immediate::reboot_part(main),
        v1alpha1: main.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::talos::sample::SampleCluster;

    fn cluster() -> SampleCluster {
        SampleCluster::generate("unit", "10.0.0.5".parse().unwrap()).unwrap()
    }

    fn main_doc(yaml: &str) -> serde_yaml::Value {
        serde_yaml::from_str(yaml.split("---\n").next().unwrap()).unwrap()
    }

    #[test]
    fn a_v1_12_config_yields_vip_hostname_and_kubelet_version() {
        let config = parse(cluster().config(true, "cp-1").as_bytes(), "v1.12.1").unwrap();
        assert_eq!(config.machine_type, MachineType::Controlplane);
        assert_eq!(config.hostname.as_deref(), Some("cp-1"));
        assert_eq!(config.vip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(config.kubelet_version, "v1.32.3");
        assert!(config.os_ca_key.is_some() && config.k8s_ca_key.is_some());
    }

    #[test]
    fn a_v1_10_config_carries_its_vip_on_an_interface() {
        let mut doc = main_doc(&cluster().config(true, "cp-1"));
        doc["machine"]["network"] = serde_yaml::from_str(
            "hostname: old-style\ninterfaces:\n  - interface: eth0\n    vip:\n      ip: 10.0.0.9\n",
        )
        .unwrap();
        let yaml = serde_yaml::to_string(&doc).unwrap();
        let config = parse(yaml.as_bytes(), "v1.10.7").unwrap();
        assert_eq!(config.vip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(config.hostname.as_deref(), Some("old-style"));
    }

    #[test]
    fn kubernetes_outside_the_release_window_is_refused_with_talos_message() {
        let yaml = cluster()
            .config(true, "cp-1")
            .replace("kubelet:v1.32.3", "kubelet:v1.36.1");
        let err = parse(yaml.as_bytes(), "v1.12.0").unwrap_err();
        assert_eq!(
            err,
            "1 error occurred:\n\t* kubelet image is not valid: version of Kubernetes 1.36.1 is too new to be used with Talos 1.12.0\n\n"
        );
    }

    #[test]
    fn kube_apiserver_exits_on_v1_11_unless_pod_security_policy_is_disabled() {
        // The v1alpha1 document alone: v1.11 has no HostnameConfig.
        let mut doc = main_doc(&cluster().config(true, "cp-1"));
        let yaml = serde_yaml::to_string(&doc).unwrap();
        let config = parse(yaml.as_bytes(), "v1.11.0").unwrap();
        assert!(config
            .apiserver_refusal
            .unwrap()
            .contains("plugin \"PodSecurityPolicy\" is unknown"));
        doc["cluster"]["apiServer"] =
            serde_yaml::from_str("disablePodSecurityPolicy: true").unwrap();
        let yaml = serde_yaml::to_string(&doc).unwrap();
        assert_eq!(
            parse(yaml.as_bytes(), "v1.11.0").unwrap().apiserver_refusal,
            None
        );
        assert_eq!(
            parse(cluster().config(true, "cp-1").as_bytes(), "v1.12.0")
                .unwrap()
                .apiserver_refusal,
            None
        );
    }

    #[test]
    fn fields_talos_still_decodes_but_no_longer_documents_are_taken_and_unknown_ones_refused() {
        // With its main document changed by `edit`, the sample config as `version` reads it.
        let parsed = |version: &str, edit: &dyn Fn(&mut serde_yaml::Value)| {
            let config = cluster().config(true, "cp-1");
            let (main, rest) = config.split_once("---\n").unwrap();
            let mut doc: serde_yaml::Value = serde_yaml::from_str(main).unwrap();
            edit(&mut doc);
            let yaml = format!("{}---\n{rest}", serde_yaml::to_string(&doc).unwrap());
            parse(yaml.as_bytes(), version)
        };
        // gen config's v1.11 fields carried onto v1.12 and v1.13: Talos still decodes
        // disablePodSecurityPolicy and persist there (`docgen:nodoc`), and ignores the first.
        let old_fields = |persist: bool| {
            move |doc: &mut serde_yaml::Value| {
                doc["persist"] = persist.into();
                doc["cluster"]["apiServer"] =
                    serde_yaml::from_str("disablePodSecurityPolicy: true").unwrap();
            }
        };
        for version in ["v1.12.0", "v1.13.0"] {
            let config = parsed(version, &old_fields(true)).unwrap();
            assert_eq!(config.apiserver_refusal, None);
            // `.persist` is validated: false is refused with Talos's message.
            let err = parsed(version, &old_fields(false)).unwrap_err();
            assert!(err.contains(".persist should be enabled"), "{err}");
            // A field no release decodes is still refused, as Talos's strict decoder does.
            let err = parsed(version, &|doc| {
                doc["cluster"]["apiServer"] = serde_yaml::from_str("notAField: true").unwrap();
            })
            .unwrap_err();
            assert!(
                err.starts_with("failed to parse config") && err.contains("notAField"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_vip_on_a_worker_and_a_missing_install_disk_are_refused() {
        let main = serde_json::json!({
            "machine": {
                "type": "worker",
                "install": { "image": "x" },
                "network": { "interfaces": [{ "deviceSelector": { "physical": true }, "vip": { "ip": "10.0.0.10" } }] },
            },
            "cluster": { "controlPlane": { "endpoint": "10.0.0.10:6443" } },
        });
        let problems = semantic_problems(&main, "v1.10.0");
        assert_eq!(
            problems,
            [
                "either install disk or diskSelector should be defined",
                "virtual (shared) IP is not allowed on non-controlplane nodes",
                "invalid controlplane endpoint: \"10.0.0.10:6443\" is not a valid URL with a host",
            ]
        );
    }

    #[test]
    fn documents_unknown_to_the_node_version_are_rejected() {
        // The network documents only exist from v1.12 on; the first of them fails the decoding.
        for release in ["v1.10.7", "v1.11.5"] {
            let err = parse(cluster().config(true, "cp-1").as_bytes(), release).unwrap_err();
            assert!(err.ends_with("\"v1alpha1\": not registered"), "{err}");
        }
    }

    #[test]
    fn a_control_plane_without_the_os_ca_key_is_rejected_but_a_worker_is_fine() {
        let sample = cluster();
        assert!(parse(sample.config(false, "w-1").as_bytes(), "v1.12.0").is_ok());
        let mut doc = main_doc(&sample.config(true, "cp-1"));
        doc["machine"]["ca"].as_mapping_mut().unwrap().remove("key");
        let err = parse(serde_yaml::to_string(&doc).unwrap().as_bytes(), "v1.12.0").unwrap_err();
        assert!(err.contains("machine.ca.key"), "{err}");
        doc["machine"]["ca"].as_mapping_mut().unwrap().remove("crt");
        doc["machine"]["type"] = "worker".into();
        let err = parse(serde_yaml::to_string(&doc).unwrap().as_bytes(), "v1.12.0").unwrap_err();
        assert!(err.contains("machine.ca.crt"), "{err}");
    }
}

//! castle's configs against what `talosctl gen config` writes for each contract, field by
//! field. The expected documents are in `testdata/gen-config/` with the Talos sources they were
//! read from; every place castle differs is listed below with its reason.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::talos::pki::tests::bundle;

/// Fields whose value castle sets differently from `gen config`, and why.
const DIFFERENCES: &[(&str, &str)] = &[
    ("v1alpha1:persist", "deprecated (Talos only refuses false) and not in Talos's published JSON schema, which castle checks every document against"),
    ("v1alpha1:machine.certSANs", "castle adds the node's IP, the VIP and the endpoint host (Talos adds them anyway)"),
    ("v1alpha1:machine.install.image", "the Image Factory installer of the cluster's extensions"),
    ("v1alpha1:machine.network", "v1.10/v1.11: castle's static network; v1.12: gen's empty compatibility block, castle uses network documents"),
    ("v1alpha1:cluster.apiServer.certSANs", "castle adds every control plane's IP and the extra SANs"),
    ("v1alpha1:cluster.apiServer.auditPolicy", "left unset: Talos applies the same default policy (APIServerDefaultAuditPolicy)"),
    ("v1alpha1:cluster.extraManifests", "written only when set"),
    ("v1alpha1:cluster.inlineManifests", "written only when set"),
    ("HostnameConfig:auto", "castle names each node after its Terraform node name, not a stable random one"),
];

/// Fields and documents castle writes that `gen config` does not, and why.
const ADDITIONS: &[(&str, &str)] = &[
    (
        "v1alpha1:machine.kubelet.nodeIP",
        "keeps the kubelet on the node subnet, off the VIP",
    ),
    (
        "v1alpha1:cluster.etcd.advertisedSubnets",
        "etcd peers talk on the node subnet, never on the VIP",
    ),
    ("HostnameConfig:hostname", "the node's name"),
    ("LinkAliasConfig:", "the node's static network (v1.12+)"),
    ("LinkConfig:", "the node's static network (v1.12+)"),
    ("Layer2VIPConfig:", "the VIP on control planes (v1.12+)"),
    ("ResolverConfig:", "the nameservers (v1.12+)"),
];

fn spec(talos: &str) -> ClusterSpec {
    let node = NodeSpec::plain;
    let minor = TalosVersion::parse(talos).unwrap().minor;
    ClusterSpec {
        name: "homelab".into(),
        vip: Some("10.0.0.10".into()),
        talos_version: talos.into(),
        kubernetes_version: minor.default_kubernetes_version().into(),
        nodes: BTreeMap::from([
            ("cp-1".to_string(), node("10.0.0.11/24", Role::ControlPlane)),
            ("w-1".to_string(), node("10.0.0.21/24", Role::Worker)),
        ]),
        gateway: "10.0.0.1".into(),
        nameservers: vec!["10.0.0.1".into()],
        ..Default::default()
    }
}

/// Every leaf of every document as `Kind:dotted.path`, the v1alpha1 document as `v1alpha1`.
fn leaves(docs: &[Value]) -> BTreeMap<String, Value> {
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let sep = if path.ends_with(':') { "" } else { "." };
                    walk(v, format!("{path}{sep}{k}"), out);
                }
            }
            _ => {
                out.insert(path, v.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    for doc in docs {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("v1alpha1");
        let mut doc = doc.clone();
        if let Some(map) = doc.as_object_mut() {
            if kind != "v1alpha1" {
                map.remove("apiVersion");
                map.remove("kind");
            }
        }
        walk(&doc, format!("{kind}:"), &mut out);
    }
    out
}

fn covered(path: &str, list: &[(&str, &str)]) -> bool {
    list.iter().any(|(prefix, _)| path.starts_with(prefix))
}

fn expected(contract: &str, role: &str) -> Vec<Value> {
    let path = format!(
        "{}/src/talos/config/testdata/gen-config/{contract}-{role}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    patch::parse_patch(&text).expect("expected documents parse")
}

#[test]
fn castle_writes_what_gen_config_writes_for_every_contract_except_its_stated_differences() {
    for talos in ["v1.10.9", "v1.11.6", "v1.12.11", "v1.13.9"] {
        let contract = &talos[..5];
        for (node, role) in [("cp-1", "controlplane"), ("w-1", "worker")] {
            let ours =
                patch::parse_patch(&generate_node_config(&spec(talos), bundle(), node).unwrap())
                    .unwrap();
            let ours = leaves(&ours);
            let gen = leaves(&expected(contract, role));
            let mut wrong = Vec::new();
            for (path, want) in &gen {
                if covered(path, DIFFERENCES) {
                    continue;
                }
                let got = ours.get(path);
                let ok = match want.as_str() {
                    Some("<secret>") => got.and_then(Value::as_str).is_some_and(|s| !s.is_empty()),
                    _ => got == Some(want),
                };
                if !ok {
                    wrong.push(format!("{path}: gen writes {want}, castle {got:?}"));
                }
            }
            for path in ours.keys() {
                if !gen.contains_key(path)
                    && !covered(path, DIFFERENCES)
                    && !covered(path, ADDITIONS)
                {
                    wrong.push(format!("{path}: castle writes it, gen does not"));
                }
            }
            assert!(wrong.is_empty(), "{talos} {role}:\n{}", wrong.join("\n"));
        }
    }
}

#[test]
fn an_ipv6_endpoint_gets_ipv6_pod_and_service_subnets_as_gen_config_chooses() {
    let mut s = spec("v1.12.1");
    s.vip = None;
    s.endpoint = Some("fd00::10".into());
    for n in s.nodes.values_mut() {
        n.address = n.address.replace("10.0.0.", "fd00::");
        n.address = n.address.replace("/24", "/64");
    }
    s.gateway = "fd00::1".into();
    s.nameservers = vec!["fd00::1".into()];
    let docs = patch::parse_patch(&generate_node_config(&s, bundle(), "cp-1").unwrap()).unwrap();
    let network = &docs[0]["cluster"]["network"];
    assert_eq!(
        network["podSubnets"],
        serde_json::json!(["fc00:db8:10::/56"])
    );
    assert_eq!(
        network["serviceSubnets"],
        serde_json::json!(["fc00:db8:20::/112"])
    );
    assert_eq!(
        docs[0]["cluster"]["controlPlane"]["endpoint"],
        "https://[fd00::10]:6443"
    );
}

//! Config generation checks: every document against Talos's schema, for every release line.

use std::collections::BTreeMap;

use serde_json::Value;

use super::schema::{validate_against_root, validate_document};
use super::*;
use crate::talos::pki::tests::bundle;

fn node(address: &str, role: Role) -> NodeSpec {
    NodeSpec::plain(address, role)
}

/// Three control planes and a worker on 10.0.0.0/24, VIP 10.0.0.10.
fn spec(version: &str) -> ClusterSpec {
    let mut nodes = BTreeMap::new();
    nodes.insert("cp-1".to_string(), node("10.0.0.11/24", Role::ControlPlane));
    nodes.insert("cp-2".to_string(), node("10.0.0.12/24", Role::ControlPlane));
    nodes.insert("cp-3".to_string(), node("10.0.0.13/24", Role::ControlPlane));
    nodes.insert("worker-1".to_string(), node("10.0.0.21/24", Role::Worker));
    ClusterSpec {
        name: "homelab".into(),
        endpoint: None,
        vip: Some("10.0.0.10".into()),
        talos_version: version.into(),
        kubernetes_version: "v1.33.2".into(),
        nodes,
        gateway: "10.0.0.1".into(),
        nameservers: vec!["10.0.0.1".into(), "1.1.1.1".into()],
        ..Default::default()
    }
}

const VERSIONS: [&str; 4] = ["v1.10.7", "v1.11.3", "v1.12.1", "v1.13.0"];

/// A SecureBoot installer, which `tpm` disk encryption needs.
fn secure_boot(s: &mut ClusterSpec, version: &str) {
    s.extensions = vec![];
    s.install_image = Some(format!(
        "factory.talos.dev/installer-secureboot/{}:{version}",
        schematic_id(&[])
    ));
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    patch::parse_patch(yaml).expect("generated YAML parses")
}

fn kind_docs<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .collect()
}

fn generate(spec: &ClusterSpec, node: &str) -> Vec<Value> {
    parse_docs(&generate_node_config(spec, bundle(), node).expect("generation"))
}

fn issues_at<'a>(issues: &'a [Issue], path: &str) -> Vec<&'a Issue> {
    issues
        .iter()
        .filter(|i| validate::display_path(&i.path) == path)
        .collect()
}

#[test]
fn every_document_matches_the_talos_schema_across_versions_roles_and_options() {
    let encryptions = [
        None,
        Some(DiskEncryption {
            key: EncryptionKeyKind::NodeId,
        }),
        Some(DiskEncryption {
            key: EncryptionKeyKind::Tpm,
        }),
    ];
    for version in VERSIONS {
        let minor = TalosVersion::parse(version).unwrap().minor;
        for vip in [Some("10.0.0.10"), None] {
            for enc in encryptions {
                for extensions in [vec![], vec!["siderolabs/iscsi-tools".to_string()]] {
                    let mut s = spec(version);
                    s.vip = vip.map(str::to_string);
                    s.endpoint = vip.is_none().then(|| "k8s.home.arpa".to_string());
                    s.disk_encryption = enc;
                    s.extensions = extensions;
                    if enc.is_some_and(|e| e.key == EncryptionKeyKind::Tpm) {
                        secure_boot(&mut s, version);
                    }
                    s.patches = vec!["machine:\n  nodeLabels:\n    castle.dev/zone: lab\n".into()];
                    s.nodes.get_mut("worker-1").unwrap().link =
                        NetworkLink::Mac("BC:24:11:00:00:21".into());
                    s.nodes.get_mut("cp-2").unwrap().link = NetworkLink::Name("ens18".into());
                    for name in s.nodes.keys() {
                        let what = format!("{version} {name} vip={vip:?} enc={enc:?}");
                        let docs = generate(&s, name);
                        for doc in &docs {
                            assert!(
                                validate_against_root(minor, doc),
                                "{what}: root schema: {doc}"
                            );
                            validate_document(minor, doc).unwrap_or_else(|e| panic!("{what}: {e}"));
                        }
                        check_shape(&s, name, minor, &docs, &what);
                    }
                }
            }
        }
    }
}

/// What must be where, per release line and role.
fn check_shape(s: &ClusterSpec, name: &str, minor: TalosMinor, docs: &[Value], what: &str) {
    let v1 = &docs[0];
    let control_plane = s.nodes[name].role == Role::ControlPlane;
    assert_eq!(v1["version"], "v1alpha1", "{what}");
    assert_eq!(v1["machine"]["type"], s.nodes[name].role.as_str());
    assert_eq!(
        v1["machine"]["nodeLabels"]["castle.dev/zone"], "lab",
        "{what}: cluster patch"
    );
    let vip_expected = control_plane && s.vip.is_some();
    if minor.has_network_documents() {
        assert!(
            v1["machine"].get("network").is_none(),
            "{what}: no machine.network"
        );
        let vips = kind_docs(docs, "Layer2VIPConfig");
        assert_eq!(vips.len(), usize::from(vip_expected), "{what}");
        if vip_expected {
            assert_eq!(vips[0]["name"], "10.0.0.10");
        }
        let links = kind_docs(docs, "LinkConfig");
        assert_eq!(
            links[0]["addresses"][0]["address"],
            s.nodes[name].address.as_str()
        );
        assert_eq!(links[0]["routes"][0]["gateway"], "10.0.0.1");
        assert_eq!(kind_docs(docs, "HostnameConfig")[0]["hostname"], name);
        assert_eq!(
            kind_docs(docs, "ResolverConfig")[0]["nameservers"][1]["address"],
            "1.1.1.1"
        );
    } else {
        let iface = &v1["machine"]["network"]["interfaces"][0];
        assert_eq!(iface["addresses"][0], s.nodes[name].address.as_str());
        assert_eq!(iface["routes"][0]["gateway"], "10.0.0.1");
        assert_eq!(iface.get("vip").is_some(), vip_expected, "{what}");
        assert_eq!(v1["machine"]["network"]["hostname"], name);
        assert!(docs.len() == 1 || minor.has_volume_encryption(), "{what}");
    }
    let volumes = kind_docs(docs, "VolumeConfig");
    match (s.disk_encryption, minor.has_volume_encryption()) {
        (Some(_), true) => {
            assert_eq!(volumes.len(), 2, "{what}");
            assert!(v1["machine"].get("systemDiskEncryption").is_none());
        }
        (Some(_), false) => {
            assert!(volumes.is_empty());
            assert!(v1["machine"]["systemDiskEncryption"]["state"]["keys"][0].is_object());
        }
        (None, _) => {
            assert!(volumes.is_empty() && v1["machine"].get("systemDiskEncryption").is_none())
        }
    }
    // Keys only where they belong.
    assert_eq!(
        v1["machine"]["ca"].get("key").is_some(),
        control_plane,
        "{what}"
    );
    assert_eq!(
        v1["cluster"]["ca"].get("key").is_some(),
        control_plane,
        "{what}"
    );
    assert_eq!(v1["cluster"].get("serviceAccount").is_some(), control_plane);
    assert_eq!(v1["cluster"].get("etcd").is_some(), control_plane);
    let endpoint = v1["cluster"]["controlPlane"]["endpoint"].as_str().unwrap();
    match &s.vip {
        Some(_) => assert_eq!(endpoint, "https://10.0.0.10:6443"),
        None => assert_eq!(endpoint, "https://k8s.home.arpa:6443"),
    }
}

#[test]
fn same_spec_and_bundle_give_byte_identical_configs() {
    for version in VERSIONS {
        let mut s = spec(version);
        s.disk_encryption = Some(DiskEncryption {
            key: EncryptionKeyKind::Tpm,
        });
        secure_boot(&mut s, version);
        s.inline_manifests = vec![InlineManifest {
            name: "flux".into(),
            contents: "kind: List\n".into(),
        }];
        let a = generate_cluster_configs(&s, bundle()).unwrap();
        let b = generate_cluster_configs(&s.clone(), bundle()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn control_planes_get_manifests_sans_and_kubernetes_images_workers_do_not() {
    let mut s = spec("v1.12.1");
    s.extra_cert_sans = vec!["k8s.home.arpa".into()];
    s.inline_manifests = vec![InlineManifest {
        name: "flux".into(),
        contents: "kind: List\n".into(),
    }];
    s.extra_manifests = vec!["https://example.org/gotk.yaml".into()];
    let cp = &generate(&s, "cp-1")[0]["cluster"];
    assert_eq!(cp["inlineManifests"][0]["name"], "flux");
    assert_eq!(cp["extraManifests"][0], "https://example.org/gotk.yaml");
    assert_eq!(
        cp["apiServer"]["image"],
        "registry.k8s.io/kube-apiserver:v1.33.2"
    );
    let sans: Vec<&str> = cp["apiServer"]["certSANs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        sans,
        [
            "10.0.0.10",
            "10.0.0.11",
            "10.0.0.12",
            "10.0.0.13",
            "k8s.home.arpa"
        ]
    );
    let worker = &generate(&s, "worker-1")[0];
    assert!(worker["cluster"].get("inlineManifests").is_none());
    assert!(worker["cluster"].get("apiServer").is_none());
    assert_eq!(
        worker["machine"]["kubelet"]["image"],
        "ghcr.io/siderolabs/kubelet:v1.33.2"
    );
}

#[test]
fn extensions_pick_the_image_factory_installer() {
    let mut s = spec("v1.12.1");
    s.extensions = vec![
        "siderolabs/iscsi-tools".into(),
        "siderolabs/util-linux-tools".into(),
    ];
    let docs = generate(&s, "worker-1");
    assert_eq!(
        docs[0]["machine"]["install"]["image"],
        "factory.talos.dev/installer/613e1592b2da41ae5e265e8789429f22e121aab91cb4deb6bc3c0b6262961245:v1.12.1"
    );
    assert_eq!(docs[0]["machine"]["install"]["disk"], "/dev/sda");
    s.extensions.clear();
    s.install_image = Some("ghcr.io/example/installer:v1.12.1".into());
    assert_eq!(
        installer_image(&s).unwrap(),
        "ghcr.io/example/installer:v1.12.1"
    );
}

#[test]
fn a_node_on_an_older_release_gets_its_release_documents_with_the_clusters_installer() {
    let s = spec("v1.12.1");
    assert_eq!(
        earlier_contracts(&s),
        vec![TalosMinor::V1_10, TalosMinor::V1_11]
    );
    let older = parse_docs(
        &generate_node_config_for(&s, bundle(), "cp-1", TalosMinor::V1_11).expect("generation"),
    );
    // No v1.12 network document: a v1.11 node would refuse them as not registered.
    assert_eq!(older.len(), kind_docs(&older, "VolumeConfig").len() + 1);
    for doc in &older {
        validate_document(TalosMinor::V1_11, doc).expect("a v1.11 document");
    }
    assert!(older[0]["machine"]["network"]["interfaces"].is_array());
    assert_eq!(
        older[0]["cluster"]["apiServer"]["disablePodSecurityPolicy"],
        true
    );
    // The cluster's release and installer: the upgrade after the join brings it there.
    let full = generate(&s, "cp-1");
    assert_eq!(
        older[0]["machine"]["install"]["image"],
        full[0]["machine"]["install"]["image"]
    );
    assert!(!kind_docs(&full, "LinkConfig").is_empty());
    // A newer contract than talos_version is talos_version's.
    assert_eq!(
        generate_node_config_for(&s, bundle(), "cp-1", TalosMinor::V1_13).unwrap(),
        generate_node_config(&s, bundle(), "cp-1").unwrap()
    );
}

#[test]
fn patches_apply_cluster_then_role_then_node() {
    let mut s = spec("v1.11.3");
    let label = |v: &str| format!("machine:\n  nodeLabels:\n    tier: {v}\n");
    s.patches = vec![label("cluster")];
    s.role_patches
        .insert(Role::ControlPlane, vec![label("role")]);
    s.nodes.get_mut("cp-1").unwrap().patches = vec![label("node")];
    assert_eq!(
        generate(&s, "cp-1")[0]["machine"]["nodeLabels"]["tier"],
        "node"
    );
    assert_eq!(
        generate(&s, "cp-2")[0]["machine"]["nodeLabels"]["tier"],
        "role"
    );
    assert_eq!(
        generate(&s, "worker-1")[0]["machine"]["nodeLabels"]["tier"],
        "cluster"
    );
}

#[test]
fn a_patch_can_remove_a_key_and_add_a_document() {
    let mut s = spec("v1.13.0");
    s.patches = vec![
        "machine:\n  features:\n    $patch: delete\n---\napiVersion: v1alpha1\nkind: TimeSyncConfig\nntp:\n  servers: [time.cloudflare.com]\n"
            .into(),
    ];
    let docs = generate(&s, "worker-1");
    assert!(docs[0]["machine"].get("features").is_none());
    assert_eq!(kind_docs(&docs, "TimeSyncConfig").len(), 1);
}

#[test]
fn a_patch_that_breaks_the_schema_is_reported_with_its_path() {
    let mut s = spec("v1.12.1");
    s.nodes.get_mut("cp-1").unwrap().patches =
        vec!["machine:\n  install:\n    disk: /dev/sda\n    wipeEverything: true\n".into()];
    let err = generate_node_config(&s, bundle(), "cp-1").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::PatchSchema { .. }), "{msg}");
    assert!(msg.contains(r#"nodes["cp-1"].patches[0]"#), "{msg}");
    assert!(msg.contains("wipeEverything"), "{msg}");
    // Other nodes are unaffected.
    generate_node_config(&s, bundle(), "cp-2").unwrap();
}

#[test]
fn a_patch_that_is_not_yaml_is_an_issue_on_that_patch() {
    let mut s = spec("v1.12.1");
    s.role_patches
        .insert(Role::Worker, vec!["machine: [unclosed".into()]);
    let issues = validate(&s);
    assert_eq!(
        issues_at(&issues, r#"role_patches["worker"][0]"#).len(),
        1,
        "{issues:?}"
    );
    let err = generate_node_config(&s, bundle(), "cp-1").unwrap_err();
    assert!(
        err.to_string().contains(r#"role_patches["worker"][0]"#),
        "{err}"
    );
}

#[test]
fn a_network_interfaces_patch_is_refused_on_v1_12() {
    let mut s = spec("v1.12.1");
    s.patches = vec!["machine:\n  network:\n    interfaces: [{interface: eth0}]\n".into()];
    let err = generate_node_config(&s, bundle(), "worker-1").unwrap_err();
    assert!(err.to_string().contains("patches[0]"), "{err}");
}

#[test]
fn talos_versions_accept_release_lines_and_patches_and_name_the_attribute_otherwise() {
    assert_eq!(
        TalosVersion::parse("v1.12").unwrap().minor,
        TalosMinor::V1_12
    );
    assert_eq!(TalosVersion::parse("v1.12.3").unwrap().patch, Some(3));
    assert_eq!(
        TalosVersion::parse("1.10.0").unwrap().minor,
        TalosMinor::V1_10
    );
    for bad in [
        "v1.9.5",
        "v1.14.0",
        "v2.0",
        "latest",
        "v1.12.x",
        "v1.12.3.4",
        "",
    ] {
        let err = TalosVersion::parse(bad).unwrap_err().to_string();
        assert!(err.contains("talos_version"), "{bad}: {err}");
    }
    let issues = validate(&spec("v1.9.0"));
    assert_eq!(
        issues_at(&issues, "talos_version")[0].severity,
        Severity::Error
    );
}

#[test]
fn a_release_line_without_patch_needs_an_install_image() {
    let mut s = spec("v1.12");
    assert_eq!(issues_at(&validate(&s), "talos_version").len(), 1);
    s.install_image = Some("ghcr.io/siderolabs/installer:v1.12.1".into());
    assert!(validate(&s).is_empty(), "{:?}", validate(&s));
    generate_node_config(&s, bundle(), "cp-1").unwrap();
}

#[test]
fn a_valid_cluster_has_no_issues() {
    assert_eq!(validate(&spec("v1.12.1")), vec![]);
}

#[test]
fn no_control_plane_is_an_error() {
    let mut s = spec("v1.12.1");
    s.nodes.retain(|_, n| n.role == Role::Worker);
    s.vip = None;
    let issues = validate(&s);
    let at = issues_at(&issues, "nodes");
    assert_eq!(at[0].severity, Severity::Error);
    assert!(at[0].summary.contains("No control-plane"));
    assert!(matches!(
        generate_node_config(&s, bundle(), "worker-1"),
        Err(ConfigError::Invalid(_))
    ));
}

#[test]
fn even_number_of_control_planes_warns_about_quorum() {
    let mut s = spec("v1.12.1");
    s.nodes.remove("cp-3");
    let issues = validate(&s);
    let at = issues_at(&issues, "nodes");
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].severity, Severity::Warning);
    assert!(
        at[0].detail.contains("3 nodes survive one loss"),
        "{}",
        at[0].detail
    );
    assert!(
        at[0].detail.contains("2 nodes survive none"),
        "{}",
        at[0].detail
    );
    // A warning does not stop generation.
    generate_node_config(&s, bundle(), "cp-1").unwrap();
}

#[test]
fn duplicate_node_addresses_are_an_error_on_the_second_node() {
    let mut s = spec("v1.12.1");
    s.nodes.get_mut("worker-1").unwrap().address = "10.0.0.12/24".into();
    let issues = validate(&s);
    let at = issues_at(&issues, r#"nodes["worker-1"].address"#);
    assert_eq!(at.len(), 1, "{issues:?}");
    assert!(at[0].detail.contains("cp-2"));
}

#[test]
fn an_address_without_prefix_length_is_an_error() {
    let mut s = spec("v1.12.1");
    s.nodes.get_mut("cp-1").unwrap().address = "10.0.0.11".into();
    let issues = validate(&s);
    let at = issues_at(&issues, r#"nodes["cp-1"].address"#);
    assert!(at[0].detail.contains("prefix length"), "{issues:?}");
}

#[test]
fn a_vip_equal_to_a_node_address_is_an_error() {
    let mut s = spec("v1.12.1");
    s.vip = Some("10.0.0.12".into());
    let issues = validate(&s);
    assert!(issues_at(&issues, "vip")
        .iter()
        .any(|i| i.summary == "VIP equals a node address"));
}

#[test]
fn a_vip_outside_the_control_plane_subnet_is_an_error() {
    let mut s = spec("v1.12.1");
    s.vip = Some("10.0.1.10".into());
    let issues = validate(&s);
    let at = issues_at(&issues, "vip");
    assert_eq!(at.len(), 1);
    assert!(at[0].summary.contains("outside"), "{at:?}");
    assert!(at[0].detail.contains("cp-1"));
}

#[test]
fn a_gateway_outside_the_subnet_is_an_error() {
    let mut s = spec("v1.12.1");
    s.gateway = "192.168.1.1".into();
    let issues = validate(&s);
    let at = issues_at(&issues, "gateway");
    assert_eq!(at.len(), 1);
    assert!(at[0].detail.contains("worker-1"));
}

#[test]
fn no_vip_and_no_endpoint_warns_and_uses_the_first_control_plane() {
    let mut s = spec("v1.10.7");
    s.vip = None;
    let issues = validate(&s);
    assert_eq!(
        issues_at(&issues, "endpoint")[0].severity,
        Severity::Warning
    );
    assert_eq!(
        control_plane_endpoint(&s).unwrap(),
        "https://10.0.0.11:6443"
    );
}

#[test]
fn an_endpoint_url_is_used_as_given_with_its_port_and_its_host_in_the_sans() {
    let mut s = spec("v1.12.1");
    s.endpoint = Some("https://k8s.home.arpa:443".into());
    assert_eq!(
        control_plane_endpoint(&s).unwrap(),
        "https://k8s.home.arpa:443"
    );
    let config = generate_node_config(&s, bundle(), "cp-1").unwrap();
    assert!(
        config.contains("endpoint: https://k8s.home.arpa:443"),
        "{config}"
    );
    assert!(
        config.contains("- k8s.home.arpa"),
        "the endpoint host is a certificate SAN"
    );
    s.endpoint = Some("k8s.home.arpa".into());
    assert_eq!(
        control_plane_endpoint(&s).unwrap(),
        "https://k8s.home.arpa:6443"
    );
}

#[test]
fn bad_nameservers_manifests_and_conflicting_images_are_errors() {
    let mut s = spec("v1.12.1");
    s.nameservers.push("dns.example".into());
    s.extra_manifests = vec!["gotk.yaml".into()];
    s.inline_manifests = vec![
        InlineManifest {
            name: "a".into(),
            contents: String::new(),
        },
        InlineManifest {
            name: "a".into(),
            contents: String::new(),
        },
    ];
    s.install_image = Some("img".into());
    s.extensions = vec!["siderolabs/iscsi-tools".into()];
    let issues = validate(&s);
    for path in [
        "nameservers[2]",
        "extra_manifests[0]",
        "inline_manifests[1].name",
        "extensions",
    ] {
        assert_eq!(issues_at(&issues, path).len(), 1, "{path}: {issues:?}");
    }
}

#[test]
#[ignore = "prints a sample config; run with --ignored --nocapture"]
fn print_sample_config() {
    let mut s = spec("v1.12.1");
    s.disk_encryption = Some(DiskEncryption {
        key: EncryptionKeyKind::NodeId,
    });
    println!("{}", generate_node_config(&s, bundle(), "cp-1").unwrap());
    let s = spec("v1.10.7");
    println!(
        "{}",
        generate_node_config(&s, bundle(), "worker-1").unwrap()
    );
}

#[test]
fn tpm_encryption_with_an_install_image_that_is_no_secure_boot_installer_is_refused_with_the_reason(
) {
    let mut s = spec("v1.12.1");
    s.disk_encryption = Some(DiskEncryption {
        key: EncryptionKeyKind::Tpm,
    });
    s.install_image = Some("ghcr.io/siderolabs/installer:v1.12.1".into());
    let issues = validate(&s);
    let tpm = issues_at(&issues, "disk_encryption");
    assert_eq!(tpm.len(), 1, "{issues:?}");
    assert!(tpm[0].detail.contains("SecureBoot"), "{}", tpm[0].detail);
    secure_boot(&mut s, "v1.12.1");
    assert!(validate(&s).is_empty(), "{:?}", validate(&s));
}

#[test]
fn tpm_encryption_installs_the_factorys_secure_boot_installer_of_the_extensions() {
    let mut s = spec("v1.12.1");
    s.extensions = vec![
        "siderolabs/iscsi-tools".into(),
        "siderolabs/util-linux-tools".into(),
    ];
    s.disk_encryption = Some(DiskEncryption {
        key: EncryptionKeyKind::Tpm,
    });
    assert!(validate(&s).is_empty(), "{:?}", validate(&s));
    let secure = "factory.talos.dev/installer-secureboot/613e1592b2da41ae5e265e8789429f22e121aab91cb4deb6bc3c0b6262961245:v1.12.1";
    assert_eq!(installer_image(&s).unwrap(), secure);
    assert_eq!(
        generate(&s, "cp-1")[0]["machine"]["install"]["image"],
        secure
    );
    s.disk_encryption = Some(DiskEncryption {
        key: EncryptionKeyKind::NodeId,
    });
    assert_eq!(
        installer_image(&s).unwrap(),
        secure.replace("installer-secureboot", "installer")
    );
}

#[test]
fn kubernetes_outside_the_release_window_is_refused_naming_both_versions() {
    for (talos, inside, outside) in [
        ("v1.10.7", ["v1.28.0", "v1.33.9"], ["v1.27.9", "v1.34.0"]),
        ("v1.11.3", ["v1.29.0", "v1.34.1"], ["v1.28.4", "v1.35.0"]),
        ("v1.12.1", ["v1.30.0", "v1.35.2"], ["v1.29.9", "v1.36.0"]),
        ("v1.13.0", ["v1.31.0", "v1.36.1"], ["v1.30.9", "v1.37.0"]),
    ] {
        let mut s = spec(talos);
        for k8s in inside {
            s.kubernetes_version = k8s.into();
            assert!(validate(&s).is_empty(), "{talos} {k8s}: {:?}", validate(&s));
        }
        for k8s in outside {
            s.kubernetes_version = k8s.into();
            let issues = validate(&s);
            let found = issues_at(&issues, "kubernetes_version");
            assert_eq!(found.len(), 1, "{talos} {k8s}: {issues:?}");
            assert!(found[0].detail.contains(&format!("talos_version {talos}")));
            assert!(found[0]
                .detail
                .contains(&format!("kubernetes_version is {k8s}")));
        }
    }
}

#[test]
fn checks_run_on_what_is_known_while_node_macs_and_addresses_are_not() {
    let mut known = KnownSpec::from(&spec("v1.12.1"));
    for node in known.nodes.as_mut().unwrap() {
        node.link = None;
    }
    known.nodes.as_mut().unwrap()[3].address = None;
    assert!(validate_known(&known).is_empty());
    known.vip = Some(Some("10.0.1.10".into()));
    known.talos_version = Some("v1.9.0".into());
    let issues = validate_known(&known);
    assert_eq!(issues_at(&issues, "vip").len(), 1, "{issues:?}");
    assert_eq!(issues_at(&issues, "talos_version").len(), 1, "{issues:?}");
    // Unknown roles: no control-plane count is claimed.
    for node in known.nodes.as_mut().unwrap() {
        node.role = None;
    }
    assert!(issues_at(&validate_known(&known), "nodes").is_empty());
}

#[test]
fn a_mac_given_to_two_nodes_or_malformed_is_ambiguous_nic_selection() {
    let mut s = spec("v1.12.1");
    s.nodes.get_mut("cp-1").unwrap().link = NetworkLink::Mac("bc:24:11:00:00:01".into());
    s.nodes.get_mut("cp-2").unwrap().link = NetworkLink::Mac("BC:24:11:00:00:01".into());
    s.nodes.get_mut("cp-3").unwrap().link = NetworkLink::Mac("bc:24:11:00:01".into());
    let issues = validate(&s);
    assert_eq!(
        issues_at(&issues, "nodes[\"cp-2\"].mac_address").len(),
        1,
        "{issues:?}"
    );
    assert_eq!(
        issues_at(&issues, "nodes[\"cp-3\"].mac_address").len(),
        1,
        "{issues:?}"
    );
}

#[test]
fn v1_10_and_v1_11_disable_pod_security_policy_later_releases_have_no_such_field() {
    for version in VERSIONS {
        let docs = generate(&spec(version), "cp-1");
        let api = &docs[0]["cluster"]["apiServer"];
        let minor = TalosVersion::parse(version).unwrap().minor;
        if minor < TalosMinor::V1_12 {
            assert_eq!(api["disablePodSecurityPolicy"], true, "{version}");
        } else {
            assert!(api.get("disablePodSecurityPolicy").is_none(), "{version}");
        }
        assert_eq!(api["admissionControl"][0]["name"], "PodSecurity");
    }
}

#[test]
fn a_node_on_an_older_release_must_run_kubernetes_version_before_its_upgrade() {
    let mut s = spec("v1.12.0");
    s.kubernetes_version = "v1.35.0".into();
    // v1.11 runs Kubernetes 1.29 to 1.34: its node would refuse the v1.35 kubelet it is given
    // with the v1.11 documents, before castle upgrades it.
    let issue = check_release_runs_kubernetes(&s, "w-1", "v1.11.5").expect("refused");
    assert_eq!(
        issue.path,
        vec![PathStep::Attribute("kubernetes_version".into())]
    );
    assert_eq!(issue.severity, Severity::Error);
    for words in [
        "Node w-1 runs Talos v1.11.5",
        "supports Kubernetes 1.29 to 1.34",
        "kubernetes_version is v1.35.0",
        "1.30 to 1.34",
        "template of v1.12",
    ] {
        assert!(issue.detail.contains(words), "{words}: {}", issue.detail);
    }
    // Inside both windows, on the cluster's own line, on a newer one, or unreadable: fine.
    s.kubernetes_version = "v1.34.2".into();
    assert!(check_release_runs_kubernetes(&s, "w-1", "v1.11.5").is_none());
    s.kubernetes_version = "v1.35.0".into();
    assert!(check_release_runs_kubernetes(&s, "w-1", "v1.12.3").is_none());
    assert!(check_release_runs_kubernetes(&s, "w-1", "v1.13.0").is_none());
    assert!(check_release_runs_kubernetes(&s, "w-1", "").is_none());
    // Three lines behind: the window both share.
    s.talos_version = "v1.13.0".into();
    s.kubernetes_version = "v1.36.0".into();
    let issue = check_release_runs_kubernetes(&s, "w-1", "v1.10.4").expect("refused");
    assert!(issue.detail.contains("1.28 to 1.33"), "{}", issue.detail);
    assert!(
        issue.detail.contains("both run (1.31 to 1.33)"),
        "{}",
        issue.detail
    );
}

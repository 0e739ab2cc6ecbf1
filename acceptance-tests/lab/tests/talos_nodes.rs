//! The Talos node emulator driven through castle's real Talos client, on loopback addresses.

mod common;

use std::time::Duration;

use castle::talos::client::{ApplyMode, BootstrapOutcome, ErrorClass, NodeClient, NodeState};
use castle_lab::talos::sample::SampleCluster;
use castle_lab::talos::Fault;
use common::{
    configure, fleet, ip, options, wait_configured, wait_for, wait_maintenance, wait_state,
};

#[tokio::test]
async fn three_control_planes_bootstrap_once_and_share_one_etcd() {
    let fleet = fleet();
    let addresses = [ip("127.0.1.11"), ip("127.0.1.12"), ip("127.0.1.13")];
    for a in addresses {
        fleet.add_node(a, None).unwrap();
    }
    let cluster = SampleCluster::generate("lab-one", ip("127.0.1.10")).unwrap();
    let credentials = cluster.credentials().unwrap();

    // Fresh nodes answer the maintenance probe.
    for a in addresses {
        wait_state(a, &credentials, NodeState::Maintenance).await;
    }
    let maintenance = NodeClient::connect_insecure(addresses[0], &options())
        .await
        .unwrap();
    let disks = maintenance.disks().await.unwrap();
    assert_eq!(disks[0].device_name, "/dev/sda");
    // Up to v1.12, Version is Admin-only in maintenance mode and the calls machined's
    // maintenance server leaves out are gRPC's own Unimplemented; the release is readable
    // from the COSI `version` resource.
    let err = maintenance.version().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented));
    assert!(
        err.to_string()
            .contains("API is not implemented in maintenance mode"),
        "{err}"
    );
    assert_eq!(maintenance.release().await.unwrap(), "v1.12.0");
    let err = maintenance.bootstrap().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented));
    assert!(
        err.to_string().contains("method Bootstrap not implemented"),
        "{err}"
    );
    let err = maintenance.service_list().await.unwrap_err();
    assert!(
        err.to_string()
            .contains("method ServiceList not implemented"),
        "{err}"
    );

    // A config with a key unknown to v1.12 does not decode: a plain error (Unknown) in
    // maintenance mode, as Talos answers, which castle still takes as final from its text.
    let good = cluster.config(true, "cp-1");
    let bad = good.replacen("machine:\n", "machine:\n  notAKey: 1\n", 1);
    assert_ne!(bad, good);
    let err = maintenance
        .apply_configuration(bad.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unknown), "{err}");
    assert!(err.to_string().contains("failed to parse config"), "{err}");
    assert!(err.to_string().contains("notAKey"), "{err}");
    assert_eq!(err.class(), ErrorClass::Final);
    // Maintenance mode takes AUTO, REBOOT and TRY only.
    let err = maintenance
        .apply_configuration(good.as_bytes(), ApplyMode::NoReboot, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unimplemented), "{err}");
    // A worker config without machine.type is refused too.
    let typeless = good.replacen("type: controlplane", "type: nonsense", 1);
    let err = maintenance
        .apply_configuration(typeless.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");

    for (i, a) in addresses.iter().enumerate() {
        let client = NodeClient::connect_insecure(*a, &options()).await.unwrap();
        let config = cluster.config(true, &format!("cp-{}", i + 1));
        client
            .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
            .await
            .unwrap();
    }

    // After install and reboot, only mTLS answers.
    let first = wait_configured(addresses[0], &credentials).await;
    assert!(
        NodeClient::connect_insecure(addresses[0], &options())
            .await
            .is_err()
            || NodeClient::connect_insecure(addresses[0], &options())
                .await
                .unwrap()
                .disks()
                .await
                .is_err()
    );
    wait_state(
        addresses[0],
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        },
    )
    .await;

    // Bootstrap: retried while not available yet, then done once; AlreadyExists afterwards.
    let outcome = wait_for("bootstrap", Duration::from_secs(10), || async {
        match first.bootstrap().await {
            Ok(o) => Some(o),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("bootstrap failed for good: {e}"),
        }
    })
    .await;
    assert_eq!(outcome, BootstrapOutcome::Bootstrapped);
    // Once its etcd has written its data directory, the node refuses a second bootstrap.
    wait_for("AlreadyExists", Duration::from_secs(10), || async {
        (first.bootstrap().await.ok()? == BootstrapOutcome::AlreadyBootstrapped).then_some(())
    })
    .await;

    // Every control plane ends up with the same three members.
    let mut lists = Vec::new();
    for a in addresses {
        let client = wait_configured(a, &credentials).await;
        let members = wait_for("three etcd members", Duration::from_secs(10), || async {
            let m = client.etcd_member_list().await.ok()?;
            (m.len() == 3).then_some(m)
        })
        .await;
        let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        ids.sort();
        lists.push(ids);
        // Healthy once promoted from learner to voting member.
        wait_for(
            "a healthy etcd service",
            Duration::from_secs(15),
            || async {
                let services = client.service_list().await.ok()?;
                let etcd = services.iter().find(|s| s.id == "etcd")?;
                etcd.health.as_ref()?.healthy.then_some(())
            },
        )
        .await;
    }
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:?}");
    let second = wait_configured(addresses[1], &credentials).await;
    assert_eq!(
        second.bootstrap().await.unwrap(),
        BootstrapOutcome::AlreadyBootstrapped
    );

    // The kubeconfig names the VIP endpoint and carries the Kubernetes CA.
    let kubeconfig = first.kubeconfig().await.unwrap();
    let kubeconfig: serde_yaml::Value = serde_yaml::from_slice(&kubeconfig).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"].as_str(),
        Some("https://127.0.1.10:6443")
    );
    assert!(kubeconfig["users"][0]["user"]["client-key-data"]
        .as_str()
        .is_some());

    // A member that is removed by ID disappears from every list.
    let members = second.etcd_member_list().await.unwrap();
    let third = members.iter().find(|m| m.hostname == "cp-3").unwrap().id;
    // etcd refuses ("unhealthy cluster") until the others have been connected for a while.
    wait_for("cp-3 removed", Duration::from_secs(15), || async {
        first.etcd_remove_member_by_id(third).await.ok()
    })
    .await;
    assert_eq!(second.etcd_member_list().await.unwrap().len(), 2);
    fleet.shutdown();
}

#[tokio::test]
async fn a_node_of_another_cluster_is_told_apart_from_ours() {
    let fleet = fleet();
    let ours = ip("127.0.1.21");
    let ghost = ip("127.0.1.22");
    fleet.add_node(ours, None).unwrap();
    fleet.add_node(ghost, None).unwrap();
    fleet.inject(ghost, Fault::ForeignCluster).unwrap();
    let cluster = SampleCluster::generate("lab-two", ip("127.0.1.20")).unwrap();
    let credentials = cluster.credentials().unwrap();

    wait_state(ghost, &credentials, NodeState::ForeignCluster).await;
    let err = NodeClient::connect(ghost, &credentials, &options())
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::ForeignCluster, "{err}");

    let client = NodeClient::connect_insecure(ours, &options())
        .await
        .unwrap();
    client
        .apply_configuration(
            cluster.config(true, "cp-1").as_bytes(),
            ApplyMode::Auto,
            false,
        )
        .await
        .unwrap();
    wait_state(
        ours,
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        },
    )
    .await;

    // Our CA but a reader role: the node answers, and refuses changes.
    let reader = cluster.credentials_with_role("os:reader").unwrap();
    let client = NodeClient::connect(ours, &reader, &options())
        .await
        .unwrap();
    client.version().await.unwrap();
    let err = client.reboot().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // Another cluster's talosconfig against our node: TLS refuses it.
    let other = SampleCluster::generate("lab-other", ip("127.0.1.20")).unwrap();
    let state = castle::talos::client::probe(ours, &other.credentials().unwrap(), &options()).await;
    assert_eq!(state, NodeState::ForeignCluster);

    // The node's certificate checks out but it refuses our client certificate (the alert only
    // arrives after the TLS 1.3 handshake): still told apart as another cluster.
    let mut mixed = other.credentials().unwrap();
    mixed.ca_pem = credentials.ca_pem.clone();
    let state = castle::talos::client::probe(ours, &mixed, &options()).await;
    assert_eq!(state, NodeState::ForeignCluster);
    fleet.shutdown();
}

#[tokio::test]
async fn reset_returns_a_node_to_maintenance_and_it_leaves_etcd() {
    let fleet = fleet();
    let cp1 = ip("127.0.1.31");
    let cp2 = ip("127.0.1.32");
    let cluster = SampleCluster::generate("lab-three", ip("127.0.1.30")).unwrap();
    let credentials = cluster.credentials().unwrap();
    for (i, a) in [cp1, cp2].into_iter().enumerate() {
        fleet.add_node(a, None).unwrap();
        let client = wait_maintenance(a).await;
        let config = cluster.config(true, &format!("cp-{}", i + 1));
        client
            .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
            .await
            .unwrap();
    }
    let first = wait_configured(cp1, &credentials).await;
    wait_for("bootstrap", Duration::from_secs(10), || async {
        first.bootstrap().await.ok()
    })
    .await;
    let second = wait_configured(cp2, &credentials).await;
    wait_for("two members", Duration::from_secs(10), || async {
        (first.etcd_member_list().await.ok()?.len() == 2).then_some(())
    })
    .await;

    second.reset(true, true).await.unwrap();
    wait_state(cp2, &credentials, NodeState::Maintenance).await;
    wait_for(
        "the reset node to leave etcd",
        Duration::from_secs(10),
        || async { (first.etcd_member_list().await.ok()?.len() == 1).then_some(()) },
    )
    .await;
    let summary = fleet
        .summaries()
        .into_iter()
        .find(|s| s.address == cp2)
        .unwrap();
    assert_eq!(summary.state, "maintenance");
    assert!(summary.cluster_id.is_none());
    fleet.shutdown();
}

#[tokio::test]
async fn faults_hang_reject_and_slow_down_nodes() {
    let fleet = fleet();
    let hanging = ip("127.0.1.41");
    let picky = ip("127.0.1.42");
    fleet.add_node(hanging, None).unwrap();
    fleet.add_node(picky, Some("v1.11.2")).unwrap();
    let cluster = SampleCluster::generate("lab-four", ip("127.0.1.40")).unwrap();
    let credentials = cluster.credentials().unwrap();

    fleet.inject(hanging, Fault::NeverAnswer).unwrap();
    let started = std::time::Instant::now();
    let state = castle::talos::client::probe(hanging, &credentials, &options()).await;
    assert!(matches!(state, NodeState::Unreachable { .. }), "{state:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    fleet.clear_faults(hanging).unwrap();
    wait_state(hanging, &credentials, NodeState::Maintenance).await;
    fleet.inject(hanging, Fault::DropConnections).unwrap();
    wait_for(
        "connections to be dropped",
        Duration::from_secs(5),
        || async {
            let state = castle::talos::client::probe(hanging, &credentials, &options()).await;
            matches!(state, NodeState::Unreachable { .. }).then_some(())
        },
    )
    .await;
    fleet.clear_faults(hanging).unwrap();
    wait_state(hanging, &credentials, NodeState::Maintenance).await;

    // The v1.11 node refuses documents that only exist from v1.12 on.
    let client = wait_maintenance(picky).await;
    assert_eq!(client.release().await.unwrap(), "v1.11.2");
    let err = client
        .apply_configuration(
            cluster.config(true, "cp-1").as_bytes(),
            ApplyMode::Auto,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unknown), "{err}");

    fleet
        .inject(
            hanging,
            Fault::RejectNextConfig("disk /dev/sda is too small".into()),
        )
        .unwrap();
    fleet
        .inject(hanging, Fault::SlowReboot(Duration::from_secs(5)))
        .unwrap();
    let client = NodeClient::connect_insecure(hanging, &options())
        .await
        .unwrap();
    let config = cluster.config(true, "cp-1");
    let err = client
        .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    // Only the next config was rejected; the reboot then takes 5 s × 0.2.
    client
        .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = castle::talos::client::probe(hanging, &credentials, &options()).await;
    assert!(matches!(state, NodeState::Unreachable { .. }), "{state:?}");
    wait_state(
        hanging,
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        },
    )
    .await;
    fleet.shutdown();
}

#[tokio::test]
async fn upgrade_reboots_into_the_new_version_and_etcd_comes_back() {
    let fleet = fleet();
    let cp = ip("127.0.1.71");
    let cluster = SampleCluster::generate("lab-five", ip("127.0.1.70")).unwrap();
    let credentials = cluster.credentials().unwrap();
    fleet.add_node(cp, Some("v1.11.5")).unwrap();
    // A v1.11 node gets a config without the v1.12-only documents, and with the
    // PodSecurityPolicy admission plugin off (else its kube-apiserver would not start).
    let config = cluster.config(true, "cp-1");
    let mut main: serde_yaml::Value =
        serde_yaml::from_str(config.split("---\n").next().unwrap()).unwrap();
    main["cluster"]["apiServer"] = serde_yaml::from_str("disablePodSecurityPolicy: true").unwrap();
    let main_doc = serde_yaml::to_string(&main).unwrap();
    let client = configure(cp, &main_doc, &credentials).await;
    wait_for("bootstrap", Duration::from_secs(10), || async {
        client.bootstrap().await.ok()
    })
    .await;
    wait_for("etcd to answer", Duration::from_secs(10), || async {
        (client.etcd_member_list().await.ok()?.len() == 1).then_some(())
    })
    .await;

    // The VIP is not known to this config: the API is served on the node's own address.
    let kube = std::net::SocketAddr::new(cp, 6443);
    wait_for(
        "the Kubernetes API on the node",
        Duration::from_secs(5),
        || async { tokio::net::TcpStream::connect(kube).await.ok() },
    )
    .await;

    let err = client
        .upgrade("ghcr.io/siderolabs/installer:latest", true, false, false)
        .await
        .unwrap_err();
    // Talos refuses an image with a plain error; castle still takes it as final.
    assert_eq!(err.code(), Some(tonic::Code::Unknown), "{err}");
    assert_eq!(err.class(), ErrorClass::Final, "{err}");
    let ack = client
        .upgrade("ghcr.io/siderolabs/installer:v1.12.2", true, false, false)
        .await
        .unwrap();
    assert!(!ack.is_empty());
    wait_state(
        cp,
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.2".into(),
        },
    )
    .await;

    let client = wait_configured(cp, &credentials).await;
    wait_for(
        "etcd back after the upgrade",
        Duration::from_secs(5),
        || async { (client.etcd_member_list().await.ok()?.len() == 1).then_some(()) },
    )
    .await;
    fleet.shutdown();
}

#[tokio::test]
async fn a_v1_13_node_in_maintenance_answers_readers_and_refuses_the_rest() {
    let fleet = fleet();
    let node = ip("127.0.1.46");
    fleet.add_node(node, Some("v1.13.0")).unwrap();
    let client = wait_maintenance(node).await;
    // apid serves maintenance mode with read-only roles: readers' calls answer...
    assert_eq!(
        client.version().await.unwrap().version.unwrap().tag,
        "v1.13.0"
    );
    assert_eq!(client.release().await.unwrap(), "v1.13.0");
    assert!(client.service_list().await.is_ok());
    // ...the others are not authorized.
    let err = client.reboot().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = client
        .upgrade("ghcr.io/siderolabs/installer:v1.13.0", true, false, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(err.class(), ErrorClass::Final);
}

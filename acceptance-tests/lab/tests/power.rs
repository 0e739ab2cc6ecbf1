//! Powering emulated machines off and on, as the lab does when a Proxmox VM stops and starts.

mod common;

use std::time::Duration;

use castle::talos::client::{ApplyMode, NodeClient, NodeState};
use castle_lab::talos::sample::SampleCluster;
use common::{
    configure, fleet, ip, options, wait_configured, wait_for, wait_maintenance, wait_state,
};

fn state(fleet: &castle_lab::talos::Fleet, address: std::net::IpAddr) -> &'static str {
    fleet
        .summaries()
        .into_iter()
        .find(|s| s.address == address)
        .map(|s| s.state)
        .unwrap_or("gone")
}

#[tokio::test]
async fn a_booting_machine_answers_in_maintenance_after_its_boot_delay() {
    let fleet = fleet();
    let node = ip("127.0.1.71");
    fleet.add_booting_node(node, None).unwrap();
    assert_eq!(state(&fleet, node), "booting");
    // Nothing listens while the machine boots.
    assert!(NodeClient::connect_insecure(node, &options())
        .await
        .is_err());
    wait_maintenance(node).await;
    assert_eq!(state(&fleet, node), "maintenance");
    fleet.shutdown();
}

#[tokio::test]
async fn a_configured_machine_keeps_its_config_across_power_off_and_on() {
    let fleet = fleet();
    let node = ip("127.0.1.72");
    let cluster = SampleCluster::generate("power", ip("127.0.1.70")).unwrap();
    let credentials = cluster.credentials().unwrap();
    fleet.add_node(node, None).unwrap();
    configure(node, &cluster.config(true, "cp-1"), &credentials).await;

    fleet.power_off(node).unwrap();
    assert_eq!(state(&fleet, node), "off");
    wait_for("the listener to close", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect((node, 50000)).await.err()
    })
    .await;
    assert!(
        fleet.power_off(node).is_ok(),
        "powering off twice is harmless"
    );

    fleet.power_on(node).unwrap();
    assert!(
        fleet.power_on(node).is_err(),
        "a running machine cannot be powered on"
    );
    wait_state(
        node,
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        },
    )
    .await;
    let summary = fleet
        .summaries()
        .into_iter()
        .find(|s| s.address == node)
        .unwrap();
    assert_eq!(summary.hostname.as_deref(), Some("cp-1"));
    fleet.shutdown();
}

#[tokio::test]
async fn a_blank_machine_powered_on_again_is_in_maintenance() {
    let fleet = fleet();
    let node = ip("127.0.1.73");
    fleet.add_node(node, None).unwrap();
    fleet.power_off(node).unwrap();
    fleet.power_on(node).unwrap();
    wait_maintenance(node).await;
    assert_eq!(state(&fleet, node), "maintenance");
    fleet.shutdown();
}

/// The config of `cp-1` with a static address, as castle writes it (a `LinkConfig`).
fn config_at(cluster: &SampleCluster, address: std::net::IpAddr) -> String {
    format!(
        "{}---\napiVersion: v1alpha1\nkind: LinkConfig\nname: eth0\naddresses:\n  - address: {address}/8\n",
        cluster.config(true, "cp-1")
    )
}

#[tokio::test]
async fn a_moved_machine_answers_at_its_former_static_address_until_its_new_config_lands() {
    let fleet = fleet();
    let (from, to) = (ip("127.0.1.76"), ip("127.0.1.77"));
    let cluster = SampleCluster::generate("moved", ip("127.0.1.70")).unwrap();
    let credentials = cluster.credentials().unwrap();
    fleet.add_node(from, None).unwrap();
    configure(from, &config_at(&cluster, from), &credentials).await;

    // The VM boots with another cloud-init address: the machine has both, its config's static
    // one and the platform's new one, and apid answers (with mTLS) at each.
    fleet.readdress(from, to).unwrap();
    let moved = wait_configured(to, &credentials).await;
    wait_configured(from, &credentials).await;
    assert_eq!(
        state(&fleet, from),
        "gone",
        "one machine, listed at its new address"
    );

    // Its config with the new address, applied in place: the former address is released.
    moved
        .apply_configuration(config_at(&cluster, to).as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap();
    wait_for(
        "the former address to be released",
        Duration::from_secs(5),
        || async { tokio::net::TcpStream::connect((from, 50000)).await.err() },
    )
    .await;
    wait_configured(to, &credentials).await;
    fleet.shutdown();
}

#[tokio::test]
async fn a_machine_that_loses_power_while_it_drains_for_an_upgrade_boots_its_old_release() {
    let fleet = fleet();
    let node = ip("127.0.1.78");
    let cluster = SampleCluster::generate("cut", ip("127.0.1.70")).unwrap();
    let credentials = cluster.credentials().unwrap();
    fleet.add_node(node, None).unwrap();
    let client = configure(node, &cluster.config(true, "cp-1"), &credentials).await;
    // `force`: a lone control plane has no etcd for the upgrade's etcd checks to ask.
    client
        .upgrade("ghcr.io/siderolabs/installer:v1.13.0", true, false, true)
        .await
        .unwrap();
    // The answer is out; the node drains before it writes the installer.
    fleet.power_cycle(node, Duration::from_millis(100)).unwrap();
    wait_state(
        node,
        &credentials,
        NodeState::Configured {
            talos_version: "v1.12.0".into(),
        },
    )
    .await;
    let summary = fleet
        .summaries()
        .into_iter()
        .find(|s| s.address == node)
        .unwrap();
    assert!(summary.installed_images.is_empty(), "{summary:?}");
    assert_eq!(summary.boots, 2, "installed, then the power cycle");
    fleet.shutdown();
}

//! Every emulated control plane runs a real etcd (`/usr/bin/etcd`): bootstrap, joining as a
//! learner, promotion, leaving, removal, quorum and the VIP election, seen through castle's
//! Talos client.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use castle::talos::client::{ApplyMode, BootstrapOutcome, Credentials, NodeClient};
use castle::talos::proto::machine::EtcdMember;
use castle_lab::talos::sample::SampleCluster;
use castle_lab::talos::{Fault, Fleet, NodeSummary};
use common::{fleet, ip, wait_configured, wait_for, wait_maintenance};

/// Adds control planes `cp-1`… at `addresses`, applies their configs and waits for mTLS.
async fn control_planes(
    fleet: &Fleet,
    cluster: &SampleCluster,
    addresses: &[IpAddr],
) -> Vec<NodeClient> {
    let credentials = cluster.credentials().unwrap();
    for (i, a) in addresses.iter().enumerate() {
        fleet.add_node(*a, None).unwrap();
        let client = wait_maintenance(*a).await;
        let config = cluster.config(true, &format!("cp-{}", i + 1));
        client
            .apply_configuration(config.as_bytes(), ApplyMode::Auto, false)
            .await
            .unwrap();
    }
    let mut clients = Vec::new();
    for a in addresses {
        clients.push(wait_configured(*a, &credentials).await);
    }
    clients
}

/// Bootstraps `client` once it is allowed to.
async fn bootstrap(client: &NodeClient) -> BootstrapOutcome {
    wait_for("bootstrap", Duration::from_secs(10), || async {
        match client.bootstrap().await {
            Ok(o) => Some(o),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("bootstrap failed for good: {e}"),
        }
    })
    .await
}

/// Waits until `client`'s member list has `n` voting, started members.
async fn voting_members(client: &NodeClient, n: usize) -> Vec<EtcdMember> {
    wait_for(
        &format!("{n} voting etcd members"),
        Duration::from_secs(30),
        || async {
            let members = client.etcd_member_list().await.ok()?;
            let voting = members
                .iter()
                .all(|m| !m.is_learner && !m.hostname.is_empty());
            (members.len() == n && voting).then_some(members)
        },
    )
    .await
}

fn summary(fleet: &Fleet, address: IpAddr) -> NodeSummary {
    fleet
        .summaries()
        .into_iter()
        .find(|s| s.address == address)
        .unwrap()
}

async fn etcd_healthy(client: &NodeClient) -> bool {
    let services = client.service_list().await.unwrap_or_default();
    services
        .iter()
        .find(|s| s.id == "etcd")
        .and_then(|s| s.health.as_ref())
        .is_some_and(|h| h.healthy)
}

async fn answers(address: IpAddr) -> bool {
    tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(SocketAddr::new(address, 6443)),
    )
    .await
    .is_ok_and(|c| c.is_ok())
}

#[tokio::test]
async fn control_planes_vote_the_vip_moves_at_once_on_a_reboot_after_the_lease_on_a_power_cut_and_without_quorum_the_api_goes_quiet(
) {
    let fleet = fleet();
    let vip = ip("127.0.2.10");
    let addresses = [ip("127.0.2.11"), ip("127.0.2.12"), ip("127.0.2.13")];
    let cluster = SampleCluster::generate("etcd-quorum", vip).unwrap();
    let clients = control_planes(&fleet, &cluster, &addresses).await;
    // Nothing serves the Kubernetes API before etcd runs.
    assert!(!answers(vip).await);
    assert_eq!(bootstrap(&clients[0]).await, BootstrapOutcome::Bootstrapped);

    // The others join on their own, as learners first, and end up voting members named after
    // their hostnames, the same list on every node.
    let members = voting_members(&clients[0], 3).await;
    let mut names: Vec<&str> = members.iter().map(|m| m.hostname.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cp-1", "cp-2", "cp-3"]);
    for (client, address) in clients.iter().zip(addresses) {
        let theirs = voting_members(client, 3).await;
        let mut ids: Vec<u64> = theirs.iter().map(|m| m.id).collect();
        ids.sort();
        let mut ours: Vec<u64> = members.iter().map(|m| m.id).collect();
        ours.sort();
        assert_eq!(ids, ours);
        assert!(theirs[0].peer_urls[0].starts_with("https://127.0.2.1"));
        // The admin API shows each node's own member ID.
        let me = wait_for(
            "the member ID in the summary",
            Duration::from_secs(5),
            || {
                let fleet = fleet.clone();
                async move { summary(&fleet, address).etcd_member_id }
            },
        )
        .await;
        assert!(ours.contains(&me));
    }

    // The VIP is held by one control plane, and the API answers there.
    let holder = wait_for("a VIP holder", Duration::from_secs(5), || {
        let fleet = fleet.clone();
        async move { addresses.into_iter().find(|a| summary(&fleet, *a).vip) }
    })
    .await;
    assert!(answers(vip).await);

    // Its holder reboots (Talos stops its services on the way down): it resigns, and another
    // control plane takes the VIP at once, well within the 12 s lease of this fleet.
    let holder_client = &clients[addresses.iter().position(|a| *a == holder).unwrap()];
    holder_client.reboot().await.unwrap();
    let rebooted = std::time::Instant::now();
    let next = wait_for(
        "the VIP to move on a reboot",
        Duration::from_secs(10),
        || {
            let fleet = fleet.clone();
            async move {
                addresses
                    .into_iter()
                    .find(|a| *a != holder && summary(&fleet, *a).vip)
            }
        },
    )
    .await;
    assert!(
        rebooted.elapsed() < Duration::from_secs(8),
        "a graceful hand-over waits for no lease"
    );
    assert!(answers(vip).await);
    wait_for(
        "the rebooted node's etcd",
        Duration::from_secs(30),
        || async { etcd_healthy(holder_client).await.then_some(()) },
    )
    .await;

    // The new holder is powered off hard: its election key stays until its lease expires
    // (60 s at Talos's pace, 12 s here), and meanwhile nobody answers on the VIP.
    fleet.power_off(next).unwrap();
    let lost = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !answers(vip).await,
        "the VIP is dark while the lost holder's lease lives"
    );
    assert!(addresses.iter().all(|a| !summary(&fleet, *a).vip));
    let after = wait_for(
        "the VIP to move once the lease expired",
        Duration::from_secs(30),
        || {
            let fleet = fleet.clone();
            async move {
                addresses
                    .into_iter()
                    .find(|a| *a != next && summary(&fleet, *a).vip)
            }
        },
    )
    .await;
    assert!(
        lost.elapsed() >= Duration::from_secs(10),
        "the VIP moved after {:?}, before the lease could expire",
        lost.elapsed()
    );
    assert!(answers(vip).await);
    let (holder, next) = (next, after);

    // A second one goes off: the last has no quorum, its etcd is unhealthy, and nobody serves
    // the Kubernetes API, on the VIP or on its own address.
    fleet.power_off(next).unwrap();
    let last = addresses
        .into_iter()
        .find(|a| *a != holder && *a != next)
        .unwrap();
    let last_client = &clients[addresses.iter().position(|a| *a == last).unwrap()];
    wait_for(
        "the lone member to lose quorum",
        Duration::from_secs(15),
        || async { (!etcd_healthy(last_client).await).then_some(()) },
    )
    .await;
    assert!(!answers(vip).await);
    assert!(!answers(last).await);
    assert!(!summary(&fleet, last).vip);

    // Both come back: quorum and the API return.
    fleet.power_on(holder).unwrap();
    fleet.power_on(next).unwrap();
    wait_for("quorum back", Duration::from_secs(30), || async {
        etcd_healthy(last_client).await.then_some(())
    })
    .await;
    wait_for("the API on the VIP", Duration::from_secs(10), || async {
        answers(vip).await.then_some(())
    })
    .await;
    fleet.shutdown();
}

#[tokio::test]
async fn a_bootstrap_sent_to_a_control_plane_that_has_not_joined_starts_a_second_etcd() {
    let fleet = fleet();
    let addresses = [ip("127.0.2.21"), ip("127.0.2.22")];
    let cluster = SampleCluster::generate("etcd-split", ip("127.0.2.20")).unwrap();
    let clients = control_planes(&fleet, &cluster, &addresses).await;
    // Both nodes have empty data directories (cp-2 has not joined: cp-1's etcd is not up yet
    // when both requests arrive): each bootstrap is accepted, as on real Talos.
    let (first, second) = tokio::join!(bootstrap(&clients[0]), bootstrap(&clients[1]));
    assert_eq!(first, BootstrapOutcome::Bootstrapped);
    assert_eq!(second, BootstrapOutcome::Bootstrapped);
    // Two clusters of one member each, as each node's own etcd lists them: split brain.
    let mut ids = Vec::new();
    for (address, name) in addresses.into_iter().zip(["cp-1", "cp-2"]) {
        let members = wait_for("a healthy etcd", Duration::from_secs(15), || {
            let fleet = fleet.clone();
            async move {
                let s = summary(&fleet, address);
                s.etcd_healthy.then_some(s.etcd_members)
            }
        })
        .await;
        assert_eq!(members.len(), 1, "{members:?}");
        assert_eq!(members[0].hostname, name);
        ids.push(members[0].id);
    }
    assert_ne!(ids[0], ids[1]);
    // Each refuses a further bootstrap now that its data directory is written.
    for client in &clients {
        wait_for("AlreadyExists", Duration::from_secs(10), || async {
            (client.bootstrap().await.ok()? == BootstrapOutcome::AlreadyBootstrapped).then_some(())
        })
        .await;
    }
    fleet.shutdown();
}

#[tokio::test]
async fn leaving_removing_and_rejoining_change_the_real_member_list() {
    let fleet = fleet();
    let addresses = [ip("127.0.2.31"), ip("127.0.2.32"), ip("127.0.2.33")];
    let cluster = SampleCluster::generate("etcd-members", ip("127.0.2.30")).unwrap();
    let credentials: Credentials = cluster.credentials().unwrap();
    let clients = control_planes(&fleet, &cluster, &addresses).await;
    bootstrap(&clients[0]).await;
    let members = voting_members(&clients[0], 3).await;

    // cp-3 leaves: gone from the list, its etcd stopped and its data wiped, so a bootstrap
    // there would be accepted (and split the cluster).
    clients[2].etcd_leave_cluster().await.unwrap();
    let after = voting_members(&clients[0], 2).await;
    assert!(after.iter().all(|m| m.hostname != "cp-3"));
    assert!(!etcd_healthy(&clients[2]).await);
    assert!(summary(&fleet, addresses[2]).etcd_members.is_empty());

    // Removing an unknown ID is NotFound; removing cp-2 by its ID takes it out.
    let err = clients[0]
        .etcd_remove_member_by_id(0x1234)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    let cp2 = members.iter().find(|m| m.hostname == "cp-2").unwrap().id;
    // etcd refuses ("unhealthy cluster") until the remaining members have been connected for
    // a few seconds; castle retries such Unknown errors.
    wait_for("cp-2 removed", Duration::from_secs(15), || async {
        clients[0].etcd_remove_member_by_id(cp2).await.ok()
    })
    .await;
    voting_members(&clients[0], 1).await;

    // cp-3 reboots: its etcd starts again and joins as a new member.
    clients[2].reboot().await.unwrap();
    let rejoined = voting_members(&clients[0], 2).await;
    let cp3 = rejoined.iter().find(|m| m.hostname == "cp-3").unwrap();
    assert!(members.iter().all(|m| m.id != cp3.id));

    // A member lost behind cp-3's back: cp-1's list no longer has it, and cp-3's etcd, removed
    // from the cluster, is unhealthy.
    wait_for("cp-3's member ID", Duration::from_secs(10), || {
        let fleet = fleet.clone();
        async move { summary(&fleet, addresses[2]).etcd_member_id }
    })
    .await;
    fleet.inject(addresses[2], Fault::LoseEtcdMember).unwrap();
    voting_members(&clients[0], 1).await;
    let cp3_client = wait_configured(addresses[2], &credentials).await;
    wait_for("cp-3's etcd to fail", Duration::from_secs(10), || async {
        (!etcd_healthy(&cp3_client).await).then_some(())
    })
    .await;
    fleet.shutdown();
}

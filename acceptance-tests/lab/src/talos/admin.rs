//! Admin HTTP API of the fleet, for test harnesses (the Python acceptance tests drive it).
//!
//! Plain HTTP with JSON bodies, meant for a loopback address only:
//!
//! | request | effect | answer |
//! | --- | --- | --- |
//! | `GET /nodes` | state of every node | 200, array of [`NodeSummary`] |
//! | `GET /nodes/{addr}` | state of one node | 200 [`NodeSummary`], 404 |
//! | `POST /nodes` `{"address": "127.0.0.211", "talos_version": "v1.12.0"}` | adds a node in maintenance mode (`talos_version` optional) | 201 [`NodeSummary`], 409 if present, 400 for a bad version |
//! | `DELETE /nodes/{addr}` | removes the node (powered off for good) | 204, 404 |
//! | `GET /nodes/{addr}/config` | the v1alpha1 document of the config the node runs (`null` without one) | 200, 404 |
//! | `POST /nodes/{addr}/faults` `{"kind": …}` | injects a fault, see below | 204, 404, 400 |
//! | `DELETE /nodes/{addr}/faults` | clears every fault of the node | 204, 404 |
//! | `POST /nodes/{addr}/power-off` | powers the machine off, keeping its disk | 204, 404 |
//! | `POST /nodes/{addr}/power-on` | boots a powered-off machine again | 204, 404, 409 if on |
//! | `POST /nodes/{addr}/workloads` `{"name": "web", "node": "worker-1", "replicas": 1, "min_available": 1, "volume": true, "empty_dir": false, "namespace": "default", "toleration_seconds": 3600}` | a Deployment with its first pods on `node`, optionally a PodDisruptionBudget `name`, a ReadWriteOnce volume and the pods' own unreachable `tolerationSeconds` (default 300), in the Kubernetes of the node's cluster | 201, 409 (no such Kubernetes node, no API yet) |
//!
//! Fault kinds: `never_answer` (TCP accepted, nothing ever answered), `drop_connections` (TCP
//! accepted and closed at once), `reject_next_config`
//! (optional `"reason"`; the next ApplyConfiguration answers InvalidArgument), `slow_reboot`
//! (`"delay_ms"`, replaces install and reboot delays before time scaling), `foreign_cluster`
//! (the node runs with another cluster's OS CA and rejects our client certificates),
//! `lose_etcd_member` (the node's member disappears from its cluster's etcd), `stop_etcd` (the
//! node's etcd is down, its member still listed and not healthy, until the faults are cleared),
//! `power_cycle`
//! (`"off_ms"`, before time scaling: the machine loses power at once, keeping its disk, and
//! comes back on after that long; it boots its installed config, or maintenance mode if it had
//! none), `power_cycle_in_upgrade` (`"off_ms"`: the same power cut, armed to strike halfway
//! through the drain of the node's next Upgrade, after its answer and before the installer is
//! written, so the node boots its old release), `power_cycle_in_bootstrap` (`"off_ms"`: the
//! same, right after the node answers its next Bootstrap and before etcd writes its data, so
//! the node comes back waiting to be bootstrapped). In the whole lab (`castle-lab serve`), cycle a VM's power through Proxmox instead
//! (stop, then start: the wiring does the same to the node), so that Proxmox shows it too.
//!
//! Errors are `{"error": "<message>"}`.

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::fleet::{Fault, Fleet, FleetError, NodeSummary};

/// Body of `POST /nodes`.
#[derive(Debug, Deserialize)]
pub struct AddNode {
    /// Node address (its Talos API listens on port 50000 there).
    pub address: IpAddr,
    /// Talos version the node runs; the fleet's default when absent.
    pub talos_version: Option<String>,
}

/// Body of `POST /nodes/{addr}/faults`.
#[derive(Debug, Deserialize)]
pub struct FaultRequest {
    /// `never_answer`, `drop_connections`, `reject_next_config`, `slow_reboot`, `foreign_cluster`,
    /// `lose_etcd_member`, `stop_etcd`, `power_cycle`, `power_cycle_in_upgrade` or
    /// `power_cycle_in_bootstrap`.
    pub kind: String,
    /// Reason given by `reject_next_config`.
    pub reason: Option<String>,
    /// Delay of `slow_reboot`, in milliseconds.
    pub delay_ms: Option<u64>,
    /// How long `power_cycle` (and `power_cycle_in_upgrade`) keeps the machine off, in
    /// milliseconds.
    pub off_ms: Option<u64>,
}

impl FaultRequest {
    fn to_fault(&self) -> Result<Fault, String> {
        Ok(match self.kind.as_str() {
            "never_answer" => Fault::NeverAnswer,
            "drop_connections" => Fault::DropConnections,
            "reject_next_config" => Fault::RejectNextConfig(
                self.reason
                    .clone()
                    .unwrap_or_else(|| "configuration rejected by castle-lab".into()),
            ),
            "slow_reboot" => Fault::SlowReboot(Duration::from_millis(
                self.delay_ms.ok_or("slow_reboot needs delay_ms")?,
            )),
            "foreign_cluster" => Fault::ForeignCluster,
            "lose_etcd_member" => Fault::LoseEtcdMember,
            "stop_etcd" => Fault::StopEtcd,
            "power_cycle" => Fault::PowerCycle(Duration::from_millis(
                self.off_ms.ok_or("power_cycle needs off_ms")?,
            )),
            "power_cycle_in_upgrade" => Fault::PowerCycleInUpgrade(Duration::from_millis(
                self.off_ms.ok_or("power_cycle_in_upgrade needs off_ms")?,
            )),
            "power_cycle_in_bootstrap" => Fault::PowerCycleInBootstrap(Duration::from_millis(
                self.off_ms.ok_or("power_cycle_in_bootstrap needs off_ms")?,
            )),
            other => return Err(format!("unknown fault kind {other:?}")),
        })
    }
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (code, Json(json!({ "error": message.to_string() }))).into_response()
}

fn fleet_error(e: FleetError) -> Response {
    let code = match e {
        FleetError::NoSuchNode(_) => StatusCode::NOT_FOUND,
        FleetError::NodeExists(_) | FleetError::PoweredOn(_) => StatusCode::CONFLICT,
        FleetError::UnsupportedVersion(_) | FleetError::Fault(_) => StatusCode::BAD_REQUEST,
        FleetError::Pki(_) | FleetError::Poisoned | FleetError::Disk(..) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(code, e)
}

fn summary(fleet: &Fleet, address: IpAddr) -> Option<NodeSummary> {
    fleet.summaries().into_iter().find(|s| s.address == address)
}

/// The admin routes over a fleet.
pub fn router(fleet: Fleet) -> Router<()> {
    Router::new()
        .route("/nodes", get(list).post(add))
        .route("/nodes/:address", get(one).delete(remove))
        .route("/nodes/:address/config", get(running_config))
        .route("/nodes/:address/faults", post(inject).delete(clear))
        .route("/nodes/:address/power-off", post(power_off))
        .route("/nodes/:address/power-on", post(power_on))
        .route("/nodes/:address/workloads", post(place_workload))
        .route("/address-clashes", get(address_clashes))
        .with_state(fleet)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    fleet: Fleet,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(fleet))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn list(State(fleet): State<Fleet>) -> Response {
    Json(fleet.summaries()).into_response()
}

async fn address_clashes(State(fleet): State<Fleet>) -> Response {
    Json(fleet.address_clashes()).into_response()
}

async fn one(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match summary(&fleet, address) {
        Some(s) => Json(s).into_response(),
        None => fleet_error(FleetError::NoSuchNode(address)),
    }
}

async fn running_config(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match fleet.running_config(address) {
        Ok(config) => Json(config).into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn add(State(fleet): State<Fleet>, Json(body): Json<AddNode>) -> Response {
    match fleet.add_node(body.address, body.talos_version.as_deref()) {
        Ok(()) => (StatusCode::CREATED, Json(summary(&fleet, body.address))).into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn remove(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match fleet.remove_node(address) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn inject(
    State(fleet): State<Fleet>,
    Path(address): Path<IpAddr>,
    Json(body): Json<FaultRequest>,
) -> Response {
    let fault = match body.to_fault() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match fleet.inject(address, fault) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn clear(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match fleet.clear_faults(address) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn power_off(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match fleet.power_off(address) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fleet_error(e),
    }
}

async fn power_on(State(fleet): State<Fleet>, Path(address): Path<IpAddr>) -> Response {
    match fleet.power_on(address) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => fleet_error(e),
    }
}

/// Places a workload in the Kubernetes of the node's cluster (body: [`WorkloadSpec`]).
async fn place_workload(
    State(fleet): State<Fleet>,
    Path(address): Path<IpAddr>,
    Json(spec): Json<crate::kubernetes::WorkloadSpec>,
) -> Response {
    match fleet.place_workload(address, &spec) {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

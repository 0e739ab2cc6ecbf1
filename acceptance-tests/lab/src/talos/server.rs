//! Serving one node: the task that follows the node's state, binds and closes its listener,
//! and runs the gRPC services over the TLS of the current mode.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use castle::talos::proto::cosi::resource::state_server::StateServer;
use castle::talos::proto::machine::machine_service_server::MachineServiceServer;
use castle::talos::proto::storage::storage_service_server::StorageServiceServer;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::fleet::{Fleet, Phase, State};
use super::service::{Mode, NodeApi, Peer};
use crate::pki::{self, Ca};

/// Talos allows 32 MiB messages.
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

/// What the node's task must do now.
enum Plan {
    /// The node was removed.
    Gone,
    /// Nothing listens until then (rebooting), or until woken.
    Down(Option<Instant>),
    /// Accept TCP, never answer.
    Hang,
    /// Accept TCP, close at once.
    Drop,
    /// Serve the API with this TLS config.
    Serve(Arc<ServerConfig>, Mode),
}

/// What the node at `address` serves at `listen`: its own address, or a former static
/// address its running config still assigns (see [`still_assigned`]).
fn plan(fleet: &Fleet, address: IpAddr, listen: IpAddr) -> Plan {
    let Ok(state) = fleet.lock() else {
        return Plan::Gone;
    };
    let Some(node) = state.nodes.get(&address) else {
        return Plan::Gone;
    };
    if listen != address && !still_assigned(&state, address, listen) {
        return Plan::Gone;
    }
    if node.faults.never_answer {
        return Plan::Hang;
    }
    if node.faults.drop_connections {
        return Plan::Drop;
    }
    match node.phase {
        Phase::Rebooting { until, .. } => Plan::Down(Some(until)),
        Phase::PoweredOff => Plan::Down(None),
        Phase::Maintenance => match maintenance_tls(address) {
            Ok(tls) => Plan::Serve(tls, Mode::Maintenance),
            Err(_) => Plan::Down(None),
        },
        Phase::Running { .. } => {
            let Some(config) = node.config.as_ref() else {
                return Plan::Down(None);
            };
            // A worker has no OS CA key: it serves only once trustd is reachable.
            let ca_key = state.apid_signing_key(config);
            let Some(ca_key) = ca_key else {
                return Plan::Down(Some(Instant::now() + Duration::from_millis(200)));
            };
            // apid's certificate names every address of the node (Talos:
            // internal/app/machined/pkg/controllers/secrets/api_cert_sans.go (v1.12.0)).
            let mut sans = vec![address];
            sans.extend(config.static_addresses.iter().filter(|a| **a != address));
            match mtls(&sans, &config.os_ca_crt, &ca_key) {
                Ok(tls) => Plan::Serve(tls, Mode::Configured),
                Err(_) => Plan::Down(None),
            }
        }
    }
}

fn maintenance_tls(address: IpAddr) -> Result<Arc<ServerConfig>, pki::PkiError> {
    let (cert, key) = pki::self_signed_server(address)?;
    let mut config = ServerConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|_| pki::PkiError::Sec1)?
        .with_no_client_auth()
        .with_single_cert(vec![pki::certificate_der(&cert)?], pki::rustls_key(&key)?)
        .map_err(|_| pki::PkiError::MissingPem("server key"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Whether the node at `address` still has `former` assigned: a static address of its running
/// config that no other machine took. A machine re-addressed by its platform (nocloud's
/// network config, layer `platform`) keeps the static address of its config (layer
/// `configuration`) until a config without it is applied, and apid answers on every address
/// (Talos: internal/app/machined/pkg/controllers/network/address_merge.go (v1.12.0),
/// platform_config_apply.go, address_config.go).
pub(crate) fn still_assigned(state: &State, address: IpAddr, former: IpAddr) -> bool {
    !state.nodes.contains_key(&former)
        && state
            .nodes
            .get(&address)
            .and_then(|n| n.config.as_ref())
            .is_some_and(|c| c.static_addresses.contains(&former))
}

fn mtls(sans: &[IpAddr], ca_crt: &str, ca_key: &str) -> Result<Arc<ServerConfig>, pki::PkiError> {
    let ca = Ca::from_pem(ca_crt, ca_key)?;
    let (cert, key) = ca.issue(
        &format!("apid-{}", sans[0]),
        &[],
        sans,
        &rcgen::PKCS_ED25519,
    )?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(pki::certificate_der(ca_crt)?)
        .map_err(|_| pki::PkiError::MissingPem("OS CA"))?;
    // Client certificates are required and must chain to the OS CA: anything else fails the
    // handshake, which is how a node of another cluster turns our talosconfig away.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), pki::provider())
        .build()
        .map_err(|_| pki::PkiError::MissingPem("OS CA"))?;
    let mut config = ServerConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(|_| pki::PkiError::Sec1)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki::certificate_der(&cert)?], pki::rustls_key(&key)?)
        .map_err(|_| pki::PkiError::MissingPem("server key"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The task of one node at one of its addresses (`listen`: its own, or a former one it still
/// has assigned): serves what [`plan`] says until the node is woken (state change), removed,
/// loses `listen`, or the fleet shuts down.
pub(crate) async fn node_loop(
    fleet: Fleet,
    address: IpAddr,
    listen: IpAddr,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let port = fleet.options().talos_port;
    loop {
        if *shutdown.borrow() {
            return;
        }
        wake.borrow_and_update();
        let woken = {
            let mut wake = wake.clone();
            let mut shutdown = shutdown.clone();
            let fleet = fleet.clone();
            async move {
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = shutdown.changed() => {}
                    _ = former_address_released(&fleet, address, listen) => {}
                }
            }
        };
        let plan = plan(&fleet, address, listen);
        match plan {
            Plan::Gone => return,
            Plan::Down(until) => {
                let sleep = async {
                    match until {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep => fleet.finish_reboot(address),
                    _ = woken => {}
                }
            }
            Plan::Hang | Plan::Drop => {
                let keep = matches!(plan, Plan::Hang);
                let Some(listener) = bind(SocketAddr::new(listen, port)).await else {
                    continue;
                };
                let dropped = || {
                    if !keep {
                        fleet.count_dropped(address);
                    }
                };
                hang(listener, keep, dropped, woken).await;
            }
            Plan::Serve(tls, mode) => {
                let Some(listener) = bind(SocketAddr::new(listen, port)).await else {
                    continue;
                };
                let api = NodeApi {
                    fleet: fleet.clone(),
                    address,
                    mode,
                };
                serve(listener, tls, api, woken).await;
            }
        }
        // Leave the loop promptly once the fleet stops.
        if shutdown.has_changed().unwrap_or(true) && *shutdown.borrow_and_update() {
            return;
        }
    }
}

/// Returns once the node at `address` no longer has `listen` (never for its own address): an
/// applied config without that static address releases it in place, without waking the node.
async fn former_address_released(fleet: &Fleet, address: IpAddr, listen: IpAddr) {
    if listen == address {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let assigned = fleet
            .lock()
            .is_ok_and(|state| still_assigned(&state, address, listen));
        if !assigned {
            return;
        }
    }
}

async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    // The previous listener of this address was just dropped; a retry covers a slow close.
    for _ in 0..20 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(%addr, "unable to bind the Talos API address");
    None
}

/// Accepts connections and holds them unanswered (`keep`) or closes them at once.
async fn hang(
    listener: TcpListener,
    keep: bool,
    accepted: impl Fn(),
    stop: impl Future<Output = ()>,
) {
    let mut held = Vec::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Ok((tcp, _)) = listener.accept() => {
                accepted();
                if keep {
                    held.push(tcp)
                }
            }
        }
    }
}

/// Serves the node's gRPC services over TLS on `listener` until `stop`. Open connections are
/// dropped with it: a rebooting node does not keep serving its old self.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    api: NodeApi,
    stop: impl Future<Output = ()>,
) {
    let routes = tonic::service::Routes::new(
        MachineServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(
        StorageServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(StateServer::new(api))
    .into_axum_router();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        connections.spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = Peer::from_certificates(stream.get_ref().1.peer_certificates());
            let app = routes.layer(axum::Extension(peer));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http2_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! The Infisical emulator: Universal Auth, secrets and folders over HTTP.
//!
//! A loopback-only test double of the parts of Infisical castle uses, faithful to Infisical's
//! backend (each fact cites its file beside the code): error bodies `{reqId, statusCode,
//! message, error}`, trimming of `secretValue`, folder name rules, token expiry and renewal,
//! login lockout, change policies, rate limits. It can also serve HTTPS with a private CA. It also accepts what
//! Infisical's own JS SDK sends (booleans as strings, `expandSecretReferences`, ...).
//!
//! Tests steer it through `/__lab/...` routes ([`controls`]), which are not Infisical API.
//!
//! The lab identity is fixed and public ([`Identity::default`]): it guards nothing but test data.

mod api;
mod controls;
mod state;
mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use state::{ChangeRequest, Lab, StoredSecret, Write};
pub use tls::{run_tls, serve_tls, PrivateCa};

/// The machine identity and project the emulator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Universal Auth client id.
    pub client_id: String,
    /// Universal Auth client secret.
    pub client_secret: String,
    /// The one project (workspace) id.
    pub project_id: String,
    /// Environment slugs of the project.
    pub environments: Vec<String>,
}

impl Default for Identity {
    /// `castle-lab-client` / `castle-lab-secret`, project `castle-lab-project`, environments
    /// `dev`, `staging`, `prod` (documented in the lab README).
    fn default() -> Self {
        Self {
            client_id: "castle-lab-client".into(),
            client_secret: "castle-lab-secret".into(),
            project_id: "castle-lab-project".into(),
            environments: vec!["dev".into(), "staging".into(), "prod".into()],
        }
    }
}

/// How the emulator behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Who may log in, and to which project.
    pub identity: Identity,
    /// Access token lifetime (Infisical's default is 30 days; tests use seconds).
    pub token_ttl: Duration,
    /// How long a token may be renewed for in total.
    pub token_max_ttl: Duration,
    /// Failed logins that lock the identity out (Infisical's `lockoutThreshold`, 3).
    pub lockout_after: u32,
    /// The failure counter is forgotten this long after the last failure (30 s).
    pub lockout_counter_reset: Duration,
    /// How long a lockout lasts (300 s in Infisical).
    pub lockout_for: Duration,
    /// JSON file the secrets and folders are saved to after every change, and loaded from.
    pub state_file: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            identity: Identity::default(),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            token_max_ttl: Duration::from_secs(30 * 24 * 3600),
            lockout_after: 3,
            lockout_counter_reset: Duration::from_secs(30),
            lockout_for: Duration::from_secs(300),
            state_file: None,
        }
    }
}

/// All routes: Infisical's API and the lab controls.
pub fn router(lab: Arc<Lab>) -> Router {
    api::routes(lab.clone()).merge(controls::routes(lab))
}

/// Serves the emulator on an already-bound listener until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    lab: Arc<Lab>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(lab))
        .with_graceful_shutdown(shutdown)
        .await
}

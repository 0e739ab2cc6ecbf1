//! Lab controls under `/__lab/` (not Infisical API): fault injection and assertions.
//!
//! - `GET /__lab/health` → `{"ok": true}`
//! - `GET /__lab/identity` → the lab's client id/secret, project id and environments
//! - `POST /__lab/rate-limit {"count": N, "retry_after": S}` → next N API requests get 429
//! - `POST /__lab/expire-tokens` → every issued token is expired; with `{"after_writes": N}`
//!   they expire right after the next N secret writes (in the middle of a client's work)
//! - `GET /__lab/events` → `{"events": [...]}`: `login`, `login-refused`, `renew`,
//!   `renew-refused`, `token-refused`, `tokens-expired`, `write`, `write-failed`,
//!   `change-requested`, in order
//! - `PUT /__lab/change-policy {"environment", "bypass_for_machine_identities"}` → a change
//!   policy on that environment (`DELETE` with `{"environment"}` removes it)
//! - `GET /__lab/change-requests` → `{"requests": [...]}`;
//!   `POST /__lab/change-requests/{id}/merge` → approve and merge one, applying its write
//! - `GET /__lab/secrets` → `{"secrets": [...], "requests": N}` with values, for assertions
//! - `PUT /__lab/secrets {"environment", "path", "key", "value"}` → out-of-band write
//! - `DELETE /__lab/secrets {"environment", "path", "key"}` → out-of-band delete
//! - `POST /__lab/reset` → empty lab

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::state::Lab;
use axum::extract::State;

#[derive(Deserialize)]
struct RateLimit {
    count: u32,
    #[serde(default = "one")]
    retry_after: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize, Default)]
struct Expiry {
    #[serde(default)]
    after_writes: u32,
}

#[derive(Deserialize)]
struct Policy {
    environment: String,
    #[serde(default)]
    bypass_for_machine_identities: bool,
}

#[derive(Deserialize)]
struct SecretAt {
    environment: Option<String>,
    #[serde(default)]
    path: Option<String>,
    key: String,
    #[serde(default)]
    value: Option<String>,
}

fn environment(lab: &Lab, given: Option<String>) -> String {
    given.unwrap_or_else(|| {
        lab.settings
            .identity
            .environments
            .first()
            .cloned()
            .unwrap_or_default()
    })
}

/// The `/__lab/` routes.
pub fn routes(lab: Arc<Lab>) -> Router {
    Router::new()
        .route("/__lab/health", get(|| async { Json(json!({"ok": true})) }))
        .route(
            "/__lab/identity",
            get(|State(lab): State<Arc<Lab>>| async move {
                let id = &lab.settings.identity;
                Json(json!({
                    "client_id": id.client_id,
                    "client_secret": id.client_secret,
                    "project_id": id.project_id,
                    "environments": id.environments,
                }))
            }),
        )
        .route(
            "/__lab/rate-limit",
            post(
                |State(lab): State<Arc<Lab>>, Json(limit): Json<RateLimit>| async move {
                    lab.set_rate_limit(limit.count, limit.retry_after);
                    Json(json!({"ok": true}))
                },
            ),
        )
        .route(
            "/__lab/expire-tokens",
            post(|State(lab): State<Arc<Lab>>, body: Bytes| async move {
                let expiry: Expiry = serde_json::from_slice(&body).unwrap_or_default();
                lab.expire_tokens_after(expiry.after_writes);
                Json(json!({"ok": true}))
            }),
        )
        .route(
            "/__lab/events",
            get(|State(lab): State<Arc<Lab>>| async move { Json(json!({"events": lab.events()})) }),
        )
        .route(
            "/__lab/change-policy",
            put(
                |State(lab): State<Arc<Lab>>, Json(policy): Json<Policy>| async move {
                    lab.set_change_policy(
                        &policy.environment,
                        policy.bypass_for_machine_identities,
                    );
                    Json(json!({"ok": true}))
                },
            )
            .delete(
                |State(lab): State<Arc<Lab>>, Json(policy): Json<Policy>| async move {
                    lab.clear_change_policy(&policy.environment);
                    Json(json!({"ok": true}))
                },
            ),
        )
        .route(
            "/__lab/change-requests",
            get(|State(lab): State<Arc<Lab>>| async move {
                Json(json!({"requests": lab.change_requests()}))
            }),
        )
        .route(
            "/__lab/change-requests/:id/merge",
            post(
                |State(lab): State<Arc<Lab>>, Path(id): Path<String>| async move {
                    lab.merge_change_request(&id).map(Json)
                },
            ),
        )
        .route(
            "/__lab/secrets",
            get(|State(lab): State<Arc<Lab>>| async move {
                Json(json!({"secrets": lab.secrets(), "requests": lab.request_count()}))
            })
            .put(
                |State(lab): State<Arc<Lab>>, Json(at): Json<SecretAt>| async move {
                    let env = environment(&lab, at.environment);
                    let value = at.value.unwrap_or_default();
                    lab.put_secret(&env, at.path.as_deref().unwrap_or("/"), &at.key, &value)
                        .map(Json)
                },
            )
            .delete(
                |State(lab): State<Arc<Lab>>, Json(at): Json<SecretAt>| async move {
                    let env = environment(&lab, at.environment);
                    let project = lab.settings.identity.project_id.clone();
                    let target = lab.target(&project, &env, at.path.as_deref().unwrap_or("/"))?;
                    lab.delete_secret(&target, &at.key).map(Json)
                },
            ),
        )
        .route(
            "/__lab/reset",
            post(|State(lab): State<Arc<Lab>>| async move {
                lab.reset();
                Json(json!({"ok": true}))
            }),
        )
        .with_state(lab)
}

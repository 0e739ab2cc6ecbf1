//! Infisical's HTTP API: routes, parameter parsing, error bodies.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};

use super::state::{Failure, Lab, Target, Write};

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let req_id: String = format!("req-{:016x}", rand::thread_rng().gen::<u64>());
        let body = json!({
            "reqId": req_id,
            "statusCode": self.status,
            "message": self.message,
            "error": self.error,
        });
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

type Answer = Result<Json<Value>, Failure>;

/// Query and JSON body merged (the body wins): the SDK puts GET parameters in the query and
/// writes in the body, and some clients send DELETE parameters in either.
struct Params(HashMap<String, Value>);

impl Params {
    fn parse(query: HashMap<String, String>, body: &Bytes) -> Result<Self, Failure> {
        let mut map: HashMap<String, Value> = query
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        if !body.is_empty() {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(fields)) => map.extend(fields),
                _ => {
                    return Err(Failure::new(
                        400,
                        "BadRequest",
                        "Body must be a JSON object",
                    ))
                }
            }
        }
        Ok(Self(map))
    }

    fn string(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Booleans arrive as JSON booleans or as the strings "true" / "false".
    fn boolean(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) => Some(s == "true"),
            _ => None,
        }
    }

    /// Project, environment and folder, checked; `project_field` is `workspaceId` (v3) or
    /// `projectId` (v4).
    fn target(&self, lab: &Lab, project_field: &str, path_field: &str) -> Result<Target, Failure> {
        let project = self
            .string(project_field)
            .or_else(|| self.string("workspaceId"));
        let environment = self.string("environment");
        let mut issues = Vec::new();
        if project.is_none() {
            issues.push((project_field, "Required"));
        }
        if environment.is_none() {
            issues.push(("environment", "Required"));
        }
        if let Some(kind) = self.string("type") {
            if kind != "shared" && kind != "personal" {
                issues.push(("type", "Invalid enum value. Expected 'shared' | 'personal'"));
            }
        }
        if !issues.is_empty() {
            return Err(Failure::invalid(issues));
        }
        let path = self.string(path_field).unwrap_or_else(|| "/".into());
        lab.target(
            &project.unwrap_or_default(),
            &environment.unwrap_or_default(),
            &path,
        )
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.trim().is_empty() {
        return Err(Failure::invalid(vec![(
            "secretName",
            "String must contain at least 1 character(s)",
        )]));
    }
    if name.contains(' ') {
        return Err(Failure::invalid(vec![(
            "secretName",
            "Secret name cannot contain spaces.",
        )]));
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Rate limit first (as Infisical's limiter runs before auth), then the token.
async fn gate(State(lab): State<Arc<Lab>>, request: Request, next: Next) -> Response {
    if let Err(failure) = lab.check_rate_limit() {
        return failure.into_response();
    }
    let open = request.uri().path().starts_with("/api/v1/auth/");
    if !open {
        if let Err(failure) = lab.authorize(bearer(request.headers())) {
            return failure.into_response();
        }
    }
    next.run(request).await
}

async fn login(State(lab): State<Arc<Lab>>, body: Bytes) -> Answer {
    let params = Params::parse(HashMap::new(), &body)?;
    let (Some(id), Some(secret)) = (params.string("clientId"), params.string("clientSecret"))
    else {
        return Err(Failure::invalid(vec![
            ("clientId", "Required"),
            ("clientSecret", "Required"),
        ]));
    };
    lab.login(&id, &secret).map(Json)
}

async fn renew(State(lab): State<Arc<Lab>>, body: Bytes) -> Answer {
    let params = Params::parse(HashMap::new(), &body)?;
    let token = params
        .string("accessToken")
        .ok_or_else(|| Failure::invalid(vec![("accessToken", "Required")]))?;
    lab.renew(&token).map(Json)
}

/// The project field's name per API version.
#[derive(Clone, Copy)]
struct Version(&'static str);

async fn secret(
    lab: Arc<Lab>,
    version: Version,
    method: Method,
    name: String,
    query: HashMap<String, String>,
    body: Bytes,
) -> Answer {
    let params = Params::parse(query, &body)?;
    let target = params.target(&lab, version.0, "secretPath")?;
    check_name(&name)?;
    if method == Method::GET {
        return lab.get_secret(&target, &name).map(Json);
    }
    let write = match method {
        Method::POST => Write::Create {
            target: target.clone(),
            key: name.clone(),
            value: params
                .string("secretValue")
                .ok_or_else(|| Failure::invalid(vec![("secretValue", "Required")]))?,
            comment: params.string("secretComment").unwrap_or_default(),
            skip_multiline_encoding: params.boolean("skipMultilineEncoding").unwrap_or(false),
        },
        Method::PATCH => {
            let new_name = params.string("newSecretName");
            if let Some(n) = &new_name {
                check_name(n)?;
            }
            // A rename is written directly (the lab's policies hold back values only).
            if new_name.is_none() {
                Write::Update {
                    target: target.clone(),
                    key: name.clone(),
                    value: params.string("secretValue"),
                    comment: params.string("secretComment"),
                }
            } else {
                let answer = lab.update_secret(
                    &target,
                    &name,
                    params.string("secretValue").as_deref(),
                    params.string("secretComment").as_deref(),
                    new_name.as_deref(),
                    params.boolean("skipMultilineEncoding"),
                );
                lab.record_write(answer.is_ok());
                return answer.map(Json);
            }
        }
        Method::DELETE => Write::Delete {
            target: target.clone(),
            key: name.clone(),
        },
        _ => return Err(Failure::new(405, "MethodNotAllowed", "Method not allowed")),
    };
    // An environment whose change policy applies answers {approval}: nothing is written.
    if let Some(approval) = lab.hold_back(write.clone())? {
        return Ok(Json(approval));
    }
    let answer = match write {
        Write::Create {
            target,
            key,
            value,
            comment,
            skip_multiline_encoding,
        } => lab.create_secret(&target, &key, &value, &comment, skip_multiline_encoding),
        Write::Update {
            target,
            key,
            value,
            comment,
        } => lab.update_secret(
            &target,
            &key,
            value.as_deref(),
            comment.as_deref(),
            None,
            params.boolean("skipMultilineEncoding"),
        ),
        Write::Delete { target, key } => lab.delete_secret(&target, &key),
    };
    lab.record_write(answer.is_ok());
    answer.map(Json)
}

fn secret_routes(version: Version) -> Router<Arc<Lab>> {
    let one =
        move |State(lab): State<Arc<Lab>>,
              method: Method,
              Path(name): Path<String>,
              Query(query): Query<HashMap<String, String>>,
              body: Bytes| async move { secret(lab, version, method, name, query, body).await };
    let list = move |State(lab): State<Arc<Lab>>, Query(query): Query<HashMap<String, String>>| async move {
        let params = Params::parse(query, &Bytes::new())?;
        let target = params.target(&lab, version.0, "secretPath")?;
        lab.list_secrets(&target).map(Json)
    };
    let by_id = |State(lab): State<Arc<Lab>>, Path(id): Path<String>| async move {
        lab.get_secret_by_id(&id).map(Json)
    };
    Router::new()
        .route("/", get(list))
        .route("/:name", get(one).post(one).patch(one).delete(one))
        .route("/id/:id", get(by_id))
}

async fn list_folders(
    State(lab): State<Arc<Lab>>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let params = Params::parse(query, &Bytes::new())?;
    let target = params.target(&lab, "workspaceId", "path")?;
    lab.list_folders(&target).map(Json)
}

async fn create_folder(State(lab): State<Arc<Lab>>, body: Bytes) -> Answer {
    let params = Params::parse(HashMap::new(), &body)?;
    let target = params.target(&lab, "workspaceId", "path")?;
    let name = params
        .string("name")
        .ok_or_else(|| Failure::invalid(vec![("name", "Required")]))?;
    lab.create_folder(&target, &name).map(Json)
}

/// Infisical's routes, behind the rate limit and token gate.
pub fn routes(lab: Arc<Lab>) -> Router {
    Router::new()
        .route("/api/v1/auth/universal-auth/login", post(login))
        .route("/api/v1/auth/token/renew", post(renew))
        .route("/api/v1/folders", get(list_folders).post(create_folder))
        .nest("/api/v3/secrets/raw", secret_routes(Version("workspaceId")))
        .nest("/api/v4/secrets", secret_routes(Version("projectId")))
        .layer(middleware::from_fn_with_state(lab.clone(), gate))
        .with_state(lab)
}

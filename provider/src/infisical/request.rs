//! Pure builders of Infisical requests: method, path with query, JSON body.
//!
//! Nothing here sends anything, so each request's shape is checked by unit tests without a
//! server. The transport in [`super::Client`] adds the host and the bearer token.

use std::fmt;

use http::Method;
use serde_json::{json, Value as Json};

/// One request to send, relative to the host.
#[derive(Clone, PartialEq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path and query, e.g. `/api/v3/secrets/raw/KUBECONFIG?workspaceId=...`.
    pub path: String,
    /// JSON body, if any.
    pub body: Option<Json>,
    /// Whether the request needs the bearer token (login does not).
    pub authenticated: bool,
}

// The body can hold the client secret, a token or a secret value: Debug shows only which keys it
// has.
impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = match &self.body {
            Some(Json::Object(map)) => map.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        f.debug_struct("ApiRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body_keys", &keys)
            .finish()
    }
}

/// Where a secret lives: project, environment slug, folder path and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Project (workspace) id.
    pub project_id: String,
    /// Environment slug, e.g. `dev`.
    pub environment: String,
    /// Folder path, starting with `/`.
    pub path: String,
    /// Secret name.
    pub key: String,
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value or a path
/// segment (a folder path such as `/a/b` goes in a query and must keep its slashes encoded).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `POST /api/v1/auth/universal-auth/login`.
pub fn login(client_id: &str, client_secret: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: "/api/v1/auth/universal-auth/login".into(),
        body: Some(json!({ "clientId": client_id, "clientSecret": client_secret })),
        authenticated: false,
    }
}

/// `POST /api/v1/auth/token/renew`: extends the token's life without the client secret.
pub fn renew(access_token: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: "/api/v1/auth/token/renew".into(),
        body: Some(json!({ "accessToken": access_token })),
        authenticated: false,
    }
}

fn secret_path(secret: &SecretRef) -> String {
    format!("/api/v3/secrets/raw/{}", encode(&secret.key))
}

/// `GET /api/v3/secrets/raw/{name}`; references are not expanded and imports not followed, so
/// the value read is exactly the one stored under this name.
pub fn get_secret(secret: &SecretRef) -> ApiRequest {
    let q = query(&[
        ("workspaceId", &secret.project_id),
        ("environment", &secret.environment),
        ("secretPath", &secret.path),
        ("type", "shared"),
        ("expandSecretReferences", "false"),
        ("includeImports", "false"),
        ("viewSecretValue", "true"),
    ]);
    ApiRequest {
        method: Method::GET,
        path: format!("{}?{q}", secret_path(secret)),
        body: None,
        authenticated: true,
    }
}

fn write_body(secret: &SecretRef, value: &str, comment: &str) -> Json {
    json!({
        "workspaceId": secret.project_id,
        "environment": secret.environment,
        "secretPath": secret.path,
        "type": "shared",
        "secretValue": value,
        "secretComment": comment,
        // Kubeconfigs are multi-line: without this Infisical would re-encode the newlines.
        "skipMultilineEncoding": true,
    })
}

/// `POST /api/v3/secrets/raw/{name}`.
pub fn create_secret(secret: &SecretRef, value: &str, comment: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: secret_path(secret),
        body: Some(write_body(secret, value, comment)),
        authenticated: true,
    }
}

/// `PATCH /api/v3/secrets/raw/{name}`.
pub fn update_secret(secret: &SecretRef, value: &str, comment: &str) -> ApiRequest {
    ApiRequest {
        method: Method::PATCH,
        path: secret_path(secret),
        body: Some(write_body(secret, value, comment)),
        authenticated: true,
    }
}

/// `DELETE /api/v3/secrets/raw/{name}`.
pub fn delete_secret(secret: &SecretRef) -> ApiRequest {
    ApiRequest {
        method: Method::DELETE,
        path: secret_path(secret),
        body: Some(json!({
            "workspaceId": secret.project_id,
            "environment": secret.environment,
            "secretPath": secret.path,
            "type": "shared",
        })),
        authenticated: true,
    }
}

/// `GET /api/v1/folders`: the folders directly under `path`.
pub fn list_folders(project_id: &str, environment: &str, path: &str) -> ApiRequest {
    let q = query(&[
        ("workspaceId", project_id),
        ("environment", environment),
        ("path", path),
    ]);
    ApiRequest {
        method: Method::GET,
        path: format!("/api/v1/folders?{q}"),
        body: None,
        authenticated: true,
    }
}

/// `POST /api/v1/folders`: folder `name` under `parent`.
pub fn create_folder(project_id: &str, environment: &str, parent: &str, name: &str) -> ApiRequest {
    ApiRequest {
        method: Method::POST,
        path: "/api/v1/folders".into(),
        body: Some(json!({
            "workspaceId": project_id,
            "environment": environment,
            "name": name,
            "path": parent,
        })),
        authenticated: true,
    }
}

/// The `(parent, name)` pairs that make up a folder path, outermost first:
/// `/a/b` gives `[("/", "a"), ("/a", "b")]`; `/` gives nothing.
pub fn folder_segments(path: &str) -> Vec<(String, String)> {
    let mut parent = String::from("/");
    let mut out = Vec::new();
    for name in path.split('/').filter(|s| !s.is_empty()) {
        out.push((parent.clone(), name.to_string()));
        parent = if parent == "/" {
            format!("/{name}")
        } else {
            format!("{parent}/{name}")
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig_ref() -> SecretRef {
        SecretRef {
            project_id: "p1".into(),
            environment: "prod".into(),
            path: "/clusters/home lab".into(),
            key: "KUBECONFIG".into(),
        }
    }

    #[test]
    fn get_encodes_the_folder_path_and_asks_for_the_raw_value() {
        let req = get_secret(&kubeconfig_ref());
        assert_eq!(req.method, Method::GET);
        assert_eq!(
            req.path,
            "/api/v3/secrets/raw/KUBECONFIG?workspaceId=p1&environment=prod&secretPath=%2Fclusters%2Fhome%20lab\
             &type=shared&expandSecretReferences=false&includeImports=false&viewSecretValue=true"
        );
        assert!(req.body.is_none());
        assert!(req.authenticated);
    }

    #[test]
    fn create_sends_multiline_values_unencoded() {
        let req = create_secret(
            &kubeconfig_ref(),
            "apiVersion: v1\nkind: Config\n",
            "by castle",
        );
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.path, "/api/v3/secrets/raw/KUBECONFIG");
        let body = req.body.unwrap();
        assert_eq!(body["skipMultilineEncoding"], true);
        assert_eq!(body["secretValue"], "apiVersion: v1\nkind: Config\n");
        assert_eq!(body["secretPath"], "/clusters/home lab");
        assert_eq!(body["type"], "shared");
        assert_eq!(body["secretComment"], "by castle");
    }

    #[test]
    fn update_and_delete_address_the_same_secret() {
        assert_eq!(
            update_secret(&kubeconfig_ref(), "v", "").method,
            Method::PATCH
        );
        let del = delete_secret(&kubeconfig_ref());
        assert_eq!(del.method, Method::DELETE);
        assert_eq!(del.body.unwrap()["environment"], "prod");
    }

    #[test]
    fn login_is_unauthenticated_and_debug_hides_the_secret() {
        let req = login("id", "very-secret-value");
        assert!(!req.authenticated);
        assert_eq!(
            req.body.as_ref().unwrap()["clientSecret"],
            "very-secret-value"
        );
        let debug = format!("{req:?}");
        assert!(!debug.contains("very-secret-value"), "{debug}");
        assert!(debug.contains("clientSecret"));
    }

    #[test]
    fn folder_segments_walk_from_the_root() {
        assert_eq!(folder_segments("/"), Vec::<(String, String)>::new());
        assert_eq!(
            folder_segments("/a/b/"),
            vec![
                ("/".to_string(), "a".to_string()),
                ("/a".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn folders_are_listed_and_created_under_their_parent() {
        assert_eq!(
            list_folders("p", "dev", "/a").path,
            "/api/v1/folders?workspaceId=p&environment=dev&path=%2Fa"
        );
        let body = create_folder("p", "dev", "/a", "b").body.unwrap();
        assert_eq!(
            body,
            json!({"workspaceId": "p", "environment": "dev", "name": "b", "path": "/a"})
        );
    }
}

//! The HTTP client: one connection pool per provider process, token or ticket auth, and the
//! one function that reads PVE's `{"data": ...}` answers and errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use super::error::{classify, transport, Error};

/// How to authenticate.
#[derive(Clone)]
pub enum Auth {
    /// `USER@REALM!TOKENID=SECRET`, sent as `Authorization: PVEAPIToken=...`.
    Token(String),
    /// Ticket login, renewed on 401.
    Password {
        /// e.g. `root@pam`.
        username: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(token) => {
                let id = token.split('=').next().unwrap_or("");
                write!(f, "Token({id}=<redacted>)")
            }
            Auth::Password { username, .. } => write!(f, "Password({username}, <redacted>)"),
        }
    }
}

/// Where the API is and how to reach it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `https://pve.example:8006` (with or without `/api2/json`).
    pub endpoint: String,
    /// Credentials.
    pub auth: Auth,
    /// Skip TLS verification.
    pub insecure: bool,
    /// Extra CA to trust (PEM).
    pub ca_cert_pem: Option<String>,
}

#[derive(Clone)]
struct Ticket {
    cookie: String,
    csrf: String,
    generation: u64,
}

/// A Proxmox VE API client.
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    ticket: Mutex<Option<Ticket>>,
    logins: AtomicU64,
    /// VMIDs handed out by this process and not yet visible in the cluster.
    pub(crate) reserved_ids: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    /// UPIDs of the clone tasks this process started; held across each clone request and each
    /// look at the running clones ([`super::clone_tasks`]).
    pub(crate) own_clones: Mutex<std::collections::BTreeSet<String>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Parameters of one request, in PVE's form encoding.
pub type Params = Vec<(String, String)>;

impl Client {
    /// Builds the client; nothing is sent until the first call.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let endpoint = config.endpoint.trim_end_matches('/');
        let endpoint = endpoint.strip_suffix("/api2/json").unwrap_or(endpoint);
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(Error::Settings(format!(
                "endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .pool_idle_timeout(Duration::from_secs(60));
        if config.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(pem) = &config.ca_cert_pem {
            // A bundle (an internal CA with its intermediates) trusts every certificate in it.
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                Error::Settings(format!("ca_cert_pem is not a PEM certificate: {e}"))
            })?;
            if certs.is_empty() {
                return Err(Error::Settings(
                    "ca_cert_pem holds no PEM certificate".to_string(),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Settings(e.to_string()))?;
        Ok(Self {
            http,
            base: format!("{endpoint}/api2/json"),
            auth: config.auth,
            ticket: Mutex::new(None),
            logins: AtomicU64::new(0),
            reserved_ids: Default::default(),
            own_clones: Default::default(),
        })
    }

    /// The provider setting that holds the secret: `api_token` or `password`.
    pub fn secret_setting(&self) -> &'static str {
        match self.auth {
            Auth::Token(_) => "api_token",
            Auth::Password { .. } => "password",
        }
    }

    /// The user castle acts as, `USER@REALM` (a token's user, without its token id).
    pub fn user(&self) -> &str {
        match &self.auth {
            Auth::Token(token) => token.split(['!', '=']).next().unwrap_or_default(),
            Auth::Password { username, .. } => username,
        }
    }

    /// The API base URL (`.../api2/json`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path?query`, returning `data`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        let params: Params = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.call(Method::GET, path, params)
            .await
            .map(|(data, _)| data)
    }

    /// `GET path?query` of a listing PVE pages (task logs): `data` and the `total` it counts.
    pub async fn get_paged<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<(T, Option<u64>), Error> {
        let params: Params = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.call(Method::GET, path, params).await
    }

    /// `POST path` with form parameters, returning `data`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, params: Params) -> Result<T, Error> {
        self.call(Method::POST, path, params)
            .await
            .map(|(data, _)| data)
    }

    /// `PUT path` with form parameters, returning `data`.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, params: Params) -> Result<T, Error> {
        self.call(Method::PUT, path, params)
            .await
            .map(|(data, _)| data)
    }

    /// `DELETE path?query`, returning `data`.
    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        params: Params,
    ) -> Result<T, Error> {
        self.call(Method::DELETE, path, params)
            .await
            .map(|(data, _)| data)
    }

    /// One API call; a ticket that expired is renewed once and the call sent again. Nothing
    /// else is resent here: connection trouble goes to the caller's named policy
    /// ([`super::retry`]), which knows the deadline and whether a resend is safe.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<(T, Option<u64>), Error> {
        let mut renewed = false;
        loop {
            let attempt = match self.ticket_for_call().await {
                Ok(ticket) => {
                    let result = self
                        .send(method.clone(), path, &params, ticket.as_ref())
                        .await;
                    (ticket, result)
                }
                Err(e) => (None, Err(e)),
            };
            match attempt {
                (Some(ticket), Err(Error::Auth { status: 401, .. })) if !renewed => {
                    // Tickets live two hours: log in again once, then give up.
                    renewed = true;
                    self.forget_ticket(Some(ticket.generation)).await;
                }
                (_, other) => return other,
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        ticket: Option<&Ticket>,
    ) -> Result<(T, Option<u64>), Error> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        request = if method == Method::GET || method == Method::DELETE {
            request.query(params)
        } else {
            request.form(params)
        };
        match (&self.auth, ticket) {
            (Auth::Token(token), _) => {
                request = request.header("Authorization", format!("PVEAPIToken={token}"));
            }
            (Auth::Password { .. }, Some(ticket)) => {
                request = request.header("Cookie", format!("PVEAuthCookie={}", ticket.cookie));
                if method != Method::GET {
                    request = request.header("CSRFPreventionToken", ticket.csrf.clone());
                }
            }
            (Auth::Password { .. }, None) => {}
        }
        tracing::debug!(%method, path, "proxmox request");
        let response = request
            .send()
            .await
            .map_err(|source| transport(&url, source))?;
        read_answer(&url, response).await
    }

    async fn ticket_for_call(&self) -> Result<Option<Ticket>, Error> {
        let Auth::Password { username, password } = &self.auth else {
            return Ok(None);
        };
        let mut guard = self.ticket.lock().await;
        if let Some(ticket) = guard.as_ref() {
            return Ok(Some(ticket.clone()));
        }
        let url = format!("{}/access/ticket", self.base);
        let response = self
            .http
            .post(&url)
            .form(&[
                ("username", username.as_str()),
                ("password", password.as_str()),
            ])
            .send()
            .await
            .map_err(|source| transport(&url, source))?;
        let (data, _): (Value, _) = read_answer(&url, response).await.map_err(|e| match e {
            Error::Api {
                status, message, ..
            }
            | Error::Auth { status, message } => Error::Auth { status, message },
            other => other,
        })?;
        let cookie = data.get("ticket").and_then(Value::as_str);
        let csrf = data.get("CSRFPreventionToken").and_then(Value::as_str);
        let (Some(cookie), Some(csrf)) = (cookie, csrf) else {
            return Err(Error::Auth {
                status: 401,
                message: format!("login as {username} failed"),
            });
        };
        let generation = self.logins.fetch_add(1, Ordering::SeqCst) + 1;
        let ticket = Ticket {
            cookie: cookie.to_string(),
            csrf: csrf.to_string(),
            generation,
        };
        *guard = Some(ticket.clone());
        Ok(Some(ticket))
    }

    /// Drops the cached ticket unless another call already replaced it.
    async fn forget_ticket(&self, generation: Option<u64>) {
        let mut guard = self.ticket.lock().await;
        if guard.as_ref().map(|t| t.generation) == generation {
            *guard = None;
        }
    }
}

/// Reads `{"data": ..., "total": N}`, or turns an error answer into [`Error`].
async fn read_answer<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<(T, Option<u64>), Error> {
    let status = response.status();
    // PVE before libpve-http-server-perl 5.2.0 (PVE 8.0-8.3) puts the error text only in the
    // HTTP reason phrase; hyper keeps a reason that is not the canonical one for the status.
    let reason = response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_string());
    let body = response.text().await.map_err(|source| Error::Transport {
        url: url.to_string(),
        source,
    })?;
    let json: Option<Value> = serde_json::from_str(&body).ok();
    if !status.is_success() {
        return Err(answer_error(status, reason, &body, json.as_ref()));
    }
    let data = json
        .as_ref()
        .and_then(|j| j.get("data"))
        .cloned()
        .ok_or_else(|| Error::Decode {
            url: url.to_string(),
            detail: "no data field".into(),
        })?;
    let total = json
        .as_ref()
        .and_then(|j| j.get("total"))
        .and_then(Value::as_u64);
    let data = serde_json::from_value(data).map_err(|e| Error::Decode {
        url: url.to_string(),
        detail: e.to_string(),
    })?;
    Ok((data, total))
}

/// The error's text: the body's `message` (pve-http-server 5.2.0 and later, PVE 8.4+), else
/// the reason phrase (`{"data":null}` bodies of PVE 8.0-8.3: pve-http-server
/// `src/PVE/APIServer/Formatter/Standard.pm` before commit 9a2112e, "fix #6503"), else the first
/// readable line of a body that is not JSON (a proxy's page).
fn answer_error(
    status: StatusCode,
    reason: Option<String>,
    body: &str,
    json: Option<&Value>,
) -> Error {
    let canonical = status.canonical_reason().unwrap_or("error");
    let from_body = json
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let from_reason = reason.filter(|r| !r.is_empty() && r != canonical);
    let message = from_body.or(from_reason).unwrap_or_else(|| {
        let readable = body
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('<'));
        match (json, readable) {
            (None, Some(line)) => line.to_string(),
            _ => canonical.to_string(),
        }
    });
    let errors: BTreeMap<String, String> = json
        .and_then(|j| j.get("errors"))
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    classify(status.as_u16(), message, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pve83(status: u16, reason: &str, body: &str) -> Error {
        let json: Option<Value> = serde_json::from_str(body).ok();
        answer_error(
            StatusCode::from_u16(status).unwrap(),
            Some(reason.to_string()),
            body,
            json.as_ref(),
        )
    }

    #[test]
    fn the_user_of_a_token_is_its_user_without_the_token_id() {
        let client = |auth| {
            Client::new(ClientConfig {
                endpoint: "https://127.0.0.1:8006".into(),
                auth,
                insecure: true,
                ca_cert_pem: None,
            })
            .unwrap()
        };
        let token = client(Auth::Token("castle@pve!tf=0000-1111".into()));
        assert_eq!(token.user(), "castle@pve");
        let password = client(Auth::Password {
            username: "root@pam".into(),
            password: "secret".into(),
        });
        assert_eq!(password.user(), "root@pam");
    }

    #[test]
    fn pve_8_3_errors_are_read_from_the_reason_phrase() {
        let gone = pve83(
            500,
            "Configuration file 'nodes/pve1/qemu-server/105.conf' does not exist",
            r#"{"data":null}"#,
        );
        assert!(gone.is_not_found());
        let taken = pve83(
            400,
            "Parameter verification failed.",
            r#"{"data":null,"errors":{"vmid":"VM 105 already exists"}}"#,
        );
        assert!(taken.is_vmid_taken(105));
        assert_eq!(
            taken.to_string(),
            "Parameter verification failed.\n  vmid: VM 105 already exists"
        );
    }

    #[test]
    fn a_body_message_wins_and_a_canonical_reason_says_only_the_status() {
        let body = pve83(
            500,
            "VM 105 already running",
            r#"{"data":null,"message":"VM 105 already running\n"}"#,
        );
        assert_eq!(body.to_string(), "VM 105 already running");
        let bare = pve83(502, "Bad Gateway", r#"{"data":null}"#);
        assert_eq!(bare.to_string(), "Bad Gateway");
        let html = pve83(
            502,
            "Bad Gateway",
            "<html>\n<h1>proxy</h1>\nupstream down\n</html>",
        );
        assert_eq!(html.to_string(), "upstream down");
    }
}

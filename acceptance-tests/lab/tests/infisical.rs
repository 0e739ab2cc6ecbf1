//! The castle Infisical client against the lab emulator, in process, on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use castle::infisical::{Client, ClientConfig, Error, SecretRef};
use castle_lab::infisical::{run, Lab, Settings};
use tokio::sync::oneshot;
use tokio::time::Instant;

struct Running {
    lab: Arc<Lab>,
    url: String,
    _stop: oneshot::Sender<()>,
}

async fn start(settings: Settings) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lab = Arc::new(Lab::new(settings).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run(listener, lab.clone(), async {
        let _ = stopped.await;
    }));
    Running {
        lab,
        url,
        _stop: stop,
    }
}

fn client(url: &str, secret: &str) -> Client {
    Client::new(ClientConfig {
        host: url.into(),
        client_id: "castle-lab-client".into(),
        client_secret: secret.into(),
        ca_cert_pem: None,
    })
    .unwrap()
}

fn kubeconfig_at(path: &str) -> SecretRef {
    SecretRef {
        project_id: "castle-lab-project".into(),
        environment: "dev".into(),
        path: path.into(),
        key: "KUBECONFIG".into(),
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: castle\n  cluster:\n    server: https://10.0.0.10:6443\n\n\n";

#[tokio::test]
async fn a_kubeconfig_is_created_read_updated_and_deleted() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let at = kubeconfig_at("/");

    let created = client
        .create_secret(&at, KUBECONFIG, "managed by castle", soon())
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    // Stored trimmed, one trailing newline kept.
    assert_eq!(
        created.secret_value,
        KUBECONFIG.trim_end().to_string() + "\n"
    );
    assert!(castle::infisical::same_modulo_trimming(
        KUBECONFIG,
        &created.secret_value
    ));

    let read = client.get_secret(&at, soon()).await.unwrap();
    assert_eq!(read.secret_value, created.secret_value);

    let updated = client
        .update_secret(&at, "apiVersion: v1\nkind: Config\n", "", soon())
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(lab.lab.secrets()[0].value, "apiVersion: v1\nkind: Config\n");

    client.delete_secret(&at, soon()).await.unwrap();
    let gone = client.get_secret(&at, soon()).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(client
        .delete_secret(&at, soon())
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn writing_into_a_missing_folder_fails_until_the_folders_are_ensured() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let at = kubeconfig_at("/clusters/home");

    let missing = client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("Folder with path '/clusters/home'"),
        "{missing}"
    );

    client
        .ensure_folder("castle-lab-project", "dev", "/clusters/home", soon())
        .await
        .unwrap();
    // A second time is a no-op.
    client
        .ensure_folder("castle-lab-project", "dev", "/clusters/home", soon())
        .await
        .unwrap();
    assert_eq!(
        client
            .list_folders("castle-lab-project", "dev", "/", soon())
            .await
            .unwrap(),
        vec!["clusters"]
    );
    assert_eq!(
        client
            .list_folders("castle-lab-project", "dev", "/clusters", soon())
            .await
            .unwrap(),
        vec!["home"]
    );

    client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap();
    assert_eq!(lab.lab.secrets()[0].path, "/clusters/home");
}

#[tokio::test]
async fn creating_an_existing_secret_is_a_distinct_error() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let at = kubeconfig_at("/");
    client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap();
    let again = client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap_err();
    assert!(again.is_already_exists(), "{again}");
    // What the resource does to adopt: read and compare modulo trimming.
    let existing = client.get_secret(&at, soon()).await.unwrap();
    assert!(castle::infisical::same_modulo_trimming(
        KUBECONFIG,
        &existing.secret_value
    ));
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_the_server_asks() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    lab.lab.set_rate_limit(2, 1);
    let started = Instant::now();
    client
        .create_secret(&kubeconfig_at("/"), KUBECONFIG, "", soon())
        .await
        .unwrap();
    // Two 429s with Retry-After: 1 s each.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(lab.lab.secrets().len(), 1);
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_timeout_fails_fast_with_the_reason() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    lab.lab.set_rate_limit(1, 60);
    let started = Instant::now();
    let error = client
        .get_secret(&kubeconfig_at("/"), Instant::now() + Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(error, Error::Exhausted { .. }), "{error}");
    assert!(error.to_string().contains("Rate limit exceeded"), "{error}");
}

#[tokio::test]
async fn expired_tokens_are_replaced_without_the_caller_noticing() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let at = kubeconfig_at("/");
    client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap();
    lab.lab.expire_tokens();
    let read = client.get_secret(&at, soon()).await.unwrap();
    assert_eq!(read.version, 1);
}

fn count(lab: &Lab, what: &str) -> usize {
    lab.events().iter().filter(|e| *e == what).count()
}

/// A token in its last quarter is renewed: Infisical signs a new JWT, which castle then uses.
/// With TTL = Max TTL (a common setup) renewal is refused and castle logs in again. One 1 s
/// token life is the shortest Infisical expresses (`expiresIn` is in seconds).
#[tokio::test]
async fn short_lived_tokens_are_renewed_then_replaced_at_the_max_ttl() {
    let settings = Settings {
        token_ttl: Duration::from_secs(1),
        token_max_ttl: Duration::from_secs(3),
        ..Settings::default()
    };
    let lab = start(settings).await;
    let client = client(&lab.url, "castle-lab-secret");
    let at = kubeconfig_at("/");
    client
        .create_secret(&at, KUBECONFIG, "", soon())
        .await
        .unwrap();
    assert_eq!(count(&lab.lab, "login"), 1);
    // Into the last quarter of the token's life: the next call renews first.
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.get_secret(&at, soon()).await.unwrap();
    assert_eq!(count(&lab.lab, "renew"), 1, "{:?}", lab.lab.events());
    assert_eq!(count(&lab.lab, "login"), 1);
    // The renewed token was sent, and accepted.
    assert_eq!(count(&lab.lab, "token-refused"), 0);

    let capped = Settings {
        token_ttl: Duration::from_secs(1),
        token_max_ttl: Duration::from_secs(1),
        ..Settings::default()
    };
    let lab = start(capped).await;
    let client = self::client(&lab.url, "castle-lab-secret");
    client.get_secret(&at, soon()).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.create_secret(&at, "v", "", soon()).await.unwrap();
    assert_eq!(
        lab.lab.events(),
        ["login", "renew-refused", "login", "write"],
        "renewal past the Max TTL is refused and castle logs in again"
    );
}

#[tokio::test]
async fn a_token_expiring_between_two_writes_is_replaced_without_a_failed_write() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    lab.lab.expire_tokens_after(1);
    for key in ["A", "B"] {
        let mut at = kubeconfig_at("/");
        at.key = key.into();
        client.create_secret(&at, "v", "", soon()).await.unwrap();
    }
    assert_eq!(
        lab.lab.events(),
        [
            "login",
            "write",
            "tokens-expired",
            "token-refused",
            "login",
            "write"
        ]
    );
}

#[tokio::test]
async fn existing_folders_are_listed_not_created_again() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    // Someone made /clusters by hand; castle creates only /clusters/home under it.
    lab.lab
        .put_secret("dev", "/clusters", "OTHER", "x")
        .unwrap();
    client
        .ensure_folder("castle-lab-project", "dev", "/clusters/home", soon())
        .await
        .unwrap();
    client
        .ensure_folder("castle-lab-project", "dev", "/clusters/home", soon())
        .await
        .unwrap();
    assert_eq!(
        client
            .list_folders("castle-lab-project", "dev", "/clusters", soon())
            .await
            .unwrap(),
        vec!["home"]
    );
    // What Infisical answers when a folder exists: a 400, which castle never provokes.
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}/api/v1/auth/universal-auth/login", lab.url))
        .json(&serde_json::json!({"clientId": "castle-lab-client", "clientSecret": "castle-lab-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again = http
        .post(format!("{}/api/v1/folders", lab.url))
        .bearer_auth(token["accessToken"].as_str().unwrap())
        .json(&serde_json::json!({"workspaceId": "castle-lab-project", "environment": "dev", "path": "/clusters", "name": "home"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Folder with name 'home' already exists in path '/clusters'"
    );
    assert!(!lab.lab.events().iter().any(|e| e == "write-failed"));
}

#[tokio::test]
async fn a_folder_name_with_a_dot_is_refused_with_infisicals_422() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let error = client
        .ensure_folder("castle-lab-project", "dev", "/clusters/home.lab", soon())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Rejected { status: 422, message, .. }
            if message == "name: Invalid folder name. Only alphanumeric characters, dashes, and underscores are allowed."),
        "{error}"
    );
}

#[tokio::test]
async fn a_write_under_a_change_policy_is_reported_as_queued_and_sent_once() {
    let lab = start(Settings::default()).await;
    lab.lab.set_change_policy("prod", false);
    let client = client(&lab.url, "castle-lab-secret");
    let mut at = kubeconfig_at("/");
    at.environment = "prod".into();
    let error = castle::infisical::sync::create_or_adopt(&client, &at, KUBECONFIG, "", soon())
        .await
        .unwrap_err();
    let requests = lab.lab.change_requests();
    assert_eq!(requests.len(), 1);
    let text = error.to_string();
    assert!(
        text.contains(&format!("change request {:?}", requests[0].slug)),
        "{text}"
    );
    assert!(
        text.contains("Approve and merge that request in Infisical"),
        "{text}"
    );
    assert!(lab.lab.secrets().is_empty());
    // An update is queued too, and never followed by a create.
    lab.lab.merge_change_request(&requests[0].id).unwrap();
    castle::infisical::sync::push(&client, &at, "apiVersion: v2\n", "", soon())
        .await
        .unwrap_err();
    assert_eq!(lab.lab.change_requests().len(), 2);
    assert_eq!(lab.lab.secrets()[0].version, 1);
    // A policy that bypasses machine identities lets the write through.
    lab.lab.set_change_policy("prod", true);
    let version = castle::infisical::sync::push(&client, &at, "apiVersion: v2\n", "", soon())
        .await
        .unwrap();
    assert_eq!(version, 2);
}

#[tokio::test]
async fn a_private_ca_is_trusted_through_ca_cert_pem() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let ca = castle_lab::infisical::PrivateCa::generate(address.ip()).unwrap();
    let ca_pem = ca.ca_pem.clone();
    let lab = Arc::new(Lab::new(Settings::default()).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = lab.clone();
    tokio::spawn(async move {
        castle_lab::infisical::run_tls(listener, served, &ca, async {
            let _ = stopped.await;
        })
        .await;
    });
    let with = |ca_cert_pem: Option<String>| {
        Client::new(ClientConfig {
            host: format!("https://{address}"),
            client_id: "castle-lab-client".into(),
            client_secret: "castle-lab-secret".into(),
            ca_cert_pem,
        })
        .unwrap()
    };
    let untrusted = with(None)
        .login(Instant::now() + Duration::from_secs(2))
        .await
        .unwrap_err();
    // An untrusted certificate is its own error, never retried as an unreachable server.
    assert!(
        matches!(untrusted, Error::UntrustedCertificate { .. }),
        "{untrusted}"
    );
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    with(Some(ca_pem)).login(soon()).await.unwrap();
    assert_eq!(lab.events(), ["login"]);
    drop(stop);
}

#[tokio::test]
async fn a_wrong_client_secret_gives_a_clear_error_without_the_secret() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "not-the-right-secret-1234");
    let error = client
        .get_secret(&kubeconfig_at("/"), soon())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Login { status: 401, .. }), "{text}");
    assert!(text.contains("client secret"), "{text}");
    assert!(!text.contains("not-the-right-secret-1234"), "{text}");
    assert!(!format!("{error:?}").contains("not-the-right-secret-1234"));
    assert!(!format!("{client:?}").contains("not-the-right-secret-1234"));
    // Every later call fails the same way without trying again: three refused logins in a row
    // would lock the identity out for everyone.
    for _ in 0..3 {
        let again = client
            .get_secret(&kubeconfig_at("/"), soon())
            .await
            .unwrap_err();
        assert!(matches!(again, Error::Login { status: 401, .. }), "{again}");
    }
    assert_eq!(count(&lab.lab, "login-refused"), 1);
}

#[tokio::test]
async fn errors_about_a_secret_never_carry_its_value() {
    let lab = start(Settings::default()).await;
    let client = client(&lab.url, "castle-lab-secret");
    let error = client
        .create_secret(
            &kubeconfig_at("/nowhere"),
            "super-sensitive-kubeconfig",
            "",
            soon(),
        )
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("super-sensitive-kubeconfig"));
    assert!(!format!("{error:?}").contains("super-sensitive-kubeconfig"));
}

#[tokio::test]
async fn concurrent_calls_share_one_login() {
    let lab = start(Settings::default()).await;
    let client = Arc::new(client(&lab.url, "castle-lab-secret"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut at = kubeconfig_at("/");
            at.key = format!("KEY_{i}");
            client.create_secret(&at, "v", "", soon()).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // 8 creates and exactly one login.
    assert_eq!(lab.lab.request_count(), 9);
    assert_eq!(count(&lab.lab, "login"), 1);
}

#[tokio::test]
async fn the_emulator_speaks_like_infisical() {
    let lab = start(Settings::default()).await;
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{}/api/v1/auth/universal-auth/login", lab.url))
        .json(&serde_json::json!({"clientId": "castle-lab-client", "clientSecret": "castle-lab-secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(login["tokenType"], "Bearer");
    let token = login["accessToken"].as_str().unwrap().to_string();

    // What the JS SDK sends: booleans as strings.
    let url = format!(
        "{}/api/v3/secrets/raw/MISSING?workspaceId=castle-lab-project&environment=dev&secretPath=%2F&type=shared\
         &expandSecretReferences=true&includeImports=true&viewSecretValue=true",
        lab.url
    );
    let answer = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(answer.status(), 404);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["message"], "Secret with name 'MISSING' not found");
    assert_eq!(body["statusCode"], 404);
    assert!(body["reqId"].is_string() && body["error"].is_string());

    // v4 with projectId, and a rename with newSecretName.
    let v4 = format!("{}/api/v4/secrets/A", lab.url);
    let created = http
        .post(&v4)
        .bearer_auth(&token)
        .json(&serde_json::json!({"projectId": "castle-lab-project", "environment": "dev", "secretValue": " x "}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let renamed: serde_json::Value = http
        .patch(&v4)
        .bearer_auth(&token)
        .json(&serde_json::json!({"projectId": "castle-lab-project", "environment": "dev", "newSecretName": "B"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(renamed["secret"]["secretKey"], "B");
    assert_eq!(renamed["secret"]["secretValue"], "x");
    assert_eq!(renamed["secret"]["version"], 2);
    let id = renamed["secret"]["id"].as_str().unwrap();
    let by_id = http
        .get(format!("{}/api/v3/secrets/raw/id/{id}", lab.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_id.status(), 200);

    // 422 lists the issues.
    let invalid: serde_json::Value = http
        .post(format!("{}/api/v3/secrets/raw/C", lab.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"secretValue": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(invalid["statusCode"], 422);
    assert!(invalid["message"].is_array());

    // Rate limit: message and Retry-After.
    lab.lab.set_rate_limit(1, 7);
    let limited = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Rate limit exceeded. Please try again in 7 seconds"
    );

    // Expired token: 403 TokenError.
    lab.lab.expire_tokens();
    let expired: serde_json::Value = http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["statusCode"], 403);
    assert_eq!(expired["error"], "TokenError");
}

#[tokio::test]
async fn state_survives_a_restart_through_the_state_file() {
    let dir = std::env::temp_dir().join(format!("castle-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("infisical.json");
    let _ = std::fs::remove_file(&file);
    let settings = Settings {
        state_file: Some(file.clone()),
        ..Settings::default()
    };
    {
        let lab = start(settings.clone()).await;
        client(&lab.url, "castle-lab-secret")
            .create_secret(&kubeconfig_at("/"), KUBECONFIG, "", soon())
            .await
            .unwrap();
    }
    let lab = Lab::new(settings).unwrap();
    assert_eq!(lab.secrets().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

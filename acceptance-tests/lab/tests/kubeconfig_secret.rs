//! `castle_kubeconfig_secret` driven through the provider's resource interface (as Terraform
//! would, minus gRPC) against the Infisical lab, in process.

use std::sync::Arc;

use castle::infisical::{Client, ClientConfig};
use castle::provider::ProviderData;
use castle::resources::kubeconfig_secret::{KubeconfigSecretResource, KubeconfigSecretState};
use castle_lab::infisical::{run, Lab, Settings};
use tf_provider::value::Value;
use tf_provider::{Diagnostics, Resource};

type State = Value<KubeconfigSecretState>;

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\ncurrent-context: admin@castle\n";

struct Fixture {
    lab: Arc<Lab>,
    resource: KubeconfigSecretResource,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn fixture() -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lab = Arc::new(Lab::new(Settings::default()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, lab.clone(), async {
        let _ = stopped.await;
    }));
    let client = Client::new(ClientConfig {
        host: url,
        client_id: "castle-lab-client".into(),
        client_secret: "castle-lab-secret".into(),
        ca_cert_pem: None,
    })
    .unwrap();
    let resource = KubeconfigSecretResource::new(Arc::new(ProviderData::with_infisical(client)));
    Fixture {
        lab,
        resource,
        _stop: stop,
    }
}

fn config(kubeconfig: &str) -> KubeconfigSecretState {
    KubeconfigSecretState {
        project_id: Value::Value("castle-lab-project".into()),
        environment: Value::Value("dev".into()),
        path: Value::Value("/clusters/home".into()),
        kubeconfig: Value::Value(kubeconfig.into()),
        ..Default::default()
    }
}

fn raw(state: &State) -> State {
    state.clone()
}

/// Null private state or provider meta.
fn null<T>() -> Value<T> {
    Value::Null
}

fn decode(state: &State) -> State {
    state.clone()
}

fn errors(diags: &Diagnostics) -> String {
    diags
        .errors
        .iter()
        .map(|d| format!("{} {}", d.summary, d.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Fixture {
    async fn create(&self, config: KubeconfigSecretState) -> Result<State, String> {
        let mut diags = Diagnostics::default();
        let config = raw(&Value::Value(config));
        let (planned, private) = self
            .resource
            .plan_create(&mut diags, config.clone(), config.clone(), null())
            .await
            .unwrap();
        match self
            .resource
            .create(&mut diags, planned, config, private, null())
            .await
        {
            Some((state, _)) => Ok(state),
            None => Err(errors(&diags)),
        }
    }

    async fn read(&self, state: State) -> State {
        let mut diags = Diagnostics::default();
        let result = self.resource.read(&mut diags, state, null(), null()).await;
        assert!(diags.errors.is_empty(), "{}", errors(&diags));
        result.unwrap().0
    }
}

#[tokio::test]
async fn upload_read_drift_restore_and_recreate() {
    let f = fixture().await;
    let state = f
        .create(config(&format!("{KUBECONFIG}\n\n")))
        .await
        .unwrap();
    let created = decode(&state).as_option().unwrap();
    assert_eq!(created.kubeconfig_version, Value::Value(1));
    assert_eq!(
        created.id,
        Value::Value("castle-lab-project:dev:/clusters/home:KUBECONFIG".into())
    );
    assert_eq!(f.lab.secrets()[0].value, KUBECONFIG);

    // Trimming is not drift: the configured value stays in state.
    let refreshed = f.read(state.clone()).await;
    assert_eq!(decode(&refreshed), decode(&state));

    // A change in Infisical shows as drift, and the plan marks the version unknown.
    f.lab
        .put_secret("dev", "/clusters/home", "KUBECONFIG", "tampered")
        .unwrap();
    let drifted = f.read(state.clone()).await;
    assert_eq!(
        decode(&drifted).as_option().unwrap().kubeconfig,
        Value::Value("tampered".into())
    );
    let mut diags = Diagnostics::default();
    let wanted = raw(&Value::Value(config(&format!("{KUBECONFIG}\n\n"))));
    let (planned, private, replace) = f
        .resource
        .plan_update(
            &mut diags,
            drifted.clone(),
            wanted.clone(),
            wanted.clone(),
            null(),
            null(),
        )
        .await
        .unwrap();
    assert!(replace.is_empty());
    assert_eq!(
        decode(&planned).as_option().unwrap().kubeconfig_version,
        Value::Unknown
    );
    let (restored, _) = f
        .resource
        .update(&mut diags, drifted, planned, wanted, private, null())
        .await
        .unwrap();
    assert!(diags.errors.is_empty(), "{}", errors(&diags));
    assert_eq!(f.lab.secrets()[0].value, KUBECONFIG);
    assert_eq!(
        decode(&restored).as_option().unwrap().kubeconfig_version,
        Value::Value(3)
    );

    // Deleted in Infisical: read drops the resource.
    f.lab.reset();
    let dropped = f.read(restored).await;
    assert!(decode(&dropped).is_null());
}

#[tokio::test]
async fn an_existing_secret_is_adopted_only_with_the_same_value() {
    let f = fixture().await;
    f.lab
        .put_secret(
            "dev",
            "/clusters/home",
            "KUBECONFIG",
            &format!("  {KUBECONFIG}"),
        )
        .unwrap();
    f.create(config(KUBECONFIG)).await.unwrap();

    f.lab
        .put_secret("dev", "/clusters/home", "KUBECONFIG", "someone else's")
        .unwrap();
    let error = f.create(config(KUBECONFIG)).await.unwrap_err();
    assert!(error.contains("terraform import castle_kubeconfig_secret.<name> 'castle-lab-project:dev:/clusters/home:KUBECONFIG'"), "{error}");
    assert!(
        !error.contains("apiVersion"),
        "values never reach diagnostics: {error}"
    );
    assert_eq!(f.lab.secrets()[0].value, "someone else's");
}

#[tokio::test]
async fn import_reads_the_value_and_destroy_removes_everything() {
    let f = fixture().await;
    f.lab
        .put_secret("dev", "/clusters/home", "KUBECONFIG", KUBECONFIG)
        .unwrap();
    let mut diags = Diagnostics::default();
    let (imported, _) = f
        .resource
        .import(
            &mut diags,
            "castle-lab-project:dev:/clusters/home:KUBECONFIG".into(),
        )
        .await
        .unwrap();
    let read = f.read(imported).await;
    let state = decode(&read).as_option().unwrap();
    assert_eq!(state.kubeconfig, Value::Value(KUBECONFIG.into()));

    let mut with_talos = config(KUBECONFIG);
    with_talos.talosconfig_key = Value::Value("TALOSCONFIG".into());
    with_talos.talosconfig = Value::Value("context: castle\n".into());
    let mut diags = Diagnostics::default();
    let wanted = raw(&Value::Value(with_talos));
    let (planned, private, _) = f
        .resource
        .plan_update(
            &mut diags,
            read.clone(),
            wanted.clone(),
            wanted.clone(),
            null(),
            null(),
        )
        .await
        .unwrap();
    let (applied, _) = f
        .resource
        .update(&mut diags, read, planned, wanted, private, null())
        .await
        .unwrap();
    assert!(diags.errors.is_empty(), "{}", errors(&diags));
    assert_eq!(f.lab.secrets().len(), 2);

    f.resource
        .destroy(&mut diags, applied.clone(), null(), null())
        .await
        .unwrap();
    assert!(f.lab.secrets().is_empty());
    // Already gone is fine.
    f.resource
        .destroy(&mut diags, applied, null(), null())
        .await
        .unwrap();
    assert!(diags.errors.is_empty(), "{}", errors(&diags));
}

#[tokio::test]
async fn a_bad_import_id_says_what_is_expected() {
    let f = fixture().await;
    let mut diags = Diagnostics::default();
    assert!(f
        .resource
        .import(&mut diags, "castle-lab-project:KUBECONFIG".into())
        .await
        .is_none());
    assert!(errors(&diags).contains("project_id:environment:path:kubeconfig_key"));
}

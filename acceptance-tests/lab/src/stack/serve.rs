//! `castle-lab serve`: the whole lab in the foreground, until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::sync::watch;

use super::fakepve::FakePve;
use super::{control, repo, status, LabFile, Settings};
use crate::talos::{admin, Fleet, FleetOptions};
use crate::wiring;

/// How long the services may take to answer once started.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the lab until a signal. The pid file lives as long as this process; `lab.json` is
/// written once every service answers and removed on the way out.
pub async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let root = repo::root().context(
        "unable to find castle's checkout (a directory holding acceptance-tests/) above the \
         current directory or the castle-lab binary; fakepve's launcher lives there",
    )?;
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("unable to create {}", settings.state_dir.display()))?;
    let me = std::process::id();
    if let Some(pid) = control::running(settings).filter(|p| *p != me) {
        bail!(
            "castle-lab is already up (pid {pid}, {})",
            settings.pid_file().display()
        );
    }
    // Our own listeners first: a taken port fails before anything else started.
    let admin_listener = control::bind(settings.admin, "--admin").await?;
    let infisical_listener = control::bind(settings.infisical, "--infisical").await?;
    let factory_listener = control::bind(settings.factory, "--factory").await?;
    std::fs::write(settings.pid_file(), format!("{me}\n"))
        .with_context(|| format!("unable to write {}", settings.pid_file().display()))?;
    let outcome = run(
        settings,
        &root,
        admin_listener,
        infisical_listener,
        factory_listener,
    )
    .await;
    // Leave no file that says we are up; but never remove another lab's.
    if control::read_pid(&settings.pid_file()) == Some(me) {
        let _ = std::fs::remove_file(settings.pid_file());
        let _ = std::fs::remove_file(settings.lab_file());
    }
    outcome
}

async fn run(
    settings: &Settings,
    root: &std::path::Path,
    admin_listener: tokio::net::TcpListener,
    infisical_listener: tokio::net::TcpListener,
    factory_listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    // Installed before anything starts: a SIGTERM during start-up stops the lab cleanly.
    let mut signals = Signals::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let options = FleetOptions {
        time_scale: settings.time_scale,
        // Node disks (etcd data, etcd logs) under the state directory; a machine that appears
        // gets a blank one.
        disk_dir: Some(settings.state_dir.join("disks")),
        // The template the README recommends for the flagship example: the Image Factory's
        // disk image with Longhorn's extensions in.
        template_extensions: vec![
            "siderolabs/iscsi-tools".into(),
            "siderolabs/util-linux-tools".into(),
        ],
        ..FleetOptions::default()
    };
    let factory_ca = crate::infisical::PrivateCa::generate(settings.factory.ip())?;
    std::fs::write(settings.factory_ca(), &factory_ca.ca_pem)
        .with_context(|| format!("unable to write {}", settings.factory_ca().display()))?;
    let factory = options.factory.clone();
    let factory_stopped = stopped();
    let factory_task = tokio::spawn(async move {
        factory
            .serve(factory_listener, &factory_ca, factory_stopped)
            .await
    });
    let fleet = Fleet::new(options.clone());
    let admin_task = tokio::spawn(admin::run(admin_listener, fleet.clone(), stopped()));
    let infisical = Arc::new(crate::infisical::Lab::new(
        crate::infisical::Settings::default(),
    )?);
    let infisical_task = tokio::spawn(crate::infisical::run(
        infisical_listener,
        infisical,
        stopped(),
    ));
    let outcome = async {
        let mut pve = FakePve::start(settings, root).await?;
        let lab = LabFile::new(settings, std::process::id(), &options);
        let result =
            wait_and_watch(settings, &lab, &fleet, &mut pve, &mut signals, stopped()).await;
        pve.stop().await;
        result
    }
    .await;
    stop_tx.send_replace(true);
    fleet.shutdown();
    let _ = admin_task.await;
    let _ = infisical_task.await;
    let _ = factory_task.await;
    tracing::info!("castle-lab stopped");
    outcome
}

/// Waits until every service answers, writes `lab.json`, then wires Proxmox to the fleet
/// until a signal or fakepve's death.
async fn wait_and_watch(
    settings: &Settings,
    lab: &LabFile,
    fleet: &Fleet,
    pve: &mut FakePve,
    signals: &mut Signals,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let health = status::check(lab).await;
        if health.ok() {
            break;
        }
        if started.elapsed() > HEALTH_TIMEOUT || pve.exited() {
            bail!(
                "the lab's services did not all answer within {HEALTH_TIMEOUT:?}: proxmox {:?}, talos {:?}, infisical {:?}",
                health.proxmox,
                health.talos.map(drop),
                health.infisical
            );
        }
        tokio::select! {
            _ = signals.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    let watcher = tokio::spawn(wiring::run(
        status::pve_client(lab)?,
        fleet.clone(),
        wiring::POLL_INTERVAL,
        stopped,
    ));
    // Written whole, then renamed: a script never reads half a file.
    let tmp = settings.lab_file().with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(lab)? + "\n")?;
    std::fs::rename(&tmp, settings.lab_file())?;
    tracing::info!(
        pve = %lab.proxmox.endpoint,
        admin = %lab.talos.admin,
        infisical = %lab.infisical.host,
        "castle-lab is up"
    );
    let outcome = wait_for_stop(pve, signals).await;
    watcher.abort();
    outcome
}

/// SIGTERM and SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Until SIGTERM or Ctrl-C (`Ok`) or fakepve dies (an error: the lab is no lab without it).
async fn wait_for_stop(pve: &mut FakePve, signals: &mut Signals) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = signals.recv() => return Ok(()),
            _ = tick.tick() => if pve.exited() {
                bail!("fakepve exited; stopping the lab");
            },
        }
    }
}

//! `castle-lab`: starts castle's lab on loopback.
//!
//! ```text
//! castle-lab up     [--pve IP:PORT] [--admin IP:PORT] [--infisical IP:PORT]
//!                   [--state-dir DIR] [--time-scale S]
//! castle-lab serve  (same flags; the foreground process `up` starts detached)
//! castle-lab status [--state-dir DIR]
//! castle-lab down   [--state-dir DIR]
//!
//! castle-lab talos --nodes 127.0.0.211,127.0.0.212 --admin 127.0.0.1:7000 \
//!                  [--time-scale 1.0] [--talos-version v1.12.0]
//!                  [--template-extensions siderolabs/iscsi-tools,…] [--iso-boot]
//!                  [--factory 127.0.0.1:4443 --factory-ca-out FILE]
//!
//! castle-lab infisical --listen 127.0.0.1:8200 [--state FILE] [--token-ttl SECONDS]
//!                     [--token-max-ttl SECONDS] [--tls-ca-out FILE]
//! ```
//!
//! `up` returns once the whole lab answers; `down` stops it. `serve`, `talos` and `infisical`
//! run until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};

use std::sync::Arc;

use anyhow::{bail, Context as _};
use castle_lab::talos::{admin, Fleet, FleetOptions};

const USAGE: &str = "usage: castle-lab up|serve [--pve IP:PORT] [--admin IP:PORT] [--infisical IP:PORT] [--state-dir DIR] [--time-scale S]
       castle-lab status|down [--state-dir DIR]
       castle-lab talos --nodes IP[,IP…] --admin IP:PORT [--time-scale F] [--talos-version vX.Y.Z] [--template-extensions EXT[,EXT…]] [--iso-boot] [--factory IP:PORT --factory-ca-out FILE]
       castle-lab infisical --listen IP:PORT [--state FILE] [--token-ttl SECONDS] [--token-max-ttl SECONDS] [--tls-ca-out FILE]";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // The detached `serve` writes to a log file: no colour codes there.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Exit codes matter to scripts: `status` is 1 when the lab is down, errors are 2. Errors
    // print as one line with their causes, not as a backtrace.
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("castle-lab: {e:#}");
            2
        }
    };
    std::process::exit(code)
}

fn run() -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    let whole_lab = |args: &[String]| {
        castle_lab::stack::Settings::parse(args, castle_lab::stack::repo::root().as_deref())
    };
    let code = match args.first().map(String::as_str) {
        Some("up") => runtime.block_on(castle_lab::stack::control::up(&whole_lab(&args[1..])?))?,
        Some("down") => {
            runtime.block_on(castle_lab::stack::control::down(&whole_lab(&args[1..])?))?
        }
        Some("status") => {
            runtime.block_on(castle_lab::stack::status::status(&whole_lab(&args[1..])?))?
        }
        Some("serve") => {
            runtime.block_on(castle_lab::stack::serve::serve(&whole_lab(&args[1..])?))?;
            0
        }
        _ => {
            runtime.block_on(component(&args))?;
            0
        }
    };
    Ok(code)
}

/// The single-component subcommands.
async fn component(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("talos") => talos(&args[1..]).await,
        Some("infisical") => infisical(&args[1..]).await,
        _ => bail!("{USAGE}"),
    }
}

/// Flags of the form `--name value`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

async fn talos(args: &[String]) -> anyhow::Result<()> {
    let nodes: Vec<IpAddr> = match flag(args, "--nodes") {
        Some(list) if !list.is_empty() => list
            .split(',')
            .map(|a| {
                a.trim()
                    .parse()
                    .with_context(|| format!("bad node address {a:?}"))
            })
            .collect::<Result<_, _>>()?,
        _ => vec![],
    };
    let admin_addr: SocketAddr = flag(args, "--admin")
        .context(USAGE)?
        .parse()
        .context("--admin must be IP:PORT")?;
    let mut options = FleetOptions::default();
    if let Some(scale) = flag(args, "--time-scale") {
        options.time_scale = scale.parse().context("--time-scale must be a number")?;
    }
    if let Some(version) = flag(args, "--talos-version") {
        options.default_talos_version = version.to_string();
    }
    if let Some(list) = flag(args, "--template-extensions") {
        options.template_extensions = list
            .split(',')
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
    }
    options.iso_boot = args.iter().any(|a| a == "--iso-boot");
    // The Image Factory, on loopback HTTPS; its CA goes to --factory-ca-out for clients.
    let factory_addr: SocketAddr = flag(args, "--factory")
        .unwrap_or("127.0.0.1:0")
        .parse()
        .context("--factory must be IP:PORT")?;
    anyhow::ensure!(
        factory_addr.ip().is_loopback(),
        "--factory must be on loopback"
    );
    let factory_listener = tokio::net::TcpListener::bind(factory_addr)
        .await
        .with_context(|| format!("unable to bind the Image Factory on {factory_addr}"))?;
    let factory_ca = castle_lab::infisical::PrivateCa::generate(factory_addr.ip())?;
    if let Some(path) = flag(args, "--factory-ca-out") {
        std::fs::write(path, &factory_ca.ca_pem)
            .with_context(|| format!("unable to write {path}"))?;
    }
    tracing::info!(addr = %factory_listener.local_addr()?, "Image Factory listening");
    let fleet = Fleet::new(options.clone());
    let factory = options.factory.clone();
    let stopping = fleet.clone();
    let factory_task = tokio::spawn(async move {
        factory
            .serve(factory_listener, &factory_ca, async move {
                stopping.stopped().await
            })
            .await
    });
    for node in nodes {
        fleet.add_node(node, None)?;
        tracing::info!(%node, "Talos node in maintenance mode on port 50000");
    }
    let listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("unable to bind the admin API on {admin_addr}"))?;
    tracing::info!(%admin_addr, "admin API listening");
    let stopping = fleet.clone();
    let admin = tokio::spawn(admin::run(listener, fleet.clone(), async move {
        stopping.stopped().await
    }));
    wait_for_signal().await?;
    tracing::info!("stopping");
    fleet.shutdown();
    admin.await??;
    factory_task.await??;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

async fn infisical(args: &[String]) -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:8200".to_string();
    let mut settings = castle_lab::infisical::Settings::default();
    let mut tls_ca_out: Option<std::path::PathBuf> = None;
    let mut max_ttl_set = false;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.clone(),
            "--state" => settings.state_file = Some(value.into()),
            "--token-ttl" => settings.token_ttl = std::time::Duration::from_secs(value.parse()?),
            "--token-max-ttl" => {
                settings.token_max_ttl = std::time::Duration::from_secs(value.parse()?);
                max_ttl_set = true;
            }
            // Serve HTTPS with a fresh private CA, whose certificate goes to FILE.
            "--tls-ca-out" => tls_ca_out = Some(value.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    // Infisical refuses a TTL above the Max TTL; keep the pair consistent.
    if !max_ttl_set && settings.token_max_ttl < settings.token_ttl {
        settings.token_max_ttl = settings.token_ttl;
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // A test double with public credentials: refuse anything but loopback.
    if !listener.local_addr()?.ip().is_loopback() {
        bail!("the Infisical lab only listens on loopback, not {listen}");
    }
    let lab = Arc::new(castle_lab::infisical::Lab::new(settings)?);
    let address = listener.local_addr()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match tls_ca_out {
        Some(file) => {
            let ca = castle_lab::infisical::PrivateCa::generate(address.ip())?;
            std::fs::write(&file, &ca.ca_pem)
                .with_context(|| format!("writing {}", file.display()))?;
            // The harness reads this line to learn the port when it passed port 0.
            println!("infisical lab listening on https://{address}");
            castle_lab::infisical::run_tls(listener, lab, &ca, shutdown).await;
        }
        None => {
            println!("infisical lab listening on http://{address}");
            castle_lab::infisical::run(listener, lab, shutdown).await?;
        }
    }
    Ok(())
}

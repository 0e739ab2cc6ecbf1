//! `castle-lab`: starts castle's lab on loopback.
//!
//! ```text
//! castle-lab talos --nodes 127.0.0.211,127.0.0.212 --admin 127.0.0.1:7000 \
//!                  [--time-scale 1.0] [--talos-version v1.12.0]
//! ```
//!
//! Each subcommand runs until Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context as _};
use castle_lab::talos::{admin, Fleet, FleetOptions};

const USAGE: &str = "usage: castle-lab talos --nodes IP[,IP…] --admin IP:PORT [--time-scale F] [--talos-version vX.Y.Z]";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("talos") => runtime.block_on(talos(&args[1..])),
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
    let fleet = Fleet::new(options);
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

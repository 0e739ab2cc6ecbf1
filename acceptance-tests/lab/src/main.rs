//! `castle-lab`: starts and stops castle's lab on loopback.
//!
//! `castle-lab infisical --listen 127.0.0.1:8200 [--state FILE] [--token-ttl SECONDS]`

use std::sync::Arc;

use anyhow::{bail, Context};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("infisical") => infisical(&args[1..]).await,
        _ => {
            println!("castle-lab: usage: castle-lab infisical --listen ADDR [--state FILE] [--token-ttl SECONDS]");
            Ok(())
        }
    }
}

async fn infisical(args: &[String]) -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:8200".to_string();
    let mut settings = castle_lab::infisical::Settings::default();
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.clone(),
            "--state" => settings.state_file = Some(value.into()),
            "--token-ttl" => settings.token_ttl = std::time::Duration::from_secs(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    // A test double with public credentials: refuse anything but loopback.
    if !listener.local_addr()?.ip().is_loopback() {
        bail!("the Infisical lab only listens on loopback, not {listen}");
    }
    let lab = Arc::new(castle_lab::infisical::Lab::new(settings)?);
    // The harness reads this line to learn the port when it passed port 0.
    println!("infisical lab listening on http://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    castle_lab::infisical::run(listener, lab, shutdown).await?;
    Ok(())
}

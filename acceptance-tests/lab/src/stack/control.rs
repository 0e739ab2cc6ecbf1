//! `castle-lab up` and `down`, and the process plumbing they share with `serve`: the pid file,
//! liveness, signals, ports.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::{status, LabFile, Settings};

/// How long `up` waits for every service to answer.
const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` waits after SIGTERM before SIGKILL.
const DOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Fails with a message naming the flag and port when `addr` cannot be listened on.
pub fn ensure_free(addr: SocketAddr, flag: &str) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| port_error(addr, flag, e))
}

/// Binds `addr`, with the same message as [`ensure_free`] when it is taken.
pub async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| port_error(addr, flag, e))
}

fn port_error(addr: SocketAddr, flag: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "port {} on {} is already in use ({flag} {addr}): another lab or program listens \
             there; stop it or choose another address with {flag}",
            addr.port(),
            addr.ip()
        )
    } else {
        anyhow::anyhow!("unable to listen on {addr} ({flag}): {e}")
    }
}

/// Sends a signal with `kill(1)`: the workspace forbids `unsafe`, and a shell tool spares a
/// dependency for two signals.
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is a live (not zombie) castle-lab process. The name check keeps a stale pid
/// file from pointing `down` at an unrelated process that reused the number.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name in parentheses, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("castle-lab"))
        .unwrap_or(false)
}

/// The pid in a pid file, if any.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pid of the running lab, if it runs.
pub fn running(settings: &Settings) -> Option<u32> {
    read_pid(&settings.pid_file()).filter(|pid| alive(*pid))
}

/// `castle-lab up`: starts `castle-lab serve` detached, waits until every service answers,
/// prints the status. Returns the exit code.
pub async fn up(settings: &Settings) -> anyhow::Result<i32> {
    if let Some(pid) = running(settings) {
        println!("castle-lab is already up (pid {pid})\n");
        return status::status(settings).await;
    }
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("unable to create {}", settings.state_dir.display()))?;
    // Fail here, with the port's name, rather than in the detached process.
    ensure_free(settings.pve, "--pve")?;
    ensure_free(settings.admin, "--admin")?;
    ensure_free(settings.infisical, "--infisical")?;
    let _ = std::fs::remove_file(settings.lab_file());
    let log = File::create(settings.log_file())
        .with_context(|| format!("unable to create {}", settings.log_file().display()))?;
    let exe = std::env::current_exe().context("unable to find the castle-lab binary")?;
    let mut child = Command::new(exe)
        .arg("serve")
        .args(settings.to_args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
        .process_group(0)
        .spawn()
        .context("unable to start castle-lab serve")?;
    let pid = child.id();
    let started = Instant::now();
    loop {
        if let Some(exit) = child.try_wait()? {
            bail!(
                "castle-lab serve stopped ({exit}) before the lab was up:\n{}",
                tail(&settings.log_file(), 15)
            );
        }
        if LabFile::read(&settings.lab_file()).is_ok_and(|f| f.pid == pid) {
            break;
        }
        if started.elapsed() > UP_TIMEOUT {
            send_signal(pid, "TERM");
            bail!(
                "the lab did not come up within {UP_TIMEOUT:?}:\n{}",
                tail(&settings.log_file(), 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "castle-lab is up (pid {pid}, log {})\n",
        settings.log_file().display()
    );
    status::status(settings).await
}

/// `castle-lab down`: SIGTERM to the serve process (which stops fakepve), SIGKILL if it does
/// not stop in time. Idempotent.
pub async fn down(settings: &Settings) -> anyhow::Result<i32> {
    let Some(pid) = running(settings) else {
        remove_files(settings);
        println!("castle-lab is not running");
        return Ok(0);
    };
    send_signal(pid, "TERM");
    if !wait_gone(pid, DOWN_TIMEOUT).await {
        // fakepve follows: it stops when its stdin, held by serve, closes.
        tracing::warn!(pid, "castle-lab serve did not stop on SIGTERM; killing it");
        send_signal(pid, "KILL");
        wait_gone(pid, Duration::from_secs(5)).await;
    }
    remove_files(settings);
    println!("castle-lab stopped (pid {pid})");
    Ok(0)
}

async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let started = Instant::now();
    while alive(pid) {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

fn remove_files(settings: &Settings) {
    let _ = std::fs::remove_file(settings.pid_file());
    let _ = std::fs::remove_file(settings.lab_file());
}

/// The last `n` lines of a file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = ensure_free(addr, "--admin").unwrap_err().to_string();
        assert!(e.contains(&format!("port {}", addr.port())), "{e}");
        assert!(e.contains("--admin"), "{e}");
    }

    #[test]
    fn this_process_is_alive_and_a_missing_pid_is_not() {
        // The test binary's name holds "castle_lab", not "castle-lab": only liveness shows.
        assert!(std::fs::metadata(format!("/proc/{}", std::process::id())).is_ok());
        assert!(!alive(u32::MAX - 1));
        assert_eq!(read_pid(Path::new("/nonexistent/castle-lab.pid")), None);
    }
}

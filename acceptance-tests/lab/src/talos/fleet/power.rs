//! Power and reboots: a machine powered off keeps its disk; a reboot takes the node off the
//! network for a while and brings it back in maintenance mode or running its config.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use tonic::Status;

use super::etcd::Stop;
use super::{Fleet, FleetError, Node, State};

#[derive(Debug, Clone, Copy)]
pub(crate) enum After {
    Maintenance,
    Running,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// The machine is off: nothing listens, its disk (config, etcd data) is kept.
    PoweredOff,
    Maintenance,
    Rebooting {
        until: Instant,
        then: After,
    },
    Running {
        since: Instant,
        wall: SystemTime,
    },
}

impl Phase {
    /// The state's name in the admin API.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Phase::Maintenance => "maintenance",
            Phase::Rebooting { .. } => "booting",
            Phase::Running { .. } => "running",
            Phase::PoweredOff => "off",
        }
    }

    /// Running since now.
    pub(crate) fn running() -> Phase {
        Phase::Running {
            since: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl Fleet {
    /// Powers a node off, as a stopped VM: its listener closes and connections drop, but it
    /// keeps what is on its disk (installed config, etcd data, a pending upgrade), and its etcd
    /// member stays in the cluster as an unreachable one. [`Fleet::power_on`] boots it again.
    /// Powering off a node that is off does nothing.
    pub fn power_off(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let node = state.node_mut(address)?;
        // A node powered off in the middle of an install has its config on disk already (the
        // emulator writes it when the config is applied), so it boots configured.
        if matches!(node.phase, Phase::Running { .. }) {
            node.lose_unwritten_upgrade();
        }
        node.phase = Phase::PoweredOff;
        // Everything dies at once: etcd is killed, and the VIP election key of a holder stays
        // until its lease expires.
        node.etcd.power_down(Stop::Hard);
        node.wake();
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// An ACPI shutdown: Talos runs its shutdown sequence (Talos:
    /// internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go (v1.12.0) `Shutdown`:
    /// drain, `StopAllPods`, which makes the VIP operator resign, then the services stop,
    /// etcd with SIGTERM), then the machine is off as after [`Fleet::power_off`].
    pub fn shut_down(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let grace = self.graceful();
        let node = state.node_mut(address)?;
        node.phase = Phase::PoweredOff;
        node.etcd.power_down(grace);
        node.wake();
        self.reconcile_kube(&mut state);
        Ok(())
    }

    /// Powers on a node that [`Fleet::power_off`] stopped: after [`FleetOptions::boot_delay`]
    /// it runs its installed config (mutual TLS, rejoins etcd), or is in maintenance mode if it
    /// was never configured. A Kubernetes node deleted through the API comes back, as kubelet
    /// registers again.
    ///
    /// [`FleetOptions::boot_delay`]: super::FleetOptions::boot_delay
    pub fn power_on(&self, address: IpAddr) -> Result<(), FleetError> {
        let mut state = self.lock()?;
        let boot = self.scaled(self.inner.options.boot_delay);
        let node = state.node_mut(address)?;
        if !matches!(node.phase, Phase::PoweredOff) {
            return Err(FleetError::PoweredOn(address));
        }
        let then = if node.config.is_some() {
            After::Running
        } else {
            After::Maintenance
        };
        node.phase = Phase::Rebooting {
            until: Instant::now() + boot,
            then,
        };
        node.wake();
        Ok(())
    }

    /// A power cut: the machine goes off at once, as [`Fleet::power_off`], and comes back on by
    /// itself after `off` (before time scaling), as after a tripped breaker or a host reboot,
    /// then boots as [`Fleet::power_on`] says. Nothing happens at the end if the machine was
    /// powered on (or removed) meanwhile.
    pub fn power_cycle(&self, address: IpAddr, off: Duration) -> Result<(), FleetError> {
        self.power_off(address)?;
        let fleet = self.clone();
        let off = self.scaled(off);
        tokio::spawn(async move {
            tokio::time::sleep(off).await;
            let still_off = fleet.lock().is_ok_and(|state| {
                state
                    .nodes
                    .get(&address)
                    .is_some_and(|n| matches!(n.phase, Phase::PoweredOff))
            });
            if still_off {
                let _ = fleet.power_on(address);
            }
        });
        Ok(())
    }

    /// The Reboot call: the node goes down after its answer and comes back running its config.
    pub(crate) fn reboot(&self, address: IpAddr) -> Result<(), Status> {
        self.lock_api()?.serving(address)?;
        self.reboot_after_drain(address, false, After::Running, |_| {});
        Ok(())
    }

    /// A reboot that Talos runs after it answered the request (Talos:
    /// internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go (v1.12.0) `Reboot`,
    /// `Reset`, `Upgrade` and a REBOOT apply start their sequence in a goroutine): for
    /// [`FleetOptions::drain_delay`] the node cordons, drains and stops its services while it
    /// still serves its old identity, then `at_shutdown` changes its disk and it goes down.
    /// Nothing happens if the machine was powered off or rebooted meanwhile.
    ///
    /// [`FleetOptions::drain_delay`]: super::FleetOptions::drain_delay
    pub(crate) fn reboot_after_drain(
        &self,
        address: IpAddr,
        install: bool,
        then: After,
        at_shutdown: fn(&mut Node),
    ) {
        let fleet = self.clone();
        let drain = self.scaled(self.inner.options.drain_delay);
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            let Ok(mut state) = fleet.lock() else { return };
            let Some(node) = state.nodes.get_mut(&address) else {
                return;
            };
            if !matches!(node.phase, Phase::Running { .. }) {
                return;
            }
            at_shutdown(node);
            fleet.start_reboot(&mut state, address, install, then);
        });
    }

    /// Puts a node into a reboot that ends in `then`, and wakes its task so that its listener
    /// closes. The wake-up is delayed a little so the reply of the RPC that caused it gets out.
    pub(crate) fn start_reboot(
        &self,
        state: &mut State,
        address: IpAddr,
        install: bool,
        then: After,
    ) {
        let grace = self.graceful();
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        let base = node.faults.slow_reboot.unwrap_or(if install {
            self.inner.options.install_delay
        } else {
            self.inner.options.reboot_delay
        });
        node.phase = Phase::Rebooting {
            until: Instant::now() + self.scaled(base),
            then,
        };
        // Talos stops its services on the way down (`stopAllPhaselist`): the VIP operator
        // resigns, etcd gets SIGTERM.
        node.etcd.power_down(grace);
        let wake = node.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            wake.send_modify(|g| *g += 1);
        });
        self.reconcile_kube(state);
    }

    /// Ends a due reboot. Called by the node's task when its sleep is over.
    pub(crate) fn finish_reboot(&self, address: IpAddr) {
        let Ok(mut state) = self.lock() else { return };
        let Some(node) = state.nodes.get_mut(&address) else {
            return;
        };
        let Phase::Rebooting { until, then } = node.phase else {
            return;
        };
        if Instant::now() < until {
            return;
        }
        if let Some(v) = node.pending_version.take() {
            node.talos_version = v;
        }
        if let Some((extensions, schematic)) = node.pending_extensions.take() {
            node.extensions = extensions;
            node.schematic = schematic;
        }
        node.phase = match then {
            After::Maintenance => Phase::Maintenance,
            After::Running => Phase::running(),
        };
        node.boots += 1;
        if matches!(then, After::Running) {
            self.after_settle(address);
        }
        self.reconcile_kube(&mut state);
    }

    /// Whether a running node has finished booting (bootstrap possible, kubelet up).
    pub(crate) fn settled(&self, node: &Node) -> bool {
        match node.phase {
            Phase::Running { since, .. } => {
                since.elapsed() >= self.scaled(self.inner.options.settle_delay)
            }
            _ => false,
        }
    }
}

impl Node {
    /// A running node has an Upgrade's release pending only while it drains: Talos writes the
    /// installer image to disk after cordoning, draining and stopping services, just before
    /// the reboot (Talos: internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go
    /// (v1.12.0) `Upgrade`: `drain`, `cleanup`, `stopServices`, ..., then `upgrade`), so
    /// power lost in that time loses the upgrade: the machine boots its old release.
    fn lose_unwritten_upgrade(&mut self) {
        let pending = self.pending_version.take().is_some();
        let pending = self.pending_extensions.take().is_some() || pending;
        if pending {
            self.installed_images.pop();
        }
    }
}

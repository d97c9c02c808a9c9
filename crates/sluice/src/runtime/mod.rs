//! The packet runtime of `sluice run`: the dataplane (software: AF_PACKET ports and a
//! worker thread, [`software`]; DPDK: ethdev ports and a busy-polling worker lcore,
//! [`dpdk`]), the TAP service lane ([`lane`]), the control plane (policy store, policy
//! follower, HTTPS API and admin socket on a Tokio runtime of its own, [`control`]), and the
//! main thread as a small control loop (signals, the stats file, periodic counter logs).
//!
//! # Start
//! Signals are blocked before any thread starts (DPDK's EAL and Tokio start threads too).
//! The store opens first and decides the starting policy (its active version, else the
//! `--policy` file stored as the first version, else deny-all); then the dataplane and the
//! DNS proxy start with it; then the API. A control plane that cannot start stops the node
//! with exit 25 before it serves anything.
//!
//! # Control loop
//! Signals are taken with `sigtimedwait` (see [`crate::signals`]): SIGHUP re-reads
//! `--policy` and writes it to the store if it compiles (the old policy stays otherwise, and
//! every error is logged with its field path); SIGTERM/SIGINT make `/ready` fail, stop the
//! API and the store, then stop the worker, log the final counters, remove the TAP (closing
//! it deletes it), close the ports and release the port locks (the dataplane and DNS keep
//! working until then); SIGUSR1 logs the counters at once. `<data-dir>/stats.json` is
//! rewritten every second ([`crate::stats`]), and the API's node view gets the same
//! document; the counters are logged every [`SUMMARY_INTERVAL`].

mod cluster_view;
mod control;
#[cfg(feature = "dpdk")]
mod dpdk;
mod fleet;
mod lane;
mod listing;
mod port_guard;
mod snapshots;
mod software;
mod upgrade;
mod view;

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_api::Check;
use sluice_dataplane::allowlist::{allowlist_channel, Allowlist, AllowlistConfig, AllowlistWriter};
use sluice_dataplane::counters::{Counter, CounterBlock, Counters, DropReason};
use sluice_dataplane::engine::{Engine, PortId};
use sluice_dataplane::policy_handle::{PolicyHandle, PolicyReader};
use sluice_dataplane::view::{view_channel, ViewClient, ViewServer, DEFAULT_SCAN_BUDGET};
use sluice_dns::{DnsCounters, DnsProxy};
use sluice_io::{IoStats, Tap};
use tracing::{error, info, warn};

use crate::checks::Checked;
use crate::cli::Dataplane as Mode;
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};
use crate::signals::{Request, Signals};
use crate::stats;
use listing::Listings;
use view::NodeState;

pub use control::STORE_DIR;
pub use lane::{set_ipv4_address, LANE_PREFIX};

/// Frames per port per worker turn.
pub const BURST: usize = 32;
/// How often the counters are logged at info level (SIGUSR1 logs them at once).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);
/// How often `<data-dir>/stats.json` is rewritten.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Learned (DNS) allowlist entries per worker, and updates queued per worker.
pub const ALLOWLIST: AllowlistConfig = AllowlistConfig { capacity: 65_536, channel_capacity: 1024 };

/// How long the watchdog is fed while the node starts (store, join, ports), before the
/// control loop feeds it only while the dataplane turns. A join waits for its seed within this.
pub const STARTUP_WATCHDOG_LIMIT: Duration = Duration::from_secs(300);
/// The worker publishes at idle and every millisecond while busy: a heartbeat this old means
/// it is stuck (capped by the watchdog period itself).
const WORKER_STALL_LIMIT: Duration = Duration::from_secs(10);

/// The policy in force when no `--policy` is given: nothing leaves.
const DENY_ALL: &str = r#"{"default_action":"deny","source_groups":[]}"#;

/// A running dataplane, as the control loop sees it.
trait Dataplane {
    /// The engine counters, summed over workers.
    fn counters(&self) -> Counters;
    /// The worker's published counters (the control plane reads its policy generation).
    fn counter_block(&self) -> Arc<CounterBlock>;
    /// What the worker counts per port beyond the engine.
    fn io(&self) -> Arc<IoStats>;
    /// The ports' own driver counters, for the stats file (DPDK only).
    fn driver_stats(&self) -> Option<Value> {
        None
    }
    /// False once a worker has stopped on its own (it panicked).
    fn is_running(&self) -> bool;
    /// Stops the workers, closes the ports and the service lane; the final counters.
    fn stop(self: Box<Self>) -> Result<Counters, String>;
}

/// What every dataplane needs to build its engine.
struct Parts {
    policy: PolicyReader,
    allowlist: Option<Allowlist>,
    /// The worker's end of the listings' read path.
    views: ViewServer,
}

impl Parts {
    /// The engine for ports with these MACs, and the service lane it is wired to.
    fn engine(
        self,
        config: &NodeConfig,
        internal_mac: [u8; 6],
        external_mac: [u8; 6],
    ) -> Result<(Engine, Tap), Failure> {
        let mut engine_config = config.engine_config(internal_mac, external_mac)?;
        let tap = lane::open(config.internal_address, &mut engine_config)?;
        match lane::shield_internal_interface(&config.internal_port) {
            Ok(Some(iface)) => info!(
                interface = %iface,
                "strict reverse-path filter on the internal port's kernel interface: the node's own stack takes                  clients' packets only from the service lane"
            ),
            Ok(None) => {}
            Err(why) => warn!("{why}"),
        }
        engine_config.hash_seed = random_seed();
        let mut engine = Engine::new(engine_config, self.policy, self.allowlist)
            .map_err(|e| Failure::new(Exit::Setting, e.to_string()))?;
        engine.attach_views(self.views);
        Ok((engine, tap))
    }
}

/// A random flow-hash key per worker, so flow-table collisions cannot be planned from outside.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut seed)).is_ok() {
        return u64::from_ne_bytes(seed);
    }
    // std's RandomState is keyed randomly per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// The running node: what the control loop needs and what must be released at the end.
struct Node {
    dataplane: Box<dyn Dataplane>,
    policy: PolicyHandle,
    /// The DNS proxy, when upstreams are configured.
    dns: Option<DnsProxy>,
    /// The control plane's end of the worker's view channel; the API's node view takes it.
    views: Option<ViewClient>,
    io: Arc<IoStats>,
    lane: String,
    started: Instant,
}

/// Opens everything and starts the worker of the configured dataplane.
fn start(config: &NodeConfig, policy: PolicyHandle) -> Result<Node, Failure> {
    let (allowlist, mut readers) = allowlist_channel(1, &ALLOWLIST);
    let (views, view_server) = view_channel(DEFAULT_SCAN_BUDGET);
    let parts = Parts { policy: policy.reader(), allowlist: readers.pop(), views: view_server };
    let (dataplane, lane) = match config.dataplane {
        Mode::Software => software::start(config, parts)?,
        #[cfg(feature = "dpdk")]
        Mode::Dpdk => dpdk::start(config, parts)?,
        #[cfg(not(feature = "dpdk"))]
        Mode::Dpdk => {
            drop(parts);
            return Err(crate::checks::check_dpdk_built(config).expect_err("refused without the dpdk feature"));
        }
    };
    let io = dataplane.io();
    let dns = match start_dns(config, &lane, &policy, allowlist) {
        Ok(dns) => dns,
        Err(f) => {
            let _ = dataplane.stop();
            return Err(f);
        }
    };
    Ok(Node { dataplane, policy, dns, views: Some(views), io, lane, started: Instant::now() })
}

/// Routes the upstreams out of the service lane and starts the DNS proxy on the target
/// addresses (which the lane holds). `None` when no upstream is configured.
fn start_dns(
    config: &NodeConfig,
    lane: &str,
    policy: &PolicyHandle,
    allowlist: AllowlistWriter,
) -> Result<Option<DnsProxy>, Failure> {
    let Some(proxy_config) = config.dns.proxy_config() else {
        warn!(
            "no --dns-upstream given: the DNS proxy is off; clients' DNS queries to {} go unanswered",
            config.internal_address.ip
        );
        return Ok(None);
    };
    for upstream in &config.dns.upstreams {
        lane::add_host_route(lane, *upstream.0.ip()).map_err(|e| {
            Failure::new(
                Exit::DnsProxy,
                format!("cannot route the DNS upstream {upstream} out of the service lane {lane}: {e}"),
            )
        })?;
    }
    let upstreams: Vec<String> = config.dns.upstreams.iter().map(ToString::to_string).collect();
    let proxy = DnsProxy::start(proxy_config, policy.clone(), allowlist).map_err(|e| {
        Failure::new(
            Exit::DnsProxy,
            format!(
                "cannot start the DNS proxy: {e}; is another DNS server (dnsmasq, systemd-resolved) listening on                  port 53 of that address?"
            ),
        )
    })?;
    info!(
        listen = ?proxy.listening(),
        upstreams = %upstreams.join(","),
        route = %format!("upstreams routed out of {lane}, source-NATed to {} by the dataplane", config.external_address.ip),
        "DNS proxy running"
    );
    Ok(Some(proxy))
}

/// How the node stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Exit(Exit),
    /// Stopped cleanly to restart into another release (see [`crate::boot`]).
    Restart,
}

/// Runs the node until SIGTERM/SIGINT, or until it must restart into another release.
/// `checked` holds the compiled policy and the port locks, released when this returns.
/// `probation`: this release must be ready by its deadline (it then marks itself good), or
/// it stops to return to the previous one.
pub fn run(config: &NodeConfig, checked: Checked, probation: Option<crate::boot::Probation>) -> Stopped {
    let exit = |e: Exit| Stopped::Exit(e);
    let Checked { policy, locks } = checked;
    let notifier = crate::notify::Notifier::from_env();
    let startup_pinger = crate::notify::StartupPinger::spawn(notifier.as_ref(), STARTUP_WATCHDOG_LIMIT);
    // Before any thread starts, so every thread inherits the mask.
    let signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            error!(exit_code = Exit::PortOpen.code(), "cannot block signals: {e}");
            return exit(Exit::PortOpen);
        }
    };
    let control::Opened { mut control, policy, version } = match control::open(config, policy) {
        Ok(opened) => opened,
        Err(f) => {
            error!(exit_code = f.exit.code(), "{}", f.message);
            return exit(f.exit);
        }
    };
    let mut node = match start(config, PolicyHandle::new(policy)) {
        Ok(n) => n,
        Err(f) => {
            error!(exit_code = f.exit.code(), "{}", f.message);
            control.shutdown();
            return exit(f.exit);
        }
    };
    let dns_check = match &node.dns {
        Some(dns) => Check::ok(format!("listening on {:?}", dns.listening())),
        None => Check::ok("off: no --dns-upstream given"),
    };
    let listings = Listings::new(node.views.take().expect("the view client is taken once"), node.policy.clone());
    let state = Arc::new(NodeState::new(dns_check, version, listings));
    state.publish_stats(write_stats(config, &node.report(), &node.dataplane.counters(), None, true));
    if let Err(f) = control.start_api(config, node.policy.clone(), node.dataplane.counter_block(), state.clone()) {
        error!(exit_code = f.exit.code(), "{}", f.message);
        control.shutdown();
        let _ = stop(node);
        return exit(f.exit);
    }
    info!(
        dataplane = config.dataplane.as_str(),
        service_lane = %node.lane,
        service_lane_address = %config.internal_address,
        workers = 1,
        policy_generation = node.policy.current().generation,
        policy_version = version,
        stats_file = %stats::path(&config.data_dir).display(),
        "node running: forwarding between {} and {}",
        config.internal_port,
        config.external_port
    );
    drop(startup_pinger);
    crate::notify::send(
        notifier.as_ref(),
        &format!(
            "READY=1\nSTATUS=forwarding between {} and {}; API on {}",
            config.internal_port, config.external_port, config.http_bind
        ),
    );
    let mut liveness = notifier.as_ref().and_then(|n| {
        let interval = n.ping_interval()?;
        let limit = WORKER_STALL_LIMIT.min(n.watchdog()?);
        Some(crate::notify::Liveness::new(Instant::now(), node.io.heartbeat(), interval, limit))
    });
    let mut probation = probation;
    if let Some(p) = &probation {
        info!(release = %p.version, deadline_ms = p.deadline_ms, "this release is on probation: it must be ready before its deadline");
    }
    let mut restart = false;
    let mut next_stats = Instant::now();
    let mut next_summary = Instant::now() + SUMMARY_INTERVAL;
    let reason = loop {
        let now = Instant::now();
        if now >= next_stats {
            let doc =
                write_stats(config, &node.report(), &node.dataplane.counters(), node.dataplane.driver_stats(), true);
            state.publish_stats(doc);
            next_stats = now + STATS_INTERVAL;
        }
        if now >= next_summary {
            log_summary("counters", &node.dataplane.counters(), &node.io);
            next_summary = now + SUMMARY_INTERVAL;
        }
        if !node.dataplane.is_running() {
            break "the dataplane worker stopped on its own";
        }
        if let Some(liveness) = liveness.as_mut() {
            use crate::notify::Verdict;
            match liveness.check(now, node.io.heartbeat()) {
                Verdict::Ping => crate::notify::send(notifier.as_ref(), "WATCHDOG=1"),
                Verdict::Withhold(stalled) => error!(
                    stalled_ms = stalled.as_millis() as u64,
                    "the dataplane worker has not turned for {} s: the service manager's watchdog is no longer fed",
                    stalled.as_secs()
                ),
                Verdict::Wait | Verdict::StillWithheld => {}
            }
        }
        if let Some(p) = &probation {
            if control.ready() {
                match crate::boot::mark_good(&config.data_dir, p) {
                    Ok(()) => {
                        info!(release = %p.version, "release is ready: marked good, it is now the current release")
                    }
                    Err(e) => error!(release = %p.version, "cannot mark the release good: {e}"),
                }
                probation = None;
            } else if crate::boot::now_ms() > p.deadline_ms {
                error!(release = %p.version, "release not ready by its deadline: returning to the previous release");
                restart = true;
                break "release not ready by its deadline";
            }
        }
        if control.restart_requested() {
            restart = true;
            break "restarting into another release";
        }
        match signals.wait(next_stats.saturating_duration_since(Instant::now()).min(Duration::from_millis(250))) {
            Some(Request::Stop(name)) => {
                if probation.is_some() {
                    crate::boot::note_clean_stop(&config.data_dir);
                }
                break name;
            }
            Some(Request::Reload) => {
                control.reload(config.policy.as_deref(), node.policy.current().generation);
                // Show the new generation in the stats file soon (the follower publishes it).
                next_stats = Instant::now() + Duration::from_millis(50);
            }
            Some(Request::Report) => log_summary("counters", &node.dataplane.counters(), &node.io),
            None => {}
        }
    };
    info!(reason, "stopping: draining the API, closing the store, then the worker, the service lane and the ports");
    // A restart into another release keeps the PID: to the service manager it is a reload
    // that the next release ends with its READY=1.
    let stopping = if restart { "RELOADING=1" } else { "STOPPING=1" };
    crate::notify::send(notifier.as_ref(), &format!("{stopping}\nSTATUS={reason}"));
    // The dataplane and DNS keep working while the control plane stops.
    control.shutdown();
    let stopped = stop_with_stats(config, node);
    drop(locks);
    if restart && stopped == Exit::Success {
        Stopped::Restart
    } else {
        Stopped::Exit(stopped)
    }
}

/// Stops the DNS proxy and the dataplane (in that order) and writes the last stats file.
fn stop_with_stats(config: &NodeConfig, node: Node) -> Exit {
    let Node { dataplane, policy, dns, io, lane, started, .. } = node;
    let dns_counters = dns.as_ref().map(DnsProxy::counters);
    // First the proxy, so no answer waits on a worker that is stopping.
    if let Some(dns) = dns {
        dns.stop();
    }
    let last = Report { policy: &policy, io: &io, lane: &lane, started, dns: dns_counters.as_deref() };
    let exit = match dataplane.stop() {
        Ok(counters) => {
            write_stats(config, &last, &counters, None, false);
            log_summary("final counters", &counters, &io);
            Exit::Success
        }
        Err(panic) => {
            error!(exit_code = Exit::WorkerFailed.code(), "the dataplane worker failed: {panic}");
            Exit::WorkerFailed
        }
    };
    info!(service_lane = %lane, "stopped: service lane removed, ports released");
    exit
}

/// Stops a node that never ran (the control plane failed to start after it).
fn stop(node: Node) -> Result<(), String> {
    let Node { dataplane, dns, .. } = node;
    if let Some(dns) = dns {
        dns.stop();
    }
    dataplane.stop().map(drop)
}

/// What the stats file and logs read from the node, running or stopped.
struct Report<'a> {
    policy: &'a PolicyHandle,
    io: &'a IoStats,
    lane: &'a str,
    started: Instant,
    dns: Option<&'a DnsCounters>,
}

impl Node {
    fn report(&self) -> Report<'_> {
        let dns = self.dns.as_ref().map(|d| d.counters_ref());
        Report { policy: &self.policy, io: &self.io, lane: &self.lane, started: self.started, dns }
    }
}

/// Writes `stats.json` and returns the document (the API's node view shows the same one).
fn write_stats(
    config: &NodeConfig,
    node: &Report<'_>,
    counters: &Counters,
    driver: Option<Value>,
    running: bool,
) -> Value {
    let named = stats::named(counters);
    let io = node.io;
    let snapshot = stats::Snapshot {
        uptime_ms: node.started.elapsed().as_millis() as u64,
        running,
        workers: 1,
        policy_generation: node.policy.current().generation,
        service_lane: node.lane,
        port_io: match config.dataplane {
            Mode::Software => config.software_io.as_str(),
            Mode::Dpdk => "dpdk",
        },
        counters: &named,
        driver,
        dns: node.dns,
        ports: [
            ("internal", io.port(PortId::Internal)),
            ("external", io.port(PortId::External)),
            ("host", io.port(PortId::Host)),
        ],
    };
    let doc = stats::to_json(&snapshot);
    if let Err(e) = stats::write(&config.data_dir, &doc) {
        warn!(stats_file = %stats::path(&config.data_dir).display(), "cannot write the stats file: {e}");
    }
    doc
}

fn log_summary(what: &str, c: &Counters, io: &IoStats) {
    let (int, ext) = (io.port(PortId::Internal), io.port(PortId::External));
    info!(
        internal_rx_packets = c.get(Counter::InternalRxPackets),
        internal_tx_packets = c.get(Counter::InternalTxPackets),
        external_rx_packets = c.get(Counter::ExternalRxPackets),
        external_tx_packets = c.get(Counter::ExternalTxPackets),
        host_rx_packets = c.get(Counter::HostRxPackets),
        host_tx_packets = c.get(Counter::HostTxPackets),
        flows_active = c.get(Counter::FlowsActive),
        flows_opened = c.get(Counter::FlowsOpened),
        flows_evicted = c.get(Counter::FlowsEvicted),
        dropped_packets = c.get(Counter::DroppedPackets),
        policy_denied = c.dropped(DropReason::PolicyDenied),
        policy_revoked = c.dropped(DropReason::PolicyRevoked),
        policy_generation = c.get(Counter::PolicyGeneration),
        port_rx_truncated = int.rx_truncated + ext.rx_truncated,
        port_tx_dropped = int.tx_dropped + ext.tx_dropped,
        "{what}"
    );
}

//! The software packet runtime of `sluice run`: both data ports on AF_PACKET sockets, the
//! TAP service lane, one dataplane worker, and the main thread as a small control loop
//! (signals, policy reloads, the stats file, periodic counter logs).
//!
//! # The service lane's address
//! The TAP (`sl-lane<N>`) gets the node's internal address with its prefix (for example
//! 10.10.0.1/24) by `SIOCSIFADDR`/`SIOCSIFNETMASK` ioctls, so the node's own kernel stack
//! answers for that address: pings to it, and (later) the DNS proxy listening on it, with
//! replies routed back up the lane by the connected route. No default route is added: the
//! host's own outbound traffic (DNS upstream queries) is for the DNS proxy work to wire.
//! IPv6 is switched off on the TAP so the host does not chatter on it.
//!
//! # Control loop
//! Signals are blocked before any thread starts and taken with `sigtimedwait` (see
//! [`crate::signals`]): SIGHUP re-reads `--policy` and publishes it if it compiles (the old
//! policy stays otherwise, and every error is logged with its field path); SIGTERM/SIGINT
//! stop the worker, log the final counters, remove the TAP (closing it deletes it) and
//! release the port locks; SIGUSR1 logs the counters at once. `<data-dir>/stats.json` is
//! rewritten every second ([`crate::stats`]) and the counters are logged every
//! [`SUMMARY_INTERVAL`].

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_dataplane::allowlist::{allowlist_channel, AllowlistConfig, AllowlistWriter};
use sluice_dataplane::config::HostLaneConfig;
use sluice_dataplane::counters::{Counter, Counters, DropReason};
use sluice_dataplane::engine::{Engine, PortId};
use sluice_dataplane::policy_handle::PolicyHandle;
use sluice_io::{AfPacketPort, IoError, IoStats, Tap, Worker, WorkerConfig};
use sluice_policy::CompiledPolicy;
use tracing::{error, info, warn};

use crate::checks::Checked;
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};
use crate::net::IfaceAddr;
use crate::signals::{Request, Signals};
use crate::stats;

/// The TAP service lane's name prefix; the kernel appends the lowest free number.
pub const LANE_PREFIX: &str = "sl-lane";
/// Frames per port per worker turn.
pub const BURST: usize = 32;
/// How often the counters are logged at info level (SIGUSR1 logs them at once).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(30);
/// How often `<data-dir>/stats.json` is rewritten.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Learned (DNS) allowlist entries per worker, and updates queued per worker.
pub const ALLOWLIST: AllowlistConfig = AllowlistConfig { capacity: 65_536, channel_capacity: 1024 };

/// The policy in force when no `--policy` is given: nothing leaves.
const DENY_ALL: &str = r#"{"default_action":"deny","source_groups":[]}"#;

/// Maps a port-opening error to its exit code, keeping the port layer's message.
fn port_failure(role: &str, name: &str, e: IoError) -> Failure {
    let exit = match e {
        IoError::InterfaceMissing { .. } => Exit::InterfaceMissing,
        IoError::PermissionDenied { .. } => Exit::Permission,
        _ => Exit::PortOpen,
    };
    Failure::new(exit, format!("cannot open the {role} port `{name}`: {e}"))
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

/// Gives `ifname` the IPv4 address and prefix `addr` (ioctls on an AF_INET socket).
pub fn set_ipv4_address(ifname: &str, addr: IfaceAddr) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
    }
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for (request, value) in [(libc::SIOCSIFADDR, u32::from(addr.ip)), (libc::SIOCSIFNETMASK, addr.netmask())] {
        // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
            *dst = src as libc::c_char;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: value.to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: `ifru_addr` is a `sockaddr`, which has the size and alignment of a
        // `sockaddr_in`; the kernel reads it as one for AF_INET requests.
        unsafe { std::ptr::write((&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast(), sin) };
        // SAFETY: SIOCSIFADDR and SIOCSIFNETMASK read one `ifreq`, which `req` is for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The running node: what the control loop needs and what must be released at the end.
struct Node {
    worker: Worker,
    policy: PolicyHandle,
    /// Kept for the DNS proxy: the sending side of every worker's allowlist channel.
    _allowlist: AllowlistWriter,
    io: std::sync::Arc<IoStats>,
    lane: String,
    started: Instant,
}

/// Opens everything and starts the worker.
fn start(config: &NodeConfig, policy: CompiledPolicy) -> Result<Node, Failure> {
    if config.workers > 1 {
        return Err(Failure::new(
            Exit::Setting,
            format!(
                "--workers {}: the software dataplane runs a single worker in this build (sharding flows \
                 across workers is not implemented yet); use --workers 1",
                config.workers
            ),
        ));
    }
    let internal = AfPacketPort::open(&config.internal_port, BURST)
        .map_err(|e| port_failure("internal", &config.internal_port, e))?;
    let external = AfPacketPort::open(&config.external_port, BURST)
        .map_err(|e| port_failure("external", &config.external_port, e))?;
    let tap = Tap::create(LANE_PREFIX).map_err(|e| {
        let exit = if matches!(e, IoError::PermissionDenied { .. }) { Exit::Permission } else { Exit::PortOpen };
        Failure::new(exit, format!("cannot create the service lane (TAP {LANE_PREFIX}N): {e}"))
    })?;
    let lane = tap.name().to_string();
    set_ipv4_address(&lane, config.internal_address).map_err(|e| {
        Failure::new(
            Exit::PortOpen,
            format!("cannot give the service lane {lane} the internal address {}: {e}", config.internal_address),
        )
    })?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{lane}/disable_ipv6"), "1");

    let mut engine_config = config.engine_config(internal.mac(), external.mac())?;
    // The engine needs a MAC of its own towards the host: any locally administered unicast
    // address other than the TAP's.
    let mut engine_mac = tap.mac();
    engine_mac[0] = (engine_mac[0] | 0x02) & !0x01;
    engine_mac[5] ^= 0x55;
    engine_config.host_lane = Some(HostLaneConfig { engine_mac, host_mac: tap.mac() });
    engine_config.hash_seed = random_seed();

    let policy = PolicyHandle::new(policy);
    let (allowlist, mut readers) = allowlist_channel(1, &ALLOWLIST);
    let engine = Engine::new(engine_config, policy.reader(), readers.pop())
        .map_err(|e| Failure::new(Exit::Setting, e.to_string()))?;
    let worker = Worker::spawn(WorkerConfig {
        engine,
        internal: Box::new(internal),
        external: Box::new(external),
        host: Some(tap),
        burst: BURST,
        idle_timeout: Duration::from_millis(1),
        core: None,
    })
    .map_err(|e| Failure::new(Exit::PortOpen, format!("cannot start the dataplane worker: {e}")))?;
    let io = worker.io_stats();
    Ok(Node { worker, policy, _allowlist: allowlist, io, lane, started: Instant::now() })
}

/// Runs the software node until SIGTERM/SIGINT. `checked` holds the compiled policy and the
/// port locks, released when this returns.
pub fn run_software(config: &NodeConfig, checked: Checked) -> Exit {
    let Checked { policy, locks } = checked;
    // Before any thread starts, so every thread inherits the mask.
    let signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            error!(exit_code = Exit::PortOpen.code(), "cannot block signals: {e}");
            return Exit::PortOpen;
        }
    };
    let policy = match policy {
        Some(p) => p,
        None => {
            warn!("no --policy given: applying a deny-all policy; nothing leaves until a policy file is given");
            sluice_policy::compile_json(DENY_ALL).expect("the deny-all policy compiles")
        }
    };
    let node = match start(config, policy) {
        Ok(n) => n,
        Err(f) => {
            error!(exit_code = f.exit.code(), "{}", f.message);
            return f.exit;
        }
    };
    info!(
        service_lane = %node.lane,
        service_lane_address = %config.internal_address,
        workers = 1,
        policy_generation = node.policy.current().generation,
        stats_file = %stats::path(&config.data_dir).display(),
        "node running: forwarding between {} and {}",
        config.internal_port,
        config.external_port
    );
    let mut next_stats = Instant::now();
    let mut next_summary = Instant::now() + SUMMARY_INTERVAL;
    let reason = loop {
        let now = Instant::now();
        if now >= next_stats {
            write_stats(config, &node.report(), &node.worker.counters().snapshot(), true);
            next_stats = now + STATS_INTERVAL;
        }
        if now >= next_summary {
            log_summary("counters", &node.worker.counters().snapshot(), &node.io);
            next_summary = now + SUMMARY_INTERVAL;
        }
        match signals.wait(next_stats.saturating_duration_since(Instant::now())) {
            Some(Request::Stop(name)) => break name,
            Some(Request::Reload) => {
                reload(config.policy.as_deref(), &node.policy);
                // Show the new generation in the stats file at once.
                next_stats = Instant::now();
            }
            Some(Request::Report) => log_summary("counters", &node.worker.counters().snapshot(), &node.io),
            None => {}
        }
    };
    info!(signal = reason, "stopping: draining the worker, removing the service lane, releasing the ports");
    let Node { worker, policy, _allowlist, io, lane, started } = node;
    // Joining the worker closes the ports and the TAP, which deletes the interface.
    let engine = worker.stop();
    let last = Report { policy: &policy, io: &io, lane: &lane, started };
    write_stats(config, &last, engine.counters(), false);
    log_summary("final counters", engine.counters(), &io);
    drop(locks);
    info!(service_lane = %lane, "stopped: service lane removed, ports released");
    Exit::Success
}

/// What the stats file and logs read from the node, running or stopped.
struct Report<'a> {
    policy: &'a PolicyHandle,
    io: &'a IoStats,
    lane: &'a str,
    started: Instant,
}

impl Node {
    fn report(&self) -> Report<'_> {
        Report { policy: &self.policy, io: &self.io, lane: &self.lane, started: self.started }
    }
}

fn write_stats(config: &NodeConfig, node: &Report<'_>, counters: &Counters, running: bool) {
    let named = stats::named(counters);
    let io = node.io;
    let snapshot = stats::Snapshot {
        uptime_ms: node.started.elapsed().as_millis() as u64,
        running,
        workers: 1,
        policy_generation: node.policy.current().generation,
        service_lane: node.lane,
        counters: &named,
        ports: [
            ("internal", io.port(PortId::Internal)),
            ("external", io.port(PortId::External)),
            ("host", io.port(PortId::Host)),
        ],
    };
    if let Err(e) = stats::write(&config.data_dir, &stats::to_json(&snapshot)) {
        warn!(stats_file = %stats::path(&config.data_dir).display(), "cannot write the stats file: {e}");
    }
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

/// SIGHUP: re-reads and recompiles the policy file; publishes it only if it is valid.
fn reload(path: Option<&Path>, handle: &PolicyHandle) {
    let Some(path) = path else {
        warn!("SIGHUP: no --policy file is configured, nothing to reload; the deny-all policy stays");
        return;
    };
    let current = handle.current().generation;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            error!(policy = %path.display(), policy_generation = current, "policy reload refused: cannot read the file: {e}; keeping the current policy");
            return;
        }
    };
    match sluice_policy::compile_json(&text) {
        Ok(p) => {
            let (groups, rules) = (p.group_count(), p.rule_count());
            let generation = handle.publish(p);
            info!(policy = %path.display(), policy_generation = generation, groups, rules, "policy reloaded and published");
        }
        Err(errors) => {
            for e in &errors {
                error!(policy = %path.display(), field = %e.path, "policy error: {}", e.message);
            }
            error!(
                policy = %path.display(),
                policy_generation = current,
                errors = errors.0.len(),
                "policy reload refused: the file has {} error(s) (each logged above with its field path); \
                 keeping the current policy",
                errors.0.len()
            );
        }
    }
}

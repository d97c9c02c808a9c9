//! The veth benchmark (`cargo xtask bench veth`): the same trafgen load through (a) Sluice in
//! software mode, (b) Sluice in DPDK `net_af_packet` mode and (c) the node namespace's own
//! kernel forwarding with nftables conntrack, in one lab, measured at the receiver.
//!
//! Method, per forwarder:
//! - CPUs: the forwarder's work runs on one CPU (`forwarder`): Sluice's threads (software mode
//!   pinned with `taskset`, DPDK's dataplane lcore), and the threaded NAPI poller of the node's
//!   internal veth, which is where the kernel forwards in (c) and where frames reach Sluice's
//!   packet sockets in (a) and (b). The receiver's veth has no poller: what the forwarder
//!   transmits is received in a softirq on its own CPU (no cross-CPU wake-up, whose cost
//!   differs between forwarders). trafgen has the other CPU to itself.
//! - Flows: `flows` UDP flows are opened with a request and a reply first (warm-up), which
//!   also proves SNAT; the measured traffic is then established forwarding only, which is
//!   checked (no flow opened during the measurement).
//! - Delivered: frames counted by an ingress filter on the upstream veth whose source is the
//!   node's external address; any frame of the load arriving untranslated fails the run.
//! - CPU: run time of the forwarder's threads (schedstat), so pps per CPU-second is known
//!   even when the machine is shared.

pub mod load;
pub mod report;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{err, Lab, Launch, Node, Result, CLIENT_ADDR};
use load::Trafgen;
use report::{Load, Sample, Snapshot};
use wire::{KernelForwarder, Sink, WmemDefault};

/// The sink: an upstream address and a port nothing listens on during the measurement.
pub const SINK_ADDR: &str = crate::WEB;
pub const SINK_PORT: u16 = 9;
/// Source port of the first flow; the flows use consecutive ports.
pub const FIRST_PORT: u16 = 20000;
/// The benchmark's lab prefix (namespaces `sv-client`, `sv-node`, `sv-upstream`).
pub const PREFIX: &str = "sv-";
const MGMT_OCTET: u8 = 78;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sluice in software mode on AF_PACKET ports.
    Software,
    /// Sluice in software mode on AF_XDP ports (`--software-io af-xdp`).
    SoftwareXdp,
    Dpdk,
    Kernel,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Software, Mode::SoftwareXdp, Mode::Dpdk, Mode::Kernel];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Software => "software",
            Mode::SoftwareXdp => "software_xdp",
            Mode::Dpdk => "dpdk",
            Mode::Kernel => "kernel",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub sluice: PathBuf,
    pub modes: Vec<Mode>,
    pub flows: u16,
    /// Seconds of load before the first window, the windows, and their length.
    pub ramp: Duration,
    pub windows: usize,
    pub window: Duration,
}

impl Options {
    pub fn new(sluice: PathBuf, quick: bool) -> Options {
        let (ramp, windows, window) = if quick { (0.5, 1, 2.0) } else { (1.0, 5, 4.0) };
        Options {
            sluice,
            modes: Mode::ALL.to_vec(),
            flows: 1024,
            ramp: Duration::from_secs_f64(ramp),
            windows,
            window: Duration::from_secs_f64(window),
        }
    }
}

/// Which CPU runs what.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    pub load: usize,
    pub forwarder: usize,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Turn SIGINT and SIGTERM into an orderly stop: the run fails at its next pause and every
/// guard (lab, node, nft tables, socket memory) undoes its part. Call before any thread or
/// child starts (the blocked mask is inherited by threads; std resets it in children).
pub fn stop_on_signals() {
    // SAFETY: sigset operations on a local set, and pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set = set;
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set, &mut sig);
            eprintln!("sluice-bench-veth: signal {sig}: stopping and cleaning up");
            INTERRUPTED.store(true, Ordering::Relaxed);
        });
    }
}

/// Sleep `d`, failing early if the run was interrupted.
fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(err("interrupted"));
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Run every mode of `opts` in one lab; returns each mode's median window.
pub fn run(opts: &Options) -> Result<Vec<(Mode, Sample)>> {
    let allowed = wire::allowed_cpus()?;
    // trafgen pins its one process to CPU 0 whatever its mask says, so the load is there.
    if !(allowed.contains(&0) && allowed.contains(&1)) {
        return Err(err(format!("the veth benchmark needs CPUs 0 and 1 (load and forwarder); allowed: {allowed:?}")));
    }
    let cpus = Cpus { load: 0, forwarder: 1 };
    let lab = Lab::named(PREFIX, MGMT_OCTET)?;
    let policy = lab.dir.join("bench-policy.json");
    std::fs::write(&policy, wire::policy_json()).map_err(|e| err(format!("write {}: {e}", policy.display())))?;
    let _wmem = WmemDefault::at_least(4 << 20)?;
    let mut results = Vec::new();
    for &mode in &opts.modes {
        pause(Duration::ZERO)?;
        println!("# {}: starting", mode.name());
        let sample =
            measure_mode(&lab, opts, mode, cpus, &policy).map_err(|e| err(format!("{} mode: {e}", mode.name())))?;
        println!(
            "# {}: delivered {:.0} pps of {:.0} offered ({:.0} dropped at the node's input queue), \
             forwarder CPU {:.2}, {:.0} pps per CPU-second; trafgen CPU {:.2}",
            mode.name(),
            sample.delivered_pps,
            sample.offered_pps,
            sample.input_dropped_pps,
            sample.cpus,
            sample.pps_per_cpu(),
            sample.load_cpus
        );
        if sample.cpus < 0.9 {
            println!(
                "# {}: warning: the forwarder got {:.2} of CPU {} under overload: other work shares it, so the \
                 plain pps figures measure its share; compare the per-CPU figures",
                mode.name(),
                sample.cpus,
                cpus.forwarder
            );
        }
        if sample.delivered_pps > 0.9 * sample.offered_pps {
            println!(
                "# {}: warning: the forwarder delivered over 90 % of the load: the generator, not the \
                 forwarder, may have set the rate (is CPU {} busy?)",
                mode.name(),
                cpus.load
            );
        }
        results.push((mode, sample));
    }
    Ok(results)
}

/// The forwarder under test, stopped (and its setup undone) on drop.
enum Forwarder {
    Sluice(Node),
    Kernel(KernelForwarder),
}

impl Forwarder {
    fn start(lab: &Lab, opts: &Options, mode: Mode, cpus: Cpus, policy: &std::path::Path) -> Result<Forwarder> {
        let data_dir = lab.dir.join(format!("node-{}", mode.name()));
        let launch = match mode {
            Mode::Kernel => return Ok(Forwarder::Kernel(KernelForwarder::start(lab)?)),
            Mode::Software => Launch {
                launcher: vec!["taskset".into(), "-c".into(), cpus.forwarder.to_string()],
                ..Launch::software(lab)
            },
            Mode::SoftwareXdp => Launch {
                launcher: vec!["taskset".into(), "-c".into(), cpus.forwarder.to_string()],
                extra: vec!["--software-io".into(), "af-xdp".into()],
                ..Launch::software(lab)
            },
            Mode::Dpdk => Launch::dpdk(lab, &format!("0@({}),1@({})", cpus.load, cpus.forwarder)),
        };
        let node = Node::start_with(lab, &opts.sluice, policy, &data_dir, &launch).map_err(|e| {
            if mode == Mode::Dpdk {
                err(format!("{e}\n(DPDK mode needs a `sluice` built with `--features dpdk`; `cargo xtask bench veth` builds one)"))
            } else {
                e
            }
        })?;
        Ok(Forwarder::Sluice(node))
    }

    /// Flows the forwarder has opened so far.
    fn flows_opened(&self) -> Result<u64> {
        match self {
            Forwarder::Sluice(node) => node
                .fresh_counters()?
                .into_iter()
                .find(|(name, _)| name == "flows_opened")
                .map(|(_, v)| v)
                .ok_or_else(|| err("no flows_opened counter in the node's stats.json")),
            Forwarder::Kernel(k) => k.new_flows(),
        }
    }

    /// Sluice drops frames larger than its receive buffers (GRO superframes) as truncated;
    /// the run turns GRO back on, so it checks that none arrived (the load is UDP, which
    /// the kernel does not merge without UDP GRO forwarding).
    fn check_nothing_merged(&self) -> Result<()> {
        let Forwarder::Sluice(node) = self else { return Ok(()) };
        let stats = node.stats()?;
        let internal = &stats["ports"]["internal"];
        let truncated = internal["rx_truncated"].as_u64().unwrap_or(0);
        if truncated > 0 {
            return Err(err(format!("Sluice received {truncated} merged (GRO) frames on its internal port")));
        }
        // Where the frames that entered the node but were not delivered went, when the
        // port reports it (software ports count what the kernel dropped at a full ring).
        if let Some(dropped) = internal["rx_dropped"].as_u64().filter(|&d| d > 0) {
            println!("# the kernel dropped {dropped} frames at Sluice's full receive ring (whole run)");
        }
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Forwarder::Sluice(node) => node.pid(),
            Forwarder::Kernel(_) => None,
        }
    }
}

fn measure_mode(lab: &Lab, opts: &Options, mode: Mode, cpus: Cpus, policy: &std::path::Path) -> Result<Sample> {
    let forwarder = Forwarder::start(lab, opts, mode, cpus, policy)?;
    // Started after the forwarder: Sluice turns GRO (and so veth NAPI) off on its ports.
    let napi = wire::threaded_napi(&lab.node, &lab.node_in, cpus.forwarder)?;
    // The receiver's veth without NAPI or RPS: a frame the forwarder transmits is received
    // in a softirq on the forwarder's own CPU, batched, with no cross-CPU wake-up.
    wire::receive_locally(&lab.upstream, &lab.upstream_if())?;
    for (ns, dev) in [(&lab.client, lab.client_if()), (&lab.upstream, lab.upstream_if())] {
        let _ = crate::sh(&["ip", "-n", ns, "neigh", "flush", "dev", &dev]);
    }
    load::warm_up(lab, opts.flows)?;
    let opened_before = forwarder.flows_opened()?;
    let load = Load {
        src_mac: wire::mac_of(&lab.client, &lab.client_if())?,
        dst_mac: wire::neighbor_mac(&lab.client, &lab.client_if(), crate::NODE_INTERNAL.split('/').next().unwrap())?,
        src_ip: CLIENT_ADDR.into(),
        dst_ip: SINK_ADDR.into(),
        first_port: FIRST_PORT,
        flows: opts.flows,
        dst_port: SINK_PORT,
    };
    let receiver_dropped_before = wire::link_stats(&lab.node, &lab.node_out)?.tx_dropped;
    let sink = Sink::install(lab)?;
    let mut trafgen = Trafgen::start(lab, &load, cpus.load)?;
    let snapshot = |start: Instant, trafgen: &Trafgen| -> Result<Snapshot> {
        let (delivered, _) = sink.counts()?;
        let client = wire::link_stats(&lab.client, &lab.client_if())?;
        let threads = forwarder.pid().into_iter().chain(napi.iter().copied());
        Ok(Snapshot {
            secs: start.elapsed().as_secs_f64(),
            delivered,
            offered: client.tx_packets + client.tx_dropped,
            input_dropped: client.tx_dropped,
            cpu_ns: threads.map(wire::cpu_ns).sum(),
            load_cpu_ns: trafgen.cpu_ns(),
        })
    };
    println!("# {}: flows open and SNAT checked; load running", mode.name());
    let start = Instant::now();
    pause(opts.ramp)?;
    trafgen.check_running()?;
    let mut samples = Vec::new();
    let mut before = snapshot(start, &trafgen)?;
    for _ in 0..opts.windows {
        pause(opts.window)?;
        let after = snapshot(start, &trafgen)?;
        trafgen.check_running()?;
        samples.push(Sample::between(&before, &after));
        before = after;
    }
    trafgen.stop();
    let (translated, untranslated) = sink.counts()?;
    if untranslated > 0 {
        return Err(err(format!(
            "{untranslated} frames of the load reached the upstream without SNAT ({translated} with it)"
        )));
    }
    if translated == 0 {
        return Err(err(format!(
            "nothing of the load reached the upstream; trafgen said:\n{}",
            std::fs::read_to_string(trafgen.log()).unwrap_or_default()
        )));
    }
    let opened_after = forwarder.flows_opened()?;
    forwarder.check_nothing_merged()?;
    if opened_after != opened_before {
        return Err(err(format!(
            "the forwarder opened {} flows during the measurement: the load was not all established traffic",
            opened_after - opened_before
        )));
    }
    // Frames the receiver's queue refused are missing from `delivered`; say so when it matters.
    let dropped = wire::link_stats(&lab.node, &lab.node_out)?.tx_dropped - receiver_dropped_before;
    if dropped * 100 > translated {
        println!(
            "# {}: warning: the receiver's queue refused {dropped} frames (delivered {translated}): the figure is low",
            mode.name()
        );
    }
    report::median(&samples).ok_or_else(|| err("no measurement window"))
}

//! `sluice-bench dpdk`: the engine over real DPDK ports, against `dpdk-testpmd` io
//! forwarding on the same kind of virtual ports and the same core.
//!
//! - **testpmd_io_mpps**: `dpdk-testpmd` in io mode between two `net_null` ports (rx hands out
//!   freshly allocated 64-byte mbufs without writing them, tx frees them): the cost of moving
//!   mbufs through DPDK with no work on the packets, read from its `--stats-period` output.
//! - **dpdk_engine_mpps**: the full engine (realistic policy, 10 000 established flows, SNAT)
//!   in a [`DpdkNode`] between two `net_ring` ports. A `net_ring` port is a loopback (what is
//!   transmitted on it is received on it), so the benchmark plays the wire: it writes the next
//!   prepared inside->outside ACK segments into mbufs and transmits them on the internal port,
//!   the node receives them there, runs them through the engine and transmits them on the
//!   external port, and the benchmark receives them from the external port and reuses the same
//!   mbufs for the next frames (as a NIC refills its receive ring; no allocation per packet).
//!   Before and after measuring, every frame that comes out is checked: source-NATed to the
//!   external address, sent to the gateway's MAC, with valid checksums, and no flow opened.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bench::*;
use sluice_dataplane::counters::Counter;
use sluice_dataplane::engine::PortId;
use sluice_dataplane::packet::Packet;
use sluice_dataplane::testing::{inspect, verify_checksums};
use sluice_io::dpdk::{Burst, DpdkNode, DpdkPort, Eal, Mempool, MempoolConfig, PortConfig, MAX_BURST};

/// What the suite measured, for `main` to print and write.
pub struct Results {
    pub engine_mpps: Option<f64>,
    pub testpmd_mpps: Option<f64>,
}

/// CPUs this process may run on (from `Cpus_allowed_list`), ascending.
fn allowed_cpus() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status")
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().expect("cpu")..=b.parse::<u32>().expect("cpu")),
            None => cpus.push(part.parse().expect("cpu")),
        }
    }
    cpus
}

/// The forwarding CPU (the last one allowed) and a different one for testpmd's main lcore,
/// which only prints statistics (the same one if there is only one CPU).
fn cpus() -> (u32, u32) {
    let cpus = allowed_cpus();
    let fwd = *cpus.last().expect("at least one CPU");
    let main = cpus.iter().copied().find(|&c| c != fwd).unwrap_or(fwd);
    (fwd, main)
}

const EAL_COMMON: &[&str] =
    &["--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry", "--log-level=lib.eal:warning"];

/// Run the halves asked for: testpmd first, then the engine (`runs` runs of `bursts` bursts).
pub fn run(quick: bool, bursts: usize, runs: usize, with_engine: bool, with_testpmd: bool) -> Results {
    let (fwd_cpu, main_cpu) = cpus();
    let testpmd_secs = if quick { 6 } else { 15 };
    let testpmd_mpps = with_testpmd.then(|| testpmd(fwd_cpu, main_cpu, testpmd_secs));
    let engine_mpps = with_engine.then(|| engine(fwd_cpu, bursts, runs));
    Results { engine_mpps, testpmd_mpps }
}

/// Run `dpdk-testpmd` io forwarding between two net_null ports for `secs` seconds, stop it
/// with SIGINT, and return the median forwarding rate (both directions) of its per-second
/// samples (the first block, printed at start, has no previous one and shows 0).
fn testpmd(fwd_cpu: u32, main_cpu: u32, secs: u64) -> f64 {
    let mut cmd = Command::new("dpdk-testpmd");
    cmd.arg(format!("--lcores=0@{main_cpu},1@{fwd_cpu}"))
        .args(EAL_COMMON)
        .args(["--vdev=net_null0,size=64", "--vdev=net_null1,size=64", "--"])
        .args(["--forward-mode=io", "--auto-start", "--stats-period=1", "--nb-cores=1"])
        .args(["--rxq=1", "--txq=1", "--burst=32", "--total-num-mbufs=8192"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot start dpdk-testpmd ({e}); it is in the Debian package dpdk-dev (cargo xtask bench installs it)")
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(secs));
    let pid = child.id().to_string();
    let signalled = Command::new("kill").args(["-INT", &pid]).status().is_ok_and(|s| s.success());
    assert!(signalled, "could not send SIGINT to dpdk-testpmd (pid {pid})");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dpdk-testpmd") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("dpdk-testpmd did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = reader.join().expect("testpmd output reader");
    assert!(status.success(), "dpdk-testpmd failed ({status}):\n{}", lines.join("\n"));
    parse_testpmd(&lines).unwrap_or_else(|e| panic!("{e}; dpdk-testpmd printed:\n{}", lines.join("\n")))
}

/// The median of testpmd's per-period forwarding rates in Mpps (the sum of the `Tx-pps` of
/// both ports per statistics block), without the first block; also checks that the final
/// accumulated statistics show traffic and no drops.
fn parse_testpmd(lines: &[String]) -> Result<f64, String> {
    let value = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let tx_pps: Vec<u64> = lines.iter().filter_map(|l| value(l, "Tx-pps:")).collect();
    if !tx_pps.len().is_multiple_of(2) {
        return Err(format!("expected Tx-pps for two ports per block, got {} values", tx_pps.len()));
    }
    let samples: Vec<f64> = tx_pps.chunks(2).skip(1).map(|c| (c[0] + c[1]) as f64 / 1e6).collect();
    if samples.len() < 2 {
        return Err(format!("too few statistics periods ({} after warm-up)", samples.len()));
    }
    let acc = lines
        .iter()
        .position(|l| l.contains("Accumulated forward statistics"))
        .ok_or("no accumulated forward statistics")?;
    let rx = lines[acc..].iter().find_map(|l| value(l, "RX-packets:")).ok_or("no accumulated RX-packets")?;
    let dropped = lines[acc..].iter().find_map(|l| value(l, "RX-dropped:")).ok_or("no accumulated RX-dropped")?;
    let tx = lines[acc..].iter().find_map(|l| value(l, "TX-packets:")).ok_or("no accumulated TX-packets")?;
    if rx == 0 || tx != rx || dropped != 0 {
        return Err(format!("testpmd did not forward cleanly: rx {rx}, tx {tx}, dropped {dropped}"));
    }
    Ok(crate::median(samples))
}

/// The node between two net_ring ports with `bursts` bursts in flight one at a time.
struct Rig {
    node: DpdkNode,
    pool: FramePool,
    /// Index in `pool` of the next frame to put on the wire.
    cursor: usize,
    /// The burst travelling round: what the node sent on the external port, rewritten with
    /// the next frames and put back on the internal port.
    wire: Burst,
    start: Instant,
    base_ns: u64,
}

fn no_host(frame: &[u8]) {
    panic!("no frame should go to the host lane, got {} bytes", frame.len());
}

impl Rig {
    /// Write the next frames into the mbufs of `wire` and transmit them on the internal port.
    #[inline]
    fn inject(&mut self) {
        for m in self.wire.as_mut_slice() {
            let frame = self.pool.frame(self.cursor);
            self.cursor += 1;
            if self.cursor == self.pool.len() {
                self.cursor = 0;
            }
            let data = m.data_mut();
            assert_eq!(data.len(), frame.len(), "all frames have one length");
            data.copy_from_slice(frame);
        }
        let n = self.wire.len();
        let sent = self.node.port_mut(PortId::Internal).expect("port").tx_burst(&mut self.wire);
        assert_eq!(sent, n, "net_ring0 took the burst");
    }

    /// One round: the node polls the internal port; the wire collects what it sent out.
    /// Returns how many frames came out of the external port.
    #[inline]
    fn round(&mut self) -> usize {
        self.inject();
        let now = self.base_ns + self.start.elapsed().as_nanos() as u64;
        let n = self.node.poll_port(PortId::Internal, now, &mut no_host);
        assert_eq!(n, MAX_BURST, "the node received the burst");
        self.node.port_mut(PortId::External).expect("port").rx_burst(&mut self.wire)
    }

    /// A full pass over the pool with every frame that comes out checked.
    fn verify_pass(&mut self) {
        let opened = self.node.engine().counters().get(Counter::FlowsOpened);
        let rounds = self.pool.len().div_ceil(MAX_BURST);
        for _ in 0..rounds {
            assert_eq!(self.round(), MAX_BURST, "every established packet is forwarded");
            for m in self.wire.as_slice() {
                verify_checksums(m.data()).unwrap_or_else(|e| panic!("forwarded frame checksums: {e}"));
                let out = inspect(m.data()).expect("forwarded frame parses");
                assert_eq!(out.ip().src, OUTSIDE_IP, "forwarded frame is source-NATed");
                assert_eq!((out.src_mac, out.dst_mac), (NODE_OUTSIDE_MAC, GATEWAY_MAC), "sent to the gateway");
                assert_eq!(out.tcp().dport, 443);
            }
        }
        assert_eq!(self.node.engine().counters().get(Counter::FlowsOpened), opened, "no new flows");
    }
}

/// The engine's forwarding rate over DPDK ports, median of `runs` runs of `bursts` bursts.
fn engine(cpu: u32, bursts: usize, runs: usize) -> f64 {
    let mut args: Vec<String> = vec![format!("--lcores=0@{cpu}")];
    args.extend(EAL_COMMON.iter().map(|s| s.to_string()));
    args.extend(["--vdev=net_ring0".to_string(), "--vdev=net_ring1".to_string()]);
    let eal = Eal::init(&args).unwrap_or_else(|e| panic!("DPDK EAL failed to start with {args:?}: {e}"));
    let mbufs = Arc::new(
        Mempool::new(&eal, "sluice_bench", &MempoolConfig { mbufs: 4095, ..Default::default() }).expect("mempool"),
    );
    let internal = DpdkPort::open(&eal, "net_ring0", Arc::clone(&mbufs), &PortConfig::default()).expect("net_ring0");
    let external = DpdkPort::open(&eal, "net_ring1", Arc::clone(&mbufs), &PortConfig::default()).expect("net_ring1");

    // 10 000 flows opened through the engine (SYN / SYN-ACK / ACK), verified by `established`.
    let (bench, pool) = established(10_000);
    let base_ns = bench.now;
    let engine = bench.engine;
    let _policy = bench.policy;
    let node = DpdkNode::new(engine, internal, external, Arc::clone(&mbufs));
    let mut wire = Burst::new();
    for _ in 0..MAX_BURST {
        wire.push(mbufs.alloc_frame(pool.frame(0)).expect("mbuf")).expect("room");
    }
    let mut rig = Rig { node, pool, cursor: 0, wire, start: Instant::now(), base_ns };

    rig.verify_pass();
    let mut results = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut out = 0usize;
        for _ in 0..bursts {
            out += rig.round();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out, bursts * MAX_BURST, "every measured packet came out of the external port");
        results.push(out as f64 / secs / 1e6);
    }
    rig.verify_pass();
    let stats = rig.node.stats();
    assert_eq!(stats.freed, 0, "nothing dropped: {stats:?}");
    assert_eq!(stats.rx, stats.tx, "everything received was transmitted: {stats:?}");
    crate::median(results)
}

#[cfg(test)]
mod tests {
    use super::parse_testpmd;

    #[test]
    fn reads_testpmd_statistics() {
        let mut text = String::new();
        for pps in [100, 5_000_000, 20_000_000, 21_000_000, 22_000_000] {
            for _port in 0..2 {
                text.push_str(&format!("  Rx-pps:   {pps}   Rx-bps: 0\n  Tx-pps:   {pps}   Tx-bps: 0\n"));
            }
        }
        text.push_str("  +++ Accumulated forward statistics for all ports+++\n");
        text.push_str("  RX-packets: 900  RX-dropped: 0  RX-total: 900\n  TX-packets: 900  TX-dropped: 0\n");
        let lines: Vec<String> = text.lines().map(String::from).collect();
        assert_eq!(parse_testpmd(&lines).unwrap(), 42.0);
        let short: Vec<String> = lines[12..].to_vec();
        assert!(parse_testpmd(&short).is_err());
    }
}

//! The DPDK dataplane worker: a [`DpdkNode`] busy-polled on a worker lcore, with the TAP
//! service lane.
//!
//! Each turn receives a burst from each data port and runs it through the engine (which
//! transmits or frees every frame); at most every `host_poll_interval` it also reads a burst
//! from the service lane (a system call, so not on every turn: the lane carries the node's
//! own low-rate traffic, and the bound is the latency it adds). Housekeeping runs when a turn
//! finds nothing (at most every [`IDLE_HOUSEKEEPING_NS`]) and at least every
//! [`BUSY_HOUSEKEEPING_NS`] under constant load, so timers, policy swaps and allowlist updates
//! never wait for the traffic to pause. The worker never sleeps: that is DPDK's model, and
//! why the operator gives it a core of its own with the EAL's `-l`/`--lcores`.
//!
//! The control plane stops it through a flag and reads it through lock-free counter blocks
//! and the ports' driver counters ([`PortStatsReader`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_dataplane::counters::CounterBlock;
use sluice_dataplane::engine::PortId;

use super::eal::{DpdkError, Eal};
use super::lcore::{launch, LcoreJob};
use super::node::DpdkNode;
use super::port::PortStatsReader;
use super::MAX_BURST;
use crate::frame::IoFrame;
use crate::sys::monotonic_ns;
use crate::tap::Tap;
use crate::worker::{panic_message, IoStats, Port, PortStats};

/// Housekeeping period of an idle worker.
pub const IDLE_HOUSEKEEPING_NS: u64 = 100_000;
/// Housekeeping period of a worker that never finds its ports empty.
pub const BUSY_HOUSEKEEPING_NS: u64 = 1_000_000;
/// How often a busy worker publishes its port statistics.
const IO_PUBLISH_NS: u64 = 1_000_000;
/// Consecutive empty polls after which the worker offers its CPU to other runnable threads
/// (`sched_yield`), and again after each further run of this many. On a dedicated core
/// nothing else is runnable and the call returns at once (a syscall every few tens of
/// microseconds of idleness, never while traffic flows). On a shared CPU, such as a kernel
/// thread feeding a `net_af_packet` port from the same CPU, busy-polling an empty port
/// would otherwise take half the CPU from the thread that fills it.
const YIELD_AFTER_EMPTY_POLLS: u32 = 256;

pub struct DpdkWorkerConfig {
    pub node: DpdkNode,
    /// The service lane; frames for `PortId::Host` are dropped and counted without it.
    pub host: Option<Tap>,
    /// The longest time between two reads of the service lane.
    pub host_poll_interval: Duration,
}

/// A running DPDK worker. [`stop`](DpdkWorker::stop) ends it and returns its node.
pub struct DpdkWorker {
    stop: Arc<AtomicBool>,
    /// Cleared when the loop ends, also by a panic.
    running: Arc<AtomicBool>,
    job: Option<LcoreJob<(DpdkNode, Option<Tap>)>>,
    counters: Arc<CounterBlock>,
    io: Arc<IoStats>,
    ports: [PortStatsReader; 2],
}

impl DpdkWorker {
    /// Starts the worker on the EAL worker lcore `lcore` (idle, not the main lcore).
    pub fn launch(eal: &Eal, lcore: u32, cfg: DpdkWorkerConfig) -> Result<DpdkWorker, DpdkError> {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(true));
        let io = Arc::new(IoStats::default());
        let counters = cfg.node.engine().counter_block();
        let reader = |p| cfg.node.port(p).expect("data port").stats_reader();
        let ports = [reader(PortId::Internal), reader(PortId::External)];
        let job = launch(eal, lcore, {
            let stop = Arc::clone(&stop);
            let io = Arc::clone(&io);
            let running = Arc::clone(&running);
            move || {
                let _running = ClearOnDrop(running);
                let mut l = Loop::new(cfg.node, cfg.host, cfg.host_poll_interval);
                l.run(&stop, &io);
                (l.node, l.host)
            }
        })?;
        Ok(DpdkWorker { stop, running, job: Some(job), counters, io, ports })
    }

    /// Whether the loop still runs (false once it has panicked).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The engine's published counters.
    pub fn counters(&self) -> Arc<CounterBlock> {
        Arc::clone(&self.counters)
    }

    /// What the worker counts per port beyond the engine: frames received, transmit-queue
    /// overflows (`tx_dropped`), frames for a missing service lane, and the lane's own
    /// statistics.
    pub fn io_stats(&self) -> Arc<IoStats> {
        Arc::clone(&self.io)
    }

    /// Readers of the internal and external ports' driver counters.
    pub fn port_stats(&self) -> &[PortStatsReader; 2] {
        &self.ports
    }

    /// Ends the loop and waits for it; returns the node (ports still open, counters final)
    /// and the service lane, or the worker's panic message.
    pub fn stop(mut self) -> Result<(DpdkNode, Option<Tap>), String> {
        self.stop.store(true, Ordering::Relaxed);
        let job = self.job.take().expect("a running worker has its job");
        job.wait().map_err(|panic| panic_message(panic.as_ref()))
    }
}

impl Drop for DpdkWorker {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            self.stop.store(true, Ordering::Relaxed);
            let _ = job.wait();
        }
    }
}

/// Clears the flag when dropped, on return or unwind.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Loop {
    node: DpdkNode,
    host: Option<Tap>,
    /// Receive buffers for the service lane, preallocated.
    frames: Vec<IoFrame>,
    host_interval_ns: u64,
    rx: [u64; 2],
    no_port: u64,
    host_rx_errors: u64,
}

impl Loop {
    fn new(node: DpdkNode, host: Option<Tap>, host_interval: Duration) -> Loop {
        let cap = host.as_ref().map_or(2048, |t| t.frame_capacity());
        Loop {
            node,
            host,
            frames: (0..MAX_BURST).map(|_| IoFrame::with_capacity(cap)).collect(),
            host_interval_ns: u64::try_from(host_interval.as_nanos()).unwrap_or(u64::MAX),
            rx: [0; 2],
            no_port: 0,
            host_rx_errors: 0,
        }
    }

    fn run(&mut self, stop: &AtomicBool, io: &IoStats) {
        let (mut last_host, mut last_housekeeping, mut last_publish) = (0u64, 0u64, 0u64);
        let mut empty_polls = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let now = monotonic_ns();
            let Loop { node, host, no_port, .. } = self;
            let mut sink = |frame: &[u8]| to_host(host, no_port, frame);
            let internal = node.poll_port(PortId::Internal, now, &mut sink);
            let external = node.poll_port(PortId::External, now, &mut sink);
            self.rx[0] += internal as u64;
            self.rx[1] += external as u64;
            let mut total = internal + external;
            if now.wrapping_sub(last_host) >= self.host_interval_ns {
                last_host = now;
                total += self.service_lane(now);
            }
            let since = now.wrapping_sub(last_housekeeping);
            if (total == 0 && since >= IDLE_HOUSEKEEPING_NS) || since >= BUSY_HOUSEKEEPING_NS {
                last_housekeeping = now;
                self.node.engine_mut().housekeeping(now);
            }
            let Loop { node, host, no_port, .. } = self;
            node.send_generated(&mut |frame| to_host(host, no_port, frame));
            if now.wrapping_sub(last_publish) >= IO_PUBLISH_NS {
                last_publish = now;
                self.publish(io);
            }
            empty_polls = if total == 0 { empty_polls + 1 } else { 0 };
            if empty_polls >= YIELD_AFTER_EMPTY_POLLS {
                empty_polls = 0;
                std::thread::yield_now();
            }
        }
        self.node.engine_mut().publish_counters();
        self.publish(io);
    }

    /// One burst from the service lane through the engine; returns frames read.
    fn service_lane(&mut self, now: u64) -> usize {
        let Some(tap) = self.host.as_mut() else { return 0 };
        let n = match tap.recv_burst(&mut self.frames) {
            Ok(n) => n,
            Err(_) => {
                self.host_rx_errors += 1;
                0
            }
        };
        if n > 0 {
            self.node.inject(PortId::Host, &mut self.frames[..n], now, &mut |frame| tap.queue(frame));
        }
        n
    }

    fn publish(&self, io: &IoStats) {
        for (i, id) in [PortId::Internal, PortId::External].into_iter().enumerate() {
            let port = self.node.port(id).expect("data port");
            let s = PortStats { rx_packets: self.rx[i], tx_dropped: port.tx_full_drops(), ..PortStats::default() };
            io.publish(id, &s);
        }
        if let Some(tap) = self.host.as_ref() {
            let mut s = tap.stats();
            s.rx_errors += self.host_rx_errors;
            io.publish(PortId::Host, &s);
        }
        io.publish_no_port(self.no_port);
    }
}

/// Writes a frame for the host to the service lane (a TAP write never blocks the worker: the
/// descriptor is non-blocking and a full queue drops the frame, counted by the TAP).
fn to_host(host: &mut Option<Tap>, no_port: &mut u64, frame: &[u8]) {
    match host.as_mut() {
        Some(tap) => tap.queue(frame),
        None => *no_port += 1,
    }
}

//! The dataplane worker: a dedicated OS thread that owns one engine and its ports.
//!
//! Each turn of the loop receives a bounded burst from every port, runs it through the
//! engine, transmits what the engine forwards and then what it originated (ARP, ICMP).
//! When a turn finds nothing, the worker sleeps in `ppoll` on all port descriptors for at
//! most the idle timeout and runs the engine's housekeeping, so timers advance without
//! traffic. The control plane reaches the engine only through its policy handle, its
//! allowlist channel and its view channel (listings, served in housekeeping); it reads the
//! worker through lock-free counters.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_dataplane::counters::CounterBlock;
use sluice_dataplane::engine::{Action, Engine, PortId, MAX_BURST};
use sluice_dataplane::packet::Packet;

use crate::frame::IoFrame;
use crate::sys::monotonic_ns;
use crate::tap::Tap;

pub use crate::sys::monotonic_ns as now_ns;

/// A source and sink of Ethernet frames a worker can drive.
pub trait Port: Send {
    fn name(&self) -> &str;
    /// A descriptor that becomes readable when frames are waiting.
    fn raw_fd(&self) -> RawFd;
    /// The largest frame the port can deliver (receive buffers are sized for it).
    fn frame_capacity(&self) -> usize;
    /// Receive up to `frames.len()` frames without blocking; returns how many.
    fn recv_burst(&mut self, frames: &mut [IoFrame]) -> io::Result<usize>;
    /// Queue a frame for transmission (copied); dropped and counted if it cannot be.
    fn queue(&mut self, frame: &[u8]);
    /// Transmit everything queued, without blocking.
    fn flush(&mut self);
    fn stats(&self) -> PortStats;
    /// Fetch counters the kernel or driver keeps for the port (a system call, so the worker
    /// calls it only when it publishes statistics, not per burst).
    fn refresh_stats(&mut self) {}
}

/// What a port counts that the engine cannot see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    /// Frames the kernel dropped because the port's receive ring was full (the worker fell
    /// behind the wire).
    pub rx_dropped: u64,
    /// Frames larger than the receive buffer, dropped.
    pub rx_truncated: u64,
    pub rx_errors: u64,
    /// Frames received with a TCP/UDP checksum the sender's offload was still to fill in;
    /// the port completed it.
    pub rx_checksum_partial: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the kernel could not take at once (full socket buffer), dropped.
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

/// Per-port I/O statistics of a worker, published lock-free (every millisecond while busy,
/// at idle, and at exit).
#[derive(Default)]
pub struct IoStats {
    ports: [[AtomicU64; 9]; 3],
    /// Frames the engine sent to a port the worker does not have (no service lane).
    no_port: AtomicU64,
    /// Moves every time the worker publishes (at idle and every millisecond while busy):
    /// the service manager's watchdog is fed only while it moves.
    heartbeat: AtomicU64,
}

impl IoStats {
    pub(crate) fn publish(&self, port: PortId, s: &PortStats) {
        let v = [
            s.rx_packets,
            s.rx_dropped,
            s.rx_truncated,
            s.rx_errors,
            s.rx_checksum_partial,
            s.tx_packets,
            s.tx_bytes,
            s.tx_dropped,
            s.tx_errors,
        ];
        for (slot, x) in self.ports[port as usize].iter().zip(v) {
            slot.store(x, Ordering::Relaxed);
        }
    }

    pub fn port(&self, port: PortId) -> PortStats {
        let v: Vec<u64> = self.ports[port as usize].iter().map(|a| a.load(Ordering::Relaxed)).collect();
        PortStats {
            rx_packets: v[0],
            rx_dropped: v[1],
            rx_truncated: v[2],
            rx_errors: v[3],
            rx_checksum_partial: v[4],
            tx_packets: v[5],
            tx_bytes: v[6],
            tx_dropped: v[7],
            tx_errors: v[8],
        }
    }

    /// The last of a worker's publications: also its heartbeat.
    pub(crate) fn publish_no_port(&self, frames: u64) {
        self.no_port.store(frames, Ordering::Relaxed);
        self.beat();
    }

    /// One sign of life from the (only) writer, the worker.
    fn beat(&self) {
        self.heartbeat.store(self.heartbeat.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// How many times the worker has published: if it stops moving, the worker is stuck.
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    pub fn no_port(&self) -> u64 {
        self.no_port.load(Ordering::Relaxed)
    }
}

pub struct WorkerConfig {
    pub engine: Engine,
    pub internal: Box<dyn Port>,
    pub external: Box<dyn Port>,
    /// The service lane; frames for `PortId::Host` are dropped and counted without it.
    pub host: Option<Tap>,
    /// Frames received per port per turn (at most the engine's `MAX_BURST`).
    pub burst: usize,
    /// The longest sleep when idle; also the housekeeping period of an idle worker.
    pub idle_timeout: Duration,
    /// Pin the worker thread to this CPU.
    pub core: Option<usize>,
}

impl WorkerConfig {
    /// Defaults: bursts of 32, 1 ms idle timeout, not pinned.
    pub fn new(engine: Engine, internal: Box<dyn Port>, external: Box<dyn Port>, host: Option<Tap>) -> WorkerConfig {
        WorkerConfig { engine, internal, external, host, burst: 32, idle_timeout: Duration::from_millis(1), core: None }
    }
}

/// A running worker. Dropping it stops it too.
pub struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Engine>>,
    counters: Arc<CounterBlock>,
    io: Arc<IoStats>,
}

impl Worker {
    /// Start the worker thread. Fails if pinning to `core` fails.
    pub fn spawn(cfg: WorkerConfig) -> io::Result<Worker> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = cfg.engine.counter_block();
        let io_stats = Arc::new(IoStats::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new().name("sluice-worker".into()).spawn({
            let stop = Arc::clone(&stop);
            let io_stats = Arc::clone(&io_stats);
            move || {
                let pinned = cfg.core.map_or(Ok(()), pin_to_core);
                let failed = pinned.is_err();
                let _ = ready_tx.send(pinned);
                let mut engine = cfg.engine;
                if failed {
                    return engine;
                }
                let ports: [Option<Box<dyn Port>>; 3] =
                    [Some(cfg.internal), Some(cfg.external), cfg.host.map(|t| Box::new(t) as Box<dyn Port>)];
                let mut l = Loop::new(ports, cfg.burst, cfg.idle_timeout, &io_stats);
                l.run(&mut engine, &stop);
                engine
            }
        })?;
        let pinned = ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("worker thread died at start")));
        let mut w = Worker { stop, thread: Some(thread), counters, io: io_stats };
        if let Err(e) = pinned {
            w.join();
            return Err(e);
        }
        Ok(w)
    }

    /// The engine's published counters (lock-free, at most ~100 µs of engine time old).
    pub fn counters(&self) -> Arc<CounterBlock> {
        Arc::clone(&self.counters)
    }

    pub fn io_stats(&self) -> Arc<IoStats> {
        Arc::clone(&self.io)
    }

    /// Stop the loop, close the ports, join the thread, and return the engine (with its
    /// final counters published).
    pub fn stop(self) -> Engine {
        self.try_stop().unwrap_or_else(|panic| panic!("worker thread panicked: {panic}"))
    }

    /// Whether the worker thread is still running (false once it has panicked).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Like [`stop`](Worker::stop), but a worker that panicked is reported with its panic
    /// message instead of panicking here.
    pub fn try_stop(mut self) -> Result<Engine, String> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("a worker that was not stopped has its thread");
        t.join().map_err(|panic| panic_message(panic.as_ref()))
    }

    fn join(&mut self) -> Option<Engine> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take()?;
        t.join().ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.join();
    }
}

/// The message a panicking worker left, for the operator's log.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the worker panicked".to_string())
}

fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if core >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("CPU {core} is out of range")));
    }
    // SAFETY: `core` was checked against the set's size above.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid CPU set of the size passed; pid 0 is the calling thread.
    crate::sys::cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), format!("pinning the worker to CPU {core}: {e}")))
}

const PORTS: [PortId; 3] = [PortId::Internal, PortId::External, PortId::Host];

struct Loop<'a> {
    ports: [Option<Box<dyn Port>>; 3],
    frames: Vec<IoFrame>,
    actions: Vec<Action>,
    pollfds: Vec<libc::pollfd>,
    /// The port each entry of `pollfds` belongs to.
    poll_ports: Vec<PortId>,
    idle: libc::timespec,
    stats: &'a IoStats,
    no_port: u64,
    rx_errors: [u64; 3],
    /// A port failed this turn: its descriptor may stay readable (an error is pending or
    /// the link is gone), so the idle sleep must not rely on `ppoll`.
    errored: bool,
    last_publish: u64,
}

/// A busy worker publishes port statistics at most this often.
const IO_PUBLISH_INTERVAL_NS: u64 = 1_000_000;

impl<'a> Loop<'a> {
    fn new(ports: [Option<Box<dyn Port>>; 3], burst: usize, idle: Duration, stats: &'a IoStats) -> Loop<'a> {
        let burst = burst.clamp(1, MAX_BURST);
        let cap = ports.iter().flatten().map(|p| p.frame_capacity()).max().unwrap_or(2048);
        let pollfds =
            ports.iter().flatten().map(|p| libc::pollfd { fd: p.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let poll_ports = PORTS.iter().zip(&ports).filter(|(_, p)| p.is_some()).map(|(&id, _)| id).collect();
        Loop {
            ports,
            frames: (0..burst).map(|_| IoFrame::with_capacity(cap)).collect(),
            actions: vec![Action::Consumed; burst],
            pollfds,
            poll_ports,
            idle: libc::timespec { tv_sec: idle.as_secs() as _, tv_nsec: idle.subsec_nanos() as _ },
            stats,
            no_port: 0,
            rx_errors: [0; 3],
            errored: false,
            last_publish: 0,
        }
    }

    fn run(&mut self, engine: &mut Engine, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let now = monotonic_ns();
            let mut total = 0;
            for from in PORTS {
                total += self.turn(engine, from, now);
            }
            self.transmit_generated(engine);
            if total > 0 && now.wrapping_sub(self.last_publish) >= IO_PUBLISH_INTERVAL_NS {
                // A busy worker publishes its port statistics now and then too.
                self.last_publish = now;
                self.publish_stats();
            }
            if total == 0 {
                // A port may still hold frames its driver could not take at the last flush
                // (an AF_XDP port's transmit ring): hand them over before sleeping.
                for p in self.ports.iter_mut().flatten() {
                    p.flush();
                }
                self.publish_stats();
                // A listing in progress is served a slice per housekeeping turn: an idle
                // worker keeps turning until it is done rather than sleeping between slices.
                if !engine.view_in_progress() {
                    self.sleep();
                }
                engine.housekeeping(monotonic_ns());
                self.transmit_generated(engine);
            }
        }
        engine.publish_counters();
        self.publish_stats();
    }

    /// One burst from `from` through the engine and out; returns frames received.
    fn turn(&mut self, engine: &mut Engine, from: PortId, now: u64) -> usize {
        let Some(port) = self.ports[from as usize].as_mut() else { return 0 };
        let n = match port.recv_burst(&mut self.frames) {
            Ok(n) => n,
            Err(_) => {
                self.rx_errors[from as usize] += 1;
                self.errored = true;
                0
            }
        };
        if n == 0 {
            return 0;
        }
        engine.process_burst(from, &mut self.frames[..n], &mut self.actions[..n], now);
        for i in 0..n {
            if let Action::Forward(to) = self.actions[i] {
                match self.ports[to as usize].as_mut() {
                    Some(p) => p.queue(self.frames[i].data()),
                    None => self.no_port += 1,
                }
            }
        }
        for p in self.ports.iter_mut().flatten() {
            p.flush();
        }
        n
    }

    fn transmit_generated(&mut self, engine: &mut Engine) {
        if engine.generated_pending() == 0 {
            return;
        }
        let Loop { ports, no_port, .. } = self;
        engine.drain_generated(|to, frame| match ports[to as usize].as_mut() {
            Some(p) => p.queue(frame),
            None => *no_port += 1,
        });
        for p in ports.iter_mut().flatten() {
            p.flush();
        }
    }

    fn sleep(&mut self) {
        if std::mem::take(&mut self.errored) {
            // SAFETY: `idle` is a valid timespec; the remainder is not wanted.
            unsafe { libc::nanosleep(&self.idle, std::ptr::null_mut()) };
            return;
        }
        // SAFETY: `pollfds` is a valid array of its length; `idle` a valid timespec; no
        // signal mask is passed.
        let ready = unsafe {
            libc::ppoll(self.pollfds.as_mut_ptr(), self.pollfds.len() as libc::nfds_t, &self.idle, std::ptr::null())
        };
        if ready > 0 {
            self.take_poll_errors();
        }
    }

    /// A port whose descriptor reports an error (a packet socket whose interface vanished
    /// gets ENETDOWN) would wake every `ppoll` at once: read and clear the socket error,
    /// count it, and make the next idle sleep a plain one.
    fn take_poll_errors(&mut self) {
        for (pfd, &id) in self.pollfds.iter().zip(&self.poll_ports) {
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
                continue;
            }
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: valid out-pointers of the sizes given; on a descriptor that is not a
            // socket the call fails harmlessly.
            unsafe {
                libc::getsockopt(
                    pfd.fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            self.rx_errors[id as usize] += 1;
            self.errored = true;
        }
    }

    fn publish_stats(&mut self) {
        for id in PORTS {
            if let Some(p) = self.ports[id as usize].as_mut() {
                p.refresh_stats();
                let mut s = p.stats();
                s.rx_errors += self.rx_errors[id as usize];
                self.stats.publish(id, &s);
            }
        }
        self.stats.publish_no_port(self.no_port);
    }
}

//! `sluice-bench afpacket`: the two ways a packet socket moves bursts of frames, measured on
//! one veth pair in a private network namespace, to back the software port's choice.
//!
//! - **batched system calls**: `recvmmsg` on a plain packet socket (one call per burst of
//!   32, one copy per frame from the kernel into the engine's buffers) and `sendmmsg` through
//!   the product's own `AfPacketPort` (whose transmit side is this);
//! - **PACKET_MMAP rings**: a TPACKET_V3 receive ring (blocks of frames handed over by a
//!   status word; each frame copied into an engine buffer, as forwarding needs, and also read
//!   in place for reference) and a TPACKET_V2 transmit ring (frames copied into slots, one
//!   `send` per burst to kick the kernel). The ring code lives here, not in the product: it
//!   exists to measure.
//!
//! Receive: a sender thread on one CPU transmits 60-byte UDP frames of 1024 flows as fast as
//! `sendmmsg` goes on `afa`; the receiver under test spins on `afb` on the other CPU and
//! counts frames. The kernel's side of receiving (the veth hand-over and the packet socket's
//! copy into its queue or ring) runs in softirq on the sender's CPU. Transmit: the sender
//! under test transmits on `afa`, and the frames `afb` receives are counted from the link
//! statistics. Each figure is the median of repeated runs, methods interleaved.

use std::ffi::CString;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_dataplane::packet::{BufPacket, Packet};
use sluice_io::{AfPacketPort, IoFrame, Port};

mod rings;
use rings::{MmsgRx, RxRing, RxRingV2, TxRing};

const BURST: usize = 32;
const FLOWS: usize = 1024;
const FRAME_LEN: usize = 60;

/// What the suite measured, in packets per second.
pub struct Results {
    pub figures: Vec<(&'static str, f64)>,
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]));
    assert!(out.status.success(), "{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The private namespace with the veth pair; the calling thread (and the threads and
/// processes it starts) live in it until the end of the run. Removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn enter() -> Netns {
        let name = format!("slb-afp-{}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "add", "afa", "type", "veth", "peer", "name", "afb"]);
        for dev in ["afa", "afb"] {
            sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
            sh(&["ip", "netns", "exec", &ns.name, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off"]);
        }
        let path = CString::new(format!("/run/netns/{}", ns.name)).unwrap();
        // SAFETY: valid C string; the descriptor is closed below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {}: {}", ns.name, std::io::Error::last_os_error());
        // SAFETY: `fd` is a network namespace descriptor.
        let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
        let err = std::io::Error::last_os_error();
        // SAFETY: ours to close.
        unsafe { libc::close(fd) };
        assert_eq!(rc, 0, "setns: {err}");
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn pin(cpu: usize) {
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is below CPU_SETSIZE (checked by the caller's CPU list).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set for the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "pin to CPU {cpu}: {}", std::io::Error::last_os_error());
}

/// 60-byte UDP frames of `FLOWS` flows (broadcast destination MAC, so no promiscuity needed).
fn frames() -> Vec<[u8; FRAME_LEN]> {
    (0..FLOWS)
        .map(|i| {
            let mut f = [0u8; FRAME_LEN];
            f[..6].copy_from_slice(&[0xff; 6]);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut f[14..34];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&46u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&[10, 10, 0, 2]);
            ip[16..20].copy_from_slice(&[198, 51, 100, 10]);
            let sum = sluice_dataplane::checksum::fold(sluice_dataplane::checksum::sum16(ip, 0));
            ip[10..12].copy_from_slice(&(!sum).to_be_bytes());
            let udp = &mut f[34..42];
            udp[0..2].copy_from_slice(&(10_000 + i as u16).to_be_bytes());
            udp[2..4].copy_from_slice(&9u16.to_be_bytes());
            udp[4..6].copy_from_slice(&26u16.to_be_bytes());
            f
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rx {
    Mmsg,
    /// `recvmmsg`, but after a short read the receiver sleeps 1 ms instead of waiting for
    /// the next frame: the same latency budget as the ring's 1 ms block timeout.
    MmsgPaced,
    RingCopy,
    RingInPlace,
    /// TPACKET_V2: per-frame slots, each frame copied into an engine buffer.
    RingV2Copy,
    /// TPACKET_V2, paced like `MmsgPaced`.
    RingV2Paced,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tx {
    Mmsg,
    Ring,
}

/// Sends on `afa` with the product's port until `stop`; returns frames sent.
fn blast(cpu: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        pin(cpu);
        let frames = frames();
        let mut port = AfPacketPort::open("afa", BURST).expect("open afa");
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..BURST {
                port.queue(&frames[i % FLOWS]);
                i += 1;
            }
            port.flush();
        }
        port.stats().tx_packets
    })
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: `timespec` is plain old data; the call writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sleeps until `fd` is readable, at most 1 ms.
fn wait_readable(fd: i32) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 1) };
}

/// What one receive run saw.
struct RxRun {
    received_pps: f64,
    offered_pps: f64,
    /// Receiver thread CPU time per frame received (it sleeps in `poll` when idle).
    cpu_ns_per_frame: f64,
}

/// Receives on `afb` with `method` for `secs` while `afa` is blasted from the other CPU.
fn measure_rx(method: Rx, secs: f64, cpus: (usize, usize)) -> RxRun {
    pin(cpus.1);
    let mmsg = matches!(method, Rx::Mmsg | Rx::MmsgPaced);
    let mut port = mmsg.then(|| MmsgRx::open("afb"));
    let mut ring = matches!(method, Rx::RingCopy | Rx::RingInPlace).then(|| RxRing::open("afb"));
    let mut ring2 = matches!(method, Rx::RingV2Copy | Rx::RingV2Paced).then(|| RxRingV2::open("afb"));
    let fd = match (&port, &ring, &ring2) {
        (Some(p), _, _) => p.fd,
        (_, Some(r), _) => r.fd,
        (_, _, Some(r)) => r.fd,
        _ => unreachable!("one receiver per method"),
    };
    let mut bufs: Vec<IoFrame> = (0..BURST).map(|_| BufPacket::with_capacity(2048)).collect();
    let mut copy = BufPacket::with_capacity(2048);
    let stop = Arc::new(AtomicBool::new(false));
    // Counting starts with the sender, so no backlog from before the interval is counted.
    let sender = blast(cpus.0, Arc::clone(&stop));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut received = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while Instant::now() < deadline {
        let n = match method {
            Rx::Mmsg | Rx::MmsgPaced => {
                let p = port.as_mut().unwrap();
                let n = p.recv(&mut bufs);
                for b in &bufs[..n] {
                    bytes += b.data().len() as u64;
                }
                n
            }
            Rx::RingCopy => ring.as_mut().unwrap().read_block(|f| {
                copy.set_frame(f);
                bytes += copy.data().len() as u64;
            }),
            Rx::RingInPlace => ring.as_mut().unwrap().read_block(|f| bytes += f.len() as u64),
            Rx::RingV2Copy | Rx::RingV2Paced => {
                let mut k = 0;
                let n = ring2.as_mut().unwrap().read_burst(BURST, |f| {
                    bufs[k].set_frame(f);
                    bytes += bufs[k].data().len() as u64;
                    k += 1;
                });
                n
            }
        };
        received += n as u64;
        if matches!(method, Rx::MmsgPaced | Rx::RingV2Paced) && n < BURST {
            std::thread::sleep(Duration::from_millis(1));
        } else if n == 0 {
            wait_readable(fd);
        }
    }
    let cpu = thread_cpu() - cpu_start;
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    assert!(received > 0 && bytes >= received * FRAME_LEN as u64, "{method:?}: nothing received");
    RxRun {
        received_pps: received as f64 / secs,
        offered_pps: sent as f64 / secs,
        cpu_ns_per_frame: cpu.as_nanos() as f64 / received as f64,
    }
}

/// Frames `afb` has received, from the link statistics.
fn afb_rx_packets() -> u64 {
    let json = sh(&["ip", "-j", "-s", "link", "show", "afb"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"].as_u64().expect("rx packets")
}

/// Transmits on `afa` with `method` for `secs`; frames per second that reached `afb`.
fn measure_tx(method: Tx, secs: f64, cpu: usize) -> f64 {
    pin(cpu);
    let frames = frames();
    let mut port = (method == Tx::Mmsg).then(|| AfPacketPort::open("afa", BURST).expect("open afa"));
    let mut ring = (method == Tx::Ring).then(|| TxRing::open("afa"));
    let before = afb_rx_packets();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut i = 0;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let burst = &frames[i..i + BURST];
            i = (i + BURST) % FLOWS;
            match method {
                Tx::Mmsg => {
                    let p = port.as_mut().unwrap();
                    for f in burst {
                        p.queue(f);
                    }
                    p.flush();
                }
                Tx::Ring => ring.as_mut().unwrap().send_burst(burst),
            }
        }
    }
    drop((port, ring));
    let secs = start.elapsed().as_secs_f64();
    (afb_rx_packets() - before) as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Runs the suite on CPUs `cpus` (sender, receiver).
pub fn run(quick: bool, cpus: (usize, usize)) -> Results {
    let _ns = Netns::enter();
    let (secs, reps) = if quick { (0.5, 1) } else { (3.0, 5) };
    let rx_methods = [Rx::Mmsg, Rx::MmsgPaced, Rx::RingCopy, Rx::RingInPlace, Rx::RingV2Copy, Rx::RingV2Paced];
    let mut rx: Vec<Vec<RxRun>> = (0..rx_methods.len()).map(|_| Vec::new()).collect();
    let tx_methods = [Tx::Mmsg, Tx::Ring];
    let mut tx: Vec<Vec<f64>> = vec![Vec::new(); 2];
    for _ in 0..reps {
        for (k, &m) in rx_methods.iter().enumerate() {
            rx[k].push(measure_rx(m, secs, cpus));
        }
        for (k, &m) in tx_methods.iter().enumerate() {
            tx[k].push(measure_tx(m, secs, cpus.1));
        }
    }
    let mut figures = Vec::new();
    let names: [[&'static str; 3]; 6] = [
        ["afpacket_rx_mmsg_pps", "afpacket_rx_mmsg_offered_pps", "afpacket_rx_mmsg_cpu_ns_per_frame"],
        ["afpacket_rx_mmsg_paced_pps", "afpacket_rx_mmsg_paced_offered_pps", "afpacket_rx_mmsg_paced_cpu_ns_per_frame"],
        ["afpacket_rx_ring_copy_pps", "afpacket_rx_ring_copy_offered_pps", "afpacket_rx_ring_copy_cpu_ns_per_frame"],
        [
            "afpacket_rx_ring_in_place_pps",
            "afpacket_rx_ring_in_place_offered_pps",
            "afpacket_rx_ring_in_place_cpu_ns_per_frame",
        ],
        ["afpacket_rx_ring_v2_pps", "afpacket_rx_ring_v2_offered_pps", "afpacket_rx_ring_v2_cpu_ns_per_frame"],
        [
            "afpacket_rx_ring_v2_paced_pps",
            "afpacket_rx_ring_v2_paced_offered_pps",
            "afpacket_rx_ring_v2_paced_cpu_ns_per_frame",
        ],
    ];
    for (runs, names) in rx.iter().zip(names) {
        figures.push((names[0], median(runs.iter().map(|r| r.received_pps).collect())));
        figures.push((names[1], median(runs.iter().map(|r| r.offered_pps).collect())));
        figures.push((names[2], median(runs.iter().map(|r| r.cpu_ns_per_frame).collect())));
    }
    let (mmsg_tx, ring_tx) = (median(tx[0].clone()), median(tx[1].clone()));
    figures.push(("afpacket_tx_mmsg_pps", mmsg_tx));
    figures.push(("afpacket_tx_ring_pps", ring_tx));
    figures.push(("afpacket_tx_ring_vs_mmsg_ratio", ring_tx / mmsg_tx));
    Results { figures }
}

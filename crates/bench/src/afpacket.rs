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

fn ifindex(name: &str) -> i32 {
    let c = CString::new(name).unwrap();
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i > 0, "no interface {name}");
    i as i32
}

/// A raw packet socket bound to `ifname` with a ring of `version` configured by `req`.
fn ring_socket<T>(ifname: &str, version: libc::c_int, ring: libc::c_int, req: &T, size: usize) -> (i32, *mut u8) {
    // SAFETY: plain system calls; every pointer passed is valid for its length.
    unsafe {
        let fd =
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, (libc::ETH_P_ALL as u16).to_be() as i32);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let set = |opt, val: *const libc::c_void, len| {
            let rc = libc::setsockopt(fd, libc::SOL_PACKET, opt, val, len as libc::socklen_t);
            assert_eq!(rc, 0, "setsockopt {opt}: {}", std::io::Error::last_os_error());
        };
        set(libc::PACKET_VERSION, (&version as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>());
        set(ring, (req as *const T).cast(), std::mem::size_of::<T>());
        let map = libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
        assert_ne!(map, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex(ifname);
        let rc =
            libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        (fd, map.cast())
    }
}

/// A packet socket read with `recvmmsg`, bursts of frames copied straight into buffers.
struct MmsgRx {
    fd: i32,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl MmsgRx {
    fn open(ifname: &str) -> MmsgRx {
        // SAFETY: plain system calls; every pointer passed is valid for its length.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let size: libc::c_int = 4 << 20;
            let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&size as *const libc::c_int).cast(), sz);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            addr.sll_ifindex = ifindex(ifname);
            let rc = libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        };
        // SAFETY: plain old data; all-zero is valid and every field used is set before a call.
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
        MmsgRx { fd, iov: vec![zero_iov; BURST], msgs: vec![zero_msg; BURST] }
    }

    /// Receives up to `bufs.len()` frames into `bufs` with one `recvmmsg`; returns how many.
    fn recv(&mut self, bufs: &mut [IoFrame]) -> usize {
        let n = bufs.len().min(BURST);
        for (i, b) in bufs[..n].iter_mut().enumerate() {
            let area = b.rx_area();
            self.iov[i] = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
            // SAFETY: plain old data.
            self.msgs[i] = unsafe { std::mem::zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..n]` point at iovecs into live buffers for the duration of the call.
        let got = unsafe {
            libc::recvmmsg(self.fd, self.msgs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if got <= 0 {
            return 0;
        }
        for (i, b) in bufs[..got as usize].iter_mut().enumerate() {
            b.set_received(self.msgs[i].msg_len as usize);
        }
        got as usize
    }
}

impl Drop for MmsgRx {
    fn drop(&mut self) {
        // SAFETY: our descriptor.
        unsafe { libc::close(self.fd) };
    }
}

/// A TPACKET_V3 receive ring.
struct RxRing {
    fd: i32,
    map: *mut u8,
    block_size: usize,
    blocks: usize,
    next: usize,
}

impl RxRing {
    fn open(ifname: &str) -> RxRing {
        let (block_size, blocks, frame_size) = (1usize << 20, 16usize, 2048usize);
        let req = libc::tpacket_req3 {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size * blocks / frame_size) as u32,
            tp_retire_blk_tov: 1,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        let (fd, map) = ring_socket(ifname, version, libc::PACKET_RX_RING, &req, block_size * blocks);
        RxRing { fd, map, block_size, blocks, next: 0 }
    }

    /// Hands every frame of the next ready block to `f`; returns how many (0: none ready).
    fn read_block(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        // SAFETY: the block lies inside the mapping; the kernel hands it over by setting
        // TP_STATUS_USER in its status word (read with acquire ordering) and takes it back
        // when we write TP_STATUS_KERNEL (after a release fence); in between it is ours.
        unsafe {
            let block = self.map.add(self.next * self.block_size).cast::<libc::tpacket_block_desc>();
            let status = std::ptr::addr_of!((*block).hdr.bh1.block_status);
            if std::ptr::read_volatile(status) & libc::TP_STATUS_USER == 0 {
                return 0;
            }
            std::sync::atomic::fence(Ordering::Acquire);
            let n = (*block).hdr.bh1.num_pkts as usize;
            let mut hdr = block.cast::<u8>().add((*block).hdr.bh1.offset_to_first_pkt as usize);
            for _ in 0..n {
                let h = hdr.cast::<libc::tpacket3_hdr>();
                f(std::slice::from_raw_parts(hdr.add((*h).tp_mac as usize), (*h).tp_snaplen as usize));
                hdr = hdr.add((*h).tp_next_offset as usize);
            }
            std::sync::atomic::fence(Ordering::Release);
            std::ptr::write_volatile(status.cast_mut(), libc::TP_STATUS_KERNEL);
            self.next = (self.next + 1) % self.blocks;
            n
        }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: our mapping and descriptor.
        unsafe {
            libc::munmap(self.map.cast(), self.block_size * self.blocks);
            libc::close(self.fd);
        }
    }
}

/// A TPACKET_V2 receive ring: one slot per frame, each handed over by its own status word,
/// so a frame is visible as soon as the kernel has written it (no block timeout).
struct RxRingV2 {
    fd: i32,
    map: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
}

impl RxRingV2 {
    fn open(ifname: &str) -> RxRingV2 {
        let (block_size, blocks, frame_size) = (1usize << 16, 256usize, 2048usize);
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size * blocks / frame_size) as u32,
        };
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        let (fd, map) = ring_socket(ifname, version, libc::PACKET_RX_RING, &req, block_size * blocks);
        RxRingV2 { fd, map, frame_size, frames: block_size * blocks / frame_size, next: 0 }
    }

    /// Hands up to `max` ready frames to `f`; returns how many.
    fn read_burst(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            // SAFETY: the slot lies inside the mapping; it is ours from the moment its status
            // has TP_STATUS_USER (acquire) until we write TP_STATUS_KERNEL (after a release
            // fence).
            unsafe {
                let slot = self.map.add(self.next * self.frame_size);
                let h = slot.cast::<libc::tpacket2_hdr>();
                let status = std::ptr::addr_of_mut!((*h).tp_status);
                if std::ptr::read_volatile(status) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                std::sync::atomic::fence(Ordering::Acquire);
                f(std::slice::from_raw_parts(slot.add((*h).tp_mac as usize), (*h).tp_snaplen as usize));
                std::sync::atomic::fence(Ordering::Release);
                std::ptr::write_volatile(status, libc::TP_STATUS_KERNEL);
            }
            self.next = (self.next + 1) % self.frames;
            n += 1;
        }
        n
    }
}

impl Drop for RxRingV2 {
    fn drop(&mut self) {
        // SAFETY: our mapping and descriptor.
        unsafe {
            libc::munmap(self.map.cast(), self.frame_size * self.frames);
            libc::close(self.fd);
        }
    }
}

/// A TPACKET_V2 transmit ring.
struct TxRing {
    fd: i32,
    map: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
}

impl TxRing {
    fn open(ifname: &str) -> TxRing {
        let (block_size, blocks, frame_size) = (1usize << 16, 64usize, 2048usize);
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (block_size * blocks / frame_size) as u32,
        };
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        let (fd, map) = ring_socket(ifname, version, libc::PACKET_TX_RING, &req, block_size * blocks);
        TxRing { fd, map, frame_size, frames: block_size * blocks / frame_size, next: 0 }
    }

    /// Copies the frames into free slots (waiting for the kernel to free one if needed) and
    /// kicks transmission with one `send`.
    fn send_burst(&mut self, burst: &[[u8; FRAME_LEN]]) {
        let data_offset = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
        for frame in burst {
            // SAFETY: the slot lies inside the mapping; a slot whose status is
            // TP_STATUS_AVAILABLE is ours until we set TP_STATUS_SEND_REQUEST (after a
            // release fence).
            unsafe {
                let slot = self.map.add(self.next * self.frame_size);
                let h = slot.cast::<libc::tpacket2_hdr>();
                let status = std::ptr::addr_of_mut!((*h).tp_status);
                while std::ptr::read_volatile(status) != libc::TP_STATUS_AVAILABLE {
                    libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT);
                }
                std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(data_offset), frame.len());
                (*h).tp_len = frame.len() as u32;
                std::sync::atomic::fence(Ordering::Release);
                std::ptr::write_volatile(status, libc::TP_STATUS_SEND_REQUEST);
            }
            self.next = (self.next + 1) % self.frames;
        }
        // SAFETY: a null buffer with length 0 asks the kernel to send the ring's requests.
        unsafe { libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // SAFETY: our mapping and descriptor.
        unsafe {
            libc::munmap(self.map.cast(), self.frame_size * self.frames);
            libc::close(self.fd);
        }
    }
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

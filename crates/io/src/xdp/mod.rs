//! A software port on AF_XDP: the interface's frames are redirected by a tiny XDP program
//! into a socket's shared memory instead of climbing the kernel's network stack.
//!
//! # Why, and what it costs
//!
//! On an AF_PACKET port every received frame is a socket buffer that also goes through the
//! node's IP input path, and every transmitted one is a new socket buffer; `cargo xtask bench
//! veth` measured the kernel's own forwarding at about twice the AF_PACKET port's rate per CPU
//! (docs/benchmarks.md). With XDP the frame is taken at the driver (natively where the driver
//! supports XDP, as veth and most NIC drivers do; on the generic path otherwise) and copied
//! into the UMEM with no socket buffer and no IP stack; on NICs whose drivers support it the
//! kernel binds in zero-copy mode, and the copy goes too.
//!
//! The price: loading an XDP program needs `CAP_BPF` and `CAP_NET_ADMIN`, and the socket
//! `CAP_NET_RAW` (root has all three), the
//! interface must have a single receive queue (one socket serves queue 0; the program drops
//! frames of a queue without a socket, so nothing bypasses the dataplane), and while the port
//! is open the interface's frames reach nothing else on the node (not `tcpdump` either:
//! capture on the peer). The program is attached through a BPF link, which the kernel removes
//! when the process exits however it exits.
//!
//! # Frames
//!
//! The UMEM holds `2 * RING` chunks: half of them circulate between the fill and receive
//! rings, the other half are the transmit pool. A received frame is copied into the engine's
//! headroomed buffer and its chunk goes straight back to the fill ring, because the engine
//! edits frames in place, may grow them by a VLAN tag and forwards them on another port;
//! queued frames are copied into a free transmit chunk. TCP/UDP checksums a local sender's
//! offload left unfinished are completed on receive ([`crate::offload::complete_if_partial`]):
//! XDP, unlike a packet socket, does not say which frames those are.

mod bpf;
mod ring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use sluice_dataplane::packet::Packet;

pub use bpf::AttachMode;

use crate::error::IoError;
use crate::frame::IoFrame;
use crate::offload::complete_if_partial;
use crate::sys;
use crate::worker::{Port, PortStats};
use bpf::Redirect;
use ring::{Ring, Umem};

/// `AF_XDP` (linux/socket.h).
const AF_XDP: libc::c_int = 44;
/// `XDP_MAX_TX_SKB_BUDGET` (linux/if_xdp.h, 6.17): frames one copy-mode transmit call sends.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// Entries per ring; also the number of chunks for receiving and for transmitting.
const RING: u32 = 2048;
/// The headroom the kernel leaves in front of a received frame in copy mode
/// (`XDP_PACKET_HEADROOM`).
const KERNEL_HEADROOM: usize = 256;

/// An AF_XDP socket on queue 0 of one interface, with its UMEM, rings and redirect program.
pub struct XdpPort {
    // Field order matters: the program is detached first (no more frames), then the rings
    // are unmapped, the socket closed, and the UMEM freed last.
    redirect: Redirect,
    rx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    tx: Ring<libc::xdp_desc>,
    completion: Ring<u64>,
    fd: OwnedFd,
    umem: Umem,
    /// Chunks of the transmit pool that are not in the kernel's hands.
    tx_free: Vec<u64>,
    /// Frames written to the transmit ring since the last submit.
    tx_pending: u32,
    name: String,
    mac: [u8; 6],
    mtu: usize,
    zero_copy: bool,
    offloads_disabled: Vec<&'static str>,
    stats: PortStats,
    /// Errors from waking the kernel to transmit (counted into `tx_errors`).
    kick_errors: u64,
    /// The kernel said the interface is gone or down: `recv_burst` reports it, so the
    /// worker counts it and stops relying on `ppoll` (an AF_XDP socket never signals it).
    gone: bool,
    /// The kernel's own counts, read by `refresh_stats`.
    kernel: libc::xdp_statistics,
}

// SAFETY: the raw pointers inside the rings and the UMEM point into mappings this port owns
// alone; moving the port to another thread moves every user-side reference to them.
unsafe impl Send for XdpPort {}

impl XdpPort {
    /// Open the interface `name`: attach the redirect program and bind a socket to its
    /// queue 0. Brings the interface up if it is down.
    pub fn open(name: &str) -> Result<XdpPort, IoError> {
        let ctl = sys::control_socket().map_err(|e| IoError::os("opening a control socket", name, e))?;
        let link = sys::link_info(ctl.as_raw_fd(), name)?;
        let queues = sys::receive_queues(ctl.as_raw_fd(), name, link.index)
            .map_err(|e| IoError::os("reading the interface's receive queues", name, e))?;
        if queues > 1 {
            return Err(IoError::Xdp {
                name: name.to_string(),
                why: format!(
                    "it has {queues} receive queues and an AF_XDP port serves one; reduce them with \
                     `ethtool -L {name} combined 1` (or `rx 1`), or use --software-io af-packet"
                ),
            });
        }
        let capacity = crate::afpacket::frame_capacity(link.mtu);
        let chunk = (capacity + KERNEL_HEADROOM).next_power_of_two().max(2048);
        if chunk > 4096 {
            return Err(IoError::Xdp {
                name: name.to_string(),
                why: format!(
                    "its MTU {} is larger than an AF_XDP frame can hold (at most {}); lower the MTU or \
                     use --software-io af-packet",
                    link.mtu,
                    4096 - KERNEL_HEADROOM - 18
                ),
            });
        }
        sys::set_up(ctl.as_raw_fd(), name)?;
        // LRO merges frames before XDP sees them, and drivers refuse XDP while it is on.
        let mut offloads_disabled = sys::disable_receive_merging(ctl.as_raw_fd(), name)
            .map_err(|e| IoError::os("turning off receive offloads (GRO/LRO)", name, e))?;
        // A tag the NIC strips into its descriptor never reaches the program: the engine
        // would take a frame of another VLAN for an untagged one.
        if sys::disable_vlan_stripping(ctl.as_raw_fd(), name)
            .map_err(|e| IoError::os("turning off VLAN tag stripping (rx-vlan-offload)", name, e))?
        {
            offloads_disabled.push("rxvlan");
        }
        let os = |op: &'static str| move |e: io::Error| IoError::os(op, name, e);
        // SAFETY: plain system call without pointers.
        let fd =
            sys::owned(unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) }).map_err(|e| match e
                .raw_os_error()
            {
                Some(libc::EAFNOSUPPORT) => IoError::Xdp {
                    name: name.to_string(),
                    why: "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); use --software-io af-packet"
                        .to_string(),
                },
                _ => IoError::os("opening an AF_XDP socket", name, e),
            })?;
        let umem = Umem::new(2 * RING as usize, chunk).map_err(os("allocating the frame memory (UMEM)"))?;
        umem.register(&fd).map_err(os("registering the frame memory (UMEM)"))?;
        // In copy mode every frame in flight to the driver is a socket buffer charged to the
        // send buffer; the default (about 200 KiB) would hold back a deep NIC ring. Room for
        // the whole transmit pool (forced past the system limit with CAP_NET_ADMIN, else
        // as much as the limit allows), and a per-call budget of the whole ring where the
        // kernel has the option (6.17 and later; older ones send 32 per call).
        let sndbuf = (RING as usize * (chunk + 512)) as libc::c_int;
        if sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf).is_err() {
            let _ = sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf);
        }
        let _ = sys::setsockopt_int(&fd, libc::SOL_XDP, XDP_MAX_TX_SKB_BUDGET, RING as libc::c_int);
        for opt in [libc::XDP_UMEM_FILL_RING, libc::XDP_UMEM_COMPLETION_RING, libc::XDP_RX_RING, libc::XDP_TX_RING] {
            sys::setsockopt(&fd, libc::SOL_XDP, opt, &RING).map_err(os("sizing the AF_XDP rings"))?;
        }
        let off: libc::xdp_mmap_offsets =
            sys::getsockopt(&fd, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS).map_err(os("reading the ring layout"))?;
        let map_err = os("mapping the AF_XDP rings");
        let rx = Ring::map(&fd, &off.rx, RING, libc::XDP_PGOFF_RX_RING as u64).map_err(map_err)?;
        let tx = Ring::map(&fd, &off.tx, RING, libc::XDP_PGOFF_TX_RING as u64).map_err(map_err)?;
        let mut fill = Ring::map(&fd, &off.fr, RING, libc::XDP_UMEM_PGOFF_FILL_RING).map_err(map_err)?;
        let completion = Ring::map(&fd, &off.cr, RING, libc::XDP_UMEM_PGOFF_COMPLETION_RING).map_err(map_err)?;
        // The first half of the chunks is for receiving: all of it to the kernel now.
        assert_eq!(fill.free(RING), RING);
        for i in 0..RING {
            fill.write(i, u64::from(i) * chunk as u64);
        }
        fill.submit(RING);
        let tx_free = (RING..2 * RING).map(|i| u64::from(i) * chunk as u64).collect();
        // Attached before the bind so no frame arrives between them unaccounted: until the
        // socket is in the map, the program drops.
        let redirect = Redirect::attach(link.index).map_err(|(op, e)| match e.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => IoError::Xdp {
                name: name.to_string(),
                why: "another XDP program is attached to it (is another node or tool using it?); \
                      `ip link set dev IF xdp off` removes a leftover one attached without a link, \
                      `bpftool link detach id N` one held by a link"
                    .replace("IF", name),
            },
            _ => IoError::os(op, name, e),
        })?;
        let addr = libc::sockaddr_xdp {
            sxdp_family: AF_XDP as u16,
            // On the generic path the driver's zero-copy support cannot be used (its wakeups
            // need its own program), so copy mode is asked for explicitly there.
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP
                | if redirect.mode == AttachMode::Generic { libc::XDP_COPY } else { 0 },
            sxdp_ifindex: link.index as u32,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: 0,
        };
        bind_retrying(&fd, &addr).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => IoError::Xdp {
                name: name.to_string(),
                why: format!(
                    "its queue 0 is still held by another AF_XDP socket {}s after asking (another process, \
                     or one that closed with frames still in flight)",
                    BIND_WAIT.as_secs()
                ),
            },
            _ => IoError::os("binding the AF_XDP socket to queue 0", name, e),
        })?;
        redirect.insert(0, &fd).map_err(os("putting the socket in the XDP map"))?;
        let zero_copy = sys::getsockopt::<libc::xdp_options>(&fd, libc::SOL_XDP, libc::XDP_OPTIONS)
            .is_ok_and(|o| o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0);
        Ok(XdpPort {
            redirect,
            rx,
            fill,
            tx,
            completion,
            fd,
            umem,
            tx_free,
            tx_pending: 0,
            name: name.to_string(),
            mac: link.mac,
            mtu: link.mtu,
            zero_copy,
            offloads_disabled,
            stats: PortStats::default(),
            kick_errors: 0,
            gone: false,
            // SAFETY: plain old data; all-zero is a valid value.
            kernel: unsafe { std::mem::zeroed() },
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Native (in the driver) or generic XDP.
    pub fn attach_mode(&self) -> AttachMode {
        self.redirect.mode
    }

    /// Whether the kernel bound the socket in zero-copy mode (the driver supports it).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The receive offloads (`gro`, `lro`) opening the port turned off on its interface.
    pub fn offloads_disabled(&self) -> &[&'static str] {
        &self.offloads_disabled
    }

    /// Tell the kernel the fill ring has buffers again, when it asked to be told.
    fn wake_fill(&mut self) {
        if !self.fill.needs_wakeup() {
            return;
        }
        // SAFETY: no buffer is passed; the call only wakes the receive path.
        let r = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r < 0 && matches!(io::Error::last_os_error().raw_os_error(), Some(libc::ENXIO) | Some(libc::ENETDOWN)) {
            self.gone = true;
        }
    }

    /// Take back the transmit chunks the kernel has sent.
    fn reclaim(&mut self) {
        let n = self.completion.ready(RING);
        for i in 0..n {
            self.tx_free.push(self.completion.read(i) & !(self.umem.chunk as u64 - 1));
        }
        self.completion.release(n);
        debug_assert!(self.tx_free.len() <= RING as usize);
    }

    /// Ask the kernel to transmit what the ring holds (in copy mode it sends only when
    /// asked, and at most a budget of frames per call, 32 unless the kernel lets
    /// `XDP_MAX_TX_SKB_BUDGET` raise it), repeating while it takes frames and more wait.
    /// Frames the driver cannot take now stay in the ring for the next flush. Bounded: at
    /// most one call per 32 frames of the ring, plus one.
    fn kick(&mut self) {
        for _ in 0..RING / 32 + 1 {
            if !self.tx.needs_wakeup() {
                return;
            }
            let before = self.tx.outstanding();
            if before == 0 {
                return;
            }
            // SAFETY: no buffer is passed; the call only wakes the socket's transmit path.
            let r = unsafe {
                libc::sendto(self.fd.as_raw_fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
            };
            let errno = if r < 0 { io::Error::last_os_error().raw_os_error() } else { None };
            match errno {
                // Sent everything it was given (or the rest of its budget: checked below).
                None => {}
                // The budget ran out with frames left (EAGAIN), or the driver refused one
                // (EBUSY: the batch stopped there): go on only if this call made progress.
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => {}
                // No room for socket buffers now: the next flush retries.
                Some(libc::ENOBUFS) => return,
                // The interface went away or down: the worker's error path takes over.
                Some(libc::ENXIO) | Some(libc::ENETDOWN) | Some(libc::ENODEV) => {
                    self.gone = true;
                    self.kick_errors += 1;
                    return;
                }
                Some(_) => {
                    self.kick_errors += 1;
                    return;
                }
            }
            if self.tx.outstanding() >= before {
                return;
            }
        }
    }
}

/// How long a bind waits for the queue to be released by a socket closed just before: the
/// kernel tears an AF_XDP socket down after `close` returns, so a node restarted at once (an
/// upgrade's exec, a quick restart) finds the queue busy for a moment.
const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn bind_retrying(fd: &OwnedFd, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    let deadline = std::time::Instant::now() + BIND_WAIT;
    loop {
        // SAFETY: `addr` is a valid `sockaddr_xdp` and the length matches it.
        let r = sys::cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (addr as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        });
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r.map(drop),
        }
    }
}

impl Port for XdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn frame_capacity(&self) -> usize {
        crate::afpacket::frame_capacity(self.mtu)
    }

    fn recv_burst(&mut self, frames: &mut [IoFrame]) -> io::Result<usize> {
        if std::mem::take(&mut self.gone) {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        }
        let mut n = self.rx.ready(frames.len() as u32);
        if n > 0 {
            // Every receive chunk is in exactly one place (fill ring, kernel, receive ring,
            // here), so the fill ring has room for every chunk the receive ring hands over,
            // but the kernel publishes how far it read the fill ring just after it publishes
            // the receive ring: take only what can go back now, the rest on the next call.
            n = n.min(self.fill.free(n));
        }
        if n == 0 {
            self.wake_fill();
            return Ok(0);
        }
        let mut kept = 0;
        let mask = !(self.umem.chunk as u64 - 1);
        for i in 0..n {
            let d = self.rx.read(i);
            let data = self.umem.frame(d.addr, d.len as usize);
            let frame = &mut frames[kept];
            let area = frame.rx_area();
            if data.len() > area.len() {
                self.stats.rx_truncated += 1;
            } else {
                area[..data.len()].copy_from_slice(data);
                frame.set_received(data.len());
                if complete_if_partial(frame.data_mut()) {
                    self.stats.rx_checksum_partial += 1;
                }
                kept += 1;
            }
            self.fill.write(i, d.addr & mask);
        }
        self.rx.release(n);
        self.fill.submit(n);
        // A zero-copy driver that ran out of receive buffers waits to be told there are more.
        self.wake_fill();
        self.stats.rx_packets += kept as u64;
        Ok(kept)
    }

    fn queue(&mut self, frame: &[u8]) {
        if frame.len() > self.umem.chunk || frame.is_empty() {
            self.stats.tx_errors += 1;
            return;
        }
        if self.tx_free.is_empty() || self.tx.free(self.tx_pending + 1) <= self.tx_pending {
            self.flush();
            self.reclaim();
        }
        let Some(addr) = self.tx_free.pop() else {
            self.stats.tx_dropped += 1;
            return;
        };
        if self.tx.free(self.tx_pending + 1) <= self.tx_pending {
            self.tx_free.push(addr);
            self.stats.tx_dropped += 1;
            return;
        }
        self.umem.frame_mut(addr, frame.len()).copy_from_slice(frame);
        self.tx.write(self.tx_pending, libc::xdp_desc { addr, len: frame.len() as u32, options: 0 });
        self.tx_pending += 1;
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += frame.len() as u64;
    }

    fn flush(&mut self) {
        if self.tx_pending > 0 {
            self.tx.submit(std::mem::take(&mut self.tx_pending));
        } else if self.tx.outstanding() == 0 {
            return;
        }
        self.kick();
        self.reclaim();
    }

    fn stats(&self) -> PortStats {
        let k = &self.kernel;
        PortStats {
            // In copy mode a frame dropped for want of a fill buffer is in `rx_dropped` too
            // (`rx_fill_ring_empty_descs` counts attempts, not frames).
            rx_dropped: self.stats.rx_dropped + k.rx_dropped + k.rx_ring_full,
            rx_errors: self.stats.rx_errors,
            tx_errors: self.stats.tx_errors + self.kick_errors + k.tx_invalid_descs,
            ..self.stats
        }
    }

    fn refresh_stats(&mut self) {
        // Cumulative since the socket was bound.
        if let Ok(s) = sys::getsockopt::<libc::xdp_statistics>(&self.fd, libc::SOL_XDP, libc::XDP_STATISTICS) {
            self.kernel = s;
        }
    }
}

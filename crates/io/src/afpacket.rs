//! A software port: an AF_PACKET socket on a named Ethernet interface.
//!
//! # Why `recvmmsg`/`sendmmsg` and not PACKET_MMAP
//!
//! Two kernel interfaces can move bursts of frames through a packet socket: batched system
//! calls (`recvmmsg`/`sendmmsg`, one call per burst, one copy per frame between kernel and
//! user buffers) and PACKET_MMAP rings (TPACKET_V3 receive blocks and a TPACKET_V2 transmit
//! ring shared with the kernel, no system call per burst on receive but a `send` to kick
//! transmission, and frames that live in ring slots until released). This port uses the
//! batched calls:
//!
//! - the engine edits frames in place and may grow them by a VLAN tag, so it needs buffers
//!   with headroom that stay valid until the frame is transmitted on *another* socket;
//!   ring slots have no headroom and would have to be copied anyway for forwarding, which
//!   removes most of the ring's advantage;
//! - one system call per burst of up to 32 frames already amortises the call cost, and the
//!   software port exists for labs, small sites and tests, where DPDK is not used;
//! - it is simpler to get right (no ring status protocol, no block retirement timeouts
//!   that add latency at low rates).
//!
//! The choice is to be measured against PACKET_MMAP on the lab machines; the port's
//! interface ([`crate::Port`]) hides it, so a ring-based port can replace this one.
//!
//! Segmentation offloads must be off on interfaces the port reads from (GRO on a physical
//! NIC, TSO on the far end of a veth), because a packet socket sees the merged frames;
//! frames larger than the buffer are dropped and counted in
//! [`crate::PortStats::rx_truncated`]. Frames whose TCP/UDP checksum a sender's TX checksum
//! offload left unfinished are completed here (see `offload.rs`) and counted in
//! [`crate::PortStats::rx_checksum_partial`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use sluice_dataplane::packet::Packet;

use crate::error::IoError;
use crate::frame::IoFrame;
use crate::offload::complete_l4_checksum;
use crate::sys;
use crate::worker::{Port, PortStats};

/// Bytes beyond the MTU that a frame on the wire carries: Ethernet header and one VLAN tag.
const L2_OVERHEAD: usize = 14 + 4;

/// Control-message space per frame, in `u64` words: room for one `tpacket_auxdata`.
const CTRL_WORDS: usize = 8;

/// An AF_PACKET socket bound to one interface, in promiscuous mode, not reading its own
/// transmissions, non-blocking, with preallocated batch buffers.
pub struct AfPacketPort {
    fd: OwnedFd,
    name: String,
    mac: [u8; 6],
    mtu: usize,
    ifindex: i32,
    rx_iov: Vec<libc::iovec>,
    rx_msgs: Vec<libc::mmsghdr>,
    /// Control-message space per received frame (for `tpacket_auxdata`), 8-byte aligned.
    rx_ctrl: Vec<u64>,
    tx: TxBatch,
    stats: PortStats,
}

// SAFETY: the raw pointers inside the `iovec`/`mmsghdr` scratch arrays are rewritten before
// every system call that uses them and never dereferenced otherwise; they point into
// buffers owned by the caller (receive) or by this port (transmit), so moving the port to
// another thread moves nothing that is shared.
unsafe impl Send for AfPacketPort {}

impl AfPacketPort {
    /// Open the interface `name` for bursts of up to `burst` frames. Brings the interface
    /// up if it is down.
    pub fn open(name: &str, burst: usize) -> Result<AfPacketPort, IoError> {
        let burst = burst.max(1);
        let ctl = sys::control_socket().map_err(|e| IoError::os("opening a control socket", name, e))?;
        let link = sys::link_info(ctl.as_raw_fd(), name)?;
        sys::set_up(ctl.as_raw_fd(), name)?;
        // Protocol 0: the socket receives nothing until it is bound to the interface below,
        // so no frame of another interface can slip in between.
        // SAFETY: plain system call without pointers.
        let fd = sys::owned(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
        })
        .map_err(|e| IoError::os("opening a packet socket", name, e))?;
        // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = link.index;
        // SAFETY: `addr` is a valid `sockaddr_ll` and the length matches it.
        sys::cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map_err(|e| IoError::os("binding a packet socket", name, e))?;
        let mreq = libc::packet_mreq {
            mr_ifindex: link.index,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        sys::setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| IoError::os("enabling promiscuous mode", name, e))?;
        sys::setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(|e| IoError::os("setting PACKET_IGNORE_OUTGOING", name, e))?;
        // The kernel removes 802.1Q tags before a packet socket sees a frame and reports
        // them in this ancillary data instead; the port puts them back.
        sys::setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)
            .map_err(|e| IoError::os("enabling PACKET_AUXDATA", name, e))?;
        // Larger socket buffers absorb bursts while the worker is busy on another port.
        // Failure only costs headroom, so it is not an error.
        let _ = sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        let _ = sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        let frame_capacity = frame_capacity(link.mtu);
        Ok(AfPacketPort {
            fd,
            name: name.to_string(),
            mac: link.mac,
            mtu: link.mtu,
            ifindex: link.index,
            // SAFETY: `iovec` and `mmsghdr` are plain old data; all-zero is a valid value.
            rx_iov: vec![unsafe { std::mem::zeroed() }; burst],
            // SAFETY: as above.
            rx_msgs: vec![unsafe { std::mem::zeroed() }; burst],
            rx_ctrl: vec![0; burst * CTRL_WORDS],
            tx: TxBatch::new(2 * burst, frame_capacity),
            stats: PortStats::default(),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

/// The receive buffer size for an interface MTU.
pub fn frame_capacity(mtu: usize) -> usize {
    (mtu + L2_OVERHEAD).max(1536)
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn frame_capacity(&self) -> usize {
        frame_capacity(self.mtu)
    }

    fn recv_burst(&mut self, frames: &mut [IoFrame]) -> io::Result<usize> {
        let n = frames.len().min(self.rx_msgs.len());
        if n == 0 {
            return Ok(0);
        }
        let slots = frames.iter_mut().zip(self.rx_iov.iter_mut()).zip(self.rx_msgs.iter_mut());
        for (((frame, iov), msg), ctrl) in slots.zip(self.rx_ctrl.chunks_exact_mut(CTRL_WORDS)).take(n) {
            let area = frame.rx_area();
            *iov = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
            // SAFETY: `mmsghdr` is plain old data; all-zero is a valid value.
            *msg = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = CTRL_WORDS * 8;
        }
        // SAFETY: `rx_msgs[..n]` are initialised headers whose single iovec points at the
        // receive area of `frames[i]`, which stays borrowed (and so alive and unaliased)
        // for the duration of the call, and whose control buffer is a slice of `rx_ctrl`.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.rx_msgs.as_mut_ptr(),
                n as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = got as usize;
        // Keep the complete frames, packed at the front.
        let mut kept = 0;
        for i in 0..got {
            let msg = &self.rx_msgs[i];
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.stats.rx_truncated += 1;
                continue;
            }
            let len = msg.msg_len as usize;
            frames[i].set_received(len);
            if let Some(aux) = auxdata(&msg.msg_hdr) {
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    let tpid =
                        if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { aux.tp_vlan_tpid } else { 0x8100 };
                    if !reinsert_vlan(&mut frames[i], tpid, aux.tp_vlan_tci) {
                        self.stats.rx_truncated += 1;
                        continue;
                    }
                }
                if aux.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                    self.stats.rx_checksum_partial += 1;
                    complete_l4_checksum(frames[i].data_mut());
                }
            }
            if kept != i {
                frames.swap(kept, i);
            }
            kept += 1;
        }
        self.stats.rx_packets += kept as u64;
        Ok(kept)
    }

    fn queue(&mut self, frame: &[u8]) {
        if self.tx.is_full() {
            self.flush();
        }
        if !self.tx.push(frame) {
            self.stats.tx_dropped += 1;
        }
    }

    fn flush(&mut self) {
        let fd = self.fd.as_raw_fd();
        self.tx.send(fd, &mut self.stats);
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

/// The packet-socket ancillary data of a received message, if the kernel attached it.
fn auxdata(hdr: &libc::msghdr) -> Option<libc::tpacket_auxdata> {
    // SAFETY: `hdr` is a header the kernel just filled: its control pointer and length
    // describe the control messages it wrote, which the CMSG macros walk within bounds.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                return Some(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>()));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Put an 802.1Q tag the kernel took out back after the MAC addresses; false if the
/// frame is too short or there is no headroom.
fn reinsert_vlan(frame: &mut IoFrame, tpid: u16, tci: u16) -> bool {
    if frame.data().len() < 12 || !frame.push_front(4) {
        return false;
    }
    let d = frame.data_mut();
    d.copy_within(4..16, 0);
    d[12..14].copy_from_slice(&tpid.to_be_bytes());
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    true
}

/// Frames waiting for one `sendmmsg`: copies in preallocated slots (the engine's buffers
/// are reused for the next burst before a slow socket would take them).
struct TxBatch {
    data: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    count: usize,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl TxBatch {
    fn new(slots: usize, slot: usize) -> TxBatch {
        TxBatch {
            data: vec![0; slots * slot],
            slot,
            lens: vec![0; slots],
            count: 0,
            // SAFETY: `iovec` and `mmsghdr` are plain old data; all-zero is a valid value.
            iov: vec![unsafe { std::mem::zeroed() }; slots],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; slots],
        }
    }

    fn is_full(&self) -> bool {
        self.count == self.lens.len()
    }

    /// Copy a frame in; false if it is larger than a slot or the batch is full.
    fn push(&mut self, frame: &[u8]) -> bool {
        if self.is_full() || frame.len() > self.slot {
            return false;
        }
        let at = self.count * self.slot;
        self.data[at..at + frame.len()].copy_from_slice(frame);
        self.lens[self.count] = frame.len();
        self.count += 1;
        true
    }

    /// Transmit everything queued. Frames the socket cannot take now (full send buffer)
    /// are dropped and counted: a worker never waits for a port.
    fn send(&mut self, fd: RawFd, stats: &mut PortStats) {
        let n = self.count;
        if n == 0 {
            return;
        }
        let base = self.data.as_mut_ptr();
        for i in 0..n {
            // SAFETY: slot `i` lies within `data` (`i < slots`, `data.len() == slots * slot`).
            let ptr = unsafe { base.add(i * self.slot) };
            self.iov[i] = libc::iovec { iov_base: ptr.cast(), iov_len: self.lens[i] };
            // SAFETY: `mmsghdr` is plain old data; all-zero is a valid value.
            self.msgs[i] = unsafe { std::mem::zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: `msgs[done..n]` are initialised headers whose iovecs point into
            // `data`, which is alive and not otherwise borrowed during the call.
            let sent =
                unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr().add(done), (n - done) as _, libc::MSG_DONTWAIT) };
            if sent > 0 {
                done += sent as usize;
                for i in done - sent as usize..done {
                    stats.tx_packets += 1;
                    stats.tx_bytes += self.lens[i] as u64;
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    stats.tx_dropped += (n - done) as u64;
                    break;
                }
                _ => {
                    // The first remaining frame failed (e.g. larger than the MTU, link
                    // down): count it and go on with the rest.
                    stats.tx_errors += 1;
                    done += 1;
                }
            }
        }
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_a_typed_error() {
        match AfPacketPort::open("sl-no-such-if", 4) {
            Err(IoError::InterfaceMissing { name }) => assert_eq!(name, "sl-no-such-if"),
            // Unprivileged test runs cannot even ask; that is its own typed error.
            Err(IoError::PermissionDenied { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened a missing interface"),
        }
        let e = AfPacketPort::open("a-name-far-too-long-for-linux", 4).err().expect("error");
        assert!(matches!(e, IoError::BadInterfaceName { .. }), "{e}");
        let text = IoError::InterfaceMissing { name: "eth9".into() }.to_string();
        assert!(text.contains("ip link show"), "{text}");
    }
}

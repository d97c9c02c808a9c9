//! A software port: an AF_PACKET socket on a named Ethernet interface.
//!
//! # Receive through a PACKET_MMAP ring, transmit with `sendmmsg`
//!
//! Two kernel interfaces can move bursts of frames through a packet socket: batched system
//! calls (`recvmmsg`/`sendmmsg`, one call per burst, one copy per frame between kernel and
//! user buffers) and PACKET_MMAP rings shared with the kernel. `cargo xtask bench afpacket`
//! measured both on a veth pair (docs/benchmarks.md): on receive the ring costs the worker
//! tens of nanoseconds per frame against several hundred for `recvmmsg` (which dequeues and
//! frees a socket buffer per frame in the worker's own time), so receive uses a TPACKET_V2
//! ring ([`rx_ring`]); on transmit a ring was no faster than `sendmmsg`, so transmit keeps
//! the batched call ([`tx_batch`]). Frames are copied out of the ring into the engine's
//! headroomed buffers, because the engine edits them in place, may grow them by a VLAN tag,
//! and forwards them on another socket.
//!
//! Transmission bypasses the interface's qdisc (`PACKET_QDISC_BYPASS`): cheaper per frame,
//! and `tcpdump` on a data port therefore shows only received frames.
//!
//! Offloads that merge frames must be off on the path into the port, because a packet socket
//! sees the merged frames: opening a port turns off GRO and LRO on its interface; TSO/GSO on
//! a sender that hands frames straight to the interface (the far end of a veth) is the
//! sender's to turn off. Frames larger than the buffer are dropped and counted in
//! [`crate::PortStats::rx_truncated`]. Frames whose TCP/UDP checksum a sender's TX checksum
//! offload left unfinished are completed here (see `offload.rs`) and counted in
//! [`crate::PortStats::rx_checksum_partial`].

mod rx_ring;
mod tx_batch;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use sluice_dataplane::packet::Packet;

use crate::error::IoError;
use crate::frame::IoFrame;
use crate::sys;
use crate::worker::{Port, PortStats};
use rx_ring::RxRing;
use tx_batch::TxBatch;

/// Bytes beyond the MTU that a frame on the wire carries: Ethernet header and one VLAN tag.
const L2_OVERHEAD: usize = 14 + 4;

/// An AF_PACKET socket bound to one interface, in promiscuous mode, not reading its own
/// transmissions, non-blocking, with a receive ring and preallocated transmit buffers.
pub struct AfPacketPort {
    // Field order matters: the ring is unmapped before the socket is closed.
    rx: RxRing,
    fd: OwnedFd,
    name: String,
    mac: [u8; 6],
    mtu: usize,
    ifindex: i32,
    /// Receive offloads this port turned off on its interface.
    offloads_disabled: Vec<&'static str>,
    tx: TxBatch,
    stats: PortStats,
}

// SAFETY: the raw pointers inside the transmit scratch arrays are rewritten before every
// system call that uses them and never dereferenced otherwise; they point into buffers
// owned by this port, so moving the port to another thread moves nothing that is shared.
unsafe impl Send for AfPacketPort {}

impl AfPacketPort {
    /// Open the interface `name` for bursts of up to `burst` frames. Brings the interface
    /// up if it is down.
    pub fn open(name: &str, burst: usize) -> Result<AfPacketPort, IoError> {
        let burst = burst.max(1);
        let ctl = sys::control_socket().map_err(|e| IoError::os("opening a control socket", name, e))?;
        let link = sys::link_info(ctl.as_raw_fd(), name)?;
        sys::set_up(ctl.as_raw_fd(), name)?;
        let offloads_disabled = sys::disable_receive_merging(ctl.as_raw_fd(), name)
            .map_err(|e| IoError::os("turning off receive offloads (GRO/LRO)", name, e))?;
        // Protocol 0: the socket receives nothing until it is bound to the interface below,
        // so no frame of another interface can slip in between.
        // SAFETY: plain system call without pointers.
        let fd = sys::owned(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
        })
        .map_err(|e| IoError::os("opening a packet socket", name, e))?;
        let frame_capacity = frame_capacity(link.mtu);
        // Before binding, so every frame the socket ever receives goes to the ring.
        let rx = RxRing::new(&fd, frame_capacity).map_err(|e| IoError::os("setting up the receive ring", name, e))?;
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
        // Transmit straight to the driver, past the interface's queueing discipline: the
        // dataplane owns the port and paces nothing, and the qdisc layer cost about a tenth
        // of the software mode's forwarding rate per CPU on a veth (docs/benchmarks.md). The
        // price: the frames sent are not shown to other packet sockets, so `tcpdump` on a
        // data port sees what arrives, not what Sluice sends (capture on the peer instead).
        // Kernels without the option just keep the qdisc path.
        let _ = sys::setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        // A larger send buffer absorbs bursts while the peer is slow. Failure only costs
        // headroom, so it is not an error. (Receive buffering is the ring.)
        let _ = sys::setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20);
        Ok(AfPacketPort {
            rx,
            fd,
            name: name.to_string(),
            mac: link.mac,
            mtu: link.mtu,
            ifindex: link.index,
            offloads_disabled,
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

    /// Whether frames this port sends skip the interface's queueing discipline (asked of
    /// the kernel, so it tells what the socket really does).
    pub fn bypasses_qdisc(&self) -> bool {
        sys::getsockopt::<libc::c_int>(&self.fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS).is_ok_and(|v| v != 0)
    }

    /// The receive offloads (`gro`, `lro`) opening the port turned off on its interface,
    /// because a packet socket would see the frames they merge.
    pub fn offloads_disabled(&self) -> &[&'static str] {
        &self.offloads_disabled
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
        Ok(self.rx.recv(frames, &mut self.stats))
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

    fn refresh_stats(&mut self) {
        // PACKET_STATISTICS returns the counts since the previous call and resets them.
        if let Ok(s) = sys::getsockopt::<libc::tpacket_stats>(&self.fd, libc::SOL_PACKET, libc::PACKET_STATISTICS) {
            self.stats.rx_dropped += u64::from(s.tp_drops);
        }
    }
}

/// Put an 802.1Q tag the kernel took out back after the MAC addresses; false if the
/// frame is too short or there is no headroom.
pub(crate) fn reinsert_vlan(frame: &mut IoFrame, tpid: u16, tci: u16) -> bool {
    if frame.data().len() < 12 || !frame.push_front(4) {
        return false;
    }
    let d = frame.data_mut();
    d.copy_within(4..16, 0);
    d[12..14].copy_from_slice(&tpid.to_be_bytes());
    d[14..16].copy_from_slice(&tci.to_be_bytes());
    true
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

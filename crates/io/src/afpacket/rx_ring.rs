//! The software port's receive side: a PACKET_MMAP ring (TPACKET_V2) shared with the kernel.
//!
//! The kernel copies each frame into the next free slot of the ring while it delivers it
//! (in softirq, on whichever CPU received it) and hands the slot over by setting
//! `TP_STATUS_USER` in the slot's status word; the worker copies the frame into the engine's
//! headroomed buffer and gives the slot back with `TP_STATUS_KERNEL`. No system call per
//! burst, no socket buffer to dequeue and free: `cargo xtask bench afpacket` measured the
//! receiving thread's cost per frame at tens of nanoseconds this way, against several hundred
//! with `recvmmsg` (see docs/benchmarks.md). TPACKET_V2 rather than V3: V3 hands over whole
//! blocks, retired at the earliest after a 1 ms timeout at low rates, which a forwarder would
//! add to every packet's latency; V2 hands over each frame as soon as it is written.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use sluice_dataplane::packet::Packet;

use crate::frame::IoFrame;
use crate::offload::complete_l4_checksum;
use crate::sys;
use crate::worker::PortStats;

/// Memory given to each port's ring (the kernel drops frames, counted in
/// `PACKET_STATISTICS`, when the worker falls this far behind).
pub(crate) const RING_BYTES: usize = 4 << 20;

/// A TPACKET_V2 receive ring mapped from a packet socket.
pub(crate) struct RxRing {
    map: NonNull<u8>,
    map_len: usize,
    slot_size: usize,
    slots: usize,
    /// The next slot the kernel will hand over (slots are filled in order).
    next: usize,
}

// SAFETY: the mapping belongs to this ring alone (one socket, one reader); moving the ring
// to another thread moves the only user-side reference to it.
unsafe impl Send for RxRing {}

impl RxRing {
    /// Sets up a ring on `fd` (a packet socket, not yet bound) for frames of up to
    /// `frame_capacity` bytes, and maps it.
    pub(crate) fn new(fd: &OwnedFd, frame_capacity: usize) -> io::Result<RxRing> {
        // The kernel puts the frame at an offset of about 66 bytes (header, address, and
        // alignment) in its slot; slots are powers of two so they tile a block.
        let slot_size = (frame_capacity + 128).next_power_of_two();
        let block_size = slot_size.max(1 << 16);
        let blocks = (RING_BYTES / block_size).max(1);
        let slots = blocks * (block_size / slot_size);
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: slot_size as u32,
            tp_frame_nr: slots as u32,
        };
        sys::setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, libc::tpacket_versions::TPACKET_V2 as i32)?;
        sys::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let map_len = block_size * blocks;
        // SAFETY: maps the ring the kernel just allocated for this socket; no pointer is
        // passed in.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).expect("mmap returned a non-null mapping");
        Ok(RxRing { map, map_len, slot_size, slots, next: 0 })
    }

    /// Copies up to `frames.len()` ready frames into `frames` (packed at the front) and
    /// returns how many; frames larger than a receive buffer are dropped and counted, VLAN
    /// tags the kernel took out are put back, and checksums a sender's offload left
    /// unfinished are completed.
    pub(crate) fn recv(&mut self, frames: &mut [IoFrame], stats: &mut PortStats) -> usize {
        let mut kept = 0;
        // Bounded: at most one pass over the ring per call.
        for _ in 0..self.slots {
            if kept == frames.len() {
                break;
            }
            // SAFETY: `next < slots`, so the slot lies inside the mapping.
            let slot = unsafe { self.map.as_ptr().add(self.next * self.slot_size) };
            let hdr = slot.cast::<libc::tpacket2_hdr>();
            // SAFETY: the header is inside the slot; the kernel writes the status word
            // concurrently, hence the volatile read.
            let status = unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*hdr).tp_status)) };
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            // The slot's contents were written before its status: read them after it.
            fence(Ordering::Acquire);
            // SAFETY: the slot is ours until we set TP_STATUS_KERNEL below; the kernel keeps
            // `tp_mac + tp_snaplen` within the slot.
            let (h, data) = unsafe {
                let h = std::ptr::read(hdr);
                let data = std::slice::from_raw_parts(slot.add(usize::from(h.tp_mac)), h.tp_snaplen as usize);
                (h, data)
            };
            if self.take(h, data, &mut frames[kept], stats) {
                kept += 1;
            }
            // Give the slot back only after the frame is copied out.
            fence(Ordering::Release);
            // SAFETY: as above; the status word is in the slot.
            unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*hdr).tp_status), libc::TP_STATUS_KERNEL) };
            self.next = (self.next + 1) % self.slots;
        }
        stats.rx_packets += kept as u64;
        kept
    }

    /// Copies one frame out of its slot into `frame`; false if it was dropped.
    fn take(&self, h: libc::tpacket2_hdr, data: &[u8], frame: &mut IoFrame, stats: &mut PortStats) -> bool {
        let area = frame.rx_area();
        if h.tp_snaplen < h.tp_len || data.len() > area.len() {
            stats.rx_truncated += 1;
            return false;
        }
        area[..data.len()].copy_from_slice(data);
        frame.set_received(data.len());
        if h.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.tp_vlan_tpid } else { 0x8100 };
            if !super::reinsert_vlan(frame, tpid, h.tp_vlan_tci) {
                stats.rx_truncated += 1;
                return false;
            }
        }
        if h.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            stats.rx_checksum_partial += 1;
            complete_l4_checksum(frame.data_mut());
        }
        true
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no slice into it outlives a
        // `recv` call.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

//! The packet sockets under test: a `recvmmsg` receiver, TPACKET_V3 and TPACKET_V2 receive
//! rings, and a TPACKET_V2 transmit ring. Measurement code, not product code: the product's
//! port is `sluice_io::AfPacketPort`.

use std::ffi::CString;
use std::sync::atomic::Ordering;

use sluice_io::IoFrame;

use super::{BURST, FRAME_LEN};

pub(super) fn ifindex(name: &str) -> i32 {
    let c = CString::new(name).unwrap();
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert!(i > 0, "no interface {name}");
    i as i32
}

/// A raw packet socket bound to `ifname` with a ring of `version` configured by `req`.
pub(super) fn ring_socket<T>(
    ifname: &str,
    version: libc::c_int,
    ring: libc::c_int,
    req: &T,
    size: usize,
) -> (i32, *mut u8) {
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
pub(super) struct MmsgRx {
    pub(super) fd: i32,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl MmsgRx {
    pub(super) fn open(ifname: &str) -> MmsgRx {
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
    pub(super) fn recv(&mut self, bufs: &mut [IoFrame]) -> usize {
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
pub(super) struct RxRing {
    pub(super) fd: i32,
    map: *mut u8,
    block_size: usize,
    blocks: usize,
    next: usize,
}

impl RxRing {
    pub(super) fn open(ifname: &str) -> RxRing {
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
    pub(super) fn read_block(&mut self, mut f: impl FnMut(&[u8])) -> usize {
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

/// A mapped TPACKET_V2 ring of 2 KiB frame slots (receive or transmit), walked in order.
struct V2Slots {
    fd: i32,
    map: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
}

impl V2Slots {
    /// `ring` is `PACKET_RX_RING` or `PACKET_TX_RING`; `blocks` of 64 KiB each.
    fn open(ifname: &str, ring: libc::c_int, blocks: usize) -> V2Slots {
        let (block_size, frame_size) = (1usize << 16, 2048usize);
        let frames = block_size * blocks / frame_size;
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frames as u32,
        };
        let version = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        let (fd, map) = ring_socket(ifname, version, ring, &req, block_size * blocks);
        V2Slots { fd, map, frame_size, frames, next: 0 }
    }

    /// The slot under the cursor and its header.
    fn current(&self) -> (*mut u8, *mut libc::tpacket2_hdr) {
        // SAFETY: `next < frames`, so the slot lies inside the mapping.
        let slot = unsafe { self.map.add(self.next * self.frame_size) };
        (slot, slot.cast())
    }

    fn advance(&mut self) {
        self.next = (self.next + 1) % self.frames;
    }
}

impl Drop for V2Slots {
    fn drop(&mut self) {
        // SAFETY: our mapping and descriptor.
        unsafe {
            libc::munmap(self.map.cast(), self.frame_size * self.frames);
            libc::close(self.fd);
        }
    }
}

/// A TPACKET_V2 receive ring: one slot per frame, each handed over by its own status word,
/// so a frame is visible as soon as the kernel has written it (no block timeout).
pub(super) struct RxRingV2 {
    pub(super) fd: i32,
    slots: V2Slots,
}

impl RxRingV2 {
    pub(super) fn open(ifname: &str) -> RxRingV2 {
        let slots = V2Slots::open(ifname, libc::PACKET_RX_RING, 256);
        RxRingV2 { fd: slots.fd, slots }
    }

    /// Hands up to `max` ready frames to `f`; returns how many.
    pub(super) fn read_burst(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while n < max {
            let (slot, h) = self.slots.current();
            // SAFETY: the slot is ours from the moment its status has TP_STATUS_USER
            // (acquire) until we write TP_STATUS_KERNEL (after a release fence).
            unsafe {
                let status = std::ptr::addr_of_mut!((*h).tp_status);
                if std::ptr::read_volatile(status) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                std::sync::atomic::fence(Ordering::Acquire);
                f(std::slice::from_raw_parts(slot.add((*h).tp_mac as usize), (*h).tp_snaplen as usize));
                std::sync::atomic::fence(Ordering::Release);
                std::ptr::write_volatile(status, libc::TP_STATUS_KERNEL);
            }
            self.slots.advance();
            n += 1;
        }
        n
    }
}

/// A TPACKET_V2 transmit ring.
pub(super) struct TxRing {
    pub(super) fd: i32,
    slots: V2Slots,
}

impl TxRing {
    pub(super) fn open(ifname: &str) -> TxRing {
        let slots = V2Slots::open(ifname, libc::PACKET_TX_RING, 64);
        TxRing { fd: slots.fd, slots }
    }

    /// Copies the frames into free slots (waiting for the kernel to free one if needed) and
    /// kicks transmission with one `send`.
    pub(super) fn send_burst(&mut self, burst: &[[u8; FRAME_LEN]]) {
        let data_offset = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
        for frame in burst {
            let (slot, h) = self.slots.current();
            // SAFETY: a slot whose status is TP_STATUS_AVAILABLE is ours until we set
            // TP_STATUS_SEND_REQUEST (after a release fence).
            unsafe {
                let status = std::ptr::addr_of_mut!((*h).tp_status);
                while std::ptr::read_volatile(status) != libc::TP_STATUS_AVAILABLE {
                    libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT);
                }
                std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(data_offset), frame.len());
                (*h).tp_len = frame.len() as u32;
                std::sync::atomic::fence(Ordering::Release);
                std::ptr::write_volatile(status, libc::TP_STATUS_SEND_REQUEST);
            }
            self.slots.advance();
        }
        // SAFETY: a null buffer with length 0 asks the kernel to send the ring's requests.
        unsafe { libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
    }
}

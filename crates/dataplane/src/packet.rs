//! The engine's view of a packet buffer. The engine edits frames in place; the only size
//! changes it makes are adding or removing one 802.1Q tag, which needs headroom in front.
//! DPDK mbufs, AF_PACKET ring slots and the in-memory [`BufPacket`] all provide this.

pub trait Packet {
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Extend the frame by `n` bytes at the front; false if there is not enough headroom.
    fn push_front(&mut self, n: usize) -> bool;
    /// Remove `n` bytes from the front; false if the frame is shorter.
    fn pull_front(&mut self, n: usize) -> bool;
}

/// Headroom [`BufPacket`] reserves, enough for one VLAN tag (as DPDK's default 128 is).
pub const DEFAULT_HEADROOM: usize = 64;

/// A frame in an owned buffer with headroom: for tests, benchmarks and the software ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufPacket {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl BufPacket {
    /// A buffer with room for `capacity` bytes of frame after the default headroom.
    pub fn with_capacity(capacity: usize) -> BufPacket {
        BufPacket { buf: vec![0; DEFAULT_HEADROOM + capacity], start: DEFAULT_HEADROOM, len: 0 }
    }

    pub fn from_frame(frame: &[u8]) -> BufPacket {
        let mut p = BufPacket::with_capacity(frame.len().max(2048));
        p.set_frame(frame);
        p
    }

    /// Replace the contents (resetting the headroom). Panics if the frame does not fit.
    pub fn set_frame(&mut self, frame: &[u8]) {
        self.start = DEFAULT_HEADROOM;
        assert!(frame.len() <= self.buf.len() - self.start, "frame larger than buffer");
        self.buf[self.start..self.start + frame.len()].copy_from_slice(frame);
        self.len = frame.len();
    }

    /// Room for a frame after the headroom.
    pub fn capacity(&self) -> usize {
        self.buf.len() - DEFAULT_HEADROOM
    }

    /// The receive area (everything after the headroom), for a port to fill directly so a
    /// received frame is never copied before the engine sees it.
    pub fn rx_area(&mut self) -> &mut [u8] {
        &mut self.buf[DEFAULT_HEADROOM..]
    }

    /// Record that a port wrote `len` bytes into [`BufPacket::rx_area`] (resets the headroom).
    pub fn set_received(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.start = DEFAULT_HEADROOM;
        self.len = len.min(self.capacity());
    }
}

impl Packet for BufPacket {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    fn push_front(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }

    fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }
}

//! The packet buffer software ports receive into and the engine edits in place.

use sluice_dataplane::packet::{Packet, DEFAULT_HEADROOM};

/// A preallocated frame buffer with headroom in front (room for one VLAN tag). Ports
/// receive straight into the part after the headroom, so a received frame is never copied
/// before the engine sees it.
pub struct IoFrame {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
}

impl IoFrame {
    /// A buffer for frames up to `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> IoFrame {
        IoFrame { buf: vec![0; DEFAULT_HEADROOM + capacity].into_boxed_slice(), start: DEFAULT_HEADROOM, len: 0 }
    }

    /// Room for a received frame.
    pub fn capacity(&self) -> usize {
        self.buf.len() - DEFAULT_HEADROOM
    }

    /// The receive area (after the headroom), for a port to fill.
    pub(crate) fn rx_area(&mut self) -> &mut [u8] {
        &mut self.buf[DEFAULT_HEADROOM..]
    }

    /// Record that the port wrote `len` bytes into [`IoFrame::rx_area`].
    pub(crate) fn set_received(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.start = DEFAULT_HEADROOM;
        self.len = len.min(self.capacity());
    }
}

impl Packet for IoFrame {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    #[inline]
    fn push_front(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }

    #[inline]
    fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_push_and_pull() {
        let mut f = IoFrame::with_capacity(100);
        f.rx_area()[..3].copy_from_slice(&[1, 2, 3]);
        f.set_received(3);
        assert_eq!(f.data(), &[1, 2, 3]);
        assert!(f.push_front(4));
        assert_eq!(f.data().len(), 7);
        assert!(f.pull_front(5));
        assert_eq!(f.data(), &[2, 3]);
        assert!(!f.pull_front(3));
        assert!(!f.push_front(DEFAULT_HEADROOM + 2));
    }
}

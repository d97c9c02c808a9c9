//! The packet buffer software ports receive into and the engine edits in place.

/// Software ports receive straight into the dataplane's headroomed buffer
/// (`rx_area`, `set_received`), so a received frame is never
/// copied before the engine sees it, and VLAN tags can be pushed into the headroom.
pub use sluice_dataplane::packet::BufPacket as IoFrame;

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::packet::{Packet, DEFAULT_HEADROOM};

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

//! Flow lifecycle: the TCP state machine and per-state idle timeouts.
//!
//! The tracker follows what both ends say rather than validating sequence numbers: it needs
//! to know when a connection is being set up, is established, is closing, or is gone, so that
//! each phase gets an idle timeout of its own and closed connections free their NAT port
//! quickly.

use crate::flow::{Dir, FlowState};
use crate::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

const SEC: u64 = 1_000_000_000;

/// Idle timeouts per flow state, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn: u64,
    pub tcp_established: u64,
    pub tcp_fin: u64,
    /// Both ends closed, or reset: how long the flow lingers for stragglers.
    pub tcp_linger: u64,
    pub udp_new: u64,
    pub udp_replied: u64,
    pub icmp: u64,
}

impl Default for Timeouts {
    /// Appliance defaults: established TCP survives 2 h 4 min of silence (RFC 5382's floor
    /// for NAT), half-open and closing phases are short, closed flows linger 10 s.
    fn default() -> Self {
        Timeouts {
            tcp_syn: 30 * SEC,
            tcp_established: 7440 * SEC,
            tcp_fin: 120 * SEC,
            tcp_linger: 10 * SEC,
            udp_new: 30 * SEC,
            udp_replied: 120 * SEC,
            icmp: 30 * SEC,
        }
    }
}

impl Timeouts {
    #[inline]
    pub fn for_state(&self, state: FlowState) -> u64 {
        match state {
            FlowState::TcpSynSent | FlowState::TcpSynReceived => self.tcp_syn,
            FlowState::TcpEstablished => self.tcp_established,
            FlowState::TcpFinOrig | FlowState::TcpFinReply => self.tcp_fin,
            FlowState::TcpClosing | FlowState::TcpClosed => self.tcp_linger,
            FlowState::UdpNew => self.udp_new,
            FlowState::UdpReplied => self.udp_replied,
            FlowState::IcmpEcho => self.icmp,
        }
    }
}

/// True for a segment that may open a flow: SYN without ACK, RST or FIN.
#[inline]
pub fn is_opening_syn(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// True when the state has ended and a fresh SYN for the same tuple starts a new flow
/// (the client reused its port).
#[inline]
pub fn is_finished(state: FlowState) -> bool {
    matches!(state, FlowState::TcpClosing | FlowState::TcpClosed)
}

/// The next TCP state after a segment with `flags` travelling in `dir`.
#[inline]
pub fn tcp_next(state: FlowState, dir: Dir, flags: u8) -> FlowState {
    use FlowState::*;
    // Nearly every segment carries neither SYN, FIN nor RST: then the only change is the
    // handshake's last ACK. (The table below gives the same answer; a test checks it.)
    if flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 {
        return if state == TcpSynReceived && dir == Dir::Orig && flags & TCP_ACK != 0 {
            TcpEstablished
        } else {
            state
        };
    }
    tcp_next_by_table(state, dir, flags)
}

#[inline]
fn tcp_next_by_table(state: FlowState, dir: Dir, flags: u8) -> FlowState {
    use FlowState::*;
    if flags & TCP_RST != 0 {
        return TcpClosed;
    }
    let fin = flags & TCP_FIN != 0;
    match (state, dir) {
        (TcpSynSent, Dir::Reply) if flags & TCP_SYN != 0 => TcpSynReceived,
        (TcpSynReceived, Dir::Orig) if flags & TCP_ACK != 0 && flags & TCP_SYN == 0 && !fin => TcpEstablished,
        (TcpSynSent | TcpSynReceived | TcpEstablished, Dir::Orig) if fin => TcpFinOrig,
        (TcpSynSent | TcpSynReceived | TcpEstablished, Dir::Reply) if fin => TcpFinReply,
        (TcpFinOrig, Dir::Reply) if fin => TcpClosing,
        (TcpFinReply, Dir::Orig) if fin => TcpClosing,
        (s, _) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FlowState::*;

    #[test]
    fn handshake_data_and_orderly_close() {
        let mut s = TcpSynSent;
        s = tcp_next(s, Dir::Reply, TCP_SYN | TCP_ACK);
        assert_eq!(s, TcpSynReceived);
        s = tcp_next(s, Dir::Orig, TCP_ACK);
        assert_eq!(s, TcpEstablished);
        s = tcp_next(s, Dir::Reply, TCP_ACK);
        assert_eq!(s, TcpEstablished);
        s = tcp_next(s, Dir::Orig, TCP_FIN | TCP_ACK);
        assert_eq!(s, TcpFinOrig);
        s = tcp_next(s, Dir::Orig, TCP_FIN | TCP_ACK); // retransmitted FIN
        assert_eq!(s, TcpFinOrig);
        s = tcp_next(s, Dir::Reply, TCP_FIN | TCP_ACK);
        assert_eq!(s, TcpClosing);
        assert!(is_finished(s));
    }

    #[test]
    fn shortcut_for_plain_segments_agrees_with_the_table() {
        for state in FlowState::ALL {
            for dir in [Dir::Orig, Dir::Reply] {
                for flags in 0..=u8::MAX {
                    assert_eq!(
                        tcp_next(state, dir, flags),
                        tcp_next_by_table(state, dir, flags),
                        "{state:?} {dir:?} {flags:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn reset_closes_from_any_state() {
        for s in [TcpSynSent, TcpSynReceived, TcpEstablished, TcpFinOrig, TcpFinReply, TcpClosing] {
            assert_eq!(tcp_next(s, Dir::Reply, TCP_RST), TcpClosed);
            assert_eq!(tcp_next(s, Dir::Orig, TCP_RST | TCP_ACK), TcpClosed);
        }
    }

    #[test]
    fn only_a_bare_syn_opens() {
        assert!(is_opening_syn(TCP_SYN));
        assert!(!is_opening_syn(TCP_SYN | TCP_ACK));
        assert!(!is_opening_syn(TCP_ACK));
        assert!(!is_opening_syn(TCP_SYN | TCP_RST));
    }

    #[test]
    fn linger_is_shorter_than_established() {
        let t = Timeouts::default();
        assert!(t.for_state(TcpClosed) < t.for_state(TcpEstablished));
        assert_eq!(t.for_state(TcpClosing), t.tcp_linger);
    }
}

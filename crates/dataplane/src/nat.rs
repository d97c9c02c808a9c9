//! Source-NAT port allocation.
//!
//! Mappings are endpoint-dependent: a translated port only has to be unique per remote
//! endpoint, because replies are found by the full reply tuple. That lets one external
//! address carry far more than 64 K flows (what the 1 M-flow figure needs) while every
//! reply still maps back to exactly one flow. The inside source port is kept when it is free
//! (port preservation helps protocols that expect it); otherwise candidates come from a keyed
//! hash of the flow, so allocation is O(attempts) with no free-port structure to maintain:
//! the flow index itself is the record of what is taken, and ports are free again the
//! moment their flow is removed.

use crate::flow::{FlowKey, FlowTable};

/// Pick a translated port for `orig` (whose key hash is `h_orig`) on `nat_ip`; returns the
/// port and the hash of the reply key it gives, or None when `attempts` candidates are all
/// taken (counted as NAT exhaustion by the caller).
pub fn allocate_port(
    flows: &FlowTable,
    orig: &FlowKey,
    h_orig: u32,
    nat_ip: u32,
    min: u16,
    max: u16,
    attempts: u32,
) -> Option<(u16, u32)> {
    debug_assert!(min <= max && attempts > 0);
    let span = u32::from(max - min) + 1;
    for attempt in 0..attempts {
        let port = if attempt == 0 && orig.sport >= min && orig.sport <= max {
            orig.sport
        } else {
            let mixed = h_orig.wrapping_add(attempt.wrapping_mul(0x9E37_79B9)).rotate_left(attempt % 31);
            min + (mixed % span) as u16
        };
        let reply = FlowKey { src: orig.dst, dst: nat_ip, sport: orig.dport, dport: port, proto: orig.proto };
        let h = flows.hash(&reply);
        if flows.lookup(&reply, h).is_none() {
            return Some((port, h));
        }
    }
    None
}

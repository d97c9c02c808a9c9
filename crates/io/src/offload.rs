//! Finishing frames a sender's checksum offload left incomplete.
//!
//! A host stack sending through a veth (or any device with TX checksum offload) leaves the
//! TCP/UDP checksum to the device: the frame carries only the pseudo-header sum, and the
//! kernel marks it CHECKSUM_PARTIAL. A packet socket on the other end sees the frame in
//! that state (AF_PACKET reports it as `TP_STATUS_CSUMNOTREADY`). The engine updates
//! checksums incrementally, so it would forward the partial sum and the receiver would
//! drop the segment. The software port therefore computes the full checksum first.

use sluice_dataplane::checksum::{fold, pseudo_header_sum, sum16, udp_nonzero};

/// Compute the TCP or UDP checksum of an IPv4 frame (untagged or with one 802.1Q tag) from
/// scratch. Returns false, leaving the frame alone, for anything else (other protocols,
/// fragments, malformed headers: the engine judges those).
pub(crate) fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let mut l3 = 14;
    if frame.len() < l3 {
        return false;
    }
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        if frame.len() < 18 {
            return false;
        }
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if ethertype != 0x0800 || frame.len() < l3 + 20 {
        return false;
    }
    let ip = &frame[l3..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || fragmented {
        return false;
    }
    let proto = ip[9];
    let csum_at = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let l4_len = total - ihl;
    if l4_len < csum_at + 2 {
        return false;
    }
    let l4 = &mut frame[l3 + ihl..l3 + total];
    l4[csum_at..csum_at + 2].copy_from_slice(&[0, 0]);
    let mut csum = fold(sum16(l4, pseudo_header_sum(src, dst, proto, l4_len as u16)));
    if proto == 17 {
        csum = udp_nonzero(csum);
    }
    l4[csum_at..csum_at + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::testing::{verify_checksums, FrameBuilder};

    fn partial(mut frame: Vec<u8>, l3: usize, csum_at: usize) -> Vec<u8> {
        // What the sender's stack leaves: the (uncomplemented) pseudo-header sum.
        let ip = &frame[l3..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
        let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
        let p = !fold(pseudo_header_sum(src, dst, ip[9], (total - ihl) as u16));
        frame[l3 + ihl + csum_at..l3 + ihl + csum_at + 2].copy_from_slice(&p.to_be_bytes());
        frame
    }

    #[test]
    fn completes_tcp_and_udp_checksums() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tcp = FrameBuilder::tcp(a, b, 0x0a0a_0002, 0xc633_640a, 40000, 80).flags(0x02).payload(b"odd").build();
        let udp = FrameBuilder::udp(a, b, 0x0a0a_0002, 0xc633_640a, 40000, 7).payload(b"echo me").build();
        for (good, csum_at) in [(tcp, 16), (udp, 6)] {
            let mut f = partial(good.clone(), 14, csum_at);
            assert!(verify_checksums(&f).is_err(), "the partial frame is not yet valid");
            assert!(complete_l4_checksum(&mut f));
            verify_checksums(&f).expect("completed");
            assert_eq!(f, good);
        }
    }

    #[test]
    fn leaves_other_frames_alone() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut arp = FrameBuilder::arp_request(a, 0x0a0a_0002, 0x0a0a_0001).build();
        let before = arp.clone();
        assert!(!complete_l4_checksum(&mut arp));
        assert_eq!(arp, before);
        let mut short = vec![0u8; 20];
        assert!(!complete_l4_checksum(&mut short));
        let mut truncated = FrameBuilder::udp(a, b, 1, 2, 3, 4).payload(b"x").build();
        truncated.truncate(30);
        assert!(!complete_l4_checksum(&mut truncated));
    }
}

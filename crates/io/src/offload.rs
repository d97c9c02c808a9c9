//! Finishing frames a sender's checksum offload left incomplete.
//!
//! A host stack sending through a veth (or any device with TX checksum offload) leaves the
//! TCP/UDP checksum to the device: the frame carries only the pseudo-header sum, and the
//! kernel marks it CHECKSUM_PARTIAL. A packet socket on the other end sees the frame in
//! that state (AF_PACKET reports it as `TP_STATUS_CSUMNOTREADY`). The engine updates
//! checksums incrementally, so it would forward the partial sum and the receiver would
//! drop the segment. The software port therefore computes the full checksum first.

use sluice_dataplane::checksum::{fold, pseudo_header_sum, sum16, udp_nonzero};

/// Complete the TCP or UDP checksum of a frame if its checksum field holds exactly what a
/// sender's checksum offload leaves there (the folded pseudo-header sum), and say whether it
/// did. For ports that, unlike a packet socket, are not told which frames those are (AF_XDP).
///
/// A frame whose checksum was complete is unchanged by this: if its field happens to equal
/// the pseudo-header sum, computing the checksum again writes the same value. Only a corrupt
/// frame whose field happens to match (one in 65 536) is "repaired", which the engine would
/// otherwise have forwarded with its bad checksum for the receiver to drop anyway.
/// Costs a few dozen instructions per frame; the full sum only for frames that match.
pub(crate) fn complete_if_partial(frame: &mut [u8]) -> bool {
    let l3 = match frame.get(12..14) {
        Some([0x08, 0x00]) => 14,
        Some([0x81, 0x00] | [0x88, 0xa8]) if frame.get(16..18) == Some(&[0x08, 0x00]) => 18,
        _ => return false,
    };
    let Some(ip) = frame.get(l3..l3 + 20) else { return false };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let csum_at = match ip[9] {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl + csum_at + 2 || l3 + total > frame.len() {
        return false;
    }
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let partial = !fold(pseudo_header_sum(src, dst, ip[9], (total - ihl) as u16));
    let at = l3 + ihl + csum_at;
    if u16::from_be_bytes([frame[at], frame[at + 1]]) != partial {
        return false;
    }
    complete_l4_checksum(frame)
}

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
    fn completes_only_frames_that_hold_the_pseudo_header_sum() {
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tcp = FrameBuilder::tcp(a, b, 0x0a0a_0002, 0xc633_640a, 40000, 80).flags(0x10).payload(b"data").build();
        let udp = FrameBuilder::udp(a, b, 0x0a0a_0002, 0xc633_640a, 40000, 53).payload(b"query").build();
        for (good, csum_at) in [(tcp, 16), (udp, 6)] {
            let mut f = partial(good.clone(), 14, csum_at);
            assert!(complete_if_partial(&mut f), "a partial checksum is completed");
            assert_eq!(f, good);
            // A complete checksum is left as it is.
            let mut same = good.clone();
            assert!(!complete_if_partial(&mut same));
            assert_eq!(same, good);
            // A corrupt checksum that is not the pseudo-header sum stays corrupt.
            let mut bad = good.clone();
            bad[34 + csum_at] ^= 0x55;
            assert!(!complete_if_partial(&mut bad));
            assert!(verify_checksums(&bad).is_err());
        }
        let mut arp = FrameBuilder::arp_request(a, 0x0a0a_0002, 0x0a0a_0001).build();
        assert!(!complete_if_partial(&mut arp));
        let mut short = vec![0x08u8; 13];
        assert!(!complete_if_partial(&mut short));
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

//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Hot-path code: every function is `#[inline]`, allocation-free and branch-light.
//!
//! Conventions:
//! - A *sum* (`u32`) is an unfolded one's-complement accumulator. It can be fed back as the
//!   `initial` of another [`sum16`] call to checksum data in pieces; every piece except the last
//!   must have an even length (an odd piece would shift the following bytes by one).
//! - A *checksum* (`u16`) is what goes on the wire: the complement of the folded sum.
//! - All 16/32-bit values are the numeric values of big-endian wire fields (read them with
//!   `u16::from_be_bytes`), so an IPv4 address is its host-order `u32`.
//!
//! # UDP
//! UDP has two special rules that TCP, ICMP and the IPv4 header do not have:
//! - a transmitted checksum of 0 means "no checksum" and must stay 0 when other fields change;
//! - a computed checksum of 0 is transmitted as 0xFFFF (the other one's-complement zero).
//!
//! Use [`update_udp16`]/[`update_udp32`] for UDP; when computing a UDP checksum from scratch use
//! [`udp_nonzero`] on the result of [`fold`].

/// One's-complement accumulation of `data` taken as big-endian 16-bit words, added to
/// `initial`. An odd trailing byte is padded with a zero byte (RFC 1071).
///
/// The result is congruent (mod 0xFFFF) to the true one's-complement sum; pass it to [`fold`].
#[inline]
pub fn sum16(data: &[u8], initial: u32) -> u32 {
    // Because 2^16 == 1 (mod 0xFFFF), adding big-endian 32-bit words into a wide accumulator
    // and folding at the end gives the same one's-complement sum as adding 16-bit words.
    // A u64 cannot overflow here for any slice shorter than 16 GiB.
    let mut acc = u64::from(initial);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    // Fold 64 -> 32 bits with end-around carry (two rounds always suffice).
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    acc = (acc & 0xFFFF_FFFF) + (acc >> 32);
    debug_assert!(acc <= 0xFFFF_FFFF);
    acc as u32
}

/// Folds a sum to 16 bits with end-around carry and returns its complement: the checksum.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let mut s = (sum & 0xFFFF) + (sum >> 16);
    s = (s & 0xFFFF) + (s >> 16);
    debug_assert!(s <= 0xFFFF);
    !(s as u16)
}

/// The Internet checksum of `data` (the checksum field inside `data` must be zero).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

/// Sum of the IPv4 pseudo header used by TCP and UDP: addresses (host order), protocol and the
/// L4 length (header + payload). Pass it as `initial` to [`sum16`] over the L4 segment.
#[inline]
pub fn pseudo_header_sum(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + u32::from(proto) + u32::from(len)
}

/// `true` if a packet whose checksummed region sums (with the stored checksum in place) to
/// `sum` is intact.
#[inline]
pub fn is_valid(sum: u32) -> bool {
    fold(sum) == 0
}

/// Maps a computed UDP checksum of 0 to 0xFFFF (RFC 768: 0 on the wire means "none").
#[inline]
pub fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 {
        0xFFFF
    } else {
        csum
    }
}

/// Incremental update (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`) of checksum `csum` after a
/// 16-bit word of the checksummed region changed from `old` to `new`. The word must sit at an
/// even offset of the checksummed region (all IPv4/TCP/UDP/ICMP header fields do).
///
/// The result may be 0x0000 where a full recomputation gives 0xFFFF or vice versa; both are
/// one's-complement zero and verify the same. Not for UDP: see [`update_udp16`].
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    fold(s)
}

/// [`update16`] for a 32-bit field (e.g. an IPv4 address) at an even offset.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum) + u32::from(!(old >> 16) as u16) + u32::from(!(old as u16)) + (new >> 16) + (new & 0xFFFF);
    fold(s)
}

/// The change of a 16-bit field from `old` to `new`, as an unfolded one's-complement sum
/// (`~m + m'` of RFC 1624 eqn. 3), for [`apply_delta`]. Deltas add: several changed fields
/// of one region update its checksum with a single fold, and one field shared by two
/// checksums (an address in the IPv4 header and in the TCP pseudo-header) is computed once.
#[inline]
pub fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// [`delta16`] for a 32-bit field (e.g. an IPv4 address) at an even offset.
#[inline]
pub fn delta32(old: u32, new: u32) -> u32 {
    delta16((old >> 16) as u16, (new >> 16) as u16) + delta16(old as u16, new as u16)
}

/// Checksum `csum` updated by the sum of deltas `delta` (at most a few thousand of them can
/// be added without overflowing the `u32`). Same result as chained [`update16`] /
/// [`update32`] calls, up to the two forms of one's-complement zero. Not for UDP: see
/// [`apply_udp_delta`].
#[inline]
pub fn apply_delta(csum: u16, delta: u32) -> u16 {
    fold(u32::from(!csum) + delta)
}

/// [`apply_delta`] for a UDP checksum: 0 ("no checksum") stays 0; a result of 0 becomes
/// 0xFFFF.
#[inline]
pub fn apply_udp_delta(csum: u16, delta: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(apply_delta(csum, delta))
}

/// [`update16`] for a UDP checksum: 0 ("no checksum") stays 0; a result of 0 becomes 0xFFFF.
#[inline]
pub fn update_udp16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(update16(csum, old, new))
}

/// [`update32`] for a UDP checksum: 0 ("no checksum") stays 0; a result of 0 becomes 0xFFFF.
#[inline]
pub fn update_udp32(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    udp_nonzero(update32(csum, old, new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward reference: 16-bit words, end-around carry after every add.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]);
            let lo = if i + 1 < data.len() { u32::from(data[i + 1]) } else { 0 };
            s += (hi << 8) | lo;
            s = (s & 0xFFFF) + (s >> 16);
            i += 2;
        }
        !(s as u16)
    }

    fn equivalent(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xFFFF) || (a == 0xFFFF && b == 0)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum16(&data, 0)), !0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn ipv4_header_example() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(is_valid(sum16(&hdr, 0)));
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn odd_length_and_pieces() {
        assert_eq!(checksum(&[0xab]), !0xab00);
        assert_eq!(checksum(&[]), 0xFFFF);
        let data: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        assert_eq!(checksum(&data), reference(&data));
        // Even-length pieces chain through `initial`.
        let s = sum16(&data[..600], 0);
        assert_eq!(fold(sum16(&data[600..], s)), reference(&data));
    }

    #[test]
    fn all_ones_data_does_not_overflow() {
        let data = vec![0xFFu8; 65_536];
        assert_eq!(checksum(&data), reference(&data));
        // A maximal `initial` is one's-complement zero: it must not change the result.
        assert!(equivalent(fold(sum16(&data, u32::MAX)), checksum(&data)));
    }

    #[test]
    fn pseudo_header() {
        let src: u32 = 0xc0a8_0001;
        let dst: u32 = 0x0a00_0002;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.to_be_bytes());
        bytes.extend_from_slice(&dst.to_be_bytes());
        bytes.extend_from_slice(&[0, 6]);
        bytes.extend_from_slice(&40u16.to_be_bytes());
        assert_eq!(fold(pseudo_header_sum(src, dst, 6, 40)), reference(&bytes));
    }

    #[test]
    fn udp_rules() {
        assert_eq!(update_udp16(0, 1, 2), 0);
        assert_eq!(update_udp32(0, 1, 2), 0);
        assert_eq!(udp_nonzero(0), 0xFFFF);
        // Find a change that makes update16 return 0: the UDP variant must send 0xFFFF.
        let c = 0x1234;
        for new in 0..=u16::MAX {
            if update16(c, 0, new) == 0 {
                assert_eq!(update_udp16(c, 0, new), 0xFFFF);
                return;
            }
        }
        panic!("no zero result found");
    }

    /// Packet of `len` bytes with the checksum at `csum_at` and a changed field at `field_at`.
    fn packet_and_offsets() -> impl Strategy<Value = (Vec<u8>, usize, usize)> {
        (8usize..200)
            .prop_flat_map(|len| {
                let words = len / 2;
                (proptest::collection::vec(any::<u8>(), len), 0..words, 0..words - 1)
            })
            .prop_map(|(data, c, f)| {
                // Two distinct even offsets, each with room for a 32-bit field after f.
                let c_off = c * 2;
                let f_off = if f * 2 >= c_off { f * 2 + 2 } else { f * 2 };
                (data, c_off, f_off)
            })
    }

    fn store(data: &mut [u8], at: usize, v: u16) {
        data[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn load(data: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([data[at], data[at + 1]])
    }

    fn full(data: &mut [u8], csum_at: usize) -> u16 {
        store(data, csum_at, 0);
        let c = checksum(data);
        assert_eq!(c, reference(data));
        c
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn incremental16_matches_full((mut data, c, f) in packet_and_offsets(),
                                      new in any::<u16>(), udp in any::<bool>()) {
            let orig = full(&mut data, c);
            let stored = if udp { udp_nonzero(orig) } else { orig };
            store(&mut data, c, stored);
            let old = load(&data, f);
            store(&mut data, f, new);
            let inc = if udp { update_udp16(stored, old, new) } else { update16(stored, old, new) };
            store(&mut data, c, inc);
            // (An all-zero region cannot verify with either zero; real headers never are.)
            if data.iter().any(|&b| b != 0) {
                prop_assert!(is_valid(sum16(&data, 0)), "incremental checksum does not verify");
            }
            let recomputed = full(&mut data, c);
            prop_assert!(equivalent(inc, recomputed), "inc {:#x} full {:#x}", inc, recomputed);
            if udp {
                prop_assert_ne!(inc, 0);
            }
        }

        #[test]
        fn incremental32_matches_full((mut data, c, f) in packet_and_offsets(),
                                      new in any::<u32>(), udp in any::<bool>()) {
            // A 32-bit field needs 4 bytes that do not overlap the checksum.
            prop_assume!(f + 4 <= data.len() && (f + 4 <= c || c + 2 <= f));
            let orig = full(&mut data, c);
            let stored = if udp { udp_nonzero(orig) } else { orig };
            store(&mut data, c, stored);
            let old = u32::from_be_bytes([data[f], data[f + 1], data[f + 2], data[f + 3]]);
            data[f..f + 4].copy_from_slice(&new.to_be_bytes());
            let inc = if udp { update_udp32(stored, old, new) } else { update32(stored, old, new) };
            store(&mut data, c, inc);
            if data.iter().any(|&b| b != 0) {
                prop_assert!(is_valid(sum16(&data, 0)), "incremental checksum does not verify");
            }
            let recomputed = full(&mut data, c);
            prop_assert!(equivalent(inc, recomputed), "inc {:#x} full {:#x}", inc, recomputed);
        }

        #[test]
        fn udp_zero_checksum_is_preserved(old in any::<u32>(), new in any::<u32>()) {
            prop_assert_eq!(update_udp32(0, old, new), 0);
            prop_assert_eq!(update_udp16(0, old as u16, new as u16), 0);
        }

        /// Several fields changed at once and applied as one summed delta give the checksum
        /// a full recomputation gives (up to the form of zero), for UDP too.
        #[test]
        fn summed_deltas_match_full((mut data, c, _f) in packet_and_offsets(),
                                    edits in proptest::collection::vec((any::<usize>(), any::<u16>()), 1..8),
                                    udp in any::<bool>()) {
            let words = data.len() / 2;
            let orig = full(&mut data, c);
            let stored = if udp { udp_nonzero(orig) } else { orig };
            store(&mut data, c, stored);
            let mut delta = 0;
            for (w, v) in edits {
                let at = (w % words) * 2;
                if at == c { continue; }
                delta += delta16(load(&data, at), v);
                store(&mut data, at, v);
            }
            let inc = if udp { apply_udp_delta(stored, delta) } else { apply_delta(stored, delta) };
            store(&mut data, c, inc);
            if data.iter().any(|&b| b != 0) {
                prop_assert!(is_valid(sum16(&data, 0)), "summed delta does not verify");
            }
            let recomputed = full(&mut data, c);
            prop_assert!(equivalent(inc, recomputed), "inc {:#x} full {:#x}", inc, recomputed);
            if udp {
                prop_assert_ne!(inc, 0);
            }
        }

        #[test]
        fn delta32_is_two_delta16s(old in any::<u32>(), new in any::<u32>(), csum in any::<u16>()) {
            prop_assert_eq!(apply_delta(csum, delta32(old, new)), update32(csum, old, new));
            prop_assert_eq!(apply_udp_delta(0, delta32(old, new)), 0);
        }

        #[test]
        fn chained_updates_stay_valid((mut data, c, _f) in packet_and_offsets(),
                                      edits in proptest::collection::vec((any::<usize>(), any::<u16>()), 1..20)) {
            let words = data.len() / 2;
            let mut csum = full(&mut data, c);
            store(&mut data, c, csum);
            for (w, v) in edits {
                let at = (w % words) * 2;
                if at == c { continue; }
                let old = load(&data, at);
                store(&mut data, at, v);
                csum = update16(csum, old, v);
                store(&mut data, c, csum);
            }
            if data.iter().any(|&b| b != 0) {
                prop_assert!(is_valid(sum16(&data, 0)));
            }
        }
    }
}

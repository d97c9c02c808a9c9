use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

const S: u64 = 1_000_000_000;

fn small() -> NeighborConfig {
    NeighborConfig {
        capacity: 4,
        pending_per_neighbor: 3,
        pending_total: 8,
        max_frame_len: 64,
        retry_interval_ns: S,
        max_probes: 3,
        reachable_ns: 30 * S,
        failed_hold_ns: 3 * S,
        refresh_before_ns: 5 * S,
        poll_budget: 3,
        hash_seed: 7,
    }
}

#[test]
fn index_survives_collisions_and_removal() {
    // Many addresses through a small table: insert/remove in mixed order, check lookups.
    let mut c = NeighborCache::new(NeighborConfig { capacity: 64, ..small() });
    let ips: Vec<u32> = (0..64u32).map(|i| 0x0A00_0000 | (i * 97)).collect();
    for (n, &ip) in ips.iter().enumerate() {
        c.learn(ip, [n as u8; 6], n as u64);
    }
    c.check_invariants();
    // Evict by learning new ones: the oldest go first.
    for (n, ip) in (1000..1032u32).enumerate() {
        c.learn(ip, [0xEE; 6], 100 + n as u64);
    }
    c.check_invariants();
    for (n, &ip) in ips.iter().enumerate() {
        assert_eq!(c.lookup(ip, 200).is_some(), n >= 32, "ip #{n}");
    }
    assert_eq!(c.stats().evicted, 32);
}

proptest! {
    #[test]
    fn index_matches_a_map(
        hash_seed in any::<u64>(),
        ops in proptest::collection::vec((any::<bool>(), 0..48u32), 1..200),
    ) {
        // Learned entries are only removed by eviction (oldest first) or failure; drive
        // both through the public operations and compare membership with a model.
        let cfg = NeighborConfig { capacity: 16, hash_seed, ..small() };
        let mut c = NeighborCache::new(cfg);
        let mut order: std::collections::VecDeque<u32> = Default::default();
        for (t, (other_mac, ip)) in ops.into_iter().enumerate() {
            let ip = ip.wrapping_mul(0x0101_0101);
            let now = t as u64;
            if order.contains(&ip) {
                order.retain(|&x| x != ip);
            } else if order.len() == 16 {
                order.pop_front();
            }
            order.push_back(ip);
            if other_mac {
                c.learn(ip, [1; 6], now);
            } else {
                c.learn(ip, [2; 6], now);
                prop_assert_eq!(c.lookup(ip, now), Some([2; 6]));
            }
            c.check_invariants();
            for x in 0..48u32 {
                let x = x.wrapping_mul(0x0101_0101);
                prop_assert_eq!(c.find(x).is_some(), order.contains(&x));
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Hold(u8, u8),
    Learn(u8, u8),
    Update(u8, u8),
    Lookup(u8),
    Poll,
    Take,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8u8, 0..80u8).prop_map(|(ip, len)| Op::Hold(ip, len)),
        2 => (0..8u8, 0..3u8).prop_map(|(ip, mac)| Op::Learn(ip, mac)),
        1 => (0..8u8, 0..3u8).prop_map(|(ip, mac)| Op::Update(ip, mac)),
        2 => (0..8u8).prop_map(Op::Lookup),
        3 => Just(Op::Poll),
        2 => Just(Op::Take),
        3 => prop_oneof![0..S / 2, 0..4 * S, 0..40 * S].prop_map(Op::Advance),
    ]
}

/// (id, ip, released?) of every frame in the store, read from the frame bytes.
fn stored(c: &NeighborCache) -> Vec<(u32, u32, bool)> {
    let read = |s: u32| {
        let start = s as usize * c.cfg.max_frame_len;
        let f = &c.frames[start..start + 8];
        (u32::from_be_bytes(f[0..4].try_into().unwrap()), u32::from_be_bytes(f[4..8].try_into().unwrap()))
    };
    let mut out = Vec::new();
    for e in &c.entries {
        let mut s = e.q_head;
        while s != NIL {
            let (id, ip) = read(s);
            assert_eq!(ip, e.ip, "frame queued on the wrong entry");
            out.push((id, ip, false));
            s = c.slots[s as usize].next;
        }
    }
    let mut s = c.released.head;
    while s != NIL {
        let (id, ip) = read(s);
        assert_eq!(ip, c.slots[s as usize].ip, "released frame has the wrong address");
        out.push((id, ip, true));
        s = c.slots[s as usize].next;
    }
    out
}

/// The test's record of frames.
#[derive(Default)]
struct Model {
    /// id -> ip of frames held and not yet taken or dropped.
    outstanding: HashMap<u32, u32>,
    /// id -> MAC it was released with (set when it first shows up released).
    release_mac: HashMap<u32, [u8; 6]>,
    taken: HashSet<u32>,
    last_taken: HashMap<u32, u32>,
    vanished: u64,
    mac_of: HashMap<u32, [u8; 6]>,
}

impl Model {
    /// Reconciles with the cache after an operation.
    fn sync(&mut self, c: &NeighborCache) {
        let stored = stored(c);
        let mut present = HashSet::new();
        for &(id, ip, released) in &stored {
            assert_eq!(self.outstanding.get(&id), Some(&ip), "frame {id} unknown or already gone");
            assert!(present.insert(id), "frame {id} stored twice");
            if released && !self.release_mac.contains_key(&id) {
                self.release_mac.insert(id, self.mac_of[&ip]);
            }
        }
        let gone: Vec<u32> = self.outstanding.keys().filter(|id| !present.contains(id)).copied().collect();
        for id in gone {
            // Frames leave the store only through take_released (handled there) or a drop.
            assert!(!self.release_mac.contains_key(&id), "released frame {id} vanished");
            self.outstanding.remove(&id);
            self.vanished += 1;
        }
    }

    fn taken(&mut self, ip: u32, mac: [u8; 6], frame: &mut [u8]) {
        let id = u32::from_be_bytes(frame[0..4].try_into().unwrap());
        assert_eq!(u32::from_be_bytes(frame[4..8].try_into().unwrap()), ip);
        assert_eq!(self.outstanding.remove(&id), Some(ip), "frame {id} released twice or unknown");
        assert_eq!(self.release_mac.remove(&id), Some(mac), "frame {id} released with the wrong MAC");
        assert!(self.taken.insert(id));
        if let Some(prev) = self.last_taken.insert(ip, id) {
            assert!(prev < id, "frames of one neighbour out of order");
        }
        frame.fill(0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_keep_bounds_and_lose_nothing(
        ops in proptest::collection::vec(op(), 1..300),
        hash_seed in any::<u64>(),
    ) {
        let cfg = NeighborConfig { hash_seed, ..small() };
        let mut c = NeighborCache::new(cfg.clone());
        let mut m = Model::default();
        let mut now = 0u64;
        let mut next_id = 0u32;
        let mut dropped = 0u64;
        for op in ops {
            match op {
                Op::Hold(ip, len) => {
                    let ip = 0x0A00_0000 + u32::from(ip);
                    let mut frame = vec![0xCC; usize::from(len).max(8)];
                    frame[0..4].copy_from_slice(&next_id.to_be_bytes());
                    frame[4..8].copy_from_slice(&ip.to_be_bytes());
                    match c.hold(ip, &frame, now) {
                        Hold::Queued { .. } => {
                            m.outstanding.insert(next_id, ip);
                        }
                        Hold::DroppedTooBig => prop_assert!(frame.len() > cfg.max_frame_len),
                        Hold::DroppedFull | Hold::DroppedFailed => {}
                    }
                    next_id += 1;
                }
                Op::Learn(ip, mac) => {
                    let ip = 0x0A00_0000 + u32::from(ip);
                    m.mac_of.insert(ip, [mac; 6]);
                    c.learn(ip, [mac; 6], now);
                }
                Op::Update(ip, mac) => {
                    let ip = 0x0A00_0000 + u32::from(ip);
                    let existed = c.find(ip).is_some();
                    if existed {
                        m.mac_of.insert(ip, [mac; 6]);
                    }
                    prop_assert_eq!(c.update_existing(ip, [mac; 6], now), existed);
                }
                Op::Lookup(ip) => {
                    let ip = 0x0A00_0000 + u32::from(ip);
                    if let Some(mac) = c.lookup(ip, now) {
                        prop_assert_eq!(Some(&mac), m.mac_of.get(&ip));
                    }
                }
                Op::Poll => {
                    let mut probes = 0;
                    dropped += c.poll(now, |_| probes += 1) as u64;
                    prop_assert!(probes <= cfg.poll_budget);
                }
                Op::Take => c.take_released(|ip, mac, f| m.taken(ip, mac, f)),
                Op::Advance(dt) => now += dt,
            }
            c.check_invariants();
            m.sync(&c);
            let st = c.stats();
            prop_assert!(st.entries <= cfg.capacity);
            prop_assert!(st.pending + st.releasable <= cfg.pending_total);
            prop_assert_eq!(st.dropped_unresolved, dropped);
            prop_assert_eq!(m.vanished, dropped, "frames vanished without being counted");
            prop_assert_eq!(
                st.held,
                st.released + st.releasable as u64 + st.pending as u64 + st.dropped_unresolved
            );
            prop_assert_eq!(m.outstanding.len(), st.pending + st.releasable);
        }
        // Drain: everything still held is eventually released or dropped.
        for _ in 0..100 {
            now += S;
            dropped += c.poll(now, |_| {}) as u64;
            m.sync(&c);
        }
        c.take_released(|ip, mac, f| m.taken(ip, mac, f));
        c.check_invariants();
        m.sync(&c);
        let st = c.stats();
        prop_assert_eq!(st.pending + st.releasable, 0);
        prop_assert!(m.outstanding.is_empty());
        prop_assert_eq!(st.held, st.released + st.dropped_unresolved);
        prop_assert_eq!(st.dropped_unresolved, dropped);
        prop_assert_eq!(m.vanished, dropped);
    }
}

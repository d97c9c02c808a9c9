//! Behaviour of the ARP neighbour cache through its public API.

use sluice_dataplane::neighbor::*;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const A: u32 = 0x0A0A_0005; // 10.10.0.5
const B: u32 = 0x0A0A_0006;
const C: u32 = 0x0A0A_0007;
const D: u32 = 0x0A0A_0008;
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 5];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 6];

fn cfg() -> NeighborConfig {
    NeighborConfig {
        capacity: 3,
        pending_per_neighbor: 4,
        pending_total: 6,
        max_frame_len: 128,
        retry_interval_ns: S,
        max_probes: 3,
        reachable_ns: 300 * S,
        failed_hold_ns: 3 * S,
        refresh_before_ns: 5 * S,
        poll_budget: 16,
        hash_seed: 0x1234_5678,
    }
}

fn frame(tag: u8, len: usize) -> Vec<u8> {
    vec![tag; len]
}

fn poll(c: &mut NeighborCache, now: u64) -> (Vec<u32>, usize) {
    let mut probes = Vec::new();
    let dropped = c.poll(now, |ip| probes.push(ip));
    (probes, dropped)
}

fn released(c: &mut NeighborCache) -> Vec<(u32, [u8; 6], Vec<u8>)> {
    let mut out = Vec::new();
    c.take_released(|ip, mac, f| out.push((ip, mac, f.to_vec())));
    out
}

fn state_of(c: &NeighborCache, ip: u32) -> Option<(Option<[u8; 6]>, NeighborState)> {
    let mut found = None;
    c.for_each(|i, mac, st| {
        if i == ip {
            found = Some((mac, st));
        }
    });
    found
}

#[test]
fn defaults_are_sane() {
    let d = NeighborConfig::default();
    assert_eq!((d.pending_per_neighbor, d.pending_total, d.max_frame_len), (4, 256, 2048));
    assert_eq!((d.retry_interval_ns, d.max_probes, d.reachable_ns), (S, 3, 300 * S));
    let c = NeighborCache::new(d);
    assert_eq!(c.stats(), NeighborStats::default());
}

#[test]
fn first_hold_probes_second_does_not() {
    let mut c = NeighborCache::new(cfg());
    assert_eq!(c.lookup(A, 0), None);
    assert_eq!(c.hold(A, &frame(1, 60), 0), Hold::Queued { send_probe: true });
    assert_eq!(c.hold(A, &frame(2, 60), 10 * MS), Hold::Queued { send_probe: false });
    assert_eq!(c.lookup(A, 20 * MS), None);
    assert_eq!(state_of(&c, A), Some((None, NeighborState::Incomplete)));
    let st = c.stats();
    assert_eq!((st.entries, st.pending, st.held, st.probes_sent), (1, 2, 2, 1));
    // Nothing is due before the retry interval.
    assert_eq!(poll(&mut c, 999 * MS), (vec![], 0));
}

#[test]
fn learn_releases_frames_in_order_with_the_mac() {
    let mut c = NeighborCache::new(cfg());
    for (i, ip) in [(1, A), (2, B), (3, A), (4, A), (5, B)] {
        assert!(matches!(c.hold(ip, &frame(i, 40 + usize::from(i)), 0), Hold::Queued { .. }));
    }
    assert!(released(&mut c).is_empty(), "nothing resolved yet");
    c.learn(A, MAC_A, 5 * MS);
    assert_eq!(c.stats().releasable, 3);
    let out = released(&mut c);
    assert_eq!(out.len(), 3);
    for ((ip, mac, f), tag) in out.iter().zip([1u8, 3, 4]) {
        assert_eq!((*ip, *mac), (A, MAC_A));
        assert_eq!(f, &frame(tag, 40 + usize::from(tag)), "frame content and length kept");
    }
    assert!(released(&mut c).is_empty(), "released exactly once");
    assert_eq!(c.lookup(A, 6 * MS), Some(MAC_A));
    assert_eq!(state_of(&c, A), Some((Some(MAC_A), NeighborState::Reachable)));
    c.learn(B, MAC_B, 7 * MS);
    let out = released(&mut c);
    assert_eq!(out.iter().map(|(ip, _, f)| (*ip, f[0])).collect::<Vec<_>>(), vec![(B, 2), (B, 5)]);
    let st = c.stats();
    assert_eq!((st.resolved, st.released, st.pending, st.releasable), (2, 5, 0, 0));
    // The callback may patch the frame in place.
    assert_eq!(c.hold(A, &frame(9, 60), 8 * MS), Hold::Queued { send_probe: false });
    c.take_released(|_, mac, f| f[..6].copy_from_slice(&mac));
}

#[test]
fn per_neighbour_and_total_caps() {
    let mut c = NeighborCache::new(cfg()); // 4 per neighbour, 6 in all
    for i in 0..4 {
        assert!(matches!(c.hold(A, &frame(i, 60), 0), Hold::Queued { .. }));
    }
    assert_eq!(c.hold(A, &frame(4, 60), 0), Hold::DroppedFull);
    assert!(matches!(c.hold(B, &frame(5, 60), 0), Hold::Queued { .. }));
    assert!(matches!(c.hold(B, &frame(6, 60), 0), Hold::Queued { .. }));
    // Total reached: even a new neighbour's first frame is refused...
    assert_eq!(c.hold(C, &frame(7, 60), 0), Hold::DroppedFull);
    let st = c.stats();
    assert_eq!((st.pending, st.dropped_full, st.held), (6, 2, 6));
    // ...but its resolution still starts: the next poll probes it.
    let (probes, _) = poll(&mut c, 0);
    assert_eq!(probes, vec![C]);
    // Released-but-not-taken frames still occupy the store.
    c.learn(A, MAC_A, MS);
    assert_eq!(c.hold(B, &frame(8, 60), MS), Hold::DroppedFull);
    assert_eq!(released(&mut c).len(), 4);
    assert!(matches!(c.hold(B, &frame(8, 60), MS), Hold::Queued { .. }));
}

#[test]
fn too_big_frames_are_refused_without_side_effects() {
    let mut c = NeighborCache::new(cfg());
    assert_eq!(c.hold(A, &frame(1, 129), 0), Hold::DroppedTooBig);
    assert_eq!(c.stats().entries, 0);
    assert_eq!(c.stats().dropped_too_big, 1);
    assert_eq!(c.hold(A, &frame(1, 128), 0), Hold::Queued { send_probe: true });
}

#[test]
fn retries_then_gives_up_then_holds_off_then_reprobes() {
    let mut c = NeighborCache::new(cfg());
    assert_eq!(c.hold(A, &frame(1, 60), 0), Hold::Queued { send_probe: true }); // probe 1
    assert_eq!(c.hold(A, &frame(2, 60), 0), Hold::Queued { send_probe: false });
    assert_eq!(poll(&mut c, S - 1), (vec![], 0));
    assert_eq!(poll(&mut c, S), (vec![A], 0)); // probe 2
    assert_eq!(poll(&mut c, S + 500 * MS), (vec![], 0));
    assert_eq!(poll(&mut c, 2 * S), (vec![A], 0)); // probe 3
    assert_eq!(c.hold(A, &frame(3, 60), 2 * S + 1), Hold::Queued { send_probe: false });
    // One interval after the last probe: give up, dropping the three frames.
    assert_eq!(poll(&mut c, 3 * S), (vec![], 3));
    assert_eq!(state_of(&c, A), Some((None, NeighborState::Failed)));
    let st = c.stats();
    assert_eq!((st.probes_sent, st.failed, st.dropped_unresolved, st.pending), (3, 1, 3, 0));
    // Held off for failed_hold_ns: refused, no probes.
    assert_eq!(c.hold(A, &frame(4, 60), 4 * S), Hold::DroppedFailed);
    assert_eq!(poll(&mut c, 5 * S), (vec![], 0));
    assert_eq!(c.stats().dropped_failed, 1);
    // After the hold period: resolving starts again.
    assert_eq!(c.hold(A, &frame(5, 60), 6 * S), Hold::Queued { send_probe: true });
    assert_eq!(poll(&mut c, 7 * S), (vec![A], 0));
    // And an answer ends it.
    c.learn(A, MAC_A, 7 * S + MS);
    assert_eq!(released(&mut c).len(), 1);
    assert_eq!(c.stats().held, c.stats().released + c.stats().dropped_unresolved);
}

#[test]
fn hold_sends_the_retry_when_due_and_poll_does_not_repeat_it() {
    let mut c = NeighborCache::new(cfg());
    assert_eq!(c.hold(A, &frame(1, 60), 0), Hold::Queued { send_probe: true });
    assert_eq!(c.hold(A, &frame(2, 60), S), Hold::Queued { send_probe: true });
    assert_eq!(poll(&mut c, S), (vec![], 0));
    assert_eq!(poll(&mut c, 2 * S), (vec![A], 0));
    // Probes exhausted: holds never ask for more.
    assert_eq!(c.hold(A, &frame(3, 60), 3 * S), Hold::Queued { send_probe: false });
    assert_eq!(c.stats().probes_sent, 3);
    assert_eq!(poll(&mut c, 3 * S), (vec![], 3));
}

#[test]
fn failed_entries_are_freed_after_the_hold_period() {
    let mut c = NeighborCache::new(cfg());
    c.hold(A, &frame(1, 60), 0);
    for t in 1..=3 {
        poll(&mut c, t * S);
    }
    assert_eq!(c.stats().entries, 1);
    poll(&mut c, 6 * S);
    assert_eq!(c.stats().entries, 0);
    assert_eq!(state_of(&c, A), None);
    assert_eq!(c.hold(A, &frame(1, 60), 6 * S), Hold::Queued { send_probe: true });
}

#[test]
fn learn_during_failed_period_makes_it_reachable() {
    let mut c = NeighborCache::new(cfg());
    c.hold(A, &frame(1, 60), 0);
    for t in 1..=3 {
        poll(&mut c, t * S);
    }
    c.learn(A, MAC_A, 3 * S + 1);
    assert_eq!(c.lookup(A, 3 * S + 2), Some(MAC_A));
    assert!(released(&mut c).is_empty(), "the dropped frame stays dropped");
}

#[test]
fn reachable_expires() {
    let mut c = NeighborCache::new(NeighborConfig { refresh_before_ns: 0, ..cfg() });
    c.learn(A, MAC_A, 10 * S);
    assert_eq!(c.lookup(A, 310 * S), Some(MAC_A));
    assert_eq!(c.lookup(A, 310 * S + 1), None);
    assert_eq!(state_of(&c, A), Some((Some(MAC_A), NeighborState::Stale)));
    // The next frame re-resolves.
    assert_eq!(c.hold(A, &frame(1, 60), 311 * S), Hold::Queued { send_probe: true });
    assert_eq!(state_of(&c, A), Some((None, NeighborState::Incomplete)));
    c.learn(A, MAC_B, 311 * S + MS);
    assert_eq!(released(&mut c)[0].1, MAC_B);
    assert_eq!(c.lookup(A, 312 * S), Some(MAC_B));
    // A learn refreshes the confirmation time.
    c.learn(A, MAC_B, 600 * S);
    assert_eq!(c.lookup(A, 890 * S), Some(MAC_B));
}

#[test]
fn busy_neighbours_are_refreshed_before_expiry() {
    let mut c = NeighborCache::new(cfg()); // reachable 300 s, refresh in the last 5 s
    c.learn(A, MAC_A, 0);
    c.learn(B, MAC_B, 0);
    assert_eq!(c.lookup(A, 294 * S), Some(MAC_A));
    assert_eq!(poll(&mut c, 294 * S), (vec![], 0), "not yet in the refresh window");
    assert_eq!(c.lookup(A, 296 * S), Some(MAC_A));
    assert_eq!(c.lookup(A, 296 * S + 1), Some(MAC_A));
    assert_eq!(poll(&mut c, 296 * S + 2), (vec![A], 0), "one refresh probe, for the used entry only");
    assert_eq!(c.lookup(A, 297 * S), Some(MAC_A));
    assert_eq!(poll(&mut c, 297 * S), (vec![], 0), "not repeated");
    c.learn(A, MAC_A, 297 * S + MS); // the answer
    assert_eq!(c.lookup(A, 400 * S), Some(MAC_A));
    assert_eq!(c.lookup(B, 400 * S), None);
    assert_eq!(c.stats().probes_sent, 1);
}

#[test]
fn full_table_evicts_the_least_recently_confirmed_reachable_entry() {
    let mut c = NeighborCache::new(cfg()); // capacity 3
    c.learn(A, MAC_A, 1);
    c.learn(B, MAC_B, 2);
    c.hold(C, &frame(1, 60), 3); // Incomplete with a frame: never evicted
    c.learn(A, MAC_A, 4); // A re-confirmed: B is now the oldest
    c.learn(D, [9; 6], 5);
    assert_eq!(c.stats().evicted, 1);
    assert_eq!(c.lookup(B, 6), None);
    assert_eq!(state_of(&c, B), None);
    assert_eq!(c.lookup(A, 6), Some(MAC_A));
    assert_eq!(c.lookup(D, 6), Some([9; 6]));
    assert_eq!(state_of(&c, C), Some((None, NeighborState::Incomplete)));
    // Only Incomplete/Failed entries left to evict: new neighbours are refused.
    let mut c = NeighborCache::new(cfg());
    for ip in [A, B, C] {
        c.hold(ip, &frame(1, 60), 0);
    }
    c.learn(D, [9; 6], 1);
    assert_eq!(c.lookup(D, 2), None);
    assert_eq!(c.hold(D, &frame(1, 60), 2), Hold::DroppedFull);
    let st = c.stats();
    assert_eq!((st.table_full, st.entries, st.pending), (2, 3, 3));
    // A stale entry is evicted for a hold too.
    let mut c = NeighborCache::new(cfg());
    for ip in [A, B, C] {
        c.learn(ip, MAC_A, 0);
    }
    assert_eq!(c.hold(D, &frame(1, 60), 400 * S), Hold::Queued { send_probe: true });
    assert_eq!(state_of(&c, A), None);
}

#[test]
fn update_existing_does_not_create() {
    let mut c = NeighborCache::new(cfg());
    assert!(!c.update_existing(A, MAC_A, 0));
    assert_eq!(c.stats().entries, 0);
    c.hold(A, &frame(1, 60), 0);
    assert!(c.update_existing(A, MAC_A, 1));
    assert_eq!(released(&mut c).len(), 1);
    assert_eq!(c.lookup(A, 2), Some(MAC_A));
}

#[test]
fn poll_work_is_bounded() {
    let mut c = NeighborCache::new(NeighborConfig { capacity: 100, pending_total: 100, poll_budget: 8, ..cfg() });
    for i in 0..100 {
        c.hold(0x0A00_0000 + i, &frame(1, 60), 0);
    }
    let mut total = 0;
    let mut calls = 0;
    loop {
        let (probes, _) = poll(&mut c, S);
        assert!(probes.len() <= 8);
        if probes.is_empty() {
            break;
        }
        total += probes.len();
        calls += 1;
    }
    assert_eq!((total, calls), (100, 13));
    while !poll(&mut c, 2 * S).0.is_empty() {}
    // Giving up drops frames from at most `poll_budget` entries per call as well.
    assert_eq!(poll(&mut c, 3 * S), (vec![], 8));
    assert_eq!(c.stats().failed, 8);
    assert_eq!(c.stats().pending, 92);
}

#[test]
fn time_going_backwards_is_treated_as_now() {
    let mut c = NeighborCache::new(cfg());
    c.learn(A, MAC_A, 100 * S);
    assert_eq!(c.lookup(A, 5), Some(MAC_A));
    assert_eq!(c.hold(B, &frame(1, 60), 50 * S), Hold::Queued { send_probe: true });
    // The probe was scheduled from 100 s, not 50 s.
    assert_eq!(poll(&mut c, 100 * S + S - 1), (vec![], 0));
    assert_eq!(poll(&mut c, 101 * S), (vec![B], 0));
}

#[test]
#[should_panic(expected = "capacity")]
fn zero_capacity_is_rejected() {
    NeighborCache::new(NeighborConfig { capacity: 0, ..cfg() });
}

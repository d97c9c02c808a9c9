use super::table::{check_structure, Entry, BULK_SLOTS_PER_UNIT, RECLAIM_PROBE};
use super::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);
const R1: RuleKey = RuleKey(0x1111);
const R2: RuleKey = RuleKey(0x2222);

fn cfg(capacity: usize, channel_capacity: usize) -> AllowlistConfig {
    AllowlistConfig { capacity, channel_capacity }
}

/// One worker with generous channel room.
fn single(capacity: usize) -> (AllowlistWriter, Allowlist) {
    let (w, mut lists) = allowlist_channel(1, &cfg(capacity, 1024));
    (w, lists.pop().unwrap())
}

fn apply(w: &AllowlistWriter, a: &mut Allowlist, now: u64, update: AllowlistUpdate) -> Ticket {
    let t = w.send(update, T).unwrap();
    a.drain(now, usize::MAX);
    assert!(w.is_applied(t));
    t
}

fn learn(w: &AllowlistWriter, a: &mut Allowlist, now: u64, rule: RuleKey, ip: u32, exp: u64) {
    apply(w, a, now, AllowlistUpdate::Learn { rule, ip, expires_at: exp });
}

#[test]
fn allowlist_types_are_send_and_sync_where_needed() {
    fn send_sync<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    send_sync::<AllowlistWriter>();
    send::<Allowlist>();
    assert_eq!(std::mem::size_of::<Entry>(), 32);
}

#[test]
fn allowlist_presence_filter_returns_to_zero() {
    let (w, mut a) = single(64);
    for i in 0..40u32 {
        learn(&w, &mut a, 0, RuleKey(u64::from(i % 3)), 0x0A00_0000 + i, 1_000);
    }
    assert_eq!(a.ip_filter.iter().map(|&c| usize::from(c)).sum::<usize>(), 40);
    assert!(a.contains(RuleKey(0), 0x0A00_0000, 10));
    assert!(!a.contains(RuleKey(0), 0x0B00_0000, 10));
    a.sweep(2_000, 1_000);
    assert!(a.is_empty());
    assert!(a.ip_filter.iter().all(|&c| c == 0), "every removal decremented its bucket");
}

#[test]
fn allowlist_learn_contains_and_expiry_boundaries() {
    let (w, mut a) = single(16);
    let t = w.learn(R1, 0x0a00_0001, 100, T).unwrap();
    assert!(!a.contains(R1, 0x0a00_0001, 0), "visible before the worker drained");
    assert!(!w.is_applied(t));
    assert_eq!(a.drain(0, 8), 1);
    assert!(w.is_applied(t));
    assert!(a.contains(R1, 0x0a00_0001, 0));
    assert!(a.contains(R1, 0x0a00_0001, 99));
    assert!(!a.contains(R1, 0x0a00_0001, 100), "expires_at is exclusive");
    assert!(!a.contains(R1, 0x0a00_0002, 0), "other ip");
    assert!(!a.contains(R2, 0x0a00_0001, 0), "other rule");
    // Present but expired until swept.
    assert_eq!(a.len(), 1);
    assert_eq!(a.sweep(99, 16), 0);
    assert_eq!(a.sweep(100, 16), 1);
    assert!(a.is_empty());
    let s = a.stats();
    assert_eq!((s.learned, s.expired, s.entries), (1, 1, 0));
    // A learn already expired when applied is ignored.
    learn(&w, &mut a, 500, R1, 7, 500);
    assert!(a.is_empty());
    assert_eq!(a.stats().stale, 1);
}

#[test]
fn allowlist_refresh_extends_and_never_shortens() {
    let (w, mut a) = single(16);
    learn(&w, &mut a, 0, R1, 1, 100);
    learn(&w, &mut a, 50, R1, 1, 200);
    assert!(a.contains(R1, 1, 199));
    assert!(!a.contains(R1, 1, 200));
    learn(&w, &mut a, 60, R1, 1, 150);
    assert!(a.contains(R1, 1, 199), "a shorter learn must not shorten");
    // Refreshing an expired, unswept entry revives it.
    learn(&w, &mut a, 300, R1, 1, 400);
    assert!(a.contains(R1, 1, 399));
    let s = a.stats();
    assert_eq!((s.learned, s.refreshed, s.entries), (1, 3, 1));
    let mut seen = Vec::new();
    a.for_each(|r, ip, exp, pins| seen.push((r, ip, exp, pins)));
    assert_eq!(seen, vec![(R1, 1, 400, 0)]);
}

#[test]
fn allowlist_forget_of_pinned_entry_keeps_it_until_unpin() {
    let (w, mut a) = single(16);
    learn(&w, &mut a, 0, R1, 1, 1000);
    learn(&w, &mut a, 0, R1, 2, 1000);
    let h = a.pin(R1, 1).unwrap();
    let h2 = a.pin(R1, 1).unwrap();
    assert_eq!(a.stats().pinned, 1);
    apply(&w, &mut a, 20, AllowlistUpdate::Forget { rule: R1, ip: 1 });
    apply(&w, &mut a, 20, AllowlistUpdate::Forget { rule: R1, ip: 2 });
    assert!(!a.contains(R1, 2, 20), "unpinned entry removed");
    assert!(a.contains(R1, 1, 20), "pinned entry kept for its flows");
    assert!(!a.is_live(R1, 1, 20), "but not live for new flows");
    assert_eq!(a.len(), 1);
    let mut exp = None;
    a.for_each(|_, _, e, pins| exp = Some((e, pins)));
    assert_eq!(exp, Some((0, 2)), "marked expired");
    a.unpin(h);
    assert!(a.contains(R1, 1, 20));
    assert_eq!(a.len(), 1);
    a.unpin(h2);
    assert!(!a.contains(R1, 1, 20));
    assert_eq!(a.len(), 0, "removed at the last unpin");
    let s = a.stats();
    assert_eq!((s.forgotten, s.pinned), (2, 0));
    check_structure(&a);
}

#[test]
fn allowlist_forget_rule_and_clear() {
    let (w, mut a) = single(64);
    for ip in 0..10 {
        learn(&w, &mut a, 0, R1, ip, 1000);
        learn(&w, &mut a, 0, R2, ip, 1000);
    }
    let h = a.pin(R1, 3).unwrap();
    apply(&w, &mut a, 5, AllowlistUpdate::ForgetRule { rule: R1 });
    for ip in 0..10 {
        assert_eq!(a.contains(R1, ip, 5), ip == 3, "ip {ip}");
        assert!(a.contains(R2, ip, 5));
    }
    assert_eq!(a.len(), 11);
    let h2 = a.pin(R2, 4).unwrap();
    apply(&w, &mut a, 5, AllowlistUpdate::Clear);
    assert_eq!(a.len(), 2, "only the pinned entries remain");
    assert!(a.contains(R1, 3, 5) && a.contains(R2, 4, 5));
    assert!(!a.contains(R2, 5, 5));
    a.unpin(h);
    a.unpin(h2);
    assert!(a.is_empty());
    assert_eq!(a.stats().forgotten, 20);
    // Re-learning after a clear works.
    learn(&w, &mut a, 6, R1, 3, 100);
    assert!(a.contains(R1, 3, 6));
    check_structure(&a);
}

#[test]
fn allowlist_bulk_forget_is_spread_over_drains() {
    let (w, mut a) = single(1024);
    for ip in 0..1024 {
        learn(&w, &mut a, 0, R1, ip, 1000);
    }
    let clear = w.send(AllowlistUpdate::Clear, T).unwrap();
    let after = w.learn(R2, 1, 1000, T).unwrap();
    let mut drains = 0;
    while !w.is_applied(clear) {
        assert!(!w.is_applied(after));
        let len = a.len();
        a.drain(0, 1);
        assert!(len - a.len() <= BULK_SLOTS_PER_UNIT, "one unit examines at most 64 slots");
        drains += 1;
        assert!(drains <= 1024 / BULK_SLOTS_PER_UNIT);
    }
    assert_eq!(drains, 1024 / BULK_SLOTS_PER_UNIT);
    assert!(a.is_empty());
    assert!(!a.contains(R2, 1, 0), "later updates wait behind the clear");
    a.drain(0, 1);
    assert!(w.is_applied(after) && a.contains(R2, 1, 0));
}

#[test]
fn allowlist_pin_keeps_expired_entry_until_unpin_and_sweep() {
    let (w, mut a) = single(16);
    learn(&w, &mut a, 0, R1, 9, 100);
    let h = a.pin(R1, 9).unwrap();
    assert!(a.is_live(R1, 9, 99) && !a.is_live(R1, 9, 100));
    assert_eq!(a.sweep(1_000, 16), 0, "pinned entry survives expiry");
    assert!(a.contains(R1, 9, 1_000), "pinned entry still matches");
    assert!(!a.is_live(R1, 9, 1_000), "but is not live for new flows");
    assert_eq!(a.stats().pinned, 1);
    a.unpin(h);
    assert_eq!(a.stats().pinned, 0);
    assert!(!a.contains(R1, 9, 1_000));
    assert_eq!(a.len(), 1, "merely expired: left for the sweep");
    assert!(a.pin(R1, 10).is_none(), "absent entry");
    assert_eq!(a.sweep(1_000, 16), 1);
    assert!(a.pin(R1, 9).is_none(), "swept");
    assert!(a.is_empty());
    check_structure(&a);
}

#[test]
fn allowlist_pin_handles_survive_other_inserts_and_removals() {
    let (w, mut a) = single(256);
    learn(&w, &mut a, 0, R1, 42, 10);
    let h = a.pin(R1, 42).unwrap();
    for round in 0..5u64 {
        for ip in 0..255 {
            learn(&w, &mut a, 100 * round, R2, ip, 100 * round + 50);
        }
        a.sweep(100 * round + 60, 256);
    }
    assert!(a.contains(R1, 42, 1_000_000));
    a.unpin(h);
    assert_eq!(a.stats().pinned, 0);
    a.sweep(1_000_000, 256);
    assert!(a.is_empty());
    check_structure(&a);
}

#[test]
fn allowlist_sweep_is_bounded_and_eventually_complete() {
    let cap = 1000;
    let (w, mut a) = single(cap);
    for ip in 0..cap as u32 {
        learn(&w, &mut a, 0, R1, ip, 10);
    }
    assert_eq!(a.len(), cap);
    let k = 7;
    // Every entry is expired, so each examined slot is removed: removals == slots touched.
    let before = a.sweep_cursor;
    assert_eq!(a.sweep(10, k), k);
    assert_eq!(a.sweep_cursor, before + k);
    assert_eq!(a.len(), cap - k);
    let mut sweeps = 1;
    while !a.is_empty() {
        assert!(a.sweep(10, k) <= k);
        sweeps += 1;
    }
    assert_eq!(sweeps, cap.div_ceil(k));
    // A budget larger than the table examines each slot once.
    assert_eq!(a.sweep(10, usize::MAX), 0);
    assert_eq!(a.stats().expired, cap as u64);
    check_structure(&a);
}

#[test]
fn allowlist_full_table_reclaims_expired_or_counts_drops() {
    let (w, mut a) = single(4);
    for ip in 0..4 {
        learn(&w, &mut a, 0, R1, ip, 100);
    }
    learn(&w, &mut a, 50, R1, 4, 200);
    assert!(!a.contains(R1, 4, 50));
    assert_eq!(a.stats().full_drops, 1);
    assert_eq!(a.len(), 4);
    // Refreshing an existing entry never needs room.
    learn(&w, &mut a, 50, R1, 0, 300);
    assert_eq!(a.stats().full_drops, 1);
    // Pinned expired entries are not reclaimed; the others are.
    let h = a.pin(R1, 1).unwrap();
    learn(&w, &mut a, 150, R1, 4, 200);
    assert!(a.contains(R1, 4, 150));
    assert!(a.contains(R1, 1, 150), "pinned");
    assert!(a.contains(R1, 0, 150), "refreshed, live");
    assert_eq!(a.len(), 3);
    let s = a.stats();
    assert_eq!((s.expired, s.full_drops, s.learned), (2, 1, 5));
    a.unpin(h);
    check_structure(&a);
}

#[test]
fn allowlist_reclaim_probe_is_bounded() {
    let cap = 256;
    let (w, mut a) = single(cap);
    for ip in 0..cap as u32 {
        // Only the last slot's entry expires early.
        let exp = if ip == cap as u32 - 1 { 10 } else { 1000 };
        learn(&w, &mut a, 0, R1, ip, exp);
    }
    // The reclaim probe looks at 32 slots from the cursor per refused learn, so the one
    // expired entry is only found after cap / 32 attempts.
    let mut attempts = 0;
    while !a.contains(R2, 1, 20) {
        learn(&w, &mut a, 20, R2, 1, 500);
        attempts += 1;
        assert!(attempts <= cap / RECLAIM_PROBE);
    }
    assert_eq!(attempts, cap / RECLAIM_PROBE);
    assert_eq!(a.stats().full_drops, (cap / RECLAIM_PROBE - 1) as u64);
    check_structure(&a);
}

#[test]
fn allowlist_tickets_need_every_worker() {
    let (w, mut lists) = allowlist_channel(3, &cfg(16, 8));
    let t1 = w.learn(R1, 1, 100, T).unwrap();
    let t2 = w.learn(R1, 2, 100, T).unwrap();
    assert!(t2 > t1);
    assert!(!w.is_applied(t1));
    lists[0].drain(0, 16);
    lists[1].drain(0, 1);
    assert!(!w.is_applied(t1));
    lists[2].drain(0, 1);
    assert!(w.is_applied(t1), "every worker applied t1");
    assert!(!w.is_applied(t2), "worker 1 and 2 have not applied t2");
    lists[1].drain(0, 16);
    lists[2].drain(0, 16);
    assert!(w.is_applied(t2));
    for a in &lists {
        assert!(a.contains(R1, 1, 0) && a.contains(R1, 2, 0));
    }
    assert!(!w.wait_applied(Ticket(t2.seq() + 1), Duration::ZERO));
}

#[test]
fn allowlist_wait_applied_sees_a_worker_thread_drain() {
    let (w, mut lists) = allowlist_channel(2, &cfg(16, 8));
    let t = w.learn(R1, 5, u64::MAX, T).unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = lists
        .drain(..)
        .map(|mut a| {
            let go = Arc::clone(&go);
            thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                a.drain(0, 16);
                a
            })
        })
        .collect();
    assert!(!w.wait_applied(t, Duration::from_millis(20)), "nobody drained yet");
    go.store(true, Ordering::Release);
    assert!(w.wait_applied(t, Duration::from_secs(10)));
    for h in workers {
        let a = h.join().unwrap();
        assert!(a.contains(R1, 5, 0), "applied means the entry is present");
    }
}

#[test]
fn allowlist_wait_applied_times_out() {
    let (w, _lists) = allowlist_channel(1, &cfg(16, 8));
    let t = w.learn(R1, 5, 100, T).unwrap();
    let start = Instant::now();
    assert!(!w.wait_applied(t, Duration::from_millis(30)));
    assert!(start.elapsed() >= Duration::from_millis(30));
}

#[test]
fn allowlist_dropped_worker_does_not_block() {
    let (w, mut lists) = allowlist_channel(2, &cfg(16, 1));
    let t = w.learn(R1, 5, 100, T).unwrap();
    let dead = lists.pop().unwrap();
    lists[0].drain(0, 16);
    assert!(!w.is_applied(t));
    drop(dead);
    assert_eq!(w.live_workers(), 1);
    assert!(w.wait_applied(t, Duration::from_secs(10)));
    // The dead worker's full channel no longer blocks sends.
    let t2 = w.learn(R1, 6, 100, Duration::from_millis(10)).unwrap();
    assert!(!w.is_applied(t2));
    lists[0].drain(0, 16);
    assert!(w.is_applied(t2));
    // A worker thread that panics drops its allowlist too.
    let a = lists.pop().unwrap();
    let t3 = w.learn(R1, 7, 100, T).unwrap();
    let res = thread::spawn(move || {
        let _a = a;
        panic!("worker crashed");
    })
    .join();
    assert!(res.is_err());
    assert!(w.wait_applied(t3, Duration::from_secs(10)), "no live workers: vacuously applied");
    assert_eq!(w.learn(R1, 8, 100, T), Err(AllowlistSendError::Disconnected));
}

#[test]
fn allowlist_full_channel_times_out_and_sends_nothing() {
    let (w, mut lists) = allowlist_channel(2, &cfg(16, 2));
    w.learn(R1, 1, 100, T).unwrap();
    lists[0].drain(0, 16);
    let t2 = w.learn(R1, 2, 100, T).unwrap();
    // Worker 1 now holds 2 pending updates: its channel is full.
    let start = Instant::now();
    let err = w.learn(R1, 3, 100, Duration::from_millis(30)).unwrap_err();
    assert_eq!(err, AllowlistSendError::Full);
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(err.to_string().contains("stayed full"));
    // All or nothing: worker 0 (which had room) did not get it either.
    lists[0].drain(0, 16);
    assert!(!lists[0].contains(R1, 3, 0));
    assert!(lists[0].contains(R1, 2, 0));
    // Once the slow worker drains, sending works again and sequence numbers have no gap.
    lists[1].drain(0, 16);
    assert!(w.is_applied(t2));
    let t4 = w.learn(R1, 4, 100, T).unwrap();
    assert_eq!(t4.seq(), t2.seq() + 1);
    assert!(AllowlistSendError::Disconnected.to_string().contains("dropped"));
}

#[test]
fn allowlist_blocked_send_completes_when_worker_drains() {
    let (w, mut lists) = allowlist_channel(1, &cfg(16, 1));
    w.learn(R1, 1, 100, T).unwrap();
    let w2 = w.clone();
    let sender = thread::spawn(move || w2.learn(R1, 2, 100, Duration::from_secs(10)));
    thread::sleep(Duration::from_millis(20));
    let mut a = lists.pop().unwrap();
    let mut got = 0;
    let start = Instant::now();
    while got < 2 {
        got += a.drain(0, 16);
        assert!(start.elapsed() < Duration::from_secs(10));
        thread::yield_now();
    }
    let t = sender.join().unwrap().unwrap();
    assert!(w.is_applied(t) && a.contains(R1, 2, 0));
}

mod model;

//! Worker side of the allowlist: one worker's [`Allowlist`] (entries, index, presence filter;
//! learn/forget/pin/sweep) and what it hands out ([`PinHandle`], [`AllowlistStats`]). See the
//! [module documentation](super).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use sluice_policy::RuleKey;

use super::{AllowlistUpdate, Message, WorkerShared, MAX_CAPACITY};

/// Slots a full table examines (from the sweep cursor) to reclaim room for a `Learn`.
pub(super) const RECLAIM_PROBE: usize = 32;

/// Entry slots a `ForgetRule`/`Clear` scans per unit of `drain`'s `max_updates` budget.
pub(super) const BULK_SLOTS_PER_UNIT: usize = 64;

/// Empty index slot.
const EMPTY: u32 = u32::MAX;

/// End of the free list.
const NIL: u32 = u32::MAX;

/// Proof that a flow holds an entry; give it back with [`Allowlist::unpin`]. Not `Clone`, so an
/// entry cannot be unpinned twice for one pin. Valid while pinned: a pinned entry never moves or
/// leaves its slot. Only meaningful to the `Allowlist` that issued it.
///
/// It is the entry's slot number, so a flow record can store it in 4 bytes
/// ([`PinHandle::to_raw`]); a raw handle is never `u32::MAX`, which callers may use as "no pin".
#[derive(Debug, PartialEq, Eq)]
pub struct PinHandle(pub(super) u32);

impl PinHandle {
    /// The handle as stored in a flow record; always `< MAX_CAPACITY`, never `u32::MAX`.
    pub fn to_raw(self) -> u32 {
        self.0
    }

    /// Rebuilds a handle from [`PinHandle::to_raw`], to unpin it. Pass each raw value back once.
    pub fn from_raw(raw: u32) -> Self {
        debug_assert!((raw as usize) < MAX_CAPACITY, "allowlist: not a raw PinHandle");
        PinHandle(raw)
    }
}

/// Counters of one worker's allowlist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowlistStats {
    /// Entries present now (including expired ones not yet swept).
    pub entries: usize,
    /// Entries present now that at least one flow has pinned.
    pub pinned: usize,
    /// `Learn`s that inserted a new entry.
    pub learned: u64,
    /// `Learn`s that hit an existing entry (its expiry became the later of the two).
    pub refreshed: u64,
    /// Entries removed, or marked expired because pinned, by `Forget`/`ForgetRule`/`Clear`.
    pub forgotten: u64,
    /// Expired, unpinned entries removed by `sweep` or to make room for a `Learn`.
    pub expired: u64,
    /// `Learn`s refused because the table was full even after a reclaim attempt.
    pub full_drops: u64,
    /// `Learn`s of a new entry ignored because they had already expired when applied.
    pub stale: u64,
}

/// One slot of the stable entry array: 32 bytes.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    rule: u64,
    /// Live while `> now`; 0 once forgotten while pinned.
    expires_at: u64,
    ip: u32,
    /// In use: pins held by flows. Free: next free entry (`NIL` ends the list).
    pins_or_next: u32,
    /// Low 32 bits of the key's hash, so removals can shift the index without rehashing.
    hash: u32,
    used: bool,
}

impl Entry {
    #[inline]
    fn in_use(&self) -> bool {
        self.used
    }

    #[inline]
    fn holds(&self, now: u64) -> bool {
        self.expires_at > now || self.pins_or_next > 0
    }
}

/// A `ForgetRule` (`rule: Some`) or `Clear` (`rule: None`) being applied across several drains.
#[derive(Clone, Copy)]
struct BulkForget {
    seq: u64,
    rule: Option<u64>,
    /// Next entry slot to examine.
    next: usize,
}

/// Buckets of the per-address presence filter (64 KiB).
const IP_FILTER_BUCKETS: usize = 1 << 16;

#[inline]
fn ip_bucket(ip: u32, seed: u64) -> usize {
    ((ip ^ seed as u32).wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// One worker's allowlist. Owned by its engine; every method but the diagnostic
/// [`Allowlist::for_each`] is O(1) amortised (`drain` and `sweep` do work bounded by their
/// budget) and nothing allocates after construction.
///
/// Layout: a stable array of `capacity` 32-byte entries, threaded by a free list, plus an
/// open-addressing index of `u32` entry numbers (linear probing, at least `2 * capacity` slots,
/// so 8 to 16 bytes per entry): 40 to 48 bytes per entry per worker. Entries never move, so a
/// [`PinHandle`] is simply an entry number and stays valid whatever else is inserted or
/// removed; the index uses backward-shift deletion instead of tombstones, so probe lengths
/// depend only on the current load (at most 0.5), never on the history of inserts and
/// removals. Keys are hashed with a multiply-xorshift mix keyed by a per-table random seed:
/// a lookup costs a few nanoseconds (it runs for hostname rules on every new flow), and an
/// outsider choosing DNS answers cannot aim them at one probe chain without the seed.
pub struct Allowlist {
    entries: Box<[Entry]>,
    /// Presence filter by address: how many entries have an address in each bucket. Most
    /// flows checked against a hostname rule go to addresses nobody learned; one byte in a
    /// 64 KiB array (cache-resident) answers "no" for them without touching the index. A
    /// bucket that reaches 255 stays there (a permanent, harmless false positive).
    pub(super) ip_filter: Box<[u8]>,
    index: Box<[u32]>,
    /// `index.len() - 1`.
    mask: usize,
    free_head: u32,
    len: usize,
    pub(super) sweep_cursor: usize,
    bulk: Option<BulkForget>,
    /// Highest sequence number applied; published to `shared.applied` after a drain.
    applied_seq: u64,
    stats: AllowlistStats,
    /// Random per table: keys the index hash.
    seed: u64,
    rx: Receiver<Message>,
    shared: Arc<WorkerShared>,
}

impl fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allowlist")
            .field("len", &self.len)
            .field("capacity", &self.entries.len())
            .field("applied_seq", &self.applied_seq)
            .finish()
    }
}

impl Drop for Allowlist {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::Release);
    }
}

impl Allowlist {
    pub(super) fn new(capacity: usize, rx: Receiver<Message>, shared: Arc<WorkerShared>) -> Self {
        assert!((1..=MAX_CAPACITY).contains(&capacity));
        let index_len = (2 * capacity).next_power_of_two();
        let entries = (0..capacity)
            .map(|i| Entry {
                rule: 0,
                expires_at: 0,
                ip: 0,
                pins_or_next: if i + 1 < capacity { (i + 1) as u32 } else { NIL },
                hash: 0,
                used: false,
            })
            .collect();
        Allowlist {
            entries,
            ip_filter: vec![0; IP_FILTER_BUCKETS].into_boxed_slice(),
            index: vec![EMPTY; index_len].into_boxed_slice(),
            mask: index_len - 1,
            free_head: 0,
            len: 0,
            sweep_cursor: 0,
            bulk: None,
            applied_seq: 0,
            stats: AllowlistStats::default(),
            seed: RandomState::new().hash_one(0x5EED_u64),
            rx,
            shared,
        }
    }

    /// Applies pending updates, in order, then publishes the last one applied (`Release`).
    ///
    /// Work is bounded by `max_updates` units: a unit applies one `Learn`/`Forget`, or examines
    /// 64 entry slots of a `ForgetRule`/`Clear`, which therefore may take several calls (later
    /// updates wait behind it, and its ticket is applied only once it completes). Returns the
    /// number of updates completed.
    pub fn drain(&mut self, now: u64, max_updates: usize) -> usize {
        let mut units = max_updates;
        let mut completed = 0;
        while units > 0 {
            units -= 1;
            if self.bulk.is_none() {
                let Ok(msg) = self.rx.try_recv() else { break };
                debug_assert!(msg.seq > self.applied_seq, "allowlist: updates out of order");
                match msg.update {
                    AllowlistUpdate::Learn { rule, ip, expires_at } => {
                        self.learn(rule.0, ip, expires_at, now);
                    }
                    AllowlistUpdate::Forget { rule, ip } => {
                        if let Some(entry) = self.find(rule.0, ip) {
                            self.forget_entry(entry);
                        }
                    }
                    AllowlistUpdate::ForgetRule { rule } => {
                        self.bulk = Some(BulkForget { seq: msg.seq, rule: Some(rule.0), next: 0 });
                    }
                    AllowlistUpdate::Clear => {
                        self.bulk = Some(BulkForget { seq: msg.seq, rule: None, next: 0 });
                    }
                }
                if self.bulk.is_none() {
                    self.applied_seq = msg.seq;
                    completed += 1;
                    continue;
                }
            }
            if self.bulk_step(BULK_SLOTS_PER_UNIT) {
                completed += 1;
            }
        }
        if completed > 0 {
            self.shared.applied.store(self.applied_seq, Ordering::Release);
        }
        completed
    }

    /// True if `(rule, ip)` is present and live at `now` or pinned by a flow (a pinned entry
    /// stays true past its expiry and after a `Forget`, until its last unpin).
    #[inline]
    pub fn contains(&self, rule: RuleKey, ip: u32, now: u64) -> bool {
        self.may_hold(ip) && self.find(rule.0, ip).is_some_and(|e| self.entries[e as usize].holds(now))
    }

    /// False when no entry has address `ip` (no false negatives).
    #[inline]
    fn may_hold(&self, ip: u32) -> bool {
        self.ip_filter[ip_bucket(ip, self.seed)] != 0
    }

    /// True if `(rule, ip)` is present and `expires_at > now`, whatever its pins: unlike
    /// [`Allowlist::contains`], an entry kept only by a flow's pin (expired or forgotten) does
    /// not count. Suited to admitting a *new* flow when the DNS TTL, not other flows, should
    /// decide.
    #[inline]
    pub fn is_live(&self, rule: RuleKey, ip: u32, now: u64) -> bool {
        self.may_hold(ip) && self.find(rule.0, ip).is_some_and(|e| self.entries[e as usize].expires_at > now)
    }

    /// A flow starts using `(rule, ip)`: the entry is kept while pinned, even past its expiry
    /// or a `Forget`, and [`Allowlist::contains`] stays true for it. Call it once the flow was
    /// admitted through [`Allowlist::is_live`] or [`Allowlist::contains`] at the same `now`:
    /// it pins any present entry, including an expired one the sweep has not reached yet.
    /// `None` if the entry is absent (or already holds `u32::MAX` pins).
    #[inline]
    #[must_use = "an entry pinned without keeping its handle can never be unpinned"]
    pub fn pin(&mut self, rule: RuleKey, ip: u32) -> Option<PinHandle> {
        let entry = self.find(rule.0, ip)?;
        let e = &mut self.entries[entry as usize];
        // No flow table holds four billion flows; refuse rather than wrap.
        e.pins_or_next = e.pins_or_next.checked_add(1)?;
        if e.pins_or_next == 1 {
            self.stats.pinned += 1;
        }
        Some(PinHandle(entry))
    }

    /// The flow holding `handle` ended. An entry forgotten while pinned is removed at its last
    /// unpin; one that merely expired is left for [`Allowlist::sweep`].
    #[inline]
    pub fn unpin(&mut self, handle: PinHandle) {
        let entry = handle.0;
        let valid = self.entries.get(entry as usize).is_some_and(|e| e.in_use() && e.pins_or_next > 0);
        debug_assert!(valid, "allowlist: unpin of an entry that is not pinned");
        if !valid {
            return;
        }
        let e = &mut self.entries[entry as usize];
        e.pins_or_next -= 1;
        if e.pins_or_next == 0 {
            self.stats.pinned -= 1;
            if e.expires_at == 0 {
                self.remove_entry(entry);
            }
        }
    }

    /// Incremental expiry: examines at most `budget` entry slots (and never the same slot twice
    /// in one call), continuing from where the previous sweep stopped, and removes the expired,
    /// unpinned entries among them. Returns how many it removed. Calling it with budget `k` every
    /// tick examines the whole table every `capacity / k` ticks.
    pub fn sweep(&mut self, now: u64, budget: usize) -> usize {
        let capacity = self.entries.len();
        let mut slot = self.sweep_cursor;
        let mut removed = 0;
        for _ in 0..budget.min(capacity) {
            let e = &self.entries[slot];
            if e.in_use() && !e.holds(now) {
                self.remove_entry(slot as u32);
                removed += 1;
            }
            slot += 1;
            if slot == capacity {
                slot = 0;
            }
        }
        self.sweep_cursor = slot;
        self.stats.expired += removed as u64;
        removed
    }

    /// Entries present (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum entries, as configured.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    pub fn stats(&self) -> AllowlistStats {
        AllowlistStats { entries: self.len, ..self.stats }
    }

    /// Calls `f(rule, ip, expires_at, pins)` for every entry present, in slot order. Visits every
    /// slot: for views and diagnostics, not the packet path.
    pub fn for_each(&self, mut f: impl FnMut(RuleKey, u32, u64, u32)) {
        for e in self.entries.iter().filter(|e| e.in_use()) {
            f(RuleKey(e.rule), e.ip, e.expires_at, e.pins_or_next);
        }
    }

    /// Bounded scan for views: visits entry slots `from..`, at most `budget` of them, calling
    /// `visit(rule, ip, expires_at, pins)` on each entry present until it returns false, and
    /// returns the slot to continue from (`capacity()` once every slot was visited).
    pub fn scan(&self, from: usize, budget: usize, mut visit: impl FnMut(RuleKey, u32, u64, u32) -> bool) -> usize {
        let end = from.saturating_add(budget).min(self.entries.len());
        for slot in from.min(end)..end {
            let e = &self.entries[slot];
            if e.in_use() && !visit(RuleKey(e.rule), e.ip, e.expires_at, e.pins_or_next) {
                return slot + 1;
            }
        }
        end
    }

    /// The rule of the entry a flow pinned (its raw [`PinHandle`]); `None` for a handle that
    /// pins nothing. Lets a view say which hostname rule admitted a flow without the flow
    /// record keeping it.
    pub fn pinned_rule(&self, raw: u32) -> Option<RuleKey> {
        let e = self.entries.get(raw as usize)?;
        (e.in_use() && e.pins_or_next > 0).then_some(RuleKey(e.rule))
    }

    #[inline]
    fn hash(&self, rule: u64, ip: u32) -> u32 {
        let mut h = rule ^ self.seed;
        h = (h ^ (h >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= u64::from(ip).wrapping_mul(0xC2B2_AE3D_27D4_EB4F) ^ self.seed.rotate_left(17);
        h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        // Truncation intended: the index has at most 2^31 slots.
        (h ^ (h >> 32)) as u32
    }

    /// Index position holding `(rule, ip)`, or else the empty position that ends its probe.
    #[inline]
    fn probe(&self, rule: u64, ip: u32, hash: u32) -> Result<usize, usize> {
        let mut pos = hash as usize & self.mask;
        let mut probes = 0usize;
        loop {
            let entry = self.index[pos];
            if entry == EMPTY {
                return Err(pos);
            }
            let e = &self.entries[entry as usize];
            if e.rule == rule && e.ip == ip {
                return Ok(pos);
            }
            probes += 1;
            // Terminates: the load factor is at most 0.5, so an empty slot exists.
            debug_assert!(probes <= self.mask, "allowlist: index has no empty slot");
            pos = (pos + 1) & self.mask;
        }
    }

    #[inline]
    fn find(&self, rule: u64, ip: u32) -> Option<u32> {
        self.probe(rule, ip, self.hash(rule, ip)).ok().map(|pos| self.index[pos])
    }

    fn learn(&mut self, rule: u64, ip: u32, expires_at: u64, now: u64) {
        let hash = self.hash(rule, ip);
        let mut pos = match self.probe(rule, ip, hash) {
            Ok(pos) => {
                let e = &mut self.entries[self.index[pos] as usize];
                e.expires_at = e.expires_at.max(expires_at);
                self.stats.refreshed += 1;
                return;
            }
            Err(pos) => pos,
        };
        if expires_at <= now {
            self.stats.stale += 1;
            return;
        }
        if self.free_head == NIL {
            if self.sweep(now, RECLAIM_PROBE) == 0 {
                self.stats.full_drops += 1;
                return;
            }
            // Removals shifted the index: find the insertion point again.
            pos = match self.probe(rule, ip, hash) {
                Err(pos) => pos,
                Ok(_) => unreachable!("allowlist: reclaim inserted a key"),
            };
        }
        let entry = self.free_head;
        let e = &mut self.entries[entry as usize];
        debug_assert!(!e.in_use(), "allowlist: free list holds a used entry");
        self.free_head = e.pins_or_next;
        *e = Entry { rule, expires_at, ip, pins_or_next: 0, hash, used: true };
        self.index[pos] = entry;
        self.len += 1;
        self.stats.learned += 1;
        let bucket = &mut self.ip_filter[ip_bucket(ip, self.seed)];
        *bucket = bucket.saturating_add(1);
    }

    /// Applies a `Forget` to one present entry.
    fn forget_entry(&mut self, entry: u32) {
        let e = &mut self.entries[entry as usize];
        debug_assert!(e.in_use());
        if e.pins_or_next == 0 {
            self.remove_entry(entry);
            self.stats.forgotten += 1;
        } else if e.expires_at != 0 {
            e.expires_at = 0;
            self.stats.forgotten += 1;
        }
    }

    /// Advances the pending `ForgetRule`/`Clear` over up to `slots` entry slots; true when it
    /// completed (and its sequence number is applied).
    fn bulk_step(&mut self, slots: usize) -> bool {
        let Some(mut op) = self.bulk else {
            debug_assert!(false, "allowlist: no bulk update pending");
            return false;
        };
        let end = if self.len == 0 { self.entries.len() } else { (op.next + slots).min(self.entries.len()) };
        for slot in op.next..end {
            let e = &self.entries[slot];
            if e.in_use() && op.rule.is_none_or(|rule| rule == e.rule) {
                self.forget_entry(slot as u32);
            }
        }
        op.next = end;
        if end == self.entries.len() {
            self.bulk = None;
            self.applied_seq = op.seq;
            true
        } else {
            self.bulk = Some(op);
            false
        }
    }

    /// Removes an unpinned entry from the index and returns it to the free list.
    fn remove_entry(&mut self, entry: u32) {
        let e = self.entries[entry as usize];
        debug_assert!(e.in_use() && e.pins_or_next == 0, "allowlist: removing a pinned or free entry");
        let mut pos = e.hash as usize & self.mask;
        while self.index[pos] != entry {
            debug_assert!(self.index[pos] != EMPTY, "allowlist: entry missing from the index");
            pos = (pos + 1) & self.mask;
        }
        self.remove_index_at(pos);
        let bucket = &mut self.ip_filter[ip_bucket(e.ip, self.seed)];
        debug_assert!(*bucket > 0, "allowlist: presence filter out of step");
        if *bucket != u8::MAX {
            *bucket -= 1;
        }
        let e = &mut self.entries[entry as usize];
        e.used = false;
        e.pins_or_next = self.free_head;
        self.free_head = entry;
        self.len -= 1;
    }

    /// Backward-shift deletion: empties `hole`, then moves each later member of the probe cluster
    /// whose home lies cyclically at or before the hole into it, so every key stays reachable
    /// from its home without tombstones.
    fn remove_index_at(&mut self, mut hole: usize) {
        let mut pos = hole;
        loop {
            pos = (pos + 1) & self.mask;
            let entry = self.index[pos];
            if entry == EMPTY {
                break;
            }
            let home = self.entries[entry as usize].hash as usize & self.mask;
            // Distance from its home to where it sits, versus from the hole to where it sits.
            if pos.wrapping_sub(home) & self.mask >= pos.wrapping_sub(hole) & self.mask {
                self.index[hole] = entry;
                hole = pos;
            }
        }
        self.index[hole] = EMPTY;
    }
}

/// Checks the index invariants: every used entry is reachable from its home, the index
/// holds exactly the used entries, and the free list holds exactly the others.
#[cfg(test)]
pub(super) fn check_structure(a: &Allowlist) {
    let used = a.entries.iter().filter(|e| e.in_use()).count();
    assert_eq!(used, a.len);
    assert_eq!(a.index.iter().filter(|&&s| s != EMPTY).count(), a.len);
    for (i, e) in a.entries.iter().enumerate() {
        if e.in_use() {
            assert_eq!(a.find(e.rule, e.ip), Some(i as u32));
        }
    }
    let mut free = 0;
    let mut next = a.free_head;
    while next != NIL {
        assert!(!a.entries[next as usize].in_use());
        free += 1;
        assert!(free <= a.capacity());
        next = a.entries[next as usize].pins_or_next;
    }
    assert_eq!(free, a.capacity() - a.len);
    // The presence filter counts exactly the used entries of each bucket they occupy (or
    // is saturated): never a false negative. (Checked per used entry, not per bucket, to
    // keep this check O(entries).)
    let mut counts = std::collections::HashMap::new();
    for e in a.entries.iter().filter(|e| e.in_use()) {
        *counts.entry(ip_bucket(e.ip, a.seed)).or_insert(0usize) += 1;
    }
    for (bucket, want) in counts {
        let have = a.ip_filter[bucket];
        assert!(have == u8::MAX || usize::from(have) == want, "filter bucket {bucket}: {have} != {want}");
    }
}

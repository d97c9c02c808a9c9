//! Dynamic allowlist: `(hostname rule, IPv4 address) -> expiry`, learned by the DNS proxy from
//! allowed DNS answers and consulted by the packet path when a new flow hits a hostname rule.
//!
//! # Why every worker has its own copy
//!
//! A table shared by all workers would need a lock, or atomics plus deferred reclamation
//! (RCU/epochs), on every lookup, and its cache lines would bounce between cores each time the
//! proxy writes. Instead every dataplane worker owns a private [`Allowlist`]: a plain hash table
//! that its packet path reads with no synchronisation at all, sized once at start-up so nothing
//! allocates afterwards. The price is memory (one table per worker, see [`Allowlist`]) and
//! fanning every update out to every worker, which is cheap: updates arrive once per DNS answer,
//! packets arrive millions of times a second. Updates travel over one bounded channel per worker
//! and are applied by the worker itself in [`Allowlist::drain`], between packet batches, with a
//! bounded amount of work per call.
//!
//! # Tickets: "inserted before the answer is released"
//!
//! A client connects as soon as it has the DNS answer, and RSS may steer its first SYN to any
//! worker, so the proxy must not release the answer until *every* worker holds the entry:
//!
//! 1. The proxy calls [`AllowlistWriter::learn`]. Under the writer's mutex the update gets the next
//!    sequence number and is queued to every live worker. It is all or nothing: the writer first
//!    waits until every live worker's channel has room; only the mutex holder sends and workers
//!    only take messages out, so that room is still there when it sends.
//! 2. Each worker applies its updates in sequence order in `drain` and then publishes the highest
//!    sequence number it has applied with a `Release` store to its own `AtomicU64`.
//! 3. The proxy calls [`AllowlistWriter::wait_applied`] with the returned [`Ticket`]; it returns
//!    `true` once every live worker has published a number at or above the ticket (`Acquire`
//!    loads). Only then does the proxy release the answer.
//!
//! A worker publishes only after its table contains the entry, and it handles packets in program
//! order on its own thread, so a SYN the client sends after receiving the answer reaches the
//! worker after the publish and finds the entry, whichever worker it lands on. If
//! `wait_applied` times out the proxy must not treat the name as allowed (answer SERVFAIL, or
//! retry); that choice belongs to the proxy. A worker that has dropped its `Allowlist` (its thread
//! exited or panicked) clears its alive flag and is excluded, so it cannot stall the proxy.
//!
//! A `Learn` can still be refused by a worker whose table is full (counted in
//! [`AllowlistStats::full_drops`]); the ticket is then applied but that worker fails closed:
//! new flows to that address are not allowed by the hostname rule.
//!
//! # Pins
//!
//! A flow admitted through an entry pins it ([`Allowlist::pin`]). A pinned entry is never
//! removed, neither at its TTL nor by `Forget`/`ForgetRule`/`Clear` (those mark it expired), and
//! [`Allowlist::contains`] keeps answering true for it, so re-evaluating that flow after a policy
//! swap still passes. [`Allowlist::is_live`] ignores pins: admitting *new* flows with it lets the
//! TTL alone decide, where `contains` would let any long-lived flow keep admitting new flows to an
//! expired or forgotten address.
//!
//! Time is a `u64` of monotonic nanoseconds supplied by the caller (`now`); this module never
//! reads a clock on the worker side. Entries with `expires_at > now` are live.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use sluice_policy::RuleKey;

/// Largest supported [`AllowlistConfig::capacity`]: entry numbers are `u32` (so a raw
/// [`PinHandle`] is never `u32::MAX`) and the index, at most 2^31 slots, must stay addressable by
/// the 32 hash bits kept per entry.
pub const MAX_CAPACITY: usize = 1 << 30;

/// Slots a full table examines (from the sweep cursor) to reclaim room for a `Learn`.
const RECLAIM_PROBE: usize = 32;

/// Entry slots a `ForgetRule`/`Clear` scans per unit of `drain`'s `max_updates` budget.
const BULK_SLOTS_PER_UNIT: usize = 64;

/// Empty index slot.
const EMPTY: u32 = u32::MAX;

/// End of the free list.
const NIL: u32 = u32::MAX;

/// Sizing of every worker's allowlist and update channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowlistConfig {
    /// Entries per worker, `1..=MAX_CAPACITY`. Used exactly; the index is sized to the next power
    /// of two of at least twice this, so its load factor never exceeds 0.5.
    pub capacity: usize,
    /// Updates that may be queued for one worker before [`AllowlistWriter::send`] waits (`>= 1`).
    pub channel_capacity: usize,
}

/// A change to the allowlist, applied by every worker in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistUpdate {
    /// `ip` was answered for a name matching `rule`, valid until `expires_at`. An existing entry's
    /// expiry becomes the later of the two. A `Learn` that has already expired when a worker
    /// applies it is ignored (counted in [`AllowlistStats::stale`]).
    Learn { rule: RuleKey, ip: u32, expires_at: u64 },
    /// Remove one entry; if flows have it pinned, mark it expired and remove it at the last unpin.
    Forget { rule: RuleKey, ip: u32 },
    /// [`AllowlistUpdate::Forget`] every entry of `rule`.
    ForgetRule { rule: RuleKey },
    /// [`AllowlistUpdate::Forget`] every entry.
    Clear,
}

/// Identifies one sent update; see [`AllowlistWriter::is_applied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    /// The update's sequence number (for logs); the first update sent is 1.
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Why [`AllowlistWriter::send`] did not queue an update. Nothing was queued to any worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowlistSendError {
    /// A live worker's channel stayed full (or another send held the writer) for the whole
    /// timeout: that worker is not draining.
    Full,
    /// Every worker has dropped its allowlist.
    Disconnected,
}

impl fmt::Display for AllowlistSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowlistSendError::Full => f.write_str(
                "allowlist update not queued: a dataplane worker's update channel stayed full \
                 for the whole timeout (the worker is not draining)",
            ),
            AllowlistSendError::Disconnected => {
                f.write_str("allowlist update not queued: every dataplane worker has dropped its allowlist")
            }
        }
    }
}

impl std::error::Error for AllowlistSendError {}

/// What one worker publishes to the writer. Aligned to its own cache lines: the worker stores
/// `applied` after every drain that changed something and the writer polls it.
#[repr(align(128))]
struct WorkerShared {
    /// Highest sequence number this worker has applied (0: none).
    applied: AtomicU64,
    /// Cleared when the worker drops its `Allowlist`.
    alive: AtomicBool,
}

struct WorkerLink {
    tx: Sender<Message>,
    shared: Arc<WorkerShared>,
}

struct WriterShared {
    workers: Box<[WorkerLink]>,
    /// Last sequence number handed out. Held while an update is fanned out, so every worker
    /// receives updates in sequence order.
    last_seq: Mutex<u64>,
}

struct Message {
    seq: u64,
    update: AllowlistUpdate,
}

/// Creates the writer and one [`Allowlist`] per worker, all preallocated.
///
/// Panics if `workers` is 0, `cfg.capacity` is not in `1..=MAX_CAPACITY` or
/// `cfg.channel_capacity` is 0.
pub fn allowlist_channel(workers: usize, cfg: &AllowlistConfig) -> (AllowlistWriter, Vec<Allowlist>) {
    assert!(workers > 0, "allowlist: need at least one worker");
    assert!(
        (1..=MAX_CAPACITY).contains(&cfg.capacity),
        "allowlist: capacity {} not in 1..={MAX_CAPACITY}",
        cfg.capacity
    );
    assert!(cfg.channel_capacity > 0, "allowlist: channel_capacity must be at least 1");
    let mut links = Vec::with_capacity(workers);
    let mut lists = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = crossbeam_channel::bounded(cfg.channel_capacity);
        let shared = Arc::new(WorkerShared { applied: AtomicU64::new(0), alive: AtomicBool::new(true) });
        links.push(WorkerLink { tx, shared: Arc::clone(&shared) });
        lists.push(Allowlist::new(cfg.capacity, rx, shared));
    }
    let writer = AllowlistWriter {
        shared: Arc::new(WriterShared { workers: links.into_boxed_slice(), last_seq: Mutex::new(0) }),
    };
    (writer, lists)
}

/// Control-plane side: sends every update to every worker. Cheap to clone; all clones share one
/// sequence. Blocking calls wait with a short spin, then yields, then sleeps of at most 1 ms; never
/// call them on a packet path.
#[derive(Clone)]
pub struct AllowlistWriter {
    shared: Arc<WriterShared>,
}

impl fmt::Debug for AllowlistWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowlistWriter")
            .field("workers", &self.shared.workers.len())
            .field("live_workers", &self.live_workers())
            .finish()
    }
}

impl AllowlistWriter {
    /// Queues `update` to every live worker, waiting up to `timeout` for room, and returns its
    /// ticket. All or nothing: on error no worker received it.
    pub fn send(&self, update: AllowlistUpdate, timeout: Duration) -> Result<Ticket, AllowlistSendError> {
        let deadline = Deadline::after(timeout);
        let mut last_seq = self.lock_seq(deadline)?;
        // Wait until every live worker has room. Only the holder of `last_seq` sends and workers
        // only remove messages, so a channel with room now still has room below.
        let mut backoff = Backoff::default();
        loop {
            let mut live = 0usize;
            let mut full = false;
            for w in self.shared.workers.iter() {
                if !w.shared.alive.load(Ordering::Acquire) {
                    continue;
                }
                live += 1;
                if w.tx.is_full() {
                    full = true;
                    break;
                }
            }
            if live == 0 {
                return Err(AllowlistSendError::Disconnected);
            }
            if !full {
                break;
            }
            if deadline.passed() {
                return Err(AllowlistSendError::Full);
            }
            backoff.wait(deadline);
        }
        let seq = *last_seq + 1;
        let mut delivered = 0usize;
        for w in self.shared.workers.iter() {
            // A worker alive here was alive (and had room) in the loop above: `alive` only falls.
            if !w.shared.alive.load(Ordering::Acquire) {
                continue;
            }
            match w.tx.try_send(Message { seq, update }) {
                Ok(()) => delivered += 1,
                // Dropped its allowlist since the check; it is excluded from tickets.
                Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    unreachable!("allowlist: worker channel filled up while the writer held the lock")
                }
            }
        }
        if delivered == 0 {
            return Err(AllowlistSendError::Disconnected);
        }
        *last_seq = seq;
        Ok(Ticket(seq))
    }

    /// `send(AllowlistUpdate::Learn { rule, ip, expires_at }, timeout)`.
    pub fn learn(
        &self,
        rule: RuleKey,
        ip: u32,
        expires_at: u64,
        timeout: Duration,
    ) -> Result<Ticket, AllowlistSendError> {
        self.send(AllowlistUpdate::Learn { rule, ip, expires_at }, timeout)
    }

    /// True once every live worker has applied the update (and so every update before it).
    /// Workers that dropped their allowlist are ignored; with none left this is true.
    pub fn is_applied(&self, ticket: Ticket) -> bool {
        self.shared
            .workers
            .iter()
            .all(|w| w.shared.applied.load(Ordering::Acquire) >= ticket.0 || !w.shared.alive.load(Ordering::Acquire))
    }

    /// Waits up to `timeout` for [`AllowlistWriter::is_applied`]; returns whether it became true.
    pub fn wait_applied(&self, ticket: Ticket, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        let mut backoff = Backoff::default();
        loop {
            if self.is_applied(ticket) {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            backoff.wait(deadline);
        }
    }

    /// Workers that still hold their allowlist.
    pub fn live_workers(&self) -> usize {
        self.shared.workers.iter().filter(|w| w.shared.alive.load(Ordering::Acquire)).count()
    }

    /// The sequence lock, waited for with the caller's deadline rather than indefinitely (another
    /// sender may be waiting out its own timeout on a full channel).
    fn lock_seq(&self, deadline: Deadline) -> Result<MutexGuard<'_, u64>, AllowlistSendError> {
        let mut backoff = Backoff::default();
        loop {
            match self.shared.last_seq.try_lock() {
                Ok(guard) => return Ok(guard),
                // Only the `unreachable!` in `send` can panic while the lock is held, and the
                // counter is written only after a complete fan-out.
                Err(TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {
                    if deadline.passed() {
                        return Err(AllowlistSendError::Full);
                    }
                    backoff.wait(deadline);
                }
            }
        }
    }
}

/// `None` when the timeout is too large to represent: wait forever.
#[derive(Clone, Copy)]
struct Deadline(Option<Instant>);

impl Deadline {
    fn after(timeout: Duration) -> Self {
        Deadline(Instant::now().checked_add(timeout))
    }

    fn passed(self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }

    fn clamp(self, step: Duration) -> Duration {
        match self.0 {
            Some(d) => step.min(d.saturating_duration_since(Instant::now())),
            None => step,
        }
    }
}

/// Writer-side waiting: spin briefly, then yield, then sleep in steps growing to 1 ms.
#[derive(Default)]
struct Backoff {
    round: u32,
}

impl Backoff {
    const SPIN_ROUNDS: u32 = 7;
    const YIELD_ROUNDS: u32 = 8;
    const MIN_SLEEP: Duration = Duration::from_micros(20);
    const MAX_SLEEP: Duration = Duration::from_millis(1);

    fn wait(&mut self, deadline: Deadline) {
        if self.round < Self::SPIN_ROUNDS {
            for _ in 0..1u32 << self.round {
                std::hint::spin_loop();
            }
        } else if self.round < Self::SPIN_ROUNDS + Self::YIELD_ROUNDS {
            thread::yield_now();
        } else {
            let doublings = (self.round - Self::SPIN_ROUNDS - Self::YIELD_ROUNDS).min(6);
            let step = (Self::MIN_SLEEP * (1 << doublings)).min(Self::MAX_SLEEP);
            thread::sleep(deadline.clamp(step));
        }
        self.round = self.round.saturating_add(1);
    }
}

/// Proof that a flow holds an entry; give it back with [`Allowlist::unpin`]. Not `Clone`, so an
/// entry cannot be unpinned twice for one pin. Valid while pinned: a pinned entry never moves or
/// leaves its slot. Only meaningful to the `Allowlist` that issued it.
///
/// It is the entry's slot number, so a flow record can store it in 4 bytes
/// ([`PinHandle::to_raw`]); a raw handle is never `u32::MAX`, which callers may use as "no pin".
#[derive(Debug, PartialEq, Eq)]
pub struct PinHandle(u32);

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
struct Entry {
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
/// Buckets of the per-address presence filter (64 KiB).
const IP_FILTER_BUCKETS: usize = 1 << 16;

#[inline]
fn ip_bucket(ip: u32, seed: u64) -> usize {
    ((ip ^ seed as u32).wrapping_mul(0x9E37_79B1) >> 16) as usize
}

pub struct Allowlist {
    entries: Box<[Entry]>,
    /// Presence filter by address: how many entries have an address in each bucket. Most
    /// flows checked against a hostname rule go to addresses nobody learned; one byte in a
    /// 64 KiB array (cache-resident) answers "no" for them without touching the index. A
    /// bucket that reaches 255 stays there (a permanent, harmless false positive).
    ip_filter: Box<[u8]>,
    index: Box<[u32]>,
    /// `index.len() - 1`.
    mask: usize,
    free_head: u32,
    len: usize,
    sweep_cursor: usize,
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
    fn new(capacity: usize, rx: Receiver<Message>, shared: Arc<WorkerShared>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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

    /// Checks the index invariants: every used entry is reachable from its home, the index
    /// holds exactly the used entries, and the free list holds exactly the others.
    fn check_structure(a: &Allowlist) {
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

    mod model {
        use super::*;
        use proptest::prelude::*;

        const CAP: usize = 8;

        #[derive(Debug, Clone)]
        enum Op {
            Learn { rule: u64, ip: u32, ttl: u64 },
            Forget { rule: u64, ip: u32 },
            ForgetRule { rule: u64 },
            Clear,
            Pin { rule: u64, ip: u32 },
            Unpin { pick: usize },
            Sweep { budget: usize },
            Advance { dt: u64 },
        }

        fn op() -> impl Strategy<Value = Op> {
            let rule = 0u64..3;
            let ip = 0u32..6;
            prop_oneof![
                6 => (rule.clone(), ip.clone(), 0u64..40)
                    .prop_map(|(rule, ip, ttl)| Op::Learn { rule, ip, ttl }),
                2 => (rule.clone(), ip.clone()).prop_map(|(rule, ip)| Op::Forget { rule, ip }),
                1 => rule.clone().prop_map(|rule| Op::ForgetRule { rule }),
                1 => Just(Op::Clear),
                4 => (rule, ip).prop_map(|(rule, ip)| Op::Pin { rule, ip }),
                3 => any::<usize>().prop_map(|pick| Op::Unpin { pick }),
                2 => (0usize..12).prop_map(|budget| Op::Sweep { budget }),
                3 => (0u64..25).prop_map(|dt| Op::Advance { dt }),
            ]
        }

        /// `(rule, ip) -> (expires_at, pins)`; holds exactly the entries that must match.
        type Model = HashMap<(u64, u32), (u64, u32)>;

        fn holds(&(exp, pins): &(u64, u32), now: u64) -> bool {
            exp > now || pins > 0
        }

        fn check(a: &Allowlist, model: &Model, now: u64) {
            assert!(a.len() <= a.capacity());
            for rule in 0..3 {
                for ip in 0..6 {
                    let want = model.get(&(rule, ip)).is_some_and(|m| holds(m, now));
                    let live = model.get(&(rule, ip)).is_some_and(|m| m.0 > now);
                    assert_eq!(a.is_live(RuleKey(rule), ip, now), live);
                    assert_eq!(a.contains(RuleKey(rule), ip, now), want, "({rule}, {ip}) at {now}");
                }
            }
            let mut present = 0;
            a.for_each(|rule, ip, exp, pins| {
                present += 1;
                match model.get(&(rule.0, ip)) {
                    Some(&m) => assert_eq!((exp, pins), m, "({}, {ip})", rule.0),
                    None => assert!(exp <= now && pins == 0, "unexpected live entry"),
                }
            });
            assert_eq!(present, a.len());
            let pinned = model.values().filter(|m| m.1 > 0).count();
            assert_eq!(a.stats().pinned, pinned);
            check_structure(a);
        }

        fn run(ops: Vec<Op>) {
            let (w, mut a) = single(CAP);
            let mut model = Model::new();
            let mut handles: Vec<((u64, u32), PinHandle)> = Vec::new();
            let mut now = 1u64;
            for op in ops {
                match op {
                    Op::Learn { rule, ip, ttl } => {
                        let exp = now + ttl;
                        let drops = a.stats().full_drops;
                        learn(&w, &mut a, now, RuleKey(rule), ip, exp);
                        let dropped = a.stats().full_drops > drops;
                        match model.get_mut(&(rule, ip)) {
                            Some(m) => {
                                assert!(!dropped, "refresh of a held entry dropped");
                                m.0 = m.0.max(exp);
                            }
                            None if exp <= now => assert!(!dropped),
                            None if dropped => assert_eq!(a.len(), CAP, "dropped with room"),
                            None => {
                                model.insert((rule, ip), (exp, 0));
                            }
                        }
                    }
                    Op::Forget { rule, ip } => {
                        let update = AllowlistUpdate::Forget { rule: RuleKey(rule), ip };
                        apply(&w, &mut a, now, update);
                        if let Some(m) = model.get_mut(&(rule, ip)) {
                            m.0 = 0;
                        }
                    }
                    Op::ForgetRule { rule } => {
                        let update = AllowlistUpdate::ForgetRule { rule: RuleKey(rule) };
                        apply(&w, &mut a, now, update);
                        model.iter_mut().filter(|(k, _)| k.0 == rule).for_each(|(_, m)| m.0 = 0);
                    }
                    Op::Clear => {
                        apply(&w, &mut a, now, AllowlistUpdate::Clear);
                        model.values_mut().for_each(|m| m.0 = 0);
                    }
                    // As the engine does: pin what `contains` just admitted.
                    Op::Pin { rule, ip } => {
                        if a.contains(RuleKey(rule), ip, now) {
                            let h = a.pin(RuleKey(rule), ip).expect("pin of a held entry");
                            assert_ne!(h.0, u32::MAX);
                            let m = model.get_mut(&(rule, ip)).unwrap();
                            m.1 += 1;
                            // Flow records keep the raw form.
                            handles.push(((rule, ip), PinHandle::from_raw(h.to_raw())));
                        }
                    }
                    Op::Unpin { pick } => {
                        if !handles.is_empty() {
                            let (key, h) = handles.swap_remove(pick % handles.len());
                            a.unpin(h);
                            model.get_mut(&key).unwrap().1 -= 1;
                        }
                    }
                    Op::Sweep { budget } => {
                        let len = a.len();
                        let removed = a.sweep(now, budget);
                        assert!(removed <= budget);
                        assert_eq!(a.len(), len - removed);
                    }
                    Op::Advance { dt } => now += dt,
                }
                // Entries that are expired and unpinned may or may not still be present.
                model.retain(|_, m| holds(m, now));
                check(&a, &model, now);
            }
            // Every handle is still valid: release them all and the table empties.
            for (key, h) in handles {
                a.unpin(h);
                model.get_mut(&key).unwrap().1 -= 1;
            }
            apply(&w, &mut a, now, AllowlistUpdate::Clear);
            assert!(a.is_empty());
            assert_eq!(a.stats().pinned, 0);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn allowlist_matches_hashmap_model(ops in proptest::collection::vec(op(), 1..200)) {
                run(ops);
            }
        }
    }
}

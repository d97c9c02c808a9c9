//! Bounded ARP neighbour cache with a queue of frames waiting for resolution; one per port.
//!
//! Everything is allocated in [`NeighborCache::new`]: the entries, an open-addressing index
//! (linear probing, at most half full, backward-shift deletion, so no tombstones), one `Vec<u8>`
//! of `pending_total * max_frame_len` bytes for held frames, and small per-slot bookkeeping.
//! No method allocates, locks or makes a system call.
//!
//! # States
//! - **Incomplete**: being resolved; holds up to `pending_per_neighbor` frames; probed every
//!   `retry_interval_ns`, `max_probes` times in all (the first probe is the one [`hold`] asks
//!   for). One `retry_interval_ns` after the last probe without an answer it becomes
//! - **Failed** for `failed_hold_ns`: its frames are dropped and new frames for it are refused
//!   ([`Hold::DroppedFailed`]) so an absent host does not cause a flood of probes. The next hold
//!   after the period starts resolving again; [`poll`] frees failed entries whose period ended.
//! - **Reachable**: [`learn`] confirmed the MAC; [`lookup`] returns it for `reachable_ns` after
//!   the last confirmation. After that the entry is **Stale**: lookups miss, the next hold
//!   resolves it again, and it is the first to be evicted.
//!
//! A reachable neighbour still in use is re-confirmed before it expires: a lookup hit within
//! `refresh_before_ns` of expiry queues one refresh probe, which the next [`poll`] sends, so
//! busy neighbours (the default gateway) normally never expire and traffic is not held.
//!
//! # Bounds
//! Entries: `capacity`. When the table is full a new entry (from [`hold`] or [`learn`]) takes
//! the place of the least recently confirmed Reachable/Stale entry (such entries never have
//! frames waiting); if every entry is Incomplete or Failed the hold is refused / the learn
//! ignored (counted as `table_full`). Frames: `pending_per_neighbor` per entry and
//! `pending_total` in all (frames released by [`learn`] but not yet taken count towards the
//! total). A refused frame is the new one (tail drop).
//!
//! # Accounting
//! Every frame [`hold`] accepted is, exactly once, either handed to [`take_released`] or
//! dropped when its neighbour failed (`dropped_unresolved`, also returned by [`poll`]). In
//! [`NeighborStats`]: `held == released + releasable + pending + dropped_unresolved`.
//!
//! # Time
//! `now` is monotonic nanoseconds from the caller. A `now` older than one seen before is
//! treated as the newest seen (time never goes backwards inside the cache).
//!
//! [`hold`]: NeighborCache::hold
//! [`learn`]: NeighborCache::learn
//! [`lookup`]: NeighborCache::lookup
//! [`poll`]: NeighborCache::poll
//! [`take_released`]: NeighborCache::take_released

use std::fmt;

mod entries;
mod frames;

/// Sizes and timers of a [`NeighborCache`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    /// Maximum number of entries (at least 1).
    pub capacity: usize,
    /// Frames held per unresolved neighbour.
    pub pending_per_neighbor: usize,
    /// Frames held in all (the size of the frame store in frames).
    pub pending_total: usize,
    /// Longest frame that can be held; longer ones get [`Hold::DroppedTooBig`].
    pub max_frame_len: usize,
    /// Time between probes for an incomplete entry, and from the last probe to giving up (> 0).
    pub retry_interval_ns: u64,
    /// Probes sent before giving up, the first included (at least 1).
    pub max_probes: u32,
    /// How long a confirmation keeps an entry usable.
    pub reachable_ns: u64,
    /// How long a neighbour that did not answer is not probed again.
    pub failed_hold_ns: u64,
    /// A lookup hit this close to expiry queues a refresh probe (0 disables refreshing).
    pub refresh_before_ns: u64,
    /// Entries [`NeighborCache::poll`] examines per call at most (at least 1); it also bounds
    /// the probes one call asks for.
    pub poll_budget: usize,
    /// Keys the index hash, so addresses chosen to collide (e.g. ARP from a hostile host)
    /// cannot build long probe chains; give each cache a random one.
    pub hash_seed: u64,
}

impl Default for NeighborConfig {
    fn default() -> Self {
        NeighborConfig {
            capacity: 1024,
            pending_per_neighbor: 4,
            pending_total: 256,
            max_frame_len: 2048,
            retry_interval_ns: 1_000_000_000,
            max_probes: 3,
            reachable_ns: 300_000_000_000,
            failed_hold_ns: 3_000_000_000,
            refresh_before_ns: 5_000_000_000,
            poll_budget: 16,
            hash_seed: 0x243F_6A88_85A3_08D3,
        }
    }
}

/// What [`NeighborCache::hold`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The frame was copied; it will come out of [`NeighborCache::take_released`] or be counted
    /// in `dropped_unresolved`. `send_probe`: the caller must send an ARP request for the
    /// address now.
    Queued { send_probe: bool },
    /// Per-neighbour or total frame limit reached, or no entry could be made (table full of
    /// unresolved neighbours). Not queued.
    DroppedFull,
    /// The neighbour failed to answer recently. Not queued.
    DroppedFailed,
    /// Longer than `max_frame_len`. Not queued.
    DroppedTooBig,
}

/// State of an entry, for diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighborState {
    Incomplete,
    Reachable,
    /// Reachable, but the confirmation is older than `reachable_ns` (as of the latest `now`).
    Stale,
    Failed,
}

/// Counters of a [`NeighborCache`] (totals since creation, except the first three).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighborStats {
    /// Entries in use.
    pub entries: usize,
    /// Frames held for unresolved neighbours.
    pub pending: usize,
    /// Frames resolved by `learn` and waiting for `take_released`.
    pub releasable: usize,
    /// Frames accepted by `hold`.
    pub held: u64,
    /// Frames handed to the `take_released` callback.
    pub released: u64,
    /// Probes requested (by `hold` and `poll`, refreshes included).
    pub probes_sent: u64,
    /// Incomplete entries resolved by `learn`.
    pub resolved: u64,
    /// Entries that gave up after `max_probes`.
    pub failed: u64,
    /// Holds refused with [`Hold::DroppedFull`].
    pub dropped_full: u64,
    /// Holds refused with [`Hold::DroppedFailed`].
    pub dropped_failed: u64,
    /// Holds refused with [`Hold::DroppedTooBig`].
    pub dropped_too_big: u64,
    /// Held frames dropped because their neighbour did not answer.
    pub dropped_unresolved: u64,
    /// Reachable/stale entries evicted to make room.
    pub evicted: u64,
    /// Holds and learns that found no free entry and nothing to evict.
    pub table_full: u64,
}

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Free,
    Incomplete,
    Reachable,
    Failed,
}

/// Refresh progress of a Reachable entry since its last confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    Idle,
    Queued,
    Probed,
}

/// Entry lists, each kept in time order (see `link_tail`): Reachable entries by confirmation
/// time (eviction order), Incomplete by next probe time, Failed by end of the hold period.
const LRU: usize = 0;
const PROBE: usize = 1;
const FAILED: usize = 2;

#[derive(Clone, Copy, Debug)]
struct Entry {
    ip: u32,
    mac: [u8; 6],
    state: St,
    refresh: Refresh,
    probes: u32,
    /// Reachable: last confirmation.
    confirmed: u64,
    /// Incomplete: next probe (or giving up) due. Failed: end of the hold period.
    due: u64,
    /// Links in the list of the entry's state.
    prev: u32,
    next: u32,
    /// FIFO of held frames (slot indices).
    q_head: u32,
    q_tail: u32,
    q_len: u32,
}

const FREE_ENTRY: Entry = Entry {
    ip: 0,
    mac: [0; 6],
    state: St::Free,
    refresh: Refresh::Idle,
    probes: 0,
    confirmed: 0,
    due: 0,
    prev: NIL,
    next: NIL,
    q_head: NIL,
    q_tail: NIL,
    q_len: 0,
};

/// Bookkeeping of one frame slot of the store.
#[derive(Clone, Copy, Debug)]
struct Slot {
    len: u32,
    /// Next slot in the entry's FIFO, the released FIFO or the free list.
    next: u32,
    /// Set when released.
    ip: u32,
    mac: [u8; 6],
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List { head: NIL, tail: NIL };

/// The cache. See the [module documentation](self).
pub struct NeighborCache {
    cfg: NeighborConfig,
    entries: Vec<Entry>,
    free_entries: Vec<u32>,
    /// Open addressing: entry index or NIL; power-of-two size, at most half full.
    index: Vec<u32>,
    index_shift: u32,
    index_mask: usize,
    lists: [List; 3],
    /// The frame store: slot `s` is `frames[s * max_frame_len..][..max_frame_len]`.
    frames: Vec<u8>,
    slots: Vec<Slot>,
    free_slots: u32,
    released: List,
    pending: usize,
    releasable: usize,
    /// Entries whose refresh probe is due (ring of entry indices).
    refresh_ring: Vec<u32>,
    ring_head: usize,
    ring_len: usize,
    now: u64,
    stats: NeighborStats,
}

impl fmt::Debug for NeighborCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NeighborCache").field("cfg", &self.cfg).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl NeighborCache {
    /// Allocates everything. Panics on an unusable configuration (capacity, max_probes,
    /// retry_interval_ns or poll_budget zero; sizes beyond 32-bit indices).
    pub fn new(cfg: NeighborConfig) -> Self {
        assert!(cfg.capacity >= 1, "neighbour capacity must be at least 1");
        assert!(cfg.capacity <= 1 << 30, "neighbour capacity too large");
        assert!(cfg.pending_total < NIL as usize, "pending_total too large");
        assert!(cfg.max_frame_len <= u32::MAX as usize, "max_frame_len too large");
        assert!(cfg.max_probes >= 1, "max_probes must be at least 1");
        assert!(cfg.retry_interval_ns > 0, "retry_interval_ns must be positive");
        assert!(cfg.poll_budget >= 1, "poll_budget must be at least 1");
        let store = cfg.pending_total.checked_mul(cfg.max_frame_len).expect("frame store size overflows");

        let index_len = (cfg.capacity * 2).next_power_of_two().max(8);
        let bits = index_len.trailing_zeros();
        debug_assert!((3..=31).contains(&bits));
        let slots = (0..cfg.pending_total)
            .map(|s| Slot {
                len: 0,
                next: if s + 1 < cfg.pending_total { (s + 1) as u32 } else { NIL },
                ip: 0,
                mac: [0; 6],
            })
            .collect();
        NeighborCache {
            entries: vec![FREE_ENTRY; cfg.capacity],
            // Popped from the end: entry 0 is used first.
            free_entries: (0..cfg.capacity as u32).rev().collect(),
            index: vec![NIL; index_len],
            index_shift: 64 - bits,
            index_mask: index_len - 1,
            lists: [EMPTY; 3],
            frames: vec![0; store],
            slots,
            free_slots: if cfg.pending_total > 0 { 0 } else { NIL },
            released: EMPTY,
            pending: 0,
            releasable: 0,
            refresh_ring: vec![NIL; cfg.capacity],
            ring_head: 0,
            ring_len: 0,
            now: 0,
            stats: NeighborStats::default(),
            cfg,
        }
    }

    /// The configuration the cache was made with.
    pub fn config(&self) -> &NeighborConfig {
        &self.cfg
    }

    /// The MAC of `ip` if it is Reachable and confirmed at most `reachable_ns` ago. Hot path:
    /// one hash probe sequence, no allocation. A hit close to expiry queues a refresh probe for
    /// the next [`poll`](Self::poll).
    #[inline]
    pub fn lookup(&mut self, ip: u32, now: u64) -> Option<[u8; 6]> {
        let now = self.clock(now);
        let e = self.find(ip)?;
        let entry = &self.entries[e as usize];
        if entry.state != St::Reachable {
            return None;
        }
        let age = now - entry.confirmed;
        if age > self.cfg.reachable_ns {
            return None;
        }
        let mac = entry.mac;
        if self.cfg.refresh_before_ns > 0
            && entry.refresh == Refresh::Idle
            && age >= self.cfg.reachable_ns.saturating_sub(self.cfg.refresh_before_ns)
        {
            self.queue_refresh(e);
        }
        Some(mac)
    }

    /// Holds a copy of `frame` until `ip` is resolved, creating an Incomplete entry if there is
    /// none. See [`Hold`]. `send_probe` is true for the first frame of a new (or re-started)
    /// resolution and then again only once `retry_interval_ns` has passed since the last probe
    /// (while probes remain).
    pub fn hold(&mut self, ip: u32, frame: &[u8], now: u64) -> Hold {
        let now = self.clock(now);
        if frame.len() > self.cfg.max_frame_len {
            self.stats.dropped_too_big += 1;
            return Hold::DroppedTooBig;
        }
        let Some(e) = self.find_or_alloc(ip) else {
            self.stats.dropped_full += 1;
            return Hold::DroppedFull;
        };
        let eu = e as usize;
        // `linked`: the entry is already Incomplete and in the probe list.
        let linked = match self.entries[eu].state {
            St::Incomplete => true,
            St::Free => false, // just allocated
            St::Reachable => {
                if now - self.entries[eu].confirmed <= self.cfg.reachable_ns {
                    // Resolved meanwhile (the caller's lookup raced a learn): release at once.
                    return self.hold_resolved(e, frame);
                }
                self.unlink(LRU, e);
                false
            }
            St::Failed => {
                if now < self.entries[eu].due {
                    self.stats.dropped_failed += 1;
                    return Hold::DroppedFailed;
                }
                self.unlink(FAILED, e);
                false
            }
        };
        if !linked {
            let entry = &mut self.entries[eu];
            entry.state = St::Incomplete;
            entry.probes = 0;
            entry.refresh = Refresh::Idle;
            debug_assert_eq!(entry.q_len, 0);
        }

        let queued = self.entries[eu].q_len < self.cfg.pending_per_neighbor as u32 && self.enqueue(e, frame);
        let entry = &mut self.entries[eu];
        let send_probe = queued && entry.probes < self.cfg.max_probes && (!linked || now >= entry.due);
        if send_probe {
            entry.probes += 1;
            entry.due = now.saturating_add(self.cfg.retry_interval_ns);
            self.stats.probes_sent += 1;
            if linked {
                self.unlink(PROBE, e);
            }
            self.link_tail(PROBE, e);
        } else if !linked {
            // A new resolution whose first frame was refused: probe at the next poll. At the
            // head, due now, it keeps the list's "due in order" property for later polls.
            entry.due = now;
            self.link_head(PROBE, e);
        }
        if queued {
            self.stats.held += 1;
            Hold::Queued { send_probe }
        } else {
            self.stats.dropped_full += 1;
            Hold::DroppedFull
        }
    }

    /// Records that `ip` is at `mac` (from an ARP reply or request): creates the entry (if a
    /// free or evictable one exists) or refreshes it; either way it becomes Reachable. Frames
    /// held for it become available to [`take_released`](Self::take_released), in order.
    pub fn learn(&mut self, ip: u32, mac: [u8; 6], now: u64) {
        let now = self.clock(now);
        let Some(e) = self.find_or_alloc(ip) else { return };
        self.confirm(e, mac, now);
    }

    /// Like [`learn`](Self::learn) but only for an address that already has an entry (for
    /// unsolicited ARP the caller does not want to create entries for). Returns whether it did.
    pub fn update_existing(&mut self, ip: u32, mac: [u8; 6], now: u64) -> bool {
        let now = self.clock(now);
        match self.find(ip) {
            Some(e) => {
                self.confirm(e, mac, now);
                true
            }
            None => false,
        }
    }

    /// Hands every frame released by [`learn`](Self::learn) to `f` with its neighbour's address
    /// and MAC, oldest first (per neighbour: in the order held); each slot is freed after its
    /// callback. The caller patches the destination MAC and sends the frame.
    pub fn take_released(&mut self, mut f: impl FnMut(u32, [u8; 6], &mut [u8])) {
        let mfl = self.cfg.max_frame_len;
        while self.released.head != NIL {
            let s = self.released.head;
            let slot = self.slots[s as usize];
            self.released.head = slot.next;
            let start = s as usize * mfl;
            f(slot.ip, slot.mac, &mut self.frames[start..start + slot.len as usize]);
            self.free_slot(s);
            self.releasable -= 1;
            self.stats.released += 1;
        }
        self.released.tail = NIL;
        debug_assert_eq!(self.releasable, 0);
    }

    /// Timer work, bounded: examines at most `poll_budget` entries per call (so `probe` is
    /// called at most `poll_budget` times), taken in due
    /// order from three lists kept sorted by time — no scan of the table:
    /// 1. Incomplete entries whose probe is due: probe again (`probe(ip)`), or after
    ///    `max_probes` give up: drop their frames (at most `pending_per_neighbor` each) and
    ///    mark them Failed for `failed_hold_ns`;
    /// 2. Failed entries whose hold period ended: freed;
    /// 3. queued refresh probes of Reachable entries in use: `probe(ip)`.
    ///
    /// Returns the number of frames dropped (also counted in `dropped_unresolved`). Call it
    /// often (every burst or every millisecond); timer precision is the call interval.
    pub fn poll(&mut self, now: u64, mut probe: impl FnMut(u32)) -> usize {
        let now = self.clock(now);
        let mut budget = self.cfg.poll_budget;
        let mut dropped = 0;
        while budget > 0 {
            let e = self.lists[PROBE].head;
            if e == NIL || self.entries[e as usize].due > now {
                break;
            }
            budget -= 1;
            self.unlink(PROBE, e);
            let entry = &mut self.entries[e as usize];
            if entry.probes < self.cfg.max_probes {
                entry.probes += 1;
                entry.due = now.saturating_add(self.cfg.retry_interval_ns);
                self.stats.probes_sent += 1;
                probe(entry.ip);
                self.link_tail(PROBE, e);
            } else {
                entry.state = St::Failed;
                entry.due = now.saturating_add(self.cfg.failed_hold_ns);
                self.stats.failed += 1;
                dropped += self.drop_frames(e);
                self.link_tail(FAILED, e);
            }
        }
        while budget > 0 {
            let e = self.lists[FAILED].head;
            if e == NIL || self.entries[e as usize].due > now {
                break;
            }
            budget -= 1;
            self.free_entry(e);
        }
        while budget > 0 && self.ring_len > 0 {
            budget -= 1;
            let e = self.refresh_ring[self.ring_head];
            self.ring_head = (self.ring_head + 1) % self.refresh_ring.len();
            self.ring_len -= 1;
            let entry = &mut self.entries[e as usize];
            if entry.state == St::Reachable && entry.refresh == Refresh::Queued {
                entry.refresh = Refresh::Probed;
                self.stats.probes_sent += 1;
                probe(entry.ip);
            }
        }
        self.stats.dropped_unresolved += dropped as u64;
        dropped
    }

    /// Current counters.
    pub fn stats(&self) -> NeighborStats {
        NeighborStats {
            entries: self.cfg.capacity - self.free_entries.len(),
            pending: self.pending,
            releasable: self.releasable,
            ..self.stats
        }
    }

    /// Calls `f(ip, mac, state)` for every entry (MAC for Reachable and Stale only). For
    /// diagnostics: walks the whole table.
    pub fn for_each(&self, mut f: impl FnMut(u32, Option<[u8; 6]>, NeighborState)) {
        for entry in &self.entries {
            match entry.state {
                St::Free => {}
                St::Incomplete => f(entry.ip, None, NeighborState::Incomplete),
                St::Failed => f(entry.ip, None, NeighborState::Failed),
                St::Reachable => {
                    let state = if self.now - entry.confirmed > self.cfg.reachable_ns {
                        NeighborState::Stale
                    } else {
                        NeighborState::Reachable
                    };
                    f(entry.ip, Some(entry.mac), state)
                }
            }
        }
    }

    #[inline]
    fn clock(&mut self, now: u64) -> u64 {
        if now > self.now {
            self.now = now;
        }
        self.now
    }
}

#[cfg(test)]
mod tests;

//! Entry internals of the [`NeighborCache`]: the keyed open-addressing index, entry allocation
//! and eviction, confirmation, refresh queueing and the three time-ordered entry lists.

use super::{Entry, NeighborCache, Refresh, St, FAILED, FREE_ENTRY, LRU, NIL, PROBE};

impl NeighborCache {
    /// Keyed mix of the address (a 64-bit finaliser over address ^ seed); top bits index.
    #[inline]
    fn bucket(&self, ip: u32) -> usize {
        let mut h = u64::from(ip) ^ self.cfg.hash_seed;
        h = (h ^ (h >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h = (h ^ (h >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^= h >> 33;
        (h >> self.index_shift) as usize
    }

    #[inline]
    pub(super) fn find(&self, ip: u32) -> Option<u32> {
        let mut i = self.bucket(ip);
        loop {
            let e = self.index[i];
            if e == NIL {
                return None;
            }
            if self.entries[e as usize].ip == ip {
                return Some(e);
            }
            i = (i + 1) & self.index_mask;
        }
    }

    fn index_insert(&mut self, ip: u32, e: u32) {
        let mut i = self.bucket(ip);
        while self.index[i] != NIL {
            debug_assert_ne!(self.entries[self.index[i] as usize].ip, ip, "duplicate entry");
            i = (i + 1) & self.index_mask;
        }
        self.index[i] = e;
    }

    /// Removes `e` (whose `ip` must still be set) from the index, shifting later members of
    /// its probe run back so lookups never need tombstones.
    fn index_remove(&mut self, e: u32) {
        let mut hole = self.bucket(self.entries[e as usize].ip);
        while self.index[hole] != e {
            debug_assert_ne!(self.index[hole], NIL, "entry missing from the index");
            hole = (hole + 1) & self.index_mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & self.index_mask;
            let other = self.index[j];
            if other == NIL {
                break;
            }
            let home = self.bucket(self.entries[other as usize].ip);
            // `other` may move back to `hole` unless its home lies cyclically in (hole, j].
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.index[hole] = other;
                hole = j;
            }
        }
        self.index[hole] = NIL;
    }

    /// A fresh entry for `ip` (state Free, in the index, in no list): a free one, or the least
    /// recently confirmed Reachable/Stale one evicted. None if every entry is busy.
    /// The entry for `ip`, creating one if there is room (counting `table_full` if not).
    pub(super) fn find_or_alloc(&mut self, ip: u32) -> Option<u32> {
        let found = self.find(ip).or_else(|| self.alloc_entry(ip));
        if found.is_none() {
            self.stats.table_full += 1;
        }
        found
    }

    fn alloc_entry(&mut self, ip: u32) -> Option<u32> {
        let e = match self.free_entries.pop() {
            Some(e) => e,
            None => {
                let victim = self.lists[LRU].head;
                if victim == NIL {
                    return None;
                }
                self.free_entry(victim);
                self.stats.evicted += 1;
                self.free_entries.pop().expect("just freed")
            }
        };
        self.entries[e as usize] = Entry { ip, ..FREE_ENTRY };
        self.index_insert(ip, e);
        Some(e)
    }

    /// Frees an entry without frames: out of its list and the index.
    pub(super) fn free_entry(&mut self, e: u32) {
        let entry = self.entries[e as usize];
        debug_assert_eq!(entry.q_len, 0, "freeing an entry with frames");
        match entry.state {
            St::Reachable => self.unlink(LRU, e),
            St::Failed => self.unlink(FAILED, e),
            St::Incomplete => self.unlink(PROBE, e),
            St::Free => unreachable!("double free of a neighbour entry"),
        }
        self.index_remove(e);
        self.entries[e as usize] = FREE_ENTRY;
        debug_assert!(self.free_entries.len() < self.free_entries.capacity());
        self.free_entries.push(e);
    }

    /// Makes `e` Reachable at `mac`, releasing its frames.
    pub(super) fn confirm(&mut self, e: u32, mac: [u8; 6], now: u64) {
        match self.entries[e as usize].state {
            St::Free => {}
            St::Reachable => self.unlink(LRU, e),
            St::Failed => self.unlink(FAILED, e),
            St::Incomplete => {
                self.unlink(PROBE, e);
                self.release_frames(e, mac);
                self.stats.resolved += 1;
            }
        }
        let entry = &mut self.entries[e as usize];
        entry.state = St::Reachable;
        entry.mac = mac;
        entry.confirmed = now;
        entry.refresh = Refresh::Idle;
        entry.probes = 0;
        self.link_tail(LRU, e);
    }

    pub(super) fn queue_refresh(&mut self, e: u32) {
        let cap = self.refresh_ring.len();
        if self.ring_len == cap {
            return; // try again at a later lookup
        }
        self.refresh_ring[(self.ring_head + self.ring_len) % cap] = e;
        self.ring_len += 1;
        self.entries[e as usize].refresh = Refresh::Queued;
    }

    // Entry lists. Appending with a monotonic `now` keeps each list sorted by its time:
    // confirmations are `now`, probe and failure deadlines `now` + a constant.

    pub(super) fn link_tail(&mut self, list: usize, e: u32) {
        let tail = self.lists[list].tail;
        {
            let entry = &mut self.entries[e as usize];
            entry.prev = tail;
            entry.next = NIL;
        }
        if tail == NIL {
            self.lists[list].head = e;
        } else {
            self.entries[tail as usize].next = e;
        }
        self.lists[list].tail = e;
    }

    pub(super) fn link_head(&mut self, list: usize, e: u32) {
        let head = self.lists[list].head;
        {
            let entry = &mut self.entries[e as usize];
            entry.prev = NIL;
            entry.next = head;
        }
        if head == NIL {
            self.lists[list].tail = e;
        } else {
            self.entries[head as usize].prev = e;
        }
        self.lists[list].head = e;
    }

    pub(super) fn unlink(&mut self, list: usize, e: u32) {
        let Entry { prev, next, .. } = self.entries[e as usize];
        if prev == NIL {
            debug_assert_eq!(self.lists[list].head, e);
            self.lists[list].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            debug_assert_eq!(self.lists[list].tail, e);
            self.lists[list].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        let entry = &mut self.entries[e as usize];
        entry.prev = NIL;
        entry.next = NIL;
    }

    /// Checks every structural invariant; panics with a description if one is broken.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        let cfg = &self.cfg;
        let in_use = self.entries.iter().filter(|e| e.state != St::Free).count();
        assert_eq!(in_use + self.free_entries.len(), cfg.capacity);
        // Index: exactly the in-use entries, each findable.
        let indexed = self.index.iter().filter(|&&e| e != NIL).count();
        assert_eq!(indexed, in_use, "index size");
        assert!(indexed * 2 <= self.index.len());
        let mut queued = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if e.state == St::Free {
                assert_eq!(e.q_len, 0);
                continue;
            }
            assert_eq!(self.find(e.ip), Some(i as u32), "entry {i} not findable");
            assert!(e.q_len as usize <= cfg.pending_per_neighbor, "per-neighbour cap");
            if e.state != St::Incomplete {
                assert_eq!(e.q_len, 0, "frames on a {:?} entry", e.state);
            } else {
                assert!(e.probes <= cfg.max_probes);
            }
            let mut n = 0;
            let mut s = e.q_head;
            let mut last = NIL;
            while s != NIL {
                n += 1;
                last = s;
                s = self.slots[s as usize].next;
            }
            assert_eq!(n, e.q_len);
            assert_eq!(last, e.q_tail);
            queued += n as usize;
        }
        assert_eq!(queued, self.pending);
        // Lists partition the in-use entries by state; LRU and FAILED are time-ordered.
        let mut listed = 0;
        for (list, state) in [(LRU, St::Reachable), (PROBE, St::Incomplete), (FAILED, St::Failed)] {
            let mut e = self.lists[list].head;
            let mut prev = NIL;
            let mut last_time = 0;
            while e != NIL {
                let entry = &self.entries[e as usize];
                assert_eq!(entry.state, state, "entry {e} in the wrong list");
                assert_eq!(entry.prev, prev);
                let t = if list == LRU { entry.confirmed } else { entry.due };
                if list != PROBE {
                    assert!(t >= last_time, "list {list} out of order");
                }
                last_time = t;
                listed += 1;
                prev = e;
                e = entry.next;
            }
            assert_eq!(self.lists[list].tail, prev);
        }
        assert_eq!(listed, in_use, "entries missing from lists");
        // Slots: pending + released + free = total.
        let mut released = 0;
        let mut s = self.released.head;
        while s != NIL {
            released += 1;
            s = self.slots[s as usize].next;
        }
        assert_eq!(released, self.releasable);
        let mut free = 0;
        let mut s = self.free_slots;
        while s != NIL {
            free += 1;
            s = self.slots[s as usize].next;
        }
        assert_eq!(self.pending + self.releasable + free, cfg.pending_total, "slots leaked");
        assert!(self.ring_len <= self.refresh_ring.len());
    }
}

//! The frame store of the [`NeighborCache`]: slots of held frames, each neighbour's FIFO of
//! pending frames and the queue of frames released for sending.

use super::{Entry, Hold, NeighborCache, NIL};

impl NeighborCache {
    fn alloc_slot(&mut self, frame: &[u8]) -> Option<u32> {
        let s = self.free_slots;
        if s == NIL {
            return None;
        }
        let slot = &mut self.slots[s as usize];
        self.free_slots = slot.next;
        slot.next = NIL;
        slot.len = frame.len() as u32;
        let start = s as usize * self.cfg.max_frame_len;
        self.frames[start..start + frame.len()].copy_from_slice(frame);
        Some(s)
    }

    pub(super) fn free_slot(&mut self, s: u32) {
        self.slots[s as usize].next = self.free_slots;
        self.free_slots = s;
    }

    /// Copies `frame` to a slot at the end of `e`'s FIFO; false if the store is full.
    pub(super) fn enqueue(&mut self, e: u32, frame: &[u8]) -> bool {
        let Some(s) = self.alloc_slot(frame) else {
            return false;
        };
        let entry = &mut self.entries[e as usize];
        if entry.q_tail == NIL {
            entry.q_head = s;
        } else {
            self.slots[entry.q_tail as usize].next = s;
        }
        entry.q_tail = s;
        entry.q_len += 1;
        self.pending += 1;
        true
    }

    fn push_released(&mut self, s: u32, ip: u32, mac: [u8; 6]) {
        let slot = &mut self.slots[s as usize];
        slot.ip = ip;
        slot.mac = mac;
        slot.next = NIL;
        if self.released.tail == NIL {
            self.released.head = s;
        } else {
            self.slots[self.released.tail as usize].next = s;
        }
        self.released.tail = s;
        self.releasable += 1;
    }

    /// `hold` for a neighbour that is already resolved: straight to the released queue.
    pub(super) fn hold_resolved(&mut self, e: u32, frame: &[u8]) -> Hold {
        let Some(s) = self.alloc_slot(frame) else {
            self.stats.dropped_full += 1;
            return Hold::DroppedFull;
        };
        let Entry { ip, mac, .. } = self.entries[e as usize];
        self.push_released(s, ip, mac);
        self.stats.held += 1;
        Hold::Queued { send_probe: false }
    }

    /// Moves `e`'s frames, in order, to the released queue with `mac`.
    pub(super) fn release_frames(&mut self, e: u32, mac: [u8; 6]) {
        let ip = self.entries[e as usize].ip;
        let mut s = self.entries[e as usize].q_head;
        while s != NIL {
            let next = self.slots[s as usize].next;
            self.push_released(s, ip, mac);
            self.pending -= 1;
            s = next;
        }
        let entry = &mut self.entries[e as usize];
        entry.q_head = NIL;
        entry.q_tail = NIL;
        entry.q_len = 0;
    }

    /// Frees `e`'s frames; returns how many.
    pub(super) fn drop_frames(&mut self, e: u32) -> usize {
        let mut s = self.entries[e as usize].q_head;
        let mut n = 0;
        while s != NIL {
            let next = self.slots[s as usize].next;
            self.free_slot(s);
            n += 1;
            s = next;
        }
        let entry = &mut self.entries[e as usize];
        debug_assert_eq!(n, entry.q_len as usize);
        entry.q_head = NIL;
        entry.q_tail = NIL;
        entry.q_len = 0;
        self.pending -= n;
        n
    }
}

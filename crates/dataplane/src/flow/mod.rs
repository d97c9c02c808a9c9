//! The per-worker flow table: preallocated records, a two-key open-addressing index, and
//! incremental expiry.
//!
//! Every flow is reachable from two keys: the tuple its packets carry on the inside
//! (`orig`) and the tuple its replies carry on the outside (`reply`, after NAT). Both keys
//! live in one linear-probing index whose slots pack a 32-bit hash and a flow reference, so
//! a lookup touches one index cache line and then the flow record to confirm the key.
//!
//! Invariants (asserted in debug builds, property-tested):
//! - at most `capacity` live flows; nothing is allocated after `new`;
//! - every live flow has exactly two index entries and no two live flows share a key, which
//!   is what makes the NAT mapping a bijection;
//! - the index load factor stays at or below 1/2 (slots = next power of two >= 4 x capacity),
//!   so probe sequences are short and always end at an empty slot;
//! - deletion shifts later entries back instead of leaving tombstones, so churn (the
//!   new-flow workload) never degrades the index.

use crate::huge::HugeArray;

/// A 5-tuple as seen on the wire in one direction. Ports are ICMP echo ids for echo flows
/// (see [`crate::parse::L4::IcmpEcho`]).
///
/// `repr(C)` so [`FlowKey::words`] reads each word of a stored key in one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl FlowKey {
    /// The key of packets travelling the other way.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto }
    }

    /// The key as two words: the addresses (`dst << 32 | src`), then ports and protocol
    /// (`proto << 32 | dport << 16 | sport`). Hashing mixes them, and comparing them is
    /// cheaper than comparing five fields one by one. Each word packs fields in the order
    /// they are laid out, so on a little-endian machine a stored key's word is one load.
    #[inline(always)]
    pub fn words(&self) -> (u64, u64) {
        (
            (u64::from(self.dst) << 32) | u64::from(self.src),
            (u64::from(self.proto) << 32) | (u64::from(self.dport) << 16) | u64::from(self.sport),
        )
    }

    /// `self == other`, without branches.
    #[inline(always)]
    pub fn same(&self, other: &FlowKey) -> bool {
        let ((a, b), (c, d)) = (self.words(), other.words());
        (a ^ c) | (b ^ d) == 0
    }
}

/// Which of a flow's two keys matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Inside to outside, as the client sent it.
    Orig,
    /// Outside to inside: a reply, addressed to the translated source.
    Reply,
}

/// Lifecycle of a flow, driving its idle timeout. See [`crate::tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    TcpSynSent,
    TcpSynReceived,
    TcpEstablished,
    /// The inside end sent FIN.
    TcpFinOrig,
    /// The outside end sent FIN.
    TcpFinReply,
    /// Both ends sent FIN: lingers briefly for the last ACKs.
    TcpClosing,
    /// Reset: lingers briefly so a retransmitted RST still passes.
    TcpClosed,
    /// UDP, only the inside end has spoken.
    UdpNew,
    /// UDP, both ends have spoken.
    UdpReplied,
    IcmpEcho,
}

impl FlowState {
    /// Every state, in discriminant order (tables indexed by state use it).
    pub const ALL: [FlowState; 10] = [
        FlowState::TcpSynSent,
        FlowState::TcpSynReceived,
        FlowState::TcpEstablished,
        FlowState::TcpFinOrig,
        FlowState::TcpFinReply,
        FlowState::TcpClosing,
        FlowState::TcpClosed,
        FlowState::UdpNew,
        FlowState::UdpReplied,
        FlowState::IcmpEcho,
    ];
}

/// Where a flow came from: a client behind the internal port, or the node's own host stack
/// through the service lane (the DNS proxy's upstream queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Origin {
    Internal,
    Host,
}

/// Marker for "no allowlist pin".
pub const NO_PIN: u32 = u32::MAX;

/// Engine time in flow records: nanoseconds >> 20 (about 1.05 ms per tick), wrapping
/// after ~52 days; idle times are computed with wrapping arithmetic and every timeout is far
/// shorter than that.
pub const TICK_SHIFT: u32 = 20;

#[inline]
pub fn ticks(now_ns: u64) -> u32 {
    (now_ns >> TICK_SHIFT) as u32
}

/// A timeout in ticks, rounded up so a flow never expires early.
#[inline]
pub fn timeout_ticks(timeout_ns: u64) -> u32 {
    timeout_ns.div_ceil(1 << TICK_SHIFT).min(u64::from(u32::MAX / 2)) as u32
}

/// One tracked flow: 32 bytes, aligned so that two share a cache line and none straddles
/// one (the 1 M-flow figure depends on it; see `bytes_per_flow`). The translated address is
/// the table's (one SNAT address per engine), not stored per flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub struct Flow {
    /// The inside tuple.
    pub orig: FlowKey,
    /// Translated source port (the original one without SNAT).
    pub nat_port: u16,
    pub state: FlowState,
    pub origin: Origin,
    /// The policy generation this flow was last checked against.
    pub generation: u32,
    /// Allowlist pin held for a flow allowed by a hostname rule, or [`NO_PIN`].
    pub pin: u32,
    /// Last packet, in [`ticks`].
    pub last_seen: u32,
}

/// The table refused a new flow: every record is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

const EMPTY: u64 = 0;

/// Index slot: high 32 bits the key hash, low 32 bits `flow_index * 2 + dir + 1` (never 0,
/// so an all-zero slot means empty).
#[inline]
fn slot_pack(hash: u32, idx: u32, dir: Dir) -> u64 {
    let r = idx * 2 + (dir as u32) + 1;
    (u64::from(hash) << 32) | u64::from(r)
}

#[inline]
fn slot_hash(slot: u64) -> u32 {
    (slot >> 32) as u32
}

#[inline]
fn slot_ref(slot: u64) -> (u32, Dir) {
    let r = (slot as u32) - 1;
    (r / 2, if r & 1 == 0 { Dir::Orig } else { Dir::Reply })
}

pub struct FlowTable {
    /// The address inside sources are translated to, or None without SNAT.
    snat_ip: Option<u32>,
    /// Records and index: the large arrays, on huge pages where possible (see `huge`).
    flows: HugeArray<Flow>,
    live: Vec<bool>,
    free: Vec<u32>,
    slots: HugeArray<u64>,
    mask: usize,
    seed: u64,
    len: usize,
    sweep_cursor: usize,
}

/// Largest supported capacity: flow references must fit in 31 bits.
pub const MAX_FLOW_CAPACITY: usize = 1 << 30;

impl FlowTable {
    /// Allocates everything the table will ever use. `seed` keys the hash so a remote party
    /// cannot aim packets at one probe chain. `snat_ip` is the address inside sources are
    /// translated to (None: no translation).
    pub fn new(capacity: usize, seed: u64, snat_ip: Option<u32>) -> FlowTable {
        assert!(capacity > 0 && capacity <= MAX_FLOW_CAPACITY, "flow capacity {capacity} out of range");
        let slots = (capacity * 4).next_power_of_two();
        let empty = Flow {
            orig: FlowKey::default(),
            nat_port: 0,
            state: FlowState::TcpClosed,
            origin: Origin::Internal,
            generation: 0,
            pin: NO_PIN,
            last_seen: 0,
        };
        FlowTable {
            snat_ip,
            flows: HugeArray::new(capacity, empty),
            live: vec![false; capacity],
            // Popped from the end: hand out low indices first, which keeps a small working
            // set dense in memory.
            free: (0..capacity as u32).rev().collect(),
            slots: HugeArray::new(slots, EMPTY),
            mask: slots - 1,
            seed,
            len: 0,
            sweep_cursor: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// The translated source address of a flow.
    #[inline]
    pub fn nat_ip(&self, f: &Flow) -> u32 {
        self.snat_ip.unwrap_or(f.orig.src)
    }

    /// The key a flow's replies carry on the outside.
    #[inline]
    pub fn reply_key(&self, f: &Flow) -> FlowKey {
        FlowKey { src: f.orig.dst, dst: self.nat_ip(f), sport: f.orig.dport, dport: f.nat_port, proto: f.orig.proto }
    }

    #[inline]
    pub fn key(&self, f: &Flow, dir: Dir) -> FlowKey {
        match dir {
            Dir::Orig => f.orig,
            Dir::Reply => self.reply_key(f),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the table holds per flow of capacity (records, liveness, free list, index).
    pub fn bytes_per_flow(&self) -> usize {
        let total = self.flows.len() * std::mem::size_of::<Flow>()
            + self.live.capacity()
            + self.free.capacity() * 4
            + self.slots.len() * 8;
        total.div_ceil(self.capacity())
    }

    #[inline(always)]
    pub fn hash(&self, k: &FlowKey) -> u32 {
        let (a, b) = k.words();
        self.hash_words(a, b)
    }

    /// [`hash`](Self::hash) of a key given as its [`FlowKey::words`].
    #[inline(always)]
    pub fn hash_words(&self, a: u64, b: u64) -> u32 {
        let (a, b) = (a ^ self.seed, b ^ self.seed.rotate_left(29));
        let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(31);
        x ^= x >> 32;
        x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        x ^= x >> 32;
        x as u32
    }

    /// Hint the CPU to fetch the index slot for `hash`; used to overlap cache misses across
    /// a burst.
    #[inline]
    pub fn prefetch(&self, hash: u32) {
        let i = hash as usize & self.mask;
        crate::prefetch::prefetch_read(&self.slots[i]);
    }

    /// Hint the CPU to fetch the flow record the home slot of `hash` points at. Returns true
    /// when that slot is empty: the key is certainly absent (a new flow).
    #[inline]
    pub fn prefetch_flow(&self, hash: u32) -> bool {
        let i = hash as usize & self.mask;
        let s = self.slots[i];
        if s != EMPTY {
            let (idx, _) = slot_ref(s);
            crate::prefetch::prefetch_read(&self.flows[idx as usize]);
            false
        } else {
            true
        }
    }

    #[inline(always)]
    pub fn lookup(&self, key: &FlowKey, hash: u32) -> Option<(u32, Dir)> {
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            if slot_hash(s) == hash {
                let (idx, dir) = slot_ref(s);
                if self.key(&self.flows[idx as usize], dir).same(key) {
                    return Some((idx, dir));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// [`lookup`](Self::lookup) for a key expected in one direction, given as its
    /// [`FlowKey::words`] (the fast path reads them from the frame in two loads): the index
    /// of the flow whose `dir` key it is, or `None` (also when it is some flow's key the
    /// other way).
    #[inline(always)]
    pub fn lookup_dir(&self, addrs: u64, ports: u64, hash: u32, dir: Dir) -> Option<u32> {
        let want = u32::from(dir == Dir::Reply);
        let mut i = hash as usize & self.mask;
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                return None;
            }
            // Hash and direction in one comparison: the low bit of `ref - 1` is the direction.
            if slot_hash(s) == hash && ((s as u32).wrapping_sub(1) & 1) == want {
                let idx = ((s as u32) - 1) / 2;
                let (a, b) = self.key(&self.flows[idx as usize], dir).words();
                if (a ^ addrs) | (b ^ ports) == 0 {
                    return Some(idx);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    pub fn contains_key(&self, key: &FlowKey) -> bool {
        self.lookup(key, self.hash(key)).is_some()
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &Flow {
        debug_assert!(self.live[idx as usize]);
        &self.flows[idx as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Flow {
        debug_assert!(self.live[idx as usize]);
        &mut self.flows[idx as usize]
    }

    /// Insert a flow. The caller guarantees neither of its keys is present (NAT allocation
    /// checks the reply key; the orig key missed just before).
    pub fn insert(&mut self, flow: Flow) -> Result<u32, TableFull> {
        let h_orig = self.hash(&flow.orig);
        let h_reply = self.hash(&self.reply_key(&flow));
        self.insert_hashed(flow, h_orig, h_reply)
    }

    /// [`insert`](Self::insert) with both key hashes already computed.
    pub fn insert_hashed(&mut self, flow: Flow, h_orig: u32, h_reply: u32) -> Result<u32, TableFull> {
        debug_assert_eq!(h_orig, self.hash(&flow.orig));
        debug_assert_eq!(h_reply, self.hash(&self.reply_key(&flow)));
        let idx = self.free.pop().ok_or(TableFull)?;
        debug_assert!(!self.live[idx as usize]);
        debug_assert!(!self.contains_key(&flow.orig), "orig key already present");
        debug_assert!(!self.contains_key(&self.reply_key(&flow)), "reply key already present");
        self.flows[idx as usize] = flow;
        self.live[idx as usize] = true;
        self.index_insert(h_orig, idx, Dir::Orig);
        self.index_insert(h_reply, idx, Dir::Reply);
        self.len += 1;
        debug_assert!(self.len <= self.capacity());
        Ok(idx)
    }

    /// Remove a live flow and return its record (the caller releases its pin and counts).
    pub fn remove(&mut self, idx: u32) -> Flow {
        let f = self.flows[idx as usize];
        let h_orig = self.hash(&f.orig);
        let h_reply = self.hash(&self.reply_key(&f));
        self.remove_hashed(idx, h_orig, h_reply)
    }

    /// [`remove`](Self::remove) with both key hashes already computed.
    fn remove_hashed(&mut self, idx: u32, h_orig: u32, h_reply: u32) -> Flow {
        assert!(self.live[idx as usize], "removing a free flow record");
        let flow = self.flows[idx as usize];
        debug_assert_eq!(h_orig, self.hash(&flow.orig));
        debug_assert_eq!(h_reply, self.hash(&self.reply_key(&flow)));
        self.index_remove(h_orig, idx, Dir::Orig);
        self.index_remove(h_reply, idx, Dir::Reply);
        self.live[idx as usize] = false;
        self.free.push(idx);
        self.len -= 1;
        flow
    }

    fn index_insert(&mut self, hash: u32, idx: u32, dir: Dir) {
        let mut i = hash as usize & self.mask;
        while self.slots[i] != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = slot_pack(hash, idx, dir);
    }

    /// Linear-probing deletion by backward shift: later entries of the same cluster that may
    /// live at the freed position move back, so no tombstones are ever needed.
    fn index_remove(&mut self, hash: u32, idx: u32, dir: Dir) {
        let target = slot_pack(hash, idx, dir);
        let mut i = hash as usize & self.mask;
        while self.slots[i] != target {
            assert!(self.slots[i] != EMPTY, "flow index entry missing");
            i = (i + 1) & self.mask;
        }
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let home = slot_hash(s) as usize & self.mask;
            // The entry at j may move to the hole at i unless its home lies cyclically in
            // (i, j]: then it sits at or after its home already and must stay.
            let stays = if i <= j { home > i && home <= j } else { home > i || home <= j };
            if !stays {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = EMPTY;
    }

    /// Incremental expiry: examine at most `budget` records from a rotating cursor and
    /// remove those `expired` says are done, handing each to `removed`. Never a full scan.
    /// Works in chunks: first find the expired records of a chunk and prefetch both of their
    /// index slots, then remove them, so the deletions' cache misses overlap.
    pub fn sweep(
        &mut self,
        budget: usize,
        mut expired: impl FnMut(&Flow) -> bool,
        mut removed: impl FnMut(&Flow),
    ) -> usize {
        const CHUNK: usize = 32;
        let cap = self.capacity();
        let mut left = budget.min(cap);
        let mut n = 0;
        while left > 0 {
            let chunk = left.min(CHUNK);
            left -= chunk;
            let mut doomed = [(0u32, 0u32, 0u32); CHUNK];
            let mut d = 0;
            for _ in 0..chunk {
                let idx = self.sweep_cursor;
                self.sweep_cursor = if idx + 1 == cap { 0 } else { idx + 1 };
                if self.live[idx] && expired(&self.flows[idx]) {
                    let f = &self.flows[idx];
                    let h_orig = self.hash(&f.orig);
                    let h_reply = self.hash(&self.reply_key(f));
                    self.prefetch(h_orig);
                    self.prefetch(h_reply);
                    doomed[d] = (idx as u32, h_orig, h_reply);
                    d += 1;
                }
            }
            for &(idx, h_orig, h_reply) in &doomed[..d] {
                let flow = self.remove_hashed(idx, h_orig, h_reply);
                removed(&flow);
                n += 1;
            }
        }
        n
    }

    /// Bounded scan for views: visits the records in slots `from..`, at most `budget` of them,
    /// calling `visit` on each live one until it returns false, and returns the slot to
    /// continue from (`capacity()` once the table is done). Slot order, not a rotating cursor:
    /// a view resumed over several turns sees each slot once.
    pub fn scan(&self, from: usize, budget: usize, mut visit: impl FnMut(&Flow) -> bool) -> usize {
        let end = from.saturating_add(budget).min(self.capacity());
        for idx in from.min(end)..end {
            if self.live[idx] && !visit(&self.flows[idx]) {
                return idx + 1;
            }
        }
        end
    }

    /// Live flows with their indices (diagnostics and tests; not the packet path).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Flow)> {
        self.flows.iter().enumerate().filter(|(i, _)| self.live[*i]).map(|(i, f)| (i as u32, f))
    }

    /// Full consistency check for tests: every live flow is found by both keys, the index
    /// holds exactly two entries per flow, and no probe chain is broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let entries = self.slots.iter().filter(|s| **s != EMPTY).count();
        if entries != 2 * self.len {
            return Err(format!("{entries} index entries for {} flows", self.len));
        }
        if self.len + self.free.len() != self.capacity() {
            return Err("free list and live count disagree".into());
        }
        for (idx, f) in self.iter() {
            for dir in [Dir::Orig, Dir::Reply] {
                let k = self.key(f, dir);
                if self.lookup(&k, self.hash(&k)) != Some((idx, dir)) {
                    return Err(format!("flow {idx} not found by its {dir:?} key {k:?}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

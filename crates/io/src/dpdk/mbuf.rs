//! Packet buffers: the mempool, one owned mbuf, and fixed-size bursts of them.

use std::ffi::CString;
use std::os::raw::c_int;
use std::ptr::NonNull;

use sluice_dataplane::packet::Packet;
use sluice_dpdk_sys as sys;

use super::eal::{DpdkError, Eal};
use super::MAX_BURST;

/// Sizes of a packet mempool.
#[derive(Debug, Clone)]
pub struct MempoolConfig {
    /// Number of mbufs (DPDK recommends a power of two minus one).
    pub mbufs: u32,
    /// Per-lcore cache of free mbufs (0 for none; at most 512).
    pub cache: u32,
    /// Bytes per mbuf including the headroom (`RTE_PKTMBUF_HEADROOM`, 128).
    pub data_room: u16,
    /// NUMA socket, or `None` for any.
    pub socket: Option<u32>,
}

impl Default for MempoolConfig {
    fn default() -> MempoolConfig {
        // 2048 bytes of frame after the headroom: a full Ethernet frame plus a VLAN tag.
        MempoolConfig { mbufs: 8191, cache: 256, data_room: 2048 + sys::RTE_PKTMBUF_HEADROOM as u16, socket: None }
    }
}

/// A DPDK packet mempool. Thread-safe (DPDK's mempools are multi-producer/consumer).
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
}

// SAFETY: an rte_mempool may be used from any thread; DPDK synchronises its rings.
unsafe impl Send for Mempool {}
// SAFETY: as above: every operation on a shared mempool is thread-safe.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a packet mempool. Names are unique within the process.
    pub fn new(_eal: &Eal, name: &str, cfg: &MempoolConfig) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::other("rte_pktmbuf_pool_create", "name contains NUL"))?;
        let socket = cfg.socket.map_or(sys::SOCKET_ID_ANY, |s| s as c_int);
        // SAFETY: the EAL is initialised (we hold an Eal) and `cname` is a valid C string that
        // DPDK copies.
        let ptr =
            unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), cfg.mbufs, cfg.cache, 0, cfg.data_room, socket) };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            DpdkError::from_rte_errno(format!("rte_pktmbuf_pool_create({name}, {} mbufs)", cfg.mbufs))
        })?;
        Ok(Mempool { ptr, name: name.to_string() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Free mbufs in the pool (including those in lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid while self lives.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs taken from the pool and not yet returned.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as available().
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Take one mbuf, empty, with the default headroom. `None` when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is valid; a non-null result is an mbuf we now own.
        NonNull::new(unsafe { sys::rte_pktmbuf_alloc(self.ptr.as_ptr()) }).map(|m| Mbuf { m })
    }

    /// An mbuf holding a copy of `frame`; `None` if the pool is exhausted or the frame does
    /// not fit one mbuf.
    pub fn alloc_frame(&self, frame: &[u8]) -> Option<Mbuf> {
        let mut m = self.alloc()?;
        let len = u16::try_from(frame.len()).ok()?;
        // SAFETY: m is a valid single-segment mbuf we own; append returns null (and changes
        // nothing) when the tailroom is too small, else a pointer to `len` writable bytes.
        let dst = unsafe { sys::rte_pktmbuf_append(m.m.as_ptr(), len) };
        if dst.is_null() {
            return None; // m is freed by Drop
        }
        m.data_mut().copy_from_slice(frame);
        Some(m)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // Mbufs may outlive the handle (they do not count references to their pool); a pool
        // with mbufs still out is leaked rather than freed under them.
        if self.in_use() == 0 {
            // SAFETY: no mbuf of this pool is in use and no port refers to it any more (ports
            // keep an Arc of their pool).
            unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
        }
    }
}

/// One owned, single-segment mbuf; freed back to its pool on drop.
///
/// As a [`Packet`], its data is the first segment (ports are configured without scatter, so
/// received frames are single-segment); `push_front` prepends into the headroom and
/// `pull_front` trims the front (`rte_pktmbuf_prepend` / `rte_pktmbuf_adj`).
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf {
    m: NonNull<sys::rte_mbuf>,
}

// SAFETY: an mbuf is owned by exactly one handle; freeing it from another thread is allowed.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` must be a valid mbuf owned by the caller, which gives up ownership.
    pub unsafe fn from_raw(m: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf { m }
    }

    /// Give up ownership without freeing.
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let m = self.m;
        std::mem::forget(self);
        m
    }

    /// Free bytes in front of the data.
    pub fn headroom(&self) -> usize {
        // SAFETY: the mbuf is valid while self lives.
        usize::from(unsafe { sys::rte_pktmbuf_headroom(self.m.as_ptr()) })
    }

    /// The data pointer as DPDK's `rte_pktmbuf_mtod` computes it (for checking the field
    /// layout the fast path reads directly).
    pub fn mtod(&self) -> *const u8 {
        // SAFETY: the mbuf is valid while self lives.
        unsafe { sys::sluice_pktmbuf_data(self.m.as_ptr()).cast::<u8>().cast_const() }
    }

    /// The frame length as DPDK's `rte_pktmbuf_data_len` reads it.
    pub fn dpdk_data_len(&self) -> usize {
        // SAFETY: the mbuf is valid while self lives.
        usize::from(unsafe { sys::sluice_pktmbuf_data_len(self.m.as_ptr()) })
    }

    #[inline]
    fn raw(&self) -> (*mut u8, usize) {
        // SAFETY: the mbuf is valid; buf_addr + data_off is the start of its data
        // (rte_pktmbuf_mtod), and data_len bytes from there lie within the buffer.
        unsafe {
            let m = self.m.as_ptr();
            ((*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off)), usize::from((*m).data_len))
        }
    }
}

impl Packet for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let (p, len) = self.raw();
        // SAFETY: p..p+len is the mbuf's data, owned by self and borrowed immutably here.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let (p, len) = self.raw();
        // SAFETY: as data(); self is borrowed mutably, so the slice is unique.
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    fn push_front(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else { return false };
        // SAFETY: valid mbuf; prepend returns null and changes nothing without headroom.
        !unsafe { sys::rte_pktmbuf_prepend(self.m.as_ptr(), n) }.is_null()
    }

    fn pull_front(&mut self, n: usize) -> bool {
        let Ok(n) = u16::try_from(n) else { return false };
        // SAFETY: valid mbuf; adj returns null and changes nothing if n exceeds the data.
        !unsafe { sys::rte_pktmbuf_adj(self.m.as_ptr(), n) }.is_null()
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nobody uses it after this.
        unsafe { sys::rte_pktmbuf_free(self.m.as_ptr()) };
    }
}

/// Up to [`MAX_BURST`] owned mbufs in a fixed array: what a port receives or transmits at
/// once. Remaining mbufs are freed on drop or [`clear`](Burst::clear).
pub struct Burst {
    ptrs: [*mut sys::rte_mbuf; MAX_BURST],
    len: usize,
}

// SAFETY: the burst owns its mbufs exclusively, as a Vec<Mbuf> would.
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Burst {
        Burst::new()
    }
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

impl Burst {
    pub const fn new() -> Burst {
        Burst { ptrs: [std::ptr::null_mut(); MAX_BURST], len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// Add an mbuf; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw().as_ptr();
        self.len += 1;
        Ok(())
    }

    /// Remove the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        let p = std::mem::replace(&mut self.ptrs[self.len], std::ptr::null_mut());
        // SAFETY: the first `len` slots hold owned, non-null mbufs; this one leaves the burst.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p)) })
    }

    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is a repr(transparent) NonNull<rte_mbuf>, which has the layout of
        // *mut rte_mbuf, and the first `len` slots are non-null owned mbufs.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr().cast::<Mbuf>(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as as_slice(); the &mut borrow of self makes the slice unique, and an Mbuf
        // cannot be moved out of a &mut slice without replacing it by another valid one.
        unsafe { std::slice::from_raw_parts_mut(self.ptrs.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Free every mbuf.
    pub fn clear(&mut self) {
        if self.len > 0 {
            // SAFETY: the first `len` slots are owned mbufs, freed once; len is reset at once.
            unsafe { sys::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }

    /// Room left and a pointer to it, for rx_burst.
    pub(crate) fn spare(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        // SAFETY: len <= MAX_BURST, so the pointer stays within (or one past) the array.
        (unsafe { self.ptrs.as_mut_ptr().add(self.len) }, MAX_BURST - self.len)
    }

    /// Record that `n` more slots after `len` were filled by DPDK.
    ///
    /// # Safety
    /// The `n` slots after `len` must now hold owned, non-null mbufs.
    pub(crate) unsafe fn grow(&mut self, n: usize) {
        debug_assert!(self.len + n <= MAX_BURST);
        self.len += n;
    }

    /// The raw array, for tx_burst.
    pub(crate) fn raw_mut(&mut self) -> &mut [*mut sys::rte_mbuf; MAX_BURST] {
        &mut self.ptrs
    }

    /// Forget the first `n` mbufs (DPDK took them) and move the rest to the front.
    pub(crate) fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.ptrs.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Move slot `i` out as a raw pointer, leaving null; the caller must not read the burst
    /// as a slice again before calling [`forget_all`](Burst::forget_all). (Should a panic
    /// intervene, dropping the burst is still sound: `rte_pktmbuf_free_bulk` skips nulls.)
    pub(crate) fn take_raw(&mut self, i: usize) -> *mut sys::rte_mbuf {
        debug_assert!(i < self.len);
        std::mem::replace(&mut self.ptrs[i], std::ptr::null_mut())
    }

    /// After every slot was taken with take_raw: the burst is empty.
    pub(crate) fn forget_all(&mut self) {
        self.len = 0;
    }

    /// Append a raw owned mbuf (the burst must not be full).
    pub(crate) fn push_raw(&mut self, p: *mut sys::rte_mbuf) {
        debug_assert!(!self.is_full() && !p.is_null());
        self.ptrs[self.len] = p;
        self.len += 1;
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}

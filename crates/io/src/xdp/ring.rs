//! The memory an AF_XDP socket shares with the kernel: the UMEM (the frames themselves) and
//! four single-producer single-consumer rings of descriptors. The fill ring gives the kernel
//! empty frames to receive into and the receive ring hands them back full; the transmit ring
//! gives it full frames and the completion ring returns them once sent.
//!
//! Each ring is a power-of-two array with free-running 32-bit producer and consumer indices
//! in the mapping; an entry is written before its producer index is published (release) and
//! read after the producer index is seen (acquire), the same for the consumer side. Each side
//! caches the other's index and reads it again only when the cache says the ring is full or
//! empty, so most bursts touch one shared cache line per ring.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// An anonymous mapping the kernel reads and writes frames in: `frames` chunks of `chunk`
/// bytes.
pub(crate) struct Umem {
    base: NonNull<u8>,
    len: usize,
    pub(crate) chunk: usize,
}

impl Umem {
    pub(crate) fn new(frames: usize, chunk: usize) -> io::Result<Umem> {
        assert!(chunk.is_power_of_two() && frames > 0);
        let len = frames * chunk;
        // SAFETY: a fresh private anonymous mapping; no pointer is passed in.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Umem { base: NonNull::new(p.cast()).expect("mmap returned a non-null mapping"), len, chunk })
    }

    pub(crate) fn register(&self, fd: &OwnedFd) -> io::Result<()> {
        let reg = libc::xdp_umem_reg {
            addr: self.base.as_ptr() as u64,
            len: self.len as u64,
            chunk_size: self.chunk as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        crate::sys::setsockopt(fd, libc::SOL_XDP, libc::XDP_UMEM_REG, &reg)
    }

    /// The bytes of a descriptor's frame. The caller owns the frame (it is in neither the
    /// kernel's fill nor transmit ring).
    pub(crate) fn frame(&self, addr: u64, len: usize) -> &[u8] {
        let at = addr as usize;
        assert!(at + len <= self.len, "a descriptor inside the UMEM");
        // SAFETY: in bounds (checked above); the kernel does not write a frame the user side
        // owns.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(at), len) }
    }

    pub(crate) fn frame_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let at = addr as usize;
        assert!(at + len <= self.len, "a descriptor inside the UMEM");
        // SAFETY: as in `frame`, and `&mut self` makes the slice the only one.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(at), len) }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the socket that used it is closed first (field
        // order in the port).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One ring mapped from the socket, with entries of type `T` (`xdp_desc` for receive and
/// transmit, a `u64` frame address for fill and completion).
pub(crate) struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    size: u32,
    /// This side's own index (the producer's for a ring we fill, the consumer's for one we
    /// drain), published by `submit` / `release`.
    own: u32,
    /// The other side's index as last read.
    other: u32,
}

// SAFETY: the mapping is used through this ring alone (one user-side thread); moving the
// ring moves the only user-side reference to it.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of the socket, laid out as
    /// `off` says.
    pub(crate) fn map(fd: &OwnedFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Ring<T>> {
        assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: maps the ring the kernel set up for this socket; no pointer is passed in.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).expect("mmap returned a non-null mapping");
        // SAFETY: the kernel's offsets lie inside the mapping it sized.
        let at = |o: u64| unsafe { NonNull::new_unchecked(map.as_ptr().add(o as usize)) };
        let ring = Ring {
            map,
            map_len,
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            size,
            own: 0,
            other: 0,
        };
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: an aligned u32 inside the mapping, shared with the kernel, accessed only
        // atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asks to be woken with a system call to process this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: masked into the ring's `size` entries.
        unsafe { self.entries.as_ptr().add((index & (self.size - 1)) as usize) }
    }

    // --- The side that fills this ring (fill, transmit).

    /// Entries free for writing, reading the consumer's index only when the cached one says
    /// fewer than `want` are.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.own.wrapping_sub(self.other);
        if free >= want {
            return free;
        }
        self.other = self.consumer().load(Ordering::Acquire);
        self.size - self.own.wrapping_sub(self.other)
    }

    /// Writes entry `i` past the published ones (the caller checked [`Ring::free`]).
    pub(crate) fn write(&mut self, i: u32, value: T) {
        assert!(i < self.size - self.own.wrapping_sub(self.other), "a slot this side owns");
        // SAFETY: a slot of the ring the kernel does not read until `submit` publishes it.
        unsafe { self.slot(self.own.wrapping_add(i)).write(value) }
    }

    /// Publishes `n` written entries.
    pub(crate) fn submit(&mut self, n: u32) {
        self.own = self.own.wrapping_add(n);
        self.producer().store(self.own, Ordering::Release);
    }

    /// Entries published and not yet taken by the kernel.
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.other = self.consumer().load(Ordering::Acquire);
        self.own.wrapping_sub(self.other)
    }

    // --- The side that drains this ring (receive, completion).

    /// Entries ready for reading, at most `max`.
    pub(crate) fn ready(&mut self, max: u32) -> u32 {
        let mut ready = self.other.wrapping_sub(self.own);
        if ready < max {
            self.other = self.producer().load(Ordering::Acquire);
            ready = self.other.wrapping_sub(self.own);
        }
        ready.min(max)
    }

    /// Reads ready entry `i` (the caller checked [`Ring::ready`]).
    pub(crate) fn read(&self, i: u32) -> T {
        assert!(i < self.other.wrapping_sub(self.own), "a slot the kernel published");
        // SAFETY: a slot the kernel published and does not reuse until `release`.
        unsafe { self.slot(self.own.wrapping_add(i)).read() }
    }

    /// Hands `n` read entries back.
    pub(crate) fn release(&mut self, n: u32) {
        self.own = self.own.wrapping_add(n);
        self.consumer().store(self.own, Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; no reference into it outlives
        // the ring.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

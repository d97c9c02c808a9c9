//! Fixed-size arrays for the flow table, placed on transparent huge pages where the kernel
//! offers them.
//!
//! With a million flows the table's records and index are far larger than what the TLB
//! covers with 4 KiB pages, so every established packet pays TLB misses on top of its two
//! cache misses. An array of 2 MiB or more is therefore allocated 2 MiB-aligned and marked
//! `MADV_HUGEPAGE` before it is first written, so that it is faulted in as huge pages on
//! machines where THP is `madvise` (the common default; with `always` the hint is moot, with
//! `never` it is ignored).
//!
//! This is the one place the otherwise pure crate makes a system call: a memory hint, once,
//! while the table is built — never on the packet path. Its failure changes nothing but
//! speed, so it is ignored.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

const HUGE_PAGE: usize = 2 << 20;

/// A heap array of `len` copies of a value, never resized.
pub(crate) struct HugeArray<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    layout: Layout,
}

// SAFETY: the array owns its elements exclusively, like a `Box<[T]>`.
unsafe impl<T: Copy + Send> Send for HugeArray<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeArray<T> {}

impl<T: Copy> HugeArray<T> {
    pub(crate) fn new(len: usize, fill: T) -> HugeArray<T> {
        assert!(len > 0 && size_of::<T>() > 0, "empty huge array");
        let size = len.checked_mul(size_of::<T>()).expect("array size overflows");
        let huge = size >= HUGE_PAGE;
        let align = if huge { HUGE_PAGE } else { align_of::<T>() };
        let layout = Layout::from_size_align(size, align.max(align_of::<T>())).expect("array layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc(layout) }.cast::<T>();
        let Some(ptr) = NonNull::new(raw) else { handle_alloc_error(layout) };
        if huge {
            advise_huge_pages(ptr.as_ptr().cast(), size);
        }
        for i in 0..len {
            // SAFETY: `i < len` lies within the allocation, which is suitably aligned.
            unsafe { ptr.as_ptr().add(i).write(fill) };
        }
        HugeArray { ptr, len, layout }
    }
}

impl<T: Copy> Deref for HugeArray<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements live at `ptr` for the array's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for HugeArray<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; `T: Copy` needs no drop.
        unsafe { dealloc(self.ptr.as_ptr().cast(), self.layout) }
    }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(addr: *mut libc::c_void, len: usize) {
    // SAFETY: the range is one live allocation of ours, starting 2 MiB- (so page-) aligned;
    // MADV_HUGEPAGE changes no contents.
    let _ = unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_addr: *mut std::ffi::c_void, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_arrays_hold_their_values() {
        let mut small = HugeArray::new(3, 7u64);
        small[1] = 9;
        assert_eq!(&small[..], &[7, 9, 7]);
        let big = HugeArray::new((3 * HUGE_PAGE) / 8 + 5, 1u64);
        assert_eq!(big.as_ptr() as usize % HUGE_PAGE, 0, "large arrays start on a huge page");
        assert!(big.iter().all(|&v| v == 1));
    }
}

//! Cache prefetch hints. The engine issues them for a whole burst before touching the flow
//! table so that the cache misses of a large table overlap instead of adding up.

/// Ask the CPU to bring the cache line holding `value` closer. A hint only: no effect on
/// correctness, a no-op on targets without a prefetch instruction.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and reads nothing architecturally; the pointer comes
    // from a live reference.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(value as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

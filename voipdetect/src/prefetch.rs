//! Asking the CPU to fetch memory before it is read: the controller's poll
//! walks its conversations in one order and the flow tables' slots in
//! another, so one of the two is always read at random; fetching a few
//! items ahead overlaps those cache misses instead of waiting for each.

/// Fetches every cache line of `*p` into the cache, if the CPU has a
/// stable prefetch instruction for Rust to give (x86-64); a no-op
/// elsewhere. Never faults, whatever `p` is.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = p.cast::<i8>();
        for line in (0..size_of::<T>().max(1)).step_by(64) {
            // SAFETY: a prefetch is a hint: it reads nothing the program
            // sees and never faults, whatever the address.
            unsafe { _mm_prefetch(p.wrapping_add(line), _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

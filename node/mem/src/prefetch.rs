//! A software prefetch the dataplane can call without `unsafe`.
//!
//! A prefetch only asks the CPU to start loading a cache line: it never faults, reads
//! nothing into the program and changes no memory, so a prefetch of any address is
//! sound. Taking a reference only keeps callers to addresses they may read anyway.

/// Starts loading the cache line holding `*r` into every cache level, so that a load
/// of it soon after finds it there. Does nothing on targets without the hint.
#[inline(always)]
pub fn read<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: PREFETCHT0 is a hint: it cannot fault and neither reads into the
        // program nor writes memory, whatever the address (Intel SDM, PREFETCHh). SSE,
        // the intrinsic's target feature, is part of the x86_64 baseline.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(core::ptr::from_ref(r).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// [`read`] of `slice[i]`; nothing if `i` is out of bounds.
#[inline(always)]
pub fn read_at<T>(slice: &[T], i: usize) {
    if let Some(r) = slice.get(i) {
        read(r);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefetch_past_the_end_is_none_and_no_panic() {
        let v = [1u64, 2, 3];
        super::read(&v[1]);
        super::read_at(&v, 2);
        super::read_at(&v, 7);
        assert_eq!(v, [1, 2, 3]);
    }
}

//! A global allocator that backs large allocations with transparent huge pages.
//!
//! The node's big tables (the flow table's entries and index, the express lane's
//! records, the NAT tables) are one heap allocation each, tens to hundreds of MiB, read
//! at random: on 4 KiB pages nearly every packet's look-ups miss the TLB, and a page
//! walk costs more still in a virtual machine. Linux backs an anonymous range with
//! 2 MiB pages when asked (`madvise(MADV_HUGEPAGE)`; this works in the kernel's default
//! `madvise` mode of `/sys/kernel/mm/transparent_hugepage/enabled`, and does nothing
//! when it is `never`). [`HugeAlloc`] does that for every allocation of at least
//! [`HUGE_PAGE`] bytes, aligned to a huge page so that all of it can be; smaller ones
//! go to the system allocator unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// The huge page size asked for, and the smallest allocation that asks.
pub const HUGE_PAGE: usize = 2 << 20;

/// The system allocator, with huge pages for large allocations (see the module docs).
/// Install with `#[global_allocator] static A: HugeAlloc = HugeAlloc;`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugeAlloc;

/// The layout a large allocation is made with: aligned to a huge page. `None` for a
/// small one (made as asked).
fn large(layout: Layout) -> Option<Layout> {
    if layout.size() < HUGE_PAGE {
        return None;
    }
    Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok()
}

/// Asks for huge pages for the `len` bytes at `p` (start aligned to a huge page).
fn advise(p: *mut u8, len: usize) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p..p + len` is an allocation just made by the system allocator and
    // owned by the caller; MADV_HUGEPAGE only changes how the kernel backs the range,
    // never its contents or mapping. A failure (THP disabled, or a range the kernel
    // does not take) leaves the range as it was: the advice is best effort.
    unsafe {
        libc::madvise(p.cast(), len, libc::MADV_HUGEPAGE);
    }
}

/// A block for `layout` from `make`: with `large(layout)` and huge pages asked for when
/// it is large, else with `layout`.
fn made(layout: Layout, make: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
    match large(layout) {
        Some(big) => {
            let p = make(big);
            advise(p, big.size());
            p
        }
        None => make(layout),
    }
}

// SAFETY: every method hands the system allocator a layout valid for it and gives each
// block back with the layout it was made with: `large(layout)` depends only on the
// caller's layout, which GlobalAlloc's contract makes the same at `dealloc`.
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (a nonzero size) holds for the layout `made`
        // passes, which is `layout` or `large(layout)`, of the same size.
        made(layout, |l| unsafe { System.alloc(l) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`. The zeroed pages of a fresh mapping are not touched,
        // so the advice comes before the first fault.
        made(layout, |l| unsafe { System.alloc_zeroed(l) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was made by `alloc` with this layout, so with `large(layout)`
        // where that is `Some`, else with `layout`.
        unsafe { System.dealloc(ptr, large(layout).unwrap_or(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if large(layout).is_none() && large(new_layout).is_none() {
            // SAFETY: both small, so made and remade as asked, by the system allocator.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // A block that is or becomes large moves: made anew, copied, given back.
        // SAFETY: `new_layout` has a nonzero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was made by this allocator with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_aligned_to_a_huge_page_and_small_ones_as_asked() {
        assert_eq!(large(Layout::from_size_align(HUGE_PAGE - 1, 8).unwrap()), None);
        let big = large(Layout::from_size_align(HUGE_PAGE, 64).unwrap()).unwrap();
        assert_eq!((big.size(), big.align()), (HUGE_PAGE, HUGE_PAGE));
    }

    #[test]
    fn blocks_keep_their_contents_across_every_kind_of_growth() {
        let a = HugeAlloc;
        for (from, to) in [(64, 128), (64, 3 << 20), (3 << 20, 5 << 20), (5 << 20, 100)] {
            let l = Layout::from_size_align(from, 16).unwrap();
            // SAFETY: a nonzero layout; the block is written within its size, grown
            // with the same layout, read within both sizes, and freed once.
            unsafe {
                let p = a.alloc_zeroed(l);
                assert!(!p.is_null());
                if from >= HUGE_PAGE {
                    assert_eq!(p as usize % HUGE_PAGE, 0);
                }
                for i in 0..from.min(to) {
                    assert_eq!(*p.add(i), 0);
                    *p.add(i) = i as u8;
                }
                let q = a.realloc(p, l, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), i as u8);
                }
                a.dealloc(q, Layout::from_size_align(to, 16).unwrap());
            }
        }
    }
}

//! Transparent huge pages for large heap tables (not DPDK memory: the flow tables are
//! plain Rust allocations of the sans-I/O pipeline).
//!
//! A flow table of a million flows spans some 160 MB, and every lookup lands at a random
//! place in it: with 4 KiB pages, each is a TLB miss (a two-dimensional page walk in a
//! virtual machine). Where the kernel runs transparent huge pages in `madvise` mode (the
//! Debian default), a region gets them only when asked, so the daemon asks once, at
//! start-up, for each such table: `MADV_HUGEPAGE` (later faults and khugepaged use huge
//! pages there) and `MADV_COLLAPSE` (Linux 6.1 and later: the pages already touched are
//! collapsed into huge pages now, whatever the sysfs setting short of `never`).

use std::io;

/// Size of an x86-64 / arm64 transparent huge page.
pub const HUGE_PAGE: usize = 2 << 20;

/// What [`advise_huge_pages`] achieved for a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// The region holds no whole huge page: nothing asked.
    TooSmall,
    /// Huge pages asked for, and the existing pages collapsed into them.
    Collapsed,
}

/// Asks the kernel to back the whole 2 MiB pages inside `[addr, addr + len)` with
/// transparent huge pages (see the module docs). The contents of the memory never
/// change. Errors: `MADV_HUGEPAGE` refused (THP disabled: `EINVAL`), or `MADV_COLLAPSE`
/// failed (an older kernel: `EINVAL`; no huge page free right now: `EAGAIN`/`ENOMEM`);
/// the region then keeps working with the pages it has.
pub fn advise_huge_pages(addr: usize, len: usize) -> io::Result<Advice> {
    let start = addr.next_multiple_of(HUGE_PAGE);
    let end = addr.saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return Ok(Advice::TooSmall);
    }
    for advice in [libc::MADV_HUGEPAGE, libc::MADV_COLLAPSE] {
        // SAFETY: madvise with MADV_HUGEPAGE or MADV_COLLAPSE only changes how the kernel
        // backs the pages of the range (their contents are preserved), so it cannot break
        // any reference into it; on a range that is not mapped it fails with ENOMEM and
        // does nothing. The pointer is only passed to the kernel, never dereferenced.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Advice::Collapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_without_a_whole_huge_page_are_left_alone() {
        assert_eq!(advise_huge_pages(4096, HUGE_PAGE).unwrap(), Advice::TooSmall);
        assert_eq!(advise_huge_pages(HUGE_PAGE + 1, HUGE_PAGE).unwrap(), Advice::TooSmall);
    }

    #[test]
    fn a_large_allocation_keeps_its_contents() {
        let mut v = vec![0u64; 3 * HUGE_PAGE / 8];
        for (i, x) in v.iter_mut().enumerate() {
            *x = i as u64;
        }
        // Collapsing may fail on a busy machine or an old kernel; either way the
        // contents must be untouched.
        let r = advise_huge_pages(v.as_ptr().addr(), v.len() * 8);
        if let Err(e) = &r {
            eprintln!("madvise: {e}");
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
    }
}

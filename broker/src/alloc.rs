//! The process allocator: the system allocator, except that very large requests are served
//! by `mmap(MAP_NORESERVE)` so that they cannot abort the broker.
//!
//! Why this exists: `kafka-protocol` 0.18 sizes a `Vec` from an array count read off the
//! wire before decoding any element, so a 20-byte request declaring 2^31 topics asks for
//! tens of GiB. The system allocator refuses and Rust aborts the whole process
//! (allocation failure is not a panic). Every element needs at least one byte of the frame,
//! so such a request fails to decode after touching almost none of that memory; a lazily
//! committed mapping turns the abort into the decode error that closes the connection.
//! Frames are bounded by `max_request_bytes`, so the memory actually touched stays bounded.
//! Upstream fixes are pending (kafka-protocol-rs PRs #152/#161/#200); drop this when a
//! release caps those capacities.
//!
//! This is the only module with unsafe code: implementing `GlobalAlloc` requires it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at least this large are mapped lazily instead of allocated.
pub const LAZY_THRESHOLD: usize = 1 << 30;

/// The broker's global allocator.
pub struct BrokerAllocator;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

fn is_lazy(layout: &Layout) -> bool {
    // mmap returns page-aligned memory; larger alignments go to the system allocator.
    layout.size() >= LAZY_THRESHOLD && layout.align() <= page_size()
}

unsafe fn map_lazily(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every method either delegates to `System` with the caller's arguments, or serves
// lazy layouts with fresh anonymous mappings that are unmapped with the same size; `is_lazy`
// depends only on the layout, so memory always returns to the allocator that gave it.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // SAFETY: see the impl comment.
            unsafe { map_lazily(layout.size()) }
        } else {
            // SAFETY: delegated with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Anonymous mappings are zero-filled.
            // SAFETY: see the impl comment.
            unsafe { map_lazily(layout.size()) }
        } else {
            // SAFETY: delegated with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `ptr` came from `map_lazily(layout.size())`.
            unsafe {
                libc::munmap(ptr.cast(), layout.size());
            }
        } else {
            // SAFETY: delegated with the caller's pointer and layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: delegated with the caller's arguments.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing the threshold (or growing a mapping): allocate, copy, free.
        // SAFETY: `new_layout` is valid; the copy covers the smaller of the two sizes, both
        // of which are owned; `ptr` is freed with the layout it was allocated with.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_vec_capacity_is_reserved_lazily_and_freed() {
        let a = BrokerAllocator;
        let layout = Layout::from_size_align(64 << 30, 8).expect("layout");
        // SAFETY: a valid layout; the memory is written once, then freed with that layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null(), "64 GiB reserved lazily");
            *p.add(12345) = 7;
            assert_eq!(*p.add(12345), 7);
            let q = a.realloc(p, layout, 1 << 20);
            assert!(!q.is_null());
            assert_eq!(*q.add(12345), 7, "contents survive crossing back under the threshold");
            a.dealloc(q, Layout::from_size_align(1 << 20, 8).expect("layout"));
        }
    }

    #[test]
    fn small_allocations_go_to_the_system_allocator() {
        assert!(!is_lazy(&Layout::from_size_align(1 << 20, 8).expect("layout")));
        assert!(is_lazy(&Layout::from_size_align(LAZY_THRESHOLD, 8).expect("layout")));
    }
}

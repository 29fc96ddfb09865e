//! The global allocator: mimalloc, called the way its C API is fastest.
//!
//! The `mimalloc` crate's allocator passes every request to `mi_malloc_aligned`, and mimalloc v3
//! answers a request above 1 KiB whose block size is not a power of two on the aligned API's slow
//! branch (`mi_theap_malloc_zero_aligned_at_generic`, then over-allocation) even for an
//! alignment of 1: hyper's read buffers and the header maps of every proxied request
//! (purpleprotocol/mimalloc_rust#170 proposes the same change upstream). Nearly every Rust
//! allocation asks for an alignment of at most a word, which every mimalloc block has (block
//! sizes are whole words, pages start 16-aligned): those take the plain calls, the rest keep the
//! aligned ones.
//!
//! The workspace denies `unsafe`; a global allocator cannot be written without it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every block mimalloc hands out has.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as Rust's global allocator.
pub(crate) struct MiMalloc;

// SAFETY: mimalloc's functions are thread-safe, return null on failure, and return blocks aligned
// to at least `BLOCK_ALIGN`, so the plain calls meet any layout aligned to at most that; the
// aligned calls meet the rest. `dealloc` and `realloc` get pointers this allocator returned,
// which `mi_free` and `mi_realloc(_aligned)` accept whichever call made them.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_malloc(layout.size()) as *mut u8
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_zalloc(layout.size()) as *mut u8
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl.
        unsafe { mi::mi_free(ptr as *mut c_void) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if layout.align() <= BLOCK_ALIGN {
                mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
            } else {
                mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class up to the large ones, at every alignment up to a page: the block meets
    /// the layout, can be written in full, survives growing and shrinking, and is freed.
    #[test]
    fn blocks_meet_their_layouts() {
        let a = MiMalloc;
        let mut sizes: Vec<usize> = (1..=1100).collect();
        sizes.extend([
            1500,
            2047,
            3000,
            4097,
            8192,
            10_000,
            65_537,
            300_000,
            5 << 20,
        ]);
        for &size in &sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null(), "{layout:?}");
                    assert_eq!(p as usize % align, 0, "{layout:?}");
                    p.write_bytes(0xa5, size);
                    let grown = a.realloc(p, layout, size * 2 + 7);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "grown {layout:?}");
                    assert_eq!(*grown.add(size - 1), 0xa5, "contents kept");
                    let shrunk = a.realloc(
                        grown,
                        Layout::from_size_align(size * 2 + 7, align).unwrap(),
                        size,
                    );
                    assert_eq!(shrunk as usize % align, 0, "shrunk {layout:?}");
                    a.dealloc(shrunk, layout);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {layout:?}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

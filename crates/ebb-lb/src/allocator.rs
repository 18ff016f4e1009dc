//! The allocator of ebb's binaries: the C library's `malloc`, with over-aligned blocks
//! carved out of a `malloc`'d one instead of asked of `posix_memalign`.
//!
//! tokio pads each task and each socket registration to 128 bytes (a cache line pair),
//! so every connection the balancer serves allocates three such blocks. Rust's system
//! allocator gets those from glibc's `posix_memalign`, which finds a larger chunk, splits
//! off the aligned part and frees the rest: ~760 instructions a call, against ~100 for a
//! `malloc`. That was 14% of the balancer's user-space instructions per connection
//! (`valgrind --tool=callgrind`, one request per connection; docs/benchmarks.md, issue
//! 17, attempt 41). Here such a block is a `malloc` of its size plus its alignment; the
//! pointer `malloc` returned is kept in the 8 bytes before the aligned address, where
//! `dealloc` finds it. The price is up to one alignment of padding per such block.

use std::alloc::{GlobalAlloc, Layout};

/// What `malloc` aligns every block to (glibc: twice the pointer size).
const MALLOC_ALIGN: usize = 2 * std::mem::size_of::<usize>();

/// Room before an over-aligned block for the pointer `malloc` returned.
const HEADER: usize = std::mem::size_of::<*mut u8>();

/// `malloc`, and over-aligned blocks carved from it (see the module's documentation).
/// Binaries install it with `#[global_allocator]`.
pub struct Malloc;

impl Malloc {
    /// `size` bytes aligned to `align` (above `MALLOC_ALIGN`), or null.
    ///
    /// # Safety
    /// `align` is a power of two.
    unsafe fn alloc_aligned(size: usize, align: usize) -> *mut u8 {
        let Some(total) = size.checked_add(align) else {
            return std::ptr::null_mut();
        };
        // SAFETY: plain `malloc`; null is passed on.
        let raw: *mut u8 = unsafe { libc::malloc(total) }.cast();
        if raw.is_null() {
            return raw;
        }
        // The first aligned address with room for the header before it. `raw` is aligned
        // to `MALLOC_ALIGN` (≥ HEADER), so this is at most `align` bytes in, and the block
        // ends within the `size + align` bytes asked for.
        let offset = (raw as usize + HEADER).next_multiple_of(align) - raw as usize;
        // SAFETY: `offset` ≤ `align`, within the block; the header's 8 bytes lie between
        // `raw` and the aligned address, and are aligned to 8 (both ends are).
        unsafe {
            let aligned = raw.add(offset);
            aligned.cast::<*mut u8>().sub(1).write(raw);
            aligned
        }
    }

    /// The pointer `malloc` returned for an over-aligned block.
    ///
    /// # Safety
    /// `p` came from `alloc_aligned`.
    unsafe fn raw_of(p: *mut u8) -> *mut u8 {
        // SAFETY: `alloc_aligned` wrote it there.
        unsafe { p.cast::<*mut u8>().sub(1).read() }
    }
}

// SAFETY: every block is either `malloc`'s own (alignment up to `MALLOC_ALIGN`) or carved
// from one as above, and freed the same way it was made (the layout's alignment tells).
unsafe impl GlobalAlloc for Malloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain `malloc`.
            unsafe { libc::malloc(layout.size()).cast() }
        } else {
            // SAFETY: a layout's alignment is a power of two.
            unsafe { Self::alloc_aligned(layout.size(), layout.align()) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: plain `calloc` (large blocks come zeroed from the kernel for free).
            unsafe { libc::calloc(1, layout.size()).cast() }
        } else {
            // SAFETY: as `alloc`; the block is `layout.size()` bytes long.
            unsafe {
                let p = Self::alloc_aligned(layout.size(), layout.align());
                if !p.is_null() {
                    p.write_bytes(0, layout.size());
                }
                p
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: made by `alloc` with this layout, so with the same path.
        unsafe {
            if layout.align() <= MALLOC_ALIGN {
                libc::free(p.cast());
            } else {
                libc::free(Self::raw_of(p).cast());
            }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MALLOC_ALIGN {
            // SAFETY: `p` is `malloc`'s own; `realloc` keeps its alignment.
            return unsafe { libc::realloc(p.cast(), new_size).cast() };
        }
        // SAFETY: a new block of the same alignment; the old one is `layout.size()` bytes
        // long and freed only after the copy (it stays if the new one cannot be had).
        unsafe {
            let n = Self::alloc_aligned(new_size, layout.align());
            if !n.is_null() {
                std::ptr::copy_nonoverlapping(p, n, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, fills, grows and shrinks blocks of every alignment up to a page,
    /// checking the alignment and that the bytes survive each move.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_through_realloc() {
        let a = Malloc;
        for align in (0..=12).map(|s| 1usize << s) {
            for size in [1, 7, 16, 100, align, 3 * align + 5, 40_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is used within its size, then freed
                // with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    for i in 0..size {
                        p.add(i).write(i as u8);
                    }
                    let bigger = a.realloc(p, layout, size * 2 + 3);
                    assert_eq!(bigger as usize % align, 0);
                    for i in 0..size {
                        assert_eq!(bigger.add(i).read(), i as u8, "size {size} align {align}");
                    }
                    let big = Layout::from_size_align(size * 2 + 3, align).unwrap();
                    let smaller = a.realloc(bigger, big, size.div_ceil(2));
                    assert_eq!(smaller as usize % align, 0);
                    for i in 0..size.div_ceil(2) {
                        assert_eq!(smaller.add(i).read(), i as u8);
                    }
                    a.dealloc(
                        smaller,
                        Layout::from_size_align(size.div_ceil(2), align).unwrap(),
                    );
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_at_every_alignment() {
        let a = Malloc;
        for align in [8, 16, 64, 128, 4096] {
            let layout = Layout::from_size_align(5000, align).unwrap();
            // SAFETY: as above.
            unsafe {
                // Dirty the heap first, so that zeroes are not there by chance.
                let d = a.alloc(layout);
                d.write_bytes(0xAB, 5000);
                a.dealloc(d, layout);
                let p = a.alloc_zeroed(layout);
                assert_eq!(p as usize % align, 0);
                assert!((0..5000).all(|i| p.add(i).read() == 0), "align {align}");
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn an_impossible_size_is_null_not_a_panic() {
        let layout = Layout::from_size_align(isize::MAX as usize - 200, 128).unwrap();
        // SAFETY: a failed allocation returns null, which is not used.
        assert!(unsafe { Malloc.alloc(layout) }.is_null());
    }
}

//! virtio-drivers' `Hal` for an identity-mapped unikernel: physical address = virtual
//! address, DMA memory from the global heap.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: usize = 4096;

pub struct IdentityHal;

fn pages_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.max(1).checked_mul(PAGE)?, PAGE).ok()
}

// SAFETY: (implementation safety) allocations are page-aligned, zeroed, live until
// `dma_dealloc`, and identity-mapped, so the physical address we return is where the device
// writes; `mmio_phys_to_virt` returns the identity mapping, which covers the MMIO window.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = pages_layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size.
        match NonNull::new(unsafe { alloc_zeroed(layout) }) {
            Some(ptr) => (ptr.as_ptr() as PhysAddr, ptr),
            // A zero physical address tells virtio-drivers the allocation failed.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        if let Some(layout) = pages_layout(pages) {
            // SAFETY: the caller returns memory that `dma_alloc` gave out with this size.
            unsafe { dealloc(vaddr.as_ptr(), layout) };
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

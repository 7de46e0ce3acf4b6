//! The global allocator: talc over the largest RAM region above the kernel image. Interrupt
//! handlers never allocate, so a spin lock is never contended on this single vCPU.

use talc::{ErrOnOom, Span, Talc, Talck};

#[global_allocator]
static ALLOCATOR: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Hands `[start, end)` to the allocator and returns how many bytes it accepted.
///
/// # Safety
/// The range must be identity-mapped RAM that nothing else uses, for the rest of the run.
pub unsafe fn init(start: u64, end: u64) -> usize {
    let span = Span::new(start as *mut u8, end as *mut u8);
    // SAFETY: the caller hands us exclusive ownership of this RAM.
    match unsafe { ALLOCATOR.lock().claim(span) } {
        Ok(claimed) => claimed.size(),
        Err(()) => 0,
    }
}

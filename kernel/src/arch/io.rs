//! Port I/O. Each access is a VM exit under KVM (~10 µs on this machine's nested KVM), so
//! callers keep them few.

use core::arch::asm;

/// # Safety
/// Writing to an I/O port can have arbitrary side effects on the machine; the caller must
/// know what device sits at `port`.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees that this port write is meaningful and harmless.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller guarantees that this port write is meaningful and harmless.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller guarantees that this port write is meaningful and harmless.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// Reading some ports has side effects (it acknowledges or consumes device state).
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees that reading this port is harmless.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

/// # Safety
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller guarantees that reading this port is harmless.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    value
}

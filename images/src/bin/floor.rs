//! The boot-time floor: the least a guest can do. It writes one byte to the serial port and
//! leaves QEMU through the debug-exit port, so QEMU spawn-to-exit measures QEMU itself.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod image {
    use nanovnf_kernel::arch::io::outb;

    fn main() -> ! {
        // SAFETY: COM1's transmit register.
        unsafe { outb(0x3F8, b'.') };
        nanovnf_kernel::exit(0x7e)
    }

    nanovnf_kernel::entry!(main);
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("{}", nanovnf_images::HOST_STUB_MESSAGE);
    std::process::exit(2);
}

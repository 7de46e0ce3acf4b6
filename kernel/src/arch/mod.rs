//! Everything that touches the (virtual) hardware. Compiled only for `x86_64-unknown-none`.

mod boot;
pub mod control;
pub mod fwcfg;
mod heap;
pub mod interrupts;
pub mod io;
pub mod serial;
pub mod timer;

use crate::cmdline::{self, MmioDevice};
use crate::exit_code;
use crate::pvh::{self, MemoryRegion, StartInfo};
use alloc::string::String;
use alloc::vec::Vec;
use nanovnf_schema::BootConfig;

unsafe extern "C" {
    static __kernel_end: u8;
    static nanovnf_start_info: u32;
}

unsafe extern "Rust" {
    /// The image's main, defined by [`crate::entry!`].
    fn __nanovnf_main() -> !;
}

#[unsafe(no_mangle)]
extern "C" fn kernel_entry(_start_info: u32) -> ! {
    // SAFETY: the image links exactly one `entry!` main.
    unsafe { __nanovnf_main() }
}

/// What [`init`] found out about the machine and the appliance's configuration.
pub struct Boot {
    pub cmdline: String,
    pub config: BootConfig,
    pub mmio_devices: Vec<MmioDevice>,
    pub clock: timer::ClockSource,
    pub heap_bytes: usize,
}

/// Leaves QEMU through the isa-debug-exit port: QEMU's exit status is `(code << 1) | 1`.
pub fn exit(code: u32) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device the launcher always attaches.
    unsafe { io::outl(0xf4, code) };
    // Without the device (a misconfigured launch) stop here rather than run on.
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Prints one line and exits with `code`: for failures that make serving impossible.
pub fn fatal(code: u32, args: core::fmt::Arguments<'_>) -> ! {
    serial::write_line(format_args!("FATAL {args}"));
    exit(code)
}

pub(crate) fn fatal_exception(vector: u8, error_code: u64, rip: u64, cr2: u64) -> ! {
    fatal(
        exit_code::EXCEPTION,
        format_args!("cpu exception {vector} error {error_code:#x} rip {rip:#x} cr2 {cr2:#x}"),
    )
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fatal(exit_code::PANIC, format_args!("panic: {info}"))
}

fn read_phys<const N: usize>(paddr: u64) -> [u8; N] {
    let mut out = [0u8; N];
    // SAFETY: `paddr` comes from the PVH loader and lies in identity-mapped low memory.
    unsafe { core::ptr::copy_nonoverlapping(paddr as *const u8, out.as_mut_ptr(), N) };
    out
}

fn read_cmdline(paddr: u64) -> String {
    if paddr == 0 || paddr >= boot::IDENTITY_MAPPED {
        return String::new();
    }
    let mut bytes = Vec::new();
    for i in 0..4096u64 {
        let [b] = read_phys::<1>(paddr + i);
        if b == 0 {
            break;
        }
        bytes.push(b);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Brings the machine up: heap, interrupts, clock, log, command line and boot
/// configuration. A missing or corrupt configuration stops the appliance with one serial
/// line and a distinct exit status.
pub fn init() -> Boot {
    // SAFETY: written once by the boot assembly before any Rust runs.
    let info_paddr = u64::from(unsafe { core::ptr::read_volatile(&raw const nanovnf_start_info) });
    let info = match StartInfo::parse(&read_phys::<{ pvh::START_INFO_LEN }>(info_paddr)) {
        Ok(info) => info,
        Err(e) => fatal(
            exit_code::BAD_START_INFO,
            format_args!("pvh start info: {e:?}"),
        ),
    };

    let kernel_end = &raw const __kernel_end as u64;
    let entries = (0..u64::from(info.memmap_entries).min(128)).map(|i| {
        MemoryRegion::parse(&read_phys(
            info.memmap_paddr + i * pvh::MEMMAP_ENTRY_LEN as u64,
        ))
    });
    let Some((start, end)) = pvh::heap_range(entries, kernel_end, boot::IDENTITY_MAPPED) else {
        fatal(
            exit_code::NO_MEMORY,
            format_args!("no RAM above the kernel image"),
        )
    };
    // The command line lives in low memory; copy it before anything else is allocated.
    // SAFETY: the range is RAM above our image that the memory map says is free.
    let heap_bytes = unsafe { heap::init(start, end) };
    let cmdline = read_cmdline(info.cmdline_paddr);

    interrupts::init();
    let clock = timer::init();
    // The command line's level applies from here on; the configuration's once it is read.
    let cmdline_level = cmdline::value(&cmdline, "nanovnf.log").and_then(crate::parse_level);
    serial::init_logger(cmdline_level.unwrap_or(log::LevelFilter::Info));
    log::debug!("clock {clock:?}");

    let blob = match fwcfg::read_file(nanovnf_schema::FW_CFG_NAME) {
        Ok(Some(blob)) => blob,
        Ok(None) => fatal(
            exit_code::CONFIG_MISSING,
            format_args!(
                "config: fw_cfg file {} is missing",
                nanovnf_schema::FW_CFG_NAME
            ),
        ),
        Err(e) => fatal(exit_code::FW_CFG, format_args!("config: fw_cfg: {e:?}")),
    };
    log::debug!("fw_cfg read: {} bytes", blob.len());
    let config = match nanovnf_schema::decode(&blob) {
        Ok(config) => config,
        Err(e) => fatal(exit_code::config_error(&e), format_args!("config: {e}")),
    };
    log::set_max_level(cmdline_level.unwrap_or(crate::level_filter(config.log_level)));
    let mmio_devices = cmdline::mmio_devices(&cmdline).collect();
    log::debug!("kernel up: tsc {} Hz", timer::tsc_hz());
    Boot {
        cmdline,
        config,
        mmio_devices,
        clock,
        heap_bytes,
    }
}

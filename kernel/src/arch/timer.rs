//! The clock (TSC, scaled by kvmclock or a PIT calibration) and the one-shot deadline timer:
//! the local APIC timer (up to about a minute per shot, so an idle appliance with a far
//! deadline sleeps instead of waking every 55 ms), or PIT channel 0 (IRQ 0, at most
//! 54.9 ms per shot) where the APIC timer does not count.

use super::io::{inb, outb};
use crate::clock::{TscScale, pit_counts_for, tsc_hz_from_pit};
use core::sync::atomic::{AtomicU64, Ordering};

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static MULT: AtomicU64 = AtomicU64::new(0);

/// Where the TSC frequency came from, for the boot log.
#[derive(Debug, Clone, Copy)]
pub enum ClockSource {
    Kvmclock,
    Pit,
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Nanoseconds since [`init`].
pub fn now_ns() -> u64 {
    let scale = TscScale {
        mult: MULT.load(Ordering::Relaxed),
    };
    scale.ticks_to_ns(rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

pub fn tsc_hz() -> u64 {
    TscScale {
        mult: MULT.load(Ordering::Relaxed),
    }
    .hz()
}

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

/// kvmclock's per-vCPU time structure (`pvclock_vcpu_time_info`).
#[repr(C, align(64))]
struct PvclockTimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

fn kvmclock_scale() -> Option<TscScale> {
    let sig = cpuid(0x4000_0000);
    let kvm = sig.ebx == 0x4b4d_564b && sig.ecx == 0x564b_4d56 && sig.edx == 0x4d;
    if !kvm || cpuid(0x4000_0001).eax & KVM_FEATURE_CLOCKSOURCE2 == 0 {
        return None;
    }
    let mut info = PvclockTimeInfo {
        version: 0,
        pad0: 0,
        tsc_timestamp: 0,
        system_time: 0,
        tsc_to_system_mul: 0,
        tsc_shift: 0,
        flags: 0,
        pad: [0; 2],
    };
    let paddr = &raw mut info as u64;
    // SAFETY: KVM's documented MSR: the hypervisor writes the structure at `paddr` (identity
    // mapped, on our stack, alive until we disable it below) and then we stop it again.
    let (mul, shift) = unsafe {
        x86_64::registers::model_specific::Msr::new(MSR_KVM_SYSTEM_TIME_NEW).write(paddr | 1);
        let ptr = &raw const info;
        let mul = core::ptr::read_volatile(&raw const (*ptr).tsc_to_system_mul);
        let shift = core::ptr::read_volatile(&raw const (*ptr).tsc_shift);
        x86_64::registers::model_specific::Msr::new(MSR_KVM_SYSTEM_TIME_NEW).write(0);
        (mul, shift)
    };
    TscScale::from_pvclock(mul, shift)
}

/// Reads PIT channel 0's current count (latch command, then low and high byte).
fn pit_read_count() -> u16 {
    // SAFETY: the counter-latch command for channel 0 followed by reading its two bytes.
    unsafe {
        outb(0x43, 0x00);
        let lo = inb(0x40);
        let hi = inb(0x40);
        u16::from_le_bytes([lo, hi])
    }
}

/// Measures the TSC against PIT channel 0 for about half a millisecond (within one PIT
/// tick, 838 ns: ±0.17%), by reading its counter
/// (microvm has no port 0x61, so channel 2's output pin cannot be watched). IRQ 0 is still
/// masked at this point; the event loop re-programs channel 0 as its one-shot timer.
fn pit_scale() -> Option<TscScale> {
    const COUNTS: u16 = 597;
    // SAFETY: channel 0, lobyte/hibyte, mode 2 (rate generator) from 65535: it counts down
    // continuously; nothing else uses the PIT yet.
    unsafe {
        outb(0x43, 0x34);
        outb(0x40, 0xFF);
        outb(0x40, 0xFF);
    }
    let c0 = pit_read_count();
    let t0 = rdtsc();
    let mut spins = 0u32;
    loop {
        let elapsed = c0.wrapping_sub(pit_read_count());
        if (COUNTS..0x8000).contains(&elapsed) {
            let t1 = rdtsc();
            return TscScale::from_hz(tsc_hz_from_pit(t1 - t0, u64::from(elapsed)));
        }
        spins += 1;
        if spins > 1_000_000 {
            // No PIT behind the ports (reads return 0xFFFF forever).
            return None;
        }
    }
}

pub fn init() -> ClockSource {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
    let (scale, source) = match kvmclock_scale() {
        Some(s) => (s, ClockSource::Kvmclock),
        // Without a reference we still need a clock; 1 GHz keeps time roughly right.
        None => (
            pit_scale().unwrap_or(TscScale { mult: 1 << 32 }),
            ClockSource::Pit,
        ),
    };
    MULT.store(scale.mult, Ordering::Relaxed);
    stop_pit();
    source
}

/// Leaves PIT channel 0 in one-shot mode. From reset (square wave) or the calibration
/// (rate generator) it would tick every 54.9 ms forever: even with IRQ 0 masked, QEMU runs
/// a host timer for every tick, which is most of what an idle appliance costs the host.
fn stop_pit() {
    // SAFETY: PIT channel 0, mode 0, lobyte/hibyte count 0 (65536): one terminal count
    // 54.9 ms from now, then no further transitions until `arm_oneshot` re-programs it.
    unsafe {
        outb(0x43, 0x30);
        outb(0x40, 0);
        outb(0x40, 0);
    }
}

const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_EOI: u64 = 0xB0;
const LAPIC_LVT_TIMER: u64 = 0x320;
const LAPIC_INITIAL_COUNT: u64 = 0x380;
const LAPIC_CURRENT_COUNT: u64 = 0x390;
const LAPIC_DIVIDE: u64 = 0x3E0;
/// Divide configuration 0b0011: the timer counts at the APIC bus clock / 16.
const DIVIDE_BY_16: u32 = 0b0011;
const LVT_MASKED: u32 = 1 << 16;
/// How long the calibration watches the APIC timer against the TSC.
const CALIBRATION_NS: u64 = 200_000;

/// The APIC timer's counting rate in Hz once calibrated; 1 = calibration found it not
/// counting (use the PIT); 0 = not calibrated yet.
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: a local APIC register, identity-mapped uncached by the boot page tables; a
    // 32-bit aligned write as the APIC requires.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, value) }
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: as in `lapic_write`, a 32-bit aligned read of an APIC register.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

/// Acknowledges the APIC timer's interrupt.
pub fn lapic_end_of_interrupt() {
    lapic_write(LAPIC_EOI, 0);
}

/// Measures the APIC timer against the (already calibrated) TSC, once.
fn lapic_hz() -> u64 {
    match LAPIC_HZ.load(Ordering::Relaxed) {
        0 => {}
        hz => return hz,
    }
    lapic_write(LAPIC_DIVIDE, DIVIDE_BY_16);
    lapic_write(
        LAPIC_LVT_TIMER,
        LVT_MASKED | u32::from(super::interrupts::LAPIC_TIMER_VECTOR),
    );
    lapic_write(LAPIC_INITIAL_COUNT, u32::MAX);
    let t0 = now_ns();
    while now_ns() - t0 < CALIBRATION_NS {
        core::hint::spin_loop();
    }
    let counted = u64::from(u32::MAX - lapic_read(LAPIC_CURRENT_COUNT));
    let elapsed = now_ns() - t0;
    lapic_write(LAPIC_INITIAL_COUNT, 0);
    let hz = if counted == 0 {
        1
    } else {
        (counted * 1_000_000_000 / elapsed.max(1)).max(2)
    };
    LAPIC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// Arms the deadline timer to raise its interrupt after `ns` (the APIC timer: up to
/// 2^32 counts, about a minute; the PIT: ~54.9 ms). Callers re-arm for longer deadlines.
pub fn arm_oneshot(ns: u64) {
    let hz = lapic_hz();
    if hz > 1 {
        let counts =
            (u128::from(ns) * u128::from(hz) / 1_000_000_000).clamp(1, u128::from(u32::MAX));
        // One-shot mode, unmasked; writing the initial count starts it.
        lapic_write(
            LAPIC_LVT_TIMER,
            u32::from(super::interrupts::LAPIC_TIMER_VECTOR),
        );
        lapic_write(LAPIC_INITIAL_COUNT, counts as u32);
        return;
    }
    let counts = pit_counts_for(ns);
    // SAFETY: programs PIT channel 0 in mode 0 (interrupt on terminal count), lobyte/hibyte.
    unsafe {
        outb(0x43, 0x30);
        outb(0x40, counts as u8);
        outb(0x40, (counts >> 8) as u8);
    }
}

//! Exceptions and device interrupts through the legacy 8259 PIC pair (remapped to vectors
//! 32–47). It is present on microvm and q35 alike and routes both virtio-mmio lines and
//! PCI INTx. A device IRQ handler only masks its line and records it; the event loop
//! acknowledges the device and unmasks the line, so edge- and level-triggered lines both
//! work without the handler knowing the device.

use super::io::{inb, outb};
use core::sync::atomic::{AtomicU8, AtomicU16, Ordering};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

const PIC1_CMD: u16 = 0x20;
const PIC1_DATA: u16 = 0x21;
const PIC2_CMD: u16 = 0xA0;
const PIC2_DATA: u16 = 0xA1;
const PIC_EOI: u8 = 0x20;
/// First vector of the remapped PIC.
pub const IRQ_BASE: u8 = 32;
/// The local APIC timer's vector (after the PIC's 32–47).
pub const LAPIC_TIMER_VECTOR: u8 = 48;
const VECTORS: usize = 49;

core::arch::global_asm!(
    r#"
    .section .text.isr, "ax"
    .code64
    .macro ISR_NOERR n
isr_\n:
    pushq $0
    pushq $\n
    jmp isr_common
    .endm
    .macro ISR_ERR n
isr_\n:
    pushq $\n
    jmp isr_common
    .endm

    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    ISR_NOERR \n
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
    ISR_ERR \n
    .endr
    .irp n, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48
    ISR_NOERR \n
    .endr

isr_common:
    cld
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq %rsp, %rdi
    call nanovnf_interrupt_dispatch
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq

    .section .rodata.isr, "a"
    .p2align 3
    .global nanovnf_isr_table
nanovnf_isr_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48
    .quad isr_\n
    .endr
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static nanovnf_isr_table: [u64; VECTORS];
}

/// What `isr_common` pushed, lowest address first.
#[repr(C)]
pub struct TrapFrame {
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

static IDT: Once<InterruptDescriptorTable> = Once::new();
/// IRQ lines that fired since the event loop last looked (bit n = IRQ n).
static PENDING: AtomicU16 = AtomicU16::new(0);
/// Shadow of the PIC mask registers (bit set = masked).
static MASK_LO: AtomicU8 = AtomicU8::new(0xFB);
static MASK_HI: AtomicU8 = AtomicU8::new(0xFF);

const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_SVR: u64 = 0xF0;
const LAPIC_LVT_LINT0: u64 = 0x350;
/// LVT delivery mode ExtINT, unmasked: the "virtual wire" that carries the PIC's output.
const LVT_EXTINT: u32 = 0x700;
/// Software-enable bit of the spurious-interrupt register, with vector 47: a LAPIC
/// spurious interrupt then looks like a spurious IRQ 15, which dispatch already ignores.
const SVR_ENABLE_VECTOR_47: u32 = 0x100 | 47;

/// Installs the IDT and remaps the PIC with every line masked except the cascade.
pub fn init() {
    // Without firmware nobody puts the local APIC's LINT0 into virtual-wire mode, so PIC
    // interrupts would never reach the CPU (QEMU and KVM route the PIC through LINT0).
    // SAFETY: the local APIC's registers, identity-mapped uncached by the boot page tables;
    // 32-bit aligned writes as the APIC requires.
    unsafe {
        core::ptr::write_volatile((LAPIC_BASE + LAPIC_SVR) as *mut u32, SVR_ENABLE_VECTOR_47);
        core::ptr::write_volatile((LAPIC_BASE + LAPIC_LVT_LINT0) as *mut u32, LVT_EXTINT);
    }
    let idt = IDT.call_once(|| {
        let mut idt = InterruptDescriptorTable::new();
        // SAFETY: reading an immutable table emitted by the assembly above.
        let table = unsafe { &nanovnf_isr_table };
        for (vector, &addr) in table.iter().enumerate() {
            let addr = VirtAddr::new(addr);
            // SAFETY: every stub follows the interrupt calling convention: it saves the
            // caller-saved registers, pushes a uniform frame and returns with iretq.
            unsafe {
                match vector {
                    0 => idt.divide_error.set_handler_addr(addr),
                    1 => idt.debug.set_handler_addr(addr),
                    2 => idt.non_maskable_interrupt.set_handler_addr(addr),
                    3 => idt.breakpoint.set_handler_addr(addr),
                    4 => idt.overflow.set_handler_addr(addr),
                    5 => idt.bound_range_exceeded.set_handler_addr(addr),
                    6 => idt.invalid_opcode.set_handler_addr(addr),
                    7 => idt.device_not_available.set_handler_addr(addr),
                    8 => idt.double_fault.set_handler_addr(addr),
                    10 => idt.invalid_tss.set_handler_addr(addr),
                    11 => idt.segment_not_present.set_handler_addr(addr),
                    12 => idt.stack_segment_fault.set_handler_addr(addr),
                    13 => idt.general_protection_fault.set_handler_addr(addr),
                    14 => idt.page_fault.set_handler_addr(addr),
                    16 => idt.x87_floating_point.set_handler_addr(addr),
                    17 => idt.alignment_check.set_handler_addr(addr),
                    18 => idt.machine_check.set_handler_addr(addr),
                    19 => idt.simd_floating_point.set_handler_addr(addr),
                    20 => idt.virtualization.set_handler_addr(addr),
                    21 => idt.cp_protection_exception.set_handler_addr(addr),
                    28 => idt.hv_injection_exception.set_handler_addr(addr),
                    29 => idt.vmm_communication_exception.set_handler_addr(addr),
                    30 => idt.security_exception.set_handler_addr(addr),
                    v if v >= 32 => idt[v as u8].set_handler_addr(addr),
                    _ => continue,
                };
            }
        }
        idt
    });
    idt.load();

    // SAFETY: the standard 8259 initialisation sequence: ICW1 (edge, cascade, ICW4), ICW2
    // vector bases 32/40, ICW3 cascade on IRQ2, ICW4 8086 mode; then mask everything.
    unsafe {
        outb(PIC1_CMD, 0x11);
        outb(PIC2_CMD, 0x11);
        outb(PIC1_DATA, IRQ_BASE);
        outb(PIC2_DATA, IRQ_BASE + 8);
        outb(PIC1_DATA, 4);
        outb(PIC2_DATA, 2);
        outb(PIC1_DATA, 1);
        outb(PIC2_DATA, 1);
        outb(PIC1_DATA, MASK_LO.load(Ordering::Relaxed));
        outb(PIC2_DATA, MASK_HI.load(Ordering::Relaxed));
    }
}

fn set_masked(irq: u8, masked: bool) {
    let (shadow, port, bit) = if irq < 8 {
        (&MASK_LO, PIC1_DATA, irq)
    } else {
        (&MASK_HI, PIC2_DATA, irq - 8)
    };
    let old = shadow.load(Ordering::Relaxed);
    let new = if masked {
        old | (1 << bit)
    } else {
        old & !(1 << bit)
    };
    if new != old {
        shadow.store(new, Ordering::Relaxed);
        // SAFETY: writing the PIC's mask register (OCW1) only changes which lines deliver.
        unsafe { outb(port, new) };
    }
}

/// Lets IRQ `irq` (0–15) deliver.
pub fn unmask(irq: u8) {
    if irq < 16 {
        set_masked(irq, false);
    }
}

/// Returns and clears the set of IRQ lines that fired (bit n = IRQ n). Each returned line
/// is masked until [`unmask`] is called for it, after its device has been acknowledged.
pub fn take_pending() -> u16 {
    PENDING.swap(0, Ordering::AcqRel)
}

/// True when a device line fired since [`take_pending`] last looked (the timer excluded).
pub fn device_pending() -> bool {
    PENDING.load(Ordering::Acquire) & !1 != 0
}

fn end_of_interrupt(irq: u8) {
    // SAFETY: OCW2 non-specific EOI to the PIC(s) that delivered this IRQ.
    unsafe {
        if irq >= 8 {
            outb(PIC2_CMD, PIC_EOI);
        }
        outb(PIC1_CMD, PIC_EOI);
    }
}

/// A spurious IRQ 7/15 has no bit set in the PIC's in-service register.
fn is_spurious(irq: u8) -> bool {
    if irq != 7 && irq != 15 {
        return false;
    }
    let cmd = if irq == 7 { PIC1_CMD } else { PIC2_CMD };
    // SAFETY: OCW3 "read ISR" followed by reading it back: no side effects.
    let isr = unsafe {
        outb(cmd, 0x0B);
        inb(cmd)
    };
    isr & 0x80 == 0
}

#[unsafe(no_mangle)]
extern "C" fn nanovnf_interrupt_dispatch(frame: &TrapFrame) {
    let vector = frame.vector as u8;
    if vector < IRQ_BASE {
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
        crate::arch::fatal_exception(vector, frame.error_code, frame.rip, cr2);
    }
    if vector == LAPIC_TIMER_VECTOR {
        // The deadline timer, delivered by the local APIC: it needs the APIC's EOI, and
        // reads as IRQ 0 (the timer) to the event loop.
        super::timer::lapic_end_of_interrupt();
        PENDING.fetch_or(1, Ordering::AcqRel);
        return;
    }
    let irq = vector - IRQ_BASE;
    if is_spurious(irq) {
        if irq == 15 {
            // The master saw a real cascade interrupt and needs its EOI.
            // SAFETY: OCW2 EOI to the master PIC.
            unsafe { outb(PIC1_CMD, PIC_EOI) };
        }
        return;
    }
    if irq != 0 {
        // The timer is edge-triggered and re-armed by the loop; device lines stay masked
        // until the loop has acknowledged the device.
        set_masked(irq, true);
    }
    PENDING.fetch_or(1 << irq, Ordering::AcqRel);
    end_of_interrupt(irq);
}

//! PVH entry: QEMU enters `pvh_start` in 32-bit protected mode, paging off, with `ebx`
//! pointing at `hvm_start_info`. We zero .bss, identity-map the first 4 GiB with 2 MiB
//! pages (the top GiB uncached: it holds the PCI hole, virtio-mmio, IOAPIC and LAPIC),
//! enter long mode and call `kernel_entry(start_info)`.

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4
    .long 4
    .long 18
    .asciz "Xen"
    .p2align 2
    .long pvh_start
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    cld
    movl %ebx, %esi
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl %esi, nanovnf_start_info

    movl $boot_pdpt, %eax
    orl $3, %eax
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt
    addl $4096, %eax
    movl %eax, boot_pdpt + 8
    addl $4096, %eax
    movl %eax, boot_pdpt + 16
    addl $4096, %eax
    movl %eax, boot_pdpt + 24

    movl $boot_pd, %edi
    movl $0x83, %eax
    movl $2048, %ecx
pvh_map_loop:
    movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop pvh_map_loop

    movl $boot_pd + 3 * 4096, %edi
    movl $512, %ecx
pvh_uncached_loop:
    orl $0x18, (%edi)
    addl $8, %edi
    loop pvh_uncached_loop

    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $pvh_long_mode

    .code64
pvh_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl nanovnf_start_info(%rip), %edi
    call kernel_entry
pvh_halt:
    hlt
    jmp pvh_halt

    .section .rodata.boot, "a"
    .p2align 4
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .word 23
    .long boot_gdt

    .section .data.boot, "aw"
    .p2align 2
    .global nanovnf_start_info
nanovnf_start_info:
    .long 0

    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_stack:
    .skip 65536
boot_stack_top:
"#,
    options(att_syntax)
);

/// Upper bound of the identity map built above.
pub const IDENTITY_MAPPED: u64 = 1 << 32;

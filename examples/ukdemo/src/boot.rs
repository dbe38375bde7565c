//! PVH entry: the loader (QEMU `-kernel`, Firecracker, Cloud Hypervisor, Xen)
//! finds the 32-bit entry point in the `XEN_ELFNOTE_PHYS32_ENTRY` note and
//! jumps there in 32-bit protected mode, paging off, with `ebx` holding the
//! physical address of `hvm_start_info`.
//!
//! The PVH contract (Xen's `docs/misc/pvh.pandoc`) promises only that: `ebx`,
//! CR0.PE set and paging off, CR4 clear, flat 32-bit code and data segments
//! (selectors unspecified), a TSS in TR, IF clear. The stack pointer, the
//! other general-purpose registers, the other flags, the GDT's location
//! and selectors are unspecified: Cloud Hypervisor and Firecracker enter
//! with `esp = 0` (QEMU's option ROM leaves a usable stack, which hid the
//! triple fault of issue 10: a push at `esp = 0` after paging is on faults,
//! with no IDT). So this code, before anything else, loads its own GDT and
//! reloads every segment register from it (a far jump, which needs no
//! stack), takes its own stack, sets EFLAGS, CR0 and CR4 to known values,
//! clears `.bss`, identity-maps the first GiB with 2 MiB pages (tables it
//! builds itself, in `.bss`), enables long mode, SSE and NX, and calls
//! `kmain(start_info_paddr)`. Nothing is read from low memory here except
//! through `ebx`.

use core::arch::global_asm;

/// Size of the boot (and only) kernel stack.
pub const STACK_SIZE: usize = 256 * 1024;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4              /* name size: "Xen\0" */
    .long 8              /* descriptor size */
    .long 18             /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad _start32
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    mov esi, ebx                      /* hvm_start_info, kept for kmain */

    /* Our own GDT before any segment use: the loader's may be anywhere, with
     * any selectors. lgdt takes a linear address (CS is flat, as promised);
     * the far jump reloads CS and needs no stack. */
    lgdt [boot_gdt_ptr]
    .byte 0xEA                        /* jmp ptr16:32 (far, direct) */
    .long 1f
    .word 0x18
1:
    mov eax, 0x10
    mov ds, eax
    mov es, eax
    mov ss, eax
    mov fs, eax
    mov gs, eax
    /* Our own stack: esp is unspecified (0 on Cloud Hypervisor and
     * Firecracker). The stack is in .bss, cleared below while unused. */
    mov esp, offset boot_stack_top
    /* EFLAGS: only bit 1 (reserved, set); DF and AC clear. */
    push 2
    popfd

    /* Clear .bss: it holds the boot page tables and the stack. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    rep stosb

    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB, present+writable+large. */
    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jne 2b

    /* CR4: PAE, OSFXSR, OSXMMEXCPT, nothing else. */
    mov eax, (1 << 5) | (1 << 9) | (1 << 10)
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    /* EFER: LME, NXE. */
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    /* CR0: PE, MP, ET, NE, WP, PG, nothing else (caches on, EM and TS off
     * so SSE instructions work). */
    mov eax, (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 31)
    mov cr0, eax

    /* Compatibility mode now; into 64-bit code through the GDT's 0x08. */
    .byte 0xEA                        /* jmp ptr16:32, as above */
    .long _start64
    .word 0x08

    .code64
_start64:
    .cfi_startproc
    .cfi_undefined rip
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    xor ebp, ebp
    mov edi, esi
    call kmain
3:
    hlt
    jmp 3b
    .cfi_endproc

    .section .rodata.boot_gdt, "a"
    .p2align 4
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF          /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF          /* 0x10: flat data */
    .quad 0x00CF9A000000FFFF          /* 0x18: flat 32-bit code (entry only) */
boot_gdt_end:
    .p2align 2
    .word 0
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096
    .p2align 4
boot_stack: .skip {stack_size}
    .global boot_stack_top
boot_stack_top:
    "#,
    stack_size = const STACK_SIZE,
);

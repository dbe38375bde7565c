//! PVH entry: the loader (QEMU `-kernel`, Firecracker, Cloud Hypervisor, Xen)
//! finds the 32-bit entry point in the `XEN_ELFNOTE_PHYS32_ENTRY` note and
//! jumps there in 32-bit protected mode, paging off, with `ebx` holding the
//! physical address of `hvm_start_info`. This code clears `.bss`, identity-maps
//! the first GiB with 2 MiB pages, enables long mode, SSE and NX, and calls
//! `kmain(start_info_paddr)` on the boot stack.

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
    cld
    mov esi, ebx                      /* hvm_start_info, kept for kmain */

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

    /* CR4: PAE, OSFXSR, OSXMMEXCPT. */
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    /* EFER: LME, NXE. */
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    /* CR0: PE, MP, WP, PG; EM off so SSE instructions work. */
    mov eax, cr0
    and eax, ~(1 << 2)
    or eax, (1 << 0) | (1 << 1) | (1 << 16) | (1 << 31)
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, offset _start64
    push 0x08
    push eax
    retf

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
    .quad 0x00CF92000000FFFF          /* 0x10: data */
boot_gdt_end:
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

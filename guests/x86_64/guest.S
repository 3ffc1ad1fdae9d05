/*
 * x86_64 probe guest: implements guests/ABI.md (version 1) on qemu-system-x86_64 -machine microvm.
 * README.md beside this file gives the build and QEMU command lines, the memory layout, the pages
 * the harness must map in the table under test, and the record formats.
 *
 * Sources cited below:
 *   SDM   Intel 64 and IA-32 Architectures Software Developer's Manual (order no. 325462),
 *         by volume and section title; numbered only in Vol. 3A chapter 4 (Paging), whose
 *         numbers have held across recent editions.
 *   PVH   Xen's x86/HVM direct boot ABI, xen.git docs/misc/pvh.pandoc, and the note number in
 *         xen/include/public/elfnote.h.
 *   NOTES /work/shared/QEMU-NOTES.md (facts measured on QEMU for this project).
 *   QEMU  QEMU source, hw/i386/microvm.c / include/hw/i386/microvm.h and
 *         include/hw/acpi/generic_event_device.h (microvm's fixed device addresses).
 */

/* ---- Mailbox offsets (guests/ABI.md, "Control block") ---- */
        .equ MB_MAGIC,          0x00
        .equ MB_ABI,            0x08
        .equ MB_GO,             0x10
        .equ MB_DONE,           0x18
        .equ MB_COMMAND,        0x20
        .equ MB_ROOT0,          0x28
        .equ MB_MODE,           0x38
        .equ MB_OPTIONS,        0x40
        .equ MB_PROBES,         0x48
        .equ MB_RESULTS,        0x50
        .equ MB_COUNT,          0x58
        .equ MB_PROGRESS,       0x60
        .equ MB_ERROR,          0x68
        .equ MB_ERROR_CAUSE,    0x70
        .equ MB_ERROR_PC,       0x78
        .equ MB_ERROR_ADDR,     0x80
        .equ MB_SIZE,           0x88
        .equ MAGIC,             0x3145424f52505450      /* "PTPROBE1" */
        .equ ABI_VERSION,       1
        .equ CMD_PROBE,         1
        .equ CMD_POWER_OFF,     2

/* ---- This guest's `error` values (README.md, "Errors") ---- */
        .equ ERROR_EXCEPTION,   1       /* an exception outside a probe */
        .equ ERROR_REQUEST,     2       /* a command or mode this guest does not know */

/* ---- options bits (README.md, "options") ---- */
        .equ OPT_USER,          1 << 0  /* ABI: probe at ring 3 */
        .equ OPT_WP,            1 << 1  /* CR0.WP */
        .equ OPT_NXE,           1 << 2  /* EFER.NXE */
        .equ OPT_SMEP,          1 << 3  /* CR4.SMEP */
        .equ OPT_SMAP,          1 << 4  /* CR4.SMAP */
        .equ OPT_AC,            1 << 5  /* EFLAGS.AC while probing */

/* ---- Result record (guests/ABI.md, "Probes and results") ---- */
        .equ RES_OUTCOME,       0
        .equ RES_VALUE,         8
        .equ RES_CAUSE,         16
        .equ RES_ADDR,          24
        .equ RES_SIZE,          32
        .equ OUTCOME_DONE,      1
        .equ OUTCOME_FAULT,     2

/* ---- Segment selectors into `gdt` (SDM Vol. 3A "Segment Selectors": index << 3 | RPL) ---- */
        .equ KCODE64,           0x08
        .equ KDATA,             0x10
        .equ KCODE32,           0x18
        .equ UCODE64,           0x20 | 3
        .equ UDATA,             0x28 | 3
        .equ TSS_SEL,           0x30

/* ---- Control registers and MSRs (SDM Vol. 3A "Control Registers"; 4.1.3 "Paging-Mode
 *      Modifiers" for WP, SMEP, SMAP, NXE; EFER is MSR 0xC0000080, SDM Vol. 4) ---- */
        .equ CR0_PE,            1 << 0
        .equ CR0_WP,            1 << 16
        .equ CR0_PG,            1 << 31
        .equ CR4_PAE,           1 << 5
        .equ CR4_LA57,          1 << 12
        .equ CR4_SMEP,          1 << 20
        .equ CR4_SMAP,          1 << 21
        .equ MSR_EFER,          0xC0000080
        .equ EFER_LME,          1 << 8
        .equ EFER_NXE,          1 << 11
        .equ RFLAGS_RESERVED1,  1 << 1  /* bit 1 is always 1 (SDM Vol. 1 "EFLAGS Register") */
        .equ RFLAGS_AC,         1 << 18

/* ---- Paging-structure entry bits (SDM Vol. 3A 4.5 "4-Level Paging and 5-Level Paging") ---- */
        .equ PTE_P,             1 << 0
        .equ PTE_RW,            1 << 1
        .equ PTE_PS,            1 << 7  /* in a PDPTE: maps a 1-GByte page */

/* ---- Exception vectors (SDM Vol. 3A "Exception and Interrupt Reference") ---- */
        .equ VEC_NMI,           2
        .equ VEC_BP,            3
        .equ VEC_GP,            13
        .equ VEC_PF,            14
        /* Vectors for which the CPU pushes an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13,
         * #PF 14, #AC 17, #CP 21 (SDM Vol. 3A "Exception and Interrupt Reference"), and AMD's
         * #VC 29, #SX 30 (AMD64 APM Vol. 2 "Exceptions and Interrupts"). One bit per vector. */
        .equ ERROR_CODE_VECTORS, (1<<8)|(1<<10)|(1<<11)|(1<<12)|(1<<13)|(1<<14)|(1<<17)|(1<<21)|(1<<29)|(1<<30)
        .equ TIMER_VECTOR,      0x20    /* first vector free of exceptions */
        .equ RETURN_VECTOR,     0x80    /* `int $0x80` ends the probe loop, at ring 0 or 3 */
        .equ SPURIOUS_VECTOR,   0xFF    /* low nibble must be 1111b on P6-era APICs; 0xFF is usual */
        /* 64-bit interrupt gate, low quadword without the offset: selector at bits 31:16,
         * type 1110b at 43:40, P at 47; DPL at 46:45 (SDM Vol. 3A "64-Bit Mode IDT"). */
        .equ GATE_KERNEL,       (KCODE64 << 16) | (0x8E << 40)
        .equ GATE_DPL3,         3 << 45

/* ---- Local APIC, xAPIC mode at its reset base (SDM Vol. 3A "Advanced Programmable Interrupt
 *      Controller (APIC)": register map, LVT, timer) ---- */
        .equ LAPIC_BASE,        0xFEE00000
        .equ APIC_EOI,          0x0B0
        .equ APIC_SVR,          0x0F0
        .equ APIC_LVT_TIMER,    0x320
        .equ APIC_LVT0,         0x350
        .equ APIC_LVT1,         0x360
        .equ APIC_TIMER_INIT,   0x380
        .equ APIC_TIMER_DIV,    0x3E0
        .equ SVR_ENABLE,        1 << 8
        .equ LVT_NMI,           4 << 8  /* delivery mode 100b */
        .equ LVT_MASKED,        1 << 16
        .equ LVT_PERIODIC,      1 << 17
        .equ TIMER_DIV_1,       0xB     /* divide configuration 1011b: divide by 1 */
        /* The wake-up is QMP inject-nmi (the ABI's x86 wake event); the timer is only a backstop
         * for a harness that forgets it. QEMU's APIC timer counts at 1 GHz (measured), so this is
         * 10 ms: ~2 % of a host core while idle, where 100 us costs ~37 % (README, "Waking"). */
        .equ TIMER_COUNT,       10000000

/* ---- Power-off: ACPI GED sleep control register of microvm (QEMU: GED_MMIO_BASE 0xfea00000,
 *      registers at +0x200, ACPI_GED_REG_SLEEP_CTL at +0; SLP_EN bit 5, SLP_TYP in bits 4:2,
 *      S5 = 5). QEMU answers with a guest shutdown: exit status 0. ---- */
        .equ GED_SLEEP_CTL,     0xFEA00200
        .equ GED_S5,            (1 << 5) | (5 << 2)

/* ---- Interrupt frame as the stubs leave it: vector and error code pushed below the CPU's
 *      RIP, CS, RFLAGS, RSP, SS (SDM Vol. 3A "64-Bit Mode Stack Frame") ---- */
        .equ FRAME_VECTOR,      0
        .equ FRAME_ERROR,       8
        .equ FRAME_RIP,         16
        .equ FRAME_STUB_BYTES,  16      /* bytes to drop before iretq */

/* ================================================================================================
 * PVH note: QEMU boots an ELF64 through PVH when it carries a Xen note of type 18
 * (XEN_ELFNOTE_PHYS32_ENTRY) holding the 32-bit entry point (PVH; NOTES x86_64). The entry is
 * stored as 8 bytes, as Linux does: QEMU up to 9.1 reads 8 bytes from an ELF64 note, later
 * versions 4. QEMU finds the descriptor by rounding the name size up to the segment's alignment,
 * so the section must stay 4-byte aligned (name "Xen\0" = 4 bytes, descriptor at offset 16).
 * ============================================================================================= */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* n_namesz */
        .long   8                       /* n_descsz */
        .long   18                      /* n_type: XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .quad   pvh_entry

/* ================================================================================================
 * Mailbox: alone in its page, which the probe loop writes (`progress`) at the probe privilege.
 * ============================================================================================= */
        .section .mailbox, "aw", @progbits
        .balign 4096
        .globl  ptc_mailbox
ptc_mailbox:
        .fill   MB_SIZE, 1, 0

/* ================================================================================================
 * The probe loop. It runs under the table under test, at ring 0 or ring 3 (entered by iretq at the
 * end of `request`), and is the only code that runs at the probe privilege; it touches only its own
 * page, the mailbox page, and the probe and result arrays.
 *
 * Registers (the trap handlers rely on them; they preserve every other register):
 *   rsi  current probe          rcx  end of the probe array     rdi  current result
 *   r12  probe index            rax  probe word                 rbx  probe address
 * A successful load or store does not trap. A faulting probe traps once: `trap` resumes the loop at
 * probe_faulted with rdx = cause and r8 = CR2. A successful fetch reaches the tag's int3: `trap`
 * resumes at value_done with rdx = the address of the int3.
 * ============================================================================================= */
        .section .text.loop, "ax"
        .balign 4096
probe_loop:
        cmp     %rcx, %rsi
        jae     loop_end
/* A load takes two straight runs of code (probe_next..jnz, probe_load..jb): two translation
 * blocks per probe in QEMU. */
probe_next:
        mov     %r12, ptc_mailbox+MB_PROGRESS(%rip)
        mov     (%rsi), %rax
        mov     %rax, %rbx
        and     $~3, %rbx                       /* ABI: kind in bits 1:0 */
        test    $3, %al
        jnz     not_load
probe_load:                                     /* kind 0 */
        mov     (%rbx), %rdx
value_done:
        mov     %rdx, RES_VALUE(%rdi)
access_done:
        movq    $OUTCOME_DONE, RES_OUTCOME(%rdi)
advance:
        add     $8, %rsi
        add     $RES_SIZE, %rdi
        inc     %r12
        cmp     %rcx, %rsi
        jb      probe_next
loop_end:
        int     $RETURN_VECTOR                  /* gate DPL 3: allowed at ring 3 too */
loop_returned:                                  /* the RIP that int $0x80 pushes */

not_load:
        test    $2, %al
        jnz     probe_fetch                     /* kind 2 (3 is not in the ABI: also a fetch) */
probe_store:                                    /* kind 1 */
        mov     %rax, (%rbx)                    /* ABI: a store writes the probe word itself */
        jmp     access_done

probe_fetch:
        jmp     *%rbx                           /* lands on the tag's int3 (or faults) */

probe_faulted:
        movq    $OUTCOME_FAULT, RES_OUTCOME(%rdi)
        mov     %rdx, RES_CAUSE(%rdi)
        mov     %r8, RES_ADDR(%rdi)
        jmp     advance

/* ================================================================================================
 * Boot, in 32-bit protected mode: PVH enters with paging off and interrupts disabled (PVH;
 * NOTES x86_64). The start_info pointer in ebx is not needed.
 * ============================================================================================= */
        .text
        .code32
        .globl  pvh_entry
pvh_entry:
        lgdt    gdtr                            /* 32-bit operand: limit and low 32 bits of base */
        ljmp    $KCODE32, $1f
1:      mov     $KDATA, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %ax, %fs
        mov     %ax, %gs
        mov     $stack_top, %esp
        mov     $4, %eax                        /* boot with 4-level paging */
        mov     $boot64, %ebp
        /* fall through */

/*
 * enable_long_mode: 32-bit protected mode with paging off -> 64-bit mode on the private table
 * (SDM Vol. 3A "Initializing IA-32e Mode": CR4.PAE, CR3, EFER.LME, then CR0.PG; a far jump to a
 * 64-bit code segment leaves compatibility mode). CR4.LA57 is set here because it cannot change
 * while IA32_EFER.LMA = 1 (SDM Vol. 3A 4.1.2 "Paging-Mode Enabling").
 * In: eax = paging levels (4 or 5), ebp = 64-bit continuation (below 4 GiB).
 * Interrupts are off and LINT1 is masked: the IDT holds 64-bit gates only.
 */
enable_long_mode:
        mov     %eax, current_levels
        mov     %cr4, %ecx
        or      $CR4_PAE, %ecx
        and     $~CR4_LA57, %ecx
        mov     $private_pml4, %edx
        cmp     $5, %eax
        jne     1f
        or      $CR4_LA57, %ecx
        mov     $private_pml5, %edx
1:      mov     %ecx, %cr4
        mov     %edx, %cr3
        mov     %edx, private_cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $EFER_LME, %eax
        wrmsr
        mov     %cr0, %eax
        or      $(CR0_PG | CR0_PE), %eax
        mov     %eax, %cr0                      /* EFER.LMA = 1, still in compatibility mode */
        ljmp    $KCODE64, $1f
        .code64
1:      mov     %ebp, %ebp                      /* the upper halves of registers are undefined */
        mov     %esp, %esp                      /* after 32-bit mode (SDM Vol. 1 "General-Purpose */
        jmp     *%rbp                           /* Registers in 64-Bit Mode") */

/* ================================================================================================
 * 64-bit initialisation: IDT, TSS, local APIC, then announce ourselves.
 * ============================================================================================= */
boot64:
        /* IDT: vector v -> isr_stubs + 16 * v, interrupt gates (IF = 0 in handlers), DPL 0
         * except #BP (int3 tags are executed at ring 3 too) and RETURN_VECTOR: a software INT
         * checks the gate's DPL against CPL (SDM Vol. 3A "Protection of Exception- and
         * Interrupt-Handler Procedures"). */
        lea     isr_stubs(%rip), %rsi
        lea     idt(%rip), %rdi
        xor     %ecx, %ecx
1:      mov     %rsi, %rax
        and     $0xFFFF, %eax                   /* offset 15:0 -> bits 15:0 */
        mov     %rsi, %rdx
        shr     $16, %rdx
        shl     $48, %rdx                       /* offset 31:16 -> bits 63:48 */
        or      %rdx, %rax
        movabs  $GATE_KERNEL, %rdx
        or      %rdx, %rax
        cmp     $VEC_BP, %ecx
        je      2f
        cmp     $RETURN_VECTOR, %ecx
        jne     3f
2:      movabs  $GATE_DPL3, %rdx
        or      %rdx, %rax
3:      mov     %rax, (%rdi)
        mov     %rsi, %rax
        shr     $32, %rax
        mov     %rax, 8(%rdi)                   /* offset 63:32 */
        add     $16, %rsi
        add     $16, %rdi
        inc     %ecx
        cmp     $256, %ecx
        jb      1b
        lidt    idtr(%rip)

        /* TSS descriptor base (SDM Vol. 3A "TSS Descriptor in 64-bit mode": base 15:0 at byte 2,
         * 23:16 at byte 4, 31:24 at byte 7, 63:32 at byte 8). */
        lea     tss(%rip), %rax
        mov     %ax, gdt_tss+2(%rip)
        shr     $16, %rax
        mov     %al, gdt_tss+4(%rip)
        mov     %ah, gdt_tss+7(%rip)
        shr     $16, %rax
        mov     %eax, gdt_tss+8(%rip)
        mov     $TSS_SEL, %ax
        ltr     %ax

        /* Local APIC: software-enable it, a periodic timer as the backstop wake-up, and LINT1 as
         * NMI, the input QMP inject-nmi drives on microvm (NOTES x86_64). LINT0 is masked: QEMU
         * resets it to ExtINT (8259 pass-through), and through it the guest took a stray vector 0
         * in `hlt` about once in 10 boots (measured on 10.0.2); nothing here uses the 8259. */
        mov     $LAPIC_BASE, %ebx
        movl    $LVT_MASKED, APIC_LVT0(%rbx)
        movl    $(SVR_ENABLE | SPURIOUS_VECTOR), APIC_SVR(%rbx)
        movl    $TIMER_DIV_1, APIC_TIMER_DIV(%rbx)
        movl    $(LVT_PERIODIC | TIMER_VECTOR), APIC_LVT_TIMER(%rbx)
        movl    $TIMER_COUNT, APIC_TIMER_INIT(%rbx)
        movl    $LVT_NMI, APIC_LVT1(%rbx)

        movq    $ABI_VERSION, ptc_mailbox+MB_ABI(%rip)
        movabs  $MAGIC, %rax
        mov     %rax, ptc_mailbox+MB_MAGIC(%rip)
        /* fall through */

/* ================================================================================================
 * Wait for a request: hlt until an interrupt (timer or NMI), on the private table at ring 0.
 * ============================================================================================= */
wait_loop:
        cli
        mov     ptc_mailbox+MB_GO(%rip), %rax
        cmp     ptc_mailbox+MB_DONE(%rip), %rax
        jne     request
        sti                                     /* STI delays interrupts by one instruction (SDM */
        hlt                                     /* Vol. 2 STI): none is taken before hlt halts */
        jmp     wait_loop

request:
        mov     ptc_mailbox+MB_GO(%rip), %rax
        mov     %rax, batch_go(%rip)
        mov     ptc_mailbox+MB_COMMAND(%rip), %rax
        cmp     $CMD_POWER_OFF, %rax
        je      power_off
        cmp     $CMD_PROBE, %rax
        jne     bad_request
        mov     ptc_mailbox+MB_MODE(%rip), %rax
        cmp     current_levels(%rip), %rax
        jne     switch_levels

/* ---- Run a probe batch: controls from `options`, then iretq into the loop under root0. ---- */
        mov     ptc_mailbox+MB_OPTIONS(%rip), %r9
        mov     %cr0, %rax
        and     $~CR0_WP, %rax
        test    $OPT_WP, %r9b
        jz      1f
        or      $CR0_WP, %rax
1:      mov     %rax, %cr0
        mov     $MSR_EFER, %ecx
        rdmsr
        and     $~EFER_NXE, %eax
        test    $OPT_NXE, %r9b
        jz      1f
        or      $EFER_NXE, %eax
1:      wrmsr
        mov     %cr4, %rax
        and     $~(CR4_SMEP | CR4_SMAP), %rax
        test    $OPT_SMEP, %r9b
        jz      1f
        or      $CR4_SMEP, %rax
1:      test    $OPT_SMAP, %r9b
        jz      1f
        or      $CR4_SMAP, %rax
1:      mov     %rax, %cr4
        /* CR2 = 0: a #GP leaves CR2 unchanged (SDM Vol. 3A 4.7, only #PF loads it), so the `addr`
         * of a non-canonical probe is 0, not what an earlier batch left (README, "Probes"). */
        xor     %eax, %eax
        mov     %rax, %cr2

        /* iretq frame: SS, RSP, RFLAGS (IF = 0: no interrupt between probes), CS, RIP. */
        lea     stack_top(%rip), %rsp
        mov     $RFLAGS_RESERVED1, %eax
        test    $OPT_AC, %r9b
        jz      1f
        or      $RFLAGS_AC, %eax
1:      test    $OPT_USER, %r9b
        jnz     2f
        push    $KDATA
        lea     stack_top(%rip), %rdx
        push    %rdx                            /* ring 0: traps push onto this stack */
        push    %rax
        push    $KCODE64
        jmp     3f
2:      push    $UDATA
        push    $0                              /* ring 3: the loop uses no stack; traps switch */
        push    %rax                            /* to TSS.RSP0 */
        push    $UCODE64
3:      lea     probe_loop(%rip), %rax
        push    %rax

        mov     ptc_mailbox+MB_PROBES(%rip), %rsi
        mov     ptc_mailbox+MB_COUNT(%rip), %rcx
        lea     (%rsi,%rcx,8), %rcx
        mov     ptc_mailbox+MB_RESULTS(%rip), %rdi
        xor     %r12d, %r12d
        movb    $1, in_batch(%rip)
        /* Loading CR3 invalidates every non-global TLB entry, and CR4.PGE = 0 makes none global
         * (SDM Vol. 3A 4.10.4.1 "Operations that Invalidate TLBs and Paging-Structure Caches"). */
        mov     ptc_mailbox+MB_ROOT0(%rip), %rax
        mov     %rax, %cr3
        iretq

/* ---- The loop ended (int $0x80): back to the private table, report, wait. ---- */
batch_return:
        cmpb    $0, in_batch(%rip)
        je      unexpected
        lea     loop_returned(%rip), %rdx
        cmp     %rdx, FRAME_RIP(%rsp)
        jne     unexpected
        mov     private_cr3(%rip), %rax
        mov     %rax, %cr3
finish:
        movb    $0, in_batch(%rip)
        lea     stack_top(%rip), %rsp
        mov     batch_go(%rip), %rax
        mov     %rax, ptc_mailbox+MB_DONE(%rip)
        jmp     wait_loop

bad_request:                                    /* rax = the value not understood */
        movq    $ERROR_REQUEST, ptc_mailbox+MB_ERROR(%rip)
        mov     %rax, ptc_mailbox+MB_ERROR_CAUSE(%rip)
        jmp     finish

/*
 * switch_levels: leave IA-32e mode to flip CR4.LA57 (SDM Vol. 3A 4.1.2):
 * far return to 32-bit compatibility mode, clear CR0.PG (leaves IA-32e mode, SDM Vol. 3A
 * "Switching Out of IA-32e Mode Operation"), then enable_long_mode with the new level count.
 * In: rax = requested levels. Continues at `request`, which reloads everything.
 */
switch_levels:
        cmp     $4, %rax
        je      1f
        cmp     $5, %rax
        jne     bad_request
1:      mov     $LAPIC_BASE, %ebx
        movl    $(LVT_MASKED | LVT_NMI), APIC_LVT1(%rbx)   /* no NMI in legacy mode */
        mov     $KDATA, %cx                     /* after a ring-3 batch SS and DS are null: */
        mov     %cx, %ds                        /* valid in 64-bit mode, not in 32-bit mode */
        mov     %cx, %es
        mov     %cx, %ss
        lea     levels_switched(%rip), %rbp
        push    $KCODE32
        lea     1f(%rip), %rcx
        push    %rcx
        lretq
        .code32
1:      mov     %cr0, %ecx
        and     $~CR0_PG, %ecx
        mov     %ecx, %cr0
        jmp     enable_long_mode
        .code64
levels_switched:
        mov     $LAPIC_BASE, %ebx
        movl    $LVT_NMI, APIC_LVT1(%rbx)
        jmp     request

/* ---- Power off through ACPI GED (QEMU exits with status 0). `done` is set first so the harness
 *      can tell a requested power-off from a crash. ---- */
power_off:
        mov     batch_go(%rip), %rax
        mov     %rax, ptc_mailbox+MB_DONE(%rip)
        mov     $GED_SLEEP_CTL, %eax
        movb    $GED_S5, (%rax)
1:      hlt                                     /* QEMU stops us from its main loop */
        jmp     1b

/* ================================================================================================
 * Interrupt and exception entry: one 16-byte stub per vector pushes a dummy error code (when the
 * CPU pushes none) and the vector, then jumps to `trap`. A stub is at most 12 bytes (push imm8 2,
 * push imm32 5, jmp rel32 5), so `.balign 16` puts stub v at isr_stubs + 16 * v.
 * ============================================================================================= */
        .balign 16
isr_stubs:
        .set    vector, 0
        .rept   256
        .balign 16
        .if     vector >= 32 || ((ERROR_CODE_VECTORS >> vector) & 1) == 0
        push    $0
        .endif
        push    $vector
        jmp     trap
        .set    vector, vector + 1
        .endr

trap:
        cmpq    $VEC_PF, FRAME_VECTOR(%rsp)
        je      probe_fault
        cmpq    $VEC_BP, FRAME_VECTOR(%rsp)
        je      breakpoint
        cmpq    $VEC_GP, FRAME_VECTOR(%rsp)
        je      probe_fault
        cmpq    $VEC_NMI, FRAME_VECTOR(%rsp)
        je      dismiss
        cmpq    $TIMER_VECTOR, FRAME_VECTOR(%rsp)
        je      timer
        cmpq    $SPURIOUS_VECTOR, FRAME_VECTOR(%rsp)
        je      dismiss                         /* no EOI for a spurious interrupt (SDM APIC) */
        cmpq    $RETURN_VECTOR, FRAME_VECTOR(%rsp)
        je      batch_return
        jmp     unexpected

/* #PF or #GP: a probe's if it hit a probe instruction, or the probe address of a fetch. A
 * non-canonical jump target raises #GP on the jmp itself (SDM Vol. 2 JMP); QEMU 10.0.2 raises it
 * with RIP = the target (measured): both are recognised. */
probe_fault:
        cmpb    $0, in_batch(%rip)
        je      unexpected
        mov     FRAME_RIP(%rsp), %rdx
        lea     probe_load(%rip), %r8
        cmp     %r8, %rdx
        je      1f
        lea     probe_store(%rip), %r8
        cmp     %r8, %rdx
        je      1f
        lea     probe_fetch(%rip), %r8
        cmp     %r8, %rdx
        je      1f
        cmp     %rbx, %rdx
        jne     unexpected
        test    $2, %al
        jz      unexpected
1:      mov     FRAME_VECTOR(%rsp), %rdx
        shl     $32, %rdx
        or      FRAME_ERROR(%rsp), %rdx         /* ABI: cause = vector << 32 | error code */
        lea     probe_faulted(%rip), %r8
        mov     %r8, FRAME_RIP(%rsp)
        mov     %cr2, %r8                       /* ABI: addr = CR2 as read (README: #GP) */
        push    %rax
        xor     %eax, %eax
        mov     %rax, %cr2                      /* back to 0 for the next probe, as above */
        pop     %rax
        add     $FRAME_STUB_BYTES, %rsp
        iretq

/* #BP: a fetch probe reached its tag. int3 is a trap: the pushed RIP is the next byte
 * (SDM Vol. 3A "Exception and Interrupt Reference", #BP), so the tag's address is RIP - 1. */
breakpoint:
        cmpb    $0, in_batch(%rip)
        je      unexpected
        mov     FRAME_RIP(%rsp), %rdx
        dec     %rdx
        cmp     %rbx, %rdx
        jne     unexpected
        test    $2, %al
        jz      unexpected
        lea     value_done(%rip), %r8
        mov     %r8, FRAME_RIP(%rsp)
        add     $FRAME_STUB_BYTES, %rsp
        iretq

timer:
        push    %rax
        mov     $LAPIC_BASE, %eax
        movl    $0, APIC_EOI(%rax)
        pop     %rax
        /* fall through */
dismiss:
        add     $FRAME_STUB_BYTES, %rsp
        iretq

/* Anything else: record it, abandon the batch, report it done and wait again. The private table
 * comes back first: under root0 the mailbox may be a user page, which SMAP forbids here. */
unexpected:
        mov     private_cr3(%rip), %rax
        mov     %rax, %cr3
        movq    $ERROR_EXCEPTION, ptc_mailbox+MB_ERROR(%rip)
        mov     FRAME_VECTOR(%rsp), %rax
        shl     $32, %rax
        or      FRAME_ERROR(%rsp), %rax
        mov     %rax, ptc_mailbox+MB_ERROR_CAUSE(%rip)
        mov     FRAME_RIP(%rsp), %rax
        mov     %rax, ptc_mailbox+MB_ERROR_PC(%rip)
        mov     %cr2, %rax
        mov     %rax, ptc_mailbox+MB_ERROR_ADDR(%rip)
        jmp     finish

/* ================================================================================================
 * Supervisor data.
 * ============================================================================================= */
        .data
        .balign 16
/* Flat segments, accessed bits preset so the CPU never writes the GDT (SDM Vol. 3A "Segment
 * Descriptors", "Code- and Data-Segment Descriptor Types"): access byte P | DPL | S | type,
 * flags G | D/B or G | L. */
gdt:
        .quad   0                               /* null */
        .quad   0x00AF9B000000FFFF              /* 0x08 ring-0 code, 64-bit (L) */
        .quad   0x00CF93000000FFFF              /* 0x10 ring-0 data, 4 GiB */
        .quad   0x00CF9B000000FFFF              /* 0x18 ring-0 code, 32-bit (D) */
        .quad   0x00AFFB000000FFFF              /* 0x20 ring-3 code, 64-bit */
        .quad   0x00CFF3000000FFFF              /* 0x28 ring-3 data */
gdt_tss:                                        /* 0x30 64-bit TSS, 16 bytes; base set at boot */
        .word   tss_end - tss - 1               /* limit 15:0 */
        .word   0                               /* base 15:0 */
        .byte   0                               /* base 23:16 */
        .byte   0x89                            /* P, type 1001b: available 64-bit TSS */
        .byte   0                               /* limit 19:16, flags */
        .byte   0                               /* base 31:24 */
        .long   0                               /* base 63:32 */
        .long   0
gdt_end:

gdtr:   .word   gdt_end - gdt - 1
        .quad   gdt
idtr:   .word   256 * 16 - 1
        .quad   idt

/* 64-bit TSS (SDM Vol. 3A "Task Management in 64-bit Mode"): only RSP0 is used. */
        .balign 16
tss:
        .long   0
        .quad   stack_top                       /* RSP0: where ring-3 probes trap to */
        .fill   88, 1, 0                        /* RSP1, RSP2, IST1-7, reserved */
        .word   0
        .word   tss_end - tss                   /* I/O map base beyond the limit: no bitmap */
tss_end:

private_cr3:    .quad 0                         /* root of the private table in use */
current_levels: .quad 0                         /* 4 or 5: the paging mode in CR4.LA57 */
batch_go:       .quad 0                         /* the `go` being served */
in_batch:       .byte 0                         /* 1 while the probe loop may run */

        .bss
        .balign 16
idt:    .fill   256 * 16, 1, 0
        .balign 16
stack:  .fill   4096, 1, 0
stack_top:

/* ================================================================================================
 * Private tables: the first 512 GiB identity-mapped with 1-GiB pages (`-cpu max` has pdpe1gb,
 * NOTES x86_64), read/write, supervisor, executable, not global. 4-level: CR3 -> private_pml4;
 * 5-level: CR3 -> private_pml5 -> the same PML4 (SDM Vol. 3A 4.5). Supervisor, writable and
 * never NX, so no setting of WP, NXE, SMEP or SMAP changes what these pages allow.
 * ============================================================================================= */
        .section .pagetables, "aw", @progbits
        .balign 4096
private_pml5:
        .quad   private_pml4 + (PTE_P | PTE_RW)
        .fill   511, 8, 0
private_pml4:
        .quad   private_pdpt + (PTE_P | PTE_RW)
        .fill   511, 8, 0
private_pdpt:
        .set    gib, 0
        .rept   512
        .quad   (gib << 30) | PTE_P | PTE_RW | PTE_PS
        .set    gib, gib + 1
        .endr

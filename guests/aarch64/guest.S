// AArch64 probe guest: implements guests/ABI.md (version 1) on qemu-system-aarch64 -machine virt.
// Build and run: see README.md beside this file.
//
// Sources cited below:
//   Arm ARM   = Arm Architecture Reference Manual for A-profile (DDI 0487), register and
//               instruction descriptions by name;
//   GICv2     = ARM Generic Interrupt Controller Architecture Specification v2 (IHI 0048B),
//               chapter 4 "Programmers' Model" (Tables 4-1 and 4-2, register maps);
//   PSCI      = Arm Power State Coordination Interface (DEN 0022), SYSTEM_OFF;
//   QEMU      = QEMU 10.0 hw/arm/virt.c (memory map) and include/hw/arm/virt.h (timer PPIs);
//   NOTES     = /work/shared/QEMU-NOTES.md (facts measured on this machine).
//
// Register use. No stack: x19-x27 keep the meaning below for the whole run; the exception
// handler uses only x9-x13 as scratch, so it never disturbs the probe loop's state.
//   x0-x2   scratch of the probe loop (reloaded for every probe)
//   x19     next probe word (pointer into the probe array)
//   x20     end of the probe array
//   x21     next result (pointer into the result array)
//   x22     the `go` value of the batch being run (copied to `done` when it ends)
//   x23     index of the next probe (copied to `progress`)
//   x24     constant 1 (outcome "the access completed")
//   x25     ptc_mailbox (physical = virtual: the harness maps it identity)
//   x26     GICv2 CPU interface base
//   x27     virtual timer ticks per wake-up (100 us)

// ---- mailbox layout (guests/ABI.md "Control block") ----
.equ MB_MAGIC,       0x00
.equ MB_ABI,         0x08
.equ MB_GO,          0x10
.equ MB_DONE,        0x18
.equ MB_COMMAND,     0x20
.equ MB_ROOT0,       0x28
.equ MB_ROOT1,       0x30
.equ MB_MODE,        0x38
.equ MB_OPTIONS,     0x40
.equ MB_PROBES,      0x48
.equ MB_RESULTS,     0x50
.equ MB_COUNT,       0x58
.equ MB_PROGRESS,    0x60
.equ MB_ERROR,       0x68
.equ MB_ERROR_CAUSE, 0x70
.equ MB_ERROR_PC,    0x78
.equ MB_ERROR_ADDR,  0x80
.equ MAGIC,          0x3145424f52505450     // "PTPROBE1"
.equ ABI_VERSION,    1
.equ CMD_RUN,        1
.equ CMD_POWER_OFF,  2
.equ OUTCOME_FAULT,  2
.equ ERROR_REJECTED, 2                      // README.md "Errors": a field of the request is invalid

// ---- options bits (README.md "options and mode") ----
.equ OPT_USER,       0                      // bit 0: probe at EL0 (ABI)
.equ OPT_PAN,        1                      // bit 1: PSTATE.PAN = 1 for EL1 probes
.equ OPT_WXN,        2                      // bit 2: SCTLR_EL1.WXN = 1
.equ OPT_KNOWN,      0x7

// ---- system register values ----
// SCTLR_EL1 (Arm ARM, SCTLR_EL1): bits 11 (EOS), 20 (TSCXT), 22 (EIS), 23 (SPAN), 28 (nTLSMD),
// 29 (LSMAOE) are RES1 in Armv8.0 and keep the Armv8.0 behaviour on later CPUs (SPAN = 1: taking
// an exception to EL1 leaves PSTATE.PAN unchanged); 16 (nTWI) and 18 (nTWE): WFI/WFE not trapped.
// A (1), SA (3), SA0 (4), WXN (19), EE (25), E0E (24) and every Armv8.1+ enable are 0.
.equ SCTLR_OFF,      0x30d50800
.equ SCTLR_M,        1 << 0                 // stage 1 translation on
.equ SCTLR_C,        1 << 2                 // data accesses cacheable
.equ SCTLR_I,        1 << 12                // instruction fetches cacheable
.equ SCTLR_ON,       SCTLR_OFF | SCTLR_M | SCTLR_C | SCTLR_I
.equ SCTLR_WXN,      1 << 19                // writable implies execute-never (EL1 and EL0)
// MAIR_EL1: attr0 0x04 Device-nGnRE, attr1 0xff Normal WB RW-allocate, attr2 0x44 Normal
// non-cacheable: the indexes the crate's descriptors use (CRATE-ENCODINGS.md, NOTES).
.equ MAIR_VALUE,     0x44ff04
// TCR_EL1 (Arm ARM, TCR_EL1): T0SZ = T1SZ = 16 (48-bit VA in each half); IRGN/ORGN = 01 (walks
// Normal WB write-allocate); SH = 11 (inner shareable); TG0 = 00 (4K), TG1 = 10 (4K);
// A1 = 0 (ASID from TTBR0), AS = 0, TBI0 = TBI1 = 0 (the top byte is translated, so a
// non-canonical VA faults), HA = HD = 0 (the access flag is never set by hardware).
// IPS (bits 34:32) is added at boot from ID_AA64MMFR0_EL1.PARange.
.equ TCR_T0SZ,       16 << 0
.equ TCR_IRGN0_WBWA, 1 << 8
.equ TCR_ORGN0_WBWA, 1 << 10
.equ TCR_SH0_INNER,  3 << 12
.equ TCR_TG0_4K,     0 << 14
.equ TCR_T1SZ,       16 << 16
.equ TCR_IRGN1_WBWA, 1 << 24
.equ TCR_ORGN1_WBWA, 1 << 26
.equ TCR_SH1_INNER,  3 << 28
.equ TCR_TG1_4K,     2 << 30
.equ TCR_VALUE,      TCR_T0SZ | TCR_IRGN0_WBWA | TCR_ORGN0_WBWA | TCR_SH0_INNER | TCR_TG0_4K | TCR_T1SZ | TCR_IRGN1_WBWA | TCR_ORGN1_WBWA | TCR_SH1_INNER | TCR_TG1_4K
.equ TCR_IPS_SHIFT,  32
// 4K-granule descriptors without TCR_EL1.DS (LPA2) hold output address bits 47:12 only
// (Arm ARM, "VMSAv8-64 translation table format descriptors"), so IPS is capped at 0b101 = 48 bits.
.equ IPS_48BIT,      0b101
// SPSR_EL1 for the eret into the probe loop (Arm ARM, SPSR_EL1): D, A, I, F masked (0x3c0), M[3:0]
// = 0b0000 EL0t or 0b0101 EL1h; PAN is bit 22 (only with FEAT_PAN).
.equ SPSR_EL0T,      0x3c0
.equ SPSR_EL1H,      0x3c5
.equ SPSR_PAN,       1 << 22
.equ ID_MMFR1_PAN_SHIFT, 20                 // ID_AA64MMFR1_EL1.PAN, bits 23:20 (0 = no FEAT_PAN)
// ESR_EL1 values the handler recognises (Arm ARM, ESR_EL1): EC in bits 31:26, IL bit 25,
// ISS[15:0] = the immediate for BRK (EC 0x3c) and SVC from AArch64 (EC 0x15).
.equ ESR_BRK_TAG,    (0x3c << 26) | (1 << 25) | 0x7a7   // brk #0x7a7: the ABI's tag
.equ ESR_SVC_0,      (0x15 << 26) | (1 << 25) | 0       // svc #0: end of the probe loop

// ---- devices of -machine virt (QEMU hw/arm/virt.c memmap; GICv2 is virt's default) ----
.equ GICD_BASE,      0x08000000
.equ GICC_BASE,      0x08010000
.equ GICD_CTLR,      0x000                  // GICv2 Table 4-1
.equ GICD_ISENABLER0,0x100                  // GICv2 Table 4-1: set-enable, INTIDs 0-31 (banked)
.equ GICC_CTLR,      0x000                  // GICv2 Table 4-2
.equ GICC_PMR,       0x004
.equ GICC_IAR,       0x00c
.equ GICC_EOIR,      0x010
// The EL1 virtual timer is PPI 11 on virt (QEMU include/hw/arm/virt.h ARCH_TIMER_VIRT_IRQ),
// INTID 16 + 11 = 27 (GICv2 "Interrupt IDs": PPIs are INTIDs 16-31).
.equ TIMER_INTID,    27
.equ WAKES_PER_SEC,  10000                  // ABI: wake at least every 100 us
.equ PSCI_SYSTEM_OFF,0x84000008             // PSCI SYSTEM_OFF (SMC32 function ID)


// ======== EL1 code: vectors, control, exception handler (map EL1-executable) ========
    .section .text.el1, "ax"

// VBAR_EL1 needs 2 KiB alignment; 16 entries of 0x80 bytes (Arm ARM, VBAR_EL1 and "Exception
// vectors"): +0x000 current EL with SP_EL0, +0x200 current EL with SP_ELx, +0x400 lower EL
// AArch64, +0x600 lower EL AArch32; each group is Synchronous, IRQ, FIQ, SError.
// The guest runs at EL1h, so only the two Synchronous entries at 0x200 (EL1 probes) and 0x400
// (EL0 probes) are expected; every other entry reports an error.
.macro vector offset, target
    .balign 0x80
    mov     x9, #\offset
    b       \target
.endm
    .balign 0x800
    .global ptc_aarch64_vectors
ptc_aarch64_vectors:
    vector 0x000, unexpected_exception
    vector 0x080, unexpected_exception
    vector 0x100, unexpected_exception
    vector 0x180, unexpected_exception
    vector 0x200, sync_exception
    vector 0x280, unexpected_exception
    vector 0x300, unexpected_exception
    vector 0x380, unexpected_exception
    vector 0x400, sync_exception
    vector 0x480, unexpected_exception
    vector 0x500, unexpected_exception
    vector 0x580, unexpected_exception
    vector 0x600, unexpected_exception
    vector 0x680, unexpected_exception
    vector 0x700, unexpected_exception
    vector 0x780, unexpected_exception

// Entry from QEMU's ELF loader: EL1h, MMU off, DAIF masked (NOTES "AArch64").
    .global _start
_start:
    adr     x25, ptc_mailbox
    ldr     x26, =GICC_BASE
    mov     x22, #0
    adr     x0, ptc_aarch64_vectors
    msr     vbar_el1, x0
    ldr     x0, =SCTLR_OFF
    msr     sctlr_el1, x0
    isb

    ldr     x0, =MAIR_VALUE
    msr     mair_el1, x0
    mrs     x0, id_aa64mmfr0_el1
    and     x0, x0, #0xf                    // PARange, bits 3:0 (Arm ARM, ID_AA64MMFR0_EL1)
    mov     x1, #IPS_48BIT
    cmp     x0, x1
    csel    x0, x0, x1, lo
    ldr     x1, =TCR_VALUE
    orr     x1, x1, x0, lsl #TCR_IPS_SHIFT
    msr     tcr_el1, x1

    // GICv2: enable the distributor and the CPU interface, unmask all priorities (PMR 0xff), and
    // enable the timer PPI (its priority resets to 0, the highest). With PSTATE.I masked the
    // interrupt is never taken; a pending IRQ still ends WFI (Arm ARM, "Wait for Interrupt":
    // a physical IRQ is a WFI wake-up event even when masked by PSTATE).
    ldr     x0, =GICD_BASE
    mov     w1, #1
    str     w1, [x0, #GICD_CTLR]
    mov     w1, #(1 << TIMER_INTID)
    str     w1, [x0, #GICD_ISENABLER0]
    mov     w1, #0xff
    str     w1, [x26, #GICC_PMR]
    mov     w1, #1
    str     w1, [x26, #GICC_CTLR]

    // Virtual timer (Arm ARM, CNTV_TVAL_EL0 / CNTV_CTL_EL0): fires TVAL ticks from now;
    // CTL = ENABLE, IMASK = 0.
    mrs     x0, cntfrq_el0
    mov     x1, #WAKES_PER_SEC
    udiv    x27, x0, x1
    msr     cntv_tval_el0, x27
    mov     x0, #1
    msr     cntv_ctl_el0, x0

    mov     x0, #ABI_VERSION
    str     x0, [x25, #MB_ABI]
    ldr     x0, =MAGIC
    str     x0, [x25, #MB_MAGIC]            // MMU off: Device-nGnRnE, so abi lands before magic

// Idle: sleep in WFI until the timer (or any interrupt) wakes us, then look at `go`.
wait_loop:
    ldr     x0, [x25, #MB_GO]
    ldr     x1, [x25, #MB_DONE]
    cmp     x0, x1
    b.ne    start_batch
    wfi
    ldr     w0, [x26, #GICC_IAR]            // acknowledge (1023 = spurious: nothing to do)
    cmp     w0, #TIMER_INTID
    b.ne    wait_loop
    msr     cntv_tval_el0, x27              // re-arm: the timer's level output drops
    str     w0, [x26, #GICC_EOIR]           // end of interrupt: deactivate
    b       wait_loop

start_batch:                                // x0 = the new `go`
    mov     x22, x0
    dmb     ishld                           // the other fields were written before `go` (ABI)
    str     xzr, [x25, #MB_ERROR]
    ldr     x1, [x25, #MB_COMMAND]
    cmp     x1, #CMD_POWER_OFF
    b.eq    power_off
    mov     x10, #MB_COMMAND
    mov     x11, x1
    cmp     x1, #CMD_RUN
    b.ne    reject_batch
    mov     x10, #MB_MODE
    ldr     x11, [x25, #MB_MODE]
    cbnz    x11, reject_batch               // AArch64 has one mode: 0 (ABI)
    mov     x10, #MB_OPTIONS
    ldr     x11, [x25, #MB_OPTIONS]
    tst     x11, #~OPT_KNOWN
    b.ne    reject_batch

    ldr     x4, =SCTLR_ON
    tbz     x11, #OPT_WXN, 1f
    orr     x4, x4, #SCTLR_WXN
1:  mov     x3, #SPSR_EL0T
    tbnz    x11, #OPT_USER, 2f              // PAN only matters for EL1 probes
    mov     x3, #SPSR_EL1H
    tbz     x11, #OPT_PAN, 2f
    mrs     x5, id_aa64mmfr1_el1
    ubfx    x5, x5, #ID_MMFR1_PAN_SHIFT, #4
    cbz     x5, reject_batch                // no FEAT_PAN: SPSR.PAN would be silently ignored
    orr     x3, x3, #SPSR_PAN
2:
    ldr     x5, [x25, #MB_ROOT0]
    msr     ttbr0_el1, x5                   // ASID 0, CnP 0 (Arm ARM, TTBR0_EL1)
    ldr     x5, [x25, #MB_ROOT1]
    msr     ttbr1_el1, x5
    ldr     x19, [x25, #MB_PROBES]
    ldr     x5, [x25, #MB_COUNT]
    add     x20, x19, x5, lsl #3
    ldr     x21, [x25, #MB_RESULTS]
    mov     x23, #0
    mov     x24, #1
    msr     spsr_el1, x3
    adr     x5, probe_loop
    msr     elr_el1, x5

    // Translation on (NOTES "Enable"; Arm ARM "TLB maintenance" and "Instruction cache
    // maintenance"): drop TLB entries of the previous batch and any stale instructions (the
    // harness rewrote tag words), wait for completion, then set M|C|I and synchronise.
    // QEMU keeps no caches: ic iallu costs nothing there (see README "Caveats").
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    msr     sctlr_el1, x4
    isb
    eret                                    // into probe_loop at EL1h or EL0t

// Exception from the probe loop (vector 0x200 from EL1, 0x400 from EL0); x9 = vector offset.
// Translation may be on: this code, its literal pool and the result array are mapped.
sync_exception:
    mrs     x10, elr_el1
    mrs     x11, esr_el1
    adr     x12, ptc_aarch64_probe_load
    cmp     x10, x12
    b.eq    probe_fault
    adr     x12, ptc_aarch64_probe_store
    cmp     x10, x12
    b.eq    probe_fault
    // A fetch probe left the loop with `br`; an exception outside the image comes from it
    // (probe VAs never lie inside the image, README "What the harness must map").
    adr     x12, ptc_image_start
    cmp     x10, x12
    b.lo    fetch_exit
    adr     x12, ptc_image_end
    cmp     x10, x12
    b.hs    fetch_exit
    adr     x12, probe_exit                 // ELR of an svc is the next instruction
    cmp     x10, x12
    b.ne    unexpected_exception
    ldr     x12, =ESR_SVC_0
    cmp     x11, x12
    b.ne    unexpected_exception
    // The loop reached its end: leave translation, publish `done`.
    dsb     nsh                             // every result store has completed
    ldr     x12, =SCTLR_OFF
    msr     sctlr_el1, x12
    isb
    b       finish_batch

fetch_exit:                                 // success = the tag's brk #0x7a7 (ABI)
    ldr     x12, =ESR_BRK_TAG
    cmp     x11, x12
    b.ne    probe_fault
    stp     x24, x10, [x21], #32            // outcome 1, value = PC of the brk
    b       resume_probes
probe_fault:                                // outcome 2, value 0, cause ESR_EL1, addr FAR_EL1
    mrs     x12, far_el1
    mov     x13, #OUTCOME_FAULT
    stp     x13, xzr, [x21]
    stp     x11, x12, [x21, #16]
    add     x21, x21, #32
resume_probes:                              // back to the loop at the EL and PSTATE it had
    adr     x12, probe_loop
    msr     elr_el1, x12
    eret

// Any other exception: record it (ABI `error*`), leave translation, end the batch.
// x9 = vector offset; `error` = offset + 1 (README "Errors").
unexpected_exception:
    mrs     x10, esr_el1
    mrs     x11, elr_el1
    mrs     x12, far_el1
    ldr     x13, =SCTLR_OFF                 // code and mailbox are identity-mapped, so
    msr     sctlr_el1, x13                  // execution continues at the same addresses
    isb
    stp     x10, x11, [x25, #MB_ERROR_CAUSE]
    str     x12, [x25, #MB_ERROR_ADDR]
    add     x9, x9, #1
    str     x9, [x25, #MB_ERROR]
    b       finish_batch

reject_batch:                               // x10 = offset of the bad field, x11 = its value
    stp     x10, xzr, [x25, #MB_ERROR_CAUSE]
    str     x11, [x25, #MB_ERROR_ADDR]
    mov     x9, #ERROR_REJECTED
    str     x9, [x25, #MB_ERROR]
finish_batch:
    str     x22, [x25, #MB_DONE]
    b       wait_loop

power_off:
    ldr     x0, =PSCI_SYSTEM_OFF
    hvc     #0                              // PSCI conduit of virt without EL2 (NOTES "Exit")
1:  wfi                                     // not reached when PSCI is present
    b       1b

    .ltorg


// ======== the probe loop: runs at EL1 or EL0 (map executable for the probing EL) ========
// Per probe: read the word, publish `progress`, dispatch on kind (bits 1:0), access, write the
// result. A successful load or store does not trap; a faulting one traps once into
// sync_exception, which records the fault and re-enters at probe_loop.
    .section .text.probe, "ax"
    .global ptc_aarch64_probe_loop
ptc_aarch64_probe_loop:
probe_loop:
    cmp     x19, x20
    b.hs    probe_end
    ldr     x0, [x19], #8                   // probe word
    str     x23, [x25, #MB_PROGRESS]
    add     x23, x23, #1
    and     x1, x0, #~3                     // the virtual address
    tbnz    x0, #1, probe_fetch             // kind 2 (and the undefined kind 3): fetch
    tbnz    x0, #0, probe_store             // kind 1: store
    .global ptc_aarch64_probe_load
ptc_aarch64_probe_load:
    ldr     x2, [x1]                        // kind 0: load
    stp     x24, x2, [x21], #32             // outcome 1, value
    b       probe_loop
probe_store:
    .global ptc_aarch64_probe_store
ptc_aarch64_probe_store:
    str     x0, [x1]                        // stores the probe word itself (ABI)
    str     x24, [x21], #32                 // outcome 1 (value stays 0)
    b       probe_loop
probe_fetch:
    br      x1                              // the tag there traps back (ABI)
probe_end:
    svc     #0                              // to EL1 (vector 0x200 or 0x400)
probe_exit:


// ======== the mailbox: data the probe loop writes (`progress`) ========
    .section .data.mailbox, "aw"
    .balign 4096
    .global ptc_mailbox
ptc_mailbox:
    .zero   0x88

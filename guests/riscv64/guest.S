/*
 * riscv64 probe guest: implements guests/ABI.md (version 1) on QEMU `virt`.
 *
 * Design (see README.md): the guest never leaves M-mode except for fetch probes.
 *  - Loads and stores are made from M-mode with mstatus.MPRV = 1, which translates and checks
 *    them "as though the current privilege mode were set to MPP", with SUM and MXR applied
 *    (privileged spec v1.12, 3.1.6.3 "Memory Privilege in mstatus Register"). MPRV is raised
 *    for exactly one instruction per probe, so the loop's own accesses (mailbox, probe and
 *    result arrays) stay physical and the table under test needs no page for the guest.
 *  - Fetches `mret` straight to the probe address at privilege MPP (3.3.2 "Trap-Return
 *    Instructions"); the tag's `ebreak` or the fetch fault traps back to M-mode.
 *  - Nothing is delegated: every trap arrives in M-mode with mcause/mepc/mtval (3.1.15, 3.1.14,
 *    3.1.16), so `cause` is always mcause and `addr` always mtval.
 *
 * Register use while a batch runs (nothing is ever spilled):
 *   s0 mailbox, s1 next probe word, s2 its result, s3 end of the probe array,
 *   s4 mstatus.MPRV mask, s5 mstatus for the batch (MPP, SUM, MXR, TVM; MPRV clear),
 *   s6 index of the probe (= progress), a0 probe word, a1 probe address,
 *   t0-t6, a5-a7 and ra scratch; mscratch counts restarts of a fetch probe. The code a fetch
 *   probe reaches may be anything (a word the harness did not predict, or one a store probe
 *   overwrote), so after every fetch probe the batch registers are rebuilt from the mailbox
 *   (`load_state`) and a watchdog timer ends a fetch that never traps.
 */
        .option norvc           /* every instruction 4 bytes (QEMU-NOTES, RISC-V: zig) */

/* Mailbox offsets (guests/ABI.md, "Control block"). */
        .equ MB_MAGIC,       0x00
        .equ MB_ABI,         0x08
        .equ MB_GO,          0x10
        .equ MB_DONE,        0x18
        .equ MB_COMMAND,     0x20
        .equ MB_ROOT0,       0x28
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

        .equ MAGIC,          0x3145424f52505450   /* "PTPROBE1" */
        .equ ABI_VERSION,    1
        .equ CMD_BATCH,      1
        .equ CMD_POWEROFF,   2

/* Result layout (guests/ABI.md, "Probes and results"): 32 bytes per probe. */
        .equ RES_OUTCOME,    0
        .equ RES_VALUE,      8
        .equ RES_CAUSE,      16
        .equ RES_ADDR,       24
        .equ RES_SIZE,       32
        .equ OUT_DONE,       1
        .equ OUT_FAULT,      2

/* Values of `error` (README.md, "`error` values"). */
        .equ ERR_EXCEPTION,  1      /* trap outside a probe: error_cause/pc/addr = mcause/mepc/mtval */
        .equ ERR_SATP,       2      /* satp kept another value: error_cause = wanted, error_addr = read */
        .equ ERR_COMMAND,    3      /* command neither 1 nor 2: error_cause = command */
        .equ ERR_KIND,       4      /* probe kind 3: error_cause = probe word, error_addr = index */

/* mstatus fields (privileged spec v1.12, 3.1.6 "Machine Status Registers"). */
        .equ MSTATUS_MPP_SHIFT, 11  /* MPP = bits 12:11; 0 U, 1 S, 3 M (3.1.6.1) */
        .equ MSTATUS_MPRV,   1 << 17    /* 3.1.6.3 */
        .equ MSTATUS_SUM_SHIFT, 18      /* 3.1.6.3; MXR is bit 19 */
        .equ MSTATUS_TVM,    1 << 20    /* S-mode satp/sfence.vma trap (3.1.6.5) */
        .equ PRV_M,          3

        .equ MIE_MTIE,       1 << 7     /* machine timer interrupt enable (3.1.9) */
        .equ CAUSE_BREAKPOINT, 3        /* mcause exception code of ebreak (3.1.15, table 3.6) */
        .equ SATP_MODE_SHIFT, 60        /* satp.MODE = bits 63:60, PPN = bits 43:0 (4.1.11) */

/* QEMU `virt` devices (task brief / QEMU-NOTES, RISC-V). */
        .equ CLINT_MTIME,    0x0200bff8 /* ACLINT mtime, 10 MHz */
        .equ CLINT_MTIMECMP0, 0x02004000 /* ACLINT mtimecmp of hart 0 */
        .equ WAKE_TICKS,     1000       /* 100 us at 10 MHz: the ABI's longest sleep */
        .equ FETCH_WATCHDOG, 1000000    /* 100 ms: a fetch probe that has not trapped by then
                                           is ended by the timer interrupt */
        .equ FETCH_RETRIES,  2          /* restarts of a fetch probe the watchdog stopped */
        .equ SIFIVE_TEST,    0x00100000 /* write 0x5555 -> QEMU exits with status 0 */
        .equ TEST_PASS,      0x5555

        .section .text.entry, "ax"
        .globl _start
_start:
        /* The reset ROM enters here in M-mode with a0 = hart id (QEMU-NOTES); only hart 0
           probes, any other hart sleeps for ever. */
        bnez    a0, park

        /* Every trap goes to `trap` (mtvec MODE 0 = direct, 3.1.7) and stays in M-mode:
           no exception and no interrupt is delegated (3.1.8). */
        lla     t0, trap
        csrw    mtvec, t0
        csrw    medeleg, zero
        csrw    mideleg, zero

        /* PMP entry 0 = TOR up to the top of the address space with R|W|X, otherwise S/U
           accesses (and MPRV accesses and page walks, which are S-level) fail PMP
           (3.7.1; QEMU-NOTES: pmpaddr0 = -1, pmpcfg0 = 0x0f). */
        li      t0, -1
        csrw    pmpaddr0, t0
        li      t0, 0x0f
        csrw    pmpcfg0, t0

        /* Only the timer is enabled locally, globally interrupts stay off (mstatus.MIE = 0):
           wfi still wakes on it (3.3.3 "Wait for Interrupt") and no handler runs in M-mode. */
        li      t0, MIE_MTIE
        csrw    mie, t0
        csrw    mstatus, zero

        lla     s0, ptc_mailbox
        li      t0, ABI_VERSION
        sd      t0, MB_ABI(s0)
        fence   w, w                    /* abi is visible before magic (RVWMO, FENCE) */
        li      t0, MAGIC
        sd      t0, MB_MAGIC(s0)

/* ---- waiting: a new `go` (different from `done`) starts a batch ------------------------- */
wait:
        ld      t0, MB_GO(s0)
        ld      t1, MB_DONE(s0)
        bne     t0, t1, batch
        /* Sleep at most 100 us: mtimecmp = mtime + 1000 raises MTIP, which ends wfi. */
        li      t2, CLINT_MTIME
        ld      t3, 0(t2)
        addi    t3, t3, WAKE_TICKS
        li      t2, CLINT_MTIMECMP0
        sd      t3, 0(t2)
        wfi
        j       wait

/* ---- a batch ----------------------------------------------------------------------------- */
batch:
        fence   r, r                    /* read the other fields only after go (RVWMO) */
        ld      t1, MB_COMMAND(s0)
        li      t2, CMD_POWEROFF
        beq     t1, t2, poweroff
        li      t2, CMD_BATCH
        beq     t1, t2, 1f
        li      a5, ERR_COMMAND
        mv      a6, t1
        li      a7, 0
        j       fail
1:
        /* satp = MODE << 60 | root >> 12, ASID 0 (4.1.11). A MODE the hart does not support
           leaves satp unchanged (WARL), so read it back: probing without translation would be
           meaningless. */
        ld      t1, MB_ROOT0(s0)
        srli    t1, t1, 12
        ld      t2, MB_MODE(s0)
        slli    t2, t2, SATP_MODE_SHIFT
        or      t1, t1, t2
        csrw    satp, t1
        csrr    t2, satp
        beq     t1, t2, 2f
        li      a5, ERR_SATP
        mv      a6, t1
        mv      a7, t2
        j       fail
2:
        /* New root or tables edited by the harness: drop every cached translation (4.2.1). */
        sfence.vma
        jal     ra, arm_watchdog
        sd      zero, MB_PROGRESS(s0)
        jal     ra, load_state          /* from probe 0 */
        csrw    mstatus, s5

/* ---- the probe loop: invariant mstatus == s5 at `loop` -------------------------------- */
loop:
        beq     s1, s3, batch_end
        sd      s6, MB_PROGRESS(s0)
        ld      a0, 0(s1)
        andi    t0, a0, 3               /* kind: 0 load, 1 store, 2 fetch */
        andi    a1, a0, -4              /* the address */
        bnez    t0, not_load

        csrs    mstatus, s4             /* MPRV on: the next access is made at MPP */
probe_load:
        ld      t1, 0(a1)
        csrc    mstatus, s4             /* MPRV off: physical again */
        li      t2, OUT_DONE
        sd      t2, RES_OUTCOME(s2)
        sd      t1, RES_VALUE(s2)
        j       next

not_load:
        li      t2, 1
        bne     t0, t2, not_store
        csrs    mstatus, s4
probe_store:
        sd      a0, 0(a1)               /* the ABI stores the probe word itself */
        csrc    mstatus, s4
        sd      t2, RES_OUTCOME(s2)     /* t2 = 1 = OUT_DONE */
        j       next

not_store:
        li      t2, 2
        bne     t0, t2, bad_kind
        /* Fetch: mret jumps to mepc at privilege MPP (3.3.2); it also clears MPRV, already 0.
           The tag's ebreak (or the fault) comes back through `trap`. mscratch counts the
           restarts of this probe (see fetch_trap). */
        csrw    mscratch, zero
        csrw    mepc, a1
        mret

next:
        addi    s1, s1, 8
        addi    s2, s2, RES_SIZE
        addi    s6, s6, 1
        j       loop

bad_kind:
        li      a5, ERR_KIND
        mv      a6, a0
        mv      a7, s6
        j       fail

/* Batch registers s0-s6 from the mailbox, resuming at probe index `progress` (see the
   register list at the top). Called with jal ra; clobbers t1. */
load_state:
        lla     s0, ptc_mailbox
        li      s4, MSTATUS_MPRV
        /* mstatus for the probes: MPP = S (1) or U (0) from options bit 0; options bits 1 and
           2 land on SUM (bit 18) and MXR (bit 19) with one shift (3.1.6.1, 3.1.6.3). TVM
           stops code reached by a fetch probe in S-mode from changing satp (3.1.6.5). */
        ld      t1, MB_OPTIONS(s0)
        andi    s5, t1, 1
        xori    s5, s5, 1
        slli    s5, s5, MSTATUS_MPP_SHIFT
        andi    t1, t1, 6
        slli    t1, t1, MSTATUS_SUM_SHIFT - 1
        or      s5, s5, t1
        li      t1, MSTATUS_TVM
        or      s5, s5, t1
        ld      s6, MB_PROGRESS(s0)
        ld      s1, MB_PROBES(s0)
        ld      t1, MB_COUNT(s0)
        slli    t1, t1, 3
        add     s3, s1, t1
        slli    t1, s6, 3
        add     s1, s1, t1
        ld      s2, MB_RESULTS(s0)
        slli    t1, s6, 5
        add     s2, s2, t1
        ret

/* The fetch watchdog: mtimecmp = now + 100 ms. Below M-mode the machine timer interrupt is
   taken whatever mstatus.MIE says (3.1.6.1), so a fetch probe still running when it expires
   comes back to `trap`. It is armed at the start of a batch and after it fired, not per
   probe: an MMIO write to mtimecmp costs about 10 times a whole fetch probe in QEMU
   (measured), and a deadline already past only costs the next fetch probe one restart.
   Called with jal ra; clobbers t1, t2. */
arm_watchdog:
        li      t1, CLINT_MTIME
        ld      t2, 0(t1)
        li      t1, FETCH_WATCHDOG
        add     t2, t2, t1
        li      t1, CLINT_MTIMECMP0
        sd      t2, 0(t1)
        ret

/* ---- end of a batch, normal or not ---------------------------------------------------- */
batch_end:
        csrw    mstatus, zero           /* MPRV off, MPP = U, interrupts off */
        csrw    satp, zero              /* translation off (ABI life cycle, step 3) */
        fence   rw, w                   /* results and error fields before done (RVWMO) */
        ld      t0, MB_GO(s0)
        sd      t0, MB_DONE(s0)
        j       wait

/* Software error: a5 = error code, a6 -> error_cause, a7 -> error_addr. */
fail:
        sd      a5, MB_ERROR(s0)
        sd      a6, MB_ERROR_CAUSE(s0)
        sd      a7, MB_ERROR_ADDR(s0)
        j       batch_end

poweroff:
        li      t1, SIFIVE_TEST
        li      t2, TEST_PASS
        sw      t2, 0(t1)
park:
        wfi
        j       park

/* ---- trap handler (M-mode, direct) ---------------------------------------------------- */
        .balign 4                       /* mtvec BASE must be 4-byte aligned (3.1.7) */
trap:
        csrr    t0, mcause
        /* The privilege the trap came from is now in mstatus.MPP (3.1.6.1): below M only a
           fetch probe ever runs, so any trap from there (watchdog included) ends one. */
        csrr    t1, mstatus
        srli    t1, t1, MSTATUS_MPP_SHIFT
        andi    t1, t1, 3
        li      t2, PRV_M
        bne     t1, t2, fetch_trap
        /* From M-mode: only the two MPRV accesses are expected to fault, and no interrupt
           (mcause bit 63) at all. The trap left MPRV set but MPP = M, so the stores below
           are physical. */
        bltz    t0, unexpected
        csrr    t1, mepc
        lla     t2, probe_load
        beq     t1, t2, probe_fault
        lla     t2, probe_store
        beq     t1, t2, probe_fault
unexpected:
        li      a5, ERR_EXCEPTION
        mv      a6, t0
        csrr    a7, mtval
        csrr    t1, mepc
        sd      t1, MB_ERROR_PC(s0)
        j       fail

/* A fetch probe ended. value = mepc, the PC of the trap; ebreak (the tag) means the fetch
   completed, anything else is its fault. */
fetch_trap:
        jal     ra, load_state          /* the fetched code may have changed any register */
        csrw    mstatus, s5             /* MPP back to the batch privilege, SUM/MXR restored */
        bgez    t0, 1f                  /* an exception, not the watchdog */
        /* The watchdog fired (the only interrupt enabled). The deadline may predate this
           probe, or the host may have stalled QEMU (seen under heavy host load), so re-arm
           and start the probe again, FETCH_RETRIES times at most: only a probe that runs
           for 100 ms without trapping, twice, is recorded as stopped by the watchdog. */
        jal     ra, arm_watchdog
        csrr    t2, mscratch
        li      t3, FETCH_RETRIES
        bgeu    t2, t3, 1f
        addi    t2, t2, 1
        csrw    mscratch, t2
        ld      a1, 0(s1)
        andi    a1, a1, -4
        csrw    mepc, a1
        mret
1:
        csrr    t1, mepc
        sd      t1, RES_VALUE(s2)
        li      t2, CAUSE_BREAKPOINT
        bne     t0, t2, probe_fault
        li      t2, OUT_DONE
        sd      t2, RES_OUTCOME(s2)
        j       next

probe_fault:
        csrw    mstatus, s5             /* MPRV off, MPP back to the batch privilege */
        li      t2, OUT_FAULT
        sd      t2, RES_OUTCOME(s2)
        sd      t0, RES_CAUSE(s2)
        csrr    t1, mtval
        sd      t1, RES_ADDR(s2)
        j       next

/* ---- the mailbox ----------------------------------------------------------------------- */
        .section .data, "aw"
        .balign 4096
        .globl ptc_mailbox
ptc_mailbox:
        .zero   4096

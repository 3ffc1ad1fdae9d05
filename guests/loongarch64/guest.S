/*
 * loongarch64 probe guest: implements guests/ABI.md (version 1) on QEMU `virt`.
 *
 * Manual = LoongArch Reference Manual Vol. 1 (Basic Architecture), v1.10. CSRs are cited by
 * their names ("CSR ESTAT": the CSR's own section), instructions by mnemonic ("LDDIR": its
 * section among the privileged instructions), other rules by section title.
 *
 * Design (see README.md):
 *  - Translation on means CRMD.PG = 1, but the guest itself never uses the table under test:
 *    code, mailbox, probe and result arrays are reached through direct-mapped window DMW1
 *    (VA = 0x9000_0000_0000_0000 | PA, open to PLV0 and PLV3), MMIO through DMW0 (PLV0 only).
 *    DMW hits bypass the TLB ("Direct Mapped Address Translation Mode").
 *  - The probe loop runs entirely at the batch privilege: `ertn` enters it at PLV0 or PLV3
 *    and it leaves with `syscall` (one privilege round trip per batch, none per probe).
 *    Privileged per-probe work (options bits 1 and 2) is a `syscall` too.
 *  - TLB misses of probes go to a refill handler at TLBRENTRY (physical, runs in DA mode):
 *    mode 0 = lddir/ldpte (hardware walk), mode 1 = ld.d walk. Every other exception goes to
 *    EENTRY (`exc_entry`), which records faults and resumes at the next probe.
 *
 * Register use while a batch runs (handlers rely on it; nothing is ever spilled):
 *   s0 next probe word, s1 end of the probe array, s2 current result, s3 mailbox,
 *   s4 options, s5 probe index (progress), s6 probe address (VA, kind bits clear);
 *   t0-t2 loop scratch, dead whenever EENTRY can be entered (probe fault, syscall);
 *   a0-a3 and ra: exception-handler scratch. The refill handlers save what they use in CSRs,
 *   so a TLB refill (taken in the middle of a probe) preserves every register.
 * The `go` value being served is kept in CSR SAVE0, out of reach of a fetch probe that runs
 * astray at PLV3.
 */

/* ---- constants ------------------------------------------------------------------------ */

/* Mailbox offsets (guests/ABI.md, "Control block"). */
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

/* Values of `error` (README.md, "Errors"; same numbering as the other guests). */
        .equ ERR_EXCEPTION,  1      /* exception outside a probe: error_cause/pc/addr = ESTAT/ERA/BADV */
        .equ ERR_MODE,       2      /* mode neither 0 nor 1: error_cause = mode */
        .equ ERR_COMMAND,    3      /* command neither 1 nor 2: error_cause = command */
        .equ ERR_KIND,       4      /* probe kind 3: error_cause = probe word, error_addr = index */

/* options bits (README.md, "options"). */
        .equ OPT_USER,       1      /* probe at PLV3 */
        .equ OPT_FLUSH,      2      /* invtlb 0 before every probe */
        .equ OPT_READ_PA,    4      /* on success, addr = PA page from tlbsrch + tlbrd */

/* CSR numbers (manual, "Control and Status Registers" list). */
        .equ CSR_CRMD,       0x0
        .equ CSR_PRMD,       0x1
        .equ CSR_ECFG,       0x4
        .equ CSR_ESTAT,      0x5
        .equ CSR_ERA,        0x6
        .equ CSR_BADV,       0x7
        .equ CSR_EENTRY,     0xc
        .equ CSR_TLBIDX,     0x10
        .equ CSR_TLBEHI,     0x11
        .equ CSR_TLBELO0,    0x12
        .equ CSR_TLBELO1,    0x13
        .equ CSR_ASID,       0x18
        .equ CSR_PGDL,       0x19
        .equ CSR_PGDH,       0x1a
        .equ CSR_PGD,        0x1b
        .equ CSR_PWCL,       0x1c
        .equ CSR_PWCH,       0x1d
        .equ CSR_STLBPS,     0x1e
        .equ CSR_SAVE0,      0x30
        .equ CSR_SAVE1,      0x31
        .equ CSR_SAVE2,      0x32
        .equ CSR_TCFG,       0x41
        .equ CSR_TICLR,      0x44
        .equ CSR_TLBRENTRY,  0x88
        .equ CSR_TLBRBADV,   0x89
        .equ CSR_TLBRSAVE,   0x8b
        .equ CSR_TLBRELO0,   0x8c
        .equ CSR_TLBRELO1,   0x8d
        .equ CSR_TLBREHI,    0x8e
        .equ CSR_DMW0,       0x180
        .equ CSR_DMW1,       0x181

/* CRMD: PLV 1:0, IE 2, DA 3, PG 4, DATF 6:5, DATM 8:7 (CSR CRMD). */
        .equ CRMD_DA,        0x08   /* direct address, PLV0, IE 0: the value QEMU boots with (measured) */
        .equ CRMD_PG,        0xb0   /* paging, PLV0, IE 0, DATF = DATM = 1 (task brief) */
        .equ PRMD_PPLV3,     3      /* PRMD.PPLV: privilege `ertn` returns to (CSR PRMD) */

/* Direct-mapped windows: VSEG 63:60, MAT 5:4, PLV3 bit 3, PLV0 bit 0 (CSR DMW0-3). */
        .equ DMW0_VALUE,     0x8000000000000001   /* 0x8...: PLV0, strongly-ordered uncached (MMIO) */
        .equ DMW1_VALUE,     0x9000000000000019   /* 0x9...: PLV0+PLV3, coherent cached */
        .equ DMW1_TOP12,     -0x700               /* lu52i.d immediate for VA bits 63:52 = 0x900 */

/* Page walk layout of page_table_multiarch (QEMU-NOTES, LoongArch; CSR PWCL/PWCH/STLBPS):
   PT index 20:12, Dir1 29:21, Dir2 38:30, Dir3 47:39, 9 bits each, 8-byte entries. */
        .equ PWCL_VALUE,     0x13e4d52c
        .equ PWCH_VALUE,     0x267
        .equ PAGE_SHIFT,     12
        .equ PS_2M_HALF,     20     /* a 2 MiB huge page fills one TLB entry as two 1 MiB halves */
        .equ PS_1G_HALF,     29     /* a 1 GiB huge page: two 512 MiB halves */
        .equ PTE_HUGE,       0x40   /* bit 6 of a directory entry: huge page (LDDIR, LDPTE) */

/* ESTAT.Ecode = bits 21:16 (CSR ESTAT; codes: manual, "Exception Code" table). */
        .equ ECODE_SYS,      0xb
        .equ ECODE_BRK,      0xc

/* Timer: TCFG.En bit 0, Periodic bit 1, InitVal bits n-1:2 (CSR TCFG); ECFG.LIE bit 11 = TI. */
        .equ TCFG_EN_PERIODIC, 3
        .equ WAKES_PER_SEC,  20000  /* a tick every 50 us (README.md "Waiting") */
        .equ ECFG_LIE_TI,    0x800

/* QEMU `virt` GED: writing 0x34 to its sleep-control byte powers off (QEMU-NOTES). */
        .equ GED_POWEROFF_VA, 0x80000000100e001c  /* PA 0x100e_001c through DMW0 */
        .equ GED_POWEROFF,   0x34

/* ---- boot (entered by QEMU at the ELF entry: DA mode, PLV0, physical PC) ------------- */
        .section .text, "ax"
        .globl _start
_start:
        li.d    $t0, DMW0_VALUE
        csrwr   $t0, CSR_DMW0
        li.d    $t0, DMW1_VALUE
        csrwr   $t0, CSR_DMW1
        /* Go on at the DMW1 alias of this code. In DA mode a VA is used as PA = VA[47:0]
           ("Direct Address Translation Mode"), so the alias already works here and keeps
           working once PG is set. */
        la.pcrel $t0, 1f
        lu52i.d $t0, $t0, DMW1_TOP12
        jr      $t0
1:
        /* QEMU 10 direct boot writes a system table at PA 0x200 (QEMU-NOTES, measured). An empty
           directory entry of the crate is 0, and lddir follows it to physical page 0 (QEMU-NOTES):
           page 0 must read as zeros for such walks to end in an invalid entry. */
        lu52i.d $t0, $zero, DMW1_TOP12  /* alias of PA 0 */
        lu12i.w $t1, 1
        add.d   $t1, $t1, $t0           /* alias of PA 0x1000 */
2:      st.d    $zero, $t0, 0
        addi.d  $t0, $t0, 8
        bne     $t0, $t1, 2b

        /* All exceptions at EENTRY (ECFG.VS = 0), entered at the DMW1 alias (CSR EENTRY). */
        la.pcrel $t0, exc_entry
        csrwr   $t0, CSR_EENTRY

        /* The TLB: 4 KiB STLB pages, the crate's walk layout, ASID 0 for every entry. */
        li.w    $t0, PWCL_VALUE
        csrwr   $t0, CSR_PWCL
        li.w    $t0, PWCH_VALUE
        csrwr   $t0, CSR_PWCH
        ori     $t0, $zero, PAGE_SHIFT
        csrwr   $t0, CSR_STLBPS
        csrwr   $zero, CSR_ASID

        /* Only TI is enabled in ECFG.LIE and CRMD.IE stays 0: no interrupt is ever taken, but
           `idle` still wakes on the pending TI (measured on QEMU 10.0.2, README.md "Waiting"). */
        ori     $t0, $zero, ECFG_LIE_TI
        csrwr   $t0, CSR_ECFG
        bl      timer_on

        la.pcrel $s3, ptc_mailbox
        csrwr   $zero, CSR_SAVE0        /* no batch served yet: done stays 0 */
        ori     $t0, $zero, ABI_VERSION
        st.d    $t0, $s3, MB_ABI
        dbar    0                       /* abi is visible before magic */
        li.d    $t0, MAGIC
        st.d    $t0, $s3, MB_MAGIC

/* ---- waiting: a new `go` (different from `done`) starts a batch ----------------------- */
wait:
        ld.d    $t0, $s3, MB_GO
        ld.d    $t1, $s3, MB_DONE
        bne     $t0, $t1, batch
        ori     $t2, $zero, 1
        csrwr   $t2, CSR_TICLR          /* clear TI, so `idle` sleeps until the next tick */
        idle    0
        b       wait

/* ---- a batch (PLV0, DA mode) ---------------------------------------------------------- */
batch:
        csrwr   $t0, CSR_SAVE0          /* the go value being served */
        dbar    0                       /* read the other fields only after go */
        ld.d    $t1, $s3, MB_COMMAND
        ori     $t2, $zero, CMD_POWEROFF
        beq     $t1, $t2, poweroff
        ori     $t2, $zero, CMD_BATCH
        beq     $t1, $t2, 1f
        ori     $a0, $zero, ERR_COMMAND
        b       fail
1:
        /* The refill handler of the mode: TLBRENTRY takes a 4 KiB aligned PA (CSR TLBRENTRY). */
        ld.d    $t1, $s3, MB_MODE
        la.pcrel $t0, refill_hw
        beqz    $t1, 2f
        la.pcrel $t0, refill_sw
        ori     $t2, $zero, 1
        beq     $t1, $t2, 2f
        ori     $a0, $zero, ERR_MODE
        b       fail
2:      lu52i.d $t0, $t0, 0            /* DMW1 alias -> PA */
        csrwr   $t0, CSR_TLBRENTRY

        ld.d    $t0, $s3, MB_ROOT0
        csrwr   $t0, CSR_PGDL           /* VA bit 63 = 0 walks from PGDL, 1 from PGDH (CSR PGD) */
        ld.d    $t0, $s3, MB_ROOT1
        csrwr   $t0, CSR_PGDH

        ld.d    $s4, $s3, MB_OPTIONS
        ld.d    $s0, $s3, MB_PROBES
        lu52i.d $s0, $s0, DMW1_TOP12
        ld.d    $t0, $s3, MB_COUNT
        alsl.d  $s1, $t0, $s0, 3        /* end = probes + 8 * count */
        ld.d    $s2, $s3, MB_RESULTS
        lu52i.d $s2, $s2, DMW1_TOP12
        move    $s5, $zero
        move    $s6, $zero              /* no probe address yet (exc_entry compares ERA with s6) */

        /* No timer during the batch, so ESTAT.IS (bits 12:0) is 0 in every recorded cause. */
        csrwr   $zero, CSR_TCFG
        ori     $t0, $zero, 1
        csrwr   $t0, CSR_TICLR

        /* New roots or tables edited by the harness: drop every TLB entry (INVTLB op 0). */
        invtlb  0, $zero, $zero
        ori     $t0, $zero, CRMD_PG
        csrwr   $t0, CSR_CRMD

        /* Enter the loop at the batch privilege: ertn sets CRMD.PLV = PRMD.PPLV and
           CRMD.IE = PRMD.PIE = 0, and jumps to ERA (ERTN). */
        andi    $t0, $s4, OPT_USER
        beqz    $t0, 3f
        ori     $t0, $zero, PRMD_PPLV3  /* user probes at PLV3, the others at PLV0 */
3:      csrwr   $t0, CSR_PRMD
        la.pcrel $t0, probe_loop
        csrwr   $t0, CSR_ERA
        ertn

/* ---- the probe loop (PLV0 or PLV3, paging on, everything it touches in DMW1) ---------- */
probe_loop:
        beq     $s0, $s1, svc_end
        st.d    $s5, $s3, MB_PROGRESS
        ld.d    $t2, $s0, 0             /* the probe word */
        andi    $t0, $t2, 3             /* kind: 0 load, 1 store, 2 fetch */
        xor     $s6, $t2, $t0           /* the address */
        andi    $t1, $s4, OPT_FLUSH
        beqz    $t1, 1f
svc_flush:
        syscall 0                       /* exc_entry: invtlb 0 (privileged) */
1:      beqz    $t0, probe_load
        addi.d  $t0, $t0, -1
        beqz    $t0, probe_store
        addi.d  $t0, $t0, -1
        bnez    $t0, bad_kind
        jr      $s6                     /* fetch: the tag's break (or the fault) -> exc_entry */

probe_load:
        ld.d    $t1, $s6, 0
        st.d    $t1, $s2, RES_VALUE
        b       probe_done
probe_store:
        st.d    $t2, $s6, 0             /* the ABI stores the probe word itself */
probe_done:
        ori     $t1, $zero, OUT_DONE
        st.d    $t1, $s2, RES_OUTCOME
        andi    $t1, $s4, OPT_READ_PA
        beqz    $t1, next
svc_pa:
        syscall 0                       /* exc_entry: addr = PA page from the TLB */
next:
        addi.d  $s0, $s0, 8
        addi.d  $s2, $s2, RES_SIZE
        addi.d  $s5, $s5, 1
        b       probe_loop

svc_end:
        syscall 0                       /* exc_entry: back to PLV0, batch_end */

bad_kind:                               /* the mailbox is writable from PLV3 too (DMW1) */
        ori     $t0, $zero, ERR_KIND
        st.d    $t0, $s3, MB_ERROR
        st.d    $t2, $s3, MB_ERROR_CAUSE
        st.d    $s5, $s3, MB_ERROR_ADDR
        b       svc_end

/* ---- end of a batch, normal or not (PLV0) --------------------------------------------- */
batch_end:
        ori     $t0, $zero, CRMD_DA     /* translation off (ABI life cycle, step 3) */
        csrwr   $t0, CSR_CRMD
        bl      timer_on
        la.pcrel $s3, ptc_mailbox
        csrrd   $t0, CSR_SAVE0
        dbar    0                       /* results and error fields before done */
        st.d    $t0, $s3, MB_DONE
        b       wait

/* Software error: a0 = error code; error_cause = the offending mailbox value in t1. */
fail:
        st.d    $a0, $s3, MB_ERROR
        st.d    $t1, $s3, MB_ERROR_CAUSE
        b       batch_end

/* Periodic constant timer, 50 us: ticks = CPUCFG word 4 (constant-timer Hz, 100 MHz on
   QEMU) / WAKES_PER_SEC; InitVal is a multiple of 4 (CSR TCFG). Clobbers t0, t1. */
timer_on:
        ori     $t0, $zero, 4
        cpucfg  $t0, $t0
        li.w    $t1, WAKES_PER_SEC
        div.du  $t0, $t0, $t1
        bstrins.d $t0, $zero, 1, 0
        ori     $t0, $t0, TCFG_EN_PERIODIC
        csrwr   $t0, CSR_TCFG
        jr      $ra

poweroff:
        li.d    $t0, GED_POWEROFF_VA
        ori     $t1, $zero, GED_POWEROFF
        st.b    $t1, $t0, 0
park:
        idle    0
        b       park

/* ---- exception handler (EENTRY; PLV0, IE 0, paging as before the exception) ----------- */
        .balign 4096                    /* EENTRY is page aligned (CSR EENTRY) */
exc_entry:
        csrrd   $a0, CSR_ERA
        beq     $a0, $s6, at_probe_va   /* a fetch probe stopped at its own address */
        la.pcrel $a1, probe_load
        beq     $a0, $a1, probe_fault
        la.pcrel $a1, probe_store
        beq     $a0, $a1, probe_fault
        csrrd   $a2, CSR_ESTAT
        bstrpick.d $a2, $a2, 21, 16
        ori     $a1, $zero, ECODE_SYS
        bne     $a2, $a1, unexpected
        la.pcrel $a1, svc_end
        beq     $a0, $a1, batch_end
        la.pcrel $a1, svc_flush
        beq     $a0, $a1, flush
        la.pcrel $a1, svc_pa
        bne     $a0, $a1, unexpected
        bl      read_pa
resume_after:                           /* return behind the syscall */
        csrrd   $a0, CSR_ERA
        addi.d  $a0, $a0, 4
        csrwr   $a0, CSR_ERA
        ertn

flush:
        invtlb  0, $zero, $zero
        b       resume_after

at_probe_va:
        csrrd   $a2, CSR_ESTAT
        bstrpick.d $a2, $a2, 21, 16
        ori     $a1, $zero, ECODE_BRK
        bne     $a2, $a1, probe_fault   /* PIF, ADEF, or whatever the page held */
        /* The tag's break at PC == VA: the fetch succeeded; value = that PC. */
        ori     $a1, $zero, OUT_DONE
        st.d    $a1, $s2, RES_OUTCOME
        st.d    $a0, $s2, RES_VALUE
        andi    $a1, $s4, OPT_READ_PA
        beqz    $a1, resume_next
        bl      read_pa
        b       resume_next

probe_fault:
        ori     $a1, $zero, OUT_FAULT
        st.d    $a1, $s2, RES_OUTCOME
        csrrd   $a1, CSR_ESTAT
        st.d    $a1, $s2, RES_CAUSE
        csrrd   $a1, CSR_BADV
        st.d    $a1, $s2, RES_ADDR
resume_next:                            /* ertn back to the batch privilege, next probe */
        la.pcrel $a0, next
        csrwr   $a0, CSR_ERA
        ertn

unexpected:                             /* a0 = ERA */
        la.pcrel $a1, ptc_mailbox
        st.d    $a0, $a1, MB_ERROR_PC
        csrrd   $a2, CSR_ESTAT
        st.d    $a2, $a1, MB_ERROR_CAUSE
        csrrd   $a2, CSR_BADV
        st.d    $a2, $a1, MB_ERROR_ADDR
        ori     $a2, $zero, ERR_EXCEPTION
        st.d    $a2, $a1, MB_ERROR
        b       batch_end

/* result.addr = the 4 KiB PA page the TLB holds for s6: tlbsrch finds the entry for
   TLBEHI.VPPN, tlbrd loads it into TLBIDX.PS / TLBELO0-1 (TLBSRCH, TLBRD). An entry holds an
   even/odd pair of 2^PS pages; VA bit PS picks the half. Not found (DMW address): addr stays 0. */
read_pa:
        move    $a0, $s6
        csrwr   $a0, CSR_TLBEHI
        tlbsrch
        csrrd   $a0, CSR_TLBIDX
        bstrpick.d $a1, $a0, 31, 31     /* TLBIDX.NE */
        bnez    $a1, 1f
        tlbrd
        csrrd   $a0, CSR_TLBIDX
        bstrpick.d $a0, $a0, 29, 24     /* TLBIDX.PS */
        srl.d   $a1, $s6, $a0
        andi    $a1, $a1, 1
        csrrd   $a2, CSR_TLBELO0
        beqz    $a1, 2f
        csrrd   $a2, CSR_TLBELO1
2:      bstrpick.d $a2, $a2, 47, 12     /* TLBELO.PPN (PALEN 48) */
        slli.d  $a2, $a2, 12
        ori     $a1, $zero, 1
        sll.d   $a1, $a1, $a0
        addi.d  $a1, $a1, -1            /* offset mask of one half: 2^PS - 1 */
        andn    $a2, $a2, $a1
        and     $a3, $s6, $a1
        or      $a2, $a2, $a3
        bstrins.d $a2, $zero, 11, 0
        st.d    $a2, $s2, RES_ADDR
1:      jr      $ra

/* ---- TLB refill handlers (TLBRENTRY: PA, DA mode, PLV0; TLBRBADV = the VA) ------------ */

/* mode 0: the hardware walk of Linux and of the crate's users (LDDIR, LDPTE). A huge entry
   met by lddir is passed on and split by ldpte into the two halves of one TLB entry. */
        .balign 4096
refill_hw:
        csrwr   $t0, CSR_TLBRSAVE
        csrrd   $t0, CSR_PGD
        lddir   $t0, $t0, 3
        lddir   $t0, $t0, 2
        lddir   $t0, $t0, 1
        ldpte   $t0, 0
        ldpte   $t0, 1
        tlbfill
        csrrd   $t0, CSR_TLBRSAVE
        ertn

/* mode 1: the same walk with ld.d, so the leaf's NR/NX/RPLV (bits 61-63), which QEMU's ldpte
   drops (QEMU-NOTES), reach the TLB. t1 = VA; t0 = table, then entry; t2 = scratch, then PS. */
        .macro WALK hi, lo              /* t0: table (bits 47:12 of the entry) -> its entry for t1 */
        bstrpick.d $t0, $t0, 47, 12
        slli.d  $t0, $t0, 12
        bstrpick.d $t2, $t1, \hi, \lo
        alsl.d  $t2, $t2, $t0, 3
        ld.d    $t0, $t2, 0
        .endm

        .balign 4096
refill_sw:
        csrwr   $t0, CSR_TLBRSAVE
        csrwr   $t1, CSR_SAVE1
        csrwr   $t2, CSR_SAVE2
        csrrd   $t1, CSR_TLBRBADV
        csrrd   $t0, CSR_PGD
        WALK    47, 39                  /* Dir3 entry */
        WALK    38, 30                  /* Dir2 entry */
        andi    $t2, $t0, PTE_HUGE
        bnez    $t2, huge_1g
        WALK    29, 21                  /* Dir1 entry */
        andi    $t2, $t0, PTE_HUGE
        bnez    $t2, huge_2m
        /* 4 KiB: the even/odd PTE pair of the VA, both halves of one TLB entry. */
        bstrpick.d $t0, $t0, 47, 12
        slli.d  $t0, $t0, 12
        bstrpick.d $t2, $t1, 20, 13     /* pair index = PT index >> 1 */
        alsl.d  $t2, $t2, $t0, 4
        ld.d    $t0, $t2, 0
        ld.d    $t1, $t2, 8
        csrwr   $t0, CSR_TLBRELO0
        csrwr   $t1, CSR_TLBRELO1
        ori     $t2, $zero, PAGE_SHIFT
        b       fill

huge_1g:
        ori     $t2, $zero, PS_1G_HALF
        b       huge
huge_2m:
        ori     $t2, $zero, PS_2M_HALF
huge:
        /* As ldpte does with a huge entry (LDPTE): H (bit 6) gives way to G, taken from HGLOBAL
           (bit 12), which is cleared; the odd half starts 2^PS above the even one. */
        bstrpick.d $t1, $t0, 12, 12
        bstrins.d $t0, $t1, 6, 6
        bstrins.d $t0, $zero, 12, 12
        ori     $t1, $zero, 1
        sll.d   $t1, $t1, $t2
        add.d   $t1, $t1, $t0
        csrwr   $t0, CSR_TLBRELO0
        csrwr   $t1, CSR_TLBRELO1
fill:
        ori     $t1, $zero, 0x3f
        csrxchg $t2, $t1, CSR_TLBREHI   /* TLBREHI.PS (bits 5:0) = page size of each half */
        tlbfill
        csrrd   $t2, CSR_SAVE2
        csrrd   $t1, CSR_SAVE1
        csrrd   $t0, CSR_TLBRSAVE
        ertn

/* ---- the mailbox ---------------------------------------------------------------------- */
        .section .data, "aw"
        .balign 4096
        .globl ptc_mailbox
ptc_mailbox:
        .zero   4096

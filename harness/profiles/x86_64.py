"""x86_64 on `qemu-system-x86_64 -machine microvm` with `-cpu max` (guests/x86_64/README.md).

The guest probes at ring 0 or ring 3 with CR0.WP, IA32_EFER.NXE, CR4.SMEP, CR4.SMAP and
EFLAGS.AC chosen per batch, under 4-level or 5-level paging, and runs on the table under test
while it probes: its own pages must be mapped there, identity (README "Pages the table under test
must map"). It waits in `hlt` and is woken by an NMI injected over QMP; power-off goes through
microvm's ACPI GED and QEMU exits with status 0.
"""

from __future__ import annotations

import numpy as np

from arch import MappingFlags, PageTable64, RamImage
from arch.x86_64 import X64PageTable, X64PageTable5
from arch.x86_64.permissions import (
    OPTION_AC,
    OPTION_NXE,
    OPTION_SMAP,
    OPTION_SMEP,
    OPTION_WP,
    PF_P,
    PF_RSVD,
    VECTOR_GP,
    VECTOR_PF,
    X64Permissions,
    describe_cause,
)

from .. import mailbox as mb
from ..build import GuestImage
from ..machine import Machine, MachineError
from ..profile import Comparison, Deviation, OptionSet, Profile, RamLayout, Variant
from ..tableset import TableSet

RAM_BASE = 0  # microvm: RAM from guest physical 0, file offset = physical address (guest README)
RAM_SIZE = 2 << 30  # 2 GiB: [1 GiB, 2 GiB) is a 1G-aligned frame for 1G pages, all below microvm's MMIO
PHYS_BITS = 40  # MAXPHYADDR of `-cpu max` under TCG (QEMU-NOTES x86_64), pinned on the command line
INT3_TAG = 0xCCCC_CCCC  # int3 x 4, the x86 tag trap (guests/ABI.md)
# Probe and result arrays: 40 MiB = 1,048,576 probes of 8 + 32 bytes, 2M-aligned above the guest
# image (which ends below 0x20_0000), so the guest mapping of them takes 20 2M pages.
ARRAYS = (0x0020_0000, 0x02A0_0000)
TABLE_POOL = (0x02A0_0000, 0x0800_0000)  # 22,016 table frames
DATA_WINDOW = (0x0800_0000, RAM_BASE + RAM_SIZE)

R, W, X, U = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER


# -- deviations of QEMU from the SDM -----------------------------------------------------------


def _page_faults(causes: np.ndarray) -> np.ndarray:
    return np.asarray((causes >> np.uint64(32)) == np.uint64(VECTOR_PF), dtype=bool)


def _rsvd_without_p(c: Comparison) -> np.ndarray:
    """Predicted reserved-bit page faults observed with exactly the predicted error code minus P."""
    predicted_rsvd = ~c.predicted.ok & _page_faults(c.predicted.cause) & ((c.predicted.cause & np.uint64(PF_RSVD)) != 0)
    same_but_p = c.observed_cause == (c.predicted.cause & ~np.uint64(PF_P))
    return np.asarray(predicted_rsvd & ~c.observed_ok & same_but_p & (c.observed_addr == c.predicted.addr), dtype=bool)


def _gp_loads_cr2(c: Comparison) -> np.ndarray:
    """Predicted #GP(0) observed as #GP(0) with CR2 = the probe address instead of unchanged."""
    predicted_gp = ~c.predicted.ok & (c.predicted.cause == np.uint64(VECTOR_GP << 32))
    return np.asarray(
        predicted_gp & ~c.observed_ok & (c.observed_cause == c.predicted.cause) & (c.observed_addr == c.vaddrs),
        dtype=bool,
    )


DEVIATIONS = [
    Deviation(
        key="x86-rsvd-without-p",
        summary="a page fault caused by a reserved bit reports RSVD without P (e.g. error code 0x8 for a "
        "ring-0 load); the SDM (Vol. 3A 4.7) sets P whenever RSVD is set (0x9)",
        reference="QEMU-NOTES x86_64 (7.2); guests/x86_64/README.md (10.0.2); QEMU commit 'target/i386: "
        "Introduce structures for mmu_translate' (7.2) made `do_fault_rsvd` stop falling through to P",
        versions=("7.2", ""),
        explains=_rsvd_without_p,
    ),
    Deviation(
        key="x86-gp-loads-cr2",
        summary="a #GP(0) for a non-canonical address loads CR2 with that address; the SDM leaves CR2 "
        "unchanged (only #PF writes it), which reads 0 here because the guest clears CR2",
        reference="guests/x86_64/README.md (measured on 10.0.2); QEMU `get_physical_address` gives the #GP a "
        "`cr2` and `x86_cpu_tlb_fill` stores it, since the same 7.2 commit. QEMU-NOTES records 7.2 as "
        "leaving CR2 unchanged, which that source contradicts (not re-measured)",
        versions=("7.2", ""),
        explains=_gp_loads_cr2,
    ),
    Deviation(
        key="x86-gp-rip-at-target",
        summary="a jmp to a non-canonical address raises #GP with RIP = the target instead of the jmp; "
        "the guest accepts both, so no probe result shows it",
        reference="guests/x86_64/README.md (measured on 10.0.2; earlier versions not checked)",
        versions=("0", ""),
    ),
]


# -- the profile -------------------------------------------------------------------------------


def _option_name(bits: int) -> str:
    names = ["ring3" if bits & 1 else "ring0"]
    names += [
        name
        for bit, name in (
            (OPTION_WP, "WP"),
            (OPTION_NXE, "NXE"),
            (OPTION_SMEP, "SMEP"),
            (OPTION_SMAP, "SMAP"),
            (OPTION_AC, "AC"),
        )
        if bits & bit
    ]
    return "+".join(names)


def _full_option_bits() -> list[int]:
    """Ring 0: every WP x NXE x SMEP x {no SMAP, SMAP, SMAP+AC} (AC matters only under SMAP, SDM
    4.6.1). Ring 3: WP, SMEP, SMAP and AC govern supervisor-mode accesses only (4.6.1) and CR0.AM = 0
    makes AC inert, so NXE alone changes the outcome; each NXE value also runs with all four set,
    to show they change nothing."""
    ring0 = [
        wp | nxe | smep | smap
        for wp in (0, OPTION_WP)
        for nxe in (0, OPTION_NXE)
        for smep in (0, OPTION_SMEP)
        for smap in (0, OPTION_SMAP, OPTION_SMAP | OPTION_AC)
    ]
    supervisor_only = OPTION_WP | OPTION_SMEP | OPTION_SMAP | OPTION_AC
    ring3 = [1 | nxe | extra for nxe in (0, OPTION_NXE) for extra in (0, supervisor_only)]
    return ring0 + ring3


class X86_64Profile(Profile):
    """Ring 0 and ring 3 probes with WP/NXE/SMEP/SMAP/AC, through 4-level or 5-level tables."""

    def option_sets(self, full: bool, variant: Variant | None = None) -> list[OptionSet]:
        """The same for both variants: the paging mode changes no access rule (SDM 4.6)."""
        if not full:
            return [OptionSet(_option_name(OPTION_WP | OPTION_NXE), OPTION_WP | OPTION_NXE)]
        return [OptionSet(_option_name(bits), bits) for bits in _full_option_bits()]

    def guest_mappings(self, image: GuestImage, option_set: OptionSet) -> list[tuple[int, int, int, MappingFlags]]:
        """Identity mappings the probe loop needs (guest README "Pages the table under test must
        map"): the mailbox, the loop page and the arrays at the probe privilege, the supervisor
        code and data supervisor. Every one is EXECUTE, because the library sets XD on a page
        without it, and XD is a reserved bit when a batch runs with NXE = 0."""
        user = U if option_set.user else MappingFlags(0)
        mailbox = image.symbol("ptc_mailbox")
        ranges = [
            (mailbox, mailbox + 0x1000, R | W | X | user),
            (image.symbol("ptc_loop_start"), image.symbol("ptc_loop_end"), R | X | user),
            (image.symbol("ptc_ktext_start"), image.symbol("ptc_ktext_end"), R | X),
            (image.symbol("ptc_kdata_start"), image.symbol("ptc_kdata_end"), R | W | X),
            (*ARRAYS, R | W | X | user),  # probes are read, results written
        ]
        return [(start, start, _page_up(end) - start, flags) for start, end, flags in ranges]

    def reserved_ranges(self, image: GuestImage) -> list[tuple[int, int]]:
        """The identity-mapped guest image and probe/result arrays."""
        return [(image.symbol("ptc_image_start"), _page_up(image.symbol("ptc_image_end"))), ARRAYS]

    def non_canonical_addresses(self, va_bits: int) -> list[int]:
        """Just above the low half, just below the high half, two far off; under 4-level paging
        also two addresses that only 5-level paging makes canonical (SDM 4.5.1)."""
        half = 1 << (va_bits - 1)
        found = [half, (1 << 64) - half - 8, 0x8000_0000_0000_0000, 0x5555_5555_5555_5550]
        if va_bits == 48:
            found += [0x0080_0000_0000_0000, 0xFF80_0000_0000_0000]
        return found

    def wake(self, machine: Machine, command: int) -> None:
        """An NMI through the local APIC's LINT1 ends the guest's `hlt` (guest README "Waking").
        Not for a power-off request: an `inject-nmi` that meets the guest's shutdown made QEMU
        10.0.2 crash (SIGSEGV) or stop answering, 2 times in 40 (never in 40 without it), so the
        guest's 10 ms APIC timer wakes it then. If QEMU is gone (a triple fault ends it under
        -no-reboot), the caller reports that with the guest's state."""
        if command == mb.COMMAND_POWER_OFF:
            return
        try:
            machine.qmp("inject-nmi")
        except MachineError:
            if machine.alive():
                raise

    def explain_cause(self, cause: int) -> str:
        return describe_cause(cause)


def _page_up(address: int) -> int:
    return (address + 0xFFF) & ~0xFFF


def edit_entry(tables: TableSet, vaddr: int, level: int, *, set_bits: int = 0, clear_bits: int = 0) -> tuple[int, int]:
    """Rewrite the entry at `level` (root = 0) on `vaddr`'s walk in RAM, setting and clearing raw
    bits the library never writes itself (it writes every table entry as P | R/W | U/S, the
    crate's choice): e.g. clear U/S or R/W, or set XD, in the PDPTE above a 4K leaf. Returns the
    entry's physical address and previous value: write it back before the table is freed or
    changed, since an edited address field misleads the library. Edit only walks the guest does
    not share (guest_mappings)."""
    walk = tables.walk_many(np.array([vaddr], dtype=np.uint64))
    leaf = int(walk.leaf_level[0])
    if not walk.valid[0] or 0 <= leaf < level or int(walk.entries[level, 0]) == 0:
        raise ValueError(f"the walk of {vaddr:#x} has no entry at level {level}")
    address = int(walk.entry_paddrs[level, 0])
    ram = tables.primary.handler
    previous = ram.read_word(address)
    ram.write_word(address, (previous | set_bits) & ~clear_bits)
    return address, previous


def _variant(name: str, make: type[PageTable64], levels: int) -> Variant:
    def tables(ram: RamImage) -> TableSet:
        return TableSet([make(ram)])

    return Variant(name, tables, levels, description=f"{levels}-level paging (CR4.LA57 = {int(levels == 5)})")


def x86_64_profile() -> X86_64Profile:
    """The x86_64 profile."""
    return X86_64Profile(
        arch="x86_64",
        binary="qemu-system-x86_64",
        apt_package="qemu-system-x86",
        # guest README "QEMU command line"; phys-bits=40 is -cpu max's TCG default, pinned so the
        # model's MAXPHYADDR cannot drift; -m matches the RAM backend
        machine_args=(
            "-machine",
            "microvm",
            "-cpu",
            f"max,phys-bits={PHYS_BITS}",
            "-smp",
            "1",
            "-m",
            f"{RAM_SIZE >> 20}M",
            "-nodefaults",
        ),
        ram_base=RAM_BASE,
        ram_size=RAM_SIZE,
        zig_args=("-target", "x86_64-freestanding", "-Wl,--entry=pvh_entry"),  # guest README "Build"
        layout=RamLayout(arrays=ARRAYS, table_pool=TABLE_POOL, data_window=DATA_WINDOW),
        variants={
            "4level": _variant("4level", X64PageTable, 4),
            "5level": _variant("5level", X64PageTable5, 5),
        },
        trap_instruction=INT3_TAG,
        model_for=lambda variant: X64Permissions(PHYS_BITS),
        deviations=list(DEVIATIONS),
        clean_exit_statuses=frozenset({0}),  # ACPI GED S5 power-off: QEMU exits 0 (guest README)
        # a fetch through a corrupted leaf can reach a frame without a tag: zero bytes decode as
        # `add %al,(%rax)` (SDM Vol. 2 ADD, opcode 00 /r), so the guest runs on, writing memory,
        # until something faults away from the probe address (a guest error; measured with
        # `ptcheck sensitivity` flipping address bits)
        mutation_safe_fetch=False,
    )

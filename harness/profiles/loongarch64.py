"""loongarch64 on `qemu-system-loongarch64 -M virt` (guests/loongarch64/README.md).

RAM. QEMU 10's `virt` splits RAM: its first 256 MiB are PA 0–0x0fff_ffff (file offset = PA),
the rest starts at PA 0x8000_0000 (file offset PA − 0x7000_0000) (guest README, "Memory layout";
QEMU-NOTES, LoongArch). The harness maps the RAM file as one linear image, so its addresses must
be true where it works: the image is placed at base 0x7000_0000, which makes every address of
high RAM exact. Everything the harness touches (guest image, mailbox, arrays, tables, scenario
data, including a 1 GiB-aligned 1 GiB frame at 0xc000_0000) lies in high RAM; the image's
addresses 0x7000_0000–0x7fff_ffff are low RAM under a false name and are never used. Low RAM
holds only QEMU's boot data and physical page 0, which the guest zeroes at boot.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from arch import MappingFlags
from arch.loongarch64 import LA64PageTable
from arch.loongarch64.permissions import (
    ADE,
    ECODE_SHIFT,
    ESUBCODE_SHIFT,
    PIF,
    PIL,
    PIS,
    PME,
    PNR,
    PNX,
    PPI,
    VALEN,
    LoongArchPermissions,
)
from arch.memory import WORDS_PER_FRAME
from arch.permissions import FETCH, LOAD, STORE

from ..build import GuestImage
from ..profile import Comparison, Deviation, OptionSet, Profile, RamLayout, Variant
from ..tableset import TableSet

RAM_SIZE = 0x9000_0000  # 2.25 GiB: 256 MiB low RAM + 2 GiB high RAM, PA 0x8000_0000–0xffff_ffff
HIGH_RAM = 0x8000_0000  # QEMU >= 10 (7.2: 0x9000_0000, guest README)
LOW_RAM_SIZE = 0x1000_0000
RAM_BASE = HIGH_RAM - LOW_RAM_SIZE  # image base that makes high RAM exact (module docstring)
BREAK_7A7 = 0x002A_07A7  # `break 0x7a7`, the tag's trap instruction (ABI.md)
OPTION_FLUSH = 1 << 1  # `invtlb 0` before every probe (guest README, "options")
DMW_SEGMENTS = (0x8000_0000_0000_0000, 0xA000_0000_0000_0000)  # DMW0 0x8…, DMW1 0x9… (README)
ESTAT_NAMES = {
    PIL: "PIL page invalid (load)",
    PIS: "PIS page invalid (store)",
    PIF: "PIF page invalid (fetch)",
    PME: "PME page modified (store to D=0)",
    PNR: "PNR page not readable",
    PNX: "PNX page not executable",
    PPI: "PPI page privilege level illegal",
    ADE: "ADE address error",
    0xC: "BRK breakpoint",
    0xD: "INE instruction not exist",
}


class LoongArch64Profile(Profile):
    """The probe guest in PLV0 or PLV3 with its code in direct-mapped windows; the table under
    test serves as both PGDL and PGDH. `wake` stays the default no-op: the guest's timer wakes
    it every 50 µs (guest README, "Waiting and the timer"); power-off exits with status 0."""

    def option_sets(self, full: bool, variant: Variant | None = None) -> list[OptionSet]:
        if not full:
            return [OptionSet("PLV0", 0)]
        # with a TLB flush before every probe nothing an earlier probe left in a TLB can matter
        # (it does without: QEMU 7.2's 16 KiB pages, 10.0.2's `nr-after-fill`); ~10x slower
        return [
            OptionSet("PLV0", 0),
            OptionSet("PLV3", 1),
            OptionSet("PLV0+flush", OPTION_FLUSH),
            OptionSet("PLV3+flush", 1 | OPTION_FLUSH),
        ]

    def reserved_ranges(self, image: GuestImage) -> list[tuple[int, int]]:
        """VAs with bits 63:60 = 0x8 or 0x9 hit the guest's direct-mapped windows, not the table
        (guest README, "How it runs"; manual 5.2.1): never map or probe them."""
        return [DMW_SEGMENTS]

    def non_canonical_addresses(self, va_bits: int) -> list[int]:
        """Illegal addresses (manual 5.2: bits 63:47 not all equal) outside the DMW segments:
        the two just beyond each half, whose bits 63:48 agree (QEMU 10.0.2 walks them, see the
        deviation `ade-bits-63-48-only`), and three whose bits 63:48 disagree."""
        half = 1 << (va_bits - 1)
        return [half, (1 << 64) - half - 8, 1 << 48, 0x5555_5555_5555_5550, 0xA000_0000_0000_0000]

    def explain_cause(self, cause: int) -> str:
        ecode = (cause >> ECODE_SHIFT) & 0x3F
        esubcode = (cause >> ESUBCODE_SHIFT) & 0x1FF
        name = ESTAT_NAMES.get(ecode, "unexpected")
        if ecode == ADE:
            name += " (ADEF, fetch)" if esubcode == 0 else " (ADEM, load/store)"
        return f"ESTAT {cause:#x}: Ecode {ecode:#x} {name}"


# -- deviations of QEMU from the architecture ---------------------------------------------------


def _mask(values: object) -> np.ndarray:
    """A boolean array (the comparison's arrays are untyped)."""
    return np.asarray(values, dtype=bool)


def _ecode(causes: np.ndarray) -> np.ndarray:
    return np.asarray((causes >> np.uint64(ECODE_SHIFT)) & np.uint64(0x3F), dtype=np.uint64)


def _predicted(c: Comparison, ecode: int) -> np.ndarray:
    return _mask(~c.predicted.ok & (_ecode(c.predicted.cause) == ecode))


def _observed(c: Comparison, ecode: int) -> np.ndarray:
    return _mask(~c.observed_ok & (_ecode(c.observed_cause) == ecode))


def _user_page(c: Comparison) -> np.ndarray:
    """PLV 3 (the codec writes PLV 3 exactly for USER; arch/loongarch64/codec.py)."""
    return _mask((c.flags & np.uint8(MappingFlags.USER)) != 0)


def _plv_allows(c: Comparison) -> np.ndarray:
    """Whether PLV alone (RPLV = 0) admits the probe: PLV0 probes reach every page, PLV3 probes
    only PLV3 pages (manual 5.4.2). A PPI predicted where PLV alone admits comes from RPLV."""
    return _mask(np.full(len(c.vaddrs), not c.user) | _user_page(c))


def _ldpte_drops_bits(c: Comparison) -> np.ndarray:
    """Probes that complete (or fault only on D) as if NR, NX and RPLV were 0."""
    return _mask(
        (_predicted(c, PNR) & (c.access == LOAD) & c.observed_ok)
        | (_predicted(c, PNX) & (c.access == FETCH) & c.observed_ok)
        | (_predicted(c, PPI) & _plv_allows(c) & (c.observed_ok | ((c.access == STORE) & _observed(c, PME))))
    )


def _nr_before_plv(c: Comparison) -> np.ndarray:
    """Loads predicted PPI that QEMU reports as PNR (its check order: V, NX, NR, PLV, D)."""
    return _mask(_predicted(c, PPI) & (c.access == LOAD) & _observed(c, PNR))


def _nr_after_fill(c: Comparison) -> np.ndarray:
    """Loads predicted PNR that complete because an earlier fetch or store of the same 4 KiB
    page in the batch (no per-probe flush) put it into QEMU's own TLB, which always grants
    reads (loongarch_check_pte: `prot = PAGE_READ`). The comparison lists the probes in the
    order the guest ran them (the checker sorts each batch by address)."""
    if c.options & OPTION_FLUSH:
        return np.zeros(len(c.vaddrs), dtype=bool)
    page = c.vaddrs >> np.uint64(12)
    filled = (c.access != LOAD) & c.observed_ok
    order = np.arange(len(page))
    last_fill = np.maximum.accumulate(np.where(filled, order, -1))  # latest fill at or before i
    before = np.concatenate([[-1], last_fill[:-1]])  # latest fill strictly before i
    same_page = (before >= 0) & (page[np.maximum(before, 0)] == page)
    return _mask(_predicted(c, PNR) & (c.access == LOAD) & c.observed_ok & same_page)


def _fetch_faults_livelock(user_page_matters: bool) -> Callable[[Comparison], np.ndarray]:
    """Fetches on which QEMU raises PNX or PPI. With the software refill the TLB holds the full
    entry, so that is every fetch predicted PNX/PPI; with `ldpte` NX and RPLV are gone and only
    a PLV3 fetch from a page that is not PLV3 raises (PPI)."""

    def unsafe(c: Comparison) -> np.ndarray:
        hit = _mask((c.access == FETCH) & (_predicted(c, PNX) | _predicted(c, PPI)))
        if user_page_matters:
            hit &= np.full(len(c.vaddrs), c.user) & ~_user_page(c)
        return hit

    return unsafe


def _bits_63_48_agree_not_47(c: Comparison) -> np.ndarray:
    high = c.vaddrs >> np.uint64(VALEN)
    bit47 = (c.vaddrs >> np.uint64(VALEN - 1)) & np.uint64(1)
    return _mask(((high == 0) & (bit47 == 1)) | ((high == np.uint64(0xFFFF)) & (bit47 == 0)))


def _bit47_walked(c: Comparison) -> np.ndarray:
    """Predicted ADE for an address whose bits 63:48 agree but differ from bit 47: QEMU
    translates it instead (PGDL/PGDH by bit 63, indexes from bits 47:12), i.e. like the legal
    address with the same bits 47:0 (the profile's one root serves both halves)."""
    return _mask(_predicted(c, ADE) & _bits_63_48_agree_not_47(c) & ~_observed(c, ADE))


def _bit47_fetch(c: Comparison) -> np.ndarray:
    """Fetches at such addresses: walked like their legal twin, they livelock QEMU wherever the
    twin's fetch would raise PNX or PPI, which the comparison cannot tell (measured: a PLV3
    fetch of 0x0000_8000_0000_0000 hung in the default scenario). Never sent."""
    return _mask((c.access == FETCH) & _bits_63_48_agree_not_47(c))


def _tag_paddr(c: Comparison) -> np.ndarray:
    return np.asarray((c.observed_value >> np.uint64(32)) << np.uint64(3), dtype=np.uint64)


def _loads_reading(c: Comparison, paddrs: np.ndarray) -> np.ndarray:
    return _mask(c.predicted.ok & c.observed_ok & (c.access == LOAD) & (_tag_paddr(c) == paddrs))


def _16k_pages(c: Comparison) -> np.ndarray:
    """A load served through a 16 KiB softmmu page: the 4 KiB frame chosen by the VA's bits
    13:12, not the PA's."""
    block = np.uint64(0x3FFF)
    return _loads_reading(c, ((c.paddr & ~block) | (c.vaddrs & block)) & ~np.uint64(7))


def _1g_as_2m(c: Comparison) -> np.ndarray:
    """A load in a 1 GiB page translated as if the page were 2 MiB."""
    return _loads_reading(c, (c.paddr - (c.vaddrs & np.uint64(0x3FE0_0000))) & ~np.uint64(7))


def _hglobal_in_pa(c: Comparison) -> np.ndarray:
    """A load in a huge page whose PA gained bit 12 from HGLOBAL."""
    return _mask(
        _loads_reading(c, (c.paddr | np.uint64(0x1000)) & ~np.uint64(7)) & ((c.paddr & np.uint64(0x1000)) == 0)
    )


NOTES = "shared/QEMU-NOTES.md, LoongArch"
README = "guests/loongarch64/README.md, QEMU deviations"
FIRST = "7.1.0"  # the first QEMU release with a LoongArch target
CLEAN_72 = "10.0.2"  # first release measured free of the 7.2 defects (7.2.22 has them; QEMU-NOTES)

DEVIATIONS = [
    Deviation(
        "ldpte-drops-nr-nx-rplv",
        "LDDIR/LDPTE mask every entry to its 48 PA bits, so NR, NX and RPLV (bits 61-63) never "
        "reach the TLB: loads of NR pages, fetches of NX pages and RPLV-restricted accesses complete",
        f"{NOTES} (2); {README}",
        (FIRST, ""),
        variants=("hw-walk",),
        explains=_ldpte_drops_bits,
    ),
    Deviation(
        "pnr-before-ppi",
        "QEMU checks NR before the privilege level: a PLV3 load of a PLV0 page with NR = 1 raises "
        "PNR, the manual (5.4.4 pseudocode, 5.4.3) raises PPI",
        "target/loongarch loongarch_check_pte (order V, NX, NR, PLV, D); measured by "
        "tests/harness/test_loongarch64_conformance.py",
        (FIRST, ""),
        variants=("sw-walk",),
        explains=_nr_before_plv,
    ),
    Deviation(
        "nr-after-fill",
        "NR is checked only when QEMU fills its own TLB: once a fetch or store of a 4 KiB page "
        "succeeded, later loads of that page complete until the next TLB flush",
        "target/loongarch loongarch_check_pte (prot = PAGE_READ for every valid entry); measured "
        "by tests/harness/test_loongarch64_conformance.py",
        (FIRST, ""),
        variants=("sw-walk",),
        explains=_nr_after_fill,
    ),
    Deviation(
        "fetch-pnx-ppi-livelock",
        "an instruction fetch that raises PNX or PPI livelocks QEMU (only SIGKILL stops it): "
        "such probes are never sent",
        f"{NOTES} (both versions); {README}",
        (FIRST, ""),
        variants=("sw-walk",),
        unsafe=_fetch_faults_livelock(user_page_matters=False),
    ),
    Deviation(
        "fetch-pnx-ppi-livelock",
        "an instruction fetch that raises PPI livelocks QEMU (NX and RPLV never reach the TLB "
        "with ldpte): PLV3 fetches from pages that are not PLV3 are never sent",
        f"{NOTES} (both versions); {README}",
        (FIRST, ""),
        variants=("hw-walk",),
        unsafe=_fetch_faults_livelock(user_page_matters=True),
    ),
    Deviation(
        "ade-bits-63-48-only",
        "the legal-address check looks at bits 63:48 only: an address whose bits 63:48 agree "
        "but differ from bit 47 raises no ADE and is walked; fetches there are never sent "
        "(they may livelock QEMU like the fetches above)",
        f"{README} (upstream caab7ac835)",
        (FIRST, "10.0.4"),
        explains=_bit47_walked,
        unsafe=_bit47_fetch,
    ),
    Deviation(
        "qemu72-16k-pages",
        "translations are cached per 16 KiB block: neighbouring 4 KiB pages share a mapping "
        "(probe with the +flush option sets on these versions)",
        f"{NOTES}, QEMU 7.2 defect (1); {README}",
        (FIRST, CLEAN_72),
        explains=_16k_pages,
    ),
    Deviation(
        "qemu72-1g-as-2m",
        "1 GiB huge entries are translated as 2 MiB pages",
        f"{NOTES}, QEMU 7.2 defect (3)",
        (FIRST, CLEAN_72),
        explains=_1g_as_2m,
    ),
    Deviation(
        "qemu72-hglobal-in-pa",
        "the global bit of a huge entry (HGLOBAL, bit 12) leaks into the physical address",
        f"{NOTES}, QEMU 7.2 defect (4)",
        (FIRST, CLEAN_72),
        explains=_hglobal_in_pa,
    ),
]


def _variant(name: str, mode: int, description: str) -> Variant:
    # empty directory entries point to an all-invalid table chain (Linux's invalid_*_table):
    # with the crate's zero entries LDDIR would walk physical page 0 (arch/loongarch64/table.py)
    return Variant(
        name,
        lambda ram: TableSet([LA64PageTable(ram, invalid_tables=True)]),  # roots: root0 = root1
        mode,
        description=description,
    )


def _model(variant: Variant) -> LoongArchPermissions:
    # the RAM image does not reach physical page 0 (module docstring); the guest zeroes it at
    # boot and the harness never writes it (guest README, "Page 0")
    return LoongArchPermissions(page_zero=np.zeros(WORDS_PER_FRAME, dtype=np.uint64))


def loongarch64_profile() -> Profile:
    """The loongarch64 profile (QEMU >= 10.0: the RAM layout above)."""
    return LoongArch64Profile(
        arch="loongarch64",
        binary="qemu-system-loongarch64",
        apt_package="qemu-system-misc (QEMU 10: bookworm-backports or trixie; QEMU-NOTES)",
        machine_args=("-M", "virt", "-nodefaults"),  # guest README, "Run"
        ram_base=RAM_BASE,
        ram_size=RAM_SIZE,
        zig_args=("-target", "loongarch64-freestanding"),
        layout=RamLayout(
            arrays=(0x8000_0000, 0x8400_0000),  # 64 MiB: 1,677,721 probes of 8 + 32 bytes
            table_pool=(0x8400_0000, 0x9000_0000),  # 192 MiB: 49,152 table frames
            # the guest image is at 0x9020_0000 (guests/loongarch64/link.ld); data above it
            data_window=(0x9040_0000, HIGH_RAM + RAM_SIZE - LOW_RAM_SIZE),
        ),
        variants={
            "hw-walk": _variant("hw-walk", 0, "TLB refill by lddir/ldpte (mailbox mode 0)"),
            "sw-walk": _variant("sw-walk", 1, "TLB refill by ld.d, full entries in the TLB (mode 1)"),
        },
        trap_instruction=BREAK_7A7,
        model_for=_model,
        deviations=DEVIATIONS,
        mutation_safe_fetch=False,  # a fetch through a corrupted entry may raise PNX/PPI: livelock
    )

"""LoongArch64 page table entries (Reference Manual Vol. 1, 5.4.5 "TLB entry" bit layout,
7.5.x TLBELO), encoded exactly as page_table_entry 0.6.1's `LA64PTE`."""

from __future__ import annotations

from ..codec import PteCodec
from ..flags import MappingFlags, PageSize

V = 1 << 0  # valid (checked by the TLB)
D = 1 << 1  # dirty: a store to a page with D=0 raises PME (the hardware write permission)
PLV_MASK = 0b11 << 2  # privilege level, bits 3:2 (3 = user)
MAT_MASK = 0b11 << 4  # memory access type: 0 strongly-ordered uncached, 1 coherent cached, 2 weakly-ordered uncached
MAT_SUC = 0 << 4
MAT_CC = 1 << 4
MAT_WUC = 2 << 4
HUGE = 1 << 6  # directory entries: huge page (in a 4K PTE bit 6 is G)
P = 1 << 7  # present (software bit, crate's is_present)
W = 1 << 8  # writable (software bit; hardware enforces D)
HGLOBAL = 1 << 12  # global bit of huge entries
NR = 1 << 61  # not readable
NX = 1 << 62  # not executable
RPLV = 1 << 63  # restricted privilege level
PHYS_ADDR_MASK = 0x0000_FFFF_FFFF_F000  # PA bits 47:12 (crate: LA64PTE)


class LA64Codec(PteCodec):
    """MappingFlags <-> LoongArch PTE bits. Every flag combination is encodable (no READ ->
    NR), so only empty flags are rejected. DEVICE wins over UNCACHED, as in the crate."""

    name = "loongarch64"
    PA_FIELD = PHYS_ADDR_MASK
    PRESENT = (P, P)
    HUGE_MASK = HUGE
    FLAG_RULES = (
        (NR, 0, MappingFlags.READ),
        (W, W, MappingFlags.WRITE),
        (NX, 0, MappingFlags.EXECUTE),
        (PLV_MASK, PLV_MASK, MappingFlags.USER),  # crate: USER only when PLV == 3
        (MAT_MASK, MAT_SUC, MappingFlags.DEVICE),
        (MAT_MASK, MAT_WUC, MappingFlags.UNCACHED),
    )

    def encode_attributes(self, flags: MappingFlags, size: PageSize) -> int:
        bits = V | P  # crate: V | P whenever flags are non-empty
        if not flags & MappingFlags.READ:
            bits |= NR
        if flags & MappingFlags.WRITE:
            bits |= W | D  # crate: W (software) and D (what the hardware checks on stores)
        if not flags & MappingFlags.EXECUTE:
            bits |= NX
        if flags & MappingFlags.USER:
            bits |= PLV_MASK  # PLV 3
        if flags & MappingFlags.DEVICE:
            bits |= MAT_SUC
        elif flags & MappingFlags.UNCACHED:
            bits |= MAT_WUC
        else:
            bits |= MAT_CC
        if size.is_huge:
            bits |= HUGE
        return bits

    def table(self, paddr: int) -> int:
        # crate: a directory entry is the bare physical address of the next table (no flags);
        # lddir does not check validity (Vol. 1, LDDIR)
        return paddr & PHYS_ADDR_MASK

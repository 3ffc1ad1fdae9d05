"""x86_64 page table entries (Intel SDM Vol. 3A, 4.5 "4-level and 5-level paging", tables
4-15 to 4-20), encoded exactly as page_table_entry 0.6.1's `X64PTE`."""

from __future__ import annotations

from ..codec import PteCodec
from ..flags import MappingFlags, PageSize

P = 1 << 0  # present (SDM table 4-20 bit 0)
RW = 1 << 1  # writable
US = 1 << 2  # user-mode accessible
PWT = 1 << 3  # page-level write-through
PCD = 1 << 4  # page-level cache disable
A = 1 << 5  # accessed (set by the MMU)
D = 1 << 6  # dirty (set by the MMU, leaves only)
PS = 1 << 7  # page size: a 1G/2M leaf in a PDPTE/PDE (bit 7 of a 4K PTE is PAT)
G = 1 << 8  # global
XD = 1 << 63  # execute-disable (needs EFER.NXE, else reserved)
PHYS_ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12 (crate: X64PTE::PHYS_ADDR_MASK)


class X64Codec(PteCodec):
    """MappingFlags <-> x86_64 entry bits, as the crate encodes them.

    READ cannot be withheld on x86 (a present page is always readable), so any non-empty flags
    give a present entry and queries report READ (the crate's behaviour, kept). DEVICE and
    UNCACHED both become PCD|PWT and read back as UNCACHED.
    """

    name = "x86_64"
    PA_FIELD = PHYS_ADDR_MASK
    PRESENT = (P, P)
    TABLE_PRESENT = (P, P)  # a PML4E/PDPTE/PDE with P = 0 ends the walk (SDM 4.5.4); the crate follows it
    HUGE_MASK = PS
    FLAG_RULES = (
        (0, 0, MappingFlags.READ),  # crate: READ whenever present
        (RW, RW, MappingFlags.WRITE),
        (XD, 0, MappingFlags.EXECUTE),
        (US, US, MappingFlags.USER),
        (PCD, PCD, MappingFlags.UNCACHED),  # crate: PCD reads back as UNCACHED
    )

    def encode_attributes(self, flags: MappingFlags, size: PageSize) -> int:
        bits = P  # crate: PRESENT whenever flags are non-empty
        if flags & MappingFlags.WRITE:
            bits |= RW
        if not flags & MappingFlags.EXECUTE:
            bits |= XD
        if flags & MappingFlags.USER:
            bits |= US
        if flags & (MappingFlags.DEVICE | MappingFlags.UNCACHED):
            bits |= PCD | PWT  # crate: NO_CACHE | WRITE_THROUGH
        if size.is_huge:
            bits |= PS
        return bits

    def table(self, paddr: int) -> int:
        # crate: new_table = PRESENT | WRITABLE | USER_ACCESSIBLE, so only the leaf restricts
        return (paddr & PHYS_ADDR_MASK) | P | RW | US

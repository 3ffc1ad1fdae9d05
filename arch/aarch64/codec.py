"""AArch64 VMSAv8-64 block/page/table descriptors (Arm ARM D8.3 "Translation table descriptor
formats", D8.4 memory attributes), encoded exactly as page_table_entry 0.6.1's `A64PTE`."""

from __future__ import annotations

from ..codec import PteCodec
from ..errors import InvalidFlags
from ..flags import MappingFlags, PageSize

VALID = 1 << 0  # D8.3.1: bit 0 valid
NON_BLOCK = 1 << 1  # bit 1: table (levels 0-2) or page (level 3); 0 = block
ATTR_INDX = 0b111 << 2  # AttrIndx[2:0], index into MAIR_EL1
NS = 1 << 5
AP_EL0 = 1 << 6  # AP[1]: EL0 access
AP_RO = 1 << 7  # AP[2]: read-only
SH_INNER = 0b11 << 8  # SH[1:0] = 0b11 inner shareable
AF = 1 << 10  # access flag (D8.4.5): 0 faults unless hardware AF update is on
NG = 1 << 11
CONTIGUOUS = 1 << 52
PXN = 1 << 53  # privileged execute-never
UXN = 1 << 54  # unprivileged execute-never
PXN_TABLE = 1 << 59  # hierarchical attributes of table descriptors (D8.4.2)
UXN_TABLE = 1 << 60
AP_TABLE_NO_EL0 = 1 << 61
AP_TABLE_RO = 1 << 62
PHYS_ADDR_MASK = 0x0000_FFFF_FFFF_F000  # output address bits 47:12 (crate: A64PTE)

ATTR_DEVICE = 0  # crate MemAttr::Device (MAIR attr0 = 0x04, Device-nGnRE)
ATTR_NORMAL = 1  # MemAttr::Normal (attr1 = 0xff, write-back RW-allocate)
ATTR_NORMAL_NC = 2  # MemAttr::NormalNonCacheable (attr2 = 0x44)
MAIR_VALUE = 0x44_FF_04  # crate: MemAttr::MAIR_VALUE


class A64Codec(PteCodec):
    """MappingFlags <-> AArch64 descriptor bits (EL1&0 regime, as the crate's default build).

    READ is required: without it the crate writes a descriptor with VALID clear but other bits
    set, which is neither a mapping nor an empty slot (later `map` calls fail with
    AlreadyMapped); we reject such flags with InvalidFlags instead.
    """

    name = "aarch64"
    PA_FIELD = PHYS_ADDR_MASK
    PRESENT = (VALID, VALID)
    TABLE_PRESENT = (VALID, VALID)  # D8.3: an invalid table descriptor faults; the crate follows it
    HUGE_MASK = NON_BLOCK
    HUGE_WHEN_SET = False  # a block descriptor has bit 1 clear (D8.3.1)
    FLAG_RULES = (
        (0, 0, MappingFlags.READ),  # every valid descriptor is readable at EL1
        (AP_RO, 0, MappingFlags.WRITE),
        (AP_EL0, AP_EL0, MappingFlags.USER),
        (AP_EL0 | UXN, AP_EL0, MappingFlags.EXECUTE),  # crate: user pages executable unless UXN
        (AP_EL0 | PXN, 0, MappingFlags.EXECUTE),  # kernel pages executable unless PXN
        (ATTR_INDX, ATTR_DEVICE << 2, MappingFlags.DEVICE),
        (ATTR_INDX, ATTR_NORMAL_NC << 2, MappingFlags.UNCACHED),
    )

    def check_flags(self, flags: MappingFlags) -> None:
        super().check_flags(flags)
        if not flags & MappingFlags.READ:
            raise InvalidFlags(
                f"AArch64 mappings must include READ ({flags.letters()} has none): a descriptor "
                "cannot grant write or execute without read access"
            )

    def encode_attributes(self, flags: MappingFlags, size: PageSize) -> int:
        if flags & MappingFlags.DEVICE:  # crate: DEVICE wins over UNCACHED
            bits = ATTR_DEVICE << 2  # Device memory: SH ignored, crate leaves it 0
        elif flags & MappingFlags.UNCACHED:
            bits = (ATTR_NORMAL_NC << 2) | SH_INNER
        else:
            bits = (ATTR_NORMAL << 2) | SH_INNER
        bits |= VALID | AF  # crate: AF always set, so no access-flag fault on first use
        if not flags & MappingFlags.WRITE:
            bits |= AP_RO
        if flags & MappingFlags.USER:
            bits |= AP_EL0 | PXN  # crate: user pages are never executable at EL1
            if not flags & MappingFlags.EXECUTE:
                bits |= UXN
        else:
            bits |= UXN  # crate: kernel pages are never executable at EL0
            if not flags & MappingFlags.EXECUTE:
                bits |= PXN
        if not size.is_huge:
            bits |= NON_BLOCK  # level-3 descriptors must have bit 1 set (D8.3.2)
        return bits

    def table(self, paddr: int) -> int:
        # crate: new_table = NON_BLOCK | VALID, no hierarchical restrictions
        return (paddr & PHYS_ADDR_MASK) | NON_BLOCK | VALID

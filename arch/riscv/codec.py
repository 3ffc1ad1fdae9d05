"""RISC-V Sv39/Sv48/Sv57 page table entries (privileged spec 12.4-12.6, Svpbmt chapter),
encoded exactly as page_table_entry 0.6.1's `Rv64PTE` unless Svpbmt is enabled."""

from __future__ import annotations

from ..codec import PteCodec
from ..errors import InvalidFlags
from ..flags import MappingFlags, PageSize

V = 1 << 0  # valid (12.4.1 Figure "Sv39 page table entry")
R = 1 << 1
W = 1 << 2
X = 1 << 3
U = 1 << 4
G = 1 << 5
A = 1 << 6  # accessed
D = 1 << 7  # dirty
PBMT_SHIFT = 61  # Svpbmt: bits 62:61
PBMT_MASK = 0b11 << PBMT_SHIFT
PBMT_NC = 1 << PBMT_SHIFT  # non-cacheable, idempotent, weakly ordered (main memory)
PBMT_IO = 2 << PBMT_SHIFT  # non-cacheable, non-idempotent, strongly ordered (I/O)
PPN_FIELD = (1 << 54) - (1 << 10)  # PPN in bits 53:10 (crate: Rv64PTE::PHYS_ADDR_MASK)


class Rv64Codec(PteCodec):
    """MappingFlags <-> RISC-V PTE bits.

    Leaves always carry V, A and D (the crate's choice: no A/D faults on hardware that does not
    update them). Flags without R or X would make the entry a pointer to a next-level table, and
    W without R is reserved (12.4.1, Table "Encoding of PTE R/W/X fields"); the crate writes both
    anyway, we raise InvalidFlags. DEVICE and UNCACHED are dropped, as in the crate, unless the
    codec is built with `svpbmt=True` (DEVICE -> PBMT=IO, UNCACHED -> PBMT=NC).
    """

    name = "riscv"
    PA_FIELD = PPN_FIELD
    PA_SHIFT = 2  # entry = (pa >> 2) | flags (PPN at bit 10 = pa bit 12)
    PRESENT = (V, V)
    TABLE_PRESENT = (V, V)  # 4.3.2 step 3: V = 0 is a page fault at any level; the crate follows it
    HUGE_MASK = R | X  # a valid entry with R or X set is a leaf at any level (12.4.2 step 4)

    def __init__(self, svpbmt: bool = False) -> None:
        super().__init__()
        self.svpbmt = svpbmt
        rules = [
            (R, R, MappingFlags.READ),
            (W, W, MappingFlags.WRITE),
            (X, X, MappingFlags.EXECUTE),
            (U, U, MappingFlags.USER),
        ]
        if svpbmt:
            rules += [(PBMT_MASK, PBMT_IO, MappingFlags.DEVICE), (PBMT_MASK, PBMT_NC, MappingFlags.UNCACHED)]
        self.FLAG_RULES = tuple(rules)

    def check_flags(self, flags: MappingFlags) -> None:
        super().check_flags(flags)
        if not flags & (MappingFlags.READ | MappingFlags.EXECUTE):
            raise InvalidFlags(
                f"RISC-V leaves need READ or EXECUTE ({flags.letters()} has neither): R=X=0 "
                "marks a pointer to the next level table"
            )
        if flags & MappingFlags.WRITE and not flags & MappingFlags.READ:
            raise InvalidFlags(f"RISC-V reserves writable-but-not-readable leaves ({flags.letters()}): W needs R")

    def encode_attributes(self, flags: MappingFlags, size: PageSize) -> int:
        bits = V | A | D  # crate: V | A | D on every leaf
        if flags & MappingFlags.READ:
            bits |= R
        if flags & MappingFlags.WRITE:
            bits |= W
        if flags & MappingFlags.EXECUTE:
            bits |= X
        if flags & MappingFlags.USER:
            bits |= U
        if self.svpbmt:
            if flags & MappingFlags.DEVICE:
                bits |= PBMT_IO
            elif flags & MappingFlags.UNCACHED:
                bits |= PBMT_NC
        return bits

    def table(self, paddr: int) -> int:
        # crate: new_table = V only (R = W = X = 0 marks a pointer; U, A, D must be 0 there)
        return ((paddr >> 2) & PPN_FIELD) | V

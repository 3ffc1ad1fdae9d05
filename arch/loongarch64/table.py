"""LoongArch64 metadata and page table (crate: `LA64MetaData`, `LA64PageTable`)."""

from __future__ import annotations

from ..memory import PagingHandler
from ..metadata import PagingMetaData
from ..table import PageTable64
from .codec import LA64Codec

# crate: LA64MetaData::PWCL_VALUE / PWCH_VALUE — PTbase 12, PTwidth 9, Dir1 21/9, Dir2 30/9 (PWCL);
# Dir3 39/9 (PWCH). The hardware walker (lddir/ldpte) reads the tables with this layout.
PWCL_VALUE = 12 | (9 << 5) | (21 << 10) | (9 << 15) | (30 << 20) | (9 << 25)
PWCH_VALUE = 39 | (9 << 6)


class LA64MetaData(PagingMetaData):
    """4 levels, 48-bit VA (sign-extended; PGDL for the low half, PGDH for the high half) and
    48-bit PA."""

    LEVELS = 4
    PA_MAX_BITS = 48
    VA_MAX_BITS = 48


class LA64PageTable(PageTable64):
    """A LoongArch64 page table; the same root serves as PGDL and PGDH.

    `invalid_tables=False` (default) writes 0 into empty directory entries, as the crate does.
    `lddir` does not check validity, so a walk through such an entry reads physical page 0 as
    the next table: harmless only while page 0 is all zero, which it is not on QEMU 10 (a boot
    table at 0x200) nor on real boards. `invalid_tables=True` follows Linux instead
    (arch/loongarch/mm: invalid_pud_table, invalid_pmd_table, invalid_pte_table): one shared
    table per level below the root, each filled with pointers to the next, the last all zero, so
    every walk through an empty slot ends at an invalid PTE. They cost three frames, allocated
    right after the root and freed with the table.
    """

    METADATA = LA64MetaData
    CODEC = LA64Codec

    def __init__(self, handler: PagingHandler, *, invalid_tables: bool = False) -> None:
        self.invalid_tables = invalid_tables
        super().__init__(handler)

    def _make_empty_entries(self) -> list[int]:
        empty = [0] * self.levels
        if self.invalid_tables:
            for level in range(self.levels - 1, 0, -1):
                frame = self._alloc_frame()
                self._extra_frames.append(frame)
                self._empty[level] = empty[level]
                self._fill_table(frame, level)
                empty[level - 1] = self.codec.table(frame)
        return empty

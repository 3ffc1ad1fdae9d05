"""AArch64 metadata and page table (crate: `A64PagingMetaData`, `A64PageTable`)."""

from __future__ import annotations

import enum

import numpy as np

from ..memory import U64, PagingHandler
from ..metadata import PagingMetaData
from ..table import PageTable64
from .codec import A64Codec

UPPER_TOP = 0xFFFF


class VaRange(enum.Enum):
    """Which half of the address space a table translates (Arm ARM D8.1.2).

    LOWER tables go in TTBR0_EL1 and translate 0x0000_0000_0000_0000..0x0000_ffff_ffff_ffff;
    UPPER tables go in TTBR1_EL1 and translate 0xffff_0000_0000_0000..0xffff_ffff_ffff_ffff.
    Both use the same descriptors and index bits 47:12; only the top 16 bits differ.
    """

    LOWER = "lower"
    UPPER = "upper"


class A64MetaData(PagingMetaData):
    """4 levels, 48-bit VA and PA (T0SZ = T1SZ = 16, 4 KiB granule)."""

    LEVELS = 4
    PA_MAX_BITS = 48
    VA_MAX_BITS = 48

    def __init__(self, va_range: VaRange = VaRange.LOWER) -> None:
        self.va_range = va_range
        self._top = UPPER_TOP if va_range is VaRange.UPPER else 0

    # crate accepts either top (0 or 0xffff) for any table; here one table serves one TTBR
    @property
    def top_shift(self) -> int:
        return 48

    @property
    def valid_tops(self) -> frozenset[int]:
        return frozenset((self._top,))

    def range_is_valid(self, first: int, last: int) -> bool:
        return first <= last and self.vaddr_is_valid(first) and self.vaddr_is_valid(last)

    def vaddrs_valid(self, vaddrs: U64) -> np.ndarray:
        return np.asarray((vaddrs >> np.uint64(48)) == np.uint64(self._top), dtype=np.bool_)

    def canonical(self, raw: int) -> int:
        return raw | (self._top << 48)

    def canonical_many(self, raw: U64) -> U64:
        return raw | np.uint64(self._top << 48)

    def describe_va_rule(self) -> str:
        return (
            f"a {self.va_range.value}-range (TTBR{1 if self._top else 0}) table translates only "
            f"addresses whose bits 63..48 are {self._top:#x}"
        )


class A64PageTable(PageTable64):
    """An AArch64 translation table for TTBR0_EL1 (default) or TTBR1_EL1 (`upper=True`)."""

    METADATA = A64MetaData
    CODEC = A64Codec

    def __init__(self, handler: PagingHandler, *, upper: bool = False) -> None:
        super().__init__(handler, metadata=A64MetaData(VaRange.UPPER if upper else VaRange.LOWER))

    @property
    def va_range(self) -> VaRange:
        """The half of the address space this table translates."""
        assert isinstance(self.metadata, A64MetaData)
        return self.metadata.va_range

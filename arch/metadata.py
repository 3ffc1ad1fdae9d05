"""Per-architecture paging metadata (the crate's `PagingMetaData`): levels, address widths,
which virtual addresses a table translates, and the TLB-flush hook."""

from __future__ import annotations

import numpy as np

from .memory import U64

MASK64 = (1 << 64) - 1


class PagingMetaData:
    """Levels, physical/virtual address widths and canonical form of one table type.

    The default virtual address rule is the crate's: the bits above VA_MAX_BITS - 1 are a sign
    extension of bit VA_MAX_BITS - 1. Subclass and override `flush_tlb` to hook TLB maintenance
    into the flush records a table returns.
    """

    LEVELS: int = 4
    PA_MAX_BITS: int = 52
    VA_MAX_BITS: int = 48

    @property
    def pa_limit(self) -> int:
        """One past the highest physical address a leaf can point to."""
        return 1 << self.PA_MAX_BITS

    @property
    def top_shift(self) -> int:
        """Valid addresses are those whose bits from `top_shift` up equal one of `valid_tops`."""
        return self.VA_MAX_BITS - 1

    @property
    def valid_tops(self) -> frozenset[int]:
        """The allowed values of `vaddr >> top_shift` (all zeros or all ones: sign extension)."""
        return frozenset((0, MASK64 >> self.top_shift))

    def vaddr_is_valid(self, vaddr: int) -> bool:
        """Whether `vaddr` is translated by this table (canonical, and in its half if any)."""
        return 0 <= vaddr <= MASK64 and vaddr >> self.top_shift in self.valid_tops

    def range_is_valid(self, first: int, last: int) -> bool:
        """Whether every address of [first, last] is valid (no wrap, no non-canonical hole)."""
        top = self.VA_MAX_BITS - 1
        return (
            first <= last <= MASK64
            and self.vaddr_is_valid(first)
            and self.vaddr_is_valid(last)
            and first >> top == last >> top
        )

    def vaddrs_valid(self, vaddrs: U64) -> np.ndarray:
        """Vector form of `vaddr_is_valid`."""
        top = vaddrs >> np.uint64(self.VA_MAX_BITS - 1)
        return np.asarray((top == 0) | (top == np.uint64(MASK64 >> (self.VA_MAX_BITS - 1))), dtype=np.bool_)

    def canonical(self, raw: int) -> int:
        """The valid virtual address whose low VA_MAX_BITS bits are `raw` (walk order address)."""
        if raw >> (self.VA_MAX_BITS - 1) & 1:
            return raw | (MASK64 & ~((1 << self.VA_MAX_BITS) - 1))
        return raw

    def canonical_many(self, raw: U64) -> U64:
        """Vector form of `canonical`."""
        high = np.uint64(MASK64 & ~((1 << self.VA_MAX_BITS) - 1))
        sign = (raw >> np.uint64(self.VA_MAX_BITS - 1)) & np.uint64(1)
        return np.where(sign == 1, raw | high, raw)

    def describe_va_rule(self) -> str:
        """The virtual address rule in words, for error messages."""
        bit = self.VA_MAX_BITS - 1
        return f"bits 63..{self.VA_MAX_BITS} must all equal bit {bit} ({self.VA_MAX_BITS}-bit canonical form)"

    def flush_tlb(self, vaddr: int | None) -> None:
        """Flush one TLB entry (or all when `vaddr` is None). A library has no TLB: no-op."""

"""The page table entry codec interface: MappingFlags <-> entry bits for one architecture.

A codec is declarative where it can be: flag decoding is a list of (mask, value, flag) rules,
applied the same way to one entry or to a numpy array of entries, so scalar and batch queries
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InvalidFlags
from .flags import ALL_FLAGS, MappingFlags, PageSize
from .memory import U64

FlagRule = tuple[int, int, MappingFlags]
"""(mask, value, flag): the flag is reported when `entry & mask == value`."""


class PteCodec:
    """Encodes and decodes the entries of one architecture's 64-bit page tables.

    Subclasses set the class constants and implement `encode_attributes`; everything else is
    generic. `PA_FIELD` is the mask of the output address field inside an entry and `PA_SHIFT`
    how far right a physical address moves to land in it (RISC-V stores PA >> 2).
    """

    PA_FIELD: int
    PA_SHIFT: int = 0
    PRESENT: tuple[int, int]
    """(mask, value) of a present leaf (the crate's `is_present`)."""
    TABLE_PRESENT: tuple[int, int] | None = None
    """(mask, value) a table entry must match to be followed by the MMU; None where table
    entries have no present bit (LoongArch directories)."""
    HUGE_MASK: int
    HUGE_WHEN_SET: bool = True
    """A directory-level entry is a huge leaf when `entry & HUGE_MASK` is non-zero (or zero)."""
    FLAG_RULES: Sequence[FlagRule]
    name: str = "generic"

    def __init__(self) -> None:
        self._template_cache: dict[tuple[int, PageSize], int] = {}
        self._decode_cache: dict[int, MappingFlags] = {}

    # -- flags -> bits -----------------------------------------------------------------------
    def check_flags(self, flags: MappingFlags) -> None:
        """Raise InvalidFlags unless the architecture encodes `flags` faithfully."""
        if not flags:
            raise InvalidFlags("empty mapping flags: a mapping needs at least one flag")
        if int(flags) & ~int(ALL_FLAGS):
            raise InvalidFlags(f"unknown flag bits {int(flags) & ~int(ALL_FLAGS):#x} in {int(flags):#x}")

    def encode_attributes(self, flags: MappingFlags, size: PageSize) -> int:
        """The entry bits other than the address for a leaf with `flags` (already checked)."""
        raise NotImplementedError

    def template(self, flags: MappingFlags | int, size: PageSize) -> int:
        """Cached `encode_attributes`; raises InvalidFlags for flags the codec rejects and
        TypeError for anything that is not flags."""
        bits = self._template_cache.get((flags, size))
        if bits is None:
            if isinstance(flags, bool) or not isinstance(flags, int):
                raise TypeError(f"flags must be MappingFlags, not {type(flags).__name__} {flags!r}")
            checked = MappingFlags(flags & 0x3F) if 0 <= flags <= 0x3F else flags
            self.check_flags(checked)  # type: ignore[arg-type]
            bits = self.encode_attributes(MappingFlags(flags), PageSize(size))
            self._template_cache[(int(flags), PageSize(size))] = bits
        return bits

    def encode_pa(self, paddr: int) -> int:
        """The address field of an entry pointing at `paddr`."""
        return (paddr >> self.PA_SHIFT) & self.PA_FIELD

    def page(self, paddr: int, flags: MappingFlags, size: PageSize) -> int:
        """A leaf entry (the crate's `new_page`); `paddr` must already be aligned."""
        return self.template(flags, size) | self.encode_pa(paddr)

    def table(self, paddr: int) -> int:
        """A next-level table entry (the crate's `new_table`)."""
        raise NotImplementedError

    def with_flags(self, entry: int, flags: MappingFlags, size: PageSize) -> int:
        """The crate's `set_flags`: keep the address field, replace every other bit."""
        return (entry & self.PA_FIELD) | self.template(flags, size)

    # -- bits -> meaning (work on ints and on numpy arrays alike) ----------------------------
    def paddr(self, entry: int) -> int:
        """The physical address an entry points to."""
        return (entry & self.PA_FIELD) << self.PA_SHIFT

    def paddrs(self, entries: U64) -> U64:
        """Vector form of `paddr`."""
        return (entries & np.uint64(self.PA_FIELD)) << np.uint64(self.PA_SHIFT)

    def is_present(self, entry: int) -> bool:
        """Whether a leaf entry is present (the crate's `is_present`)."""
        mask, value = self.PRESENT
        return entry & mask == value

    def present(self, entries: U64) -> np.ndarray:
        """Vector form of `is_present`."""
        mask, value = self.PRESENT
        return np.asarray((entries & np.uint64(mask)) == np.uint64(value), dtype=np.bool_)

    def table_live(self, entries: U64) -> np.ndarray:
        """Vector test: which table entries the MMU follows (all, where there is no such bit)."""
        if self.TABLE_PRESENT is None:
            return np.ones(len(entries), dtype=np.bool_)
        mask, value = self.TABLE_PRESENT
        return np.asarray((entries & np.uint64(mask)) == np.uint64(value), dtype=np.bool_)

    def is_huge(self, entry: int) -> bool:
        """Whether a non-empty directory-level entry is a huge leaf (the crate's `is_huge`)."""
        return bool(entry & self.HUGE_MASK) == self.HUGE_WHEN_SET

    def huge(self, entries: U64) -> np.ndarray:
        """Vector form of `is_huge`."""
        return np.asarray(((entries & np.uint64(self.HUGE_MASK)) != 0) == self.HUGE_WHEN_SET, dtype=np.bool_)

    def flags(self, entry: int) -> MappingFlags:
        """The MappingFlags a leaf entry carries (empty when not present)."""
        key = entry & ~self.PA_FIELD
        flags = self._decode_cache.get(key)
        if flags is None:
            flags = MappingFlags(0)
            if self.is_present(key):
                for mask, value, flag in self.FLAG_RULES:
                    if key & mask == value:
                        flags |= flag
            self._decode_cache[key] = flags
        return flags

    def flags_many(self, entries: U64) -> np.ndarray:
        """Vector form of `flags` (uint8 array of MappingFlags values): the bits the rules and
        the present test look at are packed into a small key, and a table made with `flags`
        translates keys to flags."""
        runs, table = self._flag_lookup()
        key = np.zeros(len(entries), dtype=np.uint64)
        for start, width, offset in runs:
            key |= ((entries >> np.uint64(start)) & np.uint64((1 << width) - 1)) << np.uint64(offset)
        return table[key]

    def _flag_lookup(self) -> tuple[list[tuple[int, int, int]], np.ndarray]:
        """(runs of relevant entry bits as (first bit, width, key offset), key -> flags table)."""
        cached = getattr(self, "_lookup", None)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        relevant = self.PRESENT[0]
        for mask, _, _ in self.FLAG_RULES:
            relevant |= mask
        runs: list[tuple[int, int, int]] = []
        offset = bit = 0
        while bit < 64:
            if relevant >> bit & 1:
                width = 1
                while bit + width < 64 and relevant >> (bit + width) & 1:
                    width += 1
                runs.append((bit, width, offset))
                offset += width
                bit += width
            else:
                bit += 1
        table = np.zeros(1 << offset, dtype=np.uint8)
        for key in range(1 << offset):
            entry = 0
            for start, width, key_offset in runs:
                entry |= ((key >> key_offset) & ((1 << width) - 1)) << start
            table[key] = int(self.flags(entry))
        self._lookup = (runs, table)
        return self._lookup

    def describe(self, entry: int, level_is_leaf: bool) -> str:
        """A one-line decoding of an entry for reports."""
        if level_is_leaf:
            state = "present" if self.is_present(entry) else "not present"
            return f"{entry:#018x} leaf -> {self.paddr(entry):#x} {self.flags(entry).letters()} ({state})"
        return f"{entry:#018x} table -> {self.paddr(entry):#x}"

"""Mapping flags and page sizes shared by every architecture (page_table_entry's `MappingFlags`
and page_table_multiarch's `PageSize`, same values)."""

from __future__ import annotations

import enum


class MappingFlags(enum.IntFlag):
    """Architecture-independent permissions and memory attributes of a mapping.

    The values are the crate's (`page_table_entry::MappingFlags`): READ=1, WRITE=2, EXECUTE=4,
    USER=8, DEVICE=16, UNCACHED=32.
    """

    READ = 1 << 0
    WRITE = 1 << 1
    EXECUTE = 1 << 2
    USER = 1 << 3
    DEVICE = 1 << 4
    UNCACHED = 1 << 5

    @classmethod
    def from_letters(cls, letters: str) -> MappingFlags:
        """Parse the letters R W X U D C (any order, case-insensitive) into flags."""
        if not isinstance(letters, str):
            raise TypeError(f"flag letters must be a string, not {type(letters).__name__} {letters!r}")
        flags = cls(0)
        for letter in letters.upper():
            try:
                flags |= _LETTERS[letter]
            except KeyError:
                raise ValueError(f"unknown flag letter {letter!r} in {letters!r}: use R W X U D C") from None
        return flags

    def letters(self) -> str:
        """The flags as letters in the order RWXUDC, '-' when empty."""
        return "".join(letter for letter, flag in _LETTERS.items() if flag in self) or "-"


_LETTERS = {
    "R": MappingFlags.READ,
    "W": MappingFlags.WRITE,
    "X": MappingFlags.EXECUTE,
    "U": MappingFlags.USER,
    "D": MappingFlags.DEVICE,
    "C": MappingFlags.UNCACHED,
}

ALL_FLAGS = MappingFlags(0x3F)


class PageSize(enum.IntEnum):
    """Leaf sizes of 64-bit page tables with a 4 KiB granule (the crate's `PageSize`)."""

    SIZE_4K = 0x1000
    SIZE_2M = 0x20_0000
    SIZE_1G = 0x4000_0000

    @property
    def is_huge(self) -> bool:
        """Whether this is a block/superpage (larger than 4K)."""
        return self is not PageSize.SIZE_4K

    @property
    def label(self) -> str:
        """Short human label: '4K', '2M', '1G'."""
        return self.name[5:]

    @classmethod
    def parse(cls, text: str) -> PageSize:
        """Parse '4K', '2M' or '1G' (case-insensitive)."""
        if not isinstance(text, str):
            raise TypeError(f"a page size label must be a string, not {type(text).__name__} {text!r}")
        for size in cls:
            if size.label == text.upper():
                return size
        raise ValueError(f"unknown page size {text!r}: use 4K, 2M or 1G")

"""x86_64 metadata and page tables (crate: `X64PagingMetaData`, `X64PageTable`)."""

from __future__ import annotations

from ..metadata import PagingMetaData
from ..table import PageTable64
from .codec import X64Codec


class X64MetaData(PagingMetaData):
    """4-level paging: 48-bit canonical virtual addresses, 52-bit physical (SDM 4.5)."""

    LEVELS = 4
    PA_MAX_BITS = 52
    VA_MAX_BITS = 48


class X64MetaData5(X64MetaData):
    """5-level paging (CR4.LA57): 57-bit canonical virtual addresses (SDM 4.5.1)."""

    LEVELS = 5
    VA_MAX_BITS = 57


class X64PageTable(PageTable64):
    """An x86_64 4-level page table (PML4 root)."""

    METADATA = X64MetaData
    CODEC = X64Codec


class X64PageTable5(PageTable64):
    """An x86_64 5-level page table (PML5 root); not in the crate, same entry format."""

    METADATA = X64MetaData5
    CODEC = X64Codec

"""RISC-V metadata and page tables (crate: `Sv39MetaData`, `Sv48MetaData`; Sv57 is ours)."""

from __future__ import annotations

from ..memory import PagingHandler
from ..metadata import PagingMetaData
from ..table import PageTable64
from .codec import Rv64Codec


class Sv39MetaData(PagingMetaData):
    """Sv39: 3 levels, 39-bit VA sign-extended to 64 bits, 56-bit PA (12.4)."""

    LEVELS = 3
    PA_MAX_BITS = 56
    VA_MAX_BITS = 39


class Sv48MetaData(PagingMetaData):
    """Sv48: 4 levels, 48-bit VA (12.5)."""

    LEVELS = 4
    PA_MAX_BITS = 56
    VA_MAX_BITS = 48


class Sv57MetaData(PagingMetaData):
    """Sv57: 5 levels, 57-bit VA (12.6)."""

    LEVELS = 5
    PA_MAX_BITS = 56
    VA_MAX_BITS = 57


class _RiscvPageTable(PageTable64):
    CODEC = Rv64Codec
    SATP_MODE = 0

    def __init__(self, handler: PagingHandler, *, svpbmt: bool = False) -> None:
        super().__init__(handler, codec=Rv64Codec(svpbmt=svpbmt))

    def satp(self, asid: int = 0) -> int:
        """The `satp` value selecting this table (MODE | ASID | root PPN)."""
        return self.SATP_MODE << 60 | asid << 44 | self.root_paddr >> 12


class Sv39PageTable(_RiscvPageTable):
    """An Sv39 page table (satp MODE 8). `svpbmt=True` encodes DEVICE/UNCACHED with Svpbmt."""

    METADATA = Sv39MetaData
    SATP_MODE = 8


class Sv48PageTable(_RiscvPageTable):
    """An Sv48 page table (satp MODE 9)."""

    METADATA = Sv48MetaData
    SATP_MODE = 9


class Sv57PageTable(_RiscvPageTable):
    """An Sv57 page table (satp MODE 10)."""

    METADATA = Sv57MetaData
    SATP_MODE = 10

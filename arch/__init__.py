"""arch: a Python port of the Rust crate page_table_multiarch.

One generic `PageTable64` over per-architecture metadata and entry codecs:
`arch.x86_64` (4- and 5-level), `arch.aarch64`, `arch.riscv` (Sv39/Sv48/Sv57),
`arch.loongarch64`. Tables live in memory reached through a `PagingHandler`; `RamImage`
provides one over a bytearray or a memory-mapped guest RAM file.
"""

from .codec import PteCodec
from .errors import (
    AlreadyMapped,
    InvalidAddress,
    InvalidFlags,
    MappedToHugePage,
    NoMemory,
    NotAligned,
    NotMapped,
    PagingError,
    UnsupportedPageSize,
)
from .flags import MappingFlags, PageSize
from .flush import TlbFlush, TlbFlushAll
from .memory import PagingHandler, PagingHandlerBase, RamImage
from .metadata import PagingMetaData
from .table import MappingList, PageTable64, QueryBatch, UnmapResult, WalkBatch

__all__ = [
    "AlreadyMapped",
    "InvalidAddress",
    "InvalidFlags",
    "MappedToHugePage",
    "MappingFlags",
    "MappingList",
    "NoMemory",
    "NotAligned",
    "NotMapped",
    "PageSize",
    "PageTable64",
    "PagingError",
    "PagingHandler",
    "PagingHandlerBase",
    "PagingMetaData",
    "PteCodec",
    "QueryBatch",
    "RamImage",
    "TlbFlush",
    "TlbFlushAll",
    "UnmapResult",
    "UnsupportedPageSize",
    "WalkBatch",
]

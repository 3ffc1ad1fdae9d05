"""RISC-V Sv39, Sv48 and Sv57 page tables (privileged spec, "Supervisor-Level ISA")."""

from .codec import Rv64Codec
from .table import Sv39MetaData, Sv39PageTable, Sv48MetaData, Sv48PageTable, Sv57MetaData, Sv57PageTable

__all__ = [
    "Rv64Codec",
    "Sv39MetaData",
    "Sv48MetaData",
    "Sv57MetaData",
    "Sv39PageTable",
    "Sv48PageTable",
    "Sv57PageTable",
]

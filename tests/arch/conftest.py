"""Shared fixtures for the library tests: every table type, with the address ranges it serves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from arch import PageTable64, RamImage
from arch.aarch64 import A64PageTable
from arch.loongarch64 import LA64PageTable
from arch.riscv import Sv39PageTable, Sv48PageTable, Sv57PageTable
from arch.x86_64 import X64PageTable, X64PageTable5


@dataclass(frozen=True)
class TableKind:
    """A table type under test and two virtual address regions it translates."""

    name: str
    make: Callable[[RamImage], PageTable64]
    low: int  # a region in the lower half (or the only half)
    high: int  # a region in the upper half (equal to `low` where there is one half)


TABLE_KINDS = [
    TableKind("x86_64", X64PageTable, 0x0000_7F00_0000_0000, 0xFFFF_8000_0000_0000),
    TableKind("x86_64-5level", X64PageTable5, 0x00FF_0000_0000_0000, 0xFF00_0000_0000_0000),
    TableKind("aarch64", A64PageTable, 0x0000_7F00_0000_0000, 0x0000_0000_4000_0000),
    TableKind("aarch64-upper", lambda ram: A64PageTable(ram, upper=True), 0xFFFF_0000_0000_0000, 0xFFFF_FF00_0000_0000),
    TableKind("sv39", Sv39PageTable, 0x0000_0010_0000_0000, 0xFFFF_FFC0_0000_0000),
    TableKind("sv39-svpbmt", lambda ram: Sv39PageTable(ram, svpbmt=True), 0x0000_0010_0000_0000, 0xFFFF_FFC0_0000_0000),
    TableKind("sv48", Sv48PageTable, 0x0000_7F00_0000_0000, 0xFFFF_8000_0000_0000),
    TableKind("sv57", Sv57PageTable, 0x00FF_0000_0000_0000, 0xFF00_0000_0000_0000),
    TableKind("loongarch64", LA64PageTable, 0x0000_7F00_0000_0000, 0xFFFF_8000_0000_0000),
    TableKind(
        "loongarch64-invalid-tables",
        lambda ram: LA64PageTable(ram, invalid_tables=True),
        0x0000_7F00_0000_0000,
        0xFFFF_8000_0000_0000,
    ),
]


@pytest.fixture(params=TABLE_KINDS, ids=lambda kind: kind.name)
def kind(request: pytest.FixtureRequest) -> TableKind:
    return request.param  # type: ignore[no-any-return]

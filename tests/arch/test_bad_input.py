"""Every public method with bad input raises the documented error, names the value, and leaves
the table and the frame allocator exactly as they were."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from arch import (
    InvalidAddress,
    InvalidFlags,
    MappingFlags,
    NoMemory,
    NotAligned,
    NotMapped,
    PageSize,
    PagingError,
    RamImage,
    UnsupportedPageSize,
)

from .conftest import TableKind

RW = MappingFlags.READ | MappingFlags.WRITE
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G


def snapshot(ram: RamImage) -> tuple[list[int], bytes]:
    frames = ram.allocated_frames()
    return frames, b"".join(ram.read_words(f, 512).tobytes() for f in frames)


def non_canonical(table) -> int:  # type: ignore[no-untyped-def]
    bits = table.metadata.VA_MAX_BITS
    for candidate in (1 << (bits - 1), 0x8000_0000_0000_0000, 1 << 63 | 1 << 12, 0x0000_8000_0000_0000):
        if not table.metadata.vaddr_is_valid(candidate):
            return candidate
    raise AssertionError


def cases(kind: TableKind, table) -> list[tuple[str, Callable[[], object], type[Exception], str]]:  # type: ignore[no-untyped-def]
    va = kind.low
    bad = non_canonical(table)
    too_far = table.metadata.pa_limit
    return [
        ("va not an int", lambda: table.map("0x1000", 0, K4, RW), TypeError, "vaddr must be an integer"),
        ("va a float", lambda: table.query(4096.0), TypeError, "vaddr must be an integer"),
        ("va a bool", lambda: table.unmap(True), TypeError, "vaddr must be an integer"),
        ("flags a string", lambda: table.map(va, 0, K4, "RW"), TypeError, "flags must be MappingFlags"),
        ("pa not an int", lambda: table.map(va, None, K4, RW), TypeError, "paddr must be an integer"),
        ("size not a size", lambda: table.map(va, 0, 0x3000, RW), UnsupportedPageSize, "0x3000"),
        ("size a string", lambda: table.map(va, 0, "4K", RW), TypeError, "page size must be an integer"),
        ("unaligned 2M", lambda: table.map(va + K4, 0, M2, RW), NotAligned, f"{va + K4:#x}"),
        ("unaligned 4K", lambda: table.map(va + 8, 0, K4, RW), NotAligned, f"{va + 8:#x}"),
        ("non-canonical map", lambda: table.map(bad, 0, K4, RW), InvalidAddress, f"{bad:#x}"),
        ("non-canonical query", lambda: table.query(bad), InvalidAddress, f"{bad:#x}"),
        ("non-canonical unmap", lambda: table.unmap(bad), InvalidAddress, f"{bad:#x}"),
        ("negative va", lambda: table.query(-4096), InvalidAddress, "-0x1000"),
        ("va beyond 64 bits", lambda: table.query(1 << 64), InvalidAddress, "0x10000000000000000"),
        ("pa beyond PA bits", lambda: table.map(va, too_far, K4, RW), InvalidAddress, f"{too_far:#x}"),
        ("negative pa", lambda: table.map(va, -4096, K4, RW), InvalidAddress, "-0x1000"),
        ("empty flags", lambda: table.map(va, 0, K4, MappingFlags(0)), InvalidFlags, "empty"),
        ("unknown flag bits", lambda: table.map(va, 0, K4, 0x41), InvalidFlags, "0x40"),
        ("region unaligned", lambda: table.map_region(va + 8, 0, 4 * K4, RW), NotAligned, f"{va + 8:#x}"),
        ("region odd size", lambda: table.map_region(va, 0, 100, RW), NotAligned, "0x64"),
        ("region unaligned pa", lambda: table.map_region(va, 0x10, K4, RW), NotAligned, "0x10"),
        ("region negative size", lambda: table.map_region(va, 0, -K4, RW), ValueError, "negative"),
        ("region through the hole", lambda: table.map_region(bad - K4, 0, 2 * K4, RW), InvalidAddress, ""),
        ("region past 2^64", lambda: table.unmap_region((1 << 64) - K4, 2 * K4), InvalidAddress, ""),
        ("region pa past the limit", lambda: table.map_region(va, too_far - K4, 2 * K4, RW), InvalidAddress, ""),
        ("region pa not int", lambda: table.map_region(va, "0", K4, RW), TypeError, "callable"),
        ("unmap a hole", lambda: table.unmap(va + 64 * G1), NotMapped, f"{va + 64 * G1:#x}"),
        ("protect a hole", lambda: table.protect(va + 64 * G1, RW), NotMapped, ""),
        ("remap a hole", lambda: table.remap(va + 64 * G1, 0, RW), NotMapped, ""),
        ("unmap_region a hole", lambda: table.unmap_region(va + 64 * G1, K4), NotMapped, ""),
        ("query a hole", lambda: table.query(va + 64 * G1), NotMapped, ""),
        ("copy_from another type", lambda: table.copy_from(object(), va, K4), TypeError, ""),  # type: ignore[arg-type]
    ]


def test_bad_input_gives_documented_error_and_changes_nothing(kind: TableKind) -> None:
    ram = RamImage(0, 2 << 20)
    table = kind.make(ram)
    table.map(kind.low + 2 * G1, 0x10_0000, K4, RW)  # something to leave untouched
    before = snapshot(ram)
    for name, action, error, fragment in cases(kind, table):
        with pytest.raises(error) as caught:
            action()
        assert fragment in str(caught.value), f"{name}: {caught.value}"
        assert snapshot(ram) == before, f"{name} changed the table"


def test_out_of_frames_changes_nothing(kind: TableKind) -> None:
    ram = RamImage(0, 64 * 4096)
    table = kind.make(ram)
    while ram.free_frames > 1:
        assert ram.alloc_frame() is not None
    before = snapshot(ram)
    with pytest.raises(NoMemory):
        table.map(kind.low + G1, 0, K4, RW)  # needs more tables than the one frame left
    with pytest.raises(NoMemory):
        table.map_region(kind.low + G1, 0, 8 << 20, RW, allow_huge=False)
    assert snapshot(ram) == before


def test_region_operations_never_overflow_at_the_top() -> None:
    from arch.x86_64 import X64PageTable

    table = X64PageTable(RamImage(0, 1 << 20))
    top = (1 << 64) - K4
    table.map_region(top, 0x1000, K4, RW)
    assert table.query(top + 8) == (0x1008, RW, K4)
    table.protect_region(top, K4, MappingFlags.READ)
    table.unmap_region(top, K4)
    with pytest.raises(NotMapped):
        table.query(top)


def test_freed_table_refuses_use(kind: TableKind) -> None:
    ram = RamImage(0, 1 << 20)
    table = kind.make(ram)
    table.free()
    assert ram.allocated_frames() == []
    table.free()  # idempotent
    for action in (lambda: table.query(kind.low), lambda: table.map(kind.low, 0, K4, RW), lambda: table.root_paddr):
        with pytest.raises(PagingError, match="freed"):
            action()


def test_ram_image_rejects_bad_geometry_and_addresses() -> None:
    with pytest.raises(ValueError, match="multiples of 4 KiB"):
        RamImage(0x1001, 4096)
    with pytest.raises(ValueError, match="frame pool"):
        RamImage(0, 1 << 20, pool=(0, 2 << 20))
    ram = RamImage(0x8000_0000, 1 << 20)
    for bad in (0x7FFF_FFF8, 0x8010_0000, 0x8000_0004):
        with pytest.raises(ValueError, match=f"{bad:#x}"):
            ram.read_word(bad)
    with pytest.raises(ValueError, match="not allocated"):
        ram.dealloc_frame(0x8000_0000)

"""The built-in scenario of each architecture and variant, generated from the profile and the
table geometry: every encodable flag combination at every leaf size in every half of the
address space, region operations that split and merge huge pages, holes, non-canonical
addresses (probed by every full check) and 100,000 randomly placed 4K pages for throughput."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from arch import InvalidFlags, MappingFlags, PageSize, PageTable64

from .profile import Profile
from .scenario import Operation
from .tableset import TableSet

RANDOM_PAGES = 100_000
RANDOM_SPAN = 2 << 30  # the random pages lie in 2 GiB: 19% of its 4K slots, 1,024 leaf tables
K4, M2, G1 = int(PageSize.SIZE_4K), int(PageSize.SIZE_2M), int(PageSize.SIZE_1G)


def encodable_flags(table: PageTable64) -> list[MappingFlags]:
    """Every flag combination the table's codec accepts."""
    found = []
    for value in range(1, 64):
        try:
            table.codec.template(MappingFlags(value), PageSize.SIZE_4K)
        except InvalidFlags:
            continue
        found.append(MappingFlags(value))
    return found


def region_bases(table: PageTable64) -> list[int]:
    """Where the scenario starts laying out pages in each half the table translates: 1/16 into
    the low half, and the first address of the high half."""
    bits = table.metadata.VA_MAX_BITS
    candidates = [1 << (bits - 5), table.metadata.canonical(1 << (bits - 1))]
    return [va for va in candidates if table.metadata.vaddr_is_valid(va)]


class _Cursor:
    """Lays out areas one after another from a base, each aligned and followed by a gap."""

    def __init__(self, base: int) -> None:
        self.position = base

    def area(self, length: int, align: int) -> int:
        start = -(-self.position // align) * align
        self.position = start + length + align
        return start


class _Frames:
    """Hands out aligned physical frames from the profile's data window, cycling when full."""

    def __init__(self, window: tuple[int, int]) -> None:
        self.low, self.high = window
        self.next = {K4: self.low, M2: self.low, G1: self.low}

    def take(self, size: int) -> int:
        start = max(self.next[size], (self.low + size - 1) // size * size)
        if start + size > self.high:
            start = (self.low + size - 1) // size * size
            if start + size > self.high:
                raise ValueError(f"the data window [{self.low:#x}, {self.high:#x}) holds no {size:#x}-aligned page")
        self.next[size] = start + size
        return start


def default_scenario(
    profile: Profile, tables: TableSet, seed: int = 0, random_pages: int = RANDOM_PAGES
) -> Iterator[Operation]:
    """The operations of the built-in scenario (see the module docstring)."""
    frames = _Frames(profile.layout.data_window)
    line = 0

    def op(kind: str, **fields: object) -> Operation:
        nonlocal line
        line += 1
        return Operation(kind, line, **fields)  # type: ignore[arg-type]

    bases = [base for table in tables.tables for base in region_bases(table)]
    cursors = [_Cursor(base) for base in bases]
    combos = encodable_flags(tables.primary)
    sizes = [size for size in (K4, M2, G1) if PageSize(size) in profile.sizes]
    # 1. every flag combination x every leaf size x every half, a hole after every page
    for cursor in cursors:
        for size in sizes:
            start = cursor.area(len(combos) * 2 * size, size)
            for index, flags in enumerate(combos):
                yield op("map", va=start + index * 2 * size, pa=frames.take(size), size=size, flags=flags)
    yield op("check", full=True)
    # 2. region operations: a region that needs 4K, 2M and 1G pages, then changes to it
    rw = MappingFlags.READ | MappingFlags.WRITE
    head = 3 * M2 + 5 * K4
    length = head + G1 + M2 + 7 * K4
    for cursor in cursors:
        start = cursor.area(length + G1, G1) + G1 - head  # unaligned head: 4K, then 2M, then 1G pages
        pa = frames.take(G1) - head if G1 in sizes else -1
        if pa < profile.layout.data_window[0] or pa + length > profile.layout.data_window[1]:
            pa = frames.take(M2) + M2 - 5 * K4  # no room for a 1G page: 2M and 4K pages only
            length = head + 7 * K4
        yield op("map_region", va=start, pa=pa, length=length, flags=rw, allow_huge=True)
        yield op("protect_region", va=start + 5 * K4, length=3 * M2, flags=MappingFlags.READ)
        yield op("unmap_region", va=start, length=2 * K4)
        yield op("remap", va=start + 2 * K4, pa=frames.take(K4), flags=MappingFlags.READ | MappingFlags.EXECUTE)
        yield op("unmap", va=start + 5 * K4 + M2)
    yield op("check", full=True)
    # 3. randomly placed 4K pages in 2 GiB of the low half, for throughput
    rng = np.random.default_rng(seed)
    start = cursors[0].area(RANDOM_SPAN, G1)
    slots = np.unique(rng.integers(0, RANDOM_SPAN // K4, size=random_pages * 2))[:random_pages]
    rng.shuffle(slots)
    low, high = profile.layout.data_window
    pas = low + rng.integers(0, (high - low) // K4, size=len(slots)) * K4
    for slot, pa in zip(slots.tolist(), pas.tolist(), strict=True):
        yield op("map", va=start + slot * K4, pa=pa, size=K4, flags=rw)
    yield op("check", full=False)

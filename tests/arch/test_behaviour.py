"""Behaviours beyond single mappings: the crate's known defects fixed on purpose, walk order and
limits, copy_from sharing, reclamation of empty tables, TLB-flush hooks."""

from __future__ import annotations

import pytest

from arch import AlreadyMapped, MappingFlags, NotMapped, PageSize, RamImage, TlbFlush
from arch.aarch64 import A64PageTable
from arch.loongarch64 import LA64PageTable
from arch.riscv import Sv39PageTable, Sv48PageTable
from arch.x86_64 import X64MetaData, X64PageTable

from .conftest import TableKind

RW = MappingFlags.READ | MappingFlags.WRITE
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G


def test_aarch64_hole_is_never_a_block() -> None:
    """Crate defect: an all-zero descriptor counts as a block, so protect/remap of a hole write a
    1G block. Here they fail and write nothing."""
    ram = RamImage(0, 1 << 20)
    table = A64PageTable(ram)
    table.map(0x4000_0000, 0x8000_0000, K4, RW)
    for action in (lambda: table.protect(0x8000_0000, RW), lambda: table.remap(0x8000_0000, 0, RW)):
        with pytest.raises(NotMapped):
            action()
    assert table.mappings().vaddr.tolist() == [0x4000_0000]


def test_loongarch_walk_descends_flagless_directories() -> None:
    """Crate defect: directory entries have no present bit, so the crate's walk never descends."""
    table = LA64PageTable(RamImage(0, 1 << 20))
    table.map(0x1234_5000, 0x8000, K4, RW)
    seen: list[tuple[int, int]] = []
    table.walk(pre=lambda level, index, vaddr, entry: seen.append((level, vaddr)))
    assert seen == [(0, 0), (1, 0), (2, 0x1220_0000), (3, 0x1234_5000)]


def test_loongarch_invalid_tables_chain_ends_in_an_invalid_pte() -> None:
    ram = RamImage(0, 1 << 20)
    table = LA64PageTable(ram, invalid_tables=True)
    entry_pa = table.root_paddr
    for level in range(3):  # follow the empty chain from the root like lddir would
        entry = ram.read_word(entry_pa)
        assert entry == table.empty_entry(level) and entry not in (0, table.root_paddr)
        entry_pa = table.codec.paddr(entry) + 8 * 17
    assert ram.read_word(entry_pa) == 0  # the PTE level is all zero: V = 0
    table.map(0x40_0000, 0x9000, K4, RW)
    table.unmap(0x40_0000, free_empty_tables=True)
    assert table.table_frames() == ram.allocated_frames() and len(ram.allocated_frames()) == 4


def test_walk_order_limit_and_canonical_addresses() -> None:
    table = X64PageTable(RamImage(0, 1 << 20))
    high = 0xFFFF_8000_0000_0000
    for va in (0x1000, 0x2000, 0x3000, high):
        table.map(va, 0x5000, K4, RW)
    pre: list[tuple[int, int]] = []
    post: list[tuple[int, int]] = []
    table.walk(pre=lambda lv, i, va, e: pre.append((lv, va)), post=lambda lv, i, va, e: post.append((lv, va)))
    assert pre[:4] == [(0, 0), (1, 0), (2, 0), (3, 0x1000)] and (0, high) in pre
    assert post[3] == (2, 0) and post[-1] == (0, high)  # post runs after the subtree
    limited: list[int] = []
    table.walk(limit=1, pre=lambda lv, i, va, e: limited.append(va) if lv == 3 else None)
    assert limited == [0x1000]  # at most one entry per table, as in the crate


def test_empty_tables_block_huge_mappings_unless_reclaimed() -> None:
    ram = RamImage(0, 1 << 20)
    table = Sv48PageTable(ram)
    table.map(0x4000_0000, 0x8000_0000, K4, RW)
    table.unmap(0x4000_0000)
    with pytest.raises(AlreadyMapped):  # crate behaviour: the empty leaf table stays
        table.map(0x4000_0000, 0x8000_0000, M2, RW)
    table.map(0x4000_0000, 0x8000_0000, K4, RW)
    table.unmap(0x4000_0000, free_empty_tables=True)
    assert ram.allocated_frames() == [table.root_paddr]
    table.map(0x4000_0000, 0x8000_0000, G1, RW)
    table.map_region(0x8000_0000, 0x8000_0000, 4 * M2, RW, allow_huge=False)
    table.unmap_region(0x8000_0000, 4 * M2, free_empty_tables=True)
    assert len(ram.allocated_frames()) == 2  # root and the table holding the 1G page


def test_copy_from_shares_and_never_frees_borrowed_tables() -> None:
    ram = RamImage(0, 1 << 20)
    kernel = Sv39PageTable(ram)
    kernel.map(0xFFFF_FFC0_0000_0000, 0x8000_0000, K4, RW)
    user = Sv39PageTable(ram)
    user.map(0xFFFF_FFC0_0000_0000, 0x9000_0000, K4, RW)  # replaced by the copy
    user.map(0x1000, 0xA000_0000, K4, RW)
    user.copy_from(kernel, 0xFFFF_FFC0_0000_0000, G1).flush()
    assert user.query(0xFFFF_FFC0_0000_0000) == (0x8000_0000, RW, K4)
    kernel_frames = set(kernel.table_frames())
    assert not kernel_frames & set(user.table_frames())
    user.free()
    assert set(ram.allocated_frames()) == kernel_frames  # the kernel's tables survive
    kernel.free()
    assert ram.allocated_frames() == []


def test_flush_records_call_the_metadata_hook() -> None:
    flushed: list[int | None] = []

    class Recording(X64MetaData):
        def flush_tlb(self, vaddr: int | None) -> None:
            flushed.append(vaddr)

    table = X64PageTable(RamImage(0, 1 << 20), metadata=Recording())
    record = table.map(0x1000, 0x2000, K4, RW)
    assert isinstance(record, TlbFlush)
    record.flush()
    table.map(0x3000, 0x4000, K4, RW).ignore()
    table.protect(0x1000, MappingFlags.READ)[1].flush()
    table.unmap(0x1000).flush()
    table.map_region(0x10_0000, 0, 2 * K4, RW).flush()
    assert flushed == [0x1000, 0x1000, 0x1000, None]


def test_context_manager_frees(kind: TableKind) -> None:
    ram = RamImage(0, 1 << 20)
    with kind.make(ram) as table:
        table.map(kind.low, 0x8000, K4, RW)
    assert ram.allocated_frames() == []


def test_map_region_choice_matches_the_crate_step_by_step() -> None:
    """1G, then 2M, then 4K where the VA, PA and remaining size allow (the crate's loop)."""
    table = X64PageTable(RamImage(0, 1 << 20))
    va, pa = G1 - M2 - K4, 3 * G1 - M2 - K4
    length = K4 + M2 + G1 + M2 + K4
    table.map_region(va, pa, length, RW, allow_huge=True)
    sizes = [(int(v), int(s)) for v, s in zip(table.mappings().vaddr, table.mappings().size, strict=True)]
    assert sizes == [(va, K4), (G1 - M2, M2), (G1, G1), (2 * G1, M2), (2 * G1 + M2, K4)]


def test_map_region_with_a_function_of_the_address() -> None:
    table = X64PageTable(RamImage(0, 1 << 20))
    table.map_region(0x20_0000, lambda va: 0x4000_0000 + (va ^ 0x1000), 4 * K4, RW)
    assert [table.query(0x20_0000 + i * K4)[0] for i in range(4)] == [
        0x4020_1000,
        0x4020_0000,
        0x4020_3000,
        0x4020_2000,
    ]

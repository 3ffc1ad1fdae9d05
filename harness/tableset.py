"""The page tables of one translation regime: one table, or (AArch64) one per VA range, each
handling the virtual addresses it translates. Scenario operations and batch queries go through
this so the rest of the harness never cares how many roots there are."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arch import InvalidAddress, MappingList, PageTable64, QueryBatch, WalkBatch
from arch.memory import U64


class TableSet:
    """Tables by virtual address range; `roots` gives the mailbox's root0 and root1."""

    def __init__(self, tables: Sequence[PageTable64], roots: tuple[int, int] | None = None) -> None:
        if not tables:
            raise ValueError("a table set needs at least one table")
        self.tables = list(tables)
        first = self.tables[0].root_paddr
        self.roots = roots if roots is not None else (first, self.tables[-1].root_paddr)

    @property
    def primary(self) -> PageTable64:
        """The first table (its geometry is shared by all of them)."""
        return self.tables[0]

    def table_for(self, vaddr: int) -> PageTable64:
        """The table that translates `vaddr`."""
        for table in self.tables:
            if table.metadata.vaddr_is_valid(vaddr):
                return table
        raise InvalidAddress(
            f"virtual address {vaddr:#x} is translated by no table: "
            + "; ".join(t.metadata.describe_va_rule() for t in self.tables)
        )

    def owner_index(self, vaddrs: U64) -> np.ndarray:
        """Per address, the index of its table, or -1 when none translates it."""
        owner = np.full(len(vaddrs), -1, dtype=np.int8)
        for index, table in reversed(list(enumerate(self.tables))):
            owner[table.metadata.vaddrs_valid(vaddrs)] = index
        return owner

    def walk_many(self, vaddrs: U64) -> WalkBatch:
        """Walks from each address's own table, merged into one batch."""
        if len(self.tables) == 1:
            return self.primary.walk_many(vaddrs)
        owner = self.owner_index(vaddrs)
        merged: WalkBatch | None = None
        for index, table in enumerate(self.tables):
            part = table.walk_many(vaddrs)
            if merged is None:
                merged = part
                continue
            mine = owner == index
            merged.entries[:, mine] = part.entries[:, mine]
            merged.entry_paddrs[:, mine] = part.entry_paddrs[:, mine]
            merged.leaf_level[mine] = part.leaf_level[mine]
            merged.valid[mine] = part.valid[mine]
        assert merged is not None
        return merged

    def query_walk(self, walk: WalkBatch) -> QueryBatch:
        """The query results of a (merged) walk; the tables share one geometry and codec."""
        return self.primary.query_walk(walk)

    def query_many(self, vaddrs: U64) -> QueryBatch:
        """Batch query, each address answered by its own table."""
        if len(self.tables) == 1:
            return self.primary.query_many(vaddrs)
        owner = self.owner_index(vaddrs)
        parts = [table.query_many(vaddrs) for table in self.tables]
        first = parts[0]
        for index, part in enumerate(parts[1:], start=1):
            mine = owner == index
            for mine_array, source in zip(first, part, strict=True):
                mine_array[mine] = source[mine]
        return first

    def mappings(self) -> MappingList:
        """Every present leaf of every table."""
        lists = [table.mappings() for table in self.tables]
        return MappingList(
            *(
                np.concatenate(column)
                for column in zip(*[(m.vaddr, m.paddr, m.flags, m.size) for m in lists], strict=True)
            )
        )

    def free(self) -> None:
        """Free every table."""
        for table in self.tables:
            table.free()

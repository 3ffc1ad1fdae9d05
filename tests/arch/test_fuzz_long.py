"""Library integrity under long fuzzing (issue 8): the stateful model test of test_stateful.py
run for many operations per table type, with invariants cheap enough to check after every one.

After every operation:
- the RAM image holds exactly the tables reachable from the root (walked here, independently of
  the library's table_frames()), plus the table's own helper frames: no frame is leaked, none is
  reachable twice (shared), none is foreign; their number is what the model predicts;
- an operation the model predicts to fail raises exactly that error and leaves every byte of RAM
  and the frame allocator as they were (the whole image is compared, so a stray write anywhere
  is caught, not only in the table's frames).
Every FULL_EVERY operations, and at the end of each run, the table's full mapping list must equal
the model's, and free() must return every frame.

Size: PTCHECK_FUZZ_STEPS operations per table type (default 1,000; CI 10,000; the issue's long run
is 100,000: `PTCHECK_FUZZ_STEPS=100000 pytest tests/arch/test_fuzz_long.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, rule

from arch import InvalidFlags, MappedToHugePage, MappingFlags, PageSize, PagingError

from .conftest import TABLE_KINDS, TableKind
from .flag_rules import encodable, expected_round_trip
from .test_stateful import K4, Model, Page, TableMachine

STEPS = int(os.environ.get("PTCHECK_FUZZ_STEPS", "1000"))
STEPS_PER_RUN = 50  # hypothesis' stateful_step_count: operations on one table before a new one
# Runs per hypothesis round: hypothesis remembers every run of a round (about 0.25 MiB each,
# measured), so a long fuzz is split into rounds of bounded memory.
RUNS_PER_ROUND = 200
FULL_EVERY = 25  # operations between two comparisons of the whole mapping list with the model


@cache
def round_trip(arch: str, flags: MappingFlags) -> MappingFlags:
    """flag_rules.expected_round_trip, memoised: 64 flag values per architecture."""
    return expected_round_trip(arch, flags)


@dataclass
class Tally:
    """Operations checked so far, over all runs of one test."""

    operations: int = 0


class LongTableMachine(TableMachine):
    """TableMachine with the per-step invariants of the module docstring; counts its steps."""

    tally = Tally()  # each test sets its own

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.since_full = 0

    # The base class's invariants compare the whole mapping list and a batch query with the
    # model after every step (O(pages) in Python). Undecorated overrides are no invariants.
    def mappings_match_model(self) -> None:
        pass

    def batch_query_matches_model(self) -> None:
        pass

    def frames_are_exactly_the_tables(self) -> None:
        pass

    def expect(self, error: type[PagingError] | None, action: Callable[[], object], model: Model | None) -> object:
        """Run `action`: it must raise exactly `error`, changing no byte of RAM and nothing in the
        frame allocator, or succeed, after which the model moves on."""
        assert self.ram is not None
        if error is None:
            result = action()
            assert model is not None
            self.model = model
            return result
        memory, allocator = self.ram.words.copy(), bytes(self.ram._used)
        with pytest.raises(error):
            action()
        assert np.array_equal(self.ram.words, memory), f"a failed operation ({error.__name__}) wrote to RAM"
        assert bytes(self.ram._used) == allocator, f"a failed operation ({error.__name__}) kept or freed frames"
        return None

    @rule(data=st.data())
    def protect_region(self, data: st.DataObject) -> None:
        """The base rule with the same draws and predictions, but a model that visits the pages
        in the region instead of every 4K step of it (a 1G region is 262,144 steps)."""
        va = self.address(data)
        length = data.draw(st.sampled_from([K4, 2 * K4, 0x20_0000, 0x40_0000, 1 << 30]))
        flags = self.flags(data)
        model = self.model.copy()
        error: type[PagingError] | None = None if encodable(self.arch, flags) else InvalidFlags
        end = va + length
        covering = self.model.covering(va)
        starts = sorted(base for base in self.model.pages if va <= base < end)
        if error is None and covering is not None and covering[0] != va:
            error = MappedToHugePage  # the region starts inside a huge page
        for base in starts if error is None else ():
            page = model.pages[base]
            if base + page.size > end:
                error = MappedToHugePage  # ... or ends inside one
                break
            model.pages[base] = Page(page.pa, flags, page.size)
        self.expect(error, lambda: self.pt.protect_region(va, length, flags), model)

    @invariant()
    def tables_are_exactly_the_allocated_frames(self) -> None:
        if self.ram is None:
            return
        reachable = self.reachable_tables()
        assert len(reachable) == len(set(reachable)), "a table is reachable twice (a shared frame)"
        owned = sorted(reachable + self.pt._extra_frames)
        assert owned == self.ram.allocated_frames(), "leaked or foreign frames"
        assert len(reachable) == 1 + len(self.model.tables), "not the tables the model predicts"
        if self.checks:  # the first check follows the table's creation, not an operation
            self.tally.operations += 1
        self.checks += 1
        self.since_full += 1
        if self.since_full >= FULL_EVERY:
            self.since_full = 0
            self.check_all_mappings()

    def reachable_tables(self) -> list[int]:
        """Every table frame reachable from the root: an entry at a level above the leaves that is
        not empty, not a huge page and has a non-zero address is a table pointer (the crate's
        `next_table`); a table's non-empty entries are found with one numpy comparison."""
        assert self.ram is not None
        codec, last = self.pt.codec, self.pt.levels - 1
        found = [self.pt.root_paddr]
        frontier = [(self.pt.root_paddr, 0)]
        while frontier:
            table, level = frontier.pop()
            if level == last:
                continue
            words = self.ram.read_words(table, 512)
            for entry in words[words != np.uint64(self.pt.empty_entry(level))].tolist():
                if not codec.is_huge(entry) and codec.paddr(entry) != 0:
                    found.append(codec.paddr(entry))
                    frontier.append((codec.paddr(entry), level + 1))
        return found

    def check_all_mappings(self) -> None:
        listed = self.pt.mappings()
        got = {
            int(v): (int(p), MappingFlags(int(f)), PageSize(int(s)))
            for v, p, f, s in zip(listed.vaddr, listed.paddr, listed.flags, listed.size, strict=True)
        }
        want = {va: (page.pa, round_trip(self.arch, page.flags), page.size) for va, page in self.model.pages.items()}
        assert got == want, "the mapping list differs from the model"

    def teardown(self) -> None:
        if self.ram is not None:
            self.check_all_mappings()
        super().teardown()


@pytest.mark.slow
@pytest.mark.parametrize("kind", TABLE_KINDS, ids=[kind.name for kind in TABLE_KINDS])
def test_long_fuzz(kind: TableKind) -> None:
    tally = Tally()
    runs = 0
    while tally.operations < STEPS:
        runs += 1  # hypothesis settings apply once per class: one class per round
        machine = type(f"Long_{kind.name}_{runs}", (LongTableMachine,), {"kind": kind, "tally": tally})
        settings(
            max_examples=min(RUNS_PER_ROUND, max(1, (STEPS - tally.operations) // STEPS_PER_RUN)),
            stateful_step_count=STEPS_PER_RUN,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(machine)
        machine.TestCase().runTest()

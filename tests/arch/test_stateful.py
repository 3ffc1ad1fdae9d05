"""Every table type against a plain dict model (hypothesis stateful testing).

The model knows only pages (base VA -> PA, flags, size) and which intermediate tables exist
(tables are created on the way down and never freed). It predicts each operation's outcome —
including which error — by the crate's rules applied one page at a time. Invariants after every
step: the table's full mapping list equals the model's, the RAM image's allocated frames are
exactly the table's frames, and a failed operation changed no byte of RAM and no frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from arch import (
    AlreadyMapped,
    InvalidFlags,
    MappedToHugePage,
    MappingFlags,
    NoMemory,
    NotAligned,
    NotMapped,
    PageSize,
    PagingError,
    RamImage,
)

from .conftest import TABLE_KINDS, TableKind
from .flag_rules import arch_of, encodable, expected_round_trip

SIZES = [PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G]
K4 = 0x1000


@dataclass
class Page:
    pa: int
    flags: MappingFlags
    size: PageSize


@dataclass
class Model:
    """Pages by base VA, and the tables that exist, keyed (table level, va >> parent span)."""

    shifts: list[int]
    pages: dict[int, Page] = field(default_factory=dict)
    tables: set[tuple[int, int]] = field(default_factory=set)

    def copy(self) -> Model:
        return Model(self.shifts, dict(self.pages), set(self.tables))

    def level_of(self, size: PageSize) -> int:
        return len(self.shifts) - 1 - SIZES.index(size)

    def covering(self, va: int) -> tuple[int, Page] | None:
        for size in SIZES:
            base = va & ~(size - 1)
            page = self.pages.get(base)
            if page is not None and page.size == size:
                return base, page
        return None

    def missing_tables(self, va: int, level: int) -> list[tuple[int, int]]:
        keys = [(lv, va >> self.shifts[lv - 1]) for lv in range(1, level + 1)]
        return [key for key in keys if key not in self.tables]

    def map(self, va: int, pa: int, size: PageSize, flags: MappingFlags, free_frames: list[int]) -> None:
        """One crate `map` step; raises the error the crate's rules give."""
        level = self.level_of(size)
        found = self.covering(va)
        if found is not None and found[1].size > size:
            raise MappedToHugePage
        if va in self.pages or (level + 1, va >> self.shifts[level]) in self.tables:
            raise AlreadyMapped
        missing = self.missing_tables(va, level)
        if len(missing) > free_frames[0]:
            raise NoMemory
        free_frames[0] -= len(missing)
        self.tables.update(missing)
        self.pages[va] = Page(pa & ~(size - 1), flags, size)


class TableMachine(RuleBasedStateMachine):
    kind: TableKind

    def __init__(self) -> None:
        super().__init__()
        self.ram: RamImage | None = None

    @initialize(frames=st.sampled_from([24, 96, 1024]))
    def setup(self, frames: int) -> None:
        self.ram = RamImage(0, frames * K4)
        self.pt = self.kind.make(self.ram)
        self.arch = arch_of(self.kind.name)
        self.model = Model([12 + 9 * (self.pt.levels - 1 - lv) for lv in range(self.pt.levels)])

    def teardown(self) -> None:
        if self.ram is not None:
            self.pt.free()
            assert self.ram.allocated_frames() == [], "free() must return every frame"

    # -- helpers -----------------------------------------------------------------------------
    def snapshot(self) -> tuple[list[int], bytes]:
        """The allocated frames and their contents (free frames' contents are not the table's)."""
        assert self.ram is not None
        frames = self.ram.allocated_frames()
        return frames, b"".join(self.ram.read_words(f, 512).tobytes() for f in frames)

    def expect(self, error: type[PagingError] | None, action, model: Model | None) -> object:
        """Run `action`; it must raise exactly `error` (leaving RAM untouched) or succeed."""
        before = self.snapshot()
        if error is not None:
            with pytest.raises(error):
                action()
            assert self.snapshot() == before, f"failed {error.__name__} changed the table"
            return None
        result = action()
        assert model is not None
        self.model = model
        return result

    def free_frames(self) -> list[int]:
        assert self.ram is not None
        return [self.ram.free_frames]

    # -- strategies --------------------------------------------------------------------------
    def address(self, data: st.DataObject) -> int:
        region = data.draw(st.sampled_from([self.kind.low, self.kind.high]))
        granule = data.draw(st.sampled_from(SIZES))
        count = {PageSize.SIZE_4K: 1024, PageSize.SIZE_2M: 1024, PageSize.SIZE_1G: 4}[granule]
        return region + data.draw(st.integers(0, count - 1)) * granule

    def flags(self, data: st.DataObject) -> MappingFlags:
        return MappingFlags(data.draw(st.integers(0, 63)))

    # -- rules -------------------------------------------------------------------------------
    @rule(data=st.data())
    def map(self, data: st.DataObject) -> None:
        va = self.address(data)
        size = data.draw(st.sampled_from(SIZES))
        pa = data.draw(st.integers(0, (1 << 32) - 1)) & ~(K4 - 1)
        flags = self.flags(data)
        model = self.model.copy()
        error: type[PagingError] | None = None
        if va % size:
            error = NotAligned
        elif not encodable(self.arch, flags):
            error = InvalidFlags
        else:
            try:
                model.map(va, pa, size, flags, self.free_frames())
            except PagingError as exc:
                error = type(exc)
        self.expect(error, lambda: self.pt.map(va, pa, size, flags), model)

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        va = self.address(data) + data.draw(st.sampled_from([0, 8, K4 - 8]))
        found = self.model.covering(va)
        model = self.model.copy()
        if found is None:
            self.expect(NotMapped, lambda: self.pt.unmap(va), None)
            return
        base, page = found
        del model.pages[base]
        pa, flags, size = self.expect(None, lambda: self.pt.unmap(va), model)  # type: ignore[misc]
        assert (pa, size) == (page.pa, page.size)
        assert flags == expected_round_trip(self.arch, page.flags)

    @rule(data=st.data())
    def protect(self, data: st.DataObject) -> None:
        va = self.address(data)
        flags = self.flags(data)
        found = self.model.covering(va)
        model = self.model.copy()
        if found is None:
            self.expect(NotMapped, lambda: self.pt.protect(va, flags), None)
        elif not encodable(self.arch, flags):
            self.expect(InvalidFlags, lambda: self.pt.protect(va, flags), None)
        else:
            base, page = found
            model.pages[base] = Page(page.pa, flags, page.size)
            size, _ = self.expect(None, lambda: self.pt.protect(va, flags), model)  # type: ignore[misc]
            assert size == page.size

    @rule(data=st.data())
    def remap(self, data: st.DataObject) -> None:
        va = self.address(data)
        flags = self.flags(data)
        pa = data.draw(st.integers(0, (1 << 32) - 1)) & ~(K4 - 1)
        found = self.model.covering(va)
        model = self.model.copy()
        if found is None:
            self.expect(NotMapped, lambda: self.pt.remap(va, pa, flags), None)
        elif not encodable(self.arch, flags):
            self.expect(InvalidFlags, lambda: self.pt.remap(va, pa, flags), None)
        else:
            base, page = found
            model.pages[base] = Page(pa & ~(page.size - 1), flags, page.size)
            self.expect(None, lambda: self.pt.remap(va, pa, flags), model)

    @rule(data=st.data())
    def map_region(self, data: st.DataObject) -> None:
        va = self.address(data)
        allow_huge = data.draw(st.booleans())
        small = [K4, 3 * K4, 0x20_0000, 0x20_0000 + 5 * K4, 0x40_0000 - K4]
        length = data.draw(st.sampled_from(small + [0x4020_0000] if allow_huge else small))
        offsets = [0, K4, 0x20_0000, 1 << 30] if length < (1 << 30) else [0, 1 << 30]  # keep 1G runs huge
        pa = va % (1 << 30) + data.draw(st.sampled_from(offsets))
        flags = self.flags(data)
        model = self.model.copy()
        error: type[PagingError] | None = None
        if not encodable(self.arch, flags):
            error = InvalidFlags
        else:
            frames = self.free_frames()
            cur, end = va, va + length
            try:
                while cur < end:
                    target = pa + (cur - va)
                    size = PageSize.SIZE_4K
                    if allow_huge:
                        for big in (PageSize.SIZE_1G, PageSize.SIZE_2M):
                            if cur % big == 0 and target % big == 0 and end - cur >= big:
                                size = big
                                break
                    model.map(cur, target, size, flags, frames)
                    cur += size
            except PagingError as exc:
                error = type(exc)
        self.expect(error, lambda: self.pt.map_region(va, pa, length, flags, allow_huge), model)

    @rule(data=st.data())
    def unmap_region(self, data: st.DataObject) -> None:
        va = self.address(data)
        length = data.draw(st.sampled_from([K4, 2 * K4, 0x20_0000, 0x40_0000, 1 << 30]))
        model = self.model.copy()
        error: type[PagingError] | None = None
        cur, end = va, va + length
        while cur < end:
            found = model.covering(cur)
            if found is None:
                error = NotMapped
                break
            base, page = found
            if base != cur or base + page.size > end:
                error = MappedToHugePage
                break
            del model.pages[base]
            cur += page.size
        self.expect(error, lambda: self.pt.unmap_region(va, length), model)

    @rule(data=st.data())
    def protect_region(self, data: st.DataObject) -> None:
        va = self.address(data)
        length = data.draw(st.sampled_from([K4, 2 * K4, 0x20_0000, 0x40_0000, 1 << 30]))
        flags = self.flags(data)
        model = self.model.copy()
        error: type[PagingError] | None = None
        if not encodable(self.arch, flags):
            error = InvalidFlags
        cur, end = va, va + length
        while error is None and cur < end:
            found = model.covering(cur)
            if found is None:
                cur += K4
                continue
            base, page = found
            if base != cur or base + page.size > end:
                error = MappedToHugePage
                break
            model.pages[base] = Page(page.pa, flags, page.size)
            cur += page.size
        self.expect(error, lambda: self.pt.protect_region(va, length, flags), model)

    @rule(data=st.data())
    def query(self, data: st.DataObject) -> None:
        va = self.address(data) + data.draw(st.sampled_from([0, 8, K4 - 8, 0x1F_FFF8]))
        found = self.model.covering(va)
        if found is None:
            with pytest.raises(NotMapped):
                self.pt.query(va)
            return
        base, page = found
        assert self.pt.query(va) == (page.pa + (va - base), expected_round_trip(self.arch, page.flags), page.size)

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def mappings_match_model(self) -> None:
        if self.ram is None:
            return
        listed = self.pt.mappings()
        got = {
            int(v): (int(p), MappingFlags(int(f)), PageSize(int(s)))
            for v, p, f, s in zip(listed.vaddr, listed.paddr, listed.flags, listed.size, strict=True)
        }
        want = {
            va: (page.pa, expected_round_trip(self.arch, page.flags), page.size)
            for va, page in self.model.pages.items()
        }
        assert got == want

    @invariant()
    def batch_query_matches_model(self) -> None:
        if self.ram is None or not self.model.pages:
            return
        bases = np.array(sorted(self.model.pages), dtype=np.uint64)
        probes = np.concatenate([bases, bases + np.uint64(8), bases - np.uint64(K4)])
        pa, flags, size, mapped = self.pt.query_many(probes)
        for i, va in enumerate(probes.tolist()):
            found = self.model.covering(va)
            assert bool(mapped[i]) == (found is not None)
            if found is not None:
                base, page = found
                assert (int(pa[i]), int(size[i])) == (page.pa + va - base, page.size)
                assert MappingFlags(int(flags[i])) == expected_round_trip(self.arch, page.flags)

    @invariant()
    def frames_are_exactly_the_tables(self) -> None:
        if self.ram is None:
            return
        frames = self.pt.table_frames()
        assert len(frames) == len(set(frames)), "a frame is shared by two tables"
        assert frames == self.ram.allocated_frames(), "leaked or foreign frames"
        assert len(frames) == 1 + len(self.model.tables) + len(self.pt._extra_frames)


@pytest.mark.parametrize("kind", TABLE_KINDS, ids=[k.name for k in TABLE_KINDS])
def test_table_matches_model(kind: TableKind, hypothesis_profile_examples: int) -> None:
    machine = type(f"Machine_{kind.name}", (TableMachine,), {"kind": kind})
    settings(
        max_examples=hypothesis_profile_examples,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(machine)
    machine.TestCase().runTest()

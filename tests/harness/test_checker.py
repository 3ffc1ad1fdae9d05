"""The checker without QEMU: a simulated guest answers probes exactly as the library predicts
(a perfect MMU), then is sabotaged one way at a time; every sabotage must be caught, and known
deviations must be reported as such."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from arch import MappingFlags, PageSize, RamImage
from arch.permissions import FETCH, LOAD, STORE
from harness import mailbox as mb
from harness.checker import Checker, _alias_rounds
from harness.default_scenario import default_scenario
from harness.profile import Deviation, RamLayout
from harness.profiles import get_profile
from harness.runner import ScenarioRunner
from harness.session import BatchResult

MiB = 1 << 20
BASE = 0x8000_0000


def small_profile(**changes):  # type: ignore[no-untyped-def]
    """The riscv64 profile shrunk to 64 MiB of RAM so a bytearray can stand in for the guest."""
    profile = get_profile("riscv64")
    layout = RamLayout(
        arrays=(BASE + MiB, BASE + 9 * MiB),
        table_pool=(BASE + 9 * MiB, BASE + 25 * MiB),
        data_window=(BASE + 32 * MiB, BASE + 64 * MiB),
    )
    return dataclasses.replace(
        profile, ram_size=64 * MiB, layout=layout, sizes=(PageSize.SIZE_4K, PageSize.SIZE_2M), **changes
    )


class SimulatedGuest:
    """Answers batches from the library's own prediction; `sabotage(words, result)` may lie."""

    def __init__(self, profile, variant, version="10.0.2"):  # type: ignore[no-untyped-def]
        self.profile = profile
        self.variant = variant
        self.ram = RamImage(profile.ram_base, profile.ram_size, pool=profile.layout.table_pool)
        self.machine = SimpleNamespace(version=version, gdb=None)
        self.image = None
        self.capacity = 4096
        self.tables = None
        self.batches: list[np.ndarray] = []
        self.sabotage = None

    def run_batch(self, roots, words, options):  # type: ignore[no-untyped-def]
        self.batches.append(words.copy())
        vaddrs = words & ~np.uint64(7)
        access = (words & np.uint64(3)).astype(np.uint8)
        walk = self.tables.walk_many(vaddrs)
        query = self.tables.query_walk(walk)
        model = self.profile.model_for(self.variant)
        predicted = model.predict(self.tables.primary, walk, access, bool(options & 1), options)
        count = len(words)
        outcome = np.where(predicted.ok, mb.OUTCOME_OK, mb.OUTCOME_FAULT).astype(np.uint64)
        value = np.zeros(count, dtype=np.uint64)
        for i in np.flatnonzero(predicted.ok).tolist():
            pa = int(query.paddr[i]) & ~7
            if access[i] == LOAD:
                value[i] = self.ram.read_word(pa)
            elif access[i] == STORE:
                self.ram.write_word(pa, int(words[i]))
            else:
                value[i] = vaddrs[i]
        result = BatchResult(
            outcome,
            value,
            np.where(predicted.ok, 0, predicted.cause).astype(np.uint64),
            np.where(predicted.ok, 0, predicted.addr).astype(np.uint64),
        )
        if self.sabotage is not None:
            self.sabotage(words, result)
        return result


def setup(profile=None, random_pages=500):  # type: ignore[no-untyped-def]
    profile = profile or small_profile()
    variant = profile.variants["sv48"]
    guest = SimulatedGuest(profile, variant)
    runner = ScenarioRunner(profile, variant, guest)  # type: ignore[arg-type]
    guest.tables = runner.tables
    return profile, guest, runner


def test_a_perfect_mmu_gives_no_mismatch() -> None:
    profile, guest, runner = setup()
    stats = runner.run(default_scenario(profile, runner.tables, random_pages=500))
    assert stats.probes > 5000 and stats.mismatches == 0 and not stats.deviations


def lie_about(kind: int, field: str, change):  # type: ignore[no-untyped-def]
    """A sabotage changing `field` of the first probe of `kind` that completed or faulted."""
    state = {"done": False}

    def sabotage(words, result):  # type: ignore[no-untyped-def]
        if state["done"]:
            return
        for i in range(len(words)):
            if (
                int(words[i]) & 3 == kind
                and (field != "cause" or result.outcome[i] == mb.OUTCOME_FAULT)
                and (field == "cause" or result.outcome[i] == mb.OUTCOME_OK)
            ):
                getattr(result, field)[i] = change(getattr(result, field)[i])
                state["done"] = True
                return

    return sabotage


@pytest.mark.parametrize(
    "kind, field, change, reason",
    [
        (LOAD, "value", lambda v: v + np.uint64(1 << 32), "load read the word of physical"),
        (FETCH, "value", lambda v: v + np.uint64(8), "fetch trapped at a different address"),
        (LOAD, "outcome", lambda v: np.uint64(mb.OUTCOME_FAULT), "predicted to succeed, but faulted"),
        (LOAD, "cause", lambda v: v ^ np.uint64(2), "faulted with a different cause or address"),
    ],
)
def test_each_kind_of_lie_is_caught(kind, field, change, reason) -> None:  # type: ignore[no-untyped-def]
    profile, guest, runner = setup()
    runner.tables.primary.map(
        0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.EXECUTE
    )
    guest.sabotage = lie_about(kind, field, change)
    runner.checker.check(full=True)
    assert runner.stats.mismatches == 1
    assert runner.stats.kept[0].reason.startswith(reason)
    assert runner.stats.kept[0].walk, "a mismatch carries the library's walk"


def test_a_store_that_lands_elsewhere_is_caught() -> None:
    profile, guest, runner = setup()
    runner.tables.primary.map(
        0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.WRITE
    )

    def misdirect(words, result):  # type: ignore[no-untyped-def]
        for i in range(len(words)):
            if int(words[i]) & 3 == STORE and result.outcome[i] == mb.OUTCOME_OK:
                pa = profile.layout.data_window[0] + (int(words[i]) & 0xFF8)
                guest.ram.write_word(pa, 0)  # the store "went" somewhere else

    guest.sabotage = misdirect
    runner.checker.check(full=True)
    assert runner.stats.mismatches >= 1
    assert all(m.reason == "store did not land at the predicted physical address" for m in runner.stats.kept)


def test_known_deviation_is_reported_not_hidden() -> None:
    deviation = Deviation("test-lie", "loads lie", "test", ("10.0", ""), explains=lambda c: c.access == LOAD)
    profile, guest, runner = setup(small_profile(deviations=[deviation]))
    runner.tables.primary.map(0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ)
    guest.sabotage = lie_about(LOAD, "value", lambda v: v + np.uint64(1 << 32))
    runner.checker.check(full=True)
    assert runner.stats.mismatches == 0 and runner.stats.deviations["test-lie"] == 1


def test_deviation_outside_its_version_range_does_not_excuse() -> None:
    deviation = Deviation("old-bug", "loads lie", "test", ("7.2", "8.0"), explains=lambda c: c.access == LOAD)
    profile, guest, runner = setup(small_profile(deviations=[deviation]))
    runner.tables.primary.map(0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ)
    guest.sabotage = lie_about(LOAD, "value", lambda v: v + np.uint64(1 << 32))
    runner.checker.check(full=True)
    assert runner.stats.mismatches == 1 and not runner.stats.deviations


def test_unsafe_probes_are_never_sent_and_are_counted() -> None:
    deviation = Deviation("hangs", "fetches hang", "test", ("1.0", ""), unsafe=lambda c: c.access == FETCH)
    profile, guest, runner = setup(small_profile(deviations=[deviation]))
    runner.tables.primary.map(
        0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.EXECUTE
    )
    runner.checker.check(full=True)
    sent = np.concatenate(guest.batches)
    assert not np.any((sent & np.uint64(3)) == FETCH)
    assert runner.stats.skipped > 0 and runner.stats.deviations["hangs"] == runner.stats.skipped


def test_aliased_stores_go_to_separate_batches() -> None:
    profile, guest, runner = setup()
    pa = profile.layout.data_window[0]
    for i in range(4):  # four virtual pages, one physical frame
        runner.tables.primary.map(
            0x10_0000_0000 + i * 0x2000, pa, PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.WRITE
        )
    runner.checker.check(full=True)
    assert runner.stats.mismatches == 0
    for words in guest.batches:
        stores = words[(words & np.uint64(3)) == STORE] & ~np.uint64(7)
        mapped = runner.tables.query_many(stores).mapped
        offsets = stores[mapped] & np.uint64(0xFFF)  # same frame: same offset, same word
        assert len(np.unique(offsets)) == len(offsets), "two stores to one physical word in a batch"


def test_alias_rounds() -> None:
    rounds = _alias_rounds(np.array([5, 1, 5, 5, 2, 1], dtype=np.uint64))
    assert [r.tolist() for r in rounds] == [[0, 1, 4], [2, 5], [3]]
    assert _alias_rounds(np.array([], dtype=np.uint64)) == []


def test_mailbox_encodings() -> None:
    vaddrs = np.array([0x1000, 0xFFFF_FFC0_0000_0FF8], dtype=np.uint64)
    words = mb.probe_words(vaddrs, np.array([STORE, FETCH], dtype=np.uint8))
    assert words.tolist() == [0x1001, 0xFFFF_FFC0_0000_0FFA]
    tags = mb.tag_words(np.array([0x8C00_0FF8], dtype=np.uint64), 0x0010_0073)
    assert int(tags[0]) & 0xFFFF_FFFF == 0x0010_0073 and mb.tag_paddr(int(tags[0])) == 0x8C00_0FF8
    assert mb.MAGIC.to_bytes(8, "little") == b"PTPROBE1"
    assert mb.RESULT_DTYPE.itemsize == 32


def test_checker_needs_no_probe_in_reserved_ranges() -> None:
    profile, guest, runner = setup()
    checker: Checker = runner.checker
    checker.reserved = [(0x10_0000_0000, 0x10_0000_2000)]
    runner.tables.primary.map(0x10_0000_0000, profile.layout.data_window[0], PageSize.SIZE_4K, MappingFlags.READ)
    checker.check(full=True)
    sent = np.concatenate(guest.batches) & ~np.uint64(7)
    assert not np.any((sent >= np.uint64(0x10_0000_0000)) & (sent < np.uint64(0x10_0000_2000)))

"""LoongArch64 on QEMU: the permission model (arch/loongarch64/permissions.py) and the profile
(harness/profiles/loongarch64.py) against the real emulated MMU, in both TLB refill modes.

Every test runs once per variant on one guest per variant (module-scoped). Facts these tests
establish are listed in the profile's deviations; guests/loongarch64/README.md describes the
guest (options, causes, RAM layout).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import pytest

from arch import MappingFlags, PageSize
from arch.loongarch64 import LA64PageTable
from arch.loongarch64.permissions import LoongArchPermissions
from arch.memory import WORDS_PER_FRAME
from arch.permissions import FETCH, LOAD, STORE
from harness import mailbox as mb
from harness.checker import Checker
from harness.profile import version_key
from harness.profiles import get_profile
from harness.session import GuestError, GuestSession
from harness.tableset import TableSet

pytestmark = pytest.mark.arch("loongarch64")

PROFILE = get_profile("loongarch64")
R, W, X, U = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
COMBINATIONS = [MappingFlags(value) for value in range(1, 64)]  # every one is encodable (codec)
HALVES = (0x0000_2000_0000_0000, 0xFFFF_A000_0000_0000)  # legal, outside the DMW segments
DATA = PROFILE.layout.data_window[0]
FRAME_1G = 0xC000_0000  # the data window's 1 GiB-aligned frame (profile layout)
# ESTAT values (arch/loongarch64/permissions.py; manual 7.4.6)
PIL, PIS, PME, PNR, PNX, PPI = 0x10000, 0x20000, 0x40000, 0x50000, 0x60000, 0x70000
PLV0, PLV3 = 0, 1  # mailbox options bit 0
RPLV = 1 << 63


@pytest.fixture(scope="module", params=sorted(PROFILE.variants))
def session(request: pytest.FixtureRequest) -> Iterator[GuestSession]:
    """One guest per variant; pytest finishes one variant's tests before booting the next."""
    with GuestSession(PROFILE, PROFILE.variants[request.param]) as guest:
        print(f"\n{request.param}: QEMU {guest.machine.version}, boot to magic {guest.boot_seconds * 1000:.0f} ms")
        yield guest


@pytest.fixture
def tables(session: GuestSession) -> Iterator[TableSet]:
    """The variant's table set (safe mode: empty entries point to an all-invalid chain)."""
    assert session.ram is not None
    made = session.variant.make_tables(session.ram)
    yield made
    made.free()


def allowed_deviations(session: GuestSession) -> set[str]:
    """The deviation keys of the running QEMU and variant."""
    return {d.key for d in PROFILE.deviations if d.applies_to(session.machine.version, session.variant.name)}


def seen(checker: Checker) -> dict[str, int]:
    return {key: count for key, count in checker.stats.deviations.items() if count}


def run(session: GuestSession, roots: tuple[int, int], probes: list[tuple[int, int]], options: int) -> list[int]:
    """Run (va, kind) probes in one batch; per probe 0 when it completed, else the ESTAT cause."""
    vaddrs = np.array([va for va, _ in probes], dtype=np.uint64)
    kinds = np.array([kind for _, kind in probes], dtype=np.uint8)
    result = session.run_batch(roots, mb.probe_words(vaddrs, kinds), options)
    return [
        0 if outcome == mb.OUTCOME_OK else int(cause)
        for outcome, cause in zip(result.outcome, result.cause, strict=True)
    ]


def write_tags(session: GuestSession, paddrs: list[int]) -> None:
    assert session.ram is not None
    for pa in paddrs:
        session.ram.write_word(pa, int(mb.tag_words(np.array([pa], dtype=np.uint64), PROFILE.trap_instruction)[0]))


# -- (a) every flag combination at every size, both halves ----------------------------------------


def test_every_flag_combination(session: GuestSession, tables: TableSet) -> None:
    pt = tables.primary
    for half in HALVES:
        for index, flags in enumerate(COMBINATIONS):  # a hole after every page
            pt.map(half + index * 0x2000, DATA + index * 0x1000, K4, flags)
            pt.map(half + (1 << 39) + index * 0x40_0000, DATA + 0x20_0000 * (1 + index), M2, flags)
            pt.map(half + (2 << 39) + index * 0x8000_0000, FRAME_1G, G1, flags)
    checker = Checker(PROFILE, session.variant, session, tables)
    started = time.perf_counter()
    checker.check(full=True)
    elapsed = time.perf_counter() - started
    stats = checker.stats
    print(
        f"{session.variant.name}: {stats.pages} pages, {stats.probes} probes in {elapsed:.2f} s, "
        f"{stats.skipped} not sent, deviations {seen(checker)}"
    )
    assert stats.pages == 2 * 3 * len(COMBINATIONS)
    assert stats.mismatches == 0, "\n".join(map(str, stats.kept))
    assert set(seen(checker)) <= allowed_deviations(session)
    # what each refill mode must show (guest README, QEMU-NOTES; this profile's deviations)
    assert stats.deviations["fetch-pnx-ppi-livelock"] > 0 and stats.skipped > 0  # never sent, counted
    if session.variant.name == "hw-walk":
        assert stats.deviations["ldpte-drops-nr-nx-rplv"] > 0
    else:
        assert stats.deviations["pnr-before-ppi"] > 0 and stats.deviations["nr-after-fill"] > 0
    if version_key(session.machine.version) < version_key("10.0.4"):
        assert stats.deviations["ade-bits-63-48-only"] > 0


# -- (b) many random 4K pages, quick check ----------------------------------------------------------


def test_random_pages_quick_check(session: GuestSession, tables: TableSet) -> None:
    rng = np.random.default_rng(7)
    pages = 20_000
    slots = rng.choice(1 << 24, size=pages, replace=False)  # within 64 GiB of each half
    low, high = PROFILE.layout.data_window
    frames = low + rng.integers(0, (high - low) >> 12, size=pages) * 0x1000
    flags = rng.integers(1, 64, size=pages)
    pt = tables.primary
    for number, (slot, frame, flag) in enumerate(zip(slots.tolist(), frames.tolist(), flags.tolist(), strict=True)):
        pt.map(HALVES[number % 2] + (3 << 39) + slot * 0x1000, frame, K4, MappingFlags(flag))
    checker = Checker(PROFILE, session.variant, session, tables)
    started = time.perf_counter()
    checker.check(full=False, seed=3)
    elapsed = time.perf_counter() - started
    stats = checker.stats
    print(
        f"{session.variant.name}: quick check of {stats.pages} pages: {stats.probes} probes in {elapsed:.2f} s "
        f"({stats.probes / elapsed:,.0f}/s end to end, {stats.probes / stats.guest_seconds:,.0f}/s in the guest), "
        f"deviations {seen(checker)}"
    )
    assert stats.pages == pages
    assert stats.mismatches == 0, "\n".join(map(str, stats.kept))
    assert set(seen(checker)) <= allowed_deviations(session)


# -- (c) a wrong model is caught ----------------------------------------------------------------------


class IgnoresDirtyBit(LoongArchPermissions):
    """A deliberately wrong model: stores never raise PME."""

    def rules(self, leaf: np.ndarray, access: np.ndarray, plv: int) -> list[tuple[np.ndarray, int | np.ndarray]]:
        rules = super().rules(leaf, access, plv)
        return [(condition, cause) for condition, cause in rules if not (isinstance(cause, int) and cause == PME)]


def test_wrong_model_is_caught(session: GuestSession, tables: TableSet) -> None:
    for index, flags in enumerate((R, R | W, R | X | U, R | W | U)):
        tables.primary.map(HALVES[0] + index * 0x2000, DATA + index * 0x1000, K4, flags)
    wrong = dataclasses.replace(PROFILE, model_for=lambda variant: IgnoresDirtyBit())
    checker = Checker(wrong, session.variant, session, tables)
    checker.check(full=True)
    mismatches = checker.stats.kept
    assert checker.stats.mismatches > 0
    assert all(m.access == "store" and m.predicted_ok and m.observed_cause == PME for m in mismatches)


# -- (d) NR / NX / RPLV per refill mode, PLV0 and PLV3 -----------------------------------------------


def test_nr_and_rplv_reach_the_tlb_only_with_the_software_walk(session: GuestSession, tables: TableSet) -> None:
    pt = tables.primary
    base = HALVES[1]
    pages = {  # name: (flags, raw bits to add)
        "kernel-no-read": (W, 0),  # NR = 1, PLV0
        "user-no-read": (W | U, 0),  # NR = 1, PLV3
        "user-rplv": (R | W | U, RPLV),  # PLV3 only (5.4.2)
        "kernel-read-only": (R, 0),  # D = 0, PLV0
        "user-read-only": (R | U, 0),  # D = 0, PLV3
        "kernel-no-exec": (R | W, 0),  # NX = 1, PLV0
    }
    va = {}
    for index, (name, (flags, raw)) in enumerate(pages.items()):
        va[name] = base + index * 0x2000
        pt.map(va[name], DATA + index * 0x1000, K4, flags)
        if raw:
            entry = pt.walk_many([va[name]]).entry_paddrs[3, 0]
            pt.handler.write_word(int(entry), pt.handler.read_word(int(entry)) | raw)
    write_tags(session, [DATA + index * 0x1000 for index in range(len(pages))])
    probes = [
        (va["kernel-no-read"], LOAD, PLV0),
        (va["user-no-read"], LOAD, PLV3),
        (va["user-rplv"], LOAD, PLV0),
        (va["user-rplv"], STORE, PLV0),
        (va["user-rplv"], LOAD, PLV3),
        (va["kernel-read-only"], LOAD, PLV3),
        (va["kernel-read-only"], STORE, PLV0),
        (va["user-read-only"], STORE, PLV3),
    ]
    model = PROFILE.model_for(session.variant)
    architecture = [
        int(model.predict(pt, pt.walk_many([address]), np.array([kind]), options == PLV3, options).cause[0])
        for address, kind, options in probes
    ]
    # the manual's answers (5.4.3, 5.4.4): NR, RPLV, PLV and D are all enforced
    assert architecture == [PNR, PNR, PPI, PPI, 0, PPI, PME, PME]
    observed = [run(session, tables.roots, [(address, kind)], options)[0] for address, kind, options in probes]
    if session.variant.name == "sw-walk":
        assert observed == architecture  # the full entry reaches the TLB
    else:  # ldpte drops NR and RPLV: those probes complete; PLV and D still hold
        assert observed == [0, 0, 0, 0, 0, PPI, PME, PME]
    # NX: a PLV0 fetch of an NX page completes with ldpte (NX dropped), and is never sent with
    # the software walk, where it would raise PNX and livelock QEMU (the next test shows it)
    if session.variant.name == "hw-walk":
        assert run(session, tables.roots, [(va["kernel-no-exec"], FETCH)], PLV0) == [0]


def test_nx_reaches_the_tlb_with_the_software_walk() -> None:
    """The fetch the profile never sends (PNX): on its own short-lived guest, the software walk
    either raises PNX or livelocks QEMU (QEMU-NOTES); both show NX in the TLB."""
    variant = PROFILE.variants["sw-walk"]
    with GuestSession(PROFILE, variant, batch_timeout=2.0) as guest:
        assert guest.ram is not None
        made = variant.make_tables(guest.ram)
        made.primary.map(HALVES[0], DATA, K4, R | W)  # NX = 1
        write_tags(guest, [DATA])
        try:
            assert run(guest, made.roots, [(HALVES[0], FETCH)], PLV0) == [PNX]
            print("sw-walk: the NX fetch raised PNX")
        except GuestError as error:
            assert "did not finish a batch" in str(error)
            print("sw-walk: the NX fetch livelocked QEMU (killed)")


# -- the crate's zero directory entries walk physical page 0 -----------------------------------------


def test_zero_directory_entries_walk_physical_page_zero(session: GuestSession) -> None:
    assert session.ram is not None
    # a page at the very end of root slot 64: the next page's root slot is empty, so its walk
    # reads Dir2, Dir1 and PT entries from index 0 of whatever table an empty entry points to
    page = HALVES[0] + (1 << 39) - 0x1000
    hole = page + 0x1000
    crate = TableSet([LA64PageTable(session.ram, invalid_tables=False)])
    safe = session.variant.make_tables(session.ram)
    for table_set in (crate, safe):
        table_set.primary.map(page, DATA, K4, R | W)

    def quick_mismatches(table_set: TableSet) -> int:
        checker = Checker(PROFILE, session.variant, session, table_set)
        checker.check(full=False)  # loads of the page and of the hole after it
        return checker.stats.mismatches

    assert quick_mismatches(crate) == quick_mismatches(safe) == 0  # page 0 is zero: both fault
    # a fake 1 GiB huge entry at index 0 of physical page 0 (V, PLV3, coherent cached, H, P; D = 0
    # so nothing can write through it); the RAM file's offset 0 is physical 0 (profile docstring)
    fake = FRAME_1G | 0x1 | 0xC | 0x10 | 0x40 | 0x80
    ram_file = session.machine.ram
    try:
        ram_file[0:8] = fake.to_bytes(8, "little")
        write_tags(session, [FRAME_1G])
        assert quick_mismatches(crate) > 0  # the hole now translates through page 0
        assert quick_mismatches(safe) == 0  # the invalid chain never reads page 0
        # what the crate mode does is exactly what the hardware walk of page 0 gives
        words = np.zeros(WORDS_PER_FRAME, dtype=np.uint64)
        words[0] = fake
        walking_page_zero = LoongArchPermissions(page_zero=words)
        for table_set, expected in ((crate, [0, PME]), (safe, [PIL, PIS])):
            pt = table_set.primary
            predicted = walking_page_zero.predict(pt, pt.walk_many([hole, hole]), np.array([LOAD, STORE]), False, 0)
            assert [int(c) for c in predicted.cause] == expected
            assert run(session, table_set.roots, [(hole, LOAD), (hole, STORE)], PLV0) == expected
        load = mb.probe_words(np.array([hole], dtype=np.uint64), np.array([LOAD]))
        value = session.run_batch(crate.roots, load, PLV0).value
        assert mb.tag_paddr(int(value[0])) == FRAME_1G  # the load read the fake entry's frame
    finally:
        ram_file[0:8] = bytes(8)  # the guest's invariant: page 0 is zero (guest README)
        crate.free()
        safe.free()

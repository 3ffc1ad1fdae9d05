"""x86_64 on QEMU (4-level and 5-level paging): every flag combination the library encodes at 4K,
2M and 1G in both halves, with holes, under every option set (ring 0/3 x WP x NXE x SMEP x SMAP x
AC); 20,000 random pages; every combination of leaf and upper-level R/W, U/S and XD written by
hand into the PML5E/PML4E/PDPTE/PDE above 4K, 2M and 1G leaves; reserved bits; exact #PF error
codes; non-canonical addresses; 57-bit addresses; and deliberately wrong permission models are
caught. Deviations of QEMU from the SDM are allowed only as the profile's listed deviations."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from arch import MappingFlags, PageSize, WalkBatch
from arch.permissions import FETCH, LOAD, STORE, Prediction
from arch.table import PageTable64
from arch.x86_64.codec import PS, RW, US, XD, P
from arch.x86_64.permissions import OPTION_NXE, OPTION_SMAP, OPTION_SMEP, OPTION_WP, X64Permissions
from harness.checker import Checker, ProbeSet
from harness.profiles.x86_64 import DEVIATIONS, PHYS_BITS, edit_entry, x86_64_profile
from harness.session import GuestSession
from harness.tableset import TableSet

pytestmark = pytest.mark.arch("x86_64")
PROFILE = x86_64_profile()
R, W, X, U = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER
C = MappingFlags.UNCACHED
K4, M2, G1 = int(PageSize.SIZE_4K), int(PageSize.SIZE_2M), int(PageSize.SIZE_1G)
DATA_LOW = PROFILE.layout.data_window[0]
FRAME_1G = 0x4000_0000  # the one 1G-aligned frame in the data window
KNOWN_DEVIATIONS = {d.key for d in DEVIATIONS}
ACCESSES = np.array([LOAD, STORE, FETCH], dtype=np.uint8)
PF, GP = 14 << 32, 13 << 32


@pytest.fixture(scope="module")
def sessions() -> Iterator[dict[str, GuestSession]]:
    """One guest per paging mode, booted on first use, shared by the whole module."""
    running: dict[str, GuestSession] = {}
    try:
        yield running
        for session in running.values():
            assert session.power_off() in PROFILE.clean_exit_statuses
    finally:
        for session in running.values():
            session.close()


def session_for(sessions: dict[str, GuestSession], name: str) -> GuestSession:
    if name not in sessions:
        sessions[name] = GuestSession(PROFILE, PROFILE.variants[name])
    return sessions[name]


@pytest.fixture(params=list(PROFILE.variants))
def session(request: pytest.FixtureRequest, sessions: dict[str, GuestSession]) -> GuestSession:
    return session_for(sessions, request.param)


@pytest.fixture
def session4(sessions: dict[str, GuestSession]) -> GuestSession:
    return session_for(sessions, "4level")


def fresh_tables(session: GuestSession) -> TableSet:
    """New tables holding the guest's own identity mappings (installed before any walk, so probe
    walks see the upper-level tables those mappings create)."""
    assert session.ram is not None
    made = session.variant.make_tables(session.ram)
    for va, pa, size, flags in PROFILE.guest_mappings(session.image, PROFILE.option_sets(True)[0]):
        made.table_for(va).map_region(va, pa, size, flags, allow_huge=True)
    return made


@pytest.fixture
def tables(session: GuestSession) -> Iterator[TableSet]:
    made = fresh_tables(session)
    yield made
    made.free()


@pytest.fixture
def tables4(session4: GuestSession) -> Iterator[TableSet]:
    made = fresh_tables(session4)
    yield made
    made.free()


def assert_clean(checker: Checker) -> None:
    """No mismatch, and nothing explained away but the listed deviations."""
    assert checker.stats.mismatches == 0, "\n".join(map(str, checker.stats.kept[:5]))
    assert set(checker.stats.deviations) <= KNOWN_DEVIATIONS
    assert checker.stats.skipped == 0


def va_at(table: PageTable64, indexes: list[int]) -> int:
    """The canonical address whose walk uses these entry indexes from the root down."""
    raw = sum(index << (12 + 9 * (table.levels - 1 - level)) for level, index in enumerate(indexes))
    return table.metadata.canonical(raw)


# -- (a) every flag combination, every size, both halves -------------------------------------------
def map_every_combination(tables: TableSet) -> int:
    """All 63 flag sets at 4K and 2M, and the 16 distinct entries they encode to (READ is
    implicit, DEVICE and UNCACHED both give PCD|PWT) at 1G, in the low and the high half, each
    page followed by a hole of its size. Root entries 1 and 2 (low), and the first two of the
    high half, stay clear of the guest's own mappings under root entry 0."""
    table = tables.primary
    combos = [MappingFlags(value) for value in range(1, 64)]
    distinct = [
        R | (W if i & 1 else 0) | (X if i & 2 else 0) | (U if i & 4 else 0) | (C if i & 8 else 0) for i in range(16)
    ]
    pages = 0
    for first_root in (1, 256):
        base = va_at(table, [first_root])
        for size, flags_list, offset in ((K4, combos, 0), (M2, combos, G1), (G1, distinct, table.entry_span(0))):
            for index, flags in enumerate(flags_list):
                pa = FRAME_1G if size == G1 else DATA_LOW + index * size + (0x100_0000 if size == M2 else 0)
                table.map(base + offset + 2 * index * size, pa, PageSize(size), flags)
                pages += 1
    return pages


def test_every_flag_combination_at_every_size_in_both_halves(session: GuestSession, tables: TableSet) -> None:
    pages = map_every_combination(tables)
    checker = Checker(PROFILE, session.variant, session, tables)
    checker.check(full=True)
    assert_clean(checker)
    assert checker.stats.pages == pages
    assert len(PROFILE.option_sets(True)) == 28
    # the probes met holes at every level, both halves, and non-canonical addresses
    probes, _ = checker.probe_set(True, np.random.default_rng(0))
    walk = tables.walk_many(probes.vaddrs)
    predicted = checker.model.predict(tables.primary, walk, probes.access, False, OPTION_WP | OPTION_NXE)
    assert {int(c) for c in predicted.cause[~predicted.ok]} == {PF, PF | 0x2, PF | 0x10, PF | 0x3, PF | 0x11, GP}
    ring0 = checker.model.predict(tables.primary, walk, probes.access, False, 0)
    assert {int(c) for c in ring0.cause[~ring0.ok]} == {PF, PF | 0x2, PF | 0x9, PF | 0xB, GP}  # XD reserved
    high = probes.vaddrs >= np.uint64(1 << 63)
    assert (high & predicted.ok).any() and (high & ~predicted.ok).any()


# -- (b) 20,000 random pages ----------------------------------------------------------------------
def test_20000_random_pages_quick_check(session4: GuestSession, tables4: TableSet) -> None:
    rng = np.random.default_rng(20_000)
    slots = rng.permutation(1 << 22)[:20_000]  # 4K slots of a 16 GiB range
    frames = rng.integers(0, (FRAME_1G - DATA_LOW) // K4, len(slots))
    table = tables4.primary
    for slot, frame in zip(slots.tolist(), frames.tolist(), strict=True):
        table.map(0x40_0000_0000 + slot * K4, DATA_LOW + frame * K4, PageSize.SIZE_4K, R | W)
    checker = Checker(PROFILE, session4.variant, session4, tables4)
    checker.check(full=False, seed=3)
    assert checker.stats.pages >= 20_000 and checker.stats.probes >= 20_000
    assert_clean(checker)


# -- (d) upper-level R/W, U/S and XD written by hand ----------------------------------------------
EDITS = [(RW if c & 1 else 0, US if c & 2 else 0, XD if c & 4 else 0) for c in range(8)]


def leaf_flags(index: int) -> MappingFlags:
    """The 8 leaf combinations of WRITE, USER and EXECUTE (READ is implicit on x86)."""
    return R | (W if index & 1 else 0) | (U if index & 2 else 0) | (X if index & 4 else 0)


def upper_level_groups(levels: int) -> list[tuple[int, int, list[int]]]:
    """(leaf size, level edited, root path) of each group: every level above each leaf size, in
    root entries the guest does not use, some in the high half (root index >= 256)."""
    leaf_level = {K4: levels - 1, M2: levels - 2, G1: levels - 3}
    groups = []
    root = 8
    for size in (K4, M2, G1):
        for level in range(leaf_level[size]):
            root += 8
            groups.append((size, level, [root + (256 if size == G1 else 0)]))
    return groups


def map_upper_level_combinations(tables: TableSet) -> int:
    """For every group: 8 entries at the edited level (one per combination of cleared R/W,
    cleared U/S and set XD), each above the 8 leaf combinations of W/U/X; plus 8 walks whose
    edits are spread over three levels. Returns the page count."""
    table = tables.primary
    pages = 0
    frames = {K4: DATA_LOW, M2: DATA_LOW + 0x1000_0000}  # below FRAME_1G, which the 1G leaves share
    for size, level, root in upper_level_groups(table.levels):
        for combo, (clear_rw, clear_us, set_xd) in enumerate(EDITS):
            path = [root[0] + combo] if level == 0 else root + [0] * (level - 1) + [combo]
            base = va_at(table, path)
            for leaf in range(8):
                pa = FRAME_1G if size == G1 else frames[size]
                if size != G1:
                    frames[size] += size
                table.map(base + 2 * leaf * size, pa, PageSize(size), leaf_flags(leaf))
                pages += 1
            edit_entry(tables, base, level, set_bits=set_xd, clear_bits=clear_rw | clear_us)
    spread_root = 200
    for combo, (clear_rw, clear_us, set_xd) in enumerate(EDITS):  # R/W at the root, U/S below, XD below that
        base = va_at(table, [spread_root + combo])
        for leaf in range(8):
            table.map(
                base + 2 * leaf * K4,
                DATA_LOW + 0x3000_0000 + (combo * 8 + leaf) * K4,
                PageSize.SIZE_4K,
                leaf_flags(leaf),
            )
            pages += 1
        for level, (clear, set_) in enumerate(((clear_rw, 0), (clear_us, 0), (0, set_xd))):
            edit_entry(tables, base, level, set_bits=set_, clear_bits=clear)
    return pages


def test_every_leaf_and_upper_level_combination(session: GuestSession, tables: TableSet) -> None:
    """The library writes every table entry P|R/W|U/S; here R/W and U/S are cleared and XD set by
    hand in the entries above the leaves, at every level, and the model must still predict every
    load, store and fetch under every option set (SDM 4.6.1: the rights of every entry count)."""
    pages = map_upper_level_combinations(tables)
    checker = Checker(PROFILE, session.variant, session, tables)
    checker.check(full=True)
    assert_clean(checker)
    assert checker.stats.pages == pages
    # the edits changed many predictions compared with the leaf alone
    probes, _ = checker.probe_set(True, np.random.default_rng(0))
    walk = tables.walk_many(probes.vaddrs)
    for user, options in ((True, 1 | OPTION_NXE), (False, OPTION_WP | OPTION_SMAP)):
        honest = checker.model.predict(tables.primary, walk, probes.access, user, options)
        blind = LeafOnly(PHYS_BITS).predict(tables.primary, walk, probes.access, user, options)
        assert (honest.ok != blind.ok).sum() > 100


# -- reserved bits and odd entries ----------------------------------------------------------------
def hand_written_entries(tables: TableSet, undo: list[tuple[int, int]]) -> list[tuple[int, bool]]:
    """Entries the library never writes, one probed address each, and whether a load through it
    (NXE = 1) must fault on a reserved bit (SDM 4.5 tables 4-14 to 4-20). The original entries
    are appended to `undo`."""
    table = tables.primary
    last = table.levels - 1
    probes: list[tuple[int, bool]] = []
    next_root = iter(range(300, 400))

    def patch(va: int, level: int, set_bits: int = 0, clear_bits: int = 0) -> None:
        undo.append(edit_entry(tables, va, level, set_bits=set_bits, clear_bits=clear_bits))

    def page(rsvd: bool, size: int = K4) -> int:
        va = va_at(table, [next(next_root)])
        pa = FRAME_1G if size == G1 else DATA_LOW + 0x2000_0000 + len(probes) * M2
        table.map(va, pa, PageSize(size), R | W | X | U)
        probes.append((va + 8 * len(probes), rsvd))
        return va

    patch(page(True), last, set_bits=1 << PHYS_BITS)  # bit 40: beyond MAXPHYADDR
    patch(page(True), last, set_bits=1 << 51)
    patch(page(True), 0, set_bits=1 << PHYS_BITS)  # in the root entry
    patch(page(True), last - 1, set_bits=(1 << 50) | XD)
    patch(page(True), 0, set_bits=PS)  # PS in the PML4E (the PML5E under 5-level paging)
    if table.levels == 5:
        patch(page(True), 1, set_bits=PS)  # PS in the PML4E under 5-level paging
    patch(page(True, M2), last - 1, set_bits=1 << 13)  # 2M page: bits 20:13 reserved
    patch(page(True, M2), last - 1, set_bits=1 << 20)
    patch(page(True, G1), last - 2, set_bits=1 << 29)  # 1G page: bits 29:13 reserved
    patch(page(False, G1), last - 2, set_bits=XD)  # reserved only without NXE
    patch(page(False), last, set_bits=(0x7FF << 52) | (0xF << 8) | (1 << 7))  # ignored (PK: PKE = 0), PAT
    patch(page(False), last - 1, set_bits=(0x7FF << 52) | (0xF << 8) | (1 << 6))  # ignored in a PDE
    patch(page(False), last - 2, clear_bits=P)  # a PDPTE that still points at a table
    patch(page(False), last, clear_bits=P, set_bits=(1 << 45) | XD | PS)  # garbage, not present
    return probes


class ExplicitChecker(Checker):
    """Probes exactly the given addresses, with a load, a store and a fetch each."""

    def __init__(self, *args: object, vaddrs: list[int], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.vaddrs = np.array(vaddrs, dtype=np.uint64)

    def probe_set(self, full: bool, rng: np.random.Generator) -> tuple[ProbeSet, int]:
        return ProbeSet(np.tile(self.vaddrs, 3), np.repeat(ACCESSES, len(self.vaddrs))), len(self.vaddrs)


def test_reserved_bits_and_hand_written_entries(session: GuestSession, tables: TableSet) -> None:
    undo: list[tuple[int, int]] = []
    entries = hand_written_entries(tables, undo)
    vaddrs = [va for va, _ in entries]
    checker = ExplicitChecker(PROFILE, session.variant, session, tables, vaddrs=vaddrs)
    try:
        walk = tables.walk_many(checker.vaddrs)
        loads = checker.model.predict(tables.primary, walk, np.zeros(len(vaddrs), np.uint8), False, OPTION_NXE)
        assert ((loads.cause & np.uint64(8)) != 0).tolist() == [rsvd for _, rsvd in entries]
        checker.check(full=True)
    finally:
        for address, previous in reversed(undo):
            tables.primary.handler.write_word(address, previous)
    assert_clean(checker)
    assert checker.stats.probes == 3 * len(vaddrs) * len(PROFILE.option_sets(True))


# -- exact error codes, non-canonical addresses, 57-bit addresses ---------------------------------
def test_exact_fault_codes(session: GuestSession, tables: TableSet) -> None:
    """Hand-computed causes (SDM 4.7, 6.15), probed directly: what the guest records must be these,
    and the model must say the same (a reserved-bit fault is compared without P when the running
    QEMU has that listed deviation)."""
    table = tables.primary
    base = va_at(table, [64])
    table.map(base, DATA_LOW, PageSize.SIZE_4K, R)  # supervisor, read-only, XD
    table.map(base + 0x2000, DATA_LOW + K4, PageSize.SIZE_4K, R | U | X)  # user, read-only
    xd_page = va_at(table, [65])
    table.map(xd_page, DATA_LOW + 2 * K4, PageSize.SIZE_4K, R | W | X | U)
    edit_entry(tables, xd_page, table.levels - 2, set_bits=XD)  # XD in the PDE above it
    hole = base + 0x4000
    non_canonical = 1 << (table.metadata.VA_MAX_BITS - 1)
    wp, nxe, smep, smap = OPTION_WP, OPTION_NXE, OPTION_SMEP, OPTION_SMAP
    cases = [  # (options, va, access, cause)
        (wp | nxe, hole, LOAD, PF | 0x0),
        (wp | nxe, hole, STORE, PF | 0x2),
        (wp | nxe, hole, FETCH, PF | 0x10),
        (0, hole, FETCH, PF | 0x0),  # I/D only with NXE or SMEP
        (wp | nxe, base, STORE, PF | 0x3),
        (nxe, base, STORE, 0),  # WP = 0: supervisor writes go through
        (nxe, base, FETCH, PF | 0x11),
        (0, base, FETCH, PF | 0x9),  # XD reserved without NXE
        (smap, base + 0x2000, LOAD, PF | 0x1),
        (smap | wp, base + 0x2000, STORE, PF | 0x3),
        (smep, base + 0x2000, FETCH, PF | 0x11),
        (nxe, xd_page, FETCH, PF | 0x11),
        (0, xd_page, LOAD, PF | 0x9),
        (0, xd_page, STORE, PF | 0xB),
        (1 | nxe, base, LOAD, PF | 0x5),
        (1 | nxe, base, STORE, PF | 0x7),
        (1 | nxe, base, FETCH, PF | 0x15),
        (1 | nxe, base + 0x2000, STORE, PF | 0x7),
        (1 | nxe, xd_page, FETCH, PF | 0x15),
        (1 | nxe, hole, LOAD, PF | 0x4),
        (1 | nxe, hole, STORE, PF | 0x6),
        (1 | nxe, hole, FETCH, PF | 0x14),
        (1, xd_page, LOAD, PF | 0xD),
        (0, non_canonical, LOAD, GP),
        (1, non_canonical, STORE, GP),
        (nxe, non_canonical, FETCH, GP),
    ]
    ram = session.ram
    assert ram is not None
    for pa in (DATA_LOW, DATA_LOW + K4, DATA_LOW + 2 * K4):  # tags where fetches may land
        ram.write_word(pa, 0xCCCC_CCCC | (pa >> 3) << 32)
    rsvd_deviation = DEVIATIONS[0].applies_to(session.machine.version, session.variant.name)
    gp_deviation = DEVIATIONS[1].applies_to(session.machine.version, session.variant.name)
    model = X64Permissions(PHYS_BITS)
    for options, va, access, cause in cases:
        install_guest_mappings(session, tables, user=bool(options & 1))
        result = session.run_batch(tables.roots, np.array([va | access], dtype=np.uint64), options)
        walk = tables.walk_many(np.array([va], dtype=np.uint64))
        predicted = model.predict(table, walk, np.array([access], dtype=np.uint8), bool(options & 1), options)
        assert int(predicted.cause[0]) == cause, (hex(va), access, options)
        observed = int(result.cause[0])
        if rsvd_deviation and cause & 0x8:
            observed |= 0x1
        assert observed == cause, (hex(va), access, options, hex(int(result.cause[0])))
        addr = int(result.addr[0])
        if cause == GP:
            assert addr == (va if gp_deviation else 0)
        else:
            assert addr == (va if cause else 0)
        assert int(result.outcome[0]) == (1 if cause == 0 else 2)


def install_guest_mappings(session: GuestSession, tables: TableSet, user: bool) -> None:
    """The guest's pages with U/S = the probe privilege (what Checker does per option set)."""
    option_set = next(o for o in PROFILE.option_sets(True) if o.user == user)
    for va, pa, size, flags in PROFILE.guest_mappings(session.image, option_set):
        tables.primary.unmap_region(va, size)
        tables.primary.map_region(va, pa, size, flags, allow_huge=True)


def test_57_bit_addresses(sessions: dict[str, GuestSession]) -> None:
    """5-level paging translates addresses above 2^47 (and 2^55), both halves; the same
    addresses are non-canonical under 4-level paging (SDM 4.5.1)."""
    session = session_for(sessions, "5level")
    made = fresh_tables(session)
    try:
        lows = [1 << 47, 1 << 48, 0x00AB_CDEF_0000_0000, 0x00FF_FFFF_FFFF_F000]
        highs = [0xFF00_0000_0000_0000, 0xFF80_0000_0000_0000]
        for index, va in enumerate(lows + highs):
            made.primary.map(va, DATA_LOW + index * K4, PageSize.SIZE_4K, R | W | (U if index % 2 else 0))
        made.primary.map(0x0040_0000_0000_0000, FRAME_1G, PageSize.SIZE_1G, R | X)
        checker = Checker(PROFILE, session.variant, session, made)
        checker.check(full=True)
        assert_clean(checker)
        assert checker.stats.pages == len(lows + highs) + 1
        four = PROFILE.variants["4level"].make_tables(session.ram)  # type: ignore[arg-type]
        assert not four.primary.metadata.vaddrs_valid(np.array(lows[1:] + highs, dtype=np.uint64)).any()
        four.free()
    finally:
        made.free()


# -- (c) wrong models are caught ------------------------------------------------------------------
def upper_entries_forced(table: PageTable64, walk: WalkBatch, set_bits: int, clear_bits: int) -> WalkBatch:
    """`walk` with bits set and cleared in every present entry above each leaf."""
    entries = walk.entries.copy()
    for level in range(table.levels - 1):
        upper = (level < walk.leaf_level) & ((entries[level] & np.uint64(P)) != 0)
        entries[level, upper] = (entries[level, upper] | np.uint64(set_bits)) & ~np.uint64(clear_bits)
    return WalkBatch(walk.vaddrs, entries, walk.entry_paddrs, walk.leaf_level, walk.valid)


class LeafOnly(X64Permissions):
    """Wrong on purpose: reads R/W, U/S and XD from the leaf only, as the library's flags do (every
    upper entry is taken as P|R/W|U/S without XD)."""

    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        return super().predict(table, upper_entries_forced(table, walk, RW | US, XD), access, user, options)


class IgnoresUpperUserBit(X64Permissions):
    """Wrong on purpose: a user-mode address needs U/S = 1 in the leaf only."""

    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        return super().predict(table, upper_entries_forced(table, walk, US, 0), access, user, options)


class WriteProtectAlways(X64Permissions):
    """Wrong on purpose: supervisor writes respect R/W as if CR0.WP were always 1."""

    @staticmethod
    def allowed(access, user, options, writable, user_page, no_fetch):  # type: ignore[no-untyped-def]
        return X64Permissions.allowed(access, user, options | OPTION_WP, writable, user_page, no_fetch)


@pytest.mark.parametrize("wrong", [IgnoresUpperUserBit, WriteProtectAlways, LeafOnly])
def test_wrong_permission_model_is_caught(session4: GuestSession, tables4: TableSet, wrong: type) -> None:
    map_upper_level_combinations(tables4)
    checker = Checker(PROFILE, session4.variant, session4, tables4)
    checker.model = wrong(PHYS_BITS)
    checker.check(full=True)
    assert checker.stats.mismatches > 0
    if wrong is WriteProtectAlways:
        assert {m.option_set for m in checker.stats.kept} <= {
            o.name for o in PROFILE.option_sets(True) if not o.bits & (OPTION_WP | 1)
        }

"""The x86_64 permission model against cases worked out by hand from the Intel SDM Vol. 3A:
4.5 "4-Level Paging and 5-Level Paging" (canonical addresses, entry formats and reserved bits of
tables 4-14 to 4-20), 4.6.1 "Determination of Access Rights" (R/W, U/S and XD over every entry of
the walk, CR0.WP, IA32_EFER.NXE, CR4.SMEP, CR4.SMAP, EFLAGS.AC), 4.7 "Page-Fault Exceptions" (the
error code and CR2) and 6.15 (#GP(0) for non-canonical addresses). No QEMU."""

from __future__ import annotations

import numpy as np
import pytest

from arch import MappingFlags, PageSize, RamImage, WalkBatch
from arch.permissions import FETCH, LOAD, STORE
from arch.x86_64 import X64PageTable, X64PageTable5
from arch.x86_64.codec import PS, RW, US, XD, P
from arch.x86_64.permissions import (
    GP_CR2,
    OPTION_AC,
    OPTION_NXE,
    OPTION_SMAP,
    OPTION_SMEP,
    OPTION_WP,
    X64Permissions,
    describe_cause,
)

R, W, X, U = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER
VA = 0x0000_1234_5678_9000
PF = 14 << 32  # cause = vector << 32 | error code (guests/x86_64/README.md)
GP = 13 << 32
NXE, WP, SMEP, SMAP, AC = OPTION_NXE, OPTION_WP, OPTION_SMEP, OPTION_SMAP, OPTION_AC
TABLES = {4: X64PageTable(RamImage(0, 1 << 20)), 5: X64PageTable5(RamImage(0, 1 << 20))}


def entry(
    pa: int = 0x20_0000,
    *,
    rw: bool = True,
    us: bool = True,
    xd: bool = False,
    ps: bool = False,
    present: bool = True,
    extra: int = 0,
) -> int:
    """A paging-structure entry (tables 4-14 to 4-20): P bit 0, R/W 1, U/S 2, PS 7, XD 63."""
    bits = (P if present else 0) | (RW if rw else 0) | (US if us else 0) | (XD if xd else 0) | (PS if ps else 0)
    return pa | bits | extra


def walk_of(*entries: int, vaddr: int = VA, levels: int = 4) -> WalkBatch:
    """A one-address walk reading `entries` at levels 0, 1, ... (0 beyond, as walk_many leaves them)."""
    column = np.zeros((levels, 1), dtype=np.uint64)
    column[: len(entries), 0] = entries
    return WalkBatch(
        np.array([vaddr], dtype=np.uint64),
        column,
        np.zeros((levels, 1), dtype=np.uint64),
        np.array([len(entries) - 1], dtype=np.int8),
        np.array([True]),
    )


def outcome(
    walk: WalkBatch, access: int, user: bool = False, options: int = 0, model: X64Permissions | None = None
) -> int:
    """0 when the access is allowed, else the predicted cause; checks the fault address too."""
    levels = walk.entries.shape[0]
    model = model or X64Permissions(40)
    prediction = model.predict(TABLES[levels], walk, np.array([access], dtype=np.uint8), user, options | int(user))
    cause, addr = int(prediction.cause[0]), int(prediction.addr[0])
    if prediction.ok[0]:
        assert cause == 0 and addr == 0
    elif cause >> 32 == 14:
        assert addr == int(walk.vaddrs[0])  # #PF: CR2 = the linear address (4.7)
    else:
        assert addr == GP_CR2  # #GP: CR2 unchanged (4.7 names only #PF as loading CR2)
    return cause


def pte_walk(leaf: int = 0, *, upper: int | None = None, levels: int = 4) -> WalkBatch:
    """A walk to a 4K page: table entries P|R/W|U/S (the library's) or `upper`, then `leaf`."""
    table = entry(0x30_0000) if upper is None else upper
    return walk_of(*([table] * (levels - 1)), leaf or entry(), levels=levels)


# -- 4.7: the error code ------------------------------------------------------------------------
def test_not_present_error_codes() -> None:
    """P = 0 (no translation); W/R = 1 for a write; U/S = 1 at CPL 3; I/D = 1 for a fetch only when
    NXE = 1 or SMEP = 1 (4.7, "I/D flag")."""
    hole = walk_of(0)
    assert [outcome(hole, a) for a in (LOAD, STORE, FETCH)] == [PF | 0x0, PF | 0x2, PF | 0x0]
    assert outcome(hole, FETCH, options=NXE) == PF | 0x10
    assert outcome(hole, FETCH, options=SMEP) == PF | 0x10
    assert [outcome(hole, a, user=True, options=NXE) for a in (LOAD, STORE, FETCH)] == [PF | 0x4, PF | 0x6, PF | 0x14]
    assert outcome(hole, FETCH, user=True) == PF | 0x4


@pytest.mark.parametrize("levels", [4, 5])
def test_not_present_at_every_level(levels: int) -> None:
    """Any entry with P = 0 ends the walk without a translation (4.5.4/4.5.5: "If the P flag of
    the entry is 0 ... the translation fails"); its other bits do not matter."""
    for stop in range(levels):
        entries = [entry(0x30_0000)] * stop + [entry(0x30_0000, present=False, ps=True, xd=True, extra=1 << 45)]
        assert outcome(walk_of(*entries, levels=levels), STORE) == PF | 0x2


def test_reserved_bits_of_a_non_present_entry_are_not_checked() -> None:
    """4.7, RSVD: "reserved bits are not checked in a paging-structure entry whose P flag is 0"."""
    not_present = entry(present=False, xd=True, extra=0xF << 48)
    assert outcome(pte_walk(not_present), LOAD) == PF | 0x0  # NXE = 0: XD would be reserved


def test_a_non_present_table_entry_is_not_followed() -> None:
    """A PDE with P = 0 that still points at a page table: the translation fails there, whatever
    that table holds (4.5.4)."""
    walk = walk_of(entry(0x30_0000), entry(0x31_0000), entry(0x32_0000, present=False), entry())
    assert outcome(walk, LOAD) == PF | 0x0


# -- 4.5: reserved bits ---------------------------------------------------------------------------
def test_bits_beyond_maxphyaddr_are_reserved_at_every_level() -> None:
    """Tables 4-14 to 4-20: bits 51:M are reserved (M = MAXPHYADDR); RSVD faults set P (4.7)."""
    for level in range(4):
        entries = [entry(0x30_0000)] * 3 + [entry()]
        entries[level] |= 1 << 40
        assert outcome(walk_of(*entries), LOAD) == PF | 0x9
        assert outcome(walk_of(*entries), LOAD, model=X64Permissions(41)) == 0  # bit 40 is an address bit
        entries[level] ^= (1 << 40) | (1 << 51)
        assert outcome(walk_of(*entries), STORE, user=True) == PF | 0xF


def test_xd_is_reserved_without_nxe() -> None:
    """Tables 4-14 to 4-20, bit 63: "If IA32_EFER.NXE = 1, execute-disable ...; otherwise, reserved
    (must be 0)", at every level, for every access; I/D stays 0 (NXE = SMEP = 0)."""
    for level in range(4):
        entries = [entry(0x30_0000)] * 3 + [entry()]
        entries[level] |= XD
        walk = walk_of(*entries)
        assert [outcome(walk, a) for a in (LOAD, STORE, FETCH)] == [PF | 0x9, PF | 0xB, PF | 0x9]
        assert outcome(walk, FETCH, options=SMEP) == PF | 0x19
        assert outcome(walk, LOAD, options=NXE) == 0


@pytest.mark.parametrize("levels", [4, 5])
def test_ps_is_reserved_in_pml4e_and_pml5e(levels: int) -> None:
    """Tables 4-14 (PML5E) and 4-15 (PML4E): bit 7 is reserved (must be 0)."""
    for level in range(levels - 3):
        entries = [entry(0x30_0000)] * (levels - 1) + [entry()]
        entries[level] |= PS
        assert outcome(walk_of(*entries, levels=levels), LOAD, user=True) == PF | 0xD


def test_reserved_bits_of_huge_pages() -> None:
    """Table 4-17: a PDPTE with PS = 1 maps a 1-GByte page, bits 29:13 reserved, bit 12 is PAT;
    table 4-18: a PDE with PS = 1 maps a 2-MByte page, bits 20:13 reserved, bit 12 is PAT; table
    4-20: bit 7 of a PTE is PAT, not PS."""
    table = entry(0x30_0000)
    gib = walk_of(table, entry(0x4000_0000, ps=True))
    assert outcome(gib, LOAD) == 0
    for bit, cause in ((12, 0), (13, PF | 0x9), (29, PF | 0x9), (30, 0)):
        assert outcome(walk_of(table, entry(0x4000_0000, ps=True, extra=1 << bit)), LOAD) == cause, bit
    for bit, cause in ((12, 0), (13, PF | 0x9), (20, PF | 0x9), (21, 0)):
        assert outcome(walk_of(table, table, entry(0x20_0000, ps=True, extra=1 << bit)), LOAD) == cause, bit
    assert outcome(pte_walk(entry(extra=PS)), LOAD) == 0


def test_1g_pages_need_cpu_support() -> None:
    """Table 4-17 note: PS = 1 in a PDPTE is reserved unless CPUID 80000001H:EDX.Page1GB = 1."""
    gib = walk_of(entry(0x30_0000), entry(0x4000_0000, ps=True))
    assert outcome(gib, LOAD, model=X64Permissions(40, gbpages=False)) == PF | 0x9
    assert (
        outcome(
            walk_of(entry(0x30_0000), entry(0x30_0000), entry(ps=True)), LOAD, model=X64Permissions(40, gbpages=False)
        )
        == 0
    )


def test_ignored_bits_change_nothing() -> None:
    """Bits 62:52 (62:59 are protection keys, ignored with CR4.PKE = 0), 11:8 and A/D are ignored
    or informational (tables 4-15 to 4-20)."""
    ignored = (0x7FF << 52) | (0xF << 8) | (3 << 5)
    walk = walk_of(
        entry(0x30_0000, extra=ignored),
        entry(0x31_0000, extra=ignored),
        entry(0x32_0000, extra=ignored),
        entry(extra=ignored),
    )
    assert [outcome(walk, a, user=True, options=NXE) for a in (LOAD, STORE, FETCH)] == [0, 0, 0]


def test_the_first_failing_level_decides() -> None:
    """The walk reads one entry after the other (4.5.4): a reserved bit above a non-present entry
    gives RSVD; a non-present entry above a reserved bit hides it."""
    assert outcome(walk_of(entry(0x30_0000, xd=True), entry(0x31_0000, present=False)), LOAD) == PF | 0x9
    assert outcome(walk_of(entry(0x30_0000, present=False), entry(0x31_0000, xd=True)), LOAD) == PF | 0x0


# -- 4.6.1: access rights over the whole walk ----------------------------------------------------
@pytest.mark.parametrize("level", range(4))
def test_user_access_needs_us_at_every_level(level: int) -> None:
    """4.6.1: an address is a supervisor-mode address if U/S = 0 in at least one entry controlling
    the translation; user-mode accesses may not touch it (load 0x5, store 0x7, fetch 0x15)."""
    entries = [entry(0x30_0000)] * 3 + [entry()]
    entries[level] &= ~US
    walk = walk_of(*entries)
    assert [outcome(walk, a, user=True, options=NXE) for a in (LOAD, STORE, FETCH)] == [PF | 0x5, PF | 0x7, PF | 0x15]
    assert [outcome(walk, a, options=NXE | WP | SMEP | SMAP) for a in (LOAD, STORE, FETCH)] == [0, 0, 0]


@pytest.mark.parametrize("level", range(4))
def test_writes_need_rw_at_every_level(level: int) -> None:
    """4.6.1: a user-mode write needs R/W = 1 in every entry (whatever CR0.WP); a supervisor-mode
    write needs it only with CR0.WP = 1."""
    entries = [entry(0x30_0000)] * 3 + [entry()]
    entries[level] &= ~RW
    walk = walk_of(*entries)
    assert outcome(walk, STORE, user=True) == PF | 0x7
    assert outcome(walk, STORE, user=True, options=WP) == PF | 0x7
    assert outcome(walk, LOAD, user=True) == 0
    assert outcome(walk, STORE) == 0  # WP = 0: "data may be written to any ... address"
    assert outcome(walk, STORE, options=WP) == PF | 0x3


@pytest.mark.parametrize("level", range(4))
def test_xd_at_any_level_forbids_fetches(level: int) -> None:
    """4.6.1 with NXE = 1: instructions may not be fetched from an address whose translation has
    XD = 1 in any entry, at either privilege (ring 0: 0x11, ring 3: 0x15)."""
    entries = [entry(0x30_0000)] * 3 + [entry()]
    entries[level] |= XD
    walk = walk_of(*entries)
    assert outcome(walk, FETCH, options=NXE) == PF | 0x11
    assert outcome(walk, FETCH, user=True, options=NXE) == PF | 0x15
    assert outcome(walk, LOAD, user=True, options=NXE) == 0 and outcome(walk, STORE, options=NXE | WP) == 0


def test_supervisor_writes_to_user_pages() -> None:
    """4.6.1 "Data writes to user-mode addresses": WP = 0 and SMAP = 0 allow them whatever R/W;
    SMAP = 1 forbids them unless EFLAGS.AC = 1; WP = 1 additionally needs R/W = 1 everywhere."""
    read_only = pte_walk(entry(rw=False))
    assert outcome(read_only, STORE) == 0
    assert outcome(read_only, STORE, options=WP) == PF | 0x3
    assert outcome(read_only, STORE, options=SMAP) == PF | 0x3
    assert outcome(read_only, STORE, options=SMAP | AC) == 0
    assert outcome(read_only, STORE, options=SMAP | AC | WP) == PF | 0x3
    assert outcome(pte_walk(), STORE, options=SMAP | AC | WP) == 0


def test_smap() -> None:
    """4.6.1: with CR4.SMAP = 1 and EFLAGS.AC = 0, supervisor-mode data accesses to user-mode
    addresses fault (load 0x1, store 0x3); AC = 1 allows explicit ones; a supervisor-mode address
    (U/S = 0 at some level) is not affected; fetches are SMEP's business."""
    assert outcome(pte_walk(), LOAD, options=SMAP) == PF | 0x1
    assert outcome(pte_walk(), STORE, options=SMAP) == PF | 0x3
    assert outcome(pte_walk(), LOAD, options=SMAP | AC) == 0
    assert outcome(pte_walk(), FETCH, options=SMAP) == 0
    assert outcome(pte_walk(upper=entry(0x30_0000, us=False)), LOAD, options=SMAP) == 0
    assert outcome(pte_walk(), LOAD, user=True, options=SMAP) == 0  # user-mode accesses: no SMAP


def test_smep() -> None:
    """4.6.1: with CR4.SMEP = 1 supervisor-mode fetches from user-mode addresses fault, and I/D is
    set even with NXE = 0 (4.7); EFLAGS.AC does not matter; supervisor-mode addresses are fine."""
    assert outcome(pte_walk(), FETCH, options=SMEP) == PF | 0x11
    assert outcome(pte_walk(), FETCH, options=SMEP | SMAP | AC) == PF | 0x11
    assert outcome(pte_walk(entry(us=False)), FETCH, options=SMEP) == 0
    assert outcome(pte_walk(upper=entry(0x30_0000, us=False)), FETCH, options=SMEP) == 0
    assert outcome(pte_walk(), FETCH, user=True, options=SMEP) == 0


def test_user_accesses_ignore_supervisor_controls() -> None:
    """4.6.1 "User-mode access": neither WP nor SMEP nor SMAP nor AC appears in the rules."""
    every = WP | SMEP | SMAP | AC
    assert [outcome(pte_walk(), a, user=True, options=every) for a in (LOAD, STORE, FETCH)] == [0, 0, 0]
    read_only = pte_walk(entry(rw=False))
    assert outcome(read_only, STORE, user=True, options=every) == outcome(read_only, STORE, user=True) == PF | 0x7


# -- canonical addresses ---------------------------------------------------------------------------
def test_non_canonical_addresses_raise_gp() -> None:
    """4.5.1 / 6.15: bits 63:47 (4-level) or 63:56 (5-level) must equal; otherwise #GP(0), for
    loads, stores and fetches alike, at either privilege, before any entry is read."""
    for levels, bad, good in (
        (4, 0x0000_8000_0000_0000, 0xFFFF_8000_0000_0000),
        (5, 0x0100_0000_0000_0000, 0x0080_0000_0000_0000),
    ):
        path = [entry(0x30_0000)] * (levels - 1) + [entry()]
        for access in (LOAD, STORE, FETCH):
            for user in (False, True):
                assert outcome(walk_of(*path, vaddr=bad, levels=levels), access, user, NXE) == GP
        assert outcome(walk_of(*path, vaddr=good, levels=levels), LOAD) == 0
    assert outcome(walk_of(entry(), vaddr=0x0080_0000_0000_0000), LOAD) == GP  # 5-level only


# -- with tables the library built -----------------------------------------------------------------
@pytest.mark.parametrize("make", [X64PageTable, X64PageTable5])
def test_library_tables_follow_the_leaf_flags(make: type[X64PageTable]) -> None:
    """The library writes every table entry P|R/W|U/S, so the leaf alone decides (4.6.1): at ring
    3 a page allows load if USER, store if USER and WRITE, fetch if USER and EXECUTE (NXE = 1); at
    ring 0 with WP = 1, NXE = 1 a store needs WRITE and a fetch EXECUTE; 4K, 2M and 1G leaves."""
    ram = RamImage(0, 64 << 20)
    table = make(ram)
    vaddrs, flag_list = [], []
    index = 0
    for size in (PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G):
        for value in range(1, 64):
            va = (1 << 40) + index * 0x8000_0000
            table.map(va, 0x4000_0000, size, MappingFlags(value))
            vaddrs.append(va + int(size) - 8)
            flag_list.append(MappingFlags(value))
            index += 1
    va = np.repeat(np.array(vaddrs, dtype=np.uint64), 3)
    access = np.tile(np.array([LOAD, STORE, FETCH], dtype=np.uint8), len(vaddrs))
    walk = table.walk_many(va)
    model = X64Permissions(40)
    ring3 = model.predict(table, walk, access, True, 1 | NXE).ok.reshape(-1, 3)
    ring0 = model.predict(table, walk, access, False, WP | NXE).ok.reshape(-1, 3)
    for flags, user_ok, kernel_ok in zip(flag_list, ring3.tolist(), ring0.tolist(), strict=True):
        u = bool(flags & U)
        assert user_ok == [u, u and bool(flags & W), u and bool(flags & X)], flags
        assert kernel_ok == [True, bool(flags & W), bool(flags & X)], flags


def test_batches_are_independent_per_address() -> None:
    """One vectorised prediction over different walks equals the one-by-one predictions."""
    walks = [
        walk_of(0),
        pte_walk(),
        pte_walk(entry(rw=False, xd=True)),
        pte_walk(upper=entry(0x30_0000, us=False)),
        walk_of(entry(0x30_0000, extra=PS)),
        walk_of(entry(), vaddr=1 << 47),
    ]
    merged = WalkBatch(
        np.concatenate([w.vaddrs for w in walks]),
        np.concatenate([w.entries for w in walks], axis=1),
        np.concatenate([w.entry_paddrs for w in walks], axis=1),
        np.concatenate([w.leaf_level for w in walks]),
        np.concatenate([w.valid for w in walks]),
    )
    model = X64Permissions(40)
    for access in (LOAD, STORE, FETCH):
        for user, options in ((False, WP | NXE | SMAP), (True, 1 | NXE), (False, SMEP)):
            batch = model.predict(TABLES[4], merged, np.full(len(walks), access, dtype=np.uint8), user, options)
            single = [outcome(w, access, user, options & ~1) for w in walks]
            assert batch.cause.tolist() == single


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ValueError, match="option bits"):
        X64Permissions(40).predict(TABLES[4], pte_walk(), np.array([LOAD], dtype=np.uint8), False, 1 << 6)


def test_describe_cause() -> None:
    assert describe_cause(PF | 0x9) == "#PF error code 0x9 [P|RSVD] (reserved bit)"
    assert describe_cause(PF | 0x14) == "#PF error code 0x14 [U|I/D] (not present)"
    assert describe_cause(PF | 0x7) == "#PF error code 0x7 [P|W|U] (protection)"
    assert describe_cause(GP) == "#GP(0x0) (non-canonical address)"

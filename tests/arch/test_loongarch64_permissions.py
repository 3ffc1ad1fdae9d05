"""The LoongArch64 permission model against cases worked out by hand from the LoongArch Reference
Manual Vol. 1 v1.10 (section cited per case). Causes are ESTAT values as the guest records them:
Ecode << 16 | EsubCode << 22 (7.4.6): PIL 0x10000, PIS 0x20000, PIF 0x30000, PME 0x40000,
PNR 0x50000, PNX 0x60000, PPI 0x70000, ADEF 0x80000, ADEM 0x480000."""

from __future__ import annotations

import numpy as np
import pytest

from arch import MappingFlags, PageSize, RamImage
from arch.loongarch64 import LA64PageTable
from arch.loongarch64.permissions import LoongArchPermissions
from arch.permissions import FETCH, LOAD, STORE

R, W, X, U, DEV = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER, MappingFlags.DEVICE
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
OK = 0
PIL, PIS, PIF, PME, PNR, PNX, PPI, ADEF, ADEM = (
    0x10000,
    0x20000,
    0x30000,
    0x40000,
    0x50000,
    0x60000,
    0x70000,
    0x80000,
    0x480000,
)
VA = 0x0000_1234_5670_0000  # a legal low-half address (bits 63:47 all 0)
HIGH_VA = 0xFFFF_9000_0000_0000  # a legal high-half address (bits 63:47 all 1)
PA = 0x40_0000  # 4 MiB: 2M-aligned, inside the RAM image


@pytest.fixture
def ram() -> RamImage:
    # tables from 1 MiB up: physical page 0 belongs to no table and holds what a test writes
    return RamImage(0, 8 << 20, pool=(0x10_0000, 0x40_0000))


def outcome(
    pt: LA64PageTable,
    va: int,
    access: int,
    user: bool = False,
    model: LoongArchPermissions | None = None,
    options: int = 0,
) -> int:
    """The predicted cause of one probe (OK = 0 when it completes), checking the fault address."""
    model = model or LoongArchPermissions()
    prediction = model.predict(pt, pt.walk_many([va]), np.array([access]), user, options)
    if prediction.ok[0]:
        assert prediction.cause[0] == 0 and prediction.addr[0] == 0
        return OK
    assert prediction.addr[0] == va  # BADV = the faulting address (7.4.8; for fetches the PC)
    return int(prediction.cause[0])


def leaf_address(pt: LA64PageTable, va: int) -> int:
    """Where the entry translating `va` lies (the last entry of the library's walk)."""
    walk = pt.walk_many([va])
    return int(walk.entry_paddrs[walk.leaf_level[0], 0])


def patch(pt: LA64PageTable, va: int, set_bits: int = 0, clear_bits: int = 0) -> None:
    address = leaf_address(pt, va)
    pt.handler.write_word(address, (pt.handler.read_word(address) | set_bits) & ~clear_bits)


# -- 5.2: legal addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "va", [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000, 0x0001_0000_0000_0000, 0x5555_0000_0000_0000]
)
def test_illegal_address_raises_ade(ram: RamImage, va: int) -> None:
    # 5.2: bits [63:47] must all equal bit 47, else ADE; EsubCode 0 for fetch, 1 for load/store
    # (7.4.6). The first two agree in bits 63:48 (QEMU 10.0.2 walks them: a profile deviation).
    pt = LA64PageTable(ram, invalid_tables=True)
    assert outcome(pt, va, LOAD) == ADEM
    assert outcome(pt, va, STORE, user=True) == ADEM
    assert outcome(pt, va, FETCH) == ADEF


# -- 5.4.3 / 5.4.4: V, NX, PLV/RPLV, NR, D in that order -----------------------------------------


def test_kernel_read_write_page(ram: RamImage) -> None:
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R | W)  # V D, PLV 0, NX (no EXECUTE), NR = 0
    assert outcome(pt, VA, LOAD) == OK
    assert outcome(pt, VA + 0xFF8, STORE) == OK
    assert outcome(pt, VA, FETCH) == PNX  # 5.4.4: fetch with NX = 1
    # 5.4.2 PLV with RPLV = 0: PLV3 is less privileged than the page's PLV0 -> PPI
    assert outcome(pt, VA, LOAD, user=True) == PPI
    assert outcome(pt, VA, STORE, user=True) == PPI
    # 5.4.4 pseudocode tests NX before the privilege level (5.4.3's text says PNX needs a legal
    # privilege; the model follows the pseudocode)
    assert outcome(pt, VA, FETCH, user=True) == PNX


def test_user_page_is_open_to_both_levels(ram: RamImage) -> None:
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(HIGH_VA, PA, K4, R | W | X | U)  # PLV 3: accessible from PLV3 and from PLV0 (5.4.2)
    for user in (False, True):
        for access in (LOAD, STORE, FETCH):
            assert outcome(pt, HIGH_VA, access, user=user) == OK


def test_store_to_clean_page_raises_pme(ram: RamImage) -> None:
    # 5.4.3 / 5.4.4: a store with V = 1, legal privilege and D = 0 -> PME (CSR.MISC.DWPL = 0, 7.4.4)
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R | U)
    assert outcome(pt, VA, STORE) == PME
    assert outcome(pt, VA, STORE, user=True) == PME
    pt.map(VA + 0x1000, PA, K4, R)  # PLV0 page: for PLV3 the privilege check comes first
    assert outcome(pt, VA + 0x1000, STORE, user=True) == PPI


def test_not_readable_page(ram: RamImage) -> None:
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, W)  # NR = 1, D = 1, PLV 0
    assert outcome(pt, VA, LOAD) == PNR  # 5.4.3: load with NR = 1
    assert outcome(pt, VA, STORE) == OK  # NR restricts loads only (5.4.2)
    # 5.4.4 / 5.4.3: the privilege check precedes NR, so PLV3 sees PPI, not PNR
    assert outcome(pt, VA, LOAD, user=True) == PPI
    pt.map(VA + 0x1000, PA, K4, W | U)
    assert outcome(pt, VA + 0x1000, LOAD, user=True) == PNR


def test_restricted_privilege_level(ram: RamImage) -> None:
    # 5.4.2: RPLV = 1 admits only the page's own PLV (the codec never sets it: raw entries)
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R | W | U)
    patch(pt, VA, set_bits=1 << 63)
    assert outcome(pt, VA, LOAD) == PPI  # PLV0 != page PLV3
    assert outcome(pt, VA, STORE) == PPI
    assert outcome(pt, VA, LOAD, user=True) == OK
    pt.map(VA + 0x1000, PA, K4, R | W)
    patch(pt, VA + 0x1000, set_bits=1 << 63)
    assert outcome(pt, VA + 0x1000, LOAD) == OK  # PLV0 == page PLV0
    assert outcome(pt, VA + 0x1000, LOAD, user=True) == PPI


def test_invalid_entry_wins_over_everything(ram: RamImage) -> None:
    # 5.4.4: V = 0 is checked first: PIL / PIS / PIF by access kind, at any privilege
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R)
    patch(pt, VA, clear_bits=1)  # V = 0, everything else (NX, PLV0, D = 0) unchanged
    assert [outcome(pt, VA, a, user=True) for a in (LOAD, STORE, FETCH)] == [PIL, PIS, PIF]


def test_software_bits_and_memory_type_do_not_reach_the_tlb(ram: RamImage) -> None:
    # 5.4.5: P (bit 7) and W (bit 8) are not filled into the TLB (TLBRELO bits 11:7 read as 0,
    # 7.5.15); D alone is the write permission. MAT (DEVICE) selects the access type only (5.3).
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R | W | DEV)
    patch(pt, VA, clear_bits=(1 << 7) | (1 << 8))  # P = 0, W = 0, D still 1
    assert outcome(pt, VA, LOAD) == OK
    assert outcome(pt, VA, STORE) == OK
    pt.map(VA + 0x1000, PA, K4, R)
    patch(pt, VA + 0x1000, set_bits=1 << 8)  # W = 1 but D = 0
    assert outcome(pt, VA + 0x1000, STORE) == PME


def test_options_change_nothing(ram: RamImage) -> None:
    # guest README "options": bit 1 flushes the TLB per probe, bit 2 reads the PA back
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, W)
    assert [outcome(pt, VA, LOAD, options=o) for o in (0, 2, 4, 6)] == [PNR] * 4


# -- 5.4.5 / 4.2.5: huge entries and the walk -----------------------------------------------------


@pytest.mark.parametrize("size", [M2, G1])
def test_huge_entry_carries_the_permissions(ram: RamImage, size: PageSize) -> None:
    # 5.4.5: bit 6 of a directory entry marks a huge page; LDPTE splits it into two halves with
    # the entry's V, D, PLV, NR, NX, RPLV (4.2.5): both halves behave alike
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA & ~(int(size) - 1), 0x4000_0000, size, R | X | U)  # the PA is never read
    for offset in (0, int(size) // 2, int(size) - 8):
        va = (VA & ~(int(size) - 1)) + offset
        assert outcome(pt, va, LOAD, user=True) == OK
        assert outcome(pt, va, FETCH) == OK
        assert outcome(pt, va, STORE) == PME
    patch(pt, VA & ~(int(size) - 1), clear_bits=1)
    assert outcome(pt, VA & ~(int(size) - 1), FETCH) == PIF


def test_huge_entry_in_the_root(ram: RamImage) -> None:
    # 5.4.5 allows the huge flag in any directory: a root (Dir3) entry with bit 6 is a 512 GiB
    # page for the architecture (the library never writes one; QEMU's ldpte hangs on it)
    pt = LA64PageTable(ram, invalid_tables=True)
    index = VA >> 39
    pt.handler.write_word(pt.root_paddr + index * 8, 0x1 | 0x2 | 0x40 | (1 << 62))  # V D H NX, PLV0
    assert outcome(pt, VA, LOAD) == OK
    assert outcome(pt, VA + (1 << 38), STORE) == OK
    assert outcome(pt, VA, FETCH) == PNX
    assert outcome(pt, VA, LOAD, user=True) == PPI


def test_hole_in_safe_mode_ends_in_an_invalid_entry(ram: RamImage) -> None:
    # LDDIR follows any directory entry (4.2.5): with invalid_tables the empty slots lead through
    # the all-invalid chain to a zero PTE, V = 0 -> PIL/PIS/PIF whatever page 0 holds
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R)
    ram.write_word(8 * ((VA >> 21) & 511), 0x40 | 0x1 | 0x2 | 0xC)  # page 0 holds a huge leaf
    for hole in (VA + 0x1000, VA + (1 << 21), VA + (1 << 30), VA + (1 << 39)):
        assert [outcome(pt, hole, a) for a in (LOAD, STORE, FETCH)] == [PIL, PIS, PIF]


def test_hole_in_crate_mode_walks_physical_page_zero(ram: RamImage) -> None:
    # the crate's empty directory entry is 0: LDDIR reads physical page 0 as the next table
    # (4.2.5: no validity check), so page 0 decides the outcome of every hole
    pt = LA64PageTable(ram, invalid_tables=False)
    pt.map(VA, PA, K4, R)
    hole = VA + (1 << 39)  # empty root slot: Dir2 and Dir1 indexes of VA read page 0
    assert outcome(pt, hole, LOAD) == PIL  # page 0 all zero: zero PTE, V = 0
    dir1_index = (hole >> 21) & 511
    assert dir1_index != (hole >> 30) & 511  # the Dir2 read stays on a zero word
    ram.write_word(8 * dir1_index, 0x40 | 0x1 | 0x2 | 0xC)  # a 2 MiB huge leaf, V D PLV3
    assert outcome(pt, hole, LOAD, user=True) == OK  # the hole is mapped by page 0's content
    assert outcome(pt, hole, FETCH) == OK
    # a model told that page 0 is all zero (the harness's view) predicts the fault instead
    zeros = LoongArchPermissions(page_zero=np.zeros(512, dtype=np.uint64))
    assert outcome(pt, hole, LOAD, model=zeros) == PIL


def test_many_probes_at_once(ram: RamImage) -> None:
    # the vectorised path: one batch mixing every outcome above
    pt = LA64PageTable(ram, invalid_tables=True)
    pt.map(VA, PA, K4, R | W)
    pt.map(VA + 0x1000, PA, K4, W | U)
    vas = np.array([VA, VA, VA, VA + 0x1000, VA + 0x2000, 0x0000_8000_0000_0000], dtype=np.uint64)
    access = np.array([LOAD, STORE, FETCH, LOAD, LOAD, FETCH])
    prediction = LoongArchPermissions().predict(pt, pt.walk_many(vas), access, False, 0)
    assert prediction.ok.tolist() == [True, True, False, False, False, False]
    assert prediction.cause.tolist() == [OK, OK, PNX, PNR, PIL, ADEF]
    assert prediction.addr.tolist() == [0, 0, VA, VA + 0x1000, VA + 0x2000, 0x0000_8000_0000_0000]

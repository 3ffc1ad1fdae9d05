"""Entry encodings against values worked out by hand from the architecture manuals (and the
crate's documented choices), for every page size, in both halves of the address space."""

from __future__ import annotations

import itertools

import pytest

from arch import InvalidFlags, MappingFlags, PageSize, RamImage
from arch.aarch64 import MAIR_VALUE, A64PageTable
from arch.loongarch64 import PWCH_VALUE, PWCL_VALUE, LA64PageTable
from arch.riscv import Sv39PageTable, Sv48PageTable, Sv57PageTable
from arch.x86_64 import X64PageTable, X64PageTable5

from .flag_rules import encodable, expected_round_trip

R, W, X, U, D, C = (
    MappingFlags.READ,
    MappingFlags.WRITE,
    MappingFlags.EXECUTE,
    MappingFlags.USER,
    MappingFlags.DEVICE,
    MappingFlags.UNCACHED,
)
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
ALL_COMBINATIONS = [MappingFlags(v) for v in range(1, 64)]


def leaf_entry(pt, va: int) -> int:
    """The raw leaf entry that translates va, read straight from RAM by walking indexes."""
    table = pt.root_paddr
    for level in range(pt.levels):
        entry = pt.handler.read_word(table + pt.index(va, level) * 8)
        if pt.size_of_level(level) is not None and pt.codec.is_huge(entry) or level == pt.levels - 1:
            return entry
        table = pt.codec.paddr(entry)
    raise AssertionError


# (table factory, va, pa, size, flags, expected leaf entry, expected table entry bits)
CASES = [
    # x86 SDM Vol. 3A table 4-20: P=bit0, R/W=bit1, U/S=bit2, XD=bit63
    (X64PageTable, 0x40_0000_1000, 0x1234_5000, K4, R | W, 0x8000_0000_1234_5003, 0x7),
    (X64PageTable, 0xFFFF_8000_0000_0000, 0x1234_5000, K4, R | X | U, 0x0000_0000_1234_5005, 0x7),
    # table 4-18 (2M PDE): PS=bit7; DEVICE -> PCD|PWT (bits 4,3), crate's NO_CACHE|WRITE_THROUGH
    (X64PageTable, 0x40_0020_0000, 0x8020_0000, M2, R | W | D, 0x8000_0000_8020_009B, 0x7),
    # table 4-16 (1G PDPTE)
    (X64PageTable, 0xFFFF_FFFF_C000_0000, 0x4000_0000, G1, R | X, 0x0000_0000_4000_0081, 0x7),
    # 5-level: a VA above 2^47 (LA57, SDM 4.5.1)
    (X64PageTable5, 0x00FF_0000_0000_0000, 0x1000, K4, R, 0x8000_0000_0000_1001, 0x7),
    # Arm ARM D8.3: page = bits[1:0]=0b11, AttrIndx=1 (normal) <<2, SH=0b11 <<8, AF <<10,
    # AP[2] read-only <<7, PXN 53, UXN 54
    (A64PageTable, 0x4000_1000, 0x8000_5000, K4, R | W, 0x0060_0000_8000_5707, 0x3),
    (A64PageTable, 0x4000_2000, 0x8000_5000, K4, R, 0x0060_0000_8000_5787, 0x3),
    (A64PageTable, 0x4000_3000, 0x8000_5000, K4, R | X, 0x0040_0000_8000_5787, 0x3),
    # user RWX: AP[1] EL0 <<6 and PXN (user pages never run at EL1), no UXN
    (A64PageTable, 0x4000_4000, 0x8000_5000, K4, R | W | X | U, 0x0020_0000_8000_5747, 0x3),
    # block (bit 1 clear), Device-nGnRE = AttrIndx 0 with SH 00
    (A64PageTable, 0x4020_0000, 0x0900_0000 & ~0x1F_FFFF, M2, R | W | D, 0x0060_0000_0900_0401, 0x3),
    # non-cacheable normal: AttrIndx 2
    (A64PageTable, 0x8000_0000, 0xC000_0000, G1, R | C, 0x0060_0000_C000_0789, 0x3),
    # RISC-V privileged spec 12.4.1: V=0 R=1 W=2 X=3 U=4 A=6 D=7, PPN at bit 10 (= pa >> 2)
    (Sv39PageTable, 0x1000, 0x8020_3000, K4, R | W, (0x8020_3000 >> 2) | 0xC7, 0x1),
    (Sv39PageTable, 0xFFFF_FFC0_0000_0000, 0x8000_0000, G1, R | X | U, (0x8000_0000 >> 2) | 0xDB, 0x1),
    (Sv48PageTable, 0x0000_7F00_0020_0000, 0x8020_0000, M2, X, (0x8020_0000 >> 2) | 0xC9, 0x1),
    (Sv57PageTable, 0x00FF_0000_0000_0000, 0x8000_1000, K4, R | W | X | U, (0x8000_1000 >> 2) | 0xDF, 0x1),
    # LoongArch Vol. 1 5.4.5: V0 D1 PLV3:2 MAT5:4 (1 = coherent cached) G/huge6 P7 W8 NR61 NX62;
    # directory entries are the bare PA (crate)
    (LA64PageTable, 0x1000, 0x20_3000, K4, R | W, 0x4000_0000_0020_3193, 0x0),
    (LA64PageTable, 0xFFFF_8000_0020_0000, 0x40_0000, M2, R | X | U, 0x0000_0000_0040_00DD, 0x0),
    (LA64PageTable, 0x4000_0000, 0x4000_0000, G1, W | D, 0x6000_0000_4000_01C3, 0x0),
    (LA64PageTable, 0x2000, 0x5000, K4, R | C, 0x4000_0000_0000_50A1, 0x0),
]


@pytest.mark.parametrize("make, va, pa, size, flags, expected, table_bits", CASES)
def test_leaf_and_table_entries(make, va, pa, size, flags, expected, table_bits):
    pt = make(RamImage(0, 8 << 20))
    pt.map(va, pa, size, flags)
    assert hex(leaf_entry(pt, va)) == hex(expected)
    root_entry = pt.handler.read_word(pt.root_paddr + pt.index(va, 0) * 8)
    if pt.size_of_level(0) is None or not pt.codec.is_huge(root_entry):
        assert root_entry & ~pt.codec.PA_FIELD == table_bits
        assert pt.codec.paddr(root_entry) % 4096 == 0 and pt.codec.paddr(root_entry) != pt.root_paddr


ARCH_TABLES = [
    ("x86_64", X64PageTable),
    ("aarch64", A64PageTable),
    ("riscv", Sv39PageTable),
    ("riscv-svpbmt", lambda ram: Sv39PageTable(ram, svpbmt=True)),
    ("loongarch64", LA64PageTable),
]


@pytest.mark.parametrize("arch, make", ARCH_TABLES, ids=[a for a, _ in ARCH_TABLES])
@pytest.mark.parametrize("size", [K4, M2, G1], ids=["4K", "2M", "1G"])
def test_every_flag_combination_round_trips(arch, make, size):
    pt = make(RamImage(0, 8 << 20))
    for i, flags in enumerate(ALL_COMBINATIONS):
        va = (i + 1) * size
        if not encodable(arch, flags):
            with pytest.raises(InvalidFlags):
                pt.map(va, 0, size, flags)
            continue
        pt.map(va, 3 * size, size, flags)
        pa, got, got_size = pt.query(va + 8)
        assert (pa, got_size) == (3 * size + 8, size)
        assert got == expected_round_trip(arch, flags), f"{flags!r} came back as {got!r}"


def test_empty_flags_rejected_everywhere():
    for _, make in ARCH_TABLES:
        pt = make(RamImage(0, 1 << 20))
        with pytest.raises(InvalidFlags, match="empty"):
            pt.map(0x1000, 0x2000, K4, MappingFlags(0))


def test_constants_match_the_crate():
    assert MAIR_VALUE == 0x44_FF_04
    assert PWCL_VALUE == 0x13E4D52C and PWCH_VALUE == 0x267
    assert [int(f) for f in (R, W, X, U, D, C)] == [1, 2, 4, 8, 16, 32]
    assert [int(s) for s in (K4, M2, G1)] == [0x1000, 0x20_0000, 0x4000_0000]


def test_riscv_satp_and_levels():
    ram = RamImage(0x8000_0000, 1 << 20)
    for make, mode, levels in ((Sv39PageTable, 8, 3), (Sv48PageTable, 9, 4), (Sv57PageTable, 10, 5)):
        pt = make(ram)
        assert pt.levels == levels
        assert pt.satp(asid=5) == mode << 60 | 5 << 44 | pt.root_paddr >> 12
        pt.free()


@pytest.mark.parametrize("size", [K4, M2, G1], ids=["4K", "2M", "1G"])
def test_huge_pages_use_the_right_level(size):
    for make in (X64PageTable, A64PageTable, Sv48PageTable, LA64PageTable):
        pt = make(RamImage(0, 4 << 20))
        va = 0x8000_0000
        pt.map(va, 0x4000_0000, size, R)
        walk = pt.walk_many([va])
        assert int(walk.leaf_level[0]) == pt.level_of_size(size) == {K4: 3, M2: 2, G1: 1}[size]


def test_all_combinations_cover_every_bit():
    seen = set(
        itertools.chain.from_iterable([flag for flag in MappingFlags if flag in combo] for combo in ALL_COMBINATIONS)
    )
    assert seen == set(MappingFlags)

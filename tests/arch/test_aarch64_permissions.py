"""The AArch64 permission model against cases worked out by hand from the Arm ARM (DDI 0487):
descriptor validity per level (D8.3 "Translation table descriptor formats", pseudocode
AArch64.TranslationTableWalk / AArch64.BlockDescSupported), data and instruction access
permissions (D8.4 "Memory access control": AP[2:1], UXN/PXN, hierarchical APTable/UXNTable/
PXNTable, WXN, PAN; AArch64.S1DirectBasePermissions), the access flag and address size faults,
Device memory (AArch64.FirstStageTranslate, AArch64.InstructionDevice) and the ESR_EL1/FAR_EL1
syndrome ("ISS encoding for an exception from a Data Abort / Instruction Abort"). No QEMU."""
from __future__ import annotations

import numpy as np
import pytest

from arch import InvalidFlags, MappingFlags, PageSize, RamImage, WalkBatch
from arch.aarch64 import A64PageTable
from arch.aarch64.codec import AF, PXN, UXN
from arch.aarch64.permissions import OPTION_PAN, OPTION_WXN, A64Permissions, describe_esr
from arch.permissions import FETCH, LOAD, STORE

R, W, X, U, D = MappingFlags.READ, MappingFlags.WRITE, MappingFlags.EXECUTE, MappingFlags.USER, MappingFlags.DEVICE
K4, M2, G1 = PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G
TABLE = 0x4010_0003  # a table descriptor: bits[1:0] = 0b11, next table at 0x4010_0000
ACCESSES = (LOAD, STORE, FETCH)


def page(pa: int = 0x4800_0000, *, ap: int = 0b00, pxn: bool = False, uxn: bool = False, af: bool = True,
         attr: int = 1) -> int:
    """A level 3 page descriptor (D8.3: bits[1:0] = 0b11, AttrIndx[4:2], AP[7:6], AF 10, PXN 53, UXN 54)."""
    entry = pa | 0b11 | (attr << 2) | (ap << 6) | (0b11 << 8)
    return entry | (AF if af else 0) | (PXN if pxn else 0) | (UXN if uxn else 0)


def walk_of(*entries: int, vaddr: int = 0x1234_5000, valid: bool = True) -> WalkBatch:
    """A one-address walk reading `entries` at levels 0, 1, ... (0 beyond)."""
    column = np.zeros((4, 1), dtype=np.uint64)
    column[: len(entries), 0] = entries
    leaf = len(entries) - 1
    return WalkBatch(np.array([vaddr], dtype=np.uint64), column, np.zeros((4, 1), dtype=np.uint64),
                     np.array([leaf], dtype=np.int8), np.array([valid]))


def outcome(walk: WalkBatch, access: int, user: bool = False, options: int = 0, *,
            model: A64Permissions | None = None) -> tuple[bool, int]:
    """(ok, ESR) of one access through a one-address walk."""
    table = A64PageTable(RamImage(0x4000_0000, 1 << 20))
    model = model or A64Permissions(44)
    bits = options | (1 if user else 0)
    prediction = model.predict(table, walk, np.array([access], dtype=np.uint8), user, bits)
    if prediction.ok[0]:
        assert prediction.cause[0] == 0 and prediction.addr[0] == 0
    else:
        assert prediction.addr[0] == walk.vaddrs[0]  # FAR_EL1 = the faulting VA
    return bool(prediction.ok[0]), int(prediction.cause[0])


def ok_by_access(walk: WalkBatch, user: bool = False, options: int = 0, **kw: object) -> tuple[bool, ...]:
    return tuple(outcome(walk, access, user, options, **kw)[0] for access in ACCESSES)  # type: ignore[arg-type]


def esr(ec: int, fsc: int, write: bool = False) -> int:
    """ESR_EL1: EC[31:26], IL = 1 (bit 25), WnR bit 6, DFSC/IFSC[5:0]."""
    return (ec << 26) | (1 << 25) | (0x40 if write else 0) | fsc


# -- syndrome format ---------------------------------------------------------------------------
def test_syndrome_classes_il_and_wnr() -> None:
    """EC 0x25/0x24 Data Abort (same / lower EL), 0x21/0x20 Instruction Abort; IL = 1; WnR = 1 for
    stores only, also for translation faults (ESR_EL1, ISS encoding for a Data Abort)."""
    hole = walk_of(0)
    assert outcome(hole, LOAD) == (False, 0x9600_0004)
    assert outcome(hole, STORE) == (False, 0x9600_0044)
    assert outcome(hole, FETCH) == (False, 0x8600_0004)
    assert outcome(hole, LOAD, user=True) == (False, 0x9200_0004)
    assert outcome(hole, STORE, user=True) == (False, 0x9200_0044)
    assert outcome(hole, FETCH, user=True) == (False, 0x8200_0004)


# -- descriptor validity -------------------------------------------------------------------------
@pytest.mark.parametrize("level", range(4))
def test_invalid_descriptor_at_each_level_is_a_translation_fault_at_that_level(level: int) -> None:
    """Bit 0 clear makes a descriptor Invalid whatever its other bits (D8.3); the fault reports the
    level of the lookup (DFSC 0b0001LL)."""
    garbage = page() & ~1
    walk = walk_of(*([TABLE] * level), garbage)
    assert outcome(walk, LOAD) == (False, esr(0x25, 0b000100 | level))
    assert outcome(walk, STORE, user=True) == (False, esr(0x24, 0b000100 | level, write=True))


def test_va_outside_both_ranges_faults_at_level_0() -> None:
    """TBI = 0 and T0SZ = T1SZ = 16: bits 63:48 must be all 0 or all 1; otherwise a level 0
    Translation fault (TranslationTableWalk: !basefound -> level 0)."""
    walk = walk_of(vaddr=0x0001_0000_0000_0000, valid=False)
    assert outcome(walk, FETCH) == (False, esr(0x21, 0b000100))


def test_level_0_block_is_invalid_with_the_4k_granule() -> None:
    """bits[1:0] = 0b01 at level 0: no block at level 0 unless TCR_EL1.DS = 1 (BlockDescSupported)."""
    block = 0x0000_0000_0000_0401 | (1 << 2)  # AF, AttrIndx 1, OA 0
    assert outcome(walk_of(block), LOAD) == (False, esr(0x25, 0b000100))


def test_level_3_block_encoding_is_reserved() -> None:
    """bits[1:0] = 0b01 at level 3 is reserved: Translation fault, level 3."""
    assert outcome(walk_of(TABLE, TABLE, TABLE, page() & ~2), LOAD) == (False, esr(0x25, 0b000111))


@pytest.mark.parametrize("level", [1, 2])
def test_blocks_at_levels_1_and_2_translate(level: int) -> None:
    block = page(0x8000_0000) & ~2
    walk = walk_of(*([TABLE] * level), block)
    assert ok_by_access(walk) == (True, True, True)


def test_output_address_bits_51_48_are_not_part_of_the_address() -> None:
    """4K granule, DS = 0: the output address is desc<47:12> (TranslationTableWalk); bits 51:48
    are RES0 and do not cause an Address size fault."""
    assert outcome(walk_of(TABLE, TABLE, TABLE, page() | (0xF << 48)), LOAD) == (True, 0)


# -- address size and access flag ----------------------------------------------------------------
def test_output_address_beyond_pa_size_is_an_address_size_fault_at_the_leaf_level() -> None:
    """desc<47:outputsize> != 0 -> Address size fault (DFSC 0b0000LL): 44-bit a57 vs 48-bit."""
    far_page = page(0x1000_0000_0000)
    assert outcome(walk_of(TABLE, TABLE, TABLE, far_page), LOAD) == (False, esr(0x25, 0b000011))
    far_block = page(0x1000_4000_0000) & ~2
    assert outcome(walk_of(TABLE, far_block), FETCH, user=True) == (False, esr(0x20, 0b000001))
    assert outcome(walk_of(TABLE, TABLE, TABLE, far_page), LOAD, model=A64Permissions(48)) == (True, 0)


def test_table_address_beyond_pa_size_faults_at_the_table_level() -> None:
    """A table descriptor's next-level address is checked too, at the table's own level."""
    far_table = 0x1000_0000_0003
    assert outcome(walk_of(TABLE, far_table, 0, 0), STORE) == (False, esr(0x25, 0b000001, write=True))


def test_address_size_fault_comes_before_the_access_flag_fault() -> None:
    assert outcome(walk_of(TABLE, TABLE, TABLE, page(0x1000_0000_0000, af=False)), LOAD) == (False, esr(0x25, 0b000011))


def test_access_flag_fault_at_the_leaf_level_before_permission_faults() -> None:
    """AF = 0 with TCR_EL1.HA = 0: Access flag fault (0b0010LL), found by the walk, so it wins over a
    permission fault the same access would take (EL0 access to an EL1-only page)."""
    no_af = walk_of(TABLE, TABLE, TABLE, page(ap=0b00, af=False))
    assert outcome(no_af, LOAD, user=True) == (False, esr(0x24, 0b001011))
    assert outcome(no_af, STORE) == (False, esr(0x25, 0b001011, write=True))
    assert outcome(walk_of(TABLE, TABLE, page(af=False) & ~2), FETCH) == (False, esr(0x21, 0b001010))


# -- data access permissions (D8.4, AP[2:1]) -----------------------------------------------------
@pytest.mark.parametrize(("ap", "el1", "el0"), [
    (0b00, (True, True), (False, False)),  # EL1 read/write, no EL0 access
    (0b01, (True, True), (True, True)),  # EL1 and EL0 read/write
    (0b10, (True, False), (False, False)),  # EL1 read-only
    (0b11, (True, False), (True, False)),  # EL1 and EL0 read-only
])
def test_ap_bits(ap: int, el1: tuple[bool, bool], el0: tuple[bool, bool]) -> None:
    walk = walk_of(TABLE, TABLE, TABLE, page(ap=ap))
    assert ok_by_access(walk)[:2] == el1
    assert ok_by_access(walk, user=True)[:2] == el0


def test_permission_faults_report_the_leaf_level() -> None:
    """Permission fault 0b0011LL with LL the level of the page or block."""
    assert outcome(walk_of(TABLE, TABLE, TABLE, page(ap=0b10)), STORE) == (False, 0x9600_004F)
    assert outcome(walk_of(TABLE, TABLE, page(ap=0b10) & ~2), STORE) == (False, 0x9600_004E)
    assert outcome(walk_of(TABLE, page(ap=0b00) & ~2), LOAD, user=True) == (False, 0x9200_000D)


# -- instruction permissions ---------------------------------------------------------------------
def test_uxn_and_pxn() -> None:
    """UXN stops EL0 fetches, PXN EL1 fetches; fetching needs no read permission at EL0."""
    both = walk_of(TABLE, TABLE, TABLE, page(ap=0b11, pxn=True))  # EL1 and EL0 read-only
    assert ok_by_access(both) == (True, False, False)
    assert ok_by_access(both, user=True) == (True, False, True)
    el0_cannot_read = walk_of(TABLE, TABLE, TABLE, page(ap=0b00))
    assert outcome(el0_cannot_read, FETCH, user=True) == (True, 0)
    assert outcome(walk_of(TABLE, TABLE, TABLE, page(uxn=True)), FETCH, user=True) == (False, 0x8200_000F)


def test_el0_writable_page_is_never_executable_at_el1() -> None:
    """Implicit PXN: px = NOT(pxn OR uw) (S1DirectBasePermissions)."""
    assert outcome(walk_of(TABLE, TABLE, TABLE, page(ap=0b01)), FETCH) == (False, 0x8600_000F)
    assert outcome(walk_of(TABLE, TABLE, TABLE, page(ap=0b11)), FETCH) == (True, 0)


def test_wxn_removes_execute_where_the_accessing_el_may_write() -> None:
    """x = x AND NOT(wxn AND w), w of the accessing EL: an EL1-only-writable page stays EL0-executable."""
    el1_rw = walk_of(TABLE, TABLE, TABLE, page(ap=0b00))
    assert outcome(el1_rw, FETCH, options=OPTION_WXN) == (False, 0x8600_000F)
    assert outcome(el1_rw, FETCH, user=True, options=OPTION_WXN) == (True, 0)
    el0_rw = walk_of(TABLE, TABLE, TABLE, page(ap=0b01))
    assert outcome(el0_rw, FETCH, user=True, options=OPTION_WXN) == (False, 0x8200_000F)
    read_only = walk_of(TABLE, TABLE, TABLE, page(ap=0b10))
    assert outcome(read_only, FETCH, options=OPTION_WXN) == (True, 0)


def test_pan_blocks_el1_data_access_to_el0_accessible_pages_only() -> None:
    """PSTATE.PAN: EL1 loads and stores to pages with (effective) AP[1] = 1 fault; EL1-only pages,
    fetches and EL0 accesses are unaffected (SCTLR_EL1.EPAN = 0)."""
    user_rw = walk_of(TABLE, TABLE, TABLE, page(ap=0b01))
    assert outcome(user_rw, LOAD, options=OPTION_PAN) == (False, 0x9600_000F)
    assert outcome(user_rw, STORE, options=OPTION_PAN) == (False, 0x9600_004F)
    assert ok_by_access(user_rw, user=True, options=OPTION_PAN)[:2] == (True, True)
    assert ok_by_access(walk_of(TABLE, TABLE, TABLE, page(ap=0b00)), options=OPTION_PAN) == (True, True, True)
    user_ro = walk_of(TABLE, TABLE, TABLE, page(ap=0b11))
    assert ok_by_access(user_ro, options=OPTION_PAN) == (False, False, True)


# -- hierarchical attributes of table descriptors (D8.4, "Hierarchical control") -----------------
def test_aptable_read_only_and_no_el0() -> None:
    rw_everyone = page(ap=0b01)
    read_only = walk_of(TABLE, TABLE | (1 << 62), TABLE, rw_everyone)  # APTable[1]
    assert ok_by_access(read_only)[:2] == (True, False)
    assert ok_by_access(read_only, user=True)[:2] == (True, False)
    no_el0 = walk_of(TABLE | (1 << 61), TABLE, TABLE, rw_everyone)  # APTable[0]
    assert ok_by_access(no_el0)[:2] == (True, True)
    assert outcome(no_el0, LOAD, user=True) == (False, 0x9200_000F)


def test_aptable_no_el0_lifts_the_implicit_pxn() -> None:
    """uw is computed after APTable, so a leaf AP = 01 under APTable[0] = 1 is EL1-executable."""
    assert outcome(walk_of(TABLE, TABLE | (1 << 61), TABLE, page(ap=0b01)), FETCH) == (True, 0)


def test_pan_uses_the_effective_el0_permission() -> None:
    assert outcome(walk_of(TABLE, TABLE | (1 << 61), TABLE, page(ap=0b01)), LOAD, options=OPTION_PAN) == (True, 0)


def test_uxntable_and_pxntable() -> None:
    assert outcome(walk_of(TABLE | (1 << 60), TABLE, TABLE, page()), FETCH, user=True) == (False, 0x8200_000F)
    assert outcome(walk_of(TABLE, TABLE, TABLE | (1 << 59), page()), FETCH) == (False, 0x8600_000F)
    assert outcome(walk_of(TABLE, TABLE, TABLE | (1 << 59), page()), FETCH, user=True) == (True, 0)


def test_table_attributes_in_a_leaf_or_below_the_walk_do_nothing() -> None:
    """Bits 62:59 of a block or page descriptor are not APTable/XNTable (they are ignored/PBHA)."""
    assert ok_by_access(walk_of(TABLE, TABLE, TABLE, page() | (0xF << 59))) == (True, True, True)


# -- Device memory ---------------------------------------------------------------------------------
def test_unaligned_device_data_access_is_an_alignment_fault_before_permissions() -> None:
    """An unaligned data access to Device memory takes an Alignment fault (DFSC 0b100001), checked
    before permissions (FirstStageTranslate); Normal memory allows it (SCTLR_EL1.A = 0)."""
    device_ro = walk_of(TABLE, TABLE, TABLE, page(ap=0b10, attr=0), vaddr=0x1234_5004)
    assert outcome(device_ro, STORE) == (False, esr(0x25, 0b100001, write=True))
    normal = walk_of(TABLE, TABLE, TABLE, page(attr=1), vaddr=0x1234_5004)
    assert outcome(normal, LOAD) == (True, 0)


def test_every_mair_byte_with_zero_high_nibble_is_device() -> None:
    """MAIR 0x44ff04: attr0 Device-nGnRE, attr1/attr2 Normal, attr3..7 = 0x00 Device-nGnRnE."""
    for attr, device in [(0, True), (1, False), (2, False), (3, True), (7, True)]:
        walk = walk_of(TABLE, TABLE, TABLE, page(attr=attr), vaddr=0x1234_5004)
        assert outcome(walk, LOAD)[0] is not device


def test_fetch_from_device_memory_is_the_implementations_choice() -> None:
    """AArch64.InstructionDevice: CONSTRAINED UNPREDICTABLE, a Permission fault or a fetch as
    Normal Non-cacheable; only reached when the page is executable."""
    walk = walk_of(TABLE, TABLE, TABLE, page(attr=0))
    assert outcome(walk, FETCH) == (True, 0)
    faulting = A64Permissions(44, fetch_from_device_faults=True)
    assert outcome(walk, FETCH, model=faulting) == (False, 0x8600_000F)
    assert outcome(walk, LOAD, model=faulting) == (True, 0)


# -- External aborts from the platform -----------------------------------------------------------
def _above_2g(paddrs: np.ndarray) -> np.ndarray:
    return paddrs >= np.uint64(0x8000_0000)


def test_external_abort_only_for_an_access_the_mmu_allows() -> None:
    model = A64Permissions(48, external_abort=_above_2g)
    walk = walk_of(TABLE, TABLE, TABLE, page(0x9000_0000, ap=0b10))
    assert outcome(walk, LOAD, model=model) == (False, esr(0x25, 0b010000))
    assert outcome(walk, STORE, model=model) == (False, 0x9600_004F)  # the permission fault wins


def test_external_abort_uses_the_block_output_address() -> None:
    """OA = desc<47:n> : VA<n-1:0> for a block at level 1 (n = 30)."""
    model = A64Permissions(48, external_abort=_above_2g)
    block = page(0x4000_0000) & ~2
    assert outcome(walk_of(TABLE, block, vaddr=0x3FFF_FFF8), LOAD, model=model) == (True, 0)
    assert outcome(walk_of(TABLE, page(0x8000_0000) & ~2, vaddr=0x8), LOAD, model=model)[0] is False


def test_external_abort_on_the_table_walk_reports_the_level_read() -> None:
    model = A64Permissions(48, external_abort=_above_2g)
    far_table = 0x9000_0000 | 0b11
    assert outcome(walk_of(TABLE, TABLE, far_table), LOAD, model=model) == (False, esr(0x25, 0b010111))


# -- options ---------------------------------------------------------------------------------------
def test_unknown_option_bits_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown AArch64 option bits 0x8"):
        outcome(walk_of(0), LOAD, options=0x8)


# -- the library's own encodings -------------------------------------------------------------------
def encodable(table: A64PageTable) -> list[MappingFlags]:
    found = []
    for value in range(1, 64):
        try:
            table.codec.template(MappingFlags(value), K4)
        except InvalidFlags:
            continue
        found.append(MappingFlags(value))
    return found


@pytest.mark.parametrize("size", [K4, M2, G1])
@pytest.mark.parametrize("upper", [False, True])
def test_library_flags_mean_what_they_say(size: PageSize, upper: bool) -> None:
    """For every flag combination the codec encodes: EL1 may always read and may write iff WRITE,
    execute iff EXECUTE and not USER (the crate sets PXN on user pages); EL0 needs USER, plus
    WRITE or EXECUTE. WXN additionally forbids executing what the accessing EL may write."""
    ram = RamImage(0x4000_0000, 16 << 20)
    table = A64PageTable(ram, upper=upper)
    base = 0xFFFF_0000_0000_0000 if upper else 0
    flags_list = encodable(table)
    vaddrs = [base + (index + 1) * 2 * int(size) for index in range(len(flags_list))]
    for va, flags in zip(vaddrs, flags_list, strict=True):
        table.map(va, 0x8000_0000, size, flags)
    walk = table.walk_many(np.array(vaddrs, dtype=np.uint64))
    model = A64Permissions(44)
    for user in (False, True):
        for wxn in (0, OPTION_WXN):
            for access in ACCESSES:
                kinds = np.full(len(vaddrs), access, dtype=np.uint8)
                got = model.predict(table, walk, kinds, user, wxn | int(user)).ok
                for flags, ok in zip(flags_list, got.tolist(), strict=True):
                    user_page = bool(flags & U)
                    write = bool(flags & W) and (user_page or not user)
                    execute = bool(flags & X) and user_page == user
                    want = {LOAD: user_page or not user, STORE: write, FETCH: execute and not (wxn and write)}
                    assert ok == want[access], (flags.letters(), user, wxn, access)


def test_library_never_writes_a_level_0_block() -> None:
    """The crate's PageSize has no 512 GiB size, and huge region mappings stop at 1G blocks: every
    level 0 entry the library writes is empty or a table descriptor (bits[1:0] = 0b11)."""
    ram = RamImage(0x4000_0000, 16 << 20)
    for table in (A64PageTable(ram), A64PageTable(ram, upper=True)):
        base = 0xFFFF_0000_0000_0000 if table.metadata.vaddr_is_valid(0xFFFF_0000_0000_0000) else 0
        table.map_region(base, 0, 1 << 40, R | W, allow_huge=True)  # 1 TiB: two level 0 entries
        for size, va in ((K4, base + (3 << 39)), (M2, base + (4 << 39)), (G1, base + (5 << 39))):
            table.map(va, 0x4000_0000, size, R)
        level0 = ram.read_words(table.root_paddr, 512)
        assert set((level0[level0 != 0] & np.uint64(3)).tolist()) == {3}
        assert int(np.count_nonzero(level0)) == 5


def test_describe_esr() -> None:
    assert describe_esr(0x9600_004F) == "ESR 0x9600004f: data abort at EL1, write, permission fault, level 3"
    assert describe_esr(0x8200_0004) == "ESR 0x82000004: instruction abort from EL0, translation fault, level 0"
    assert describe_esr(0x9600_0010) == "ESR 0x96000010: data abort at EL1, read, synchronous external abort"
    assert describe_esr(0x9200_0061) == "ESR 0x92000061: data abort from EL0, write, alignment fault"
    assert describe_esr(0xF200_07A7) == "ESR 0xf20007a7: BRK"
    assert describe_esr(0).startswith("ESR 0x0: EC 0x0")

"""AArch64 stage 1 permission model for the EL1&0 translation regime, 4 KiB granule, 48-bit VA
in both ranges (TTBR0_EL1 and TTBR1_EL1), as the probe guest configures it
(guests/aarch64/README.md: TCR_EL1 T0SZ = T1SZ = 16, TBI = 0, HA = HD = 0, DS = 0, HPD = 0).

Sources (Arm Architecture Reference Manual for A-profile, DDI 0487, "Arm ARM"):
- the translation table walk and its fault order: pseudocode `AArch64.TranslationTableWalk`,
  `AArch64.FirstStageTranslate` and `AArch64.CheckPermission` (DDI 0487A D4.2.10 and D4.4,
  "VMSAv8-64 translation table format descriptors"); the current manual's
  `AArch64.DecodeDescriptorType`, `AArch64.BlockDescSupported`, `AArch64.S1DirectBasePermissions`
  (D8.3 "Translation table descriptor formats", D8.4 "Memory access control") say the same;
- fault syndromes: register `ESR_EL1`, "ISS encoding for an exception from a Data Abort" and
  "... from an Instruction Abort" (EC, IL, WnR, DFSC/IFSC), register `FAR_EL1`.

The model reads the raw descriptors of a `WalkBatch`, never the library's flags, so it also
judges entries the library never writes (hierarchical table attributes, AF = 0, reserved
encodings, output addresses beyond the PA size).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..memory import U64
from ..permissions import FETCH, LOAD, STORE, Prediction, entry_bits
from ..table import PageTable64, WalkBatch
from .codec import (
    AF,
    AP_EL0,
    AP_RO,
    AP_TABLE_NO_EL0,
    AP_TABLE_RO,
    ATTR_INDX,
    MAIR_VALUE,
    NON_BLOCK,
    PXN,
    PXN_TABLE,
    UXN,
    UXN_TABLE,
    VALID,
)

OPTION_PAN = 1 << 1  # guest README "mode and options": bit 1, PSTATE.PAN = 1 for EL1 probes
OPTION_WXN = 1 << 2  # bit 2: SCTLR_EL1.WXN = 1
KNOWN_OPTIONS = 0b111  # bit 0 (EL0 probes) and the two above; the guest rejects any other bit

# ESR_EL1 (Arm ARM, ESR_EL1): EC in bits 31:26, IL bit 25 (RES1 for Data Aborts with ISV = 0 and for
# Instruction Aborts), WnR bit 6 (Data Aborts: 1 = the access was a write), DFSC/IFSC bits 5:0.
EC_SHIFT = 26
EC_INSTRUCTION_ABORT_LOWER = 0x20  # Instruction Abort from a lower Exception level (EL0)
EC_INSTRUCTION_ABORT_SAME = 0x21  # Instruction Abort taken without a change in Exception level
EC_DATA_ABORT_LOWER = 0x24
EC_DATA_ABORT_SAME = 0x25
IL = 1 << 25
WNR = 1 << 6
# ISV (bit 24) stays 0: an A64 LDR/STR stage 1 abort reported in ESR_EL1 carries no instruction
# syndrome (the ISS encoding for a Data Abort defines ISV = 1 only for listed stage 2 aborts and
# FEAT_LS64 accesses); EA (bit 9), the IMPLEMENTATION DEFINED external abort class, is taken as 0.

# Fault status codes (ESR_EL1 DFSC/IFSC): the low two bits give the level where a level applies.
FSC_ADDRESS_SIZE = 0b000000
FSC_TRANSLATION = 0b000100
FSC_ACCESS_FLAG = 0b001000
FSC_PERMISSION = 0b001100
FSC_EXTERNAL_ABORT = 0b010000  # synchronous External abort, not on a translation table walk
FSC_EXTERNAL_ABORT_WALK = 0b010100  # synchronous External abort on a translation table walk
FSC_ALIGNMENT = 0b100001

OA_FIELD = 0x0000_FFFF_FFFF_F000  # 4K granule, DS = 0: output address bits 47:12 (D8.3)
LEVELS = 4
LEAF_SHIFT = (39, 30, 21, 12)  # bits below this are the offset inside a leaf at each level


def _bits(value: int) -> np.uint64:
    return np.uint64(value)


class A64Permissions:
    """Predicts loads, stores and fetches through AArch64 stage 1 walks.

    `pa_bits` is the output address size the walk enforces: min(ID_AA64MMFR0_EL1.PARange,
    TCR_EL1.IPS) (pseudocode: `outputsize`, capped by `PAMax()`); an output address with bits
    47:pa_bits set raises an Address size fault. `mair` is MAIR_EL1 (it tells Device from Normal
    memory). `fetch_from_device_faults` picks the implementation's choice for an instruction fetch
    from Device memory that is not execute-never, which the architecture leaves CONSTRAINED
    UNPREDICTABLE between a Permission fault and a fetch treated as Normal Non-cacheable
    (`AArch64.InstructionDevice`, Unpredictable_INSTRDEVICE). `external_abort(pa)` names the
    physical addresses where the platform answers an access with a bus error (a synchronous
    External abort); the architecture cannot know them, so by default there are none.
    """

    def __init__(
        self,
        pa_bits: int,
        *,
        mair: int = MAIR_VALUE,
        fetch_from_device_faults: bool = False,
        external_abort: Callable[[U64], np.ndarray] | None = None,
    ) -> None:
        if not 32 <= pa_bits <= 48:
            raise ValueError(f"output address size {pa_bits} is not one TCR_EL1.IPS encodes for 4K descriptors")
        self.pa_bits = pa_bits
        self.mair = mair
        self.fetch_from_device_faults = fetch_from_device_faults
        self.external_abort = external_abort
        # bits of the output address field at or above the output size (pseudocode: desc<47:outputsize>)
        self._beyond_pa = OA_FIELD & ~((1 << pa_bits) - 1)
        # MAIR_EL1 attribute bytes with attr<7:4> = 0 are Device memory (Arm ARM, MAIR_EL1)
        device = [(mair >> (8 * index)) & 0xF0 == 0 for index in range(8)]
        self._device_by_index = np.array(device, dtype=bool)

    def predict(
        self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int
    ) -> Prediction:
        """`walk` must come from both roots (a TableSet of the TTBR0 and TTBR1 tables): an address
        that neither range translates is one whose `walk.valid` is False."""
        if options & ~KNOWN_OPTIONS:
            raise ValueError(f"unknown AArch64 option bits {options & ~KNOWN_OPTIONS:#x} (known: {KNOWN_OPTIONS:#x})")
        if table.levels != LEVELS:
            raise ValueError(f"an AArch64 4K-granule walk has {LEVELS} levels, not {table.levels}")
        count = len(walk.vaddrs)
        access = np.asarray(access)
        # Per address: the fault status code found so far, or -1 while none.
        fsc = np.full(count, -1, dtype=np.int16)
        # A VA outside both ranges (bits 63:48 neither all 0 nor all 1, TBI = 0) faults at level 0
        # (pseudocode: !basefound -> level = 0, TranslationFault).
        fsc[~walk.valid] = FSC_TRANSLATION
        walking = walk.valid.copy()
        no_el0_table = np.zeros(count, dtype=bool)  # APTable[0]: no EL0 access below
        ro_table = np.zeros(count, dtype=bool)  # APTable[1]: read-only below
        uxn_table = np.zeros(count, dtype=bool)
        pxn_table = np.zeros(count, dtype=bool)
        leaf = np.zeros(count, dtype=np.uint64)
        leaf_level = np.full(count, -1, dtype=np.int8)
        for level in range(LEVELS):
            entry = walk.entries[level]
            valid = entry_bits(entry, VALID)
            table_or_page = entry_bits(entry, NON_BLOCK)
            bad = ~valid  # bit 0 clear: Invalid, whatever the other bits hold
            if level in (0, LEVELS - 1):
                # bits[1:0] = 0b01 at level 3 is reserved (TranslationTableWalk), and a level 0
                # block is not supported with the 4K granule unless TCR_EL1.DS = 1
                # (BlockDescSupported; v8.0: level < firstblocklevel -> Translation fault)
                bad |= ~table_or_page
            fault_here = walking & bad
            fsc[fault_here] = FSC_TRANSLATION | level
            walking &= ~bad
            stops = walking if level == LEVELS - 1 else walking & ~table_or_page
            if level < LEVELS - 1:
                # a table descriptor's next-level address beyond the output size: Address size
                # fault at this level (TranslationTableWalk, "Table (11)" branch)
                pointer = walking & table_or_page
                too_far = pointer & entry_bits(entry, self._beyond_pa)
                fsc[too_far] = FSC_ADDRESS_SIZE | level
                pointer &= ~too_far
                if self.external_abort is not None:
                    # the next-level descriptor read itself meets a bus error: reported at the
                    # level of the descriptor being read
                    bus_error = pointer & self.external_abort(entry & _bits(OA_FIELD))
                    fsc[bus_error] = FSC_EXTERNAL_ABORT_WALK | (level + 1)
                    pointer &= ~bus_error
                # hierarchical attributes accumulate down the walk (D8.4 "Hierarchical control";
                # pseudocode: ap_table<1> |= desc<62>, ap_table<0> |= desc<61>, xn_table |=
                # desc<60>, pxn_table |= desc<59>; EL1&0 is a two-privilege regime)
                ro_table |= pointer & entry_bits(entry, AP_TABLE_RO)
                no_el0_table |= pointer & entry_bits(entry, AP_TABLE_NO_EL0)
                uxn_table |= pointer & entry_bits(entry, UXN_TABLE)
                pxn_table |= pointer & entry_bits(entry, PXN_TABLE)
                walking = pointer
            leaf[stops] = entry[stops]
            leaf_level[stops] = level
        found = leaf_level >= 0
        self._leaf_faults(walk.vaddrs, access, user, options, fsc, found, leaf, leaf_level,
                          (ro_table, no_el0_table, uxn_table, pxn_table))
        return self._syndromes(walk.vaddrs, access, user, fsc)

    def _leaf_faults(
        self,
        vaddrs: U64,
        access: np.ndarray,
        user: bool,
        options: int,
        fsc: np.ndarray,
        found: np.ndarray,
        leaf: U64,
        leaf_level: np.ndarray,
        table_attrs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """Faults at a block or page descriptor, in the architecture's order: Address size, Access
        flag (both found by the walk), Alignment (Device memory), Permission, Device fetch, and
        last an External abort from the bus for an access the MMU allowed."""
        level_bits = leaf_level.astype(np.int16)
        pending = found.copy()

        def raise_fault(where: np.ndarray, code: int, with_level: bool) -> None:
            nonlocal pending
            hit = pending & where
            fsc[hit] = (code | level_bits[hit]) if with_level else code
            pending &= ~hit

        # output address beyond the output size (TranslationTableWalk, "Check the output address")
        raise_fault(entry_bits(leaf, self._beyond_pa), FSC_ADDRESS_SIZE, True)
        # AF = 0 with hardware AF updates off (TCR_EL1.HA = 0): Access flag fault, found by the walk
        # and so before any permission check (TranslationTableWalk, "Check the access flag")
        raise_fault(~entry_bits(leaf, AF), FSC_ACCESS_FLAG, True)
        index = ((leaf & _bits(ATTR_INDX)) >> _bits(2)).astype(np.intp)
        device = self._device_by_index[index]
        # an unaligned data access to Device memory (FirstStageTranslate: "Check for unaligned
        # data accesses to Device memory", ahead of the permission check); every access is 8 bytes
        unaligned = (vaddrs & _bits(7)) != 0
        raise_fault(device & unaligned & (access != FETCH), FSC_ALIGNMENT, False)
        allowed = self.allowed(leaf, access, user, options, table_attrs)
        raise_fault(~allowed, FSC_PERMISSION, True)
        if self.fetch_from_device_faults:
            # the implementation's choice for Unpredictable_INSTRDEVICE: a Permission fault
            raise_fault(device & (access == FETCH), FSC_PERMISSION, True)
        if self.external_abort is not None:
            shift = np.array(LEAF_SHIFT, dtype=np.uint64)[np.where(found, leaf_level, LEVELS - 1)]
            offset_mask = (np.uint64(1) << shift) - np.uint64(1)
            paddr: U64 = np.asarray((leaf & _bits(OA_FIELD) & ~offset_mask) | (vaddrs & offset_mask), dtype=np.uint64)
            raise_fault(self.external_abort(paddr), FSC_EXTERNAL_ABORT, False)

    @staticmethod
    def allowed(
        leaf: U64,
        access: np.ndarray,
        user: bool,
        options: int,
        table_attrs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> np.ndarray:
        """Whether the leaf's permissions, restricted by the table attributes above it, allow each
        access (`AArch64.S1DirectBasePermissions`; v8.0/v8.1 `AArch64.CheckPermission`)."""
        ro_table, no_el0_table, uxn_table, pxn_table = table_attrs
        # AP[2:1]: 00 EL1 RW; 01 EL1 and EL0 RW; 10 EL1 RO; 11 EL1 and EL0 RO. APTable can only
        # take permissions away: APTable[1] forces read-only, APTable[0] removes EL0 access.
        read_only = entry_bits(leaf, AP_RO) | ro_table
        el0 = entry_bits(leaf, AP_EL0) & ~no_el0_table
        pr = np.ones(len(leaf), dtype=bool)
        pw = ~read_only
        ur = el0
        uw = el0 & ~read_only
        # a location writable at EL0 is never executable at EL1 (implicit PXN)
        px = ~(entry_bits(leaf, PXN) | pxn_table | uw)
        ux = ~(entry_bits(leaf, UXN) | uxn_table)
        if not user and options & OPTION_PAN:
            # PSTATE.PAN: EL1 loads and stores to EL0-accessible locations fault; fetches are not
            # affected (SCTLR_EL1.EPAN = 0, so the ux term of FEAT_PAN3 does not apply)
            pan = ur | uw
            pr &= ~pan
            pw &= ~pan
        r, w, x = (ur, uw, ux) if user else (pr, pw, px)
        if options & OPTION_WXN:
            x = x & ~w  # SCTLR_EL1.WXN: writable at the accessing EL implies execute-never
        # an instruction fetch needs only execute permission, not read (CheckPermission: IFETCH)
        return np.select([access == LOAD, access == STORE, access == FETCH], [r, w, x], default=False)

    @staticmethod
    def _syndromes(vaddrs: U64, access: np.ndarray, user: bool, fsc: np.ndarray) -> Prediction:
        """ESR_EL1 and FAR_EL1 of each faulting access; FAR is the faulting VA (FnV = 0)."""
        fault = fsc >= 0
        fetch = access == FETCH
        data_ec = EC_DATA_ABORT_LOWER if user else EC_DATA_ABORT_SAME
        instruction_ec = EC_INSTRUCTION_ABORT_LOWER if user else EC_INSTRUCTION_ABORT_SAME
        ec = np.where(fetch, np.uint64(instruction_ec), np.uint64(data_ec))
        esr = (ec << _bits(EC_SHIFT)) | _bits(IL) | np.where(fault, fsc, 0).astype(np.uint64)
        esr |= np.where(access == STORE, _bits(WNR), _bits(0))
        cause = np.where(fault, esr, _bits(0))
        return Prediction(~fault, cause, np.where(fault, vaddrs, _bits(0)))


_FSC_NAMES = {
    FSC_ADDRESS_SIZE: "address size fault",
    FSC_TRANSLATION: "translation fault",
    FSC_ACCESS_FLAG: "access flag fault",
    FSC_PERMISSION: "permission fault",
}
_EC_NAMES = {
    EC_INSTRUCTION_ABORT_LOWER: "instruction abort from EL0",
    EC_INSTRUCTION_ABORT_SAME: "instruction abort at EL1",
    EC_DATA_ABORT_LOWER: "data abort from EL0",
    EC_DATA_ABORT_SAME: "data abort at EL1",
    0x3C: "BRK",
    0x15: "SVC",
}


def describe_esr(esr: int) -> str:
    """A decoding of an ESR_EL1 value, e.g. 'ESR 0x9600004f: data abort at EL1, write,
    permission fault, level 3'."""
    ec = (esr >> EC_SHIFT) & 0x3F
    text = f"ESR {esr:#x}: {_EC_NAMES.get(ec, f'EC {ec:#x}')}"
    if ec in (EC_DATA_ABORT_LOWER, EC_DATA_ABORT_SAME, EC_INSTRUCTION_ABORT_LOWER, EC_INSTRUCTION_ABORT_SAME):
        if ec in (EC_DATA_ABORT_LOWER, EC_DATA_ABORT_SAME):
            text += ", write" if esr & WNR else ", read"
        code = esr & 0x3F
        if code >> 2 in {name >> 2 for name in _FSC_NAMES}:
            text += f", {_FSC_NAMES[code & ~3]}, level {code & 3}"
        elif code == FSC_EXTERNAL_ABORT:
            text += ", synchronous external abort"
        elif code & ~3 == FSC_EXTERNAL_ABORT_WALK:
            text += f", synchronous external abort on the table walk, level {code & 3}"
        elif code == FSC_ALIGNMENT:
            text += ", alignment fault"
        else:
            text += f", FSC {code:#x}"
    return text

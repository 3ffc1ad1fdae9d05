"""RISC-V Sv39/Sv48/Sv57 permission model (privileged spec v1.12, 4.3.2 "Virtual Address
Translation Process", 4.4/4.5 for Sv39/Sv48, 3.1.6.3 SUM/MXR)."""

from __future__ import annotations

import numpy as np

from ..permissions import FETCH, LOAD, STORE, Prediction, entry_bits
from ..table import PageTable64, WalkBatch
from .codec import PPN_FIELD, A, D, R, U, V, W, X

OPTION_SUM = 1 << 1  # mailbox options bit 1: sstatus.SUM
OPTION_MXR = 1 << 2  # mailbox options bit 2: sstatus.MXR
PAGE_FAULT = {LOAD: 13, STORE: 15, FETCH: 12}  # mcause/scause exception codes (Table 3.6)
RESERVED_HIGH = ~((1 << 54) - 1) & ((1 << 64) - 1)  # bits 63:54: reserved without Svpbmt/Svnapot


class RiscvPermissions:
    """Which loads, stores and fetches the RISC-V MMU allows through a walk.

    `svpbmt` makes bits 62:61 legal (Svpbmt); otherwise any of bits 63:54 set is a reserved
    encoding and faults (4.3.2 step 3, as amended by Svpbmt). A and D are updated by hardware on
    QEMU's default CPU, so they never fault here.
    """

    def __init__(self, svpbmt: bool = False) -> None:
        self.reserved = RESERVED_HIGH & ~((3 << 61) if svpbmt else 0)

    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        count = len(walk.vaddrs)
        access = np.asarray(access)
        fault = ~walk.valid  # non-canonical: a page fault for the access (4.3.2, 4.4.1)
        walking = walk.valid.copy()
        leaf = np.zeros(count, dtype=np.uint64)
        leaf_size = np.zeros(count, dtype=np.uint64)
        for level in range(table.levels):
            entry = walk.entries[level]
            invalid = ~entry_bits(entry, V) | (entry_bits(entry, W) & ~entry_bits(entry, R))
            invalid |= entry_bits(entry, self.reserved)
            is_leaf = entry_bits(entry, R | X)
            size = table.size_of_level(level)
            # a pointer at the last level, or one with U/A/D set (reserved for non-leaves), faults
            bad_pointer = ~is_leaf & ((level == table.levels - 1) | entry_bits(entry, U | A | D))
            fault |= walking & (invalid | bad_pointer)
            stop = walking & ~invalid & is_leaf
            if size is not None:
                leaf[stop] = entry[stop]
                leaf_size[stop] = int(size)
            else:  # a leaf at a level with no page size cannot be produced by the library
                fault |= stop
            walking &= ~invalid & ~bad_pointer & ~is_leaf
        found = (leaf_size != 0) & ~fault
        ppn_misaligned = ((leaf & np.uint64(PPN_FIELD)) << np.uint64(2)) & (leaf_size - np.uint64(1)) != 0
        fault |= found & ppn_misaligned  # misaligned superpage (4.3.2 step 6)
        fault |= found & ~self._allowed(leaf, access, user, options)
        cause = np.zeros(count, dtype=np.uint64)
        for kind, code in PAGE_FAULT.items():
            cause[fault & (access == kind)] = code
        return Prediction(~fault, cause, np.where(fault, walk.vaddrs, np.uint64(0)))

    @staticmethod
    def _allowed(leaf: np.ndarray, access: np.ndarray, user: bool, options: int) -> np.ndarray:
        readable = entry_bits(leaf, R)
        if options & OPTION_MXR:
            readable |= entry_bits(leaf, X)  # MXR: execute-only pages become readable
        by_kind = np.select(
            [access == LOAD, access == STORE, access == FETCH],
            [readable, entry_bits(leaf, W), entry_bits(leaf, X)],
            default=False,
        )
        user_page = entry_bits(leaf, U)
        if user:
            return np.asarray(by_kind & user_page, dtype=np.bool_)  # U-mode may only touch U pages
        # S-mode: U pages only with SUM, and never for instruction fetch (3.1.6.3)
        supervisor_ok = ~user_page | ((access != FETCH) & bool(options & OPTION_SUM))
        return np.asarray(by_kind & supervisor_ok, dtype=np.bool_)

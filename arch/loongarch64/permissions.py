"""LoongArch64 permission model: what the architecture does with a load, store or fetch through
the raw entries of a page table walked by LDDIR/LDPTE.

Sources (LoongArch Reference Manual Vol. 1, v1.10): 5.2 "Virtual Address Space and Address
Translation Mode" (legal addresses, ADE), 5.4.2 "TLB Entry" (V, D, NR, NX, PLV, RPLV, PPN),
5.4.3 "Software Management of TLB" (the TLB exceptions), 5.4.4 "TLB-based Translation of Virtual
Addresses to Physical Addresses" (the order of the checks), 5.4.5 "Multi-level Page Table
Structure Supported by page walking" (entry formats, huge entries), 4.2.5 "Software page walking
Instructions" (LDDIR, LDPTE), 7.4.6 "ESTAT" (exception codes), 7.5.8/7.5.9 "PWCL"/"PWCH".

This is the architecture, not QEMU: what QEMU does differently is listed as deviations in
`harness/profiles/loongarch64.py`.
"""

from __future__ import annotations

import numpy as np

from ..memory import FRAME_SIZE, U64, WORDS_PER_FRAME
from ..permissions import FETCH, LOAD, STORE, Prediction, entry_bits
from ..table import PageTable64, WalkBatch
from .codec import HUGE, NR, NX, PHYS_ADDR_MASK, PLV_MASK, RPLV, D, V
from .table import PWCH_VALUE, PWCL_VALUE

# ESTAT.Ecode (bits 21:16) and EsubCode (bits 30:22) of the page faults (7.4.6, "Table of
# exception encoding"); the guest records ESTAT with IS = 0 (guests/loongarch64/README.md).
PIL, PIS, PIF, PME, PNR, PNX, PPI, ADE = 1, 2, 3, 4, 5, 6, 7, 8
ADEF, ADEM = 0, 1  # EsubCode of ADE: fetch, memory access
ECODE_SHIFT, ESUBCODE_SHIFT = 16, 22

VALEN = 48  # QEMU's la464 CPU: CPUCFG word 1 VALEN = 47, i.e. 48-bit virtual addresses
PLV_USER = 3  # the guest's user probes run at PLV3, the others at PLV0 (README "options")


def estat(ecode: int, esubcode: int = 0) -> int:
    """The ESTAT value of an exception (IS = 0), the `cause` format of the guest."""
    return ecode << ECODE_SHIFT | esubcode << ESUBCODE_SHIFT


def walk_geometry() -> tuple[tuple[int, int], ...]:
    """(index base, index width) of every level from the root: Dir3, Dir2, Dir1, PT, decoded
    from the PWCH/PWCL values the guest programs (the crate's PWCH_VALUE / PWCL_VALUE; 7.5.8
    PWCL: PTbase 4:0, PTwidth 9:5, Dir1_base 14:10, Dir1_width 19:15, Dir2_base 24:20,
    Dir2_width 29:25; 7.5.9 PWCH: Dir3_base 5:0, Dir3_width 11:6)."""

    def field(value: int, low: int, bits: int) -> int:
        return (value >> low) & ((1 << bits) - 1)

    return (
        (field(PWCH_VALUE, 0, 6), field(PWCH_VALUE, 6, 6)),
        (field(PWCL_VALUE, 20, 5), field(PWCL_VALUE, 25, 5)),
        (field(PWCL_VALUE, 10, 5), field(PWCL_VALUE, 15, 5)),
        (field(PWCL_VALUE, 0, 5), field(PWCL_VALUE, 5, 5)),
    )


class LoongArchPermissions:
    """Predicts the outcome of probes through a LoongArch64 table (one root for PGDL and PGDH).

    The walk is the hardware's, not the library's: every directory entry without bit 6 is
    followed to the table at its PA field (LDDIR checks no validity, 4.2.5), including an empty
    (zero) entry, which leads to physical page 0. Where `walk_many` stopped early (a hole, an
    entry with no address) the model reads the rest of the walk from the table's memory;
    physical page 0 comes from `page_zero` (512 words) when given, for handlers that do not
    hold it (the harness's RAM image: see harness/profiles/loongarch64.py).
    """

    def __init__(self, page_zero: U64 | None = None) -> None:
        if page_zero is not None and len(page_zero) != WORDS_PER_FRAME:
            raise ValueError(f"page_zero must hold {WORDS_PER_FRAME} words, not {len(page_zero)}")
        self.page_zero = None if page_zero is None else np.asarray(page_zero, dtype=np.uint64)

    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        """`options` bits 1 (TLB flush per probe) and 2 (PA read-back) change no outcome
        (guests/loongarch64/README.md, "options"); only `user` (PLV3) matters."""
        va = walk.vaddrs
        access = np.asarray(access)
        # 5.2: in page-table mapped mode bits [63:VALEN-1] of a legal address are all equal,
        # otherwise ADE (the manual writes PALEN; VALEN = PALEN = 48 here). Addresses in a
        # direct-mapped window are never checked: the profile never probes them.
        top = va >> np.uint64(VALEN - 1)
        legal = (top == 0) | (top == np.uint64((1 << (65 - VALEN)) - 1))
        leaf = self._walk(table, walk, legal)
        plv = PLV_USER if user else 0
        cause = np.zeros(len(va), dtype=np.uint64)
        decided = np.zeros(len(va), dtype=bool)
        rules: list[tuple[np.ndarray, int | np.ndarray]] = [
            (~legal, np.where(access == FETCH, estat(ADE, ADEF), estat(ADE, ADEM)))
        ]
        rules += self.rules(leaf, access, plv)
        for condition, value in rules:  # the first rule that holds decides
            hit = condition & ~decided
            cause[hit] = np.broadcast_to(np.asarray(value, dtype=np.uint64), cause.shape)[hit]
            decided |= hit
        # BADV holds the faulting address; for a fetch fault it is the PC, i.e. the probe VA
        return Prediction(~decided, cause, np.where(decided, va, np.uint64(0)))

    def rules(self, leaf: U64, access: np.ndarray, plv: int) -> list[tuple[np.ndarray, int | np.ndarray]]:
        """(condition, ESTAT) per check on the TLB half translating each probe, in the order of
        the translation pseudocode of 5.4.4: V, NX (fetch), PLV/RPLV, NR (load), D (store).

        5.4.3 agrees for PPI before PNR and PME; it describes PNX as raised only when the
        privilege is legal, whereas the pseudocode tests NX before PLV: this follows the
        pseudocode (QEMU does too; such fetches are never probed, see the profile)."""
        page_plv = (leaf & np.uint64(PLV_MASK)) >> np.uint64(2)
        # 5.4.2 PLV/RPLV: with RPLV = 0 any level at least as privileged (numerically not
        # greater) may access; with RPLV = 1 only the page's own level
        plv_illegal = np.where(entry_bits(leaf, RPLV), page_plv != plv, page_plv < plv)
        # 5.4.3: V = 0 raises PIL, PIS or PIF by access kind
        invalid_cause = np.select([access == LOAD, access == STORE], [estat(PIL), estat(PIS)], estat(PIF))
        return [
            (~entry_bits(leaf, V), invalid_cause),
            ((access == FETCH) & entry_bits(leaf, NX), estat(PNX)),
            (plv_illegal, estat(PPI)),
            ((access == LOAD) & entry_bits(leaf, NR), estat(PNR)),
            # D is the write permission: a store to D = 0 raises PME unless CSR.MISC.DWPLn
            # disables the check at PLV0-2 (7.4.4); MISC resets to 0 and the guest never sets it
            ((access == STORE) & ~entry_bits(leaf, D), estat(PME)),
        ]

    def _walk(self, table: PageTable64, walk: WalkBatch, legal: np.ndarray) -> U64:
        """The entry each legal address ends at: the PTE of its 4 KiB page (LDPTE reads the
        even/odd pair, the address picks its own), or the huge entry (bit 6 of a directory
        entry, 5.4.5, at any directory level) whose halves LDPTE writes to the TLB with the
        entry's V, D, PLV, NR, NX, RPLV; PPN bits below the page size are ignored (5.4.2)."""
        va = walk.vaddrs
        count = len(va)
        leaf = np.zeros(count, dtype=np.uint64)
        walking = legal.copy()
        # PGD: PGDL when bit VALEN-1 of the address is 0, else PGDH (7.5.7); both are the root
        tables = np.full(count, table.root_paddr, dtype=np.uint64)
        geometry = walk_geometry()
        for level, (base, width) in enumerate(geometry):
            entries = walk.entries[level].copy()
            # the library stopped before this level (hole, entry without address): read on
            missing = walking & (walk.entry_paddrs[level] == 0)
            if missing.any():
                index = (va[missing] >> np.uint64(base)) & np.uint64((1 << width) - 1)
                entries[missing] = self._read(table, tables[missing] + index * np.uint64(8))
            if level == len(geometry) - 1:
                leaf[walking] = entries[walking]
                break
            huge = walking & entry_bits(entries, HUGE)
            leaf[huge] = entries[huge]
            walking &= ~huge
            # a directory entry holds the next table's physical address (5.4.5: bits not in
            # the format are ignored); LDDIR follows any value, 0 included (4.2.5)
            tables = entries & np.uint64(PHYS_ADDR_MASK)
        return leaf

    def _read(self, table: PageTable64, paddrs: U64) -> U64:
        """Words of physical memory that the hardware walk reads beyond the library's walk."""
        if self.page_zero is None:
            return table.handler.gather_words(paddrs)
        words = np.empty(len(paddrs), dtype=np.uint64)
        low = paddrs < np.uint64(FRAME_SIZE)
        words[low] = self.page_zero[(paddrs[low] >> np.uint64(3)).astype(np.intp)]
        if not low.all():
            words[~low] = table.handler.gather_words(paddrs[~low])
        return words

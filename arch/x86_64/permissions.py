"""x86_64 permission model for 4-level and 5-level paging (IA-32e mode, CR4.PAE = 1), as the
probe guest configures it (guests/x86_64/README.md "options": CR0.WP, IA32_EFER.NXE, CR4.SMEP,
CR4.SMAP and EFLAGS.AC per batch; CR4.PKE = 0, CR4.PGE = 0, CR0.AM = 0 always).

Sources (Intel 64 and IA-32 Architectures Software Developer's Manual, Vol. 3A, "SDM"):
- 4.5 "4-Level Paging and 5-Level Paging": the walk, canonical addresses, and the entry formats
  of tables 4-14 to 4-20 (which bits are reserved at which level);
- 4.6 "Access Rights", 4.6.1 "Determination of Access Rights": R/W, U/S and XD combined over
  every paging-structure entry of the walk, with CR0.WP, IA32_EFER.NXE, CR4.SMEP, CR4.SMAP and
  EFLAGS.AC;
- 4.7 "Page-Fault Exceptions": the error code (P, W/R, U/S, RSVD, I/D) and CR2;
- 6.15 "Exception and Interrupt Reference", Interrupt 13 (#GP) and Interrupt 14 (#PF).

The model reads the raw entries of a `WalkBatch`, never the library's flags, so it also judges
entries the library never writes (non-present entries with other bits set, reserved bits,
upper-level entries without R/W or U/S, or with XD). The walk must be the hardware's walk: the
library stops at an entry whose address field is 0, where the MMU would read a table at
physical 0; keep such entries out of scenarios.
"""

from __future__ import annotations

import numpy as np

from ..memory import U64
from ..permissions import FETCH, STORE, Prediction, entry_bits
from ..table import PageTable64, WalkBatch
from .codec import PS, RW, US, XD, P

# mailbox `options` bits (guests/x86_64/README.md "options"); bit 0 (ring 3) arrives as `user`
OPTION_USER = 1 << 0
OPTION_WP = 1 << 1  # CR0.WP
OPTION_NXE = 1 << 2  # IA32_EFER.NXE
OPTION_SMEP = 1 << 3  # CR4.SMEP
OPTION_SMAP = 1 << 4  # CR4.SMAP
OPTION_AC = 1 << 5  # EFLAGS.AC while probing
KNOWN_OPTIONS = 0x3F

# the guest's `cause`: vector << 32 | error code (guests/x86_64/README.md "Probes and results")
VECTOR_GP = 13  # SDM 6.15 Interrupt 13: a non-canonical memory reference or jump target, #GP(0)
VECTOR_PF = 14
PF_P = 1 << 0  # SDM 4.7: 0 = no translation because some P flag was 0; 1 otherwise
PF_WR = 1 << 1  # the access was a write
PF_US = 1 << 2  # the access was a user-mode access (CPL = 3)
PF_RSVD = 1 << 3  # a reserved bit was set in a paging-structure entry
PF_ID = 1 << 4  # an instruction fetch, reported only when IA32_EFER.NXE = 1 or CR4.SMEP = 1
GP_CR2 = 0
"""`addr` of a #GP: the SDM leaves CR2 unchanged (4.7: only #PF loads CR2), and the guest clears
CR2 before the probe loop and after recording each fault, so "unchanged" reads as 0."""

ADDRESS_BITS = 0x000F_FFFF_FFFF_F000  # bits 51:12 of every entry hold an address (tables 4-14..4-20)
RESERVED_1G = 0x3FFF_E000  # PDPTE with PS = 1: bits 29:13 reserved (table 4-17; bit 12 is PAT)
RESERVED_2M = 0x001F_E000  # PDE with PS = 1: bits 20:13 reserved (table 4-18; bit 12 is PAT)

# depth of a level above the PTE: 0 PTE, 1 PDE, 2 PDPTE, 3 PML4E, 4 PML5E (SDM 4.5)
PTE, PDE, PDPTE, PML4E, PML5E = range(5)


def _u64(value: int) -> np.uint64:
    return np.uint64(value)


class X64Permissions:
    """Predicts loads, stores and fetches through x86_64 4-level and 5-level walks.

    `phys_bits` is MAXPHYADDR (CPUID 80000008H:EAX[7:0]): bits 51:MAXPHYADDR of a present entry
    are reserved (SDM 4.5, tables 4-14 to 4-20, "Reserved (must be 0)"). `gbpages` says whether
    the CPU supports 1-GByte pages (CPUID 80000001H:EDX[26]); without it PS = 1 in a PDPTE is
    reserved (table 4-17 note).
    """

    def __init__(self, phys_bits: int = 40, *, gbpages: bool = True) -> None:
        if not 36 <= phys_bits <= 52:
            raise ValueError(f"MAXPHYADDR {phys_bits} is outside 36..52 (SDM 4.1.4)")
        self.phys_bits = phys_bits
        self.gbpages = gbpages
        self.beyond_maxphyaddr = ADDRESS_BITS & ~((1 << phys_bits) - 1)

    # -- the pieces, each from one rule of the SDM --------------------------------------------
    @staticmethod
    def canonical(vaddrs: U64, levels: int) -> np.ndarray:
        """SDM 4.5.1 / Vol. 1 3.3.7.1: bits 63:47 (4-level) or 63:56 (5-level) of a linear address
        must all be equal; otherwise the access raises #GP(0) before any paging."""
        top = vaddrs >> _u64(47 if levels == 4 else 56)
        return np.asarray((top == 0) | (top == (_u64(2**64 - 1) >> _u64(47 if levels == 4 else 56))), dtype=np.bool_)

    def reserved(self, entry: U64, depth: int, nxe: bool) -> np.ndarray:
        """Whether a present entry at `depth` (PTE .. PML5E) has a reserved bit set (SDM 4.5,
        tables 4-14 to 4-20)."""
        mask = self.beyond_maxphyaddr | (0 if nxe else XD)  # XD is reserved when NXE = 0
        bad = entry_bits(entry, mask)
        if depth >= PML4E:
            bad |= entry_bits(entry, PS)  # PML5E/PML4E bit 7: reserved (tables 4-14, 4-15)
        elif depth == PDPTE:
            huge = entry_bits(entry, PS)
            bad |= huge & (entry_bits(entry, RESERVED_1G) | (not self.gbpages))
        elif depth == PDE:
            bad |= entry_bits(entry, PS) & entry_bits(entry, RESERVED_2M)
        return bad

    @staticmethod
    def allowed(
        access: np.ndarray, user: bool, options: int, writable: np.ndarray, user_page: np.ndarray, no_fetch: np.ndarray
    ) -> np.ndarray:
        """SDM 4.6.1, for a completed translation. `writable`: R/W = 1 in every entry of the walk;
        `user_page`: U/S = 1 in every entry (a user-mode address); `no_fetch`: XD = 1 in some
        entry (only when NXE = 1, 4.6.1 "instruction fetches")."""
        store, fetch, data = access == STORE, access == FETCH, access != FETCH
        if user:
            # user-mode accesses: never to a supervisor-mode address; writes need R/W = 1
            # everywhere whatever CR0.WP; fetches need XD = 0 everywhere (NXE = 1)
            refused = ~user_page | (store & ~writable) | (fetch & no_fetch)
            return np.asarray(~refused, dtype=np.bool_)
        wp, smep = bool(options & OPTION_WP), bool(options & OPTION_SMEP)
        smap_blocks = bool(options & OPTION_SMAP) and not options & OPTION_AC
        # supervisor-mode accesses: SMAP (EFLAGS.AC = 0) forbids data accesses to user-mode
        # addresses; with CR0.WP = 1 a write needs R/W = 1 everywhere, with WP = 0 any write is
        # allowed (supervisor- and user-mode addresses alike); SMEP forbids fetches from
        # user-mode addresses; XD forbids fetches (NXE = 1)
        refused = (data & user_page & smap_blocks) | (store & ~writable & wp)
        refused |= fetch & ((user_page & smep) | no_fetch)
        return np.asarray(~refused, dtype=np.bool_)

    @staticmethod
    def error_code(access: np.ndarray, user: bool, options: int) -> U64:
        """The access-describing bits of a #PF error code (SDM 4.7): W/R for writes, U/S for
        user-mode accesses, I/D for fetches when NXE = 1 or SMEP = 1."""
        code = np.where(access == STORE, _u64(PF_WR), _u64(0))
        if user:
            code |= _u64(PF_US)
        if options & (OPTION_NXE | OPTION_SMEP):
            code |= np.where(access == FETCH, _u64(PF_ID), _u64(0))
        return code.astype(np.uint64)

    # -- the whole prediction -----------------------------------------------------------------
    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        if options & ~KNOWN_OPTIONS:
            raise ValueError(f"unknown x86_64 option bits {options & ~KNOWN_OPTIONS:#x} (known: {KNOWN_OPTIONS:#x})")
        if table.levels not in (4, 5):
            raise ValueError(f"x86_64 paging has 4 or 5 levels, not {table.levels}")
        access = np.asarray(access)
        count = len(walk.vaddrs)
        nxe = bool(options & OPTION_NXE)
        canonical = self.canonical(walk.vaddrs, table.levels)
        walking = canonical.copy()
        not_present = np.zeros(count, dtype=bool)
        reserved = np.zeros(count, dtype=bool)
        translated = np.zeros(count, dtype=bool)
        writable = np.ones(count, dtype=bool)
        user_page = np.ones(count, dtype=bool)
        no_fetch = np.zeros(count, dtype=bool)
        for level in range(table.levels):
            entry = walk.entries[level]
            depth = table.levels - 1 - level
            present = entry_bits(entry, P)
            not_present |= walking & ~present  # reserved bits of a non-present entry are not checked (4.7)
            walking &= present
            bad = self.reserved(entry, depth, nxe)
            reserved |= walking & bad
            walking &= ~bad
            # every entry controlling the translation counts, not only the leaf (4.6.1)
            writable &= ~walking | entry_bits(entry, RW)
            user_page &= ~walking | entry_bits(entry, US)
            if nxe:
                no_fetch |= walking & entry_bits(entry, XD)
            # the leaf: a PTE, or a PDE/PDPTE with PS = 1 (4.5.4 / 4.5.5)
            leaf = walking & (entry_bits(entry, PS) if depth in (PDE, PDPTE) else np.full(count, depth == PTE))
            translated |= leaf
            walking &= ~leaf
        ok = translated & self.allowed(access, user, options, writable, user_page, no_fetch)
        code = self.error_code(access, user, options)
        code |= np.where(reserved | (translated & ~ok), _u64(PF_P), _u64(0))  # P = 0 only when not present
        code |= np.where(reserved, _u64(PF_RSVD), _u64(0))
        page_fault = canonical & ~ok
        cause = np.where(page_fault, (_u64(VECTOR_PF) << _u64(32)) | code, _u64(0))
        cause = np.where(canonical, cause, _u64(VECTOR_GP << 32))  # #GP(0): error code 0 (6.15)
        addr = np.where(page_fault, walk.vaddrs, _u64(0))  # #PF loads CR2 with the linear address (4.7)
        addr = np.where(canonical, addr, _u64(GP_CR2))
        return Prediction(ok, cause.astype(np.uint64), addr.astype(np.uint64))


def describe_cause(cause: int) -> str:
    """A human decoding of the guest's `cause` word (vector << 32 | error code)."""
    vector, code = cause >> 32, cause & 0xFFFF_FFFF
    if vector == VECTOR_GP:
        return f"#GP({code:#x}) (non-canonical address)"
    if vector != VECTOR_PF:
        return f"vector {vector} error code {code:#x}"
    names = ((PF_P, "P"), (PF_WR, "W"), (PF_US, "U"), (PF_RSVD, "RSVD"), (PF_ID, "I/D"))
    bits = [name for bit, name in names if code & bit]
    kind = "protection" if code & PF_P else "not present"
    if code & PF_RSVD:
        kind = "reserved bit"
    return f"#PF error code {code:#x} [{'|'.join(bits) or '-'}] ({kind})"

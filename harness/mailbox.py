"""The mailbox ABI of guests/ABI.md, on the harness side: control block offsets, probe words,
result records and tag words."""

from __future__ import annotations

import enum

import numpy as np

MAGIC = int.from_bytes(b"PTPROBE1", "little")
ABI_VERSION = 1

# control block offsets (ABI.md, "Control block")
MAGIC_OFFSET = 0x00
ABI_OFFSET = 0x08
GO = 0x10
DONE = 0x18
COMMAND = 0x20
ROOT0 = 0x28
ROOT1 = 0x30
MODE = 0x38
OPTIONS = 0x40
PROBES = 0x48
RESULTS = 0x50
COUNT = 0x58
PROGRESS = 0x60
ERROR = 0x68
ERROR_CAUSE = 0x70
ERROR_PC = 0x78
ERROR_ADDR = 0x80

COMMAND_RUN = 1
COMMAND_POWER_OFF = 2
OPTION_USER = 1 << 0  # bit 0 of `options` on every architecture

RESULT_DTYPE = np.dtype([("outcome", "<u8"), ("value", "<u8"), ("cause", "<u8"), ("addr", "<u8")])
RESULT_BYTES = RESULT_DTYPE.itemsize
OUTCOME_NOT_RUN, OUTCOME_OK, OUTCOME_FAULT = 0, 1, 2


class Access(enum.IntEnum):
    """The access kind in bits 1:0 of a probe word."""

    LOAD = 0
    STORE = 1
    FETCH = 2

    @property
    def letter(self) -> str:
        """'r', 'w' or 'x'."""
        return "rwx"[self]


def probe_words(vaddrs: np.ndarray, access: np.ndarray) -> np.ndarray:
    """Probe words: the 8-byte aligned virtual address with the access kind in bits 1:0."""
    return (vaddrs & ~np.uint64(7)) | access.astype(np.uint64)


def tag_words(paddrs: np.ndarray, trap_instruction: int) -> np.ndarray:
    """Tag words for physical addresses: trap instruction low, physical address >> 3 high."""
    return (np.uint64(trap_instruction) | ((paddrs >> np.uint64(3)) << np.uint64(32))).astype(np.uint64)


def tag_paddr(value: int) -> int:
    """The physical address a loaded tag word names."""
    return (value >> 32) << 3

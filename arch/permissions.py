"""The permission-model interface: what access the hardware allows through a stored walk, and
which fault it raises otherwise — the architectural prediction the harness checks a real MMU
against. One model per architecture lives in `arch/<arch>/permissions.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .memory import U64
from .table import PageTable64, WalkBatch

LOAD, STORE, FETCH = 0, 1, 2
"""Access kinds, as in the probe ABI (bits 1:0 of a probe word)."""


@dataclass(frozen=True)
class Prediction:
    """Per probe: whether the access completes, else the raw architectural cause (in the format
    the architecture's README gives for the guest's `cause` field) and the fault address."""

    ok: np.ndarray
    cause: U64
    addr: U64

    @classmethod
    def empty(cls, count: int) -> Prediction:
        """All-ok with zero causes, to be filled in by a model."""
        return cls(np.ones(count, dtype=bool), np.zeros(count, dtype=np.uint64), np.zeros(count, dtype=np.uint64))


class PermissionModel(Protocol):
    """Predicts the outcome of accesses through walks of one table geometry."""

    def predict(self, table: PageTable64, walk: WalkBatch, access: np.ndarray, user: bool, options: int) -> Prediction:
        """`walk` comes from `table.walk_many` (or a merge of same-geometry tables); `access`
        holds LOAD/STORE/FETCH per address; `user` selects the unprivileged level; `options` are
        the architecture's batch option bits (bit 0, the privilege, is given as `user`)."""
        ...


def entry_bits(entries: U64, mask: int) -> np.ndarray:
    """Whether any bit of `mask` is set in each entry."""
    return np.asarray((entries & np.uint64(mask)) != 0, dtype=np.bool_)

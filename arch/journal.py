"""Undo log that makes every page table operation atomic.

While an operation runs, each word it overwrites, each run of words it overwrites and each frame
it allocates (with the frame's former contents) is recorded; if the operation raises, the log is
replayed newest first, so the memory and the frame allocator end exactly as they were.
"""

from __future__ import annotations

import numpy as np

from .memory import U64, PagingHandler

_WORD, _RUN, _FRAME = 0, 1, 2


class Journal:
    """What one operation changed, in order."""

    __slots__ = ("_handler", "_log")

    def __init__(self, handler: PagingHandler) -> None:
        self._handler = handler
        self._log: list[tuple[int, int, object]] = []

    def word(self, paddr: int, old: int) -> None:
        """Remember that the word at `paddr` held `old`."""
        self._log.append((_WORD, paddr, old))

    def run(self, paddr: int, old: U64) -> None:
        """Remember the words starting at `paddr` (a copy is kept)."""
        self._log.append((_RUN, paddr, np.array(old, dtype=np.uint64)))

    def frame(self, paddr: int, old: U64) -> None:
        """Remember that the operation allocated the frame at `paddr`, which held `old` (a copy
        is kept, so rolling back restores even the bytes of the freed frame)."""
        self._log.append((_FRAME, paddr, np.array(old, dtype=np.uint64)))

    def roll_back(self) -> None:
        """Undo everything, newest first."""
        for kind, paddr, old in reversed(self._log):
            if kind == _WORD:
                self._handler.write_word(paddr, old)  # type: ignore[arg-type]
            elif kind == _RUN:
                self._handler.write_words(paddr, old)  # type: ignore[arg-type]
            else:
                self._handler.write_words(paddr, old)  # type: ignore[arg-type]
                self._handler.dealloc_frame(paddr)
        self._log.clear()

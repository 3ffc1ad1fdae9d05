"""TLB-flush records (the crate's v0.5 `TlbFlush` / `TlbFlushAll` API).

An operation that changes a mapping returns a record; the caller decides whether to `flush()`
(which calls the table metadata's `flush_tlb` hook) or `ignore()` it.
"""

from __future__ import annotations

from collections.abc import Callable

FlushHook = Callable[[int | None], None]


class TlbFlush:
    """A pending flush of the TLB entry of one virtual address."""

    __slots__ = ("vaddr", "_hook")

    def __init__(self, vaddr: int, hook: FlushHook) -> None:
        self.vaddr = vaddr
        self._hook = hook

    def flush(self) -> None:
        """Flush the TLB entry for `vaddr` through the metadata's hook."""
        self._hook(self.vaddr)

    def ignore(self) -> None:
        """Drop the record without flushing (the caller flushes some other way)."""

    def __repr__(self) -> str:
        return f"TlbFlush({self.vaddr:#x})"


class TlbFlushAll:
    """A pending flush of the whole TLB."""

    __slots__ = ("_hook",)

    def __init__(self, hook: FlushHook) -> None:
        self._hook = hook

    def flush(self) -> None:
        """Flush the whole TLB through the metadata's hook."""
        self._hook(None)

    def ignore(self) -> None:
        """Drop the record without flushing."""

    def __repr__(self) -> str:
        return "TlbFlushAll()"

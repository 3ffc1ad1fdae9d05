"""Errors raised by page table operations.

The first five are the crate's `PagingError` variants; the others are ours, for input the crate
silently accepted and mishandled (see DESIGN.md, KNOWN-DEFECTS). A failed operation never changes
the table or the frame allocator.
"""

from __future__ import annotations


class PagingError(Exception):
    """Base class of every page table error; the message names the value and the rule."""


class NoMemory(PagingError):
    """The paging handler has no free frame for a new table."""


class NotAligned(PagingError):
    """An address or size is not aligned to the page size it must be aligned to."""


class NotMapped(PagingError):
    """The virtual address has no present mapping."""


class AlreadyMapped(PagingError):
    """The slot for a new mapping is already in use (a leaf or a next-level table)."""


class MappedToHugePage(PagingError):
    """A huge page lies on the path to, or across, the requested page."""


class InvalidAddress(PagingError):
    """A virtual address is not canonical for the table, or a physical address is out of range."""


class InvalidFlags(PagingError):
    """The flags are empty or cannot be encoded faithfully by the architecture."""


class UnsupportedPageSize(PagingError):
    """The page size is not one the table supports."""

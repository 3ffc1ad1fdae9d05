"""`PageTable64`: the generic multi-level page table (page_table_multiarch's `PageTable64`).

One implementation serves every architecture; a subclass supplies the metadata (levels, address
widths) and the entry codec. Behaviour follows page_table_multiarch 0.6.1 for every in-spec input;
where the crate misbehaves (DESIGN.md, KNOWN-DEFECTS) this class differs on purpose:

- addresses are validated (`InvalidAddress`) instead of being silently index-masked;
- flags the architecture cannot encode are rejected (`InvalidFlags`);
- an empty entry is never mistaken for a huge page (the crate's AArch64 bug);
- `walk()` descends every table pointer, including LoongArch's flag-less directory entries;
- every operation is atomic: on any error the table and the frame allocator are unchanged;
- `remap`/`protect` of an unmapped page fail with `NotMapped` instead of writing a hole;
- region operations that would cut a huge page fail with `MappedToHugePage` (the crate panics);
- empty intermediate tables can be reclaimed on unmap (`free_empty_tables=True`, off by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .codec import PteCodec
from .errors import (
    AlreadyMapped,
    InvalidAddress,
    MappedToHugePage,
    NoMemory,
    NotAligned,
    NotMapped,
    PagingError,
    UnsupportedPageSize,
)
from .flags import MappingFlags, PageSize
from .flush import TlbFlush, TlbFlushAll
from .journal import Journal
from .memory import U64, WORDS_PER_FRAME, PagingHandler, WordIndexer
from .metadata import MASK64, PagingMetaData

ENTRY_COUNT = 512
PAGE_4K = 0x1000
WalkCallback = Callable[[int, int, int, int], None]
PaddrSource = int | Callable[[int], int]


@dataclass(frozen=True)
class UnmapResult:
    """What `unmap` removed: base physical address, flags and size of the page, plus the flush
    record. Unpacks as `paddr, flags, size = pt.unmap(va)`."""

    paddr: int
    flags: MappingFlags
    size: PageSize
    tlb: TlbFlush

    def __iter__(self) -> Iterator[object]:
        return iter((self.paddr, self.flags, self.size))

    def flush(self) -> None:
        """Flush the TLB entry of the unmapped address."""
        self.tlb.flush()


@dataclass(frozen=True)
class QueryBatch:
    """Result of `query_many`: one element per virtual address. Unpacks as
    `paddr, flags, size, mapped = pt.query_many(vaddrs)`; where `mapped` is False the other
    arrays hold 0."""

    paddr: U64
    flags: np.ndarray
    size: U64
    mapped: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.paddr, self.flags, self.size, self.mapped))


@dataclass(frozen=True)
class WalkBatch:
    """Result of `walk_many`: the raw path of every virtual address.

    `entries[l, i]` / `entry_paddrs[l, i]` are the entry read at level `l` (root = 0) for address
    `i` and where it lies (0 beyond the end of the walk); `leaf_level[i]` is the level of the leaf
    found (-1 when the walk ended in a hole or an invalid address); `valid[i]` says whether the
    address is one the table translates at all.
    """

    vaddrs: U64
    entries: U64
    entry_paddrs: U64
    leaf_level: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class MappingList:
    """Every present leaf of a table: parallel arrays of virtual address, physical address,
    MappingFlags value and page size, in walk order."""

    vaddr: U64
    paddr: U64
    flags: np.ndarray
    size: U64

    def __len__(self) -> int:
        return len(self.vaddr)


@dataclass(frozen=True)
class _Run:
    """`count` consecutive pages of `size` from `vaddr`; physically contiguous from `paddr`
    unless `paddrs` lists each page's address."""

    vaddr: int
    size: PageSize
    count: int
    paddr: int
    paddrs: U64 | None


class _Atomic:
    """Context manager running one operation under a journal (re-entrant: the outermost wins)."""

    __slots__ = ("_table", "_owner")

    def __init__(self, table: PageTable64) -> None:
        self._table = table
        self._owner = False

    def __enter__(self) -> None:
        self._owner = self._table._journal is None
        if self._owner:
            self._table._journal = Journal(self._table.handler)

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        if self._owner:
            journal = self._table._journal
            self._table._journal = None
            if kind is not None and journal is not None:
                journal.roll_back()


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__} {value!r}")
    return int(value)


def _address_array(vaddrs: object) -> U64:
    """Addresses as a flat uint64 array. Integer arrays pass through (a signed one must not hold
    negative values); anything else is read element by element: InvalidAddress for integers
    outside 0..2**64-1, TypeError for values that are not integers."""
    array = vaddrs if isinstance(vaddrs, np.ndarray) else np.array(vaddrs, dtype=object)
    kind = array.dtype.kind
    if kind == "u":
        return np.ascontiguousarray(array, dtype=np.uint64).reshape(-1)
    if kind == "i":
        if array.size and int(array.min()) < 0:
            raise InvalidAddress(f"virtual address {int(array.min()):#x} lies outside 0..2**64-1")
        return np.ascontiguousarray(array, dtype=np.uint64).reshape(-1)
    if kind != "O":
        raise TypeError(f"virtual addresses must be integers, not {array.dtype} values")
    values = array.reshape(-1).tolist()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"virtual addresses must be integers, not {type(value).__name__} {value!r}")
        if not 0 <= value <= MASK64:
            raise InvalidAddress(f"virtual address {value:#x} lies outside 0..2**64-1")
    return np.array(values, dtype=np.uint64)


class PageTable64:
    """A 64-bit multi-level page table with 512-entry tables, stored through a `PagingHandler`.

    Construction allocates and zeroes the root (the crate's `try_new`). Use as a context manager
    (or call `free()`) to return every table frame to the handler.
    """

    METADATA: ClassVar[type[PagingMetaData]] = PagingMetaData
    CODEC: ClassVar[type[PteCodec]] = PteCodec

    def __init__(
        self,
        handler: PagingHandler,
        *,
        metadata: PagingMetaData | None = None,
        codec: PteCodec | None = None,
    ) -> None:
        self.handler = handler
        self.metadata = metadata if metadata is not None else self.METADATA()
        self.codec = codec if codec is not None else self.CODEC()
        levels = self.metadata.LEVELS
        self._levels = levels
        self._last = levels - 1
        self._shifts = tuple(12 + 9 * (levels - 1 - level) for level in range(levels))
        # leaf sizes by level: 4K at the last level, 2M above it, 1G above that (4K granule)
        self._size_of_level: list[PageSize | None] = [None] * levels
        for size, depth in ((PageSize.SIZE_4K, 0), (PageSize.SIZE_2M, 1), (PageSize.SIZE_1G, 2)):
            if depth < levels:
                self._size_of_level[self._last - depth] = size
        self._level_of_size = {s: lv for lv, s in enumerate(self._size_of_level) if s is not None}
        self._top_shift = self.metadata.top_shift
        self._valid_tops = self.metadata.valid_tops
        self._huge_mask = self.codec.HUGE_MASK
        self._huge_when_set = self.codec.HUGE_WHEN_SET
        self._present_mask, self._present_value = self.codec.PRESENT
        self._read = handler.read_word
        word_index = getattr(handler, "word_index", None)
        self._words: memoryview | WordIndexer
        self._words_base: int
        self._words, self._words_base = word_index() if word_index else (WordIndexer(handler), 0)
        self._write = handler.write_word
        self._journal: Journal | None = None
        self._atomic = _Atomic(self)
        self._borrowed: set[int] = set()
        self._extra_frames: list[int] = []
        self._freed = False
        self._steps_4k = np.arange(ENTRY_COUNT, dtype=np.uint64) * np.uint64(self.codec.encode_pa(PAGE_4K))
        self._empty = [0] * levels
        self._empty_tables: dict[int, U64] = {}
        root = self._alloc_frame()
        self._empty = self._make_empty_entries()
        self._directory_levels = tuple(zip(range(self._last), self._shifts, self._empty, strict=False))
        assert not self.codec.is_present(self._empty[self._last]), "an empty leaf slot must not be present"
        self._fill_table(root, 0)
        self._root = root

    # -- construction hooks ------------------------------------------------------------------
    def _make_empty_entries(self) -> list[int]:
        """The value of an empty entry at each level (0 everywhere unless a subclass says so)."""
        return [0] * self._levels

    # -- public properties -------------------------------------------------------------------
    @property
    def root_paddr(self) -> int:
        """Physical address of the root table."""
        self._check_alive()
        return self._root

    @property
    def levels(self) -> int:
        """Number of translation levels."""
        return self._levels

    @property
    def page_sizes(self) -> tuple[PageSize, ...]:
        """Leaf sizes this table can map, smallest first."""
        return tuple(sorted(self._level_of_size))

    def level_of_size(self, size: PageSize) -> int:
        """The level (root = 0) at which leaves of `size` live."""
        return self._level_of_size[self._check_page_size(size)]

    def size_of_level(self, level: int) -> PageSize | None:
        """The leaf size at `level`, or None where no leaf can live."""
        return self._size_of_level[self._check_level(level)]

    def empty_entry(self, level: int) -> int:
        """The value an unused entry at `level` holds."""
        return self._empty[self._check_level(level)]

    def entry_span(self, level: int) -> int:
        """Bytes of virtual address space one entry at `level` covers."""
        return 1 << self._shifts[self._check_level(level)]

    def index(self, vaddr: int, level: int) -> int:
        """The index of `vaddr`'s entry in its table at `level`."""
        return (_as_int("vaddr", vaddr) >> self._shifts[self._check_level(level)]) & (ENTRY_COUNT - 1)

    def _check_level(self, level: object) -> int:
        value = _as_int("level", level)
        if not 0 <= value < self._levels:
            raise ValueError(f"level {value} is outside 0..{self._levels - 1} (the root is level 0)")
        return value

    # -- validation --------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self._freed:
            raise PagingError("the page table was freed; it can no longer be used")

    def _check_va(self, vaddr: object) -> int:
        va = vaddr if type(vaddr) is int else _as_int("vaddr", vaddr)
        if va < 0 or va > MASK64 or (va >> self._top_shift) not in self._valid_tops:
            raise InvalidAddress(
                f"virtual address {va:#x} is not translated by this table: {self.metadata.describe_va_rule()}"
            )
        return va

    def _check_range(self, vaddr: object, size: object) -> tuple[int, int]:
        va = self._check_va(vaddr)
        length = _as_int("size", size)
        if length < 0:
            raise ValueError(f"size {length:#x} is negative")
        if va % PAGE_4K or length % PAGE_4K:
            raise NotAligned(f"region start {va:#x} and size {length:#x} must be 4K-aligned")
        if length:
            if not self.metadata.range_is_valid(va, va + length - 1):
                raise InvalidAddress(
                    f"region [{va:#x}, {va + length:#x}) leaves the address range this table "
                    f"translates: {self.metadata.describe_va_rule()}"
                )
        return va, length

    def _check_pa(self, paddr: object, length: int = 1) -> int:
        pa = paddr if type(paddr) is int else _as_int("paddr", paddr)
        if pa < 0 or pa + length > self.metadata.pa_limit:
            raise InvalidAddress(
                f"physical address range [{pa:#x}, {pa + length:#x}) is outside the "
                f"{self.metadata.PA_MAX_BITS}-bit physical address space"
            )
        return pa

    def _check_page_size(self, size: object) -> PageSize:
        value = _as_int("page size", size)
        try:
            page_size = PageSize(value)
        except ValueError:
            raise UnsupportedPageSize(f"page size {value:#x} is not one of 4K, 2M or 1G") from None
        if page_size not in self._level_of_size:
            raise UnsupportedPageSize(f"{page_size.label} pages are not supported by this table")
        return page_size

    # -- low-level helpers -------------------------------------------------------------------
    def _alloc_frame(self) -> int:
        frame = self.handler.alloc_frame()
        if frame is None:
            raise NoMemory("the paging handler has no free frame for a page table")
        if self._journal is not None:
            self._journal.frame(frame, self.handler.read_words(frame, WORDS_PER_FRAME))
        return frame

    def _fill_table(self, table: int, level: int) -> None:
        self.handler.write_words(table, self._empty_table(level))

    def _empty_table(self, level: int) -> U64:
        """A read-only array of 512 empty entries for `level` (cached)."""
        cached = self._empty_tables.get(level)
        if cached is None or int(cached[0]) != self._empty[level]:
            cached = np.full(WORDS_PER_FRAME, self._empty[level], dtype=np.uint64)
            cached.flags.writeable = False
            self._empty_tables[level] = cached
        return cached

    def _set(self, epa: int, value: int) -> None:
        if self._journal is not None:
            self._journal.word(epa, self._read(epa))
        self._write(epa, value)

    def _is_pointer(self, entry: int, level: int) -> bool:
        """Whether a non-leaf-level entry points to a next-level table (crate: `next_table`)."""
        return (
            level < self._last
            and entry != self._empty[level]
            and not self.codec.is_huge(entry)
            and self.codec.paddr(entry) != 0
        )

    def _is_live(self, entry: int) -> bool:
        """Whether the MMU follows this table entry (its present bit, where it has one)."""
        mask, value = self.codec.TABLE_PRESENT or (0, 0)
        return entry & mask == value

    def _is_leaf(self, entry: int, level: int) -> bool:
        """Whether an entry at `level` is a (possibly non-present) leaf."""
        if entry == self._empty[level]:
            return False
        return level == self._last or self.codec.is_huge(entry)

    def _find(self, va: int) -> tuple[int, int, int]:
        """Follow table pointers from the root; return (entry address, entry, level) of the first
        entry that is not a pointer (a leaf, a hole or garbage). The hot path of every scalar
        operation, so it works on word indexes into the handler's memory."""
        words = self._words
        base_index = self._words_base >> 3
        pa_field = self.codec.PA_FIELD
        index_shift = 3 - self.codec.PA_SHIFT  # entry address field -> word index
        huge_mask = self._huge_mask
        huge_flip = 0 if self._huge_when_set else huge_mask  # (entry & mask) ^ flip != 0: huge
        live_mask, live_value = self.codec.TABLE_PRESENT or (0, 0)
        index = (self._root >> 3) - base_index
        try:
            for level, shift, empty in self._directory_levels:
                slot = index + ((va >> shift) & 511)
                entry = words[slot]
                if entry == empty or (entry & huge_mask) ^ huge_flip or (entry & live_mask) != live_value:
                    return (slot + base_index) << 3, entry, level
                target = entry & pa_field
                if not target:  # crate: a pointer to physical 0 counts as not mapped
                    return (slot + base_index) << 3, entry, level
                index = (target >> index_shift) - base_index
                if index < 0:
                    raise IndexError
            slot = index + ((va >> 12) & 511)
            return (slot + base_index) << 3, words[slot], self._last
        except IndexError:
            raise ValueError(f"the walk of {va:#x} reached an entry outside the paging handler's memory") from None

    def _leaf(self, va: int) -> tuple[int, int, int, PageSize]:
        """The present leaf translating `va`: (entry address, entry, level, size)."""
        epa, entry, level = self._find(va)
        if (entry & self._present_mask) != self._present_value or not self._is_leaf(entry, level):
            raise NotMapped(f"virtual address {va:#x} is not mapped")
        size = self._size_of_level[level]
        if size is None:
            raise MappedToHugePage(
                f"entry {entry:#x} at level {level} on the path of {va:#x} claims to be a huge "
                "page at a level that has none"
            )
        return epa, entry, level, size

    def _table_at(self, va: int, level: int) -> tuple[int, bool]:
        """The table at `level` on `va`'s path, creating missing tables above it.

        Returns (table address, whether it was created by this call). Works on word indexes
        into the handler's memory, like `_find`.
        """
        codec = self.codec
        words = self._words
        base_index = self._words_base >> 3
        pa_field = codec.PA_FIELD
        index_shift = 3 - codec.PA_SHIFT
        huge_mask = self._huge_mask
        huge_flip = 0 if self._huge_when_set else huge_mask
        empty = self._empty
        index = (self._root >> 3) - base_index
        fresh = False
        for lv in range(level):
            slot = index + ((va >> self._shifts[lv]) & 511)
            entry = words[slot]
            if entry == empty[lv]:
                new = self._alloc_frame()
                self._fill_table(new, lv + 1)
                self._set((slot + base_index) << 3, codec.table(new))
                index, fresh = (new >> 3) - base_index, True
            elif (entry & huge_mask) ^ huge_flip:
                raise MappedToHugePage(f"a huge page at level {lv} (entry {entry:#x}) already maps {va:#x}")
            else:
                target = entry & pa_field
                if not target:
                    raise NotMapped(f"entry {entry:#x} at level {lv} points to physical 0")
                index = (target >> index_shift) - base_index
                if index < 0:
                    self._read(target << codec.PA_SHIFT)  # raises the handler's error naming it
        return (index + base_index) << 3, fresh

    def _flush_hook(self, vaddr: int | None) -> None:
        self.metadata.flush_tlb(vaddr)

    def _pa_of(self, paddr: PaddrSource, va: int) -> int:
        return self._check_pa(paddr(va) if callable(paddr) else paddr)

    # -- single-page operations --------------------------------------------------------------
    def map(self, vaddr: int, paddr: int, size: PageSize, flags: MappingFlags) -> TlbFlush:
        """Map the page of `size` at `vaddr` to the frame at `paddr` (aligned down to `size`,
        as the crate does) with `flags`.

        Raises NotAligned (vaddr not aligned to size), InvalidAddress, InvalidFlags,
        UnsupportedPageSize, AlreadyMapped (slot in use, even by an empty table),
        MappedToHugePage (a huge page covers vaddr) or NoMemory.
        """
        if self._freed:
            self._check_alive()
        va = self._check_va(vaddr)
        level = self._level_of_size.get(size) if type(size) is PageSize or type(size) is int else None
        page_size = self._check_page_size(size) if level is None else self._size_of_level[level]
        assert page_size is not None
        if va & (page_size - 1):
            raise NotAligned(f"virtual address {va:#x} is not aligned to the {page_size.label} page size")
        pa = self._check_pa(paddr) & ~(page_size - 1)
        entry = self.codec.page(pa, flags, page_size)
        level = self._level_of_size[page_size]
        with self._atomic:
            table, _ = self._table_at(va, level)
            epa = table + (((va >> self._shifts[level]) & 511) << 3)
            if self._read(epa) != self._empty[level]:
                raise AlreadyMapped(f"the {page_size.label} slot for {va:#x} is in use (entry {self._read(epa):#x})")
            self._set(epa, entry)
        return TlbFlush(va, self._flush_hook)

    def query(self, vaddr: int) -> tuple[int, MappingFlags, PageSize]:
        """(physical address of `vaddr` including its offset in the page, flags, page size).

        Raises NotMapped unless a present leaf translates `vaddr`.
        """
        if self._freed:
            self._check_alive()
        va = self._check_va(vaddr)
        _, entry, _, size = self._leaf(va)
        codec = self.codec
        base = ((entry & codec.PA_FIELD) << codec.PA_SHIFT) & ~(size - 1)  # see _resolve
        return base + (va & (size - 1)), codec.flags(entry), size

    def unmap(self, vaddr: int, *, free_empty_tables: bool = False) -> UnmapResult:
        """Remove the whole (huge) page that maps `vaddr`; return its base PA, flags and size.

        With `free_empty_tables`, intermediate tables left empty are freed too (the crate never
        frees them, which blocks later huge mappings in the same range).
        """
        self._check_alive()
        va = self._check_va(vaddr)
        epa, entry, level, size = self._leaf(va)
        with self._atomic:
            self._set(epa, self._empty[level])
        if free_empty_tables:
            self._reclaim(va, level)
        base = self.codec.paddr(entry) & ~(size - 1)
        result = UnmapResult(base, self.codec.flags(entry), size, TlbFlush(va, self._flush_hook))
        return result

    def protect(self, vaddr: int, flags: MappingFlags) -> tuple[PageSize, TlbFlush]:
        """Replace the flags of the page mapping `vaddr`; return its size and a flush record."""
        self._check_alive()
        va = self._check_va(vaddr)
        epa, entry, _, size = self._leaf(va)
        with self._atomic:
            self._set(epa, self.codec.with_flags(entry, flags, size))
        return size, TlbFlush(va, self._flush_hook)

    def remap(self, vaddr: int, paddr: int, flags: MappingFlags) -> tuple[PageSize, TlbFlush]:
        """Point the page mapping `vaddr` at `paddr` (aligned down to its size) with `flags`."""
        self._check_alive()
        va = self._check_va(vaddr)
        epa, _, _, size = self._leaf(va)
        pa = self._check_pa(paddr) & ~(size - 1)
        with self._atomic:
            self._set(epa, self.codec.page(pa, flags, size))
        return size, TlbFlush(va, self._flush_hook)

    # -- region operations -------------------------------------------------------------------
    def map_region(
        self,
        vaddr: int,
        paddr: PaddrSource,
        size: int,
        flags: MappingFlags,
        allow_huge: bool = True,
    ) -> TlbFlushAll:
        """Map `size` bytes from `vaddr` to `paddr` (an address, or a function of the virtual
        address as in the crate's `get_paddr`).

        With `allow_huge`, each step uses 1G, then 2M pages where the virtual address, the
        physical address and the remaining size allow (the crate's choice); otherwise 4K. All or
        nothing: if any page fails, nothing is mapped.
        """
        self._check_alive()
        va, length = self._check_range(vaddr, size)
        flags = MappingFlags(flags)
        self.codec.template(flags, PageSize.SIZE_4K)  # InvalidFlags before anything else
        if isinstance(paddr, (int, np.integer)) and not isinstance(paddr, bool):
            pa = self._check_pa(paddr, length)
            if pa % PAGE_4K:
                raise NotAligned(f"physical address {pa:#x} of the region is not 4K-aligned")
        elif not callable(paddr):
            raise TypeError(f"paddr must be an integer or a callable, not {type(paddr).__name__}")
        with self._atomic:
            for run in self._plan(va, paddr, length, allow_huge):
                if run.size is PageSize.SIZE_4K:
                    self._fill_4k(run, flags)
                else:
                    for i in range(run.count):
                        self._map_huge(run.vaddr + i * run.size, run.paddr + i * run.size, run.size, flags)
        return TlbFlushAll(self._flush_hook)

    def _pick_size(self, va: int, pa: int, remaining: int, allow_huge: bool) -> PageSize:
        if allow_huge:
            for size in (PageSize.SIZE_1G, PageSize.SIZE_2M):
                if size in self._level_of_size and va % size == 0 and pa % size == 0 and remaining >= size:
                    return size
        return PageSize.SIZE_4K

    def _plan(self, va: int, paddr: PaddrSource, length: int, allow_huge: bool) -> Iterator[_Run]:
        """Runs of equal-sized pages, in the order the crate would map them one by one."""
        end = va + length
        if not callable(paddr):
            offset = int(paddr) - va  # linear: pa = va + offset
            while va < end:
                size = self._pick_size(va, va + offset, end - va, allow_huge)
                count = (end - va) // size
                for bigger in (PageSize.SIZE_2M, PageSize.SIZE_1G):
                    # the crate re-decides every step: a bigger size wins at its next boundary
                    if allow_huge and bigger > size and bigger in self._level_of_size and offset % bigger == 0:
                        steps = ((-va) % bigger) // size
                        if steps:
                            count = min(count, steps)
                yield _Run(va, size, count, va + offset, None)
                va += count * size
            return
        pending: list[int] = []
        pending_va = va
        while va < end:
            pa = self._pa_of(paddr, va)
            size = self._pick_size(va, pa, end - va, allow_huge)
            if size is PageSize.SIZE_4K:
                if not pending:
                    pending_va = va
                pending.append(pa & ~(PAGE_4K - 1))
            else:
                if pending:
                    yield _Run(
                        pending_va, PageSize.SIZE_4K, len(pending), pending[0], np.array(pending, dtype=np.uint64)
                    )
                    pending = []
                yield _Run(va, size, 1, pa & ~(size - 1), None)
            va += size
        if pending:
            yield _Run(pending_va, PageSize.SIZE_4K, len(pending), pending[0], np.array(pending, dtype=np.uint64))

    def _map_huge(self, va: int, pa: int, size: PageSize, flags: MappingFlags) -> None:
        level = self._level_of_size[size]
        table, _ = self._table_at(va, level)
        epa = table + (((va >> self._shifts[level]) & 511) << 3)
        if self._read(epa) != self._empty[level]:
            raise AlreadyMapped(f"the {size.label} slot for {va:#x} is in use (entry {self._read(epa):#x})")
        self._set(epa, self.codec.page(pa & ~(size - 1), flags, size))

    def _fill_4k(self, run: _Run, flags: MappingFlags) -> None:
        """Write 4K leaves for the pages of `run`, a whole leaf table slice at a time."""
        template = self.codec.template(flags, PageSize.SIZE_4K)
        codec = self.codec
        last = self._last
        empty = np.uint64(self._empty[last])
        handler = self.handler
        done = 0
        while done < run.count:
            cva = run.vaddr + done * PAGE_4K
            index = (cva >> 12) & 511
            chunk = min(ENTRY_COUNT - index, run.count - done)
            table, fresh = self._table_at(cva, last)
            epa = table + index * 8
            if not fresh:
                current = handler.read_words(epa, chunk)
                busy = current != empty
                if busy.any():
                    first = cva + int(np.argmax(busy)) * PAGE_4K
                    raise AlreadyMapped(f"the 4K slot for {first:#x} is in use")
                if self._journal is not None:
                    self._journal.run(epa, current)
            if run.paddrs is None:
                first_entry = template | codec.encode_pa(run.paddr + done * PAGE_4K)
                values = self._steps_4k[:chunk] + np.uint64(first_entry)
            else:
                pas = run.paddrs[done : done + chunk]
                values = np.uint64(template) | ((pas >> np.uint64(codec.PA_SHIFT)) & np.uint64(codec.PA_FIELD))
            handler.write_words(epa, values)
            done += chunk

    def unmap_region(self, vaddr: int, size: int, *, free_empty_tables: bool = False) -> TlbFlushAll:
        """Unmap every page in `[vaddr, vaddr + size)`; all must be mapped, and no huge page may
        stick out of the region. All or nothing."""
        self._check_alive()
        va, length = self._check_range(vaddr, size)
        end = va + length
        touched: list[tuple[int, int]] = []
        with self._atomic:
            cur = va
            while cur < end:
                epa, entry, level, page_size = self._leaf(cur)
                if level < self._last:
                    self._check_fits(cur, end, page_size)
                    self._set(epa, self._empty[level])
                    touched.append((cur, level))
                    cur += page_size
                    continue
                chunk = min(ENTRY_COUNT - ((cur >> 12) & 511), (end - cur) >> 12)
                current = self.handler.read_words(epa, chunk)
                mapped = self.codec.present(current)  # an empty leaf slot is never present
                if not mapped.all():
                    raise NotMapped(f"virtual address {cur + int(np.argmin(mapped)) * PAGE_4K:#x} is not mapped")
                if self._journal is not None:
                    self._journal.run(epa, current)
                self.handler.write_words(epa, self._empty_table(level)[:chunk])
                touched.append((cur, level))
                cur += chunk * PAGE_4K
        if free_empty_tables:
            for touched_va, level in touched:
                self._reclaim(touched_va, level)
        return TlbFlushAll(self._flush_hook)

    def _check_fits(self, va: int, end: int, size: PageSize) -> None:
        if va % size or end - va < size:
            raise MappedToHugePage(
                f"the region ends inside the {size.label} page at {va - va % size:#x}: "
                "a region operation cannot split a huge page"
            )

    def protect_region(self, vaddr: int, size: int, flags: MappingFlags) -> TlbFlushAll:
        """Set `flags` on every mapped page in the region; holes are skipped (as in the crate)."""
        self._check_alive()
        va, length = self._check_range(vaddr, size)
        flags = MappingFlags(flags)
        template = np.uint64(self.codec.template(flags, PageSize.SIZE_4K))
        end = va + length
        with self._atomic:
            cur = va
            while cur < end:
                epa, entry, level = self._find(cur)
                if not self._is_leaf(entry, level):
                    span = 1 << self._shifts[level]
                    cur = (cur & ~(span - 1)) + span
                    continue
                if level < self._last:
                    page_size = self._size_of_level[level]
                    if page_size is None:
                        raise MappedToHugePage(
                            f"entry {entry:#x} at level {level} is a huge page at a level that has none"
                        )
                    self._check_fits(cur, end, page_size)
                    if self.codec.is_present(entry):
                        self._set(epa, self.codec.with_flags(entry, flags, page_size))
                    cur += page_size
                    continue
                chunk = min(ENTRY_COUNT - ((cur >> 12) & 511), (end - cur) >> 12)
                current = self.handler.read_words(epa, chunk)
                mapped = self.codec.present(current) & (current != np.uint64(self._empty[level]))
                if mapped.any():
                    updated = np.where(mapped, (current & np.uint64(self.codec.PA_FIELD)) | template, current)
                    if self._journal is not None:
                        self._journal.run(epa, current)
                    self.handler.write_words(epa, updated)
                cur += chunk * PAGE_4K
        return TlbFlushAll(self._flush_hook)

    # -- reclamation -------------------------------------------------------------------------
    def _reclaim(self, va: int, level: int) -> None:
        """Free the tables on `va`'s path, from `level` up, that have become empty."""
        if self.index(va, 0) in self._borrowed:
            return  # those tables belong to the table we copied them from
        path = [self._root]
        for lv in range(level):
            entry = self._read(path[-1] + self.index(va, lv) * 8)
            if not self._is_pointer(entry, lv):
                return
            path.append(self.codec.paddr(entry))
        for lv in range(level, 0, -1):
            words = self.handler.read_words(path[lv], WORDS_PER_FRAME)
            if not bool(np.all(words == np.uint64(self._empty[lv]))):
                return
            self._write(path[lv - 1] + self.index(va, lv - 1) * 8, self._empty[lv - 1])
            self.handler.dealloc_frame(path[lv])

    # -- traversal ---------------------------------------------------------------------------
    def walk(
        self,
        limit: int | None = None,
        pre: WalkCallback | None = None,
        post: WalkCallback | None = None,
    ) -> None:
        """Visit every present entry depth first: `pre(level, index, vaddr, entry)` before
        descending into a table, `post(...)` after. At most `limit` entries are visited per table
        (the crate's semantics). `vaddr` is the canonical address the entry starts to cover."""
        self._check_alive()
        self._walk_table(self._root, 0, 0, limit if limit is not None else ENTRY_COUNT, pre, post)

    def _walk_table(
        self,
        table: int,
        level: int,
        base: int,
        limit: int,
        pre: WalkCallback | None,
        post: WalkCallback | None,
    ) -> None:
        visited = 0
        shift = self._shifts[level]
        for index, entry in enumerate(self.handler.read_words(table, ENTRY_COUNT).tolist()):
            pointer = self._is_pointer(entry, level) and self._is_live(entry)
            if not pointer and not (self._is_leaf(entry, level) and self.codec.is_present(entry)):
                continue
            raw = base + (index << shift)
            vaddr = self.metadata.canonical(raw)
            if pre is not None:
                pre(level, index, vaddr, entry)
            if pointer:
                self._walk_table(self.codec.paddr(entry), level + 1, raw, limit, pre, post)
            if post is not None:
                post(level, index, vaddr, entry)
            visited += 1
            if visited >= limit:
                break

    def mappings(self) -> MappingList:
        """Every present leaf, in address order: the tables are read level by level, all tables
        of a level in one numpy gather."""
        self._check_alive()
        codec = self.codec
        offsets = np.arange(ENTRY_COUNT, dtype=np.uint64)
        tables = np.array([(self._root - self._words_base) >> 3], dtype=np.uint64)  # word index
        bases = np.zeros(1, dtype=np.uint64)  # raw VA covered by each table
        found: list[tuple[U64, U64, U64]] = []
        for level, shift in enumerate(self._shifts):
            if not len(tables):
                break
            slots = (tables[:, None] + offsets[None, :]).reshape(-1)
            entries = self._gather(slots)
            raw = (bases[:, None] + (offsets[None, :] << np.uint64(shift))).reshape(-1)
            used = entries != np.uint64(self._empty[level])
            size = self._size_of_level[level]
            huge = used if level == self._last else used & codec.huge(entries)
            leaf = huge & codec.present(entries) if size is not None else np.zeros(len(entries), dtype=bool)
            if leaf.any():
                found.append((raw[leaf], entries[leaf], np.full(int(leaf.sum()), int(size or 0), dtype=np.uint64)))
            if level == self._last:
                break
            address_field = entries & np.uint64(codec.PA_FIELD)
            pointer = used & ~huge & (address_field != 0) & codec.table_live(entries)
            tables = (address_field[pointer] >> np.uint64(3 - codec.PA_SHIFT)) - np.uint64(self._words_base >> 3)
            bases = raw[pointer]
        if not found:
            empty = np.zeros(0, dtype=np.uint64)
            return MappingList(empty, empty, np.zeros(0, dtype=np.uint8), empty)
        raw_vaddrs, entries, sizes = (np.concatenate(column) for column in zip(*found, strict=True))
        order = np.argsort(raw_vaddrs, kind="stable")
        raw_vaddrs, entries, sizes = raw_vaddrs[order], entries[order], sizes[order]
        return MappingList(
            self.metadata.canonical_many(raw_vaddrs),
            codec.paddrs(entries) & ~(sizes - np.uint64(1)),
            codec.flags_many(entries),
            sizes,
        )

    # -- batch queries -----------------------------------------------------------------------
    def walk_many(self, vaddrs: object) -> WalkBatch:
        """Walk the table for every address at once (numpy); see `WalkBatch`."""
        self._check_alive()
        va = _address_array(vaddrs)
        entries = np.zeros((self._levels, len(va)), dtype=np.uint64)
        slots = np.zeros((self._levels, len(va)), dtype=np.uint64)
        valid, leaf_level, _ = self._walk_batch(va, entries, slots)
        return WalkBatch(va, entries, slots << np.uint64(3), leaf_level, valid)

    def _gather(self, slots: U64) -> U64:
        """Words at the given word indexes of the handler's memory (index 0 = its base)."""
        words = getattr(self.handler, "words", None)
        try:
            if isinstance(words, np.ndarray):
                return np.take(words, slots, mode="raise")  # a slot below base wraps out of range
            return self.handler.gather_words((slots << np.uint64(3)) + np.uint64(self._words_base))
        except IndexError:
            raise ValueError("a batch walk reached an entry outside the paging handler's memory") from None

    def _walk_batch(
        self, va: U64, entries: U64 | None = None, slots: U64 | None = None
    ) -> tuple[np.ndarray, np.ndarray, U64]:
        """Walk every address; return (valid mask, leaf level or -1, leaf entry or 0).

        When `entries`/`slots` (levels x n) are given, every entry read and its word index are
        recorded there too. Addresses still walking are kept in a compacted index array only
        once some have stopped, so a fully mapped batch is walked without copies.
        """
        count = len(va)
        valid = self.metadata.vaddrs_valid(va)
        leaf_level = np.full(count, -1, dtype=np.int8)
        leaf_entry = np.zeros(count, dtype=np.uint64)
        active: np.ndarray | None = None if valid.all() else np.flatnonzero(valid)
        base_slot = np.uint64(self._words_base >> 3)
        tables: U64 | np.uint64 = np.uint64(self._root >> 3) - base_slot
        codec = self.codec
        index_shift = np.uint64(3 - codec.PA_SHIFT)
        words = getattr(self.handler, "words", None)
        limit = len(words) if isinstance(words, np.ndarray) else None
        for level, shift in enumerate(self._shifts):
            walking = va if active is None else va[active]
            if not len(walking):
                break
            slot = tables + ((walking >> np.uint64(shift)) & np.uint64(511))
            found = self._gather(slot)
            where = slice(None) if active is None else active
            if entries is not None and slots is not None:
                entries[level, where] = found
                slots[level, where] = slot + base_slot
            hole = found == np.uint64(self._empty[level])
            if level == self._last:
                stop = ~hole
                if active is None and stop.all():
                    leaf_level[:] = level
                    leaf_entry[:] = found
                else:
                    target = np.flatnonzero(stop) if active is None else active[stop]
                    leaf_level[target] = level
                    leaf_entry[target] = found[stop]
                break
            huge = codec.huge(found) & ~hole
            if self._size_of_level[level] is not None and huge.any():
                target = np.flatnonzero(huge) if active is None else active[huge]
                leaf_level[target] = level
                leaf_entry[target] = found[huge]
            address_field = found & np.uint64(codec.PA_FIELD)
            follow = ~hole & ~huge & (address_field != 0) & codec.table_live(found)
            next_tables = (address_field >> index_shift) - base_slot
            if limit is not None:  # a pointer outside the memory ends that walk (no leaf)
                follow &= next_tables <= np.uint64(limit - ENTRY_COUNT)
            if follow.all():
                tables = next_tables
                continue
            keep = np.flatnonzero(follow)
            active = keep if active is None else active[keep]
            tables = next_tables[keep]
        return valid, leaf_level, leaf_entry

    def query_many(self, vaddrs: object) -> QueryBatch:
        """Vectorised `query`: arrays of physical address, flags, page size and a mapped mask."""
        self._check_alive()
        va = _address_array(vaddrs)
        _, leaf_level, leaf = self._walk_batch(va)
        return self._resolve(va, leaf_level, leaf)

    def query_walk(self, walk: WalkBatch) -> QueryBatch:
        """What `query_many(walk.vaddrs)` returns, computed from an existing walk."""
        count = len(walk.vaddrs)
        levels = np.where(walk.leaf_level >= 0, walk.leaf_level, 0).astype(np.intp)
        leaf = walk.entries[levels, np.arange(count)] if count else np.zeros(0, dtype=np.uint64)
        return self._resolve(walk.vaddrs, walk.leaf_level, leaf)

    def _resolve(self, va: U64, leaf_level: np.ndarray, leaf: U64) -> QueryBatch:
        mapped = (leaf_level >= 0) & self.codec.present(leaf)
        sizes_by_level = np.array([int(s) if s else 0 for s in self._size_of_level] + [0], dtype=np.uint64)
        size = sizes_by_level[leaf_level] * mapped  # level -1 picks the trailing 0
        offset_mask = size - np.uint64(1)
        # a huge leaf's output address is size-aligned: bits below it are attributes (x86 PAT
        # at bit 12, SDM 4.5 tables 4-16/4-18; LoongArch HGLOBAL) or RES0; the crate adds them in
        paddr = ((self.codec.paddrs(leaf) & ~offset_mask) + (va & offset_mask)) * mapped
        flags = self.codec.flags_many(leaf) * mapped
        return QueryBatch(paddr, flags.astype(np.uint8), size, mapped)

    # -- sharing and teardown ----------------------------------------------------------------
    def copy_from(self, other: PageTable64, start: int, size: int) -> TlbFlushAll:
        """Share `other`'s root entries covering `[start, start + size)` (the crate's
        `copy_from`): the tables below them stay owned by `other` and are never freed by this
        table. Tables this table owned under those entries are freed first."""
        self._check_alive()
        if type(other) is not type(self) or other.handler is not self.handler:
            raise TypeError("copy_from needs a table of the same type on the same paging handler")
        other._check_alive()
        if _as_int("size", size) == 0:
            return TlbFlushAll(self._flush_hook)
        va = self._check_va(start)
        length = _as_int("size", size)
        last = va + length - 1
        if length < 0 or not self.metadata.range_is_valid(va, last):
            raise InvalidAddress(f"range [{va:#x}, {va + length:#x}) leaves the translated address range")
        for index in range(self.index(va, 0), self.index(last, 0) + 1):
            epa = self._root + index * 8
            if index not in self._borrowed:
                own = self._read(epa)
                if self._is_pointer(own, 0):
                    self._free_tree(self.codec.paddr(own), 1)
                self._borrowed.add(index)
            entry = other._read(other._root + index * 8)
            self._write(epa, self._empty[0] if entry == other._empty[0] else entry)
        return TlbFlushAll(self._flush_hook)

    def _free_tree(self, table: int, level: int) -> None:
        if level < self._last:
            for entry in self.handler.read_words(table, ENTRY_COUNT).tolist():
                if self._is_pointer(entry, level):
                    self._free_tree(self.codec.paddr(entry), level + 1)
        self.handler.dealloc_frame(table)

    def table_frames(self) -> list[int]:
        """Every frame this table owns (root, intermediate tables, shared helpers), sorted."""
        self._check_alive()
        frames = [self._root, *self._extra_frames]

        def visit(table: int, level: int) -> None:
            for entry in self.handler.read_words(table, ENTRY_COUNT).tolist():
                if self._is_pointer(entry, level):
                    frames.append(self.codec.paddr(entry))
                    visit(self.codec.paddr(entry), level + 1)

        for index, entry in enumerate(self.handler.read_words(self._root, ENTRY_COUNT).tolist()):
            if index not in self._borrowed and self._is_pointer(entry, 0):
                frames.append(self.codec.paddr(entry))
                visit(self.codec.paddr(entry), 1)
        return sorted(frames)

    def free(self) -> None:
        """Return every table frame to the handler: children first, root last (the crate's
        `Drop`). Leaf frames are never freed. The table is unusable afterwards."""
        if self._freed:
            return
        for index, entry in enumerate(self.handler.read_words(self._root, ENTRY_COUNT).tolist()):
            if index not in self._borrowed and self._is_pointer(entry, 0):
                self._free_tree(self.codec.paddr(entry), 1)
        self.handler.dealloc_frame(self._root)
        for frame in self._extra_frames:
            self.handler.dealloc_frame(frame)
        self._freed = True

    def __enter__(self) -> PageTable64:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()

    def __repr__(self) -> str:
        state = "freed" if self._freed else f"root={self._root:#x}"
        return f"{type(self).__name__}({state})"

"""Physical memory for page tables: the `PagingHandler` protocol and `RamImage`.

A handler allocates 4 KiB frames and reads/writes 64-bit little-endian words by physical
address (the crate's `PagingHandler` plus its `phys_to_virt` access, as one object). `RamImage`
implements it over a `bytearray` or over an `mmap` of the file QEMU uses as guest RAM, so tables
can be built directly in a running guest's memory.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FRAME_SIZE = 4096
WORDS_PER_FRAME = FRAME_SIZE // 8
U64 = npt.NDArray[np.uint64]


@runtime_checkable
class PagingHandler(Protocol):
    """What a page table needs from the memory it lives in.

    `alloc_frame` returns the physical address of a free 4 KiB frame, or None when memory is
    exhausted (the table then raises `NoMemory`). Word accessors take 8-byte aligned physical
    addresses. The bulk accessors exist for speed; `PagingHandlerBase` derives them from the
    scalar ones for handlers that have nothing faster.
    """

    def alloc_frame(self) -> int | None: ...
    def dealloc_frame(self, paddr: int) -> None: ...
    def read_word(self, paddr: int) -> int: ...
    def write_word(self, paddr: int, value: int) -> None: ...
    def read_words(self, paddr: int, count: int) -> U64: ...
    def write_words(self, paddr: int, values: U64) -> None: ...
    def gather_words(self, paddrs: U64) -> U64: ...


class PagingHandlerBase:
    """Mixin giving the bulk accessors of `PagingHandler` in terms of the scalar ones."""

    def read_word(self, paddr: int) -> int:
        raise NotImplementedError

    def write_word(self, paddr: int, value: int) -> None:
        raise NotImplementedError

    def read_words(self, paddr: int, count: int) -> U64:
        """Read `count` consecutive words starting at `paddr` (a copy)."""
        return np.array([self.read_word(paddr + 8 * i) for i in range(count)], dtype=np.uint64)

    def write_words(self, paddr: int, values: U64) -> None:
        """Write consecutive words starting at `paddr`."""
        for i, value in enumerate(values.tolist()):
            self.write_word(paddr + 8 * i, value)

    def gather_words(self, paddrs: U64) -> U64:
        """Read the word at each address of `paddrs`."""
        return np.array([self.read_word(p) for p in paddrs.tolist()], dtype=np.uint64)


class WordIndexer:
    """`indexer[paddr >> 3]` reads the word at `paddr` through any handler's `read_word` (the
    same indexing a memoryview of a RAM image at base 0 offers), for the tables' fast paths."""

    __slots__ = ("_read",)

    def __init__(self, handler: PagingHandler) -> None:
        self._read = handler.read_word

    def __getitem__(self, index: int) -> int:
        return self._read(index << 3)


class RamImage(PagingHandlerBase):
    """A RAM image at physical `base` of `size` bytes, with a lowest-address-first frame allocator.

    Frames are handed out in ascending address order from the lowest free frame of the pool
    `[pool_start, pool_end)` (default: the whole image), so a fresh image's first table (the
    root) sits at `pool_start`. Freed frames become available again, lowest first; the allocator
    state after an alloc/free pair is exactly what it was before.
    """

    def __init__(
        self,
        base: int = 0,
        size: int = 256 << 20,
        *,
        pool: tuple[int, int] | None = None,
        buffer: bytearray | mmap.mmap | None = None,
    ) -> None:
        if sys.byteorder != "little":
            raise RuntimeError("RamImage needs a little-endian host (guest RAM is little-endian)")
        if base % FRAME_SIZE or size % FRAME_SIZE or size <= 0 or base < 0:
            raise ValueError(f"RAM image base {base:#x} and size {size:#x} must be positive multiples of 4 KiB")
        self.base = base
        self.size = size
        self._buffer = bytearray(size) if buffer is None else buffer
        if len(self._buffer) < size:
            raise ValueError(f"buffer of {len(self._buffer):#x} bytes is smaller than size {size:#x}")
        self._words_mv: memoryview | None = memoryview(self._buffer).cast("B")[:size].cast("Q")
        self._words: U64 | None = np.frombuffer(self._buffer, dtype="<u8", count=size // 8)
        pool_start, pool_end = pool if pool is not None else (base, base + size)
        if pool_start % FRAME_SIZE or pool_end % FRAME_SIZE or not base <= pool_start < pool_end <= base + size:
            raise ValueError(
                f"frame pool [{pool_start:#x}, {pool_end:#x}) must be 4 KiB aligned and lie inside "
                f"the image [{base:#x}, {base + size:#x})"
            )
        self.pool_start = pool_start
        self.pool_end = pool_end
        self._used = bytearray((pool_end - pool_start) // FRAME_SIZE)
        self._lowest_free = 0  # every frame below this index is in use
        self._file: mmap.mmap | None = None  # set by from_file: a mapping this image owns

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        base: int,
        size: int,
        *,
        offset: int = 0,
        pool: tuple[int, int] | None = None,
    ) -> RamImage:
        """Map `size` bytes of the file at `path` (from `offset`) as RAM at physical `base`.

        Writes go straight to the file, so a QEMU guest that uses it as RAM (memory-backend-file,
        share=on) sees them. Call `close()` when done.
        """
        with open(Path(path), "r+b") as file:
            mapping = mmap.mmap(file.fileno(), size, offset=offset)
        image = cls(base, size, pool=pool, buffer=mapping)
        image._file = mapping
        return image

    def close(self) -> None:
        """Release the views and, for an image made by `from_file`, unmap the file (a buffer the
        caller passed in stays the caller's to close)."""
        if self._words_mv is not None:
            self._words_mv.release()
        self._words_mv = None
        self._words = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> RamImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- views -------------------------------------------------------------------------------
    @property
    def words(self) -> U64:
        """The whole image as a numpy array of little-endian 64-bit words (a live view)."""
        if self._words is None:
            raise ValueError("the RAM image is closed")
        return self._words

    def _access_error(self, paddr: int) -> ValueError:
        if self._words_mv is None:
            return ValueError("the RAM image is closed")
        return ValueError(
            f"physical address {paddr:#x} is not an 8-byte aligned address inside the RAM "
            f"image [{self.base:#x}, {self.base + self.size:#x})"
        )

    def _index(self, paddr: int) -> int:
        offset = paddr - self.base
        if offset < 0 or offset >= self.size or paddr & 7 or self._words is None:
            raise self._access_error(paddr)
        return offset >> 3

    def word_index(self) -> tuple[memoryview, int]:
        """(memoryview of the words, base): `view[(paddr - base) >> 3]` is the word at `paddr`
        for every paddr inside the image (callers check the lower bound)."""
        if self._words_mv is None:
            raise ValueError("the RAM image is closed")
        return self._words_mv, self.base

    # -- word access -------------------------------------------------------------------------
    def read_word(self, paddr: int) -> int:
        """Read the 64-bit word at `paddr`."""
        offset = paddr - self.base
        if offset < 0 or offset >= self.size or paddr & 7 or self._words_mv is None:
            raise self._access_error(paddr)
        return self._words_mv[offset >> 3]

    def write_word(self, paddr: int, value: int) -> None:
        """Write the 64-bit word at `paddr`."""
        offset = paddr - self.base
        if offset < 0 or offset >= self.size or paddr & 7 or self._words_mv is None:
            raise self._access_error(paddr)
        self._words_mv[offset >> 3] = value

    def read_words(self, paddr: int, count: int) -> U64:
        """A live view of `count` words from `paddr` (writes to it change RAM)."""
        start = self._index(paddr)
        if start + count > self.size >> 3:
            raise ValueError(f"{count} words at {paddr:#x} run past the end of the RAM image")
        return self.words[start : start + count]

    def write_words(self, paddr: int, values: U64) -> None:
        """Write consecutive words from `paddr`."""
        self.read_words(paddr, len(values))[:] = values

    def gather_words(self, paddrs: U64) -> U64:
        """The word at each physical address of `paddrs` (all must lie inside the image)."""
        index = (paddrs - np.uint64(self.base)) >> np.uint64(3)
        try:
            if len(paddrs) and bool((paddrs & np.uint64(7)).any()):
                raise IndexError
            return np.take(self.words, index, mode="raise")  # below base wraps to out of range
        except IndexError:
            offsets = paddrs - np.uint64(self.base)
            bad = int(paddrs[(offsets >= np.uint64(self.size)) | ((paddrs & np.uint64(7)) != 0)][0])
            raise self._access_error(bad) from None

    def fill(self, paddr: int, count: int, value: int) -> None:
        """Set `count` words from `paddr` to `value`."""
        self.read_words(paddr, count)[:] = value

    # -- frame allocator ---------------------------------------------------------------------
    def alloc_frame(self) -> int | None:
        """The lowest free frame of the pool, marked in use; None when the pool is exhausted."""
        index = self._used.find(0, self._lowest_free)
        if index < 0:
            self._lowest_free = len(self._used)
            return None
        self._used[index] = 1
        self._lowest_free = index + 1
        return self.pool_start + index * FRAME_SIZE

    def dealloc_frame(self, paddr: int) -> None:
        """Return a frame to the pool; freeing a frame that is not in use is an error."""
        index, misaligned = divmod(paddr - self.pool_start, FRAME_SIZE)
        if misaligned or not 0 <= index < len(self._used) or not self._used[index]:
            raise ValueError(f"frame {paddr:#x} was not allocated from this RAM image's pool")
        self._used[index] = 0
        self._lowest_free = min(self._lowest_free, index)

    def allocated_frames(self) -> list[int]:
        """Physical addresses of every frame currently in use, ascending."""
        used = np.frombuffer(bytes(self._used), dtype=np.uint8)
        return [self.pool_start + int(i) * FRAME_SIZE for i in np.flatnonzero(used)]

    @property
    def free_frames(self) -> int:
        """How many frames of the pool are free."""
        return self._used.count(0)

"""What the harness needs to know about one architecture: the QEMU machine, the guest build,
the RAM layout, the translation variants, the batch option sets, the permission model and the
known emulator deviations. One subclass per architecture in `harness/profiles/`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from arch import MappingFlags, PageSize, RamImage
from arch.permissions import PermissionModel, Prediction

from .build import GuestImage
from .machine import Machine, MachineSpec
from .tableset import TableSet

if TYPE_CHECKING:
    from .session import GuestSession


@dataclass(frozen=True)
class Variant:
    """One translation configuration checked as a unit (`--mode`): a table geometry, the
    mailbox `mode` value, and any extra machine arguments (e.g. the CPU model)."""

    name: str
    make_tables: Callable[[RamImage], TableSet]
    mailbox_mode: int
    machine_args: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class OptionSet:
    """The batch options of one run of probes: privilege (bit 0) and architecture bits."""

    name: str
    bits: int

    @property
    def user(self) -> bool:
        """Whether probes run at the unprivileged level."""
        return bool(self.bits & 1)


@dataclass(frozen=True)
class RamLayout:
    """Guest RAM regions, as physical [start, end) pairs: probe/result arrays, the frame pool for
    page tables, and the window scenario mappings may point into."""

    arrays: tuple[int, int]
    table_pool: tuple[int, int]
    data_window: tuple[int, int]

    def check_data(self, paddr: int, size: int) -> None:
        """Raise ValueError unless [paddr, paddr + size) lies in the data window."""
        low, high = self.data_window
        if not (low <= paddr and paddr + size <= high):
            raise ValueError(
                f"physical range [{paddr:#x}, {paddr + size:#x}) is outside the RAM window for "
                f"scenario data [{low:#x}, {high:#x})"
            )


@dataclass(frozen=True)
class Comparison:
    """Probes of one batch with what was predicted and what the guest saw (for deviations)."""

    vaddrs: np.ndarray
    access: np.ndarray
    user: bool
    options: int
    predicted: Prediction
    paddr: np.ndarray
    mapped: np.ndarray
    flags: np.ndarray
    observed_ok: np.ndarray
    observed_cause: np.ndarray
    observed_value: np.ndarray
    observed_addr: np.ndarray


@dataclass(frozen=True)
class Deviation:
    """A known way an emulator version differs from the architecture.

    `explains(comparison)` returns the probes whose mismatch this deviation accounts for;
    `unsafe(comparison)` (observed fields empty) the probes that must not be sent at all.
    """

    key: str
    summary: str
    reference: str
    versions: tuple[str, str]  # first affected, first fixed ("" = not fixed yet)
    variants: tuple[str, ...] = ()  # empty: every variant
    explains: Callable[[Comparison], np.ndarray] | None = None
    unsafe: Callable[[Comparison], np.ndarray] | None = None

    def applies_to(self, version: str, variant: str) -> bool:
        """Whether this QEMU version and variant have the deviation."""
        first, fixed = self.versions
        if self.variants and variant not in self.variants:
            return False
        return version_key(first) <= version_key(version) and (not fixed or version_key(version) < version_key(fixed))


def version_key(version: str) -> tuple[int, ...]:
    """'10.0.2' -> (10, 0, 2), for comparisons."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


@dataclass
class Profile:
    """An architecture's machine, guest and checking rules (subclassed per architecture)."""

    arch: str
    binary: str
    apt_package: str
    machine_args: tuple[str, ...]
    ram_base: int
    ram_size: int
    zig_args: tuple[str, ...]
    layout: RamLayout
    variants: dict[str, Variant]
    trap_instruction: int
    model_for: Callable[[Variant], PermissionModel]
    deviations: list[Deviation] = field(default_factory=list)
    clean_exit_statuses: frozenset[int] = frozenset({0})
    sizes: tuple[PageSize, ...] = (PageSize.SIZE_4K, PageSize.SIZE_2M, PageSize.SIZE_1G)
    mutation_safe_fetch: bool = True  # False where a fetch through a corrupted entry can hang QEMU

    # -- environment -------------------------------------------------------------------------
    def available(self) -> bool:
        """Whether the QEMU binary is installed."""
        return shutil.which(self.binary) is not None

    def install_hint(self) -> str:
        """What to run to get the QEMU binary."""
        return f"{self.binary} not found: install it with `apt-get install {self.apt_package}` (or run scripts/setup)"

    def machine_spec(self, variant: Variant) -> MachineSpec:
        """The QEMU machine for a variant."""
        return MachineSpec(
            binary=self.binary,
            machine_args=self.machine_args + variant.machine_args,
            ram_base=self.ram_base,
            ram_size=self.ram_size,
            clean_exit_statuses=self.clean_exit_statuses,
        )

    # -- per-architecture hooks (override where the architecture needs them) -----------------
    def option_sets(self, full: bool, variant: Variant | None = None) -> list[OptionSet]:
        """Batch option sets to probe (for `variant` where they depend on the CPU): all of them
        for a full check, supervisor only otherwise."""
        sets = [OptionSet("supervisor", 0), OptionSet("user", 1)]
        return sets if full else sets[:1]

    def guest_mappings(self, image: GuestImage, option_set: OptionSet) -> list[tuple[int, int, int, MappingFlags]]:
        """(va, pa, size, flags) the guest needs in the table under test to probe; none by default."""
        return []

    def reserved_ranges(self, image: GuestImage) -> list[tuple[int, int]]:
        """Virtual [start, end) ranges scenarios must not map or probe."""
        return []

    def non_canonical_addresses(self, va_bits: int) -> list[int]:
        """Addresses outside the canonical ranges of a `va_bits` table, probed in full checks:
        just above the low half, just below the high half, and two far off."""
        half = 1 << (va_bits - 1)
        return [half, (1 << 64) - half - 8, 0x8000_0000_0000_0000, 0x5555_5555_5555_5550]

    def debug_read(
        self, session: GuestSession, tables: TableSet, variant: Variant, vaddrs: list[int]
    ) -> list[bytes | None] | None:
        """Read 8 bytes at each virtual address through QEMU's own debug translation (gdbstub)
        with the tables loaded, or None when the architecture has no such observer."""
        return None

    def wake(self, machine: Machine, command: int) -> None:
        """Wake the guest after writing `go` with mailbox `command` (timer-woken guests need
        nothing)."""

    def explain_cause(self, cause: int) -> str:
        """A human decoding of a raw fault cause."""
        return f"cause {cause:#x}"

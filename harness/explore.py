"""Two ways to look beyond the built-in scenario: `fuzz` (random operation sequences, each
checked in full on the MMU) and `sensitivity` (flip one entry bit at a time behind the library's
back and see which bits the real MMU's behaviour reveals)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arch import MappingFlags, PageSize, PagingError

from .checker import Checker
from .default_scenario import encodable_flags, region_bases
from .profile import Profile, Variant
from .runner import apply_operation
from .scenario import Operation
from .session import GuestSession
from .tableset import TableSet

K4, M2, G1 = int(PageSize.SIZE_4K), int(PageSize.SIZE_2M), int(PageSize.SIZE_1G)
Progress = Callable[[str], None]


@dataclass
class FuzzResult:
    """What `fuzz` did and found."""

    iterations: int = 0
    applied: int = 0
    rejected: int = 0
    probes: int = 0
    mismatches: int = 0
    saved: list[Path] = field(default_factory=list)


def random_operations(rng: np.random.Generator, profile: Profile, tables: TableSet, count: int) -> list[Operation]:
    """`count` random operations in a small corner of each half, so they collide often."""
    bases = [base for table in tables.tables for base in region_bases(table)]
    low, high = profile.layout.data_window
    sizes = [int(size) for size in profile.sizes]
    valid_flags = encodable_flags(tables.primary)
    operations = []
    for line in range(1, count + 1):
        kind = rng.choice(
            ["map", "map", "map", "map_region", "unmap", "unmap_region", "protect", "protect_region", "remap"]
        )
        size = int(rng.choice(sizes))
        base = int(rng.choice(bases))
        va = base + int(rng.integers(0, 4)) * G1 + int(rng.integers(0, 8)) * M2 + int(rng.integers(0, 16)) * K4
        va -= va % size if kind == "map" else 0
        pa = low + int(rng.integers(0, max((high - low - G1) // K4, 1))) * K4
        # mostly flags the architecture encodes; now and then any, to exercise the rejections
        flags = (
            valid_flags[int(rng.integers(0, len(valid_flags)))]
            if rng.random() < 0.9
            else MappingFlags(int(rng.integers(0, 64)))
        )
        length = int(rng.choice([K4, 3 * K4, M2, M2 + K4, 4 * M2]))
        fields: dict[str, object] = {"va": va}
        if kind in ("map", "map_region", "remap"):
            fields["pa"] = pa - pa % size if kind == "map" else pa
        if kind == "map":
            fields["size"] = size
        if kind in ("map_region", "unmap_region", "protect_region"):
            fields["length"] = length
        if kind in ("map", "map_region", "protect", "protect_region", "remap"):
            fields["flags"] = flags
        if kind == "map_region":
            fields["allow_huge"] = bool(rng.integers(0, 2))
        operations.append(Operation(str(kind), line, **fields))  # type: ignore[arg-type]
    return operations


def fuzz(
    profile: Profile,
    variant: Variant,
    session: GuestSession,
    *,
    iterations: int,
    operations: int,
    seed: int,
    save_dir: Path | None,
    progress: Progress | None = None,
) -> FuzzResult:
    """Random scenarios, each applied to fresh tables and checked in full."""
    assert session.ram is not None
    result = FuzzResult()
    reserved = profile.reserved_ranges(session.image)
    for iteration in range(iterations):
        if progress is not None:
            progress(f"iteration {iteration + 1}/{iterations}")
        rng = np.random.default_rng([seed, iteration])
        tables = variant.make_tables(session.ram)
        kept: list[Operation] = []
        for operation in random_operations(rng, profile, tables, operations):
            try:
                apply_operation(tables, profile, reserved, operation)
            except (PagingError, ValueError):
                result.rejected += 1  # the library refused it, atomically: nothing to check
                continue
            kept.append(operation)
        checker = Checker(profile, variant, session, tables)
        checker.check(full=True, seed=seed + iteration)
        result.iterations += 1
        result.applied += len(kept)
        result.probes += checker.stats.probes
        result.mismatches += checker.stats.mismatches
        if checker.stats.mismatches and save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            path = save_dir / f"fuzz-{profile.arch}-{variant.name}-seed{seed}-{iteration}.txt"
            lines = [f"# ptcheck fuzz --arch {profile.arch} --mode {variant.name} --seed {seed}: iteration {iteration}"]
            lines += [op.describe() for op in kept] + ["check full"]
            path.write_text("\n".join(lines) + "\n")
            result.saved.append(path)
        tables.free()
    return result


@dataclass(frozen=True)
class BitVerdict:
    """Whether flipping one bit of every leaf entry changed what the MMU did."""

    bit: int
    mismatches: int
    probes: int


def sensitivity(
    profile: Profile,
    variant: Variant,
    session: GuestSession,
    *,
    bits: list[int],
    progress: Progress | None = None,
) -> list[BitVerdict]:
    """Map one 4K page per encodable flag combination, then for each bit: predict from the
    tables as built, flip the bit in every leaf entry in RAM, run the probes, restore."""
    assert session.ram is not None
    ram = session.ram
    tables = variant.make_tables(ram)
    low = profile.layout.data_window[0]
    base = region_bases(tables.primary)[0]
    for index, flags in enumerate(encodable_flags(tables.primary)):
        tables.table_for(base).map(base + index * 2 * K4, low + index * K4, PageSize.SIZE_4K, flags)
    checker = Checker(profile, variant, session, tables)
    plan = checker.plan(full=True)
    if not profile.mutation_safe_fetch:
        keep = plan.probes.access != 2
        plan = type(plan)(
            type(plan.probes)(plan.probes.vaddrs[keep], plan.probes.access[keep]),
            plan.pages,
            tables.walk_many(plan.probes.vaddrs[keep]),
            tables.query_many(plan.probes.vaddrs[keep]),
            plan.full,
        )
    leaves = plan.walk.entry_paddrs[plan.walk.leaf_level.clip(0), np.arange(len(plan.walk.vaddrs))]
    leaves = np.unique(leaves[plan.walk.leaf_level >= 0])
    pool_low, pool_high = profile.layout.table_pool
    pool = ram.read_words(pool_low, (pool_high - pool_low) // 8)
    saved_pool = pool.copy()
    verdicts = []
    for bit in bits:
        if progress is not None:
            progress(f"bit {bit}")
        before = (checker.stats.mismatches, checker.stats.probes)
        slots = (leaves - np.uint64(ram.base)) >> np.uint64(3)
        ram.words[slots] ^= np.uint64(1 << bit)
        try:
            checker.execute(plan)
        finally:
            pool[:] = saved_pool  # undo the flip and anything a stray store wrote into tables
        verdicts.append(BitVerdict(bit, checker.stats.mismatches - before[0], checker.stats.probes - before[1]))
    return verdicts

"""Library speed, per table type, beside the Rust crate's figures on this machine kind.

Parameters follow the issue: map_region of 1 GiB as 4K pages from VA 0x4000_0000 to PA
0x1_4000_0000 (RW), 10^6 random queries at VA + xorshift64 % 1 GiB (seed 0x9E3779B97F4A7C15,
shifts 13/7/17), unmap_region of that GiB, free(). Run: python bench/bench_arch.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from arch import MappingFlags, PageSize, PageTable64, RamImage
from arch.aarch64 import A64PageTable
from arch.loongarch64 import LA64PageTable
from arch.riscv import Sv39PageTable, Sv48PageTable, Sv57PageTable
from arch.x86_64 import X64PageTable, X64PageTable5

VA = 0x4000_0000
PA = 0x1_4000_0000
GIB = 1 << 30
RW = MappingFlags.READ | MappingFlags.WRITE
SEED = 0x9E3779B97F4A7C15
# Rust crate reference on this machine kind (from the issue): seconds per operation
RUST = {"map_region": 3.4e-3, "query_many": 11e-3, "unmap_region": 2e-3}
TARGET = {"map_region": 7e-3, "unmap_region": 7e-3, "query_many": 60e-3, "query": 2e-6, "map": 4e-6, "free": 5e-3}
TABLES: dict[str, Callable[[RamImage], PageTable64]] = {
    "x86_64": X64PageTable,
    "x86_64-5level": X64PageTable5,
    "aarch64": A64PageTable,
    "sv39": Sv39PageTable,
    "sv48": Sv48PageTable,
    "sv57": Sv57PageTable,
    "loongarch64": LA64PageTable,
}


def xorshift_addresses(count: int) -> np.ndarray:
    """VA + xorshift64(seed) % 1 GiB, shifts 13/7/17, computed in numpy-free Python once."""
    state = SEED
    out = np.empty(count, dtype=np.uint64)
    mask = (1 << 64) - 1
    for i in range(count):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out[i] = VA + state % GIB
    return out


def best_of(repeats: int, action: Callable[[], object], setup: Callable[[], object] | None = None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def bench_table(
    name: str, make: Callable[[RamImage], PageTable64], addrs: np.ndarray, repeats: int
) -> dict[str, float]:
    ram = RamImage(base=0, size=16 << 20)
    results: dict[str, float] = {}
    state: dict[str, PageTable64] = {}

    def fresh() -> None:
        if "pt" in state:
            state["pt"].free()
        state["pt"] = make(ram)

    results["map_region"] = best_of(repeats, lambda: state["pt"].map_region(VA, PA, GIB, RW, allow_huge=False), fresh)
    pt = state["pt"]
    results["query_many"] = best_of(repeats, lambda: pt.query_many(addrs))
    scalar = addrs[:20000].tolist()
    results["query"] = best_of(repeats, lambda: [pt.query(a) for a in scalar]) / len(scalar)
    results["unmap_region"] = best_of(1, lambda: pt.unmap_region(VA, GIB))
    pt.map_region(VA, PA, GIB, RW, allow_huge=False)
    results["free"] = best_of(1, pt.free)
    state.pop("pt")
    small = make(ram)
    pages = [VA + i * 0x1000 for i in range(20000)]
    results["map"] = best_of(1, lambda: [small.map(v, PA + v, PageSize.SIZE_4K, RW) for v in pages]) / len(pages)
    small.free()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="one table type: " + ", ".join(TABLES))
    args = parser.parse_args()
    addrs = xorshift_addresses(1_000_000)
    print(f"{'table':<15}{'operation':<14}{'measured':>12}{'target':>12}{'rust':>10}{'ratio':>8}")
    for name, make in TABLES.items():
        if args.only and name != args.only:
            continue
        for op, seconds in bench_table(name, make, addrs, args.repeats).items():
            unit, scale = ("µs", 1e6) if seconds < 1e-3 else ("ms", 1e3)
            rust = RUST.get(op)
            ratio = f"{seconds / rust:.1f}x" if rust else "-"
            rust_text = f"{rust * 1e3:.1f}ms" if rust else "-"
            target = TARGET[op]
            mark = "ok" if seconds <= target else "SLOW"
            print(
                f"{name:<15}{op:<14}{seconds * scale:>10.2f}{unit}{target * scale:>10.1f}{unit}"
                f"{rust_text:>10}{ratio:>8} {mark}"
            )


if __name__ == "__main__":
    main()

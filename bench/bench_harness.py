"""End-to-end harness speed per architecture and variant: boot to first verdict, and verified
probes per second of a quick check over randomly placed 4K pages (prediction, guest run and
comparison; boot, table building and the second observer excluded), beside the guest-only rate.
Run: python bench/bench_harness.py [--arch riscv64,aarch64] [--pages 100000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from arch import MappingFlags, PageSize
from harness.checker import Checker
from harness.default_scenario import region_bases
from harness.profiles import available_arches, get_profile
from harness.session import GuestSession

TARGET_PROBES_PER_SECOND = {"loongarch64": 400_000}
DEFAULT_TARGET = 1_000_000
TARGET_FIRST_VERDICT = 0.150


def bench(arch: str, variant_name: str, pages: int, seed: int) -> None:
    profile = get_profile(arch)
    variant = profile.variants[variant_name]
    started = time.perf_counter()
    with GuestSession(profile, variant) as session:
        assert session.ram is not None
        tables = variant.make_tables(session.ram)
        first = tables.primary
        base = region_bases(first)[0]
        low, high = profile.layout.data_window
        first.map(base, low, PageSize.SIZE_4K, MappingFlags.READ)
        warm = Checker(profile, variant, session, tables)
        warm.check(full=False)
        first_verdict = time.perf_counter() - started
        rng = np.random.default_rng(seed)
        slots = np.unique(rng.integers(1, 1 << 22, size=pages * 2))[:pages]
        pas = low + rng.integers(0, (high - low) // 4096, size=len(slots)) * 4096
        building = time.perf_counter()
        for slot, pa in zip(slots.tolist(), pas.tolist(), strict=True):
            first.map(base + slot * 4096, pa, PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.WRITE)
        built = time.perf_counter() - building
        rates = []
        for _ in ("cold", "warm"):  # cold: the data pages are touched for the first time
            checker = Checker(profile, variant, session, tables)
            checker.check(full=False)
            stats = checker.stats
            probing = stats.check_seconds - stats.observer_seconds
            rates.append((stats.probes / probing, stats.probes / stats.guest_seconds, stats.mismatches))
        session.power_off()
    target = TARGET_PROBES_PER_SECOND.get(arch, DEFAULT_TARGET)
    (cold, _, cold_mismatches), (warm, guest_rate, warm_mismatches) = rates
    print(
        f"{arch:<12}{variant_name:<12}{session.boot_seconds * 1e3:>8.0f}ms{first_verdict * 1e3:>10.0f}ms"
        f"{built / len(slots) * 1e6:>9.1f}µs{stats.probes:>9}{cold:>12,.0f}{warm:>12,.0f}{guest_rate:>12,.0f}"
        f"{cold_mismatches + warm_mismatches:>6}   target {target:,}/s {'ok' if warm >= target else 'BELOW'},"
        f" first verdict {'ok' if first_verdict <= TARGET_FIRST_VERDICT else 'SLOW'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="all")
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    arches = available_arches() if args.arch == "all" else args.arch.split(",")
    print(
        f"{'arch':<12}{'mode':<12}{'boot':>10}{'1st verdict':>12}{'map/page':>11}{'probes':>9}"
        f"{'cold/s':>12}{'warm/s':>12}{'guest/s':>12}{'mism':>6}"
    )
    for arch in arches:
        profile = get_profile(arch)
        if not profile.available():
            print(f"{arch:<12}skipped: {profile.install_hint()}")
            continue
        for variant_name in profile.variants:
            bench(arch, variant_name, args.pages, args.seed)


if __name__ == "__main__":
    main()

"""The command line: `python -m harness` / `ptcheck`.

    ptcheck check    [--arch A[,B]|all] [--mode M[,N]] [--scenario FILE] [--json] [--seed N]
    ptcheck scenario --arch A [--mode M] [--seed N]      print the built-in scenario as text
    ptcheck dump     --arch A [--mode M] [--scenario F]  the tables a scenario builds (no QEMU)
    ptcheck explain  --arch A --va VA [--mode M] [--scenario F]
                                                         one address, every access and privilege,
                                                         prediction beside the real MMU's answer
    ptcheck fuzz     --arch A [--mode M] [--iterations N] [--operations K] [--seed S]
                                                         random scenarios, each checked in full
    ptcheck sensitivity --arch A [--mode M]              flip each leaf-entry bit behind the
                                                         library's back: which ones the MMU sees

Exit status: 0 when every check passed, 1 when something mismatched, 2 on errors (bad input,
QEMU or guest failure, missing emulator).
"""

from __future__ import annotations

import argparse
import math
import mmap
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from arch import PagingError, RamImage

from .checker import Checker, CheckStats
from .default_scenario import RANDOM_PAGES, RANDOM_SPAN, default_scenario
from .explore import fuzz, sensitivity
from .machine import MachineError
from .profile import Profile, Variant
from .profiles import available_arches, get_profile
from .report import VariantReport, write_json, write_table
from .runner import ScenarioRunner, apply_operation
from .scenario import Operation, ScenarioError, parse_file, parse_number
from .session import DEFAULT_BATCH_TIMEOUT, GuestSession
from .tableset import TableSet

EXIT_PASS, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
# The built-in scenario places its random pages in distinct 4K slots of RANDOM_SPAN bytes
# (harness/default_scenario.py, part 3): it cannot place more than that.
MAX_RANDOM_PAGES = RANDOM_SPAN // 0x1000


class Progress:
    """A one-line progress indicator on stderr (only when it is a terminal)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled and stream.isatty()
        self.prefix = ""

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.stream.write(f"\r\033[K{self.prefix}{message}")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _arch_list(value: str) -> list[str]:
    if value == "all":
        return available_arches()
    arches = [part.strip() for part in value.split(",") if part.strip()]
    if not arches:
        raise ValueError(f"--arch {value!r} names no architecture: choose from {', '.join(available_arches())}, or all")
    for arch in arches:
        get_profile(arch)  # ValueError naming the known ones
    return arches


def _installed_profile(arch: str) -> Profile:
    """The profile of `arch`; ValueError with the install command when its QEMU is missing."""
    profile = get_profile(arch)
    if not profile.available():
        raise ValueError(profile.install_hint())
    return profile


def _variants(profile: Profile, value: str | None) -> list[Variant]:
    if not value or value == "all":
        return list(profile.variants.values())
    chosen = []
    for name in (part.strip() for part in value.split(",")):
        if name not in profile.variants:
            raise ValueError(f"{profile.arch} has no mode {name!r}: choose from {', '.join(profile.variants)}")
        chosen.append(profile.variants[name])
    return chosen


def _operations(args: argparse.Namespace, profile: Profile, tables: TableSet) -> tuple[Iterable[Operation], str]:
    if args.scenario:
        return parse_file(args.scenario), args.scenario
    return default_scenario(profile, tables, seed=args.seed, random_pages=args.random_pages), "<built-in scenario>"


def check_variant(profile: Profile, variant: Variant, args: argparse.Namespace, progress: Progress) -> VariantReport:
    """Boot the guest, run the scenario, and report."""
    started = time.perf_counter()
    progress.prefix = f"{profile.arch}/{variant.name}: "
    progress("booting")
    with GuestSession(profile, variant, batch_timeout=args.batch_timeout, gdbstub=not args.no_observer) as session:
        runner = ScenarioRunner(profile, variant, session, seed=args.seed, progress=progress)
        operations, source = _operations(args, profile, runner.tables)
        runner.source = source
        runner.run(operations)
        session.power_off()
        notes = {
            d.key: f"{d.summary} (QEMU {d.versions[0]}{' to before ' + d.versions[1] if d.versions[1] else '+'}; "
            f"{d.reference})"
            for d in profile.deviations
            if d.applies_to(session.machine.version, variant.name)
        }
        return VariantReport(
            profile.arch,
            variant.name,
            session.machine.version,
            runner.stats,
            time.perf_counter() - started,
            session.boot_seconds,
            notes,
        )


def command_check(args: argparse.Namespace) -> int:
    reports: list[VariantReport] = []
    profiles: dict[str, Profile] = {}
    progress = Progress(sys.stderr, not args.json)
    for arch in _arch_list(args.arch):
        profile = profiles[arch] = _installed_profile(arch)
        for variant in _variants(profile, args.mode):
            try:
                reports.append(check_variant(profile, variant, args, progress))
            except ScenarioError:
                progress.done()
                raise
            except MachineError as error:
                reports.append(VariantReport(arch, variant.name, "?", CheckStats(), 0.0, 0.0, error=str(error)))
    progress.done()
    if args.json:
        write_json(reports, sys.stdout)
    else:
        write_table(reports, profiles, sys.stdout)
    if any(r.error for r in reports):
        return EXIT_ERROR
    return EXIT_PASS if all(r.passed for r in reports) else EXIT_MISMATCH


def command_scenario(args: argparse.Namespace) -> int:
    profile = get_profile(args.arch)
    variant = _variants(profile, args.mode)[0]
    tables = variant.make_tables(_scratch_ram(profile))
    for operation in default_scenario(profile, tables, seed=args.seed, random_pages=args.random_pages):
        print(operation.describe())
    return EXIT_PASS


def _scratch_ram(profile: Profile) -> RamImage:
    """A RAM image shaped like the guest's, for building tables without QEMU. Anonymous memory is
    zeroed page by page when first touched (mmap(2), MAP_ANONYMOUS), where a bytearray of the
    guest's 2 GiB would be zeroed, and resident, all at once."""
    return RamImage(profile.ram_base, profile.ram_size, pool=profile.layout.table_pool,
                    buffer=mmap.mmap(-1, profile.ram_size))


def _build_offline(args: argparse.Namespace) -> tuple[Profile, TableSet]:
    """Apply a scenario's operations (checks ignored) to tables in a scratch RAM image."""
    profile = get_profile(args.arch)
    variant = _variants(profile, args.mode)[0]
    tables = variant.make_tables(_scratch_ram(profile))
    operations, source = _operations(args, profile, tables)
    for operation in operations:
        if operation.kind == "check":
            continue
        try:
            apply_operation(tables, profile, [], operation)
        except (PagingError, ValueError, TypeError) as error:
            raise ScenarioError(source, operation.line, 1, f"{operation.describe()}: {error}") from None
    return profile, tables


def command_dump(args: argparse.Namespace) -> int:
    profile, tables = _build_offline(args)
    for index, table in enumerate(tables.tables):
        print(f"# table {index}: {type(table).__name__} root {table.root_paddr:#x}")

        def show(level: int, slot: int, vaddr: int, entry: int, table=table) -> None:  # type: ignore[no-untyped-def]
            leaf = level == table.levels - 1 or (table.size_of_level(level) is not None and table.codec.is_huge(entry))
            print(f"{'  ' * level}L{level}[{slot:3}] {vaddr:#018x}: {table.codec.describe(entry, leaf)}")

        table.walk(pre=show)
    return EXIT_PASS


def command_explain(args: argparse.Namespace) -> int:
    profile = _installed_profile(args.arch)
    va = parse_number(args.va)
    variant = _variants(profile, args.mode)[0]
    with GuestSession(profile, variant, batch_timeout=args.batch_timeout) as session:
        runner = ScenarioRunner(profile, variant, session, seed=args.seed)
        operations, _ = _operations(args, profile, runner.tables)
        for operation in operations:
            if operation.kind != "check":
                runner.apply(operation)
        checker: Checker = runner.checker
        print(f"{profile.arch}/{variant.name} on QEMU {session.machine.version}: {va:#x}")
        for line in checker.describe_walk(va):
            print("  " + line)
        for row in checker.explain(va):
            print(row)
        session.power_off()
    return EXIT_PASS


def command_fuzz(args: argparse.Namespace) -> int:
    profile = _installed_profile(args.arch)
    progress = Progress(sys.stderr, True)
    failed = False
    for variant in _variants(profile, args.mode):
        progress.prefix = f"{profile.arch}/{variant.name} fuzz: "
        with GuestSession(profile, variant, batch_timeout=args.batch_timeout) as session:
            result = fuzz(
                profile,
                variant,
                session,
                iterations=args.iterations,
                operations=args.operations,
                seed=args.seed,
                save_dir=Path(args.save),
                progress=progress,
            )
            session.power_off()
        progress.done()
        print(
            f"{profile.arch}/{variant.name}: {result.iterations} random scenarios, {result.applied} operations "
            f"applied, {result.rejected} rejected by the library, {result.probes} probes, "
            f"{result.mismatches} mismatches"
        )
        for path in result.saved:
            print(f"  reproduce with: ptcheck check --arch {profile.arch} --mode {variant.name} --scenario {path}")
        failed |= result.mismatches > 0
    return EXIT_MISMATCH if failed else EXIT_PASS


def command_sensitivity(args: argparse.Namespace) -> int:
    profile = _installed_profile(args.arch)
    variant = _variants(profile, args.mode)[0]
    progress = Progress(sys.stderr, True)
    progress.prefix = f"{profile.arch}/{variant.name} sensitivity: "
    with GuestSession(profile, variant, batch_timeout=args.batch_timeout) as session:
        names = bit_names(variant.make_tables(_scratch_ram(profile)).primary.codec)
        verdicts = sensitivity(profile, variant, session, bits=list(range(64)), progress=progress)
        session.power_off()
    progress.done()
    print(f"{profile.arch}/{variant.name}: flipping one bit in every leaf entry, behind the library's back")
    print(f"{'bit':>4}  {'name':<16}{'mismatches':>11}{'probes':>9}  the MMU...")
    for verdict in verdicts:
        effect = "behaves differently" if verdict.mismatches else "ignores it (no probe changed)"
        name = names.get(verdict.bit, "")
        print(f"{verdict.bit:>4}  {name:<16}{verdict.mismatches:>11}{verdict.probes:>9}  {effect}")
    return EXIT_PASS


def deviation_table() -> str:
    """Every known emulator deviation of every profile, as a Markdown table (README source)."""
    rows = ["| arch | deviation | QEMU versions | what happens | reference |", "|---|---|---|---|---|"]
    for arch in available_arches():
        for deviation in get_profile(arch).deviations:
            first, fixed = deviation.versions
            versions = f"{first} to before {fixed}" if fixed else f"{first} and later"
            if deviation.variants:
                versions += f" ({', '.join(deviation.variants)})"
            rows.append(f"| {arch} | `{deviation.key}` | {versions} | {deviation.summary} | {deviation.reference} |")
    return "\n".join(rows)


def command_deviations(args: argparse.Namespace) -> int:
    print(deviation_table())
    return EXIT_PASS


def bit_names(codec: object) -> dict[int, str]:
    """Single-bit constants of the codec's module (e.g. 4 -> 'U'), for labelling bits."""
    module = sys.modules[type(codec).__module__]
    names: dict[int, str] = {}
    for name, value in vars(module).items():
        if name.isupper() and isinstance(value, int) and value > 0 and value & (value - 1) == 0:
            names.setdefault(value.bit_length() - 1, name)
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptcheck", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, arch_default: str | None) -> None:
        if arch_default is None:
            p.add_argument("--arch", required=True, help="architecture: x86_64, aarch64, riscv64, loongarch64")
        else:
            p.add_argument("--arch", default=arch_default, help="architectures: a comma list, or 'all' (default)")
        p.add_argument("--mode", help="variants (e.g. sv39,sv48); default: all of them (the first for dump/explain)")
        p.add_argument("--scenario", help="scenario file (default: the built-in scenario)")
        p.add_argument("--seed", type=_non_negative, default=0, help="seed for the random parts (default 0)")
        p.add_argument(
            "--random-pages",
            type=_page_count,
            default=RANDOM_PAGES,
            help=f"random 4K pages in the built-in scenario (default {RANDOM_PAGES})",
        )
        p.add_argument(
            "--batch-timeout",
            type=_positive_float,
            default=DEFAULT_BATCH_TIMEOUT,
            help="seconds a batch of probes may take before the guest counts as hung "
            f"(default {DEFAULT_BATCH_TIMEOUT:.0f})",
        )

    check = sub.add_parser("check", help="check the MMU against the library's predictions")
    common(check, "all")
    check.add_argument("--json", action="store_true", help="print one JSON object per arch/mode")
    check.add_argument(
        "--no-observer",
        action="store_true",
        help="skip the second observer (QEMU's debug translation through the gdbstub) for speed",
    )
    check.set_defaults(run=command_check)
    scenario = sub.add_parser("scenario", help="print the built-in scenario")
    common(scenario, None)
    scenario.set_defaults(run=command_scenario)
    dump = sub.add_parser("dump", help="print the tables a scenario builds, level by level (no QEMU)")
    common(dump, None)
    dump.set_defaults(run=command_dump)
    explain = sub.add_parser("explain", help="probe one address every way and explain each outcome")
    common(explain, None)
    explain.add_argument("--va", required=True, help="the virtual address to explain")
    explain.set_defaults(run=command_explain)
    fuzz_parser = sub.add_parser("fuzz", help="random operation sequences, each checked in full on the MMU")
    common(fuzz_parser, None)
    fuzz_parser.add_argument("--iterations", type=_positive, default=20, help="random scenarios per mode (default 20)")
    fuzz_parser.add_argument("--operations", type=_positive, default=60, help="operations per scenario (default 60)")
    fuzz_parser.add_argument("--save", default="fuzz-failures", help="where failing scenarios are written")
    fuzz_parser.set_defaults(run=command_fuzz)
    sens = sub.add_parser("sensitivity", help="which entry bits the MMU's behaviour reveals (one flip at a time)")
    common(sens, None)
    sens.set_defaults(run=command_sensitivity)
    deviations = sub.add_parser("deviations", help="the table of known QEMU deviations (Markdown)")
    deviations.set_defaults(run=command_deviations)
    return parser


def _positive(text: str) -> int:
    value = int(text, 0)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _non_negative(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; a count or seed must be 0 or more")
    return value


def _page_count(text: str) -> int:
    value = _non_negative(text)
    if value > MAX_RANDOM_PAGES:
        raise argparse.ArgumentTypeError(
            f"{text} is more random pages than the built-in scenario has slots for ({MAX_RANDOM_PAGES})"
        )
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):  # an infinite timeout would let a hung guest hang us
        raise argparse.ArgumentTypeError(f"{text} is not a positive, finite number of seconds")
    return value


def entry() -> None:
    """The `ptcheck` program: `main()` with the default SIGPIPE action, so that
    `ptcheck scenario | head` ends quietly (never set inside a library caller's process)."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ptcheck` and `python -m harness`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, MachineError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""Bad input (issue 8): scenario files with errors, huge scenario files, command-line values out
of range, and random input to the scenario parser and to every public method of the library.

Bad input must end in an error that says what is wrong and where (file, line, column), exit
status 2 from the command line, and no QEMU left behind; the library may only raise the errors it
documents (PagingError and its subclasses, TypeError for a value of the wrong type, ValueError for
a value out of range) and must leave a table exactly as it was when an operation fails.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from arch import MappingFlags, PageSize, PagingError, RamImage
from harness import cli
from harness.scenario import GRAMMAR, ScenarioError, parse_file, parse_lines
from tests.arch.conftest import TABLE_KINDS, TableKind

from .test_reliability import leftovers  # noqa: F401  (the fixture, used by name)

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = (PagingError, TypeError, ValueError)


def run_cli(argv: list[str]) -> tuple[int, str]:
    """Exit status and everything printed, whether main() returns or argparse exits."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(argv)
        except SystemExit as exit_:
            status = int(exit_.code or 0)
    return status, out.getvalue() + err.getvalue()


# ---- scenario files ---------------------------------------------------------------------------

# (scenario text, message fragment, line, column); the data window of riscv64 starts at
# 0x8C00_0000 (harness/profiles/riscv64.py), Sv39 translates 39-bit canonical addresses.
BAD_SCENARIOS = [
    ("map 0x1000 0x8c00_0000 4K RW\nmap 0x2000 0x8c00_0000 4K R W\n", "map takes 4 arguments", 2, 29),
    ("check\n\nmpa 0x1000 0x8c00_0000 4K RW\n", "unknown operation 'mpa'", 3, 1),
    ("map 0x1000 0x8c0z_0000 4K RW\n", "PA: '0x8c0z_0000' is not a number", 1, 12),
    ("map 0x1000 0x8c00_0000 3K RW\n", "page size '3K' is not one of", 1, 24),
    ("map 0x1000 0x8c00_0000 4K RWQ\n", "unknown flag letter 'Q'", 1, 27),
    # out of the data window: below it, and beyond the end of RAM
    ("map 0x1000 0x8000_0000 4K RW\n", "outside the RAM window for scenario data", 1, 1),
    ("map_region 0x1000 0xffff_f000 2M RW huge\n", "outside the RAM window for scenario data", 1, 1),
    # overlapping mappings
    ("map 0x1000 0x8c00_0000 4K RW\nmap 0x1000 0x8c00_1000 4K R\n", "is in use", 2, 1),
    ("map 0x20_0000 0x8c20_0000 2M RW\nmap 0x20_1000 0x8c00_0000 4K R\n", "huge page", 2, 1),
    ("map 0x1000 0x8c00_0000 4K RW\nmap_region 0 0x8c00_0000 2M RW nohuge\n", "is in use", 2, 1),
    # sizes and addresses that do not fit the mode
    ("map 0 0x8c00_0000 512G RW\n", "outside the RAM window", 1, 1),  # no 512G page fits 2 GiB of RAM
    ("map 0x40_0000_0000 0x8c00_0000 4K RW\n", "is translated by no table", 1, 1),
    ("map_region 0x3f_ffff_f000 0x8c00_0000 8K RW nohuge\n", "leaves the address range", 1, 1),
    ("map 0x1000 0x8c00_0000 4K W\n", "W", 1, 1),  # RISC-V: write-only leaves are reserved
    ("unmap 0x1000\n", "is not mapped", 1, 1),
]


@pytest.mark.parametrize(("text", "fragment", "line", "column"), BAD_SCENARIOS)
def test_scenario_errors_offline(tmp_path: Path, text: str, fragment: str, line: int, column: int) -> None:
    scenario = tmp_path / "bad.txt"
    scenario.write_text(text)
    status, output = run_cli(["dump", "--arch", "riscv64", "--mode", "sv39", "--scenario", str(scenario)])
    assert status == cli.EXIT_ERROR
    assert f"error: {scenario}:{line}:{column}: " in output and fragment in output, output


@pytest.mark.arch("riscv64")
@pytest.mark.usefixtures("leftovers")
@pytest.mark.parametrize(("text", "fragment", "line", "column"), BAD_SCENARIOS[::3])
def test_scenario_errors_on_qemu(
    tmp_path: Path,
    text: str,
    fragment: str,
    line: int,
    column: int,
) -> None:
    """The same errors met while QEMU runs: exit status 2, and QEMU is gone."""
    scenario = tmp_path / "bad.txt"
    scenario.write_text("check quick\n" + text)  # the error comes after QEMU has done some work
    status, output = run_cli(["check", "--arch", "riscv64", "--mode", "sv39", "--scenario", str(scenario)])
    assert status == cli.EXIT_ERROR
    assert f"error: {scenario}:{line + 1}:{column}: " in output and fragment in output, output


# Peak resident memory from /proc/self/status (VmHWM, proc(5)); not getrusage's ru_maxrss, which
# Linux carries over from the forking parent's size across exec.
MEASURE = """
import sys
from harness.cli import main
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
before = kib("VmRSS")
status = main(["dump", "--arch", "riscv64", "--mode", "sv39", "--scenario", sys.argv[1]])
print(f"grew {kib('VmHWM') - before} KiB", file=sys.stderr)
sys.exit(status)
"""


def test_huge_scenario_is_streamed(tmp_path: Path) -> None:
    """A million lines (38 MiB), with an error on the last one: parsed as a stream (the process
    grows by far less than the file's size) and the error names line 1,000,000."""
    scenario = tmp_path / "huge.txt"
    with scenario.open("w") as file:
        for index in range(999_999):
            if index % 1000 == 0:  # a thousand pages, so the operations are really applied
                file.write(f"map {0x10_0000_0000 + index * 4096:#x} 0x8c00_0000 4K RW\n")
            elif index % 2:
                file.write("# a comment line, long enough to make the file big: padding padding\n")
            else:
                file.write("check quick\n")
        file.write("map 0x1000 0x8c00_0000 4K RW extra\n")
    assert scenario.stat().st_size > 30 << 20
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(scenario)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert run.returncode == cli.EXIT_ERROR
    assert f"{scenario}:1000000:30: map takes 4 arguments" in run.stderr, run.stderr
    grew = int(run.stderr.split("grew ")[1].split()[0])
    assert grew < 8 << 10, f"the process grew by {grew} KiB while parsing a 38 MiB file"


# ---- command-line values ----------------------------------------------------------------------

BAD_COMMAND_LINES = [
    (["check", "--arch", ""], "names no architecture"),
    (["check", "--arch", ","], "names no architecture"),
    (["check", "--arch", "riscv64,sparc"], "unknown architecture 'sparc'"),
    (["check", "--arch", "riscv64", "--mode", "sv99"], "riscv64 has no mode 'sv99'"),
    (["check", "--arch", "riscv64", "--mode", "sv39,"], "riscv64 has no mode ''"),
    (["check", "--seed", "-1"], "-1 is negative"),
    (["check", "--seed", "1e3"], "invalid _non_negative value: '1e3'"),
    (["check", "--random-pages", str(cli.MAX_RANDOM_PAGES + 1)], "more random pages than the built-in scenario"),
    (["check", "--random-pages", "9" * 5000], "invalid _page_count value"),
    (["check", "--batch-timeout", "0"], "not a positive, finite number of seconds"),
    (["check", "--batch-timeout", "-1"], "not a positive, finite number of seconds"),
    (["check", "--batch-timeout", "nan"], "not a positive, finite number of seconds"),
    (["check", "--batch-timeout", "inf"], "not a positive, finite number of seconds"),
    (["check", "--batch-timeout", "1e400"], "not a positive, finite number of seconds"),
    (["check", "--batch-timeout", "soon"], "invalid _positive_float value"),
    (["explain", "--arch", "riscv64", "--va", "0x1_0000_0000_0000_0000"], "does not fit in 64 bits"),
    (["explain", "--arch", "riscv64", "--va", "-8"], "'-8' is not a number"),
    (["dump", "--arch", "riscv64", "--scenario", "/nonexistent/scenario.txt"], "No such file or directory"),
    (["dump", "--arch", "riscv64", "--scenario", "/"], "Is a directory"),
    (["scenario"], "the following arguments are required: --arch"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.usefixtures("leftovers")
@pytest.mark.parametrize(("argv", "fragment"), BAD_COMMAND_LINES)
def test_command_line_values_out_of_range(argv: list[str], fragment: str) -> None:
    status, output = run_cli(argv)
    assert status == cli.EXIT_ERROR, output
    assert fragment in output, output


# ---- random input to the scenario parser ---------------------------------------------------------

TOKENS = st.one_of(
    st.sampled_from(sorted(GRAMMAR) + ["4K", "2M", "1G", "512G", "huge", "nohuge", "full", "quick", "#", "RWXUDC"]),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 2**66).map(hex),
    st.from_regex(r"0[xX][0-9a-fA-F_]{0,20}[KMGTkmgt]?", fullmatch=True),
    st.text(alphabet="RWXUDCrwxudcQZ", max_size=7),
    st.text(max_size=6),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=7).map(" ".join), max_size=10))
def test_random_token_lines(lines: list[str]) -> None:
    """Random sequences of plausible and implausible tokens: operations or a ScenarioError that
    points into the text, nothing else."""
    try:
        for operation in parse_lines(lines, "fuzz"):
            assert operation.kind in GRAMMAR
            assert 1 <= operation.line <= len(lines)
    except ScenarioError as error:
        assert 1 <= error.line <= len(lines) and error.column >= 1
        assert str(error).startswith(f"fuzz:{error.line}:{error.column}: ")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_random_bytes_as_a_file(tmp_path: Path, data: bytes) -> None:
    """Random bytes in a scenario file (not UTF-8, NULs, CR, very long tokens)."""
    scenario = tmp_path / "random.txt"
    scenario.write_bytes(data)
    try:
        list(parse_file(scenario))
    except ScenarioError as error:
        assert error.line >= 1 and error.column >= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(TOKENS, max_size=6).map(" ".join), max_size=6))
def test_random_scenarios_through_dump(tmp_path: Path, lines: list[str]) -> None:
    """Random scenarios applied to real tables by `ptcheck dump`: exit 0, or 2 with a located
    message; never a traceback."""
    scenario = tmp_path / "random.txt"
    scenario.write_text("\n".join(lines))
    status, output = run_cli(["dump", "--arch", "riscv64", "--mode", "sv39", "--scenario", str(scenario)])
    assert status in (cli.EXIT_PASS, cli.EXIT_ERROR), output
    if status == cli.EXIT_ERROR:
        assert output.startswith(f"error: {scenario}:"), output


# ---- random input to the library's public methods ------------------------------------------------

K4, G1 = 0x1000, 0x4000_0000


JUNK = st.one_of(
    st.sampled_from([None, True, 1.5, float("nan"), "4K", b"\0", [], {}, lambda va: va]),
    st.integers(-(2**70), 2**70),
    st.integers(0, 2**64 - 1).map(np.uint64),
    st.lists(st.integers(0, 2**64 - 1), max_size=3).map(lambda v: np.array(v, dtype=np.uint64)),
)


def plausible_or_junk(plausible: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly a well-typed value (three times in four), else anything at all."""
    return st.one_of(plausible, plausible, plausible, JUNK)


def table_methods(kind: TableKind) -> dict[str, st.SearchStrategy[tuple[object, ...]]]:
    """Every public method of PageTable64 with a strategy for its positional arguments: values of
    the right type around the table's regions and its canonical boundaries, sometimes junk."""
    bases = st.sampled_from([kind.low, kind.high] * 3 + [0, 1 << 38, 1 << 47, 1 << 56, 2**64 - G1, 2**63])
    pages = st.one_of(st.sampled_from([0, 1, 2, 512, 1024, 1 << 18]), st.integers(-4, 1100))
    va = plausible_or_junk(
        st.builds(
            lambda base, count, offset: base + count * K4 + offset, bases, pages, st.sampled_from([0, 0, 0, 8, 1])
        )
    )
    pa = plausible_or_junk(st.one_of(st.integers(0, 2**40).map(lambda a: a & ~(K4 - 1)), st.integers(-1, 2**60)))
    size = plausible_or_junk(st.sampled_from([*PageSize] * 3 + [0x80_0000_0000, 0, K4 + 1]))
    length = plausible_or_junk(st.integers(0, 0x60_0000 // K4).map(lambda pages: pages * K4))
    flags = plausible_or_junk(st.integers(0, 63).map(MappingFlags))
    small = plausible_or_junk(st.integers(-2, 8))
    vaddrs = plausible_or_junk(st.lists(va, max_size=4))
    return {
        "map": st.tuples(va, pa, size, flags),
        "unmap": st.tuples(va),
        "query": st.tuples(va),
        "protect": st.tuples(va, flags),
        "remap": st.tuples(va, pa, flags),
        "map_region": st.tuples(
            va, st.one_of(pa, st.just(lambda v: v & 0xFFF_FFFF_F000)), length, flags, plausible_or_junk(st.booleans())
        ),
        "unmap_region": st.tuples(va, length),
        "protect_region": st.tuples(va, length, flags),
        "walk": st.tuples(small),
        "mappings": st.tuples(),
        "walk_many": st.tuples(vaddrs),
        "query_many": st.tuples(vaddrs),
        "table_frames": st.tuples(),
        "copy_from": st.tuples(st.sampled_from(["other", "other", None, 5]), va, length),
        "level_of_size": st.tuples(size),
        "size_of_level": st.tuples(small),
        "entry_span": st.tuples(small),
        "index": st.tuples(va, small),
        "empty_entry": st.tuples(small),
    }


def snapshot(ram: RamImage) -> tuple[list[int], bytes]:
    """The allocated frames and their contents: all a table owns."""
    frames = ram.allocated_frames()
    return frames, b"".join(ram.read_words(frame, 512).tobytes() for frame in frames)


@pytest.mark.parametrize("kind", TABLE_KINDS, ids=[kind.name for kind in TABLE_KINDS])
def test_library_methods_raise_only_documented_errors(kind: TableKind, hypothesis_profile_examples: int) -> None:
    """Random calls of every public PageTable64 method with random arguments, on a table that
    holds a few pages: each succeeds or raises a documented error, a failed call changes no
    byte of the table, and the frames in use are exactly the tables' frames."""
    strategies = table_methods(kind)

    @settings(
        max_examples=5 * hypothesis_profile_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        ram = RamImage(0, 96 * K4)
        table, other = kind.make(ram), kind.make(ram)
        table.map_region(kind.low, 0x20_0000, 0x40_0000 + 3 * K4, MappingFlags.READ | MappingFlags.WRITE, True)
        table.map(kind.high, 0x1000, PageSize.SIZE_4K, MappingFlags.READ)
        for _ in range(data.draw(st.integers(1, 8))):
            method = data.draw(st.sampled_from(sorted(strategies)))
            args = data.draw(strategies[method], label=method)
            if method == "copy_from" and args[0] == "other":
                args = (other, *args[1:])
            before = snapshot(ram)
            try:
                getattr(table, method)(*args)
            except DOCUMENTED:
                assert snapshot(ram) == before, f"a failed {method}{args!r} changed the table"
            assert sorted(table.table_frames() + other.table_frames()) == ram.allocated_frames()

    run()


# Inputs this fuzzing once found raising undocumented errors (IndexError, OverflowError); fixed
# in the library, pinned here.
ONCE_UNDOCUMENTED = [
    ("size_of_level", (9,)),
    ("entry_span", (9,)),
    ("index", (0, 9)),
    ("empty_entry", (-1,)),
    ("walk_many", ([2**64],)),
    ("query_many", ([-1],)),
]


@pytest.mark.parametrize(("method", "args"), ONCE_UNDOCUMENTED, ids=[m for m, _ in ONCE_UNDOCUMENTED])
def test_once_undocumented_errors_are_documented_now(method: str, args: tuple[object, ...]) -> None:
    table = TABLE_KINDS[0].make(RamImage(0, 16 * K4))
    with pytest.raises(DOCUMENTED):
        getattr(table, method)(*args)


@pytest.mark.parametrize(
    "parse",
    [MappingFlags.from_letters, PageSize.parse],
    ids=["MappingFlags.from_letters", "PageSize.parse"],
)
@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.text(max_size=8), st.integers(), st.none(), st.binary(max_size=4)))
def test_flag_and_size_parsers_raise_only_documented_errors(parse: Callable[[object], object], value: object) -> None:
    try:
        parse(value)
    except DOCUMENTED:
        pass


@settings(max_examples=100, deadline=None)
@given(
    method=st.sampled_from(
        ["read_word", "write_word", "read_words", "write_words", "fill", "gather_words", "dealloc_frame"]
    ),
    address=st.one_of(st.integers(-(2**65), 2**65), st.integers(0, 16 * K4)),
    count=st.integers(-3, 600),
)
def test_ram_image_raises_only_documented_errors(method: str, address: int, count: int) -> None:
    ram = RamImage(K4, 8 * K4)
    calls: dict[str, Callable[[], object]] = {
        "read_word": lambda: ram.read_word(address),
        "write_word": lambda: ram.write_word(address, count & (2**64 - 1)),
        "read_words": lambda: ram.read_words(address, count),
        "write_words": lambda: ram.write_words(address, np.zeros(max(count, 0), dtype=np.uint64)),
        "fill": lambda: ram.fill(address, count, 7),
        "gather_words": lambda: ram.gather_words(np.array([address % 2**64], dtype=np.uint64)),
        "dealloc_frame": lambda: ram.dealloc_frame(address),
    }
    try:
        calls[method]()
    except DOCUMENTED:
        pass

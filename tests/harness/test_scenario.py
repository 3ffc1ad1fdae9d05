"""The scenario format: every operation, every error with its line and column, streaming, and
random input that may only ever produce ScenarioError."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from arch import MappingFlags
from harness.scenario import GRAMMAR, ScenarioError, parse_file, parse_line, parse_lines, parse_number

RW = MappingFlags.READ | MappingFlags.WRITE


@pytest.mark.parametrize(
    "text, value",
    [
        ("0", 0),
        ("4096", 4096),
        ("0x1000", 0x1000),
        ("0X1_000", 0x1000),
        ("1_000", 1000),
        ("4K", 4096),
        ("2M", 2 << 20),
        ("1G", 1 << 30),
        ("1T", 1 << 40),
        ("0x10k", 16 << 10),
        ("0xffff_ffff_ffff_ffff", (1 << 64) - 1),
    ],
)
def test_numbers(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text", ["", "x10", "0x", "1__0", "10_", "-1", "1.5", "0x1_0000_0000_0000_0000", "16E", "0b101"]
)
def test_bad_numbers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_number(text)


def test_every_operation() -> None:
    text = """
        # a comment
        map 0x4000_0000 0x8000_0000 4K RW   # trailing comment
        map_region 1G 0x1_4000_0000 2M RWX huge
        map_region 1G 0x1_4000_0000 2M R nohuge
        unmap 0x4000_0000
        unmap_region 1G 2M
        protect 0x1000 RX
        protect_region 1G 4M RWU
        remap 0x1000 0x9000_0000 RD
        check
        check quick
        check full
    """
    ops = list(parse_lines(text.splitlines(), "t.txt"))
    assert [op.kind for op in ops] == [
        "map",
        "map_region",
        "map_region",
        "unmap",
        "unmap_region",
        "protect",
        "protect_region",
        "remap",
        "check",
        "check",
        "check",
    ]
    assert (ops[0].va, ops[0].pa, ops[0].size, ops[0].flags, ops[0].line) == (0x4000_0000, 0x8000_0000, 4096, RW, 3)
    assert ops[1].allow_huge is True and ops[2].allow_huge is False and ops[1].length == 2 << 20
    assert ops[7].flags == MappingFlags.READ | MappingFlags.DEVICE
    assert [op.full for op in ops[-3:]] == [True, False, True]
    assert set(GRAMMAR) == {op.kind for op in ops}
    # describe() writes an operation back in the same format
    assert [parse_line(op.describe(), op.line) for op in ops] == ops


@pytest.mark.parametrize(
    "line, column, fragment",
    [
        ("mpa 1 2 4K R", 1, "unknown operation 'mpa'"),
        ("map 0x1000 0x2000 3K R", 19, "page size '3K'"),
        ("map 0x1000 0x2000 4K RZ", 22, "unknown flag letter 'Z'"),
        ("map 0x1000 0x2000 4K RR", 22, "repeat"),
        ("map 0x1000 0x2000 4K", 21, "takes 4 arguments"),
        ("map 0x1000 0x2000 4K R W", 24, "takes 4 arguments"),
        ("unmap 0xzz", 7, "VA: '0xzz' is not a number"),
        ("map_region 0 0 4K R maybe", 21, "ALLOW_HUGE"),
        ("check twice", 7, "'full' or 'quick'"),
        ("check full now", 12, "at most one argument"),
    ],
)
def test_errors_name_line_and_column(line: str, column: int, fragment: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        list(parse_lines(["", "# ok", line], "bad.txt"))
    assert (caught.value.line, caught.value.column) == (3, column)
    assert str(caught.value).startswith(f"bad.txt:3:{column}: ")
    assert fragment in str(caught.value)


def test_parsing_is_lazy() -> None:
    """Operations come out one at a time: an endless source can be parsed as far as needed."""
    endless = (f"map {i * 4096:#x} 0x8000_0000 4K R" for i in itertools.count())
    first = list(itertools.islice(parse_lines(endless), 1000))
    assert len(first) == 1000 and first[-1].va == 999 * 4096


def test_files_and_non_utf8(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.txt"
    good.write_text("map 0 0 4K R\ncheck\n")
    assert [op.kind for op in parse_file(good)] == ["map", "check"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"check\nmap \xff 0 4K R\n")
    with pytest.raises(ScenarioError, match=r"bad.txt:2:5: the line is not UTF-8"):
        list(parse_file(bad))


TOKENS = st.sampled_from(
    sorted(GRAMMAR)
    + [
        "0x1000",
        "4K",
        "2M",
        "1G",
        "512G",
        "RW",
        "RWXUDC",
        "huge",
        "#",
        "full",
        "quick",
        "-1",
        "0x",
        "ZZ",
        "\t",
        "9" * 30,
        "nohuge",
        "7",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=7).map(" ".join), max_size=8))
def test_random_token_lines_give_operations_or_scenario_errors(lines: list[str]) -> None:
    try:
        for op in parse_lines(lines):
            assert op.kind in GRAMMAR
    except ScenarioError as error:
        assert error.line >= 1 and error.column >= 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_operations_or_scenario_errors(data: bytes) -> None:
    lines = data.decode("utf-8", errors="replace").splitlines()
    try:
        list(parse_lines(lines))
    except ScenarioError:
        pass

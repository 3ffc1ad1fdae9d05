"""Scenario files: one page table operation a line, parsed as a stream.

    # comments run to the end of the line
    map VA PA SIZE FLAGS                  SIZE: 4K | 2M | 1G | 512G
    map_region VA PA LEN FLAGS ALLOW_HUGE ALLOW_HUGE: huge | nohuge (or yes/no, true/false, 1/0)
    unmap VA
    unmap_region VA LEN
    protect VA FLAGS
    protect_region VA LEN FLAGS
    remap VA PA FLAGS
    check [full | quick]                  probe everything mapped so far, plus holes around it

Numbers are decimal or 0x-hex, with `_` separators and an optional K, M, G or T suffix
(binary multiples). FLAGS are letters from RWXUDC (read, write, execute, user, device,
uncached). Errors name the source, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from arch import MappingFlags

SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
PAGE_SIZES = {"4K": 0x1000, "2M": 0x20_0000, "1G": 0x4000_0000, "512G": 0x80_0000_0000}
ALLOW_HUGE = {
    "huge": True,
    "nohuge": False,
    "yes": True,
    "no": False,
    "true": True,
    "false": False,
    "1": True,
    "0": False,
}
CHECK_MODES = {"full": True, "quick": False}
MAX_ADDRESS = (1 << 64) - 1
_NUMBER = re.compile(r"(0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)([KMGTkmgt]?)")

# operation -> argument kinds, in order
GRAMMAR: dict[str, tuple[str, ...]] = {
    "map": ("va", "pa", "size", "flags"),
    "map_region": ("va", "pa", "len", "flags", "allow_huge"),
    "unmap": ("va",),
    "unmap_region": ("va", "len"),
    "protect": ("va", "flags"),
    "protect_region": ("va", "len", "flags"),
    "remap": ("va", "pa", "flags"),
    "check": (),
}


class ScenarioError(ValueError):
    """A scenario line that cannot be parsed or applied; says where and why."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{source}:{line}:{column}: {message}")
        self.source = source
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True)
class Operation:
    """One parsed line. Fields an operation does not take are None."""

    kind: str
    line: int
    va: int | None = None
    pa: int | None = None
    size: int | None = None
    length: int | None = None
    flags: MappingFlags | None = None
    allow_huge: bool | None = None
    full: bool = True

    def describe(self) -> str:
        """The operation written back as scenario text."""
        parts = [self.kind]
        for value in (self.va, self.pa):
            if value is not None:
                parts.append(f"{value:#x}")
        if self.size is not None:
            parts.append(next((label for label, size in PAGE_SIZES.items() if size == self.size), f"{self.size:#x}"))
        if self.length is not None:
            parts.append(f"{self.length:#x}")
        if self.flags is not None:
            parts.append(self.flags.letters())
        if self.allow_huge is not None:
            parts.append("huge" if self.allow_huge else "nohuge")
        if self.kind == "check":
            parts.append("full" if self.full else "quick")
        return " ".join(parts)


def parse_number(text: str) -> int:
    """'0x8000_0000', '4096', '2M' -> int; ValueError when malformed or beyond 64 bits."""
    match = _NUMBER.fullmatch(text)
    if match is None or match.group(1).endswith("_") or "__" in match.group(1):
        raise ValueError(f"{text!r} is not a number (decimal or 0x-hex, '_' separators, K/M/G/T suffix)")
    digits, suffix = match.groups()
    value = int(digits.replace("_", ""), 0) if digits[:2].lower() == "0x" else int(digits.replace("_", ""), 10)
    value *= SUFFIXES.get(suffix.upper(), 1)
    if value > MAX_ADDRESS:
        raise ValueError(f"{text!r} does not fit in 64 bits")
    return value


def parse_flags(text: str) -> MappingFlags:
    """Letters from RWXUDC -> MappingFlags (each letter once)."""
    if len(set(text.upper())) != len(text):
        raise ValueError(f"flag letters repeat in {text!r}")
    return MappingFlags.from_letters(text)


def _argument(kind: str, text: str) -> object:
    if kind in ("va", "pa", "len"):
        return parse_number(text)
    if kind == "size":
        size = PAGE_SIZES.get(text.upper())
        if size is None:
            raise ValueError(f"page size {text!r} is not one of {', '.join(PAGE_SIZES)}")
        return size
    if kind == "flags":
        return parse_flags(text)
    if kind == "allow_huge":
        value = ALLOW_HUGE.get(text.lower())
        if value is None:
            raise ValueError(f"ALLOW_HUGE {text!r} is not one of {', '.join(ALLOW_HUGE)}")
        return value
    raise AssertionError(kind)


_FIELD = {"va": "va", "pa": "pa", "size": "size", "len": "length", "flags": "flags", "allow_huge": "allow_huge"}


def parse_line(text: str, line: int, source: str = "<scenario>") -> Operation | None:
    """Parse one line; None for blank lines and comments."""
    code = text.split("#", 1)[0]
    tokens = [(m.start() + 1, m.group()) for m in re.finditer(r"\S+", code)]
    if not tokens:
        return None
    column, name = tokens[0]
    if name not in GRAMMAR:
        raise ScenarioError(source, line, column, f"unknown operation {name!r}; expected one of {', '.join(GRAMMAR)}")
    if name == "check":
        if len(tokens) > 2:
            raise ScenarioError(source, line, tokens[2][0], "check takes at most one argument: full or quick")
        full = True
        if len(tokens) == 2:
            column, word = tokens[1]
            if word.lower() not in CHECK_MODES:
                raise ScenarioError(source, line, column, f"check mode {word!r} is not 'full' or 'quick'")
            full = CHECK_MODES[word.lower()]
        return Operation("check", line, full=full)
    kinds = GRAMMAR[name]
    if len(tokens) - 1 != len(kinds):
        where = tokens[len(kinds) + 1][0] if len(tokens) - 1 > len(kinds) else len(text.rstrip("\n")) + 1
        usage = " ".join([name, *(k.upper() for k in kinds)])
        raise ScenarioError(
            source, line, where, f"{name} takes {len(kinds)} arguments ({usage}), got {len(tokens) - 1}"
        )
    values: dict[str, object] = {}
    for kind, (column, word) in zip(kinds, tokens[1:], strict=True):
        try:
            values[_FIELD[kind]] = _argument(kind, word)
        except ValueError as error:
            raise ScenarioError(source, line, column, f"{kind.upper()}: {error}") from None
    return Operation(name, line, **values)  # type: ignore[arg-type]


def parse_lines(lines: Iterable[str], source: str = "<scenario>") -> Iterator[Operation]:
    """Parse lines lazily (a file of millions of lines is never held in memory)."""
    for number, text in enumerate(lines, start=1):
        operation = parse_line(text, number, source)
        if operation is not None:
            yield operation


def parse_file(path: str | Path) -> Iterator[Operation]:
    """Parse a scenario file lazily; bytes that are not UTF-8 give a ScenarioError."""
    source = str(path)
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ScenarioError(source, number, error.start + 1, "the line is not UTF-8 text") from None
            operation = parse_line(text, number, source)
            if operation is not None:
                yield operation

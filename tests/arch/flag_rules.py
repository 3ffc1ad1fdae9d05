"""What each architecture encodes and how flags come back through query(), written from
CRATE-ENCODINGS.md and the issue's rules, independently of the library's codecs."""

from __future__ import annotations

from arch import MappingFlags

R, W, X, U, D, C = (
    MappingFlags.READ,
    MappingFlags.WRITE,
    MappingFlags.EXECUTE,
    MappingFlags.USER,
    MappingFlags.DEVICE,
    MappingFlags.UNCACHED,
)


def arch_of(kind_name: str) -> str:
    """The flag-rule family of a table kind name from conftest.TABLE_KINDS."""
    if kind_name.startswith("x86_64"):
        return "x86_64"
    if kind_name.startswith("aarch64"):
        return "aarch64"
    if kind_name.startswith("sv"):
        return "riscv-svpbmt" if kind_name.endswith("svpbmt") else "riscv"
    return "loongarch64"


def encodable(arch: str, flags: MappingFlags) -> bool:
    """Whether `flags` may be mapped at all (else InvalidFlags)."""
    if not flags:
        return False
    if arch == "aarch64":
        return bool(flags & R)
    if arch.startswith("riscv"):
        return bool(flags & (R | X)) and not (flags & W and not flags & R)
    return True


def expected_round_trip(arch: str, flags: MappingFlags) -> MappingFlags:
    """CRATE-ENCODINGS.md, 'Flag round trip through query()'."""
    if arch == "x86_64":
        out = flags | R
        if flags & (D | C):
            out = (out & ~D) | C
        return out
    if arch in ("aarch64", "loongarch64", "riscv-svpbmt"):
        return flags & ~C if flags & D else flags
    if arch == "riscv":
        return flags & ~(D | C)
    raise AssertionError(arch)

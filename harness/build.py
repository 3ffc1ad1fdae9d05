"""Builds a probe guest from `guests/<arch>/` with the ziglang wheel's `zig cc`, cached by a hash
of the sources and flags, and reads its symbols with pyelftools."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

GUESTS_DIR = Path(__file__).resolve().parent / "guests"
if not GUESTS_DIR.is_dir():  # running from a source checkout rather than an installed package
    GUESTS_DIR = Path(__file__).resolve().parent.parent / "guests"


class BuildError(RuntimeError):
    """The guest could not be assembled or linked; the message holds zig's output."""


@dataclass(frozen=True)
class GuestImage:
    """A built guest ELF and the symbols the harness needs."""

    path: Path
    entry: int
    symbols: dict[str, int]

    def symbol(self, name: str) -> int:
        """The address of `name`; a clear error when the guest does not define it."""
        try:
            return self.symbols[name]
        except KeyError:
            raise BuildError(f"guest {self.path} defines no symbol {name!r}") from None


def cache_dir() -> Path:
    """Where built guests are kept: $PTCHECK_CACHE, else $XDG_CACHE_HOME/ptcheck, else ~/.cache."""
    explicit = os.environ.get("PTCHECK_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ptcheck"


def build_guest(arch: str, zig_args: tuple[str, ...]) -> GuestImage:
    """Build (or reuse) `guests/<arch>/guest.elf` with `zig cc <zig_args>`."""
    source_dir = GUESTS_DIR / arch
    sources = sorted(p for p in source_dir.iterdir() if p.suffix in (".S", ".ld", ".inc"))
    if not sources:
        raise BuildError(f"no guest sources in {source_dir}")
    digest = hashlib.sha256(repr(zig_args).encode())
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    target = cache_dir() / f"{arch}-{digest.hexdigest()[:16]}.elf"
    if not target.exists():
        _compile(source_dir, zig_args, target)
    return read_image(target)


def _compile(source_dir: Path, zig_args: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
    os.close(handle)
    command = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *zig_args,
        "-nostdlib",
        "-static",
        "-Wl,-T," + str(source_dir / "link.ld"),
        "-Wl,--build-id=none",
        "-o",
        partial,
        str(source_dir / "guest.S"),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BuildError(f"building the {source_dir.name} guest failed:\n{' '.join(command)}\n{done.stderr}")
        os.replace(partial, target)  # atomic: concurrent builds never see half a file
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def read_image(path: Path) -> GuestImage:
    """Entry point and global/local symbols of an ELF file."""
    with open(path, "rb") as file:
        elf = ELFFile(file)
        symbols: dict[str, int] = {}
        for section in elf.iter_sections():
            if isinstance(section, SymbolTableSection):
                for symbol in section.iter_symbols():
                    if symbol.name and symbol["st_info"]["type"] in ("STT_NOTYPE", "STT_FUNC", "STT_OBJECT"):
                        symbols.setdefault(symbol.name, symbol["st_value"])
        return GuestImage(path, elf.header["e_entry"], symbols)

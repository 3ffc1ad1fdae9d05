"""Machine profiles by architecture name (each module defines `<arch>_profile()`)."""

from __future__ import annotations

import importlib

from ..profile import Profile

ARCHES = ("x86_64", "aarch64", "riscv64", "loongarch64")


def get_profile(arch: str) -> Profile:
    """The profile of `arch`; ValueError naming the known architectures otherwise."""
    if arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r}: choose from {', '.join(ARCHES)}")
    module = importlib.import_module(f"{__name__}.{arch}")
    profile: Profile = getattr(module, f"{arch}_profile")()
    return profile


def available_arches() -> list[str]:
    """Architectures whose profile module exists in this checkout."""
    found = []
    for arch in ARCHES:
        try:
            importlib.import_module(f"{__name__}.{arch}")
        except ModuleNotFoundError:
            continue
        found.append(arch)
    return found

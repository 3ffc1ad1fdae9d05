"""pytest plugin (entry point `pytest11`): `--arch` selects which architectures' conformance
tests run on QEMU; tests marked `@pytest.mark.arch("riscv64")` are skipped, with the reason and
the command that fixes it, when their architecture is not selected or its QEMU is missing."""

from __future__ import annotations

import pytest

from .profiles import ARCHES, get_profile


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ptcheck", "page table conformance on QEMU")
    group.addoption(
        "--arch",
        default="all",
        help="architectures to check on QEMU: 'all' (default), 'none', or a comma list of " + ", ".join(ARCHES),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "arch(name): a conformance test that runs QEMU for one architecture")
    config.addinivalue_line("markers", "slow: a long test (fuzzing, load), run by .ci/run with bounded sizes")


def selected_arches(config: pytest.Config) -> list[str]:
    """The architectures chosen with --arch."""
    value = str(config.getoption("--arch")).strip()
    if value == "all":
        return list(ARCHES)
    if value == "none":
        return []
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [arch for arch in chosen if arch not in ARCHES]
    if unknown:
        raise pytest.UsageError(
            f"--arch: unknown architecture {', '.join(unknown)}; choose from {', '.join(ARCHES)}, all, none"
        )
    return chosen


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = selected_arches(config)
    for item in items:
        marker = item.get_closest_marker("arch")
        if marker is None:
            continue
        arch = marker.args[0]
        if arch not in chosen:
            item.add_marker(pytest.mark.skip(reason=f"{arch} not selected: run with --arch {arch} (or --arch all)"))
            continue
        profile = get_profile(arch)
        if not profile.available():
            item.add_marker(pytest.mark.skip(reason=profile.install_hint()))

"""The pytest plugin: --arch selects architectures, and a missing emulator becomes a skip whose
reason says how to install it."""
from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TESTS = """
import pytest

@pytest.mark.arch("riscv64")
def test_on_riscv():
    pass

@pytest.mark.arch("aarch64")
def test_on_aarch64():
    pass

def test_plain():
    pass
"""


def test_arch_selects_and_others_skip_with_a_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--arch", "riscv64", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["*aarch64 not selected: run with --arch aarch64*"])


def test_missing_emulator_is_skipped_with_the_install_command(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(TESTS)
    monkeypatch.setenv("PATH", str(pytester.path))  # no qemu-system-* anywhere on PATH
    result = pytester.runpytest("--arch", "all", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*qemu-system-riscv64 not found: install it with `apt-get install*"])


def test_unknown_arch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("--arch", "mips", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown architecture mips*"])

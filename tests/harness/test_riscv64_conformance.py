"""riscv64 on QEMU: the built-in scenario passes in Sv39, Sv48 and Sv57, and the checker catches
a deliberately wrong permission model and a wrong page table encoding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from arch import MappingFlags, PageSize
from arch.riscv.permissions import RiscvPermissions
from harness.checker import Checker
from harness.profiles import get_profile
from harness.runner import ScenarioRunner
from harness.session import GuestSession

pytestmark = pytest.mark.arch("riscv64")
PROFILE = get_profile("riscv64")


@pytest.fixture(scope="module", params=list(PROFILE.variants))
def session(request: pytest.FixtureRequest) -> Iterator[GuestSession]:
    with GuestSession(PROFILE, PROFILE.variants[request.param], gdbstub=True) as running:
        yield running


def fresh_runner(session: GuestSession) -> ScenarioRunner:
    """A runner with new, empty tables (the frame pool is reset for each test)."""
    assert session.ram is not None
    session.ram._used[:] = bytes(len(session.ram._used))
    session.ram._lowest_free = 0
    return ScenarioRunner(PROFILE, session.variant, session)


class IgnoresSum(RiscvPermissions):
    """Wrong on purpose: lets supervisor code touch user pages whether or not SUM is set."""

    @staticmethod
    def _allowed(leaf, access, user, options):  # type: ignore[no-untyped-def]
        return RiscvPermissions._allowed(leaf, access, user, options | 2)


class IgnoresMxr(RiscvPermissions):
    """Wrong on purpose: execute-only pages are never readable, MXR or not."""

    @staticmethod
    def _allowed(leaf, access, user, options):  # type: ignore[no-untyped-def]
        return RiscvPermissions._allowed(leaf, access, user, options & ~4)


@pytest.mark.parametrize("wrong_model", [IgnoresSum, IgnoresMxr])
def test_wrong_permission_model_is_caught(session: GuestSession, wrong_model: type[RiscvPermissions]) -> None:
    runner = fresh_runner(session)
    table = runner.tables.primary
    low = PROFILE.layout.data_window[0]
    table.map(0x1000_0000, low, PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.WRITE | MappingFlags.USER)
    table.map(0x1000_2000, low + 0x1000, PageSize.SIZE_4K, MappingFlags.EXECUTE)
    checker = Checker(PROFILE, session.variant, session, runner.tables)
    checker.model = wrong_model()
    checker.check(full=True)
    assert checker.stats.mismatches > 0
    assert all(m.option_set.startswith("S") or m.option_set.startswith("U") for m in checker.stats.kept)


def test_wrong_physical_address_prediction_is_caught(session: GuestSession) -> None:
    """If query() predicted the neighbouring frame, every load and store would say so."""
    runner = fresh_runner(session)
    table = runner.tables.primary
    low = PROFILE.layout.data_window[0]
    for i in range(8):
        table.map(0x3000_0000 + i * 0x1000, low + i * 0x1000, PageSize.SIZE_4K, MappingFlags.READ | MappingFlags.WRITE)
    checker = Checker(PROFILE, session.variant, session, runner.tables)
    honest = checker.tables.query_walk

    def off_by_one_frame(walk):  # type: ignore[no-untyped-def]
        result = honest(walk)
        result.paddr[result.mapped] += np.uint64(0x1000)
        return result

    checker.tables.query_walk = off_by_one_frame  # type: ignore[method-assign]
    checker.check(full=True)
    reasons = {m.reason.split(" read ")[0] for m in checker.stats.kept}
    assert checker.stats.mismatches >= 8 * 2 * 2  # both boundary words, load and store, at least
    assert any("load" in r for r in reasons) and any("store" in m.reason for m in checker.stats.kept)

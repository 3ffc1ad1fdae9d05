"""The main job as a test: the built-in scenario of every architecture and mode passes on QEMU
(with fewer random pages than the command line's 100,000, to keep the suite quick)."""

from __future__ import annotations

import pytest

from harness.default_scenario import default_scenario
from harness.profile import Profile
from harness.profiles import available_arches, get_profile
from harness.runner import ScenarioRunner
from harness.session import GuestSession

CASES = [
    pytest.param(arch, variant, marks=pytest.mark.arch(arch), id=f"{arch}-{variant}")
    for arch in available_arches()
    for variant in get_profile(arch).variants
]


@pytest.mark.parametrize("arch, variant", CASES)
def test_builtin_scenario_passes(arch: str, variant: str) -> None:
    profile = get_profile(arch)
    chosen = profile.variants[variant]
    with GuestSession(profile, chosen, gdbstub=True) as session:
        runner = ScenarioRunner(profile, chosen, session, seed=11)
        stats = runner.run(default_scenario(profile, runner.tables, seed=11, random_pages=10_000))
        assert session.power_off() in profile.clean_exit_statuses
    assert stats.probes > 10_000
    assert stats.mismatches == 0, "\n".join(
        f"{m.vaddr:#x} {m.access} {m.option_set}: {m.reason}" for m in stats.kept[:5]
    )
    if type(profile).debug_read is not Profile.debug_read:  # the architecture has a second observer
        assert stats.observed > 10_000

"""The harness under load (issue 8): many `check` runs in one process must not accumulate open
files, threads, child processes or memory; the QEMU test suite run with 4 xdist workers, twice
over, must pass and leave nothing behind.

Sizes come from the environment so CI can run them bounded:
  PTCHECK_LOAD_RUNS     consecutive `check` runs in one process (default 200)
  PTCHECK_XDIST_ROUNDS  rounds of `pytest -n 4 --arch all` over the QEMU tests (default 0: skipped)
Set PTCHECK_LOAD_REPORT to a file name to get the measured resource curves as JSON.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness import cli

from .test_reliability import children, garbage_results, inject, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.arch("riscv64")]
REPO = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("PTCHECK_LOAD_RUNS", "200"))
XDIST_ROUNDS = int(os.environ.get("PTCHECK_XDIST_ROUNDS", "0"))
# Runs before the baseline is taken: the first ones import modules, start the harness's one
# QEMU-spawning thread, and fill the allocator's and numpy's caches.
WARM_UP = 5
# How much the resident set may still grow after the warm-up, in KiB: far below what a leak of
# one RAM mapping's touched pages (several MiB) or of per-run tables would add over 200 runs.
RSS_SLACK_KIB = 8 << 10

# A small scenario that still exercises every path: pages of each size, a region, a full check
# under all six option sets (harness/profiles/riscv64.py) and the gdbstub observer.
SCENARIO = """
map 0x10_0000_0000 0x8c00_0000 4K RW
map 0x10_0020_0000 0x8c20_0000 2M RX
map 0x10_4000_0000 0xc000_0000 1G R
map_region 0x20_4000_0000 0x8c40_0000 0x40_3000 RWU huge
check full
"""


def kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (proc(5)), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def resources() -> dict[str, int]:
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "os_threads": len(os.listdir("/proc/self/task")),
        "children": len(children(os.getpid())),
        "rss_kib": kib("VmRSS"),
        "gc_objects": len(gc.get_objects()),
    }


def test_repeated_checks_do_not_grow(tmp_path: Path) -> None:
    scenario = tmp_path / "small.txt"
    scenario.write_text(SCENARIO)
    argv = ["check", "--arch", "riscv64", "--mode", "sv39", "--scenario", str(scenario)]
    curve = []
    started = time.monotonic()
    for run in range(RUNS):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            status = cli.main(argv)
        assert status == cli.EXIT_PASS, f"run {run}: {out.getvalue()}"
        gc.collect()
        curve.append(resources())
    seconds = time.monotonic() - started
    if os.environ.get("PTCHECK_LOAD_REPORT"):
        Path(os.environ["PTCHECK_LOAD_REPORT"]).write_text(json.dumps({"seconds": seconds, "curve": curve}))
    base = curve[min(WARM_UP, RUNS) - 1]
    for key in ("fds", "threads", "os_threads", "children"):
        grown = [point[key] for point in curve[WARM_UP:] if point[key] > base[key]]
        assert not grown, f"{key} grew after run {WARM_UP}: {base[key]} -> {max(grown)}"
    assert curve[-1]["children"] == 0
    peak = max(point["rss_kib"] for point in curve)
    assert peak - base["rss_kib"] < RSS_SLACK_KIB, f"resident memory grew {base['rss_kib']} -> {peak} KiB"
    objects = [point["gc_objects"] for point in curve[WARM_UP:]]
    assert max(objects) - base["gc_objects"] < 1000, f"Python objects grew {base['gc_objects']} -> {max(objects)}"


def test_repeated_failures_do_not_grow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quarter as many `check` runs, each ending in a different error: QEMU killed mid-batch,
    garbage results, a scenario error raised inside the library (its traceback once pinned a
    view of guest RAM). Every one exits with status 2, and nothing accumulates."""
    good = tmp_path / "small.txt"
    good.write_text(SCENARIO)
    bad = tmp_path / "bad.txt"
    bad.write_text(SCENARIO + "map_region 0x10_0000_0000 0x8c00_0000 0x2000 RW nohuge\n")  # already mapped
    faults = [
        (good, lambda patch: inject(patch, lambda machine: os.kill(machine.pid, signal.SIGKILL))),
        (good, garbage_results),
        (bad, lambda patch: None),
    ]
    curve = []
    for run in range(max(RUNS // 4, len(faults) * 2)):
        scenario, fault = faults[run % len(faults)]
        with monkeypatch.context() as patch, contextlib.redirect_stdout(io.StringIO()):
            fault(patch)
            with contextlib.redirect_stderr(io.StringIO()):
                status = cli.main(["check", "--arch", "riscv64", "--mode", "sv39", "--scenario", str(scenario)])
        assert status == cli.EXIT_ERROR, f"run {run}"
        gc.collect()
        curve.append(resources())
    base = curve[len(faults) * 2 - 1]
    for key in ("fds", "threads", "os_threads", "children"):
        assert max(point[key] for point in curve) <= base[key], f"{key} grew: {[p[key] for p in curve]}"
    assert max(point["rss_kib"] for point in curve) - base["rss_kib"] < RSS_SLACK_KIB


@pytest.mark.skipif(XDIST_ROUNDS < 1, reason="set PTCHECK_XDIST_ROUNDS (CI: 2) to run the suite under xdist")
def test_qemu_suite_under_xdist() -> None:
    """`pytest -n 4 --arch all` over the QEMU tests, PTCHECK_XDIST_ROUNDS times: every round
    passes, and afterwards no process that inherited this run's mark is alive and no private
    directory of this run is left."""
    pytest.importorskip("xdist")
    mark = f"load-test-{uuid.uuid4()}"
    private_tmp = Path(os.environ.get("TMPDIR", "/tmp")) / mark
    private_tmp.mkdir()
    env = dict(os.environ, PTCHECK_LOAD_MARK=mark, TMPDIR=str(private_tmp))
    shm_before = set(Path("/dev/shm").glob("ptcheck-*"))
    # Every QEMU test except this file and the fault tests (which kill and stop QEMU on purpose
    # and run processes of their own).
    tests = [
        str(path)
        for path in sorted((REPO / "tests/harness").glob("test_*.py"))
        if path.name not in ("test_load.py", "test_reliability.py")
    ]
    try:
        for round_ in range(XDIST_ROUNDS):
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-n", "4", "--arch", "all", "-p", "no:cacheprovider", "-q", *tests],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
            )
            assert run.returncode == 0, f"round {round_ + 1}:\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
        assert wait_until(lambda: not marked_processes(mark), 5), f"left running: {marked_processes(mark)}"
        # pytest keeps its own tmp_path directories (pytest-of-<user>, the last three runs) on
        # purpose; anything else in the run's private TMPDIR would be ours
        left = [path for path in private_tmp.iterdir() if not path.name.startswith("pytest-of-")]
        assert not left, f"left in TMPDIR: {left}"
        # /dev/shm is shared with other users of the machine: a directory of ours would still be
        # there seconds later (a QEMU start, ours or not, removes its own within a second).
        time.sleep(5)
        stale = set(Path("/dev/shm").glob("ptcheck-*")) - shm_before
        assert not stale, f"left in /dev/shm: {stale}"
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)


def marked_processes(mark: str) -> list[int]:
    """Processes whose environment carries `mark` (QEMU inherits the harness's environment)."""
    found = []
    needle = f"PTCHECK_LOAD_MARK={mark}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found

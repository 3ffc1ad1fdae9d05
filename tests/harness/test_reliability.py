"""Reliability of the harness under faults (issue 8): QEMU killed, stopped or failing to start, the
guest hanging, trapping for ever, resetting or writing garbage, the RAM file's directory full or
read-only, the harness itself killed or interrupted.

Each fault must end within a bounded time with a GuestError/MachineError (exit status 2 from the
command line) that names the cause and quotes what is known, and must leave nothing behind: no
QEMU process, no socket or other descriptor, no RAM file or private directory.

Guest misbehaviour is made on a real riscv64 guest from the harness side (its RAM is ours to
write), or with a tiny bad guest built here (`BAD_GUEST`).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from arch import MappingFlags, PageSize
from harness import cli
from harness import mailbox as mb
from harness.build import GuestImage, read_image
from harness.checker import Checker
from harness.machine import Machine, MachineError
from harness.profiles import get_profile
from harness.profiles.riscv64 import Riscv64Profile
from harness.session import GuestError, GuestSession
from harness.tableset import TableSet

pytestmark = pytest.mark.arch("riscv64")
REPO = Path(__file__).resolve().parents[2]
PROFILE = get_profile("riscv64")
SV39 = PROFILE.variants["sv39"]
DATA = PROFILE.layout.data_window[0]  # a physical page scenario data may use
PROBE_VA = 0x10_0000_0000  # a low-half Sv39 address (below 2**38)
RX = MappingFlags.READ | MappingFlags.EXECUTE
# RISC-V encodings (unprivileged spec v20191213; checked with capstone):
JUMP_TO_SELF = 0x0000_006F  # jal x0, 0 = `j .` (2.5, "Unconditional Jumps")
ILLEGAL = 0x0000_0000  # all-zero bits are defined illegal (1.5, "Base Instruction-Length Encoding")
# sifive_test at 0x10_0000: writing 0x7777 (FINISHER_RESET) resets the machine, which -no-reboot
# turns into QEMU's exit (QEMU hw/misc/sifive_test.c; QEMU-NOTES, RISC-V: the same device exits).
RESET_CODE = [
    0x0010_0337,  # lui  t1, 0x100
    0x0000_73B7,  # lui  t2, 7
    0x7773_8393,  # addi t2, t2, 0x777
    0x0073_2023,  # sw   t2, 0(t1)
]
FAST = 1.0  # the batch and boot timeouts of these tests, in seconds
# What a timed-out batch may add to its timeout: one second of diagnosis over the gdbstub or QMP
# (session.DIAGNOSIS_TIMEOUT) and a little scheduling slack on a loaded 2-core machine.
SLACK = 3.0


# ---- leftovers -------------------------------------------------------------------------------


def children(pid: int) -> set[int]:
    """Processes whose parent is `pid`, zombies included (proc(5): field 4 of stat is the ppid)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def gone(pid: int) -> bool:
    """The process no longer exists (a zombie still counts as a leftover: nobody reaped it)."""
    return not Path(f"/proc/{pid}").exists()


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def descriptors() -> dict[int, str]:
    """This process's open file descriptors and what they point to."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
    return found


def ram_dir_of(pid: int) -> Path:
    """The private directory of a running QEMU's RAM file, from its memory map."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    [ram] = set(re.findall(r"(/\S*ptcheck-[^/\s]+)/ram", maps))
    return Path(ram)


@dataclass
class Leftovers:
    """What the harness owns, snapshotted before a test; `check()` asserts none of it grew."""

    workdirs: list[Path]
    children: set[int]
    descriptors: dict[int, str]

    def check(self) -> None:
        qemus = children(os.getpid()) - self.children
        assert not qemus, f"child processes left running: {qemus}"
        assert not [path for path in self.workdirs if path.exists()], "private directories left behind"
        new = {fd: target for fd, target in descriptors().items() if self.descriptors.get(fd) != target}
        assert not new, f"descriptors left open: {new}"
        assert wait_until(lambda: not any(t.name == "ptcheck-qemu-output" for t in threading.enumerate()), 2)


@pytest.fixture
def leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Leftovers]:
    """Fails the test if it leaves a QEMU process, descriptor or private directory behind."""
    created: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: str | None, **kwargs: str | None) -> str:
        path: str = mkdtemp(*args, **kwargs)
        created.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    state = Leftovers(created, children(os.getpid()), descriptors())
    yield state
    state.check()


def bounded(seconds: float) -> Callable[[], None]:
    """`done()` asserts that at most `seconds` passed since bounded() was called."""
    started = time.monotonic()

    def done() -> None:
        took = time.monotonic() - started
        assert took < seconds, f"took {took:.1f} s, more than {seconds} s"

    return done


# ---- helpers on a real guest -----------------------------------------------------------------


def session(**kwargs: Any) -> GuestSession:
    """A riscv64 Sv39 session whose batches time out after FAST seconds."""
    return GuestSession(PROFILE, SV39, batch_timeout=FAST, **kwargs)


def write_code(running: GuestSession, paddr: int, words: list[int]) -> None:
    """Writes 32-bit instructions into guest RAM. QEMU translates code when it first runs it, so
    this changes code the guest has not executed yet (guests/riscv64/README.md, "Fetch safety")."""
    for index, word in enumerate(words):
        offset = paddr - PROFILE.ram_base + 4 * index
        running.machine.ram[offset : offset + 4] = word.to_bytes(4, "little")


def tables_with_page(running: GuestSession, first_word: int) -> TableSet:
    """An Sv39 table mapping PROBE_VA (R+X) to DATA, whose first word is `first_word`."""
    assert running.ram is not None
    tables = SV39.make_tables(running.ram)
    tables.primary.map(PROBE_VA, DATA, PageSize.SIZE_4K, RX)
    running.ram.write_word(DATA, first_word)
    return tables


def probes(*words: int) -> np.ndarray:
    return np.array(words, dtype=np.uint64)


LOAD, FETCH = int(mb.Access.LOAD), int(mb.Access.FETCH)
UNMAPPED_LOAD = 0x1000 | LOAD  # nothing is mapped at 0x1000: the probe faults into `trap`


# ---- QEMU dies, stops or does not start --------------------------------------------------------


def test_qemu_killed_mid_batch(leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch) -> None:
    with session(gdbstub=True) as running:
        tables = tables_with_page(running, 0)
        # wake() runs right after `go` is written: the batch has started
        monkeypatch.setattr(running.profile, "wake", lambda machine, command: os.kill(machine.pid, signal.SIGKILL))
        done = bounded(SLACK)
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(PROBE_VA | LOAD), 0)
        done()
    message = str(caught.value)
    assert message.startswith("QEMU exited during a batch of 1 probes")
    assert "was killed by SIGKILL" in message and "mailbox: go=0x1, done=0x0" in message


def test_qemu_stopped_mid_batch(leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGSTOPped QEMU stands in for a livelocked one (QEMU-NOTES, LoongArch)."""
    with session(gdbstub=True) as running:
        tables = tables_with_page(running, 0)
        monkeypatch.setattr(running.profile, "wake", lambda machine, command: os.kill(machine.pid, signal.SIGSTOP))
        done = bounded(FAST + SLACK)
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(PROBE_VA | LOAD), 0)
        done()
        closing = bounded(SLACK)
    closing()  # QMP quit times out, then SIGKILL (which also ends a stopped process)
    message = str(caught.value)
    assert f"did not finish a batch of 1 probes within {FAST:g} s" in message
    assert "process state T (stopped by a signal)" in message
    assert "CPU state unavailable: no answer from the gdbstub" in message


def test_missing_binary(leftovers: Leftovers) -> None:
    profile = replace(PROFILE, binary="qemu-system-nonexistent")
    with pytest.raises(MachineError, match=r"qemu-system-nonexistent not found \(is QEMU installed\?\)"):
        GuestSession(profile, SV39)


def test_missing_binary_from_the_command_line(
    leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "get_profile", lambda arch: replace(PROFILE, binary="qemu-system-nonexistent"))
    assert cli.main(["check", "--arch", "riscv64"]) == cli.EXIT_ERROR
    assert "qemu-system-nonexistent not found" in capsys.readouterr().err


def test_bad_option(leftovers: Leftovers) -> None:
    variant = replace(SV39, machine_args=("-no-such-option",))
    with pytest.raises(MachineError, match="(?s)did not start.*exited with status 1.*-no-such-option"):
        GuestSession(PROFILE, variant)


def test_port_in_use(leftovers: Leftovers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        variant = replace(SV39, machine_args=("-chardev", f"socket,id=taken,host=127.0.0.1,port={port},server=on"))
        with pytest.raises(MachineError, match=f"(?s)did not start.*{port}.*Address already in use"):
            GuestSession(PROFILE, variant)


def test_socket_path_taken(leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The QMP socket's path is taken by something QEMU cannot replace (it unlinks a stale socket
    file, util/qemu-sockets.c, but not a directory). Impossible in the private directory, yet the
    start must end at once with QEMU's own words."""
    taken = Path(tempfile.mkdtemp(prefix="ptcheck-"))  # recorded by `leftovers`
    (taken / "qmp.sock").mkdir()
    (taken / "qmp.sock" / "busy").touch()
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *args, **kwargs: str(taken))
    done = bounded(SLACK)
    with pytest.raises(MachineError, match="(?s)QMP socket was ready.*Failed to unlink socket .*Is a directory"):
        GuestSession(PROFILE, SV39)
    done()


@pytest.fixture
def userns() -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], check=False).returncode:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a small or read-only tmpfs")


@pytest.mark.parametrize(
    ("mount_options", "expected"),
    [
        ("ro,size=1M", "Read-only file system"),
        ("size=64k", "has 0 MiB free, but the guest RAM file may grow to 2048 MiB"),
    ],
    ids=["read-only", "full"],
)
def test_ram_directory_unwritable_or_full(userns: None, mount_options: str, expected: str) -> None:
    """The harness's temp directory is a read-only or nearly full tmpfs, and /dev/shm has no room
    either; both are mounted in a private mount namespace, seen by this harness run only."""
    with tempfile.TemporaryDirectory(prefix="ptcheck-test-") as scratch:
        script = (
            f"mount -t tmpfs -o size=64k tmpfs /dev/shm && mount -t tmpfs -o {mount_options} tmpfs {scratch} && "
            f'exec "$0" -c "$1" {scratch}'
        )
        program = (
            "import sys, tempfile; tempfile.tempdir = sys.argv[1]; from harness.cli import main; "
            "sys.exit(main(['check', '--arch', 'riscv64', '--mode', 'sv39', '--random-pages', '10']))"
        )
        done = bounded(20)
        run = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script, sys.executable, program],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        done()
    assert run.returncode == cli.EXIT_ERROR, run.stdout + run.stderr
    assert "riscv64/sv39: ERROR" in run.stdout and expected in run.stdout, run.stdout + run.stderr


# ---- the guest hangs, storms or resets --------------------------------------------------------


def test_probe_list_that_loops(leftovers: Leftovers) -> None:
    """Fetch probes into `j .`: the guest's watchdog ends each after 300 ms, so ten of them exceed
    a one-second batch timeout; the error shows where the CPU loops."""
    with session(gdbstub=True) as running:
        tables = tables_with_page(running, JUMP_TO_SELF)
        done = bounded(FAST + SLACK)
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(*[PROBE_VA | FETCH] * 10), 0)
        done()
    message = str(caught.value)
    assert f"did not finish a batch of 10 probes within {FAST:g} s" in message
    assert re.search(r"CPU \(gdbstub\): pc=0x1000000000 priv=0x1 mcause=", message)  # S-mode, in the page
    assert "at pc: 0x1000000000: 6f 00 00 00  j 0x1000000000" in message


@pytest.mark.parametrize("gdbstub", [True, False], ids=["gdbstub", "info-registers"])
def test_trap_storm(leftovers: Leftovers, gdbstub: bool) -> None:
    """The trap handler's first instruction made illegal: the first fault traps into it, which
    traps again, for ever, in M-mode where no watchdog reaches."""
    with session(gdbstub=gdbstub) as running:
        tables = tables_with_page(running, 0)
        trap = running.image.symbol("trap")
        write_code(running, trap, [ILLEGAL])
        done = bounded(FAST + SLACK)
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(UNMAPPED_LOAD), 0)
        done()
    message = str(caught.value)
    source = "gdbstub" if gdbstub else "info registers"
    assert re.search(rf"CPU \({source}\): pc={trap:#x} .*mcause=0x2 \[mcause 2 \(illegal instruction\)\]", message)
    assert f"at pc: {trap:#x} <trap>: 00 00  unimp" in message


def test_trap_handler_that_hangs(leftovers: Leftovers) -> None:
    with session(gdbstub=True) as running:
        tables = tables_with_page(running, 0)
        trap = running.image.symbol("trap")
        write_code(running, trap, [JUMP_TO_SELF])
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(UNMAPPED_LOAD), 0)
    message = str(caught.value)
    # the load page fault (13) at the guest's probe_load brought the CPU there
    load = running.image.symbol("probe_load")
    assert re.search(rf"mcause=0xd \[mcause 13 \(load page fault\)\] mepc={load:#x} mtval=0x1000", message)
    assert f"at pc: {trap:#x} <trap>: 6f 00 00 00  j {trap:#x}" in message


def test_guest_resets_mid_batch(leftovers: Leftovers) -> None:
    with session(gdbstub=True) as running:
        tables = tables_with_page(running, 0)
        write_code(running, running.image.symbol("trap"), RESET_CODE)
        done = bounded(SLACK)
        with pytest.raises(GuestError) as caught:
            running.run_batch(tables.roots, probes(UNMAPPED_LOAD), 0)
        done()
    message = str(caught.value)
    assert message.startswith("QEMU exited during a batch of 1 probes")
    assert "exited with status 0, the status of a guest power-off" in message and "reset" in message


def test_root_pointing_at_garbage_is_never_a_pass(leftovers: Leftovers) -> None:
    """root0 at a frame of random words: whatever the MMU makes of it, the checker must not pass."""
    with session() as running:
        assert running.ram is not None
        tables = tables_with_page(running, 0)
        garbage = running.ram.alloc_frame()
        assert garbage is not None
        running.ram.write_words(garbage, np.random.default_rng(8).integers(0, 2**63, 512, dtype=np.uint64) * 2 + 1)
        checker = Checker(PROFILE, SV39, running, tables)
        tables.roots = (garbage, 0)
        checker.check(full=False)
        assert checker.stats.mismatches > 0


# ---- a bad guest -----------------------------------------------------------------------------

# A guest that sets nothing up: it defines the mailbox but never writes the magic, and sleeps in
# `wfi` with no interrupt enabled (QEMU-NOTES, Common: never spin). Built with -DRESET it first
# waits RESET_DELAY seconds, so that the harness has attached to QEMU, then resets the machine
# through sifive_test (see RESET_CODE).
RESET_DELAY = 0.5
BAD_GUEST = f"""
        .option norvc
        .section .text.entry, "ax"
        .globl _start
_start:
#ifdef RESET
        li      t0, 0x0200bff8          /* ACLINT mtime, 10 MHz (guests/riscv64/README.md) */
        ld      t1, 0(t0)
        li      t2, {int(RESET_DELAY * 10_000_000)}
        add     t1, t1, t2              /* the deadline */
        li      t2, 0x02004000          /* hart 0's mtimecmp */
        sd      t1, 0(t2)
        li      t2, 0x80                /* mie.MTIE: wfi ends when the timer is due, even with */
        csrw    mie, t2                 /* mstatus.MIE = 0 (privileged spec 3.3.3) */
wait:
        wfi
        ld      t2, 0(t0)
        bltu    t2, t1, wait
        li      t0, 0x100000            /* sifive_test */
        li      t1, 0x7777              /* FINISHER_RESET */
        sw      t1, 0(t0)
#endif
hang:
        csrw    mie, zero
        wfi
        j       hang

        .section .data, "aw"
        .balign 4096
        .globl ptc_mailbox
ptc_mailbox:
        .zero   4096
"""


@pytest.fixture(scope="module")
def bad_guests() -> Iterator[dict[str, GuestImage]]:
    """BAD_GUEST built as "hang" and "reset", linked like the real guest (its link.ld)."""
    with tempfile.TemporaryDirectory(prefix="ptcheck-test-") as scratch:
        source = Path(scratch) / "bad.S"
        source.write_text(BAD_GUEST)
        images = {}
        for name, defines in (("hang", []), ("reset", ["-DRESET"])):
            elf = Path(scratch) / f"{name}.elf"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ziglang",
                    "cc",
                    *PROFILE.zig_args,
                    "-nostdlib",
                    "-static",
                    *defines,
                    f"-Wl,-T,{REPO / 'guests/riscv64/link.ld'}",
                    "-o",
                    str(elf),
                    str(source),
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            images[name] = read_image(elf)
        yield images


@pytest.mark.parametrize(
    ("guest", "boot_timeout", "expected"),
    [
        ("hang", FAST, rf"the riscv64 guest did not write its magic within {FAST:g} s(?s:.*)at pc: 0x800000.. <hang"),
        (
            "reset",
            RESET_DELAY + SLACK,
            r"QEMU exited before the riscv64 guest wrote its magic(?s:.*)exited with status 0",
        ),
    ],
    ids=["hang", "reset"],
)
def test_guest_that_never_boots(
    leftovers: Leftovers,
    monkeypatch: pytest.MonkeyPatch,
    bad_guests: dict[str, GuestImage],
    guest: str,
    boot_timeout: float,
    expected: str,
) -> None:
    monkeypatch.setattr("harness.session.build_guest", lambda arch, zig_args: bad_guests[guest])
    done = bounded(boot_timeout + SLACK)
    with pytest.raises(GuestError, match=expected):
        session(gdbstub=True, boot_timeout=boot_timeout)
    done()


# ---- garbage in the results ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ((0, 0, 0, 0), "outcome 0x0"),  # never executed
        ((0x5A5A_5A5A_5A5A_5A5A, 1, 2, 3), "outcome 0x5a5a5a5a5a5a5a5a"),
        ((mb.OUTCOME_OK, 0, 13, 0x1000), "outcome 0x1, cause 0xd"),  # "completed" with a fault cause
    ],
    ids=["not-run", "garbage", "inconsistent"],
)
def test_garbage_results_are_an_error(
    leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch, record: tuple[int, ...], expected: str
) -> None:
    """The guest finishes, but one record of its result area is not an ABI result."""
    with session() as running:
        assert running.ram is not None
        tables = tables_with_page(running, 0)
        wait_done = running._wait_done

        def scribble(count: int) -> None:
            wait_done(count)
            results = running._word(mb.RESULTS)
            running.ram.write_words(results + 32 * 2, np.array(record, dtype=np.uint64))  # probe 2

        monkeypatch.setattr(running, "_wait_done", scribble)
        with pytest.raises(GuestError, match=f"1 of 4 results are unreadable.*first at probe 2 .*{expected}"):
            running.run_batch(tables.roots, probes(*[PROBE_VA | LOAD] * 4), 0)


def test_garbage_written_while_the_batch_runs(leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread overwrites finished results while the guest still runs the batch's last probes
    (fetches into `j .`, 300 ms each): the batch is an error, never a set of results."""
    with GuestSession(PROFILE, SV39, batch_timeout=10 * FAST) as running:  # the loops need 600 ms
        assert running.ram is not None
        ram = running.ram
        tables = tables_with_page(running, JUMP_TO_SELF)
        loads = 100

        def scribble() -> None:
            if wait_until(lambda: running._word(mb.PROGRESS) >= loads, FAST):
                results = running._word(mb.RESULTS)
                ram.write_words(results, np.full(4 * loads, 0xDEAD_BEEF, dtype=np.uint64))

        writer = threading.Thread(target=scribble)
        monkeypatch.setattr(running.profile, "wake", lambda machine, command: writer.start())
        with pytest.raises(GuestError, match="100 of 102 results are unreadable"):
            running.run_batch(tables.roots, probes(*[PROBE_VA | LOAD] * loads, *[PROBE_VA | FETCH] * 2), 0)
        writer.join()


def test_garbage_in_the_mailbox(leftovers: Leftovers, monkeypatch: pytest.MonkeyPatch) -> None:
    """`done` overwritten with a value no batch had: an error at once, not after the timeout."""
    with session() as running:
        tables = tables_with_page(running, JUMP_TO_SELF)
        monkeypatch.setattr(running.profile, "wake", lambda machine, command: running._set(mb.DONE, 0x1234_5678))
        done = bounded(FAST / 2)
        with pytest.raises(GuestError, match="done field holds 0x12345678, but go is 0x1"):
            running.run_batch(tables.roots, probes(PROBE_VA | FETCH), 0)
        done()


# ---- the same faults through the command line: exit status 2 and the cause ----------------------


def inject(monkeypatch: pytest.MonkeyPatch, fault: Callable[[Machine], None]) -> None:
    """Runs `fault` at the first batch of every session (right after `go` is written)."""
    monkeypatch.setattr(Riscv64Profile, "wake", lambda self, machine, command: fault(machine))


def garbage_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch's first result record turns into garbage once the guest is done."""
    wait_done = GuestSession._wait_done

    def scribble(self: GuestSession, count: int) -> None:
        wait_done(self, count)
        assert self.ram is not None
        self.ram.write_word(self._word(mb.RESULTS), 0x5A5A)

    monkeypatch.setattr(GuestSession, "_wait_done", scribble)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (lambda mp: inject(mp, lambda m: os.kill(m.pid, signal.SIGKILL)), "was killed by SIGKILL"),
        (lambda mp: inject(mp, lambda m: os.kill(m.pid, signal.SIGSTOP)), "process state T"),
        (garbage_results, "results are unreadable"),
    ],
    ids=["killed", "stopped", "garbage"],
)
def test_check_command_fails_with_the_cause(
    leftovers: Leftovers,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: Callable[[pytest.MonkeyPatch], None],
    expected: str,
) -> None:
    fault(monkeypatch)
    done = bounded(FAST + 2 * SLACK)
    status = cli.main(
        ["check", "--arch", "riscv64", "--mode", "sv39", "--random-pages", "10", "--batch-timeout", str(FAST)]
    )
    done()
    out = capsys.readouterr().out
    assert status == cli.EXIT_ERROR
    assert "riscv64/sv39: ERROR" in out and expected in out, out


# ---- the harness process itself is killed or interrupted -----------------------------------------


def qemu_child(parent: int, timeout: float = 30) -> int:
    """The pid of the QEMU that `parent` started, once its RAM file is mapped."""
    found: list[int] = []

    def started() -> bool:
        for pid in children(parent):
            try:
                if (
                    Path(f"/proc/{pid}/comm").read_text().startswith("qemu-system")
                    and "ptcheck-" in Path(f"/proc/{pid}/maps").read_text()
                ):
                    found.append(pid)
                    return True
            except OSError:
                continue
        return False

    assert wait_until(started, timeout), "no QEMU appeared"
    return found[0]


def test_harness_killed_mid_check() -> None:
    """SIGKILL of `ptcheck check`: no cleanup code runs, yet QEMU dies with it (PR_SET_PDEATHSIG)
    and its RAM file is already unlinked."""
    command = [
        sys.executable,
        "-m",
        "harness",
        "check",
        "--arch",
        "riscv64",
        "--mode",
        "sv39",
        "--random-pages",
        "100000",
    ]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as harness:
        try:
            qemu = qemu_child(harness.pid)
            workdir = ram_dir_of(qemu)
            time.sleep(0.5)  # well into the scenario (boot takes about 0.1 s)
        finally:
            harness.kill()
    assert wait_until(lambda: gone(qemu), 5), f"QEMU {qemu} outlived the harness"
    assert not workdir.exists()


INTERRUPTED_TEST = """
import os
import numpy as np
from harness.profiles import get_profile
from harness.session import GuestSession

def test_batches_until_interrupted():
    profile = get_profile("riscv64")
    variant = profile.variants["sv39"]
    with GuestSession(profile, variant) as session:
        tables = variant.make_tables(session.ram)
        with open(os.environ["PTCHECK_TEST_READY"], "w") as ready:
            ready.write(str(session.machine.pid))
        while True:
            session.run_batch(tables.roots, np.array([0x1000], dtype=np.uint64), 0)
"""


def test_pytest_interrupted_with_ctrl_c() -> None:
    """Ctrl-C (SIGINT to pytest, as a terminal sends it: QEMU runs in its own session and gets
    none) while a test runs batches: pytest ends as interrupted and QEMU is gone."""
    with tempfile.TemporaryDirectory(prefix="ptcheck-test-") as scratch:
        test_file = Path(scratch) / "test_interrupted.py"
        test_file.write_text(textwrap.dedent(INTERRUPTED_TEST))
        ready = Path(scratch) / "ready"
        env = dict(os.environ, PTCHECK_TEST_READY=str(ready))
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--rootdir",
            scratch,
            str(test_file),
        ]
        with subprocess.Popen(command, cwd=scratch, env=env, stdout=subprocess.PIPE, text=True) as inner:
            try:
                assert wait_until(lambda: ready.exists() and ready.read_text() != "", 30), "the test did not start"
                qemu = int(ready.read_text())
                workdir = ram_dir_of(qemu)
                time.sleep(0.2)
                inner.send_signal(signal.SIGINT)
                ended, _, _ = select.select([inner.stdout], [], [], 10)
                assert ended and inner.wait(10) == pytest.ExitCode.INTERRUPTED
            finally:
                inner.kill()
    assert gone(qemu), f"QEMU {qemu} outlived the interrupted pytest"
    assert not workdir.exists()

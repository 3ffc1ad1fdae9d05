"""Tests of harness.machine on qemu-system-riscv64, without a guest kernel.

Machines start paused (-S); the few instructions a test needs are written straight into guest RAM
through `Machine.ram` before the VM is resumed. The riscv virt reset ROM jumps to the start of RAM
when there is neither firmware nor kernel (QEMU-NOTES, RISC-V).
"""
from __future__ import annotations

import gc
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import harness.machine
from harness.gdbstub import GdbError
from harness.machine import Machine, MachineError, MachineSpec

BINARY = "qemu-system-riscv64"
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which(BINARY) is None,
                       reason=f"{BINARY} not found: apt-get install qemu-system-riscv (Debian trixie "
                              "or bookworm-backports) or qemu-system-misc (bookworm)"),
]

REPO = Path(__file__).resolve().parents[2]
RAM_BASE = 0x8000_0000  # riscv virt: DRAM starts here (QEMU-NOTES, RISC-V)
RISCV = MachineSpec(BINARY, ("-machine", "virt", "-cpu", "rv64", "-bios", "none"),
                    ram_base=RAM_BASE, ram_size=64 << 20)

# Offsets in RAM used by SV39_GUEST.
MARK_M = 0x100  # the guest stores RAM_BASE here first (in M-mode, translation off)
MARK_S = 0x108  # ... and here once it runs in S-mode with Sv39 on
ROOT = 0x2000  # the Sv39 root table
HIGH_HALF = 0xFFFF_FFC0_0000_0000  # Sv39 VA with VPN[2] = 256, sign-extended from bit 38

# Enters S-mode with Sv39 on and idles in wfi (QEMU-NOTES, RISC-V: PMP grant, MPP = 1, mret).
# Encodings from `zig cc -target riscv64-freestanding` (.option norvc), checked with capstone.
SV39_GUEST = [
    0x00000297,  # 0x00: auipc t0, 0            t0 = RAM_BASE
    0x1052B023,  # 0x04: sd    t0, 0x100(t0)    MARK_M
    0xFFF00313,  # 0x08: li    t1, -1
    0x3B031073,  # 0x0c: csrw  pmpaddr0, t1     PMP entry 0 covers everything...
    0x00F00313,  # 0x10: li    t1, 0xf
    0x3A031073,  # 0x14: csrw  pmpcfg0, t1      ...with R, W, X (TOR): S-mode may access it
    0x00080337,  # 0x18: lui   t1, 0x80
    0x00230313,  # 0x1c: addi  t1, t1, 2        PPN of the root: (RAM_BASE + ROOT) >> 12
    0x00800393,  # 0x20: li    t2, 8
    0x03C39393,  # 0x24: slli  t2, t2, 60       satp.MODE = 8, Sv39
    0x00736333,  # 0x28: or    t1, t1, t2
    0x18031073,  # 0x2c: csrw  satp, t1
    0x12000073,  # 0x30: sfence.vma
    0x00100313,  # 0x34: li    t1, 1
    0x00B31313,  # 0x38: slli  t1, t1, 11
    0x30032073,  # 0x3c: csrs  mstatus, t1      MPP = 01: mret goes to S-mode
    0x04C28313,  # 0x40: addi  t1, t0, 0x4c
    0x34131073,  # 0x44: csrw  mepc, t1
    0x30200073,  # 0x48: mret
    0x1052B423,  # 0x4c: sd    t0, 0x108(t0)    MARK_S, through the identity leaf
    0x10500073,  # 0x50: wfi                    no interrupt is enabled: the hart sleeps
    0xFFDFF06F,  # 0x54: j     0x50
]
SV39_IDLE_PCS = (RAM_BASE + 0x50, RAM_BASE + 0x54)
SV39_SATP = 8 << 60 | (RAM_BASE + ROOT) >> 12

# Prints "ok" on the UART (ns16550a at 0x1000_0000, riscv virt) and powers the machine off through
# the sifive_test device: 0x5555 at 0x10_0000 = exit status 0 (QEMU-NOTES, RISC-V).
POWER_OFF_GUEST = [
    0x100002B7,  # lui  t0, 0x10000         the UART's transmit register
    0x06F00313,  # li   t1, 'o'
    0x00628023,  # sb   t1, 0(t0)
    0x06B00313,  # li   t1, 'k'
    0x00628023,  # sb   t1, 0(t0)
    0x00A00313,  # li   t1, '\n'
    0x00628023,  # sb   t1, 0(t0)
    0x001002B7,  # lui  t0, 0x100           sifive_test
    0x00005337,  # lui  t1, 5
    0x55530313,  # addi t1, t1, 0x555
    0x0062A023,  # sw   t1, 0(t0)
    0x10500073,  # wfi
    0xFFDFF06F,  # j    .-4
]


def sv39_leaf(pa: int, *, execute: bool) -> int:
    """A 1 GiB Sv39 leaf (RISC-V privileged spec, Sv39 PTE: PPN at bit 10; V R W X at bits 0-3,
    A bit 6, D bit 7): readable, writable, accessed, dirty, executable if asked."""
    return (pa >> 12) << 10 | 0xC7 | (0x08 if execute else 0)


def write_words(machine: Machine, offset: int, words: list[int], size: int = 4) -> None:
    for index, word in enumerate(words):
        start = offset + index * size
        machine.ram[start:start + size] = word.to_bytes(size, "little")


def load_sv39_guest(machine: Machine) -> None:
    """Writes SV39_GUEST and its table: VA RAM_BASE and HIGH_HALF both map RAM's first GiB."""
    write_words(machine, 0, SV39_GUEST)
    write_words(machine, ROOT + 8 * 2, [sv39_leaf(RAM_BASE, execute=True)], size=8)  # VPN[2] = 2
    write_words(machine, ROOT + 8 * 256, [sv39_leaf(RAM_BASE, execute=False)], size=8)


def ram_word(machine: Machine, offset: int) -> int:
    return int.from_bytes(machine.ram[offset:offset + 8], "little")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def gone(pid: int) -> bool:
    """The process no longer runs (it does not exist, or it is a zombie nobody has reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def workdirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The private directories the Machines of a test create."""
    created: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: str | None, **kwargs: str | None) -> str:
        path: str = mkdtemp(*args, **kwargs)
        created.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    return created


@pytest.fixture(scope="module")
def sv39_machine() -> Iterator[Machine]:
    """A machine whose guest idles in S-mode with Sv39 on."""
    with Machine(RISCV, None, extra_args=("-S",)) as machine:
        load_sv39_guest(machine)
        machine.qmp("cont")
        wait_until(lambda: ram_word(machine, MARK_S) == RAM_BASE)
        yield machine


def test_start_and_close_leave_nothing(workdirs: list[Path]) -> None:
    machine = Machine(RISCV, None, gdbstub=True, extra_args=("-S",))
    machine.start()
    pid = machine.pid
    [workdir] = workdirs
    if Path("/dev/shm").is_dir():
        assert workdir.parent == Path("/dev/shm")
    # QEMU maps the RAM file, whose directory (with both sockets) is already removed.
    assert f"{workdir}/ram (deleted)" in Path(f"/proc/{pid}/maps").read_text()
    assert not workdir.exists()
    assert machine.alive()
    machine.close()
    machine.close()
    assert not machine.alive()
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped
    with pytest.raises(MachineError, match="closed"):
        machine.ram  # noqa: B018


def test_ram_writes_reach_qemu_and_back(sv39_machine: Machine) -> None:
    machine = sv39_machine
    for offset, value in ((0x3000, 0x1122_3344_5566_7788), (RISCV.ram_size - 8, 0xFEED_F00D_0BAD_CAFE)):
        write_words(machine, offset, [value], size=8)
        assert machine.hmp(f"xp /1gx {RAM_BASE + offset:#x}").split() == [
            f"{RAM_BASE + offset:016x}:", f"{value:#018x}"]
    # The guest's own stores, made in M-mode and then through its page table in S-mode.
    assert ram_word(machine, MARK_M) == RAM_BASE
    assert ram_word(machine, MARK_S) == RAM_BASE


def test_gva2gpa_follows_the_guest_table(sv39_machine: Machine) -> None:
    assert sv39_machine.gva2gpa(RAM_BASE + 0x1234) == RAM_BASE + 0x1234
    assert sv39_machine.gva2gpa(HIGH_HALF + 0x1234) == RAM_BASE + 0x1234
    assert sv39_machine.gva2gpa(0x1000) is None
    assert sv39_machine.gva2gpa(HIGH_HALF + (1 << 30)) is None  # VPN[2] = 257: empty


def test_qmp_error_names_the_cause(sv39_machine: Machine) -> None:
    with pytest.raises(MachineError, match="CommandNotFound"):
        sv39_machine.qmp("no-such-command")
    assert sv39_machine.qmp("query-status")["status"] == "running"
    assert re.fullmatch(r"\d+\.\d+\.\d+", sv39_machine.version)


def test_missing_binary(workdirs: list[Path]) -> None:
    machine = Machine(replace(RISCV, binary="qemu-system-nonexistent"), None)
    with pytest.raises(MachineError, match="qemu-system-nonexistent"):
        machine.start()
    assert not any(path.exists() for path in workdirs)


def test_bad_option_reports_qemu_output(workdirs: list[Path]) -> None:
    machine = Machine(RISCV, None, extra_args=("-no-such-option",))
    with pytest.raises(MachineError, match="(?s)did not start.*exited with status 1.*-no-such-option"):
        machine.start()
    assert gone(machine.pid)
    assert "-no-such-option" in machine.stderr_tail()
    assert not any(path.exists() for path in workdirs)


def test_qemu_killed_mid_run() -> None:
    with Machine(RISCV, None, gdbstub=True, extra_args=("-S",)) as machine:
        os.kill(machine.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(MachineError, match="killed by SIGKILL"):
            machine.qmp("query-status")
        assert time.monotonic() - started < 2
        assert machine.gdb is not None
        with pytest.raises(MachineError, match="gdbstub"):
            machine.gdb.read_memory(RAM_BASE, 8)
    assert not machine.alive()


def test_unresponsive_qemu_times_out() -> None:
    """A stopped QEMU process stands in for a livelocked one (QEMU-NOTES, LoongArch)."""
    with Machine(RISCV, None, gdbstub=True, extra_args=("-S",)) as machine:
        assert machine.gdb is not None
        machine.qmp_timeout = machine.gdb.timeout = 0.3
        os.kill(machine.pid, signal.SIGSTOP)
        with pytest.raises(MachineError, match="(?s)no answer to QMP 'query-status'.*is running"):
            machine.qmp("query-status")
        with pytest.raises(GdbError, match="no answer from the gdbstub"):
            machine.gdb.read_memory(RAM_BASE, 8)
        closing = time.monotonic()
    assert time.monotonic() - closing < 3  # QMP quit times out, then SIGKILL
    assert not machine.alive()


def test_exception_in_with_block_cleans_up(workdirs: list[Path]) -> None:
    with pytest.raises(KeyboardInterrupt):
        with Machine(RISCV, None, extra_args=("-S",)) as machine:
            pid = machine.pid
            raise KeyboardInterrupt
    assert not Path(f"/proc/{pid}").exists()
    assert not any(path.exists() for path in workdirs)


def test_forgotten_machine_is_finalized() -> None:
    machine = Machine(RISCV, None, extra_args=("-S",))
    machine.start()
    pid = machine.pid
    del machine
    gc.collect()
    assert not Path(f"/proc/{pid}").exists()


def test_guest_exit_status_and_wait_exit() -> None:
    with Machine(RISCV, None, extra_args=("-S",)) as machine:
        with pytest.raises(MachineError, match="still running"):
            machine.wait_exit(0.05)
        write_words(machine, 0, POWER_OFF_GUEST)
        machine.qmp("cont")
        assert machine.wait_exit(10) == 0
        assert machine.stderr_tail().splitlines()[-1] == "ok"  # the guest's serial output
        with pytest.raises(MachineError, match="clean guest exit"):
            machine.qmp("query-status")


CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from harness.machine import Machine
from tests.harness.test_machine import RISCV
machine = Machine(RISCV, None, extra_args=("-S",))
machine.start()
print(machine.pid, flush=True)
time.sleep(60)
"""


def test_harness_killed_takes_qemu_along() -> None:
    command = [sys.executable, "-c", CHILD, str(REPO)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            ready, _, _ = select.select([child.stdout], [], [], 30)
            assert ready, "the child did not start its Machine"
            pid = int(child.stdout.readline())
            maps = Path(f"/proc/{pid}/maps").read_text()
            [workdir] = {Path(match).parent for match in re.findall(r"(/\S*ptcheck-\S+/ram)", maps)}
        finally:
            child.kill()  # SIGKILL: the harness gets no chance to clean up
    wait_until(lambda: gone(pid), timeout=5)
    assert not workdir.exists()


@pytest.mark.parametrize(("machine_args", "expected"), [
    (("-machine", "virt"), ["-machine", "virt,memory-backend=ram0"]),
    (("-M", "microvm,pit=off", "-cpu", "max"), ["-M", "microvm,pit=off,memory-backend=ram0", "-cpu", "max"]),
    (("-cpu", "rv64"), ["-cpu", "rv64", "-machine", "memory-backend=ram0"]),
])
def test_memory_backend_is_merged(machine_args: tuple[str, ...], expected: list[str]) -> None:
    assert harness.machine._with_memory_backend(machine_args) == expected

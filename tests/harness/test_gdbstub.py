"""Tests of harness.gdbstub against QEMU's gdbstub, on the riscv64 guest of test_machine."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from harness.gdbstub import GdbClient, GdbError
from harness.machine import Machine, MachineError
from tests.harness.test_machine import (
    HIGH_HALF,
    MARK_M,
    MARK_S,
    RAM_BASE,
    RISCV,
    SV39_IDLE_PCS,
    SV39_SATP,
    load_sv39_guest,
    pytestmark,  # noqa: F401  (skip without qemu-system-riscv64, `qemu` marker)
    ram_word,
    wait_until,
)

DATA = 0x10000  # RAM offset of the random bytes the reads are compared with
DATA_SIZE = 0x8000


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """The Sv39 guest, idling in S-mode, with the gdbstub attached and the VM running."""
    with Machine(RISCV, None, gdbstub=True, extra_args=("-S",)) as machine:
        load_sv39_guest(machine)
        machine.ram[DATA:DATA + DATA_SIZE] = os.urandom(DATA_SIZE)
        assert machine.gdb is not None and not machine.gdb.running  # attached to a paused VM
        machine.gdb.continue_()
        wait_until(lambda: ram_word(machine, MARK_S) == RAM_BASE)
        yield machine


@pytest.fixture
def gdb(machine: Machine) -> Iterator[GdbClient]:
    """The machine's gdbstub client; the VM runs before and after each test."""
    assert machine.gdb is not None
    assert machine.gdb.running
    yield machine.gdb
    assert machine.gdb.running


def test_interrupt_and_continue(machine: Machine, gdb: GdbClient) -> None:
    gdb.interrupt()
    assert not gdb.running
    assert machine.qmp("query-status")["status"] == "paused"
    gdb.continue_()
    assert machine.qmp("query-status")["status"] == "running"


def test_reads_need_a_stopped_vm(gdb: GdbClient) -> None:
    with pytest.raises(GdbError, match="interrupt"):
        gdb.read_memory(RAM_BASE, 8)


def test_qmp_stop_and_cont_are_refused(machine: Machine) -> None:
    for command in ("stop", "cont"):
        with pytest.raises(MachineError, match="gdbstub"):
            machine.qmp(command)


def test_physical_reads_equal_ram(machine: Machine, gdb: GdbClient) -> None:
    with gdb.paused():
        gdb.physical_mode(True)
        try:
            assert gdb.read_memory(RAM_BASE + DATA, 8) == machine.ram[DATA:DATA + 8]
            # Longer than one `m` packet may carry (2048 bytes), from an odd address.
            assert gdb.read_memory(RAM_BASE + DATA + 3, 5000) == machine.ram[DATA + 3:DATA + 5003]
            offsets = range(DATA, DATA + DATA_SIZE, 8)
            assert gdb.read_memory_many([RAM_BASE + offset for offset in offsets], 8) == [
                machine.ram[offset:offset + 8] for offset in offsets]
        finally:
            gdb.physical_mode(False)


def test_virtual_reads_translate(machine: Machine, gdb: GdbClient) -> None:
    expected = machine.ram[MARK_M:MARK_M + 8]
    with gdb.paused():
        assert gdb.read_memory(HIGH_HALF + MARK_M, 8) == expected
        assert gdb.read_memory(0x1000, 8) is None  # E14: no mapping
        assert gdb.read_memory_many([RAM_BASE + MARK_M, 0x2000, HIGH_HALF + MARK_M], 8) == [
            expected, None, expected]


def test_read_registers(gdb: GdbClient) -> None:
    with gdb.paused():
        registers = gdb.read_registers(["pc", "satp", "priv"])
        assert registers["pc"] in SV39_IDLE_PCS
        assert registers["satp"] == SV39_SATP
        assert registers["priv"] == 1  # S-mode (QEMU's virtual register)
        assert len(gdb.read_registers()) > 64  # x0-x31, pc, the FPU and the CSRs
        with pytest.raises(GdbError, match="no such registers: nope"):
            gdb.read_registers(["pc", "nope"])

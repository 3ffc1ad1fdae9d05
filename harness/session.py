"""A running probe guest: QEMU with shared RAM, the guest booted and waiting, page tables built
directly in its RAM, and batches of probes run through the mailbox.

Every way a batch can go wrong ends in a GuestError within a bounded time (`batch_timeout`,
`boot_timeout`): QEMU exiting or being killed, the guest hanging, reporting an error, or leaving
results that do not follow guests/ABI.md. The message names the cause and adds what is known: the
mailbox as read from RAM, the CPU's program counter and trap registers (through the gdbstub when
one is attached, else QEMU's `info registers`), the instruction there disassembled with capstone,
the QEMU process's state or exit status, and the tail of its output.
"""

from __future__ import annotations

import math
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import capstone
import numpy as np
from elftools.elf.elffile import ELFFile

from arch import RamImage

from . import mailbox as mb
from .build import GuestImage, build_guest
from .machine import Machine, MachineError
from .profile import Profile, Variant

DEFAULT_BATCH_TIMEOUT = 30.0
BOOT_TIMEOUT = 20.0
# Seconds each step of a failure diagnosis (a gdbstub exchange, a QMP command) may take. The
# diagnosis runs when something already went wrong, QEMU may be stopped or livelocked
# (QEMU-NOTES, LoongArch), so it must not add more than a few seconds to the error.
DIAGNOSIS_TIMEOUT = 1.0
# Lines of QEMU's output quoted in an error.
_TAIL_LINES = 20

# The mailbox fields quoted in errors (guests/ABI.md, "Control block").
_MAILBOX_FIELDS = (
    ("go", mb.GO),
    ("done", mb.DONE),
    ("command", mb.COMMAND),
    ("count", mb.COUNT),
    ("progress", mb.PROGRESS),
    ("error", mb.ERROR),
    ("error_cause", mb.ERROR_CAUSE),
    ("error_pc", mb.ERROR_PC),
    ("error_addr", mb.ERROR_ADDR),
)

# Registers that say where the CPU is and why it last trapped, named as in QEMU's gdbstub
# target descriptions (read with GdbClient.registers() on QEMU 10.0.2: riscv-64bit-cpu.xml and
# its CSR/virtual features, aarch64-core.xml and system-registers.xml, i386-64bit.xml,
# loongarch-base64.xml). The first is the program counter. Names QEMU does not offer are skipped.
_DIAGNOSTIC_REGISTERS = {
    "riscv64": ("pc", "priv", "mcause", "mepc", "mtval", "mstatus", "satp"),
    "aarch64": ("pc", "cpsr", "ESR_EL1", "FAR_EL1", "ELR_EL1"),
    "x86_64": ("rip", "eflags", "cr2", "cr3"),
    "loongarch64": ("pc", "badv"),
}
# The register holding the raw trap cause, decoded with Profile.explain_cause (the guests report
# mcause on RISC-V and ESR_EL1 on AArch64, guests/ABI.md "Probes and results").
_CAUSE_REGISTER = {"riscv64": "mcause", "aarch64": "ESR_EL1"}
# capstone decoders. RISC-V with the C extension: a fetch probe can land on compressed code even
# though the guest itself is built without it (guests/riscv64/README.md, "Fetch safety").
_DECODERS = {
    "riscv64": (capstone.CS_ARCH_RISCV, capstone.CS_MODE_RISCV64 | capstone.CS_MODE_RISCVC),
    "aarch64": (capstone.CS_ARCH_AARCH64, capstone.CS_MODE_LITTLE_ENDIAN),
    "x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
    "loongarch64": (capstone.CS_ARCH_LOONGARCH, capstone.CS_MODE_LOONGARCH64),
}
# Bytes read at a program counter: the longest instruction (x86: 15 bytes, Intel SDM vol. 2,
# 2.3.11; 4 bytes on the other three).
_CODE_BYTES = {"x86_64": 15}
# `info registers` prints "NAME VALUE" (riscv: " pc       0000000080000044"; LoongArch CSRs:
# "ESTAT  0") or "NAME=VALUE" (aarch64 "PC=", x86 "RIP=", "CR2="), in hex without 0x (QEMU 10.0.2).
_HMP_REGISTER = r"(?<![\w/]){name}\s*=?\s*([0-9a-fA-F]+)\b"
# /proc/PID/stat process states (proc(5)).
_PROCESS_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "in uninterruptible wait",
    "T": "stopped by a signal",
    "t": "stopped by a tracer",
    "Z": "a zombie",
}


class GuestError(MachineError):
    """The guest did not do what the ABI says: it hung, reported an error, or left results
    unwritten. The message names the cause and what is known of the guest's state."""


@dataclass(frozen=True)
class BatchResult:
    """One result record per probe, in probe order (a copy out of guest RAM)."""

    outcome: np.ndarray
    value: np.ndarray
    cause: np.ndarray
    addr: np.ndarray


class GuestSession:
    """Owns one QEMU process running the profile's guest, and the RAM image over its memory."""

    def __init__(
        self,
        profile: Profile,
        variant: Variant,
        *,
        batch_timeout: float = DEFAULT_BATCH_TIMEOUT,
        gdbstub: bool = False,
        boot_timeout: float = BOOT_TIMEOUT,
    ) -> None:
        for name, value in (("batch_timeout", batch_timeout), ("boot_timeout", boot_timeout)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds above 0, not {value!r}")
        self.profile = profile
        self.variant = variant
        self.batch_timeout = float(batch_timeout)
        self.boot_timeout = float(boot_timeout)
        self.image: GuestImage = build_guest(profile.arch, profile.zig_args)
        self.boot_started = time.perf_counter()
        self.machine = Machine(profile.machine_spec(variant), self.image.path, gdbstub=gdbstub)
        self.ram: RamImage | None = None
        self._go = 0
        try:
            self.machine.start()
            self.ram = RamImage(
                profile.ram_base, profile.ram_size, pool=profile.layout.table_pool, buffer=self.machine.ram
            )
            self.mailbox = self.image.symbol("ptc_mailbox")
            self._wait_for_magic()
        except BaseException:
            self.close()
            raise
        self.boot_seconds = time.perf_counter() - self.boot_started

    # -- RAM access --------------------------------------------------------------------------
    def _word(self, offset: int) -> int:
        assert self.ram is not None
        return self.ram.read_word(self.mailbox + offset)

    def _set(self, offset: int, value: int) -> None:
        assert self.ram is not None
        self.ram.write_word(self.mailbox + offset, value)

    def _wait_for_magic(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        while self._word(mb.MAGIC_OFFSET) != mb.MAGIC:
            if not self.machine.alive():
                raise self._error(f"QEMU exited before the {self.profile.arch} guest wrote its magic")
            if time.monotonic() > deadline:
                raise self._error(
                    f"the {self.profile.arch} guest did not write its magic within {self.boot_timeout:g} s"
                )
            time.sleep(0.0005)
        if self._word(mb.ABI_OFFSET) != mb.ABI_VERSION:
            raise self._error(f"the guest speaks ABI {self._word(mb.ABI_OFFSET)}, the harness ABI {mb.ABI_VERSION}")

    # -- batches -----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """How many probes fit in one batch."""
        low, high = self.profile.layout.arrays
        return (high - low) // (8 + mb.RESULT_BYTES)

    def run_batch(self, roots: tuple[int, int], probe_words: np.ndarray, options: int) -> BatchResult:
        """Run one batch of probes (at most `capacity`) and return the results.

        GuestError when the batch does not end within `batch_timeout`, QEMU exits, the guest
        reports an error, or any result breaks the ABI (a batch with unreadable results is never
        returned). The guest's state is unknown after a GuestError: close the session.
        """
        count = len(probe_words)
        if count > self.capacity:
            raise ValueError(f"{count} probes exceed the batch capacity {self.capacity}")
        low, _ = self.profile.layout.arrays
        probes_pa = low
        results_pa = low + ((count * 8 + 4095) & ~4095)
        self._write_arrays(probes_pa, probe_words, results_pa)
        self._set(mb.COMMAND, mb.COMMAND_RUN)
        self._set(mb.ROOT0, roots[0])
        self._set(mb.ROOT1, roots[1])
        self._set(mb.MODE, self.variant.mailbox_mode)
        self._set(mb.OPTIONS, options)
        self._set(mb.PROBES, probes_pa)
        self._set(mb.RESULTS, results_pa)
        self._set(mb.COUNT, count)
        self._go += 1
        self._set(mb.GO, self._go)
        try:
            self.profile.wake(self.machine, mb.COMMAND_RUN)
        except MachineError as err:  # e.g. QMP inject-nmi to a QEMU that stopped answering
            raise self._error(
                f"waking the guest for a batch of {count} probes failed: {str(err).splitlines()[0]}"
            ) from err
        self._wait_done(count)
        error = self._word(mb.ERROR)
        if error:
            raise self._error(f"the guest reported error {error:#x} during a batch of {count} probes")
        records = self._read_results(results_pa, count)
        result = BatchResult(records[:, 0], records[:, 1], records[:, 2], records[:, 3])
        self._check_results(result, probe_words)
        return result

    # The two helpers below are the only places that hold views of guest RAM during a batch. They
    # return before anything can raise a GuestError, so a traceback kept by the caller never pins
    # a view, which would stop close() from unmapping the RAM file (harness/machine.py, "RAM
    # views").
    def _write_arrays(self, probes_pa: int, probe_words: np.ndarray, results_pa: int) -> None:
        """The probe words, and a zeroed result array (outcome 0 = never executed)."""
        assert self.ram is not None
        self.ram.write_words(probes_pa, np.asarray(probe_words, dtype=np.uint64))
        self.ram.fill(results_pa, 4 * len(probe_words), 0)

    def _read_results(self, results_pa: int, count: int) -> np.ndarray:
        """A copy of the result records, one row of four words per probe."""
        assert self.ram is not None
        return self.ram.read_words(results_pa, 4 * count).reshape(count, 4).copy()

    def _wait_done(self, count: int) -> None:
        """Waits until the guest writes done = go; a GuestError for anything else."""
        deadline = time.monotonic() + self.batch_timeout
        pause = 0.00005
        while (done := self._word(mb.DONE)) != self._go:
            if done != self._go - 1:  # the previous batch's go is the only other legal value
                raise self._error(
                    f"the mailbox's done field holds {done:#x}, but go is {self._go:#x} "
                    f"(garbage in the mailbox during a batch of {count} probes)"
                )
            if self._word(mb.MAGIC_OFFSET) != mb.MAGIC:
                raise self._error(
                    f"the mailbox's magic was overwritten during a batch of {count} probes "
                    "(the guest restarted, or something wrote over its mailbox)"
                )
            if not self.machine.alive():
                raise self._error(f"QEMU exited during a batch of {count} probes")
            if time.monotonic() > deadline:
                raise self._error(
                    f"the guest did not finish a batch of {count} probes within {self.batch_timeout:g} s "
                    f"(probe {self._word(mb.PROGRESS)} was running)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def _check_results(self, result: BatchResult, probe_words: np.ndarray) -> None:
        """Every record must say the probe completed or faulted (guests/ABI.md, "Probes and
        results"): outcome 1 or 2, and a completed probe carries cause 0."""
        valid = (result.outcome == mb.OUTCOME_FAULT) | ((result.outcome == mb.OUTCOME_OK) & (result.cause == 0))
        bad = np.flatnonzero(~valid)
        if len(bad):
            first = int(bad[0])
            raise self._error(
                f"{len(bad)} of {len(valid)} results are unreadable (outcome not 1 or 2, or a completed "
                f"probe with a fault cause), first at probe {first} (word {int(probe_words[first]):#x}: "
                f"outcome {int(result.outcome[first]):#x}, cause {int(result.cause[first]):#x})"
            )

    def power_off(self, timeout: float = 5.0) -> int:
        """Ask the guest to power off; returns QEMU's exit status."""
        self._set(mb.COMMAND, mb.COMMAND_POWER_OFF)
        self._go += 1
        self._set(mb.GO, self._go)
        self.profile.wake(self.machine, mb.COMMAND_POWER_OFF)
        return self.machine.wait_exit(timeout)

    def close(self) -> None:
        """Stop QEMU and release everything (idempotent)."""
        if self.ram is not None:
            self.ram.close()
            self.ram = None
        self.machine.close()

    def __enter__(self) -> GuestSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- diagnosis ---------------------------------------------------------------------------
    def _error(self, cause: str) -> GuestError:
        """A GuestError: `cause`, then everything known about the guest and QEMU."""
        return GuestError(cause + "".join(f"\n  {line}" for line in self._diagnosis()))

    def _diagnosis(self) -> list[str]:
        lines = []
        if self.ram is not None:
            fields = {name: self._word(offset) for name, offset in _MAILBOX_FIELDS}
            lines.append("mailbox: " + ", ".join(f"{name}={value:#x}" for name, value in fields.items()))
            error_pc = fields["error_pc"]
            if fields["error"] and error_pc:
                lines.append("at error_pc: " + self._describe_code(error_pc, self._image_code(error_pc)))
        if self.machine.alive():
            lines += self._cpu_state()
        lines.append(self._process_state())
        tail = self.machine.stderr_tail(_TAIL_LINES).splitlines()
        lines += ["QEMU's last output:", *(f"  {line}" for line in tail)] if tail else ["QEMU wrote no output"]
        return lines

    def _cpu_state(self) -> list[str]:
        """The CPU's program counter, trap registers and current instruction, read through the
        gdbstub when attached (the VM is paused for the reads), else QEMU's `info registers`."""
        arch = self.profile.arch
        names = _DIAGNOSTIC_REGISTERS.get(arch, ("pc",))
        try:
            if self.machine.gdb is not None:
                source, values, code = "gdbstub", *self._read_cpu_gdb(names)
            else:
                source, values, code = "info registers", *self._read_cpu_hmp(names)
        except MachineError as err:  # QEMU stopped answering: say so, keep the original error
            return [f"CPU state unavailable: {str(err).splitlines()[0]}"]
        shown = []
        for name, value in values.items():
            decoded = f" [{self.profile.explain_cause(value)}]" if name == _CAUSE_REGISTER.get(arch) else ""
            shown.append(f"{name}={value:#x}{decoded}")
        lines = [f"CPU ({source}): " + " ".join(shown)]
        pc = values.get(names[0])
        if pc is not None:
            lines.append("at pc: " + self._describe_code(pc, code))
        return lines

    def _read_cpu_gdb(self, names: tuple[str, ...]) -> tuple[dict[str, int], bytes | None]:
        gdb = self.machine.gdb
        assert gdb is not None
        saved, gdb.timeout = gdb.timeout, DIAGNOSIS_TIMEOUT
        try:
            with gdb.paused():
                available = gdb.registers()
                values = gdb.read_registers([name for name in names if name in available])
                pc = values.get(names[0])
                # `m` reads through the CPU's current translation (QEMU-NOTES, Common: gdbstub).
                code = None if pc is None else gdb.read_memory(pc, _CODE_BYTES.get(self.profile.arch, 4))
        finally:
            gdb.timeout = saved
        return values, code

    def _read_cpu_hmp(self, names: tuple[str, ...]) -> tuple[dict[str, int], bytes | None]:
        saved, self.machine.qmp_timeout = self.machine.qmp_timeout, DIAGNOSIS_TIMEOUT
        try:
            text = self.machine.hmp("info registers")
        finally:
            self.machine.qmp_timeout = saved
        values = {}
        for name in names:
            found = re.search(_HMP_REGISTER.format(name=re.escape(name)), text, re.IGNORECASE)
            if found:
                values[name] = int(found[1], 16)
        pc = values.get(names[0])
        return values, None if pc is None else self._image_code(pc)

    def _image_code(self, pc: int) -> bytes | None:
        """The bytes at `pc` if it lies in a segment of the guest ELF, read from guest RAM (where
        the loader put the segment: its physical address), so overwritten code shows as it is."""
        size = _CODE_BYTES.get(self.profile.arch, 4)
        with open(self.image.path, "rb") as file:
            for segment in ELFFile(file).iter_segments():
                start = segment["p_vaddr"]
                if segment["p_type"] == "PT_LOAD" and start <= pc < start + segment["p_memsz"]:
                    offset = segment["p_paddr"] + pc - start - self.profile.ram_base
                    if 0 <= offset <= self.profile.ram_size - size:
                        return bytes(self.machine.ram[offset : offset + size])
        return None

    def _describe_code(self, pc: int, code: bytes | None) -> str:
        """`pc <symbol+offset>: bytes  mnemonic operands`, disassembled with capstone."""
        where = f"{pc:#x}{self._symbolize(pc)}"
        if code is None:
            return f"{where}: not readable"
        arch, mode = _DECODERS[self.profile.arch]
        decoded = next(capstone.Cs(arch, mode).disasm(code, pc, 1), None)
        if decoded is None:
            return f"{where}: {code[:4].hex(' ')}  (not a valid instruction)"
        return f"{where}: {bytes(decoded.bytes).hex(' ')}  {decoded.mnemonic} {decoded.op_str}".rstrip()

    def _symbolize(self, pc: int) -> str:
        """` <label+offset>` for a pc inside the guest image, from its symbol table."""
        start = self.image.symbols.get("ptc_image_start")
        end = self.image.symbols.get("ptc_image_end")
        if start is None or end is None or not start <= pc < end:
            return ""
        labels = [
            (value, name)
            for name, value in self.image.symbols.items()
            if start <= value <= pc and not name.startswith((".", "$", "ptc_image_"))
        ]
        if not labels:
            return ""
        value, name = max(labels)
        return f" <{name}+{pc - value:#x}>" if pc > value else f" <{name}>"

    def _process_state(self) -> str:
        pid = self.machine.pid
        if self.machine.alive():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "?"
            return f"QEMU (pid {pid}) is alive, process state {state} ({_PROCESS_STATES.get(state, 'unknown')})"
        status = self.machine.wait_exit(DIAGNOSIS_TIMEOUT)
        if status < 0:
            return f"QEMU (pid {pid}) was killed by {signal.Signals(-status).name}"
        if status in self.profile.clean_exit_statuses:
            return (
                f"QEMU (pid {pid}) exited with status {status}, the status of a guest power-off "
                "(QEMU runs with -no-reboot, so a guest reset ends it the same way)"
            )
        return f"QEMU (pid {pid}) exited with status {status}"

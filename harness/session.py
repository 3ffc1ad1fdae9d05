"""A running probe guest: QEMU with shared RAM, the guest booted and waiting, page tables built
directly in its RAM, and batches of probes run through the mailbox."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from arch import RamImage

from . import mailbox as mb
from .build import GuestImage, build_guest
from .machine import Machine, MachineError
from .profile import Profile, Variant

DEFAULT_BATCH_TIMEOUT = 30.0
BOOT_TIMEOUT = 20.0


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
    ) -> None:
        self.profile = profile
        self.variant = variant
        self.batch_timeout = batch_timeout
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
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self._word(mb.MAGIC_OFFSET) != mb.MAGIC:
            if not self.machine.alive():
                raise GuestError(
                    f"QEMU exited before the {self.profile.arch} guest booted\n{self.machine.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise GuestError(
                    f"the {self.profile.arch} guest did not write its magic within {BOOT_TIMEOUT:.0f} s" + self._state()
                )
            time.sleep(0.0005)
        if self._word(mb.ABI_OFFSET) != mb.ABI_VERSION:
            raise GuestError(f"guest speaks ABI {self._word(mb.ABI_OFFSET)}, the harness ABI {mb.ABI_VERSION}")

    def _state(self) -> str:
        fields = {
            name: self._word(offset)
            for name, offset in (
                ("go", mb.GO),
                ("done", mb.DONE),
                ("progress", mb.PROGRESS),
                ("error", mb.ERROR),
                ("error_cause", mb.ERROR_CAUSE),
                ("error_pc", mb.ERROR_PC),
                ("error_addr", mb.ERROR_ADDR),
            )
        }
        text = ", ".join(f"{k}={v:#x}" for k, v in fields.items())
        running = "running" if self.machine.alive() else "exited"
        return f"\nguest state from RAM: {text}\nQEMU: {running}; stderr tail:\n{self.machine.stderr_tail()}"

    # -- batches -----------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """How many probes fit in one batch."""
        low, high = self.profile.layout.arrays
        return (high - low) // (8 + mb.RESULT_BYTES)

    def run_batch(self, roots: tuple[int, int], probe_words: np.ndarray, options: int) -> BatchResult:
        """Run one batch of probes (at most `capacity`) and return the results."""
        assert self.ram is not None
        count = len(probe_words)
        if count > self.capacity:
            raise ValueError(f"{count} probes exceed the batch capacity {self.capacity}")
        low, _ = self.profile.layout.arrays
        probes_pa = low
        results_pa = low + ((count * 8 + 4095) & ~4095)
        words = self.ram.words
        base = self.ram.base
        words[(probes_pa - base) >> 3 : ((probes_pa - base) >> 3) + count] = probe_words
        result_slice = slice((results_pa - base) >> 3, ((results_pa - base) >> 3) + 4 * count)
        words[result_slice] = 0
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
        self.profile.wake(self.machine)
        self._wait_done(count)
        error = self._word(mb.ERROR)
        if error:
            raise GuestError(f"the guest reported error {error:#x} during the batch" + self._state())
        records = words[result_slice].reshape(count, 4).copy()
        result = BatchResult(records[:, 0], records[:, 1], records[:, 2], records[:, 3])
        not_run = np.flatnonzero((result.outcome != mb.OUTCOME_OK) & (result.outcome != mb.OUTCOME_FAULT))
        if len(not_run):
            first = int(not_run[0])
            raise GuestError(
                f"{len(not_run)} of {count} results are unreadable (outcome not 1 or 2), first at "
                f"probe {first} (word {int(probe_words[first]):#x}, outcome {int(result.outcome[first]):#x})"
                + self._state()
            )
        return result

    def _wait_done(self, count: int) -> None:
        deadline = time.monotonic() + self.batch_timeout
        pause = 0.00005
        while self._word(mb.DONE) != self._go:
            if not self.machine.alive():
                raise GuestError(f"QEMU exited during a batch of {count} probes" + self._state())
            if time.monotonic() > deadline:
                raise GuestError(
                    f"the guest did not finish a batch of {count} probes within {self.batch_timeout:.0f} s "
                    f"(probe {self._word(mb.PROGRESS)} was running)" + self._state()
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def power_off(self, timeout: float = 5.0) -> int:
        """Ask the guest to power off; returns QEMU's exit status."""
        self._set(mb.COMMAND, mb.COMMAND_POWER_OFF)
        self._go += 1
        self._set(mb.GO, self._go)
        self.profile.wake(self.machine)
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

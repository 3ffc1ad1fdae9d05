"""The life cycle of one QEMU process whose guest RAM is a file that the harness maps.

    spec = MachineSpec("qemu-system-riscv64", ("-machine", "virt", "-bios", "none"),
                       ram_base=0x8000_0000, ram_size=256 << 20)
    with Machine(spec, Path("guest.elf")) as machine:
        machine.ram[0:8]                      # guest physical 0x8000_0000, no QMP involved
        machine.hmp("xp /1gx 0x80000000")
        machine.gva2gpa(0xffff_ffc0_0000_0000)

Nothing outlives a Machine: QEMU runs with PR_SET_PDEATHSIG = SIGKILL (it dies with the harness
process, even on SIGKILL), close() ends it (QMP `quit`, then SIGKILL) and a `weakref.finalize`
closes a forgotten Machine. The private directory holding the RAM file and the sockets is emptied
and removed as soon as QEMU and the harness hold them open, so not even a SIGKILL of the harness
during a run leaves a file behind.

RAM views: `mmap.close()` fails while buffers exported from `ram` exist (memoryview, numpy
arrays from `numpy.frombuffer`). Release them (`view.release()`, `del array`) before close();
otherwise close() still stops QEMU and removes every file, warns with a ResourceWarning and leaves
the mapping to be unmapped when the last view is gone.
"""
from __future__ import annotations

import collections
import ctypes
import mmap
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harness.qmp import QmpClient, QmpCommandError, QmpError

if TYPE_CHECKING:
    from harness.gdbstub import GdbClient

# Seconds QEMU gets to act on QMP `quit` (QEMU-NOTES: quit takes about 10 ms) before SIGKILL.
_QUIT_TIMEOUT = 0.5
# Seconds to wait for a SIGKILLed QEMU to be reaped, for its output pipe to drain, for a gdbstub
# answer, and for QEMU to finish dying after its QMP connection dropped.
_REAP_TIMEOUT = 5.0
_DRAIN_TIMEOUT = 1.0
_GDB_TIMEOUT = 5.0
_SETTLE_TIMEOUT = 0.5
# Lines of QEMU output kept for error messages.
_TAIL_LINES = 200
_TAIL_LINE_CHARS = 1000
# The RAM backend's QOM id, used by -object and -machine memory-backend=.
_RAM_ID = "ram0"
# Spellings of the option whose value takes ",memory-backend=ram0" (QEMU accepts all three).
_MACHINE_OPTIONS = ("-machine", "--machine", "-M")
# linux/prctl.h: PR_SET_PDEATHSIG = 1 (prctl(2)).
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class MachineError(Exception):
    """QEMU could not be started, failed, or did not answer; the message includes its output."""


@dataclass(frozen=True)
class MachineSpec:
    """How to run one kind of machine.

    `machine_args` must not contain the RAM backend: Machine adds `-object memory-backend-file`
    and appends `memory-backend=ram0` to the last -machine/-M option (or adds one). Without `-m`
    QEMU takes the RAM size from the backend. `clean_exit_statuses` are the QEMU exit statuses
    that mean a normal guest power-off (x86's isa-debug-exit gives (code << 1) | 1).
    """

    binary: str
    machine_args: tuple[str, ...]
    ram_base: int
    ram_size: int
    clean_exit_statuses: frozenset[int] = frozenset({0})


class Machine:
    """One QEMU process; a context manager, or call start() and close() yourself.

    Not thread-safe: use a Machine from one thread at a time, and not from inside a running
    asyncio event loop (its QMP client runs a private loop).
    """

    def __init__(self, spec: MachineSpec, kernel: Path | None, *, gdbstub: bool = False,
                 extra_args: Sequence[str] = (), start_timeout: float = 10.0) -> None:
        self.spec = spec
        self.kernel = kernel
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        #: Seconds a QMP command may take (raise it for long ones such as a large pmemsave).
        self.qmp_timeout = 10.0
        self._want_gdbstub = gdbstub
        self._instance: _Instance | None = None
        self._finalizer: weakref.finalize[[], Machine] | None = None
        self._version = ""

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Starts QEMU and returns once QMP (and the gdbstub, when asked for) is connected."""
        if self._instance is not None:
            raise MachineError("a Machine can be started only once")
        instance = _Instance(self.spec)
        self._instance = instance
        self._finalizer = weakref.finalize(self, instance.release)
        try:
            self._launch(instance)
        except Exception as err:
            message = f"{self.spec.binary} did not start: {err}"
            if instance.proc is not None and not isinstance(err, MachineError):
                instance.settle()
                message += instance.describe()  # a GdbError already carries it
            self.close()
            raise MachineError(message) from err
        except BaseException:
            self.close()
            raise

    def _launch(self, instance: _Instance) -> None:
        instance.create_files()
        assert instance.workdir is not None
        argv = _qemu_argv(self.spec, self.kernel, instance.workdir, self._want_gdbstub,
                          self.extra_args)
        instance.spawn(argv, self.start_timeout)
        instance.qmp.connect(str(instance.workdir / "qmp.sock"), self.start_timeout,
                             instance.alive)
        version = instance.qmp.execute("query-version", {}, self.qmp_timeout)["qemu"]
        self._version = f"{version['major']}.{version['minor']}.{version['micro']}"
        if self._want_gdbstub:
            from harness.gdbstub import GdbClient  # here: gdbstub's GdbError derives from MachineError

            was_running = instance.qmp.execute("query-status", {}, self.qmp_timeout)["running"]
            instance.gdb = GdbClient(str(instance.workdir / "gdb.sock"), timeout=_GDB_TIMEOUT,
                                     context=instance.describe)
            if was_running:  # attaching stopped the VM; the guest should run as without gdb
                instance.gdb.continue_()
        instance.remove_files()

    @property
    def ram(self) -> mmap.mmap:
        """The whole guest RAM file, mapped shared: offset 0 is guest physical `spec.ram_base`."""
        ram = self._started().ram
        if ram is None:
            raise MachineError("the Machine is closed")
        return ram

    @property
    def gdb(self) -> GdbClient | None:
        """The gdbstub client (the Machine was created with gdbstub=True), else None.

        While it is attached, stop and resume the VM through it (interrupt()/continue_()), not
        with QMP stop/cont, which qmp() refuses.
        """
        return self._started().gdb

    @property
    def version(self) -> str:
        """QEMU's version from query-version, e.g. "10.0.2"."""
        self._started()
        return self._version

    @property
    def pid(self) -> int:
        """QEMU's process id."""
        proc = self._started().proc
        assert proc is not None
        return proc.pid

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Runs a QMP command and returns its result; MachineError on an error or a dead QEMU."""
        instance = self._started()
        if instance.gdb is not None and command in ("stop", "cont"):
            raise MachineError(f"QMP {command!r} would bypass the attached gdbstub: use "
                               "machine.gdb.interrupt() / machine.gdb.continue_()")
        if not instance.alive():
            raise MachineError(f"QMP {command!r}: QEMU is not running" + instance.describe())
        try:
            return instance.qmp.execute(command, arguments, self.qmp_timeout)
        except QmpCommandError as err:
            raise MachineError(str(err) + instance.describe()) from err
        except QmpError as err:
            instance.settle()
            raise MachineError(f"QMP {command!r} failed: {err}" + instance.describe()) from err

    def hmp(self, command_line: str) -> str:
        """Runs a human-monitor command (e.g. "xp /1gx 0x80000000") and returns its output."""
        output: str = self.qmp("human-monitor-command", **{"command-line": command_line})
        return output

    def gva2gpa(self, vaddr: int) -> int | None:
        """The physical address QEMU's debug walker gives for `vaddr`; None when unmapped.

        HMP parses the full 64-bit value, so high-half addresses need no sign conversion
        (measured on QEMU 10.0.2). The walker ignores permission bits (QEMU-NOTES, Common).
        """
        answer = self.hmp(f"gva2gpa {vaddr:#x}").strip()
        if answer == "Unmapped":
            return None
        match = re.fullmatch(r"gpa: (0x[0-9a-fA-F]+)", answer)
        if match is None:
            raise MachineError(f"unexpected answer to gva2gpa {vaddr:#x}: {answer!r}")
        return int(match[1], 16)

    def alive(self) -> bool:
        """True while the QEMU process runs."""
        return self._instance is not None and self._instance.alive()

    def wait_exit(self, timeout: float) -> int:
        """Waits for QEMU to exit and returns its exit status (negative: killed by that signal)."""
        instance = self._started()
        assert instance.proc is not None
        try:
            return instance.proc.wait(timeout)
        except subprocess.TimeoutExpired as err:
            raise MachineError(f"QEMU still running after {timeout} s" + instance.describe()) from err

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines QEMU wrote to stderr, mixed with the guest's serial output."""
        return "\n".join(self._started().output_tail(lines))

    def close(self) -> None:
        """Stops QEMU and releases everything (idempotent; safe after any failure)."""
        if self._finalizer is not None:
            self._finalizer()  # a weakref.finalize runs at most once

    def _started(self) -> _Instance:
        if self._instance is None or self._instance.proc is None:
            raise MachineError("the Machine has not been started")
        return self._instance


class _Instance:
    """Everything one QEMU run owns. It holds no reference to its Machine, so that the Machine's
    weakref.finalize can release it when a forgotten Machine is collected."""

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self.workdir: Path | None = None
        self.ram: mmap.mmap | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: _OutputTail | None = None
        self.qmp = QmpClient()
        self.gdb: GdbClient | None = None

    def create_files(self) -> None:
        """The private directory (on tmpfs when it has room) and the sparse RAM file, mapped."""
        self.workdir = Path(tempfile.mkdtemp(prefix="ptcheck-", dir=_tmpfs_with_room(self.spec.ram_size)))
        # The RAM file is sparse: a write (by QEMU or the harness) to a page the file system has no
        # room for raises SIGBUS and kills the writer without a word (mmap(2), "SIGBUS"; measured
        # on a full tmpfs). Refuse to start unless the whole RAM fits.
        free = _free_bytes(str(self.workdir))
        if free < self.spec.ram_size:
            raise MachineError(
                f"{self.workdir.parent} has {free >> 20} MiB free, but the guest RAM file may grow to "
                f"{self.spec.ram_size >> 20} MiB: free space there or set TMPDIR to a directory with room")
        fd = os.open(self.workdir / "ram", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, self.spec.ram_size)  # sparse: pages exist once written
            self.ram = mmap.mmap(fd, self.spec.ram_size)  # MAP_SHARED, read and write
        finally:
            os.close(fd)

    def spawn(self, argv: list[str], timeout: float) -> None:
        try:
            self.proc = _spawn(argv, timeout)
        except FileNotFoundError as err:
            raise MachineError(f"{argv[0]} not found (is QEMU installed?)") from err
        except TimeoutError as err:
            raise MachineError(f"{argv[0]} was not even forked within {timeout} s") from err
        assert self.proc.stdout is not None
        self.output = _OutputTail(self.proc.stdout)

    def remove_files(self) -> None:
        """Removes the directory early: QEMU opened the RAM file during start-up, before its main
        loop sent the QMP greeting; the harness has it mapped and both sockets are connected."""
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def settle(self) -> None:
        """Gives a QEMU whose connection just dropped a moment to exit, so its status is known."""
        assert self.proc is not None
        try:
            self.proc.wait(_SETTLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass  # still running: describe() says so

    def output_tail(self, lines: int) -> list[str]:
        if self.output is None:
            return []
        if not self.alive():
            self.output.wait_for_end(_DRAIN_TIMEOUT)  # the last words of a dead QEMU
        return self.output.tail(lines)

    def describe(self) -> str:
        """QEMU's state and output tail, to be appended to an error message."""
        assert self.proc is not None
        status = self.proc.poll()
        if status is None:
            state = f"QEMU (pid {self.proc.pid}) is running"
        else:
            state = f"QEMU (pid {self.proc.pid}) {_exit_description(status, self.spec)}"
        tail = self.output_tail(20)
        if not tail:
            return f"\n  {state}; it wrote nothing"
        return f"\n  {state}; its last output:\n    " + "\n    ".join(tail)

    def release(self) -> None:
        """Stops QEMU and frees everything; each step runs even if an earlier one failed."""
        try:
            self._stop_process()
        finally:
            try:
                self._close_channels()
            finally:
                self._unmap_ram()
                self.remove_files()

    def _stop_process(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.qmp.execute("quit", {}, _QUIT_TIMEOUT)
            except Exception:  # stuck, gone, or the session broke (an interrupted call): SIGKILL below
                pass
            try:
                self.proc.wait(_QUIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            # SIGKILL, not SIGTERM: a livelocked LoongArch QEMU ignores SIGTERM (QEMU-NOTES).
            self.proc.kill()
        try:
            self.proc.wait(_REAP_TIMEOUT)
        except subprocess.TimeoutExpired as err:
            raise MachineError(f"QEMU (pid {self.proc.pid}) still exists {_REAP_TIMEOUT} s "
                               "after SIGKILL") from err

    def _close_channels(self) -> None:
        self.qmp.close(_QUIT_TIMEOUT)
        if self.gdb is not None:
            self.gdb.close()
        if self.output is not None:
            self.output.wait_for_end(_DRAIN_TIMEOUT)

    def _unmap_ram(self) -> None:
        if self.ram is None:
            return
        try:
            self.ram.close()
        except BufferError:
            warnings.warn("Machine.close(): views of Machine.ram still exist; the RAM mapping is "
                          "released when the last one is gone", ResourceWarning, stacklevel=2)
        self.ram = None


class _OutputTail:
    """Reads QEMU's combined stdout/stderr on a thread and keeps its last lines."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._partial = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True,
                                        name="ptcheck-qemu-output")
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            while chunk := os.read(stream.fileno(), 1 << 16):
                text = chunk.decode(errors="replace").replace("\r", "")
                with self._lock:
                    *complete, self._partial = (self._partial + text).split("\n")
                    self._lines.extend(line[:_TAIL_LINE_CHARS] for line in complete)
                    self._partial = self._partial[-_TAIL_LINE_CHARS:]

    def wait_for_end(self, timeout: float) -> None:
        """Waits until QEMU's end of the pipe is closed (QEMU exited) and all of it is read."""
        self._thread.join(timeout)

    def tail(self, lines: int) -> list[str]:
        with self._lock:
            kept = list(self._lines) + ([self._partial] if self._partial else [])
        return kept[-lines:] if lines > 0 else []


def _exit_description(status: int, spec: MachineSpec) -> str:
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    if status in spec.clean_exit_statuses:
        return f"exited with status {status} (a clean guest exit for this machine)"
    return f"exited with status {status}"


def _free_bytes(path: str) -> int:
    """Bytes an unprivileged process may still write on the file system of `path`; 0 if unknown."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def _tmpfs_with_room(size: int) -> str | None:
    """/dev/shm when it exists and has `size` bytes free, else None (the default temp dir)."""
    return "/dev/shm" if _free_bytes("/dev/shm") >= size else None


def _with_memory_backend(machine_args: Sequence[str]) -> list[str]:
    """`machine_args` with memory-backend=ram0 merged into the last -machine/-M option.

    Merging, rather than adding a second -machine option, is the form QEMU-NOTES records for
    microvm (`-machine microvm,memory-backend=ram0`) and works for every machine.
    """
    args = list(machine_args)
    for index in range(len(args) - 2, -1, -1):
        if args[index] in _MACHINE_OPTIONS:
            args[index + 1] += f",memory-backend={_RAM_ID}"
            return args
    return args + ["-machine", f"memory-backend={_RAM_ID}"]


def _qemu_argv(spec: MachineSpec, kernel: Path | None, workdir: Path, gdbstub: bool,
               extra_args: Sequence[str]) -> list[str]:
    argv = [
        spec.binary, *_with_memory_backend(spec.machine_args),
        "-object", f"memory-backend-file,id={_RAM_ID},size={spec.ram_size},"
                   f"mem-path={workdir / 'ram'},share=on",
        "-accel", "tcg",  # KVM would use the host MMU (QEMU-NOTES, Common)
        "-nographic", "-monitor", "none",
        "-serial", "stdio",  # the guest's UART joins QEMU's messages in the output tail
        "-no-reboot",  # a guest reset ends QEMU instead of restarting the guest
        "-qmp", f"unix:{workdir / 'qmp.sock'},server=on,wait=off",
    ]
    if gdbstub:
        argv += ["-chardev", f"socket,id=gdb0,path={workdir / 'gdb.sock'},server=on,wait=off",
                 "-gdb", "chardev:gdb0"]
    if kernel is not None:
        argv += ["-kernel", str(kernel)]
    return argv + list(extra_args)


# ---- starting QEMU so that it dies with the harness ------------------------------------------
#
# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process. QEMU is
# therefore always forked by one daemon thread that lives as long as the harness process, so a
# Machine started from a short-lived worker thread does not die with that thread.

_spawn_requests: queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]] | None = None
_spawner_lock = threading.Lock()


def _spawn(argv: list[str], timeout: float) -> subprocess.Popen[bytes]:
    """Starts `argv` from the spawner thread; its stdout and stderr go to one pipe."""
    future: Future[subprocess.Popen[bytes]] = Future()
    _spawner().put((argv, future))
    try:
        return future.result(timeout)
    except BaseException:
        future.add_done_callback(_kill_abandoned)  # e.g. a KeyboardInterrupt during the wait
        raise


def _spawner() -> queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]]:
    global _spawn_requests
    with _spawner_lock:
        if _spawn_requests is None:
            _spawn_requests = queue.SimpleQueue()
            threading.Thread(target=_serve_spawns, args=(_spawn_requests,), daemon=True,
                             name="ptcheck-qemu-spawner").start()
        return _spawn_requests


def _serve_spawns(
        requests: queue.SimpleQueue[tuple[list[str], Future[subprocess.Popen[bytes]]]]) -> None:
    while True:
        argv, future = requests.get()
        try:
            future.set_result(subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                # Own session: a terminal's Ctrl-C reaches only the harness, which then closes QEMU.
                start_new_session=True, preexec_fn=_die_with_parent(os.getpid())))
        except BaseException as err:  # handed to the waiting caller, the thread carries on
            future.set_exception(err)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The child's pre-exec step: SIGKILL when the spawner thread (the harness) dies (prctl(2))."""
    def in_child() -> None:
        if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the harness died before prctl took effect
            os._exit(1)
    return in_child


def _kill_abandoned(future: Future[subprocess.Popen[bytes]]) -> None:
    """Kills a QEMU whose caller stopped waiting for it to start."""
    if future.exception() is None:
        proc = future.result()
        proc.kill()
        proc.wait(_REAP_TIMEOUT)

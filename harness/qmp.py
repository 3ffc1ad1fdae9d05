"""A blocking QMP client in which every call has a deadline.

A thin layer over the asynchronous `qemu.qmp.QMPClient`, run on a private event loop. The legacy
synchronous wrapper of that package (`qemu.qmp.legacy`) waits for the greeting without any time
limit and installs its loop as the thread's current one; this client does neither.
"""
from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from qemu.qmp import ExecuteError, QMPClient, QMPError

_T = TypeVar("_T")

# How long to wait between two attempts to connect while QEMU is still starting up.
_CONNECT_RETRY_S = 0.005

# connect() on a unix socket path: the file does not exist yet (ENOENT) or QEMU has created it but
# does not listen yet (ECONNREFUSED). Both mean "QEMU is still starting".
_NOT_YET_LISTENING = (errno.ENOENT, errno.ECONNREFUSED)


class QmpError(Exception):
    """A QMP call failed: QEMU answered with an error, hung up, or did not answer in time."""


class QmpCommandError(QmpError):
    """QEMU answered a command with an error response (the connection is still usable)."""


class QmpClient:
    """One QMP session over a unix socket; every method takes or has a time limit."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        # Every failure reaches the caller through _run(). What the loop would log on its own is
        # about tasks abandoned when a call was interrupted (KeyboardInterrupt), e.g. qemu.qmp
        # tripping over its own state checks while a half-made connection is torn down.
        self._loop.set_exception_handler(_ignore_abandoned_task)
        self._client = QMPClient("ptcheck")
        # The harness never reads asynchronous events. The default listener cannot be removed and
        # keeps every event it accepts in a queue and a history that never shrink (each stop or
        # resume of the VM emits STOP/RESUME), so it is made to accept none.
        self._client.events.event_filter = _reject_all

    def connect(self, path: str, timeout: float, still_starting: Callable[[], bool]) -> None:
        """Connects to QEMU's QMP socket at `path`, retrying while QEMU is starting up.

        `still_starting()` is polled between attempts; when it returns False (QEMU has exited) the
        call fails at once instead of waiting for the whole `timeout`.
        """
        deadline = time.monotonic() + timeout
        sock = _connect_unix(path, deadline, still_starting)
        # The greeting and the capabilities negotiation happen inside QMPClient.connect().
        self._run(self._client.connect(sock), deadline - time.monotonic(), "the QMP greeting")

    def execute(self, command: str, arguments: dict[str, Any], timeout: float) -> Any:
        """Runs one QMP command and returns its "return" value."""
        try:
            return self._run(self._client.execute(command, arguments), timeout, f"QMP {command!r}")
        except ExecuteError as err:
            raise QmpCommandError(f"QMP {command!r} failed: {err.error_class}: {err}") from err

    def close(self, timeout: float) -> None:
        """Hangs up (idempotent); errors from a connection QEMU already dropped are ignored."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.disconnect(), timeout, "the QMP disconnect")
        except Exception:  # QEMU is gone or stuck, or the session broke: nothing is left to say
            pass
        finally:
            self._loop.close()

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float, what: str) -> _T:
        """Runs `coroutine` on the private loop; converts every failure into a QmpError."""
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, max(timeout, 0.0)))
        except TimeoutError as err:  # asyncio.TimeoutError is TimeoutError since Python 3.11
            raise QmpError(f"no answer to {what} within {timeout:.1f} s") from err
        except ExecuteError:
            raise
        except (QMPError, OSError, EOFError, RuntimeError) as err:
            # RuntimeError: the loop is closed, or (a caller bug) used from inside another loop.
            # qemu.qmp keeps the exception that ended a connection in its futures; the traceback
            # it gained on its way up to here reaches the callers' frames, which would stay alive
            # (with the files and RAM views they hold) until a garbage collection. Measured: the
            # EOFError of a disconnect from an exited QEMU, kept by a _GatheringFuture.
            err.__traceback__ = None
            raise QmpError(f"{what} failed: {type(err).__name__}: {err}") from err


def _reject_all(event: Any) -> bool:
    return False


def _ignore_abandoned_task(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    pass


def _connect_unix(path: str, deadline: float, still_starting: Callable[[], bool]) -> socket.socket:
    """Returns a socket connected to `path`, retrying until `deadline` while QEMU starts."""
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            sock.connect(path)
            return sock
        except OSError as err:
            sock.close()
            if err.errno not in _NOT_YET_LISTENING:
                raise QmpError(f"cannot connect to the QMP socket {path}: {err}") from err
        if not still_starting():
            raise QmpError("QEMU exited before its QMP socket was ready")
        if time.monotonic() >= deadline:
            raise QmpError(f"QEMU's QMP socket {path} was not ready in time")
        time.sleep(_CONNECT_RETRY_S)

"""A client for QEMU's gdbstub: the GDB remote serial protocol over a unix socket.

Only what the harness needs: memory reads (one at a time or many in flight), physical or virtual
addressing, register reads and stopping / resuming the VM.

How QEMU's gdbstub behaves (measured on QEMU 10.0.2, see also /work/shared/QEMU-NOTES.md):

- Attaching stops a running VM (its run state becomes "paused"); a VM started with -S stays in
  "prelaunch". Either way the VM is stopped when the client is connected; `continue_()` runs it.
- QEMU only serves packets while the VM is stopped. Any byte that arrives while it runs stops the VM
  and is dropped, so a packet sent to a running VM vanishes without an answer. This client tracks
  the run state it caused and refuses to talk to a VM it believes running: call `interrupt()`
  first (or use `paused()`). Do not stop or resume the VM behind its back (QMP `stop`/`cont`).
- `m` reads translate through the page tables of the current CPU mode and give E14 for an address
  that is unmapped or has no RAM behind it. After `physical_mode(True)` they read guest physical
  memory, where an address without RAM reads as zeros, never E14. One `m` reads at most 2048 bytes
  (E22 beyond).
- No QStartNoAckMode: every packet is acknowledged. QEMU 7.2 may send an unsolicited stop reply
  (T02) on attach; stop replies that arrive unasked are acknowledged and recorded.
- Registers (`p`) are read after fetching the target description (`qXfer:features:read`), which
  QEMU 7.2 requires before it answers `p`.
"""
from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from harness.machine import MachineError

# QEMU refuses an `m` read longer than MAX_PACKET_LENGTH / 2 = 2048 bytes with E22
# (gdbstub.c handle_read_mem; qSupported answers PacketSize=1000, hex for 4096).
_MAX_READ = 2048
# qXfer:features:read chunk; QEMU clamps longer requests to (MAX_PACKET_LENGTH - 5) / 2.
_XFER_CHUNK = 2000
# Packets sent before reading their answers. Our side of a window is a few kilobytes, so sendall()
# never blocks on a QEMU that is itself blocked writing answers to us. Measured (8-byte reads,
# QEMU 10.0.2, loaded 2-core machine): window 1 ~ 30 k reads/s, 16 ~ 115 k/s, 64 to 512 ~ 120-140 k/s.
_WINDOW = 128
# The error answer QEMU gives when memory cannot be read (gdbstub.c handle_read_mem).
_UNREADABLE = b"E14"
_ERROR_REPLY = re.compile(rb"E[0-9a-fA-F]{2}")
# QEMU's target.xml lists its features as <xi:include href="..."/> without declaring the xi
# namespace, so it is read with a pattern rather than an XML parser.
_INCLUDE = re.compile(r'<xi:include\s+href="([^"]+)"')
# The binary escape of the remote protocol: '}' followed by the byte XOR 0x20 (GDB manual,
# "Overview" of the remote protocol; QEMU's gdb_memtox escapes # $ * }).
_ESCAPE = 0x7D


class GdbError(MachineError):
    """The gdbstub conversation failed: QEMU hung up, rejected a packet or did not answer in time."""


@dataclass(frozen=True)
class Register:
    """A register from the target description (GDB manual, "Target Description Format")."""

    name: str
    regnum: int
    bitsize: int
    feature: str


def _no_context() -> str:
    return ""


class GdbClient:
    """A connection to QEMU's gdbstub on a unix socket. See the module docstring for semantics."""

    def __init__(self, path: str, *, timeout: float = 5.0,
                 context: Callable[[], str] = _no_context) -> None:
        """Connects to the gdbstub listening at `path`; the VM is stopped from then on.

        `timeout` bounds every wait for an answer; `context()` is appended to error messages (the
        Machine passes QEMU's exit status and output tail).
        """
        self.timeout = timeout
        self._context = context
        self._buffer = bytearray()
        self._pending_acks = 0
        self._running = False
        self._registers: dict[str, Register] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(path)
        except OSError as err:
            self._sock.close()
            raise self._error(f"cannot connect to the gdbstub at {path}: {err}") from err

    @property
    def running(self) -> bool:
        """True after `continue_()` until `interrupt()` (or an unsolicited stop reply)."""
        return self._running

    def close(self) -> None:
        """Closes the connection (idempotent)."""
        self._sock.close()

    # ---- memory ---------------------------------------------------------------------------

    def read_memory(self, addr: int, size: int) -> bytes | None:
        """Reads `size` bytes at `addr` (any size); None when any of them cannot be read (E14)."""
        starts = range(addr, addr + size, _MAX_READ)
        lengths = [min(_MAX_READ, addr + size - start) for start in starts]
        replies = self._exchange([b"m%x,%x" % (start, n) for start, n in zip(starts, lengths, strict=True)])
        parts = [self._memory(reply, n) for reply, n in zip(replies, lengths, strict=True)]
        if any(part is None for part in parts):
            return None
        return b"".join(part for part in parts if part is not None)

    def read_memory_many(self, addrs: Sequence[int], size: int) -> list[bytes | None]:
        """Reads `size` bytes at each address with many requests in flight; None where E14."""
        if size > _MAX_READ:
            return [self.read_memory(addr, size) for addr in addrs]
        replies = self._exchange([b"m%x,%x" % (addr, size) for addr in addrs])
        return [self._memory(reply, size) for reply in replies]

    def physical_mode(self, enabled: bool) -> None:
        """Makes `m` reads use guest physical (True) or virtual (False) addresses.

        QEMU keeps this setting for the whole gdbstub, across connections.
        """
        self._expect_ok(self._exchange([b"Qqemu.PhyMemMode:%d" % enabled])[0], "Qqemu.PhyMemMode")

    # ---- registers ------------------------------------------------------------------------

    def registers(self) -> dict[str, Register]:
        """The CPU's registers by name, from the target description (fetched once)."""
        if self._registers is None:
            self._registers = self._read_target_description()
        return self._registers

    def read_registers(self, names: Collection[str] | None = None) -> dict[str, int]:
        """Reads the named registers (default: all) as unsigned integers.

        Registers QEMU reports as unavailable (E14) are left out of the result.
        """
        table = self.registers()
        unknown = sorted(set(names or ()) - table.keys())
        if unknown:
            raise self._error(f"no such registers: {', '.join(unknown)}")
        chosen = [table[name] for name in names] if names is not None else list(table.values())
        replies = self._exchange([b"p%x" % register.regnum for register in chosen])
        values: dict[str, int] = {}
        for register, reply in zip(chosen, replies, strict=True):
            if _ERROR_REPLY.fullmatch(reply):
                continue
            if not reply:
                raise self._error(f"QEMU does not answer `p` for register {register.name}")
            # All four target architectures are little-endian; `p` sends target byte order.
            values[register.name] = int.from_bytes(bytes.fromhex(reply.decode()), "little")
        return values

    def write_registers(self, values: dict[str, int]) -> None:
        """Writes registers (`P` packets) while the VM is stopped; GdbError if QEMU refuses."""
        table = self.registers()
        unknown = sorted(set(values) - table.keys())
        if unknown:
            raise self._error(f"no such registers: {', '.join(unknown)}")
        bodies = []
        for name, value in values.items():
            register = table[name]
            data = (value & ((1 << register.bitsize) - 1)).to_bytes(register.bitsize // 8, "little")
            bodies.append(b"P%x=%s" % (register.regnum, data.hex().encode()))
        for name, reply in zip(values, self._exchange(bodies), strict=True):
            self._expect_ok(reply, f"writing register {name}")

    # ---- run control ----------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stops the VM (Ctrl-C, byte 0x03) and waits for its stop reply; no-op when stopped."""
        if not self._running:
            return
        self._send(b"\x03")
        while self._running:  # the stop reply is recorded by _unsolicited()
            kind, payload = self._next_message()
            if kind != "$":
                raise self._error(f"unexpected {kind!r} while waiting for the stop reply")
            self._unsolicited(payload)

    def continue_(self) -> None:
        """Resumes the VM (`c`); no-op when it already runs. QEMU answers only when it stops."""
        if self._running:
            return
        self._send(_frame(b"c"))
        self._expect_ack()
        self._running = True

    @contextmanager
    def paused(self) -> Iterator[GdbClient]:
        """Stops the VM for the body and resumes it afterwards if it was running.

        When the body raises, the VM stays stopped (useful for diagnosis).
        """
        was_running = self._running
        self.interrupt()
        yield self
        if was_running:
            self.continue_()

    # ---- protocol -------------------------------------------------------------------------

    def _exchange(self, bodies: Sequence[bytes]) -> list[bytes]:
        """Sends packets, up to _WINDOW in flight, and returns their answers in order."""
        if self._running:
            raise self._error("the VM is running: call interrupt() (or use paused()) first; "
                              "QEMU drops packets that reach a running VM")
        replies: list[bytes] = []
        for start in range(0, len(bodies), _WINDOW):
            window = bodies[start:start + _WINDOW]
            self._send(b"".join(_frame(body) for body in window))
            for _ in window:
                self._expect_ack()
                replies.append(self._expect_reply())
        return replies

    def _send(self, data: bytes) -> None:
        """Sends `data`, preceded by the acknowledgements owed for answers received so far."""
        try:
            self._sock.sendall(b"+" * self._pending_acks + data)
        except OSError as err:
            raise self._error(f"cannot send to the gdbstub: {err}") from err
        self._pending_acks = 0

    def _expect_ack(self) -> None:
        kind, payload = self._next_message()
        while kind == "$":
            self._unsolicited(payload)
            kind, payload = self._next_message()
        if kind == "-":
            raise self._error("QEMU rejected a packet (bad checksum)")

    def _expect_reply(self) -> bytes:
        while True:
            kind, payload = self._next_message()
            if kind != "$":
                raise self._error(f"unexpected {kind!r} where an answer was due")
            # A stop (T, S) or exit (W, X) packet is never the answer to m, p, q or Q, whose
            # answers are hex, E.., OK, empty, or qXfer's m/l.
            if payload[:1] not in (b"T", b"S", b"W", b"X"):
                self._pending_acks += 1
                return payload
            self._unsolicited(payload)

    def _unsolicited(self, payload: bytes) -> None:
        """Handles a stop or exit notification that arrived on its own."""
        if payload[:1] in (b"T", b"S"):
            self._running = False
            self._pending_acks += 1  # safe to send later: the VM is stopped
            return
        if payload[:1] in (b"W", b"X"):
            raise self._error(f"QEMU's gdbstub reports that QEMU exited ({payload.decode()})")
        raise self._error(f"unexpected packet from the gdbstub: {payload[:40]!r}")

    def _next_message(self) -> tuple[str, bytes]:
        """The next "+", "-" or ("$", payload) from QEMU, waiting at most `timeout` for it."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._buffer:
                first = self._buffer[0]
                if first in b"+-":
                    del self._buffer[0]
                    return chr(first), b""
                if first != ord("$"):
                    raise self._error(f"unexpected byte {first:#04x} from the gdbstub")
                # '#' cannot occur inside a packet: QEMU escapes it ('}' then 0x03).
                end = self._buffer.find(b"#")
                if end >= 0 and len(self._buffer) >= end + 3:
                    return "$", self._take_packet(end)
            self._receive(deadline)

    def _take_packet(self, end: int) -> bytes:
        """Removes `$payload#xx` (payload ends at `end`) from the buffer and checks its sum."""
        payload = bytes(self._buffer[1:end])
        checksum = bytes(self._buffer[end + 1:end + 3])
        del self._buffer[:end + 3]
        if int(checksum, 16) != sum(payload) & 0xFF:
            raise self._error(f"corrupt packet from the gdbstub (checksum {checksum!r})")
        return payload

    def _receive(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._error(f"no answer from the gdbstub within {self.timeout} s")
        self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(1 << 16)
        except TimeoutError as err:
            raise self._error(f"no answer from the gdbstub within {self.timeout} s "
                              "(was the VM resumed behind the client's back?)") from err
        except OSError as err:
            raise self._error(f"gdbstub connection failed: {err}") from err
        if not data:
            raise self._error("QEMU closed the gdbstub connection")
        self._buffer += data

    # ---- answers --------------------------------------------------------------------------

    def _memory(self, reply: bytes, size: int) -> bytes | None:
        if reply == _UNREADABLE:
            return None
        if _ERROR_REPLY.fullmatch(reply) or len(reply) != 2 * size:
            raise self._error(f"unexpected answer to a memory read: {reply[:40]!r}")
        return bytes.fromhex(reply.decode())

    def _expect_ok(self, reply: bytes, what: str) -> None:
        if reply != b"OK":
            raise self._error(f"{what} refused: {reply[:40]!r}")

    def _xfer(self, annex: str) -> str:
        """Reads a whole qXfer:features:read object (the GDB manual's qXfer m/l protocol)."""
        data = bytearray()
        while True:
            reply = self._exchange([b"qXfer:features:read:%s:%x,%x"
                                    % (annex.encode(), len(data), _XFER_CHUNK)])[0]
            if reply[:1] not in (b"m", b"l"):
                raise self._error(f"cannot read {annex} from the gdbstub: {reply[:40]!r}")
            data += _unescape(reply[1:])
            if reply[:1] == b"l":
                return data.decode()

    def _read_target_description(self) -> dict[str, Register]:
        registers: dict[str, Register] = {}
        next_regnum = 0
        for annex in _INCLUDE.findall(self._xfer("target.xml")):
            feature = ElementTree.fromstring(self._xfer(annex))
            for reg in feature.iter("reg"):
                # GDB manual, "Target Description Format", <reg>: without regnum a register's
                # number is one more than the previous register's, starting at zero.
                regnum = int(reg.get("regnum", next_regnum))
                registers[reg.attrib["name"]] = Register(
                    reg.attrib["name"], regnum, int(reg.attrib["bitsize"]), feature.get("name", annex))
                next_regnum = regnum + 1
        return registers

    def _error(self, message: str) -> GdbError:
        return GdbError(message + self._context())


def _frame(body: bytes) -> bytes:
    """`$body#checksum`: the checksum is the sum of the body's bytes modulo 256, in hex."""
    return b"$%s#%02x" % (body, sum(body) & 0xFF)


def _unescape(data: bytes) -> bytes:
    """Undoes the remote protocol's binary escape ('}' then byte ^ 0x20)."""
    if _ESCAPE not in data:
        return data
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)

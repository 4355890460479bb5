"""A datagram transport read through ``loop.add_reader``, so reading can stop and start again.

The media fast path (:mod:`rtc2sip.media.fastlink`) takes a call's sockets over once its SRTP keys
are known: its engine thread reads them from then on, and Python must stop reading them, or the two
would share the datagrams. uvloop's UDP transport has no ``pause_reading``; this one has, and it
keeps ``asyncio.DatagramTransport``'s ``sendto``/``close``/``get_extra_info`` for the stream, RTCP
and ICE code that holds it. Used for a call's sockets only when the fast path is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from .ports import Address

__all__ = ["RawTransport"]

# Datagrams read per readiness at most (the loop's other sockets wait meanwhile).
MAX_READS = 64
RECEIVE_SIZE = 4096  # path.RECEIVE_SIZE: a 1500-byte-MTU video packet or a DTLS flight


class RawTransport(asyncio.DatagramTransport):
    """``sock`` read on ``loop`` into ``protocol`` (``connection_made`` is called here)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 protocol: asyncio.DatagramProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._reading = False
        self._closing = False
        sock.setblocking(False)
        protocol.connection_made(self)
        self.resume_reading()

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def protocol(self) -> asyncio.DatagramProtocol:
        return self._protocol

    def _read(self) -> None:
        sock, protocol = self._sock, self._protocol
        for _ in range(MAX_READS):
            try:
                data, addr = sock.recvfrom(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors of an earlier send (port unreachable)
                protocol.error_received(exc)
                return
            protocol.datagram_received(data, addr)
            if not self._reading:  # the fast path took the socket during the callback
                return

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read)

    def sendto(self, data: bytes | bytearray | memoryview, addr: Address | None = None) -> None:  # type: ignore[override]
        if self._closing:
            return
        try:
            if addr is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # a full send buffer drops the datagram, as the kernel would
        except OSError as exc:
            self._protocol.error_received(exc)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self.pause_reading()
        self._closing = True
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self._sock
        if name == "sockname":
            with contextlib.suppress(OSError):
                return self._sock.getsockname()
        return default

    def get_write_buffer_size(self) -> int:
        return 0

"""One UDP socket for every browser leg (``[media] webrtc_socket = "shared"``), read and written in
batches with ``recvmmsg``/``sendmmsg``.

With a socket per call, every relayed packet costs the kernel a receive and a send syscall on the
browser leg alone. Here all browser legs share one socket per address family (the way mediasoup's
WebRtcServer and LiveKit's UDP mux do it, and an operator's firewall then needs one UDP port for
WebRTC), each a :class:`~rtc2sip.media.sharedsocket.SharedSocket` (batched I/O through ctypes, with
a ``recvfrom``/``sendto`` fallback). Datagrams go to the session that owns them by the sans-I/O
:class:`~rtc2sip.media.demux.DemuxTable` (RFC 7983 §7, then RFC 8445 ufrags, STUN transaction IDs
and ICE-validated addresses).

:class:`UdpMux` is the set of sockets of one media plane (binding, routing table, counters, the
drop log) and :class:`MuxTransport` a session's view that quacks like ``asyncio.DatagramTransport``
for the session and its aioice connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from .demux import DemuxTable, MuxOwner
from .ice import SrflxCache
from .ports import Address, PortAllocator, PortsExhausted
from .sharedsocket import SLOTS, SharedSocket, batch_available, bind

__all__ = ["MuxTransport", "UdpMux"]

log = logging.getLogger("rtc2sip.media")

# At most one log line per this many seconds about datagrams nobody owns.
DROP_LOG_INTERVAL = 60.0


class UdpMux:
    """The shared WebRTC sockets of one media plane: one per address family it announces, on one port.

    :meth:`open` binds them (``port`` 0: the first port of ``ports``' range free in every family
    needed, reserved there so no call takes it); :meth:`attach` gives a session its
    :class:`MuxTransport`. ``batch=False`` forces the ``recvfrom_into``/``sendto`` fallback.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, batch: bool = True) -> None:
        self.loop = loop
        self.table = DemuxTable()
        # the sockets' server-reflexive addresses (stun-server), learnt by one call for the next ones
        self.srflx = SrflxCache()
        self.sockets: list[SharedSocket] = []
        self.port = 0
        self.batch = batch and batch_available()
        self.handler_errors = 0
        self._ports: PortAllocator | None = None
        self._last_drop_log = 0.0
        self._logged_drops = 0

    def open(self, hosts: Iterable[str], port: int, ports: PortAllocator | None = None,
             buffer_size: int | None = None) -> None:
        """Bind one socket per host in ``hosts`` (one address of each family needed, or a wildcard
        of it), all on ``port``; with ``port`` 0, the first port of ``ports`` that every host has free."""
        hosts = list(dict.fromkeys(hosts))
        if port:
            candidates = [port]
        elif ports is not None:
            candidates = [p for p in range(ports.low, ports.high + 1) if not ports.is_taken(p)]
        else:
            raise ValueError("a port or a port range is needed")
        for candidate in candidates:
            try:
                socks = [bind(host, candidate, buffer_size) for host in hosts]
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not port:
                    continue
                raise
            self.port = candidate
            if ports is not None and ports.low <= candidate <= ports.high:
                ports.reserve(candidate)
                self._ports = ports
            for sock in socks:
                shared = SharedSocket(self, sock, self.batch)
                self.sockets.append(shared)
                self.loop.add_reader(shared.fd, shared.readable)
            return
        raise PortsExhausted(f"no UDP port free for the shared WebRTC socket in {ports.low}-{ports.high}"
                             if ports is not None else "no UDP port")

    @property
    def sockname(self) -> tuple[Any, ...]:
        return tuple(self.sockets[0].sock.getsockname()) if self.sockets else ()

    def describe(self) -> str:
        names = ", ".join(f"[{s.sock.getsockname()[0]}]:{self.port}" if s.v6
                          else f"{s.sock.getsockname()[0]}:{self.port}" for s in self.sockets)
        rcvbuf = self.sockets[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if self.sockets else 0
        how = "recvmmsg/sendmmsg" if self.batch else "recvfrom/sendto"
        return f"{names} ({how}, {SLOTS} datagrams per call, receive buffer {rcvbuf // 1024} KiB)"

    def attach(self, owner: MuxOwner) -> MuxTransport:
        """A session's view of the shared sockets (its datagrams come to ``owner``)."""
        if not self.sockets:
            raise RuntimeError("the shared WebRTC socket is not open")
        self.table.add(owner)
        return MuxTransport(self, owner)

    def stats(self) -> dict[str, int]:
        return {
            "sessions": len(self.table),
            "received": sum(s.received for s in self.sockets),
            "sent": sum(s.sent for s in self.sockets),
            "batches": sum(s.batches for s in self.sockets),
            "send_errors": sum(s.send_errors for s in self.sockets),
            "dropped": sum(s.dropped for s in self.sockets),
            "unrouted": self.table.unrouted,
            "garbage": self.table.garbage,
            "refused": self.table.refused,
            "handler_errors": self.handler_errors,
        }

    def handler_failed(self, addr: Address) -> None:
        self.handler_errors += 1
        log.exception("shared WebRTC socket: a datagram from %s:%d was not handled", addr[0], addr[1])

    def socket_error(self, shared: SharedSocket, exc: OSError) -> None:
        log.warning("shared WebRTC socket %s: %s", shared.sock.getsockname(), exc)

    def log_drops(self, now: float) -> None:
        """At most one line per :data:`DROP_LOG_INTERVAL` about datagrams nobody owned (housekeeping)."""
        table = self.table
        dropped = table.unrouted + table.garbage
        if dropped > self._logged_drops and now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log.info("shared WebRTC socket: %d datagrams without a session so far (%d not STUN/DTLS/RTP), "
                     "%d address claims refused", table.unrouted, table.garbage, table.refused)
            self._last_drop_log = now
            self._logged_drops = dropped

    def close(self) -> None:
        for shared in self.sockets:
            if not shared.closed:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(shared.fd)
                shared.close()
        self.sockets = []
        if self._ports is not None:
            self._ports.unreserve(self.port)
            self._ports = None


class MuxTransport:
    """A session's view of the shared sockets: ``asyncio.DatagramTransport``'s ``sendto``, ``close``,
    ``is_closing`` and ``get_extra_info``, and the routes its ICE agent declares
    (:class:`rtc2sip.media.ice.IceRoutes`)."""

    __slots__ = ("_closing", "_mux", "_owner", "_sockets", "sendto")

    def __init__(self, mux: UdpMux, owner: MuxOwner) -> None:
        self._mux = mux
        self._owner = owner
        self._closing = False
        self._sockets = list(mux.sockets)
        # The common case, one socket: sendto is that socket's own method, no call in between.
        self.sendto: Callable[[bytes | bytearray, Address], None] = (
            self._sockets[0].send if len(self._sockets) == 1 else self._send_by_family)

    def _send_by_family(self, data: bytes | bytearray, addr: Address) -> None:
        v6 = ":" in addr[0]
        for shared in self._sockets:
            if shared.v6 == v6:
                shared.send(data, addr)
                return

    def _closed_send(self, data: bytes | bytearray, addr: Address) -> None:
        return

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Forget every route of the session; its ``connection_lost`` follows, as for a socket."""
        if self._closing:
            return
        self._closing = True
        self.sendto = self._closed_send
        self._mux.table.remove(self._owner)
        self._mux.loop.call_soon(self._owner.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._mux.sockname
        return default

    # -- routes (rtc2sip.media.ice.IceRoutes) -----------------------------------------------------

    def ufrag_added(self, ufrag: str) -> bool:
        return not self._closing and self._mux.table.add_ufrag(self._owner, ufrag)

    def ufrag_removed(self, ufrag: str) -> None:
        self._mux.table.remove_ufrag(self._owner, ufrag)

    def address_validated(self, addr: Address) -> None:
        if not self._closing:
            self._mux.table.claim_address(self._owner, addr)

    def address_dropped(self, addr: Address) -> None:
        self._mux.table.release_address(self._owner, addr)

    def request_sent(self, transaction_id: bytes) -> None:
        if not self._closing:
            self._mux.table.expect_response(self._owner, transaction_id, monotonic())

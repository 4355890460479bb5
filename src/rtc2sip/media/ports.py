"""UDP ports of the media plane: RTP/RTCP pairs for the legacy leg, single ports for the WebRTC leg.

RFC 3550 §11: RTP on an even port, RTCP on the next (odd) one, unless rtcp-mux (RFC 5761) is
negotiated. Every port comes from one configured range, so that a firewall can be opened for exactly
that range, and one process per core can be given its own range.

The allocator is bounded by its range (``capacity`` ports); it hands ports out round-robin so that a
port freed by a call that just ended is the last one reused: late packets of the old call then find
nothing rather than the next call. A port some other program holds is skipped, not fatal.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

__all__ = ["Address", "PortAllocator", "PortsExhausted", "bind_udp", "wire_address"]

# A peer's UDP address as a socket reports it: (host, port) for IPv4, (host, port, flowinfo,
# scope_id) for IPv6.
Address = tuple[str, int] | tuple[str, int, int, int]


def wire_address(host: str, port: int) -> Address:
    """``host``:``port`` (from SDP or ICE) in the form a datagram's source takes on a socket of its
    family: IPv6 as a compressed 4-tuple with flowinfo and scope 0 (neither a browser nor a phone
    on a routable or loopback address uses them), IPv4 as a pair. The packet path compares sources
    with ``==`` against addresses stored in this form, with no conversion per packet. A host name
    (SDP allows one in c=) is kept as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host, port)
    return (str(ip), port, 0, 0) if ip.version == 6 else (str(ip), port)


class PortsExhausted(RuntimeError):
    """No free port (pair) left in the range: the call is refused (the caller answers 503)."""


def bind_udp(host: str, port: int, buffer_size: int | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port); ``buffer_size`` sets SO_RCVBUF and SO_SNDBUF
    (webrtc2sip's ``rtp-buffsize``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if buffer_size:
            with contextlib.suppress(OSError):  # the kernel caps it at net.core.*mem_max; not fatal
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class PortAllocator:
    """Ports ``low..high`` (inclusive) for one media plane; pairs start on an even port."""

    def __init__(self, low: int, high: int, buffer_size: int | None = None) -> None:
        if not 1024 <= low < high <= 65535:
            raise ValueError(f"port range {low}-{high} must be within 1024-65535 and hold at least 2 ports")
        self.low = low + (low & 1)  # RFC 3550 §11: RTP on an even port
        self.high = high
        self.buffer_size = buffer_size
        self._in_use: set[int] = set()
        # held for good by the plane (the shared WebRTC socket, rtc2sip.media.udpmux): skipped, not counted
        self._reserved: set[int] = set()
        self._next = self.low

    @property
    def capacity(self) -> int:
        return self.high - self.low + 1

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def ports_in_use(self) -> frozenset[int]:
        return frozenset(self._in_use)

    def is_taken(self, port: int) -> bool:
        return port in self._in_use or port in self._reserved

    def reserve(self, port: int) -> None:
        """Keep ``port`` out of the calls' allocations (it is not counted in :attr:`in_use`)."""
        self._reserved.add(port)

    def unreserve(self, port: int) -> None:
        self._reserved.discard(port)

    def _candidates(self, step: int) -> list[int]:
        """Every start port once, from the cursor onward (round-robin)."""
        first = self._next
        ports = list(range(first, self.high + 1 - (step - 1), step))
        ports += list(range(self.low, first, step))
        return ports

    def bind_pair(self, host: str) -> tuple[socket.socket, socket.socket]:
        """RTP (even port) and RTCP (port + 1) sockets; raises :class:`PortsExhausted`."""
        for port in self._candidates(2):
            if self.is_taken(port) or self.is_taken(port + 1):
                continue
            try:
                rtp = bind_udp(host, port, self.buffer_size)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            try:
                rtcp = bind_udp(host, port + 1, self.buffer_size)
            except OSError as exc:
                rtp.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self._in_use.update((port, port + 1))
            self._advance(port + 2)
            return rtp, rtcp
        raise PortsExhausted(f"no free RTP/RTCP port pair in {self.low}-{self.high}")

    def bind_one(self, host: str) -> socket.socket:
        """One socket (the WebRTC leg: BUNDLE and rtcp-mux put everything on one 5-tuple)."""
        for port in self._candidates(1):
            if self.is_taken(port):
                continue
            try:
                sock = bind_udp(host, port, self.buffer_size)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self._in_use.add(port)
            # Keep the cursor even so that pairs stay aligned after single ports.
            self._advance(port + 1 + ((port + 1) & 1))
            return sock
        raise PortsExhausted(f"no free UDP port in {self.low}-{self.high}")

    def release(self, *ports: int) -> None:
        for port in ports:
            self._in_use.discard(port)

    def _advance(self, port: int) -> None:
        self._next = port if port + 1 <= self.high else self.low

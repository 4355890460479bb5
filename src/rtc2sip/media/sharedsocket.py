"""One bound socket of the shared WebRTC socket, read and written in batches with ``recvmmsg``/``sendmmsg``.

With a socket per call, every relayed packet costs the kernel a receive and a send syscall on the
browser leg alone (bench/README.md, "The per-packet path": ~7.5 µs of a 14.7 µs packet). A
:class:`SharedSocket` takes up to :data:`SLOTS` datagrams per wake-up into preallocated buffers
(``recvmmsg`` through ctypes, the ``mmsghdr`` vectors built once), hands each to its owner by its
:class:`~rtc2sip.media.demux.DemuxTable` (the media case inlined: RFC 7983 §7 first byte, then the
source address), and sends what the legs queue in one event-loop iteration in one ``sendmmsg``.
Raw ``sockaddr`` bytes and address tuples are cached both ways, bounded by
:data:`MAX_CACHED_ADDRESSES`.

Where ``recvmmsg``/``sendmmsg`` are missing (not Linux) it falls back to ``recvfrom_into``/``sendto``
on the same socket, with the same routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import socket
import struct
from time import monotonic
from typing import Any, Protocol

from .demux import DemuxTable
from .libc import libc
from .ports import Address

__all__ = ["MAX_CACHED_ADDRESSES", "MAX_ROUNDS", "SHARED_BUFFER", "SLOTS", "SLOT_SIZE", "SharedSocket",
           "SocketOwner", "batch_available", "bind"]

# Datagrams per recvmmsg/sendmmsg call, and the size of each slot (the largest datagram here is a
# 1500-byte-MTU video packet or DTLS flight; relay.RECEIVE_SIZE is the same bound per call).
SLOTS = 64
SLOT_SIZE = 4096
# The shared socket queues what a socket per call used to: ask for a large kernel buffer (the kernel
# caps SO_RCVBUF at net.core.rmem_max unless SO_RCVBUFFORCE is allowed).
SHARED_BUFFER = 8 * 1024 * 1024
# Address caches (raw sockaddr <-> tuple) are cleared when this big: a peer spraying from many
# source ports costs a rebuild, never unbounded memory.
MAX_CACHED_ADDRESSES = 8192
# recvmmsg calls per readiness at most while they come back full: the socket carries every call's
# browser traffic, and one call per event-loop iteration (an iteration also runs every legacy socket's
# callbacks) would fall behind; 64 x 64 datagrams bounds the time the loop spends here.
MAX_ROUNDS = 64


class SocketOwner(Protocol):
    """What a :class:`SharedSocket` belongs to (:class:`rtc2sip.media.udpmux.UdpMux`)."""

    loop: asyncio.AbstractEventLoop
    table: DemuxTable

    def handler_failed(self, addr: Address) -> None: ...

    def socket_error(self, shared: SharedSocket, exc: OSError) -> None: ...


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _batch_calls() -> tuple[Any, Any] | None:
    """libc's recvmmsg and sendmmsg (Linux), or None."""
    recvmmsg, sendmmsg = getattr(libc(), "recvmmsg", None), getattr(libc(), "sendmmsg", None)
    if recvmmsg is None or sendmmsg is None:
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_BATCH = _batch_calls()
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
_V4_KEY = struct.Struct("=Q")  # family, port and address of a sockaddr_in: one int, no bytes object
_SOCKADDR_IN = struct.Struct("=HH4s8x")
_SOCKADDR_IN6 = struct.Struct("=HHI16sI")
_SEND_ERRORS_IGNORED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


def _address(buffer: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class SharedSocket:
    """One bound socket of the mux: its receive slots, its send batch and its address caches."""

    def __init__(self, mux: SocketOwner, sock: socket.socket, batch: bool) -> None:
        self.mux = mux
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.v6 = sock.family == socket.AF_INET6
        self.name_size = 28 if self.v6 else 16
        self.batch = batch and _BATCH is not None
        self.closed = False
        self.scheduled = False
        self.received = 0
        self.sent = 0
        self.send_errors = 0
        self.dropped = 0
        self.batches = 0
        self._from_raw: dict[Any, Address] = {}  # raw sockaddr (an int for IPv4) -> address
        self._to_raw: dict[Address, bytes] = {}  # address -> raw sockaddr
        self._pending: list[tuple[bytes, Address]] = []  # the fallback's send queue
        self._count = 0
        if self.batch:
            self._setup_batch()
        else:
            self._fallback_buffer = bytearray(SLOT_SIZE)

    def _setup_batch(self) -> None:
        ns, size = self.name_size, SLOT_SIZE
        stride = ctypes.sizeof(_MMsgHdr)
        self._stride = stride
        # receive side
        self._rbuf = bytearray(SLOTS * size)
        self._rnames = bytearray(SLOTS * ns)
        self._rnames_view = memoryview(self._rnames)
        self._rhdr = bytearray(SLOTS * stride)
        self._riov = bytearray(SLOTS * ctypes.sizeof(_IoVec))
        self._setup_vectors(self._rhdr, self._riov, self._rbuf, self._rnames, size)
        lens = memoryview(self._rhdr).cast("I")
        self._rlens = lens
        offset = _MMsgHdr.msg_len.offset
        self._rlen_index = [(i * stride + offset) // 4 for i in range(SLOTS)]
        # send side: lengths written per datagram through a size_t view of the iovecs
        self._sbuf = bytearray(SLOTS * size)
        self._snames = bytearray(SLOTS * ns)
        self._shdr = bytearray(SLOTS * stride)
        self._siov = bytearray(SLOTS * ctypes.sizeof(_IoVec))
        self._setup_vectors(self._shdr, self._siov, self._sbuf, self._snames, size)
        iov = memoryview(self._siov)
        self._slens = iov.cast("Q") if ctypes.sizeof(ctypes.c_size_t) == 8 else iov.cast("I")
        self._shdr_base = _address(self._shdr)
        self._rhdr_base = _address(self._rhdr)

    def _setup_vectors(self, hdr: bytearray, iov: bytearray, data: bytearray, names: bytearray, size: int) -> None:
        headers = (_MMsgHdr * SLOTS).from_buffer(hdr)
        vectors = (_IoVec * SLOTS).from_buffer(iov)
        data_base, names_base = _address(data), _address(names)
        for i in range(SLOTS):
            vectors[i].iov_base = data_base + i * size
            vectors[i].iov_len = size
            h = headers[i].msg_hdr
            h.msg_name = names_base + i * self.name_size
            h.msg_namelen = self.name_size
            h.msg_iov = ctypes.addressof(vectors[i])
            h.msg_iovlen = 1

    # -- addresses ------------------------------------------------------------------------------

    def _decode(self, raw: Any, offset: int) -> Address:
        """The address of the sockaddr at ``offset`` of the receive names, cached under ``raw``, in the
        form a socket of its family reports a source (IPv6: a 4-tuple, as ``ports.wire_address``
        stores ICE's and SDP's addresses)."""
        addr: Address
        names = self._rnames
        if self.v6:
            _, port, flowinfo, packed, scope = _SOCKADDR_IN6.unpack_from(names, offset)
            addr = (socket.inet_ntop(socket.AF_INET6, packed), socket.ntohs(port), socket.ntohl(flowinfo), scope)
        else:
            _, port, packed = _SOCKADDR_IN.unpack_from(names, offset)
            addr = (socket.inet_ntop(socket.AF_INET, packed), socket.ntohs(port))
        cache = self._from_raw
        if len(cache) >= MAX_CACHED_ADDRESSES:
            cache.clear()
        cache[raw] = addr
        return addr

    def _encode(self, addr: Address) -> bytes | None:
        host, port = addr[0], int(addr[1])
        try:
            if self.v6:
                ip = ipaddress.IPv6Address(host.partition("%")[0])
                raw = _SOCKADDR_IN6.pack(socket.AF_INET6, socket.htons(port), 0, ip.packed, 0)
            else:
                raw = _SOCKADDR_IN.pack(socket.AF_INET, socket.htons(port), ipaddress.IPv4Address(host).packed)
        except (ValueError, OverflowError, struct.error):
            return None
        cache = self._to_raw
        if len(cache) >= MAX_CACHED_ADDRESSES:
            cache.clear()
        cache[addr] = raw
        return raw

    # -- receiving ------------------------------------------------------------------------------

    def readable(self) -> None:
        if self.batch:
            self._receive_batch()
        else:
            self._receive_fallback()

    def _receive_batch(self) -> None:
        assert _BATCH is not None
        recvmmsg = _BATCH[0]
        for _ in range(MAX_ROUNDS):
            n = recvmmsg(self.fd, self._rhdr_base, SLOTS, _MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        self.mux.socket_error(self, OSError(err, f"recvmmsg: {errno.errorcode.get(err, err)}"))
                return
            self._dispatch(n)
            if n < SLOTS:
                return

    def _dispatch(self, n: int) -> None:
        """Hand the ``n`` datagrams of the receive slots to their owners."""
        self.received += n
        mux = self.mux
        table = mux.table
        owners = table.addresses
        rbuf, lens, len_index = self._rbuf, self._rlens, self._rlen_index
        names, names_view, cache, v6 = self._rnames, self._rnames_view, self._from_raw, self.v6
        ns, size = self.name_size, SLOT_SIZE
        data: Any  # a bytearray for SRTP (copied into libsrtp's buffer at once), bytes for the rest
        for i in range(n):
            start = i * size
            data = rbuf[start : start + lens[len_index[i]]]
            at = i * ns
            raw: Any = names_view[at : at + 24].tobytes() if v6 else _V4_KEY.unpack_from(names, at)[0]
            addr = cache.get(raw)
            if addr is None:
                addr = self._decode(raw, at)
            b = data[0] if data else 255
            if 127 < b < 192 or 19 < b < 64:  # RTP/RTCP, DTLS (RFC 7983 §7)
                owner = owners.get(addr)
                if owner is None:
                    table.unrouted += 1
                    continue
                if b < 64:
                    data = bytes(data)  # DTLS is kept by OpenSSL's BIO: its own copy
            elif b < 4:
                data = bytes(data)  # STUN: aioice keys transactions by bytes of it
                owner = table.route_stun(data, addr, monotonic())
                if owner is None:
                    continue
            else:
                table.garbage += 1
                continue
            try:
                owner.datagram_received(data, addr)
            except Exception:
                mux.handler_failed(addr)

    def _receive_fallback(self) -> None:
        mux = self.mux
        table = mux.table
        buffer = self._fallback_buffer
        for _ in range(SLOTS * MAX_ROUNDS):
            try:
                n, source = self.sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                mux.socket_error(self, exc)
                return
            self.received += 1
            data = bytes(buffer[:n])
            addr: Address = source  # IPv6: the 4-tuple, as ports.wire_address stores addresses
            owner = table.route(data, addr, monotonic())
            if owner is None:
                continue
            try:
                owner.datagram_received(data, addr)
            except Exception:
                mux.handler_failed(addr)

    # -- sending --------------------------------------------------------------------------------

    def send(self, data: bytes | bytearray, addr: Address) -> None:
        """Queue one datagram; the batch leaves at the end of this event-loop iteration."""
        if self.closed:
            return
        if not self.batch:
            self._pending.append((bytes(data), addr))
            if not self.scheduled:
                self.scheduled = True
                self.mux.loop.call_soon(self.flush)
            return
        i = self._count
        if i == SLOTS:
            self._send_batch()
            i = 0
        raw = self._to_raw.get(addr)
        if raw is None:
            raw = self._encode(addr)
            if raw is None:
                self.dropped += 1
                return
        n = len(data)
        if n > SLOT_SIZE:
            self.dropped += 1
            return
        start = i * SLOT_SIZE
        self._sbuf[start : start + n] = data
        at = i * self.name_size
        self._snames[at : at + self.name_size] = raw
        self._slens[i * 2 + 1] = n  # iov_len of slot i
        self._count = i + 1
        if not self.scheduled:
            self.scheduled = True
            self.mux.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.closed:
            return
        if self.batch:
            self._send_batch()
            return
        pending, self._pending = self._pending, []
        for data, addr in pending:
            try:
                self.sock.sendto(data, addr)
                self.sent += 1
            except OSError:
                self.send_errors += 1

    def _send_batch(self) -> None:
        assert _BATCH is not None
        count, self._count = self._count, 0
        sendmmsg = _BATCH[1]
        start = 0
        while start < count:
            sent = sendmmsg(self.fd, self._shdr_base + start * self._stride, count - start, 0)
            if sent > 0:
                start += sent
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err in _SEND_ERRORS_IGNORED:  # the socket buffer is full: the rest is lost, as with sendto
                self.dropped += count - start
                break
            self.send_errors += 1  # this datagram's destination refused it: skip it, send the rest
            start += 1
        self.sent += start
        self.batches += 1

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self.sock.close()


def batch_available() -> bool:
    """Whether this system has ``recvmmsg`` and ``sendmmsg``."""
    return _BATCH is not None


def bind(host: str, port: int, buffer_size: int | None) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            # IPv4 has its own socket: no v4-mapped addresses on this one
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        size = max(buffer_size or 0, SHARED_BUFFER)
        for forced, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                              (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
            try:
                if forced is None:
                    raise PermissionError
                sock.setsockopt(socket.SOL_SOCKET, forced, size)  # beyond rmem_max: needs CAP_NET_ADMIN
            except OSError:
                with contextlib.suppress(OSError):  # capped at net.core.[rw]mem_max; not fatal
                    sock.setsockopt(socket.SOL_SOCKET, plain, size)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock

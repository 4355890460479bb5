"""One UDP socket for every browser leg (``[media] webrtc_socket = "shared"``), read and written in
batches with ``recvmmsg``/``sendmmsg``.

With a socket per call, every relayed packet costs the kernel a receive and a send syscall on the
browser leg alone (bench/README.md, "The per-packet path": ~7.5 µs of a 14.7 µs packet). Here all
browser legs share one socket per address family (the way mediasoup's WebRtcServer and LiveKit's UDP
mux do it, and an operator's firewall then needs one UDP port for WebRTC): one ``loop.add_reader``
callback takes up to :data:`SLOTS` datagrams per wake-up into preallocated buffers, and what the
legs send in one event-loop iteration leaves in one ``sendmmsg``.

Datagrams are routed to the session that owns them by :class:`DemuxTable`, which has no I/O:

- a STUN request (RFC 7983 §7: first byte 0..3) by the local ufrag of its USERNAME ("ours:theirs",
  RFC 8445 §7.2.2); a session owns the ufrags of its credentials (a restart adds one);
- a STUN response by the transaction ID of the request the session sent (recorded on sending,
  forgotten after :data:`TRANSACTION_LIFETIME`): answers to its checks and to ``stun-server``;
- DTLS, SRTP and SRTCP (and STUN indications) by source address: an address becomes a session's
  when its ICE agent validated it (an authenticated check from it, or an answer to a check sent to
  it, RFC 8445 §7.3.1.4). The first owner keeps it; a second claimant is refused and counted.

A route only says which session looks at a datagram: the session keeps its own checks (STUN
MESSAGE-INTEGRITY, ``IceAgent.is_validated``, DTLS fingerprints, SRTP authentication), so a wrong
route can never inject media. Removing a session removes every key it had.

The socket glue is :class:`UdpMux` (sockets, batches, the address caches) and :class:`MuxTransport`,
a session's view that quacks like ``asyncio.DatagramTransport`` for the session and its aioice
connection. Where ``recvmmsg``/``sendmmsg`` are missing (not Linux) it falls back to
``recvfrom_into``/``sendto`` on the same socket, with the same routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any, Protocol

from .ice import SrflxCache
from .libc import libc
from .ports import Address, PortAllocator, PortsExhausted

__all__ = [
    "SHARED_BUFFER",
    "SLOTS",
    "DemuxTable",
    "MuxOwner",
    "MuxTransport",
    "UdpMux",
    "stun_local_ufrag",
]

log = logging.getLogger("rtc2sip.media")


# Datagrams per recvmmsg/sendmmsg call, and the size of each slot (the largest datagram here is a
# 1500-byte-MTU video packet or DTLS flight; relay.RECEIVE_SIZE is the same bound per call).
SLOTS = 64
SLOT_SIZE = 4096
# The shared socket queues what a socket per call used to: ask for a large kernel buffer (the kernel
# caps SO_RCVBUF at net.core.rmem_max unless SO_RCVBUFFORCE is allowed).
SHARED_BUFFER = 8 * 1024 * 1024
# aioice retransmits a check for up to ~40 s (RFC 8489 §6.2.1 with its RTO and Rc); later answers
# are of no use to anyone.
TRANSACTION_LIFETIME = 45.0
# Transactions remembered per session: aioice paces its checks, a session has a few in flight.
MAX_TRANSACTIONS = 256
# Address caches (raw sockaddr <-> tuple) are cleared when this big: a peer spraying from many
# source ports costs a rebuild, never unbounded memory.
MAX_CACHED_ADDRESSES = 8192
# recvmmsg calls per readiness at most while they come back full: the socket carries every call's
# browser traffic, and one call per event-loop iteration (an iteration also runs every legacy socket's
# callbacks) would fall behind; 64 x 64 datagrams bounds the time the loop spends here.
MAX_ROUNDS = 64
# At most one log line per this many seconds about datagrams nobody owns.
DROP_LOG_INTERVAL = 60.0

_MAGIC_COOKIE = b"\x21\x12\xa4\x42"
_USERNAME = 0x0006
_STUN_ATTRIBUTE = struct.Struct("!HH")


class MuxOwner(Protocol):
    """What the mux hands datagrams to: the session's RFC 7983 demultiplexer."""

    def datagram_received(self, data: bytes, addr: Address) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...


def stun_local_ufrag(data: bytes | bytearray) -> str | None:
    """The recipient's ufrag of a STUN request's USERNAME (RFC 8445 §7.2.2: "theirs:ours" from the
    sender's side, so the part before the colon is the receiver's); None when there is none."""
    if len(data) < 20 or data[4:8] != _MAGIC_COOKIE:
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind, length = _STUN_ATTRIBUTE.unpack_from(data, pos)
        if kind == _USERNAME:
            if pos + 4 + length > end:
                return None
            try:
                username = bytes(data[pos + 4 : pos + 4 + length]).decode("utf-8")
            except UnicodeDecodeError:
                return None
            ours, colon, _ = username.partition(":")
            return ours if colon and ours else None
        pos += 4 + length + (-length & 3)  # RFC 8489 §14: values padded to 4 bytes
    return None


class _Keys:
    __slots__ = ("addresses", "transactions", "ufrags")

    def __init__(self) -> None:
        self.ufrags: set[str] = set()
        self.addresses: set[Address] = set()
        self.transactions: dict[bytes, float] = {}  # insertion order: oldest first


class DemuxTable:
    """Which session owns a datagram of the shared socket (sans-I/O; see the module docstring).

    Counters: ``unrouted`` (STUN or media nobody owns), ``garbage`` (neither STUN, DTLS nor RTP
    by RFC 7983 §7, or STUN too short to route), ``refused`` (an address claimed by a second session).
    """

    def __init__(self) -> None:
        self.ufrags: dict[str, MuxOwner] = {}
        # read by the socket glue on every media datagram: a plain dict lookup
        self.addresses: dict[Address, MuxOwner] = {}
        self.transactions: dict[bytes, tuple[MuxOwner, float]] = {}
        self._keys: dict[MuxOwner, _Keys] = {}
        self._next_purge = 0.0
        self.unrouted = 0
        self.garbage = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, owner: MuxOwner) -> None:
        self._keys.setdefault(owner, _Keys())

    def remove(self, owner: MuxOwner) -> None:
        """Forget every key of ``owner``."""
        keys = self._keys.pop(owner, None)
        if keys is None:
            return
        for ufrag in keys.ufrags:
            if self.ufrags.get(ufrag) is owner:
                del self.ufrags[ufrag]
        for addr in keys.addresses:
            if self.addresses.get(addr) is owner:
                del self.addresses[addr]
        for txid in keys.transactions:
            entry = self.transactions.get(txid)
            if entry is not None and entry[0] is owner:
                del self.transactions[txid]

    # -- keys -----------------------------------------------------------------------------------

    def add_ufrag(self, owner: MuxOwner, ufrag: str) -> bool:
        """False when another session has that ufrag (the caller picks another)."""
        holder = self.ufrags.get(ufrag)
        if holder is not None and holder is not owner:
            return False
        self.ufrags[ufrag] = owner
        self._keys.setdefault(owner, _Keys()).ufrags.add(ufrag)
        return True

    def remove_ufrag(self, owner: MuxOwner, ufrag: str) -> None:
        if self.ufrags.get(ufrag) is owner:
            del self.ufrags[ufrag]
        keys = self._keys.get(owner)
        if keys is not None:
            keys.ufrags.discard(ufrag)

    def claim_address(self, owner: MuxOwner, addr: Address) -> bool:
        """``addr``'s media goes to ``owner`` from now on, unless another session has it (refused)."""
        holder = self.addresses.get(addr)
        if holder is owner:
            return True
        if holder is not None:
            self.refused += 1
            return False
        keys = self._keys.get(owner)
        if keys is None:
            return False  # removed already: a late callback must not leave a key behind
        self.addresses[addr] = owner
        keys.addresses.add(addr)
        return True

    def release_address(self, owner: MuxOwner, addr: Address) -> None:
        if self.addresses.get(addr) is owner:
            del self.addresses[addr]
        keys = self._keys.get(owner)
        if keys is not None:
            keys.addresses.discard(addr)

    def expect_response(self, owner: MuxOwner, transaction_id: bytes, now: float) -> None:
        """``owner`` sent a STUN request: the response with that transaction ID is its."""
        keys = self._keys.get(owner)
        if keys is None:
            return
        if now >= self._next_purge:
            self._purge(now)
        expires = now + TRANSACTION_LIFETIME
        keys.transactions.pop(transaction_id, None)  # a retransmission: to the end of the order
        keys.transactions[transaction_id] = expires
        self.transactions[transaction_id] = (owner, expires)
        while len(keys.transactions) > MAX_TRANSACTIONS:
            oldest = next(iter(keys.transactions))
            del keys.transactions[oldest]
            entry = self.transactions.get(oldest)
            if entry is not None and entry[0] is owner:
                del self.transactions[oldest]

    def _purge(self, now: float) -> None:
        self._next_purge = now + TRANSACTION_LIFETIME / 4
        expired = [txid for txid, (_, expires) in self.transactions.items() if expires <= now]
        for txid in expired:
            owner, _ = self.transactions.pop(txid)
            keys = self._keys.get(owner)
            if keys is not None:
                keys.transactions.pop(txid, None)

    @property
    def routes(self) -> int:
        """Every key held (sessions, ufrags, addresses, transactions): 0 once no call is up."""
        return len(self._keys) + len(self.ufrags) + len(self.addresses) + len(self.transactions)

    def keys_of(self, owner: MuxOwner) -> tuple[set[str], set[Address], set[bytes]]:
        keys = self._keys.get(owner) or _Keys()
        return set(keys.ufrags), set(keys.addresses), set(keys.transactions)

    # -- routing --------------------------------------------------------------------------------

    def route_stun(self, data: bytes | bytearray, addr: Address, now: float) -> MuxOwner | None:
        """The owner of a STUN datagram (first byte 0..3), None if nobody (counted)."""
        if len(data) < 20:
            self.garbage += 1
            return None
        # RFC 8489 §5: class bits C1 (0x0100) and C0 (0x0010) of the message type
        c1, c0 = data[0] & 0x01, data[1] & 0x10
        owner: MuxOwner | None
        if not c1 and not c0:  # request
            ufrag = stun_local_ufrag(data)
            owner = self.ufrags.get(ufrag) if ufrag is not None else None
        elif c1:  # success or error response
            entry = self.transactions.get(bytes(data[8:20]))
            owner = entry[0] if entry is not None and entry[1] > now else None
        else:  # indication: only from an address already validated
            owner = self.addresses.get(addr)
        if owner is None:
            self.unrouted += 1
        return owner

    def route(self, data: bytes | bytearray, addr: Address, now: float) -> MuxOwner | None:
        """The owner of any datagram (RFC 7983 §7 first byte); the socket glue inlines the media case."""
        b = data[0] if data else 255
        if 19 < b < 64 or 127 < b < 192:  # DTLS, RTP/RTCP
            owner = self.addresses.get(addr)
            if owner is None:
                self.unrouted += 1
            return owner
        if b < 4:
            return self.route_stun(data, addr, now)
        self.garbage += 1
        return None


# -- the socket glue -------------------------------------------------------------------------------


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


class _SharedSocket:
    """One bound socket of the mux: its receive slots, its send batch and its address caches."""

    def __init__(self, mux: UdpMux, sock: socket.socket, batch: bool) -> None:
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
        self.sockets: list[_SharedSocket] = []
        self.port = 0
        self.batch = batch and _BATCH is not None
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
                socks = [_bind(host, candidate, buffer_size) for host in hosts]
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE and not port:
                    continue
                raise
            self.port = candidate
            if ports is not None and ports.low <= candidate <= ports.high:
                ports.reserve(candidate)
                self._ports = ports
            for sock in socks:
                shared = _SharedSocket(self, sock, self.batch)
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

    def socket_error(self, shared: _SharedSocket, exc: OSError) -> None:
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


def _bind(host: str, port: int, buffer_size: int | None) -> socket.socket:
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

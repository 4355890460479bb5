#!/usr/bin/env python3
"""Load generator of bench/relay.py: bridged G.711 calls, a browser and a phone per call.

Run by bench/relay.py (one or more processes pinned to the core the gateway does not use); it reads
JSON commands on stdin and answers one JSON line each on stdout. Per call it plays:

- the browser: a WebRTC offer (ICE, DTLS actpass, rtcp-mux, BUNDLE), a STUN check with USE-CANDIDATE
  toward the gateway's candidate, answers to the gateway's own checks (rtpengine is a full ICE agent),
  a DTLS client (rtc2sip.media.dtls), then SRTP (AES_CM_128_HMAC_SHA1_80, every WebRTC stack has it)
  and a consent check every 5 s (RFC 7675);
- the phone: a plain RTP/AVP answer.

Signalling goes straight to the gateway's control socket: rtpengine's NG protocol (bencoded dicts over
UDP), or the tiny JSON control server bench/relay.py runs around rtc2sip's MediaPlane. Both take the
same SDPs and the same offer/answer/delete moves.

Media: 172-byte PCMU packets (12-byte header, 160 bytes of payload) every 20 ms each way; the payload
carries the call, a sequence number and the send time (CLOCK_MONOTONIC, shared by every process of the
machine), so the receiving side measures one-way latency and counts, per direction, the packets whose
send time falls in the measurement window: loss = 1 - received / sent over exactly those packets.

All browsers of a process share one UDP socket and all phones another, so the generator drains two
sockets instead of polling thousands. A relay with a port per call tells the calls apart by its
ports; one with all browser legs on one port (rtc2sip's shared WebRTC socket) needs a source address
per browser, as real browsers have: each call's browser has a loopback address of its own,
127.1.x.y (x.y its index; Linux routes all of 127/8 to ``lo``), sent from with IP_PKTINFO on the
wildcard-bound browser socket and told apart on arrival by IP_PKTINFO's destination.

``--generator c`` (what bench/relay.py runs by default) keeps the call setup here and moves the media
of every set-up call to a C loop (bench/loadgen_c/loadgen.c, :class:`CGenerator`): the Python loop
costs about as much per packet as the relays it loads, so it could not show one above ~700 calls.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import secrets
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aioice import stun

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.dtls import DtlsEndpoint, DtlsRole, DtlsState, SrtpKeys
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpError, SrtpSession

Address = tuple[str, int]

PTIME_NS = 20_000_000
SLOTS = 20  # calls spread over 20 one-millisecond slots of each 20 ms period
SLOT_NS = PTIME_NS // SLOTS
PAYLOAD_SIZE = 160  # 20 ms of PCMU at 8 kHz
RTP = struct.Struct("!BBHII")
MARK = struct.Struct("!IIq")  # call index, sequence, send time (ns)
BIN_NS = 10_000  # latency histogram: 10 µs bins
BINS = 100_000  # up to 1 s
CONSENT_PERIOD = 5.0
PUMP_SLICE_NS = 5_000_000  # media loop slice between two turns of asyncio
SOCKET_BUFFER = 8 * 1024 * 1024
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # Linux; the socket module does not export them
SETUP_TIMEOUT = 20.0
CONTROL_TIMEOUT = 10.0

CERT = Certificate.generate("loadgen-browser")


# -- signalling ------------------------------------------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, bool):
        return b"i%de" % int(value)
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    def parse(i: int) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"l", b"d"):
            items: list[Any] = []
            i += 1
            while data[i : i + 1] != b"e":
                item, i = parse(i)
                items.append(item)
            if c == b"l":
                return items, i + 1
            return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
        colon = data.index(b":", i)
        size = int(data[i:colon])
        return data[colon + 1 : colon + 1 + size], colon + 1 + size

    return parse(0)[0]


class _Control(asyncio.DatagramProtocol):
    """Request/response over UDP, matched by a cookie; no retries (a repeated offer would be a new call)."""

    def __init__(self, address: Address, encode: Callable[[str, dict[str, Any]], bytes],
                 decode: Callable[[bytes], tuple[str, dict[str, Any]]]) -> None:
        self.address = address
        self.encode, self.decode = encode, decode
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.counter = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        cookie, reply = self.decode(data)
        future = self.waiting.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.transport is not None
        self.counter += 1
        cookie = f"{os.getpid()}-{self.counter}"
        future = asyncio.get_running_loop().create_future()
        self.waiting[cookie] = future
        self.transport.sendto(self.encode(cookie, message), self.address)
        try:
            return await asyncio.wait_for(future, CONTROL_TIMEOUT)
        finally:
            self.waiting.pop(cookie, None)


class Rtc2sipControl:
    """The JSON control server bench/relay.py wraps around rtc2sip's MediaPlane."""

    def __init__(self, protocol: _Control) -> None:
        self.p = protocol

    @staticmethod
    def make(address: Address) -> _Control:
        def encode(cookie: str, message: dict[str, Any]) -> bytes:
            return json.dumps({"id": cookie, **message}).encode()

        def decode(data: bytes) -> tuple[str, dict[str, Any]]:
            reply = json.loads(data)
            return reply.pop("id"), reply

        return _Control(address, encode, decode)

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        reply = await self.p.request(message)
        if not reply.get("ok"):
            raise RuntimeError(f"rtc2sip {message['op']}: {reply.get('error')}")
        return reply

    async def offer(self, call: Call, sdp: str) -> str:
        reply = await self._call({"op": "offer", "call_id": call.call_id, "sdp": sdp})
        call.session = reply["session"]
        return str(reply["sdp"])

    async def answer(self, call: Call, sdp: str) -> str:
        return str((await self._call({"op": "answer", "session": call.session, "sdp": sdp}))["sdp"])

    async def delete(self, call: Call) -> None:
        if call.session is not None:
            await self._call({"op": "delete", "session": call.session})


class RtpengineControl:
    """rtpengine's NG protocol: the offer goes to the phone as plain RTP/AVP without ICE and with
    RTCP demultiplexed; the answer goes back to the browser with ICE forced, rtpengine as the DTLS
    server (a=setup:passive, as rtc2sip answers) and rtcp-mux required (Kamailio's usual WebRTC flags)."""

    extra_offer: dict[str, Any] = {}  # more NG keys for the offer (bench/coder.py: codec transcode/mask)

    def __init__(self, protocol: _Control) -> None:
        self.p = protocol

    @staticmethod
    def make(address: Address) -> _Control:
        def encode(cookie: str, message: dict[str, Any]) -> bytes:
            return cookie.encode() + b" " + bencode(message)

        def decode(data: bytes) -> tuple[str, dict[str, Any]]:
            cookie, _, body = data.partition(b" ")
            return cookie.decode(), bdecode(body)

        return _Control(address, encode, decode)

    async def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        reply = await self.p.request(message)
        if reply.get("result") != b"ok":
            raise RuntimeError(f"rtpengine {message['command']}: {reply}")
        return reply

    async def offer(self, call: Call, sdp: str) -> str:
        reply = await self._call({
            "command": "offer", "call-id": call.call_id, "from-tag": f"b{call.index}", "sdp": sdp,
            "transport-protocol": "RTP/AVP", "ICE": "remove", "DTLS": "off", "rtcp-mux": ["demux"],
            "SDES": ["off"], "replace": ["origin", "session-connection"], **self.extra_offer,
        })
        return bytes(reply["sdp"]).decode()

    async def answer(self, call: Call, sdp: str) -> str:
        reply = await self._call({
            "command": "answer", "call-id": call.call_id, "from-tag": f"b{call.index}",
            "to-tag": f"p{call.index}", "sdp": sdp, "transport-protocol": "UDP/TLS/RTP/SAVPF",
            "ICE": "force", "DTLS": "passive", "rtcp-mux": ["require"],
            "replace": ["origin", "session-connection"],
        })
        return bytes(reply["sdp"]).decode()

    async def delete(self, call: Call) -> None:
        await self._call({"command": "delete", "call-id": call.call_id, "from-tag": f"b{call.index}"})


# -- calls ---------------------------------------------------------------------------------------------


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; the socket module has it from 3.12


def local_ip(index: int) -> str:
    """The browser address of call ``index`` (see the module docstring): its key is x.y."""
    return f"127.1.{(index >> 8) & 0xFF}.{index & 0xFF}"


def _pktinfo(ip: str) -> list[tuple[int, int, bytes]]:
    """sendmsg's ancillary data for sending from ``ip`` (struct in_pktinfo: ifindex, spec_dst, addr)."""
    return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, socket.inet_aton(ip), bytes(4)))]


def _local_key(ancdata: list[tuple[int, int, bytes]]) -> int:
    """x.y of the 127.1.x.y a datagram was sent to (its IP_PKTINFO), -1 if another address."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and data[8:10] == b"\x7f\x01":
            return int.from_bytes(data[10:12], "big")
    return -1


class Call:
    __slots__ = (
        "b_seq", "b_ssrc", "call_id", "connected", "dtls", "gw_browser", "gw_phone", "gw_pwd",
        "gw_ufrag", "index", "ip", "key", "p_seq", "p_ssrc", "pktinfo", "pwd", "rx", "session", "tx", "ufrag",
    )

    def __init__(self, index: int) -> None:
        if index >= 65536:
            raise RuntimeError("at most 65536 calls per generator process (127.1.x.y)")
        self.index = index
        self.ip = local_ip(index)
        self.key = index
        self.pktinfo = _pktinfo(self.ip)
        self.call_id = f"bench-{os.getpid()}-{index}-{secrets.token_hex(4)}"
        self.ufrag = f"b{os.getpid() % 10000}x{index}"
        self.pwd = secrets.token_hex(12)
        self.b_ssrc = secrets.randbits(32)
        self.p_ssrc = secrets.randbits(32)
        self.b_seq = secrets.randbits(15)
        self.p_seq = secrets.randbits(15)
        self.session: str | None = None
        self.gw_browser: Address | None = None
        self.gw_phone: Address | None = None
        self.gw_ufrag = ""
        self.gw_pwd = ""
        self.dtls: DtlsEndpoint | None = None
        self.tx: SrtpSession | None = None
        self.rx: SrtpSession | None = None
        self.connected: asyncio.Future[None] | None = None


def browser_offer(call: Call, port: int) -> str:
    ip = call.ip
    return (
        f"v=0\r\no=- {call.b_ssrc} 2 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "a=msid-semantic: WMS *\r\n"
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 {ip}\r\na=rtcp:{port} IN IP4 {ip}\r\n"
        f"a=candidate:1 1 udp 2113937151 {ip} {port} typ host\r\n"
        f"a=ice-ufrag:{call.ufrag}\r\na=ice-pwd:{call.pwd}\r\n"
        f"a=fingerprint:{CERT.sdp_fingerprint}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
        f"a=rtpmap:0 PCMU/8000\r\na=ssrc:{call.b_ssrc} cname:loadgen{call.index}\r\n"
    )


def phone_answer(call: Call, port: int) -> str:
    return (
        f"v=0\r\no=- {call.p_ssrc} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def _media_address(sdp: str) -> Address:
    m = re.search(r"^m=audio (\d+) ", sdp, re.M)
    c = re.findall(r"^c=IN IP[46] (\S+)", sdp, re.M)
    if m is None or not c:
        raise ValueError(f"no audio address in SDP:\n{sdp}")
    return c[-1], int(m.group(1))


def _attribute(sdp: str, name: str) -> str:
    m = re.search(rf"^a={name}:(.+?)\r?$", sdp, re.M)
    if m is None:
        raise ValueError(f"no a={name} in SDP:\n{sdp}")
    return m.group(1).strip()


def _candidate(sdp: str) -> Address:
    for m in re.finditer(r"^a=candidate:\S+ 1 (?:udp|UDP) \d+ (\S+) (\d+) typ host", sdp, re.M):
        if ":" not in m.group(1):
            return m.group(1), int(m.group(2))
    return _media_address(sdp)


# -- the generator -------------------------------------------------------------------------------------


class Direction:
    """Counters of one direction over the measurement window."""

    __slots__ = ("hist", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.hist = [0] * BINS

    def report(self) -> dict[str, Any]:
        return {"sent": self.sent, "received": self.received,
                "hist": {i: n for i, n in enumerate(self.hist) if n}}


class Generator:
    """The media of every call of one process. bench/coder.py subclasses it (other SDPs and payloads)
    through :attr:`call_factory`, :meth:`browser_offer` and :meth:`phone_answer`."""

    call_factory: Callable[[int], Call] = Call

    def __init__(self, control: Rtc2sipControl | RtpengineControl, concurrency: int) -> None:
        self.control = control
        self.concurrency = concurrency
        self.loop = asyncio.get_running_loop()
        self.browser = self._socket("0.0.0.0")  # every call's 127.1.x.y reaches it
        self.browser.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        self.phone = self._socket()
        self.browser_port = self.browser.getsockname()[1]
        self.phone_port = self.phone.getsockname()[1]
        self.calls: list[Call] = []
        self.by_key: dict[int, Call] = {}  # the local key (see the module docstring)
        self.by_ufrag: dict[str, Call] = {}
        self.slots: list[list[Call]] = [[] for _ in range(SLOTS)]
        self.stun_waiting: dict[bytes, asyncio.Future[stun.Message]] = {}
        self.window = (0, 0)
        self.b2p = Direction()
        self.p2b = Direction()
        self.srtp_errors = 0
        self.send_errors = 0
        self.late_slots = 0
        self.max_late_ns = 0
        self.failed = 0
        self.next_index = 0
        self.running = True
        self.tasks = self._start_media()

    def _start_media(self) -> list[asyncio.Task[None]]:
        return [self.loop.create_task(self._pump()), self.loop.create_task(self._consent())]

    @staticmethod
    def _socket(host: str = "127.0.0.1") -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for force, option in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)  # past net.core.*mem_max (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        sock.bind((host, 0))
        sock.setblocking(False)
        return sock

    def _bsend(self, call: Call, data: bytes, addr: Address) -> None:
        """A datagram of ``call``'s browser, from its own address."""
        self.browser.sendmsg([data], call.pktinfo, 0, addr)

    # -- receive paths (drain the socket on each wakeup) ---------------------------------------------

    def _browser_readable(self) -> None:
        recv = self.browser.recvmsg
        by_key = self.by_key
        unpack = MARK.unpack_from
        clock = time.monotonic_ns
        ws, we = self.window
        d = self.p2b
        hist = d.hist
        while True:
            try:
                data, ancdata, _, addr = recv(2048, 64)
            except BlockingIOError:
                return
            key = _local_key(ancdata)
            b0 = data[0]
            if 127 < b0 < 192:
                if 191 < data[1] < 224:
                    continue  # the gateway's RTCP
                call = by_key.get(key)
                if call is None or call.rx is None:
                    continue
                try:
                    plain = call.rx.unprotect(data)
                except SrtpError:
                    self.srtp_errors += 1
                    continue
                _, _, sent = unpack(plain, 12)
                if ws <= sent < we:
                    d.received += 1
                    hist[min((clock() - sent) // BIN_NS, BINS - 1)] += 1
            elif b0 < 4:
                self._stun(data, addr)
            elif 19 < b0 < 64:
                call = by_key.get(key)
                if call is not None and call.dtls is not None:
                    call.dtls.feed(data)
                    self._flush_dtls(call)

    def _phone_readable(self) -> None:
        recv = self.phone.recv
        unpack = MARK.unpack_from
        clock = time.monotonic_ns
        ws, we = self.window
        d = self.b2p
        hist = d.hist
        while True:
            try:
                data = recv(2048)
            except BlockingIOError:
                return
            if len(data) < 28 or 191 < data[1] < 224:
                continue
            _, _, sent = unpack(data, 12)
            if ws <= sent < we:
                d.received += 1
                hist[min((clock() - sent) // BIN_NS, BINS - 1)] += 1

    # -- send path ---------------------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The media loop: sends each 1 ms slot's packets on time and drains both sockets, in slices
        of :data:`PUMP_SLICE` between which asyncio runs the setup and command tasks. Its own epoll
        rather than a timer and reader callbacks per wakeup: uvloop's per-iteration work was 40 % of
        the generator's CPU, more than the relay's under test."""
        poller = select.epoll()
        browser_fd, phone_fd = self.browser.fileno(), self.phone.fileno()
        poller.register(browser_fd, select.EPOLLIN)
        poller.register(phone_fd, select.EPOLLIN)
        buf = bytearray(12 + PAYLOAD_SIZE)
        buf[12:] = b"\xff" * PAYLOAD_SIZE  # PCMU silence
        rtp_pack = RTP.pack_into
        mark_pack = MARK.pack_into
        clock = time.monotonic_ns
        bsend = self.browser.sendmsg
        psend = self.phone.sendto
        browser_readable, phone_readable = self._browser_readable, self._phone_readable
        slots = self.slots
        due = clock()
        k = 0
        try:
            while self.running:
                now = clock()
                slice_end = now + PUMP_SLICE_NS
                while now < slice_end:
                    if due <= now:
                        late = now - due
                        if late > SLOT_NS:
                            self.late_slots += 1
                            if late > self.max_late_ns:
                                self.max_late_ns = late
                        ws, we = self.window
                        b2p, p2b = self.b2p, self.p2b
                        for call in slots[k % SLOTS]:
                            tx = call.tx
                            if tx is None or call.gw_browser is None or call.gw_phone is None:
                                continue
                            t = clock()  # one send time for both packets, the receivers' window test
                            seq = call.b_seq = (call.b_seq + 1) & 0xFFFF
                            rtp_pack(buf, 0, 0x80, 0, seq, seq * 160, call.b_ssrc)
                            mark_pack(buf, 12, call.index, seq, t)
                            try:
                                bsend([tx.protect(bytes(buf))], call.pktinfo, 0, call.gw_browser)
                            except BlockingIOError:
                                self.send_errors += 1  # counted as sent, hence lost: shown in the notes
                            seq = call.p_seq = (call.p_seq + 1) & 0xFFFF
                            rtp_pack(buf, 0, 0x80, 0, seq, seq * 160, call.p_ssrc)
                            mark_pack(buf, 12, call.index, seq, t)
                            try:
                                psend(buf, call.gw_phone)
                            except BlockingIOError:
                                self.send_errors += 1
                            if ws <= t < we:
                                b2p.sent += 1
                                p2b.sent += 1
                        k += 1
                        due += SLOT_NS
                    else:
                        for fd, _ in poller.poll((min(due, slice_end) - now) / 1e9):
                            if fd == browser_fd:
                                browser_readable()
                            else:
                                phone_readable()
                    now = clock()
                await asyncio.sleep(0)
        finally:
            poller.close()

    async def _consent(self) -> None:
        """RFC 7675: a check every 5 s per call, spread over the period."""
        part = 0
        while self.running:
            await asyncio.sleep(CONSENT_PERIOD / 5)
            for call in self.calls[part::5]:
                if call.tx is not None and call.gw_browser is not None:
                    self._bsend(call, self._check(call, use_candidate=False), call.gw_browser)
            part = (part + 1) % 5

    # -- ICE ---------------------------------------------------------------------------------------------

    def _check(self, call: Call, use_candidate: bool) -> bytes:
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{call.gw_ufrag}:{call.ufrag}"
        request.attributes["PRIORITY"] = 2113937151
        request.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(call.gw_pwd.encode())
        if use_candidate:
            self.stun_waiting[request.transaction_id] = self.loop.create_future()
        return bytes(request)

    def _stun(self, data: bytes, addr: Address) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.message_class == stun.Class.REQUEST and message.message_method == stun.Method.BINDING:
            # The gateway's own check (rtpengine is a full ICE agent): answer as the browser would.
            username = str(message.attributes.get("USERNAME", ""))
            call = self.by_ufrag.get(username.partition(":")[0])
            if call is None:
                return
            response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                                    transaction_id=message.transaction_id,
                                    attributes={"XOR-MAPPED-ADDRESS": addr})
            response.add_message_integrity(call.pwd.encode())
            self._bsend(call, bytes(response), addr)
            return
        future = self.stun_waiting.pop(message.transaction_id, None)
        if future is not None and not future.done():
            future.set_result(message)

    # -- DTLS ----------------------------------------------------------------------------------------------

    def _flush_dtls(self, call: Call) -> None:
        dtls = call.dtls
        assert dtls is not None and call.gw_browser is not None
        for datagram in dtls.datagrams_to_send():
            self._bsend(call, datagram, call.gw_browser)
        if dtls.state is DtlsState.CONNECTED and call.tx is None and dtls.srtp_keys is not None:
            call.tx = dtls.srtp_keys.tx_session()
            call.rx = dtls.srtp_keys.rx_session()
            if call.connected is not None and not call.connected.done():
                call.connected.set_result(None)
        elif dtls.state is DtlsState.FAILED and call.connected is not None and not call.connected.done():
            call.connected.set_exception(RuntimeError(f"DTLS failed: {dtls.error}"))

    # -- call setup ------------------------------------------------------------------------------------

    def browser_offer(self, call: Call) -> str:
        return browser_offer(call, self.browser_port)

    def phone_answer(self, call: Call, legacy_offer: str) -> str:
        return phone_answer(call, self.phone_port)

    async def _setup(self, call: Call) -> None:
        legacy_offer = await self.control.offer(call, self.browser_offer(call))
        call.gw_phone = _media_address(legacy_offer)
        answer = await self.control.answer(call, self.phone_answer(call, legacy_offer))
        call.gw_browser = _candidate(answer)
        call.gw_ufrag, call.gw_pwd = _attribute(answer, "ice-ufrag"), _attribute(answer, "ice-pwd")
        fingerprint = _attribute(answer, "fingerprint")
        if _attribute(answer, "setup") != "passive":
            raise RuntimeError("the gateway did not answer a=setup:passive")
        self.by_key[call.key] = call
        self.by_ufrag[call.ufrag] = call
        deadline = self.loop.time() + SETUP_TIMEOUT
        # ICE: the browser (controlling) checks with USE-CANDIDATE until a response comes back.
        while True:
            request = self._check(call, use_candidate=True)
            txid = request[8:20]
            self._bsend(call, request, call.gw_browser)
            try:
                response = await asyncio.wait_for(self.stun_waiting[txid], 0.2)
            except TimeoutError:
                self.stun_waiting.pop(txid, None)
                if self.loop.time() > deadline:
                    raise RuntimeError("no answer to the ICE check") from None
                continue
            if response.message_class != stun.Class.RESPONSE:
                raise RuntimeError(f"ICE check refused: {response.attributes.get('ERROR-CODE')}")
            break
        # DTLS client (the gateway answered passive), retransmitting on OpenSSL's timer.
        call.connected = self.loop.create_future()
        call.dtls = DtlsEndpoint(CERT, DtlsRole.CLIENT, [fingerprint], srtp_profiles=(AES128_CM_SHA1_80,))
        call.dtls.start()
        self._flush_dtls(call)
        while not call.connected.done():
            now = time.monotonic()
            due = call.dtls.next_timeout(now)
            wait = 0.05 if due is None else min(0.25, max(0.01, due - now))
            try:
                await asyncio.wait_for(asyncio.shield(call.connected), wait)
            except TimeoutError:
                if self.loop.time() > deadline:
                    raise RuntimeError("DTLS did not connect") from None
                call.dtls.handle_timeout(time.monotonic())
                self._flush_dtls(call)
        await call.connected
        keys = call.dtls.srtp_keys
        assert keys is not None
        call.dtls = None  # no more DTLS after the handshake: its memory goes with it
        self._media_ready(call, keys)

    def _media_ready(self, call: Call, keys: SrtpKeys) -> None:
        """The call is set up: its media starts."""
        # Join the sending slot with the fewest calls so the 20 slots stay even.
        min(self.slots, key=len).append(call)

    async def grow(self, target: int) -> dict[str, Any]:
        started = time.monotonic()
        semaphore = asyncio.Semaphore(self.concurrency)
        errors: list[str] = []

        async def one() -> None:
            async with semaphore:
                call = self.call_factory(self.next_index)
                self.next_index += 1
                try:
                    await self._setup(call)
                except Exception as exc:
                    self.failed += 1
                    errors.append(f"{type(exc).__name__}: {exc}")
                    self.by_key.pop(call.key, None)
                    self.by_ufrag.pop(call.ufrag, None)
                    try:
                        await self.control.delete(call)
                    except Exception:
                        pass
                    return
                self.calls.append(call)

        await asyncio.gather(*(one() for _ in range(max(0, target - len(self.calls)))))
        return {"calls": len(self.calls), "failed": self.failed, "setup_s": time.monotonic() - started,
                "errors": errors[:3]}

    def start_window(self, start_ns: int, end_ns: int) -> None:
        self.b2p, self.p2b = Direction(), Direction()
        self.late_slots = 0
        self.max_late_ns = 0
        self.srtp_errors = 0
        self.send_errors = 0
        self.window = (start_ns, end_ns)

    def report(self) -> dict[str, Any]:
        return {"b2p": self.b2p.report(), "p2b": self.p2b.report(), "late_slots": self.late_slots,
                "max_late_ms": self.max_late_ns / 1e6, "srtp_errors": self.srtp_errors,
                "send_errors": self.send_errors, "calls": len(self.calls)}

    async def stop(self) -> dict[str, Any]:
        self.running = False
        for task in self.tasks:
            task.cancel()
        deleted = 0
        for start in range(0, len(self.calls), 50):
            results = await asyncio.gather(*(self.control.delete(c) for c in self.calls[start:start + 50]),
                                           return_exceptions=True)
            deleted += sum(1 for r in results if not isinstance(r, BaseException))
        self.browser.close()
        self.phone.close()
        return {"deleted": deleted}


C_LIBRARY = Path(__file__).resolve().parent / "loadgen_c" / "build" / "libloadgen.so"


class _CReport(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "sent_b2p", "received_b2p", "sent_p2b", "received_p2b", "late_slots", "max_late_ns", "srtp_errors",
        "send_errors", "calls", "consent_sent", "consent_ok", "consent_error", "checks_answered", "forwarded",
        "forward_dropped")]


def load_c_library(path: Path = C_LIBRARY) -> ctypes.CDLL:
    """bench/loadgen_c/loadgen.c, built by bench/loadgen_c/build.sh (bench/relay.py runs it)."""
    lib = ctypes.CDLL(str(path))
    p, i, u32, s, buf = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_char_p
    lib.lg_create.restype = p
    lib.lg_create.argtypes = [i, i, i]
    lib.lg_add_call.restype = i
    lib.lg_add_call.argtypes = [p, u32, s, i, s, i, u32, u32, i, i, buf, buf, s, s, s, s, s]
    lib.lg_run.restype = i
    lib.lg_run.argtypes = [p]
    lib.lg_stop.restype = None
    lib.lg_stop.argtypes = [p]
    lib.lg_window.restype = None
    lib.lg_window.argtypes = [p, ctypes.c_int64, ctypes.c_int64]
    lib.lg_report.restype = None
    lib.lg_report.argtypes = [p, ctypes.POINTER(_CReport), ctypes.c_void_p, ctypes.c_void_p]
    lib.lg_bins.restype = i
    lib.lg_init.restype = i
    lib.lg_init.argtypes = [s]
    lib.lg_destroy.restype = None
    lib.lg_destroy.argtypes = [p]
    if lib.lg_bins() != BINS:
        raise RuntimeError("bench/loadgen_c is out of date: rebuild it (bench/loadgen_c/build.sh)")
    if lib.lg_init(srtp_library().encode()) != 0:
        raise RuntimeError(f"bench/loadgen_c could not open libsrtp2 from {srtp_library()}")
    return lib


def srtp_library() -> str:
    """The libsrtp2 the C loop uses: pylibsrtp's (OpenSSL inside, what rtc2sip runs), unless
    LOADGEN_SRTP_LIBRARY names another (e.g. Debian's libsrtp2.so.1, built on NSS: much slower)."""
    import importlib.util

    spec = importlib.util.find_spec("pylibsrtp._binding")
    if spec is None or spec.origin is None:
        raise RuntimeError("pylibsrtp's compiled binding not found")
    return os.environ.get("LOADGEN_SRTP_LIBRARY") or spec.origin


class CGenerator(Generator):
    """The same calls with the media loop in C (bench/loadgen_c/loadgen.c), in a thread of its own:
    ctypes drops the GIL for the whole of ``lg_run``. Python still sets every call up (offer/answer,
    ICE check with USE-CANDIDATE, DTLS, key export) and then hands it over with its sockets' peers,
    SSRCs, sequence numbers, SRTP master keys and ICE credentials. The C loop owns both sockets' reads
    from the start; what is not media it cannot handle (DTLS, STUN of calls still being set up) comes
    back here over a socketpair, source address first."""

    def _start_media(self) -> list[asyncio.Task[None]]:
        self.lib = load_c_library()
        self.forward_c, self.forward_py = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (self.forward_c, self.forward_py):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.forward_py.setblocking(False)
        self.handle = self.lib.lg_create(self.browser.fileno(), self.phone.fileno(), self.forward_c.fileno())
        if not self.handle:
            raise RuntimeError("lg_create failed (srtp_init?)")
        self.thread = threading.Thread(target=self.lib.lg_run, args=(self.handle,), name="loadgen-c", daemon=True)
        self.thread.start()
        self.loop.add_reader(self.forward_py.fileno(), self._forwarded)
        self.c_calls = 0
        return []

    def _forwarded(self) -> None:
        while True:
            try:
                data = self.forward_py.recv(4096)
            except BlockingIOError:
                return
            addr = (socket.inet_ntoa(data[:4]), int.from_bytes(data[4:6], "big"))
            key = int.from_bytes(data[6:8], "big")
            data = data[8:]
            if not data:
                continue
            b0 = data[0]
            if b0 < 4:
                self._stun(data, addr)
            elif 19 < b0 < 64:
                call = self.by_key.get(key)
                if call is not None and call.dtls is not None:
                    call.dtls.feed(data)
                    self._flush_dtls(call)

    def _media_ready(self, call: Call, keys: SrtpKeys) -> None:
        if keys.profile is not AES128_CM_SHA1_80:
            raise RuntimeError(f"the C generator does AES_CM_128_HMAC_SHA1_80 only, not {keys.profile}")
        assert call.gw_browser is not None and call.gw_phone is not None
        rc = self.lib.lg_add_call(
            self.handle, call.index, call.gw_browser[0].encode(), call.gw_browser[1], call.gw_phone[0].encode(),
            call.gw_phone[1], call.b_ssrc, call.p_ssrc, call.b_seq, call.p_seq, keys.local_key_salt,
            keys.remote_key_salt, call.ufrag.encode(), call.pwd.encode(), call.gw_ufrag.encode(),
            call.gw_pwd.encode(), call.ip.encode())
        if rc != 0:
            raise RuntimeError("lg_add_call failed")
        call.tx = call.rx = None  # the C loop has its own libsrtp sessions
        self.c_calls += 1

    def start_window(self, start_ns: int, end_ns: int) -> None:
        self.lib.lg_window(self.handle, start_ns, end_ns)

    def report(self) -> dict[str, Any]:
        r = _CReport()
        b2p = (ctypes.c_uint32 * BINS)()
        p2b = (ctypes.c_uint32 * BINS)()
        self.lib.lg_report(self.handle, ctypes.byref(r), b2p, p2b)

        def hist(h: ctypes.Array[ctypes.c_uint32]) -> dict[int, int]:
            return {i: n for i, n in enumerate(h) if n}

        return {"b2p": {"sent": r.sent_b2p, "received": r.received_b2p, "hist": hist(b2p)},
                "p2b": {"sent": r.sent_p2b, "received": r.received_p2b, "hist": hist(p2b)},
                "late_slots": r.late_slots, "max_late_ms": r.max_late_ns / 1e6, "srtp_errors": r.srtp_errors,
                "send_errors": r.send_errors, "calls": len(self.calls),
                "consent": {"sent": r.consent_sent, "ok": r.consent_ok, "error": r.consent_error},
                "checks_answered": r.checks_answered, "forwarded": r.forwarded,
                "forward_dropped": r.forward_dropped}

    async def stop(self) -> dict[str, Any]:
        if self.handle:
            self.lib.lg_stop(self.handle)
            self.thread.join(10)
            self.loop.remove_reader(self.forward_py.fileno())
            if not self.thread.is_alive():
                self.lib.lg_destroy(self.handle)
            self.handle = None
            self.forward_c.close()
            self.forward_py.close()
        return await super().stop()


async def main(argv: list[str] | None = None, generator_class: type[Generator] = Generator,
               rtpengine_control: type[RtpengineControl] = RtpengineControl) -> None:
    """The command loop on stdin/stdout; bench/coder.py runs it with its own generator and NG flags."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", choices=("rtc2sip", "rtpengine"), required=True)
    parser.add_argument("--control", required=True, help="host:port of the gateway's control socket")
    parser.add_argument("--concurrency", type=int, default=20, help="call setups in flight")
    parser.add_argument("--generator", choices=("c", "python"), default="python",
                        help="media loop: c (bench/loadgen_c, built beforehand) or python")
    args = parser.parse_args(argv)
    if args.generator == "c":
        if generator_class is not Generator:
            parser.error("--generator c is the plain relay generator only")
        generator_class = CGenerator
    host, _, port = args.control.rpartition(":")
    loop = asyncio.get_running_loop()
    kind: type[Rtc2sipControl | RtpengineControl] = Rtc2sipControl if args.gateway == "rtc2sip" else rtpengine_control
    _, protocol = await loop.create_datagram_endpoint(lambda: kind.make((host, int(port))),
                                                      local_addr=("127.0.0.1", 0))
    generator = generator_class(kind(protocol), args.concurrency)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True})
    while True:
        line = await reader.readline()
        if not line:
            await generator.stop()
            return
        command = json.loads(line)
        op = command["cmd"]
        if op == "grow":
            reply(await generator.grow(int(command["calls"])))
        elif op == "window":
            generator.start_window(int(command["start_ns"]), int(command["end_ns"]))
            reply({"ok": True})
        elif op == "report":
            reply(generator.report())
        elif op == "stop":
            reply(await generator.stop())
            return


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())

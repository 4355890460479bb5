"""The media side of the services' calls: a socket pair per accepted stream and the SDP answer.

RFC 3264 offer/answer for plain RTP (RTP/AVP, RTP/AVPF): one answer m= line per offered one, in
place (§6, and §8 for re-offers), ours on a local RTP/RTCP socket pair (RFC 3605 a=rtcp, RFC 5761
rtcp-mux) with the first real codec and telephone-event at its rate (RFC 4733). A :class:`Stream`
counts what arrives and may reflect RTP to its source (under another SSRC, RFC 3550 §8.2).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..media.ports import PortAllocator, bind_udp
from ..sdp import Codec, Media, SdpError, SessionDescription

__all__ = ["Address", "Stream", "answer_sdp", "attach", "open_streams"]

Address = tuple[str, int]
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec-03"})
_PLAIN_RTP = frozenset({"RTP/AVP", "RTP/AVPF"})
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


@dataclass(eq=False)
class Stream(asyncio.DatagramProtocol):
    """One accepted m= line: an RTP socket and an RTCP one (unless rtcp-mux), what arrived where."""

    kind: str
    offer: Media
    announced: Address | None  # the caller's c=/m= address for RTP (None: 0.0.0.0, port 0)
    announced_rtcp: Address | None  # a=rtcp, else port + 1; the RTP address with rtcp-mux
    mux: bool
    reflect: bool
    rtp_port: int = 0
    rtcp_port: int = 0
    packets: int = 0
    rtcp_packets: int = 0
    sources: Counter[Address] = field(default_factory=Counter)  # RTP packets by source address
    rtcp_sources: Counter[Address] = field(default_factory=Counter)
    first_at: float | None = None  # monotonic time of the first RTP packet
    payload_types: Counter[int] = field(default_factory=Counter)
    on_first: Callable[[Stream], None] | None = None
    on_rtcp: Callable[[Stream, bytes], None] | None = None  # every RTCP packet (a service's PLI/FIR)
    rtp: asyncio.DatagramTransport | None = None
    rtcp: asyncio.DatagramTransport | None = None
    index: int = 0  # of its m= line in the offer
    sockets: tuple[socket.socket, socket.socket] | None = None  # bound, until attached to the loop

    def datagram_received(self, data: bytes, addr: Any) -> None:
        source: Address = (addr[0], addr[1])
        if len(data) < 12 or not 127 < data[0] < 192:
            return  # not RTP version 2 (STUN, garbage)
        if 191 < data[1] < 224:  # RFC 5761 §4: RTCP on the RTP port
            self._rtcp(source, data)
            return
        self.packets += 1
        self.sources[source] += 1
        self.payload_types[data[1] & 0x7F] += 1
        if self.first_at is None:
            self.first_at = time.monotonic()
            if self.on_first is not None:
                self.on_first(self)
        if self.reflect and self.rtp is not None:
            # RFC 3550 §8.2: a packet under the receiver's own SSRC is a collision; send it back under
            # another one (everything else as it came: the media plane renumbers anyway)
            out = bytearray(data)
            out[8:12] = bytes(b ^ 0x5A for b in out[8:12])
            self.rtp.sendto(bytes(out), source)

    def _rtcp(self, source: Address, data: bytes) -> None:
        self.rtcp_packets += 1
        self.rtcp_sources[source] += 1
        if self.on_rtcp is not None:
            self.on_rtcp(self, data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a peer that stopped listening: nothing to do

    def close(self) -> None:
        for t in (self.rtp, self.rtcp):
            if t is not None:
                t.close()
        self.rtp = self.rtcp = None
        for sock in self.sockets or ():
            sock.close()  # never attached to the loop
        self.sockets = None


class _Rtcp(asyncio.DatagramProtocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 8 and 127 < data[0] < 192:
            self.stream._rtcp((addr[0], addr[1]), data)

    def error_received(self, exc: Exception) -> None:
        pass


async def attach(streams: list[Stream]) -> None:
    """Attach the streams' bound sockets to the running loop (once)."""
    loop = asyncio.get_running_loop()
    for s in streams:
        if s.sockets is None:
            continue
        rtp_sock, rtcp_sock = s.sockets
        s.sockets = None
        t, _ = await loop.create_datagram_endpoint(lambda s=s: s, sock=rtp_sock)  # type: ignore[misc]
        s.rtp = t
        t2, _ = await loop.create_datagram_endpoint(lambda s=s: _Rtcp(s), sock=rtcp_sock)  # type: ignore[misc]
        s.rtcp = t2


def open_streams(offer: SessionDescription, reflect: bool, media_host: str, ports: PortAllocator | None,
                 existing: list[Stream] | None = None) -> list[Stream]:
    """A socket pair per plain-RTP audio/video m= line (SRTP and others are refused: a browser
    comes through the breaker, which offers plain RTP here), except those ``existing`` streams hold
    already (a re-offer); on ``media_host``, from ``ports`` when given. Raises SdpError when none is
    left."""
    streams: list[Stream] = []
    held = {(s.index, s.kind) for s in existing or ()}
    try:
        for index, m in enumerate(offer.media):
            if m.rejected or m.kind not in ("audio", "video") or m.proto.upper() not in _PLAIN_RTP:
                continue
            if (index, m.kind) in held:
                continue
            conn = m.connection
            host = conn.host if conn is not None else ""
            announced = (host, m.port) if host and host not in ("0.0.0.0", "::") and m.port else None
            rtcp = m.rtcp
            mux = m.rtcp_mux
            if announced is None:
                announced_rtcp = None
            elif mux:
                announced_rtcp = announced
            elif rtcp is not None:
                announced_rtcp = (rtcp.address.host if rtcp.address is not None else host, rtcp.port)
            else:
                announced_rtcp = (host, m.port + 1)
            s = Stream(m.kind, m, announced, announced_rtcp, mux, reflect, index=index)
            if ports is not None:
                rtp_sock, rtcp_sock = ports.bind_pair(media_host)
            else:
                rtp_sock = bind_udp(media_host, 0)
                rtcp_sock = bind_udp(media_host, 0)
            s.rtp_port = rtp_sock.getsockname()[1]
            s.rtcp_port = rtcp_sock.getsockname()[1]
            s.sockets = (rtp_sock, rtcp_sock)
            streams.append(s)
    except BaseException:
        for s in streams:
            s.close()
            if ports is not None:
                ports.release(*(p for p in (s.rtp_port, s.rtcp_port) if p))
        raise
    if not streams:
        raise SdpError("no plain RTP audio or video stream in the offer (SRTP is not served here)")
    return streams


def answer_sdp(offer: SessionDescription, streams: list[Stream], media_host: str,
               choose: Callable[[str, list[Codec]], Codec | None] | None = None) -> bytes:
    """RFC 3264: one m= line per offered one, ours on its socket with the first real codec (and
    telephone-event at its rate), the rest rejected (port 0). ``choose(kind, codecs)``, when given,
    picks the codec itself (None: the m= line is rejected)."""
    family = "IP6" if ":" in media_host else "IP4"
    sid = secrets.randbelow(2**31)
    lines = ["v=0", f"o=rtc2sip {sid} {sid} IN {family} {media_host}", "s=rtc2sip service",
             f"c=IN {family} {media_host}", "t=0 0"]
    accepted = 0
    for index, m in enumerate(offer.media):
        # a re-offer keeps the m= lines in place (RFC 3264 §8): each stream keeps its sockets
        s = next((x for x in streams if x.index == index and x.kind == m.kind), None)
        codecs = [c for c in m.codecs if c.name.lower() not in _AUXILIARY] if s is not None else []
        if s is None or m.rejected or not codecs:
            lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats) or '0'}")
            continue
        main = codecs[0] if choose is None else choose(m.kind, codecs)
        if main is None:
            lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats) or '0'}")
            continue
        s.offer = m
        events = [c for c in m.codecs if c.name.lower() == "telephone-event" and c.clock_rate == main.clock_rate]
        chosen = [main, *events[:1]]
        lines.append(f"m={m.kind} {s.rtp_port} {m.proto} {' '.join(str(c.pt) for c in chosen)}")
        for c in chosen:
            ch = f"/{c.channels}" if c.channels > 1 else ""
            lines.append(f"a=rtpmap:{c.pt} {c.name}/{c.clock_rate}{ch}")
            if c.fmtp:
                lines.append(f"a=fmtp:{c.pt} {c.fmtp}")
        if m.rtcp_mux:
            lines.append("a=rtcp-mux")
        lines.append(f"a=rtcp:{s.rtcp_port}")
        lines.append(f"a={_MIRROR.get(m.direction, 'sendrecv')}")
        if m.ptime:
            lines.append(f"a=ptime:{m.ptime}")
        accepted += 1
    if not accepted:
        raise SdpError("no stream with a codec to answer")
    return ("\r\n".join(lines) + "\r\n").encode()

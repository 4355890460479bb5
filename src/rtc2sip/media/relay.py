"""The sockets and per-packet path of one bridged call (RFC 3550, RFC 3711, RFC 5764, RFC 7983).

A :class:`MediaSession` owns:

- the WebRTC leg's UDP transport (BUNDLE, RFC 8843, and rtcp-mux, RFC 5761: STUN, DTLS, SRTP
  and SRTCP all share it), demultiplexed by first byte (RFC 7983 §7) into the ICE agent (full ICE
  on aioice, :mod:`rtc2sip.media.ice`, which sees STUN only), the DTLS endpoint, and SRTP: by
  default its view of the plane's one shared socket (:mod:`rtc2sip.media.udpmux`, which routes the
  session's datagrams to it), else a socket of its own (``[media] webrtc_socket = "per-call"``);
- per media kind, an RTP/RTCP socket pair for the legacy leg (plain RTP/AVP, or SDES SRTP when the
  legacy peer agreed to a=crypto), with symmetric RTP latching (webrtc2sip ``enable-rtp-symetric``);
- one housekeeping task: DTLS retransmission timers (RFC 6347 §4.2.4), RTCP reports, consent
  (RFC 7675) and media timeouts.

Packets are relayed without decoding: payload type mapped, SSRC, sequence number and timestamp
rewritten by :class:`RtpRewriter` so that each leg sees one continuous stream of the gateway's own
SSRC whatever happens on the other (re-INVITE, transfer).

RTCP is terminated per leg, not forwarded: the gateway is an RTP translator that changes SSRCs, so
the peer's SR/RR describe streams the other side never saw (RFC 7667 §3.2.1.3). Each leg instead
receives the gateway's own SR (what the gateway sent on that leg) with a report block built from
:class:`ReceiveStatistics` of what it received there, and the peer's reports about the gateway's
stream give the per-leg round-trip time, loss and jitter shown by :meth:`MediaSession.stats`.
Video feedback (RFC 4585, RFC 5104) is translated between the legs, SSRCs rewritten: a PLI or FIR
about the gateway's stream on one leg becomes a PLI (browser leg) or a PLI and a FIR (legacy leg)
about the far peer's stream on the other, or a keyframe request to the transcoder that produces
that stream; REMB and TMMBR become REMB toward the other leg or the transcoder's target bitrate.
The browser's NACKs are answered from a :class:`RetransmissionHistory` of what was sent to it
(webrtc2sip's ``avpf-tail-length`` rule), never forwarded: the legacy leg is plain RTP/AVP.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, cast

from ..sdp.model import Candidate
from ..sdp.translate import LegacyPeer
from . import ice as _ice
from .certificate import Certificate
from .dtls import DtlsEndpoint, DtlsRole, DtlsState, FingerprintMismatchError
from .ice import IceAgent
from .libc import libc
from .nack import RetransmissionHistory
from .ports import Address, PortAllocator, wire_address
from .rtcp import (
    Bye,
    FirEntry,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverEstimatedMaxBitrate,
    ReceiverReport,
    RtcpPacket,
    RtcpParseError,
    RtcpUnknown,
    SenderReport,
    SourceDescription,
    TmmbItem,
    Tmmbn,
    Tmmbr,
    parse_compound,
    serialize_compound,
)
from .rtcpstats import ReceiveStatistics, ntp_from_unix, round_trip_time
from .rtp import RTP_HEADER, RtpRewriter, build_rtp, header_extension, payload_bounds
from .srtp import AES128_CM_SHA1_80, SdesCrypto, SrtpError, SrtpSession
from .tap import Tap
from .udpmux import UdpMux

if TYPE_CHECKING:  # the coder imports PyAV: only a plane that transcodes loads it
    from ..coder import CoderPool, CoderSession, OutPacket

__all__ = ["Address", "CoderLink", "LegStats", "MediaSession", "StreamConfig"]

log = logging.getLogger("rtc2sip.media")


# Stock asyncio reads every datagram into a fresh 256 KiB buffer, an mmap/munmap per packet
# (PERFORMANCE.md); the largest datagram here is a 1500-byte-MTU video packet or DTLS flight.
RECEIVE_SIZE = 4096
# RFC 3550 §6.2: 5 s minimum interval, randomised over [0.5, 1.5] (§6.3.1) so legs do not synchronise.
RTCP_INTERVAL = 5.0
# A latched legacy source silent this long lets another source take over (a phone whose NAT
# binding changed); before that, packets from elsewhere are dropped so nobody can hijack the stream.
RELATCH_AFTER = 2.0
_RTCP_SENDER = struct.Struct("!I")
# Browser sources remembered for BUNDLE demultiplexing: a call has a few (audio, video, their RTX).
MAX_LEARNT_SSRCS = 32
PT_FIR_RFC2032 = 192  # RFC 2032 §5.2.1 Full Intra Request, before RFC 5104
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})  # RFC 3264 §8.4 (RFC 2543 hold)


@dataclass(slots=True)
class LegStats:
    """Counters of one leg; ``dropped`` counts packets refused before relaying (any reason)."""

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    rtcp_in: int = 0
    rtcp_out: int = 0
    dropped: int = 0
    srtp_errors: int = 0
    last_in: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """What a stream needs from the negotiated SDP (see plane.py): payload-type maps both ways
    (:attr:`MediaMap.to_legacy`/``to_webrtc``), the codecs' clock rate, and the legacy peer; for
    BUNDLE demultiplexing (RFC 8843 §9.2) its mid, the SSRCs the browser announced for it and the
    ID of the MID header extension on the browser leg (None: not negotiated)."""

    kind: str
    to_legacy: dict[int, int]
    to_webrtc: dict[int, int]
    clock_rate: int
    legacy_peer: LegacyPeer | None
    legacy_dtmf_pt: int | None = None  # telephone-event toward the legacy peer, at ``clock_rate``
    webrtc_clock_rate: int | None = None  # the browser leg's clock when it differs (transcoding)
    mid: str | None = None
    webrtc_ssrcs: tuple[int, ...] = ()
    mid_extmap: int | None = None


@dataclass(frozen=True, slots=True)
class CoderLink:
    """A transcoded stream (the Media Coder, :mod:`rtc2sip.coder`): the pool session whose
    ``to_legacy``/``to_webrtc`` directions take the packets, and the payload types each leg may send
    into it (codec, CN, telephone-event); others are dropped."""

    pool: CoderPool
    session: CoderSession
    from_webrtc: frozenset[int]
    from_legacy: frozenset[int]
    description: str


def _set_receive_size(transport: asyncio.BaseTransport) -> None:
    if hasattr(transport, "max_size"):  # stock asyncio's selector transport; uvloop sizes its own
        cast(Any, transport).max_size = RECEIVE_SIZE


class _Closed:
    """Resolved when a transport's connection_lost ran: the socket is really closed then."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[None] = loop.create_future()

    def done(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class _Stream(asyncio.DatagramProtocol):
    """One media kind relayed between the legs: its legacy sockets, rewriters and statistics."""

    __slots__ = (
        "clock_rate",
        "coded_to_legacy",
        "coded_to_webrtc",
        "coder",
        "feedback",
        "fir_sequence",
        "history",
        "kind",
        "last_keyframe_request",
        "last_legacy_out",
        "last_legacy_out_time",
        "last_webrtc_out",
        "last_webrtc_out_time",
        "latched",
        "latched_last",
        "legacy",
        "legacy_dest",
        "legacy_dtmf_pt",
        "legacy_mux",
        "legacy_peer_crypto",
        "legacy_port",
        "legacy_remote_report",
        "legacy_rtcp",
        "legacy_rtcp_dest",
        "legacy_rtp",
        "legacy_rtt",
        "legacy_rx",
        "legacy_rx_srtp",
        "legacy_ssrc",
        "legacy_tx_srtp",
        "next_rtcp",
        "rtcp_latched",
        "sdes_local",
        "sdp_dest",
        "session",
        "symmetric",
        "to_legacy",
        "to_webrtc",
        "webrtc",
        "webrtc_clock_rate",
        "webrtc_remote_report",
        "webrtc_rtt",
        "webrtc_rx",
        "webrtc_ssrc",
    )

    # The legacy RTP socket's protocol is the stream itself: one call less per packet.
    def __init__(self, session: MediaSession, kind: str, legacy_port: int, symmetric: bool) -> None:
        self.session = session
        self.kind = kind
        self.legacy_port = legacy_port
        self.symmetric = symmetric
        self.webrtc = LegStats()
        self.legacy = LegStats()
        # The gateway's own sources, one per leg (RFC 3550 §8.1: random).
        self.webrtc_ssrc = secrets.randbits(32)
        self.legacy_ssrc = secrets.randbits(32)
        self.clock_rate = 8000
        self.webrtc_clock_rate = 8000
        # Transcoding: packets go through the coder's worker; results leave in submission order.
        self.coder: CoderLink | None = None
        self.coded_to_legacy: deque[asyncio.Future[list[OutPacket]]] = deque()
        self.coded_to_webrtc: deque[asyncio.Future[list[OutPacket]]] = deque()
        self.to_legacy: RtpRewriter | None = None
        self.to_webrtc: RtpRewriter | None = None
        self.webrtc_rx: ReceiveStatistics | None = None
        self.legacy_rx: ReceiveStatistics | None = None
        self.legacy_rtp: asyncio.DatagramTransport | None = None
        self.legacy_rtcp: asyncio.DatagramTransport | None = None
        self.legacy_dest: Address | None = None
        self.legacy_dtmf_pt: int | None = None
        self.sdp_dest: Address | None = None
        self.legacy_rtcp_dest: Address | None = None
        self.legacy_mux = False
        self.latched: Address | None = None
        self.latched_last = 0.0
        self.rtcp_latched = False
        self.sdes_local = SdesCrypto.generate(1, AES128_CM_SHA1_80)
        self.legacy_peer_crypto: str | None = None
        self.legacy_tx_srtp: SrtpSession | None = None
        self.legacy_rx_srtp: SrtpSession | None = None
        self.last_webrtc_out: bytearray | None = None
        self.last_webrtc_out_time = 0.0
        self.last_legacy_out: bytearray | None = None
        self.last_legacy_out_time = 0.0
        self.next_rtcp = monotonic() + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        self.webrtc_rtt: float | None = None
        self.legacy_rtt: float | None = None
        self.webrtc_remote_report: dict[str, int] | None = None
        self.legacy_remote_report: dict[str, int] | None = None
        # Video: what was sent to the browser, for its NACKs (None: audio, or no history wanted)
        self.history: RetransmissionHistory | None = None
        if kind == "video" and session.avpf_tail is not None:
            self.history = RetransmissionHistory(*session.avpf_tail)
        self.fir_sequence = 0  # RFC 5104 §4.3.1.2: one more per new FIR we send
        self.last_keyframe_request = {"webrtc": -1.0, "legacy": -1.0}
        self.feedback: dict[str, int] = {}

    # -- configuration ------------------------------------------------------------------------------

    def configure(self, config: StreamConfig) -> None:
        self.clock_rate = config.clock_rate
        self.webrtc_clock_rate = webrtc_clock = config.webrtc_clock_rate or config.clock_rate
        self.legacy_dtmf_pt = config.legacy_dtmf_pt
        if self.to_legacy is None or self.to_webrtc is None:
            self.to_legacy = RtpRewriter(self.legacy_ssrc, config.clock_rate, config.to_legacy, secrets.randbits(16))
            self.to_webrtc = RtpRewriter(self.webrtc_ssrc, webrtc_clock, config.to_webrtc, secrets.randbits(16))
        else:
            # A re-INVITE may renumber payload types; the rewriters keep sequence and timestamp running.
            self.to_legacy.remap(config.to_legacy, config.clock_rate)
            self.to_webrtc.remap(config.to_webrtc, webrtc_clock)
        peer = config.legacy_peer
        if peer is None:
            return
        hold = peer.address in _HOLD_ADDRESSES or peer.port == 0
        # as the socket reports the peer's packets, for latching's comparisons (IPv6: a 4-tuple)
        sdp_dest = None if hold else wire_address(peer.address, peer.port)
        if sdp_dest != self.sdp_dest or hold:
            # New SDP address (or hold): latch afresh from the packets that follow. The same address
            # in a re-INVITE keeps the latch, which may differ from it behind a NAT.
            self.latched = None
            self.rtcp_latched = False
        self.sdp_dest = sdp_dest
        self.legacy_dest = sdp_dest if self.latched is None else self.latched
        self.legacy_mux = peer.rtcp_mux
        if hold:
            self.legacy_rtcp_dest = None
        elif peer.rtcp_mux:
            self.legacy_rtcp_dest = self.legacy_dest
        else:
            self.legacy_rtcp_dest = wire_address(peer.rtcp_address, peer.rtcp_port)
        crypto = str(peer.crypto) if peer.crypto is not None else None
        if crypto != self.legacy_peer_crypto:
            self.legacy_peer_crypto = crypto
            if crypto is None:
                self.legacy_tx_srtp = self.legacy_rx_srtp = None
            else:
                # RFC 4568 §6.1: each side sends with its own key; ours is of the suite it accepted.
                theirs = SdesCrypto.parse(crypto)
                self.legacy_rx_srtp = theirs.session(outbound=False)
                self.legacy_tx_srtp = self.sdes_local.session(outbound=True)

    # -- browser -> phone ---------------------------------------------------------------------------

    def from_webrtc(self, plain: bytes, now: float, seq: int, ts: int, ssrc: int) -> None:
        # seq, ts, ssrc: the header the demultiplexer already read
        stats = self.webrtc
        stats.packets_in += 1
        stats.bytes_in += len(plain)
        stats.last_in = now
        rx = self.webrtc_rx
        if rx is None or rx.ssrc != ssrc:
            # SRTP already authenticated the source: no probation (RFC 3550 A.1).
            rx = self.webrtc_rx = ReceiveStatistics(ssrc, self.webrtc_clock_rate, min_sequential=0)
        rx.update(seq, ts, now)
        tap = self.session.tap
        if tap is not None:  # recording, forwarding (rtc2sip.media.tap): never raises
            tap.packet(self.kind, "webrtc", plain, now)
        if self.coder is not None:
            self._to_coder(plain, now, True)
            return
        rewriter = self.to_legacy
        dest = self.legacy_dest
        transport = self.legacy_rtp
        if rewriter is None or dest is None or transport is None:
            stats.dropped += 1
            return
        buf = bytearray(plain)
        if not rewriter.rewrite(buf, now):
            stats.dropped += 1
            return
        tx = self.legacy_tx_srtp
        if tx is None:
            transport.sendto(buf, dest)
        else:
            transport.sendto(tx.protect(buf), dest)
        self.last_legacy_out = buf
        self.last_legacy_out_time = now
        out = self.legacy
        out.packets_out += 1
        out.bytes_out += len(buf)

    def send_legacy_event(self, event: int, duration: int, end: bool, start: int | None, now: float) -> int | None:
        """One RFC 4733 packet of the gateway's own toward the legacy peer (§2.3: volume 10, i.e.
        -10 dBm0), in the relayed stream's sequence; ``start`` is the event's timestamp (None for
        its first packet, which gets the marker bit). Returns the timestamp, None if not sent."""
        rewriter, dest, transport, pt = self.to_legacy, self.legacy_dest, self.legacy_rtp, self.legacy_dtmf_pt
        if rewriter is None or dest is None or transport is None or pt is None:
            return None
        seq, ts = rewriter.take(now)
        first = start is None
        start = ts if start is None else start
        buf = bytearray(RTP_HEADER.pack(0x80, pt | (0x80 if first else 0), seq, start, self.legacy_ssrc))
        buf += bytes((event & 0xFF, (0x80 if end else 0) | 10)) + (min(duration, 0xFFFF)).to_bytes(2, "big")
        tx = self.legacy_tx_srtp
        transport.sendto(buf if tx is None else tx.protect(bytes(buf)), dest)
        self.last_legacy_out = buf
        self.last_legacy_out_time = now
        self.legacy.packets_out += 1
        self.legacy.bytes_out += len(buf)
        return start

    # -- phone -> browser (asyncio.DatagramProtocol of the legacy RTP socket) ----------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.legacy_rtp = cast(asyncio.DatagramTransport, transport)
        _set_receive_size(transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        stats = self.legacy
        if len(data) < 12 or not 127 < data[0] < 192:
            stats.dropped += 1
            return
        if 191 < data[1] < 224:
            if self.legacy_mux:  # RFC 5761 §4
                self.rtcp_received(data, addr)
            else:
                stats.dropped += 1
            return
        now = monotonic()
        if addr == self.latched:  # _accept_source's first case, without the call
            self.latched_last = now
        elif not self._accept_source(addr, now):
            stats.dropped += 1
            return
        rx_srtp = self.legacy_rx_srtp
        if rx_srtp is not None:
            try:
                data = rx_srtp.unprotect(data)
            except SrtpError:
                stats.srtp_errors += 1
                return
        stats.packets_in += 1
        stats.bytes_in += len(data)
        stats.last_in = now
        _, _, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        rx = self.legacy_rx
        if rx is None or rx.ssrc != ssrc:
            rx = self.legacy_rx = ReceiveStatistics(ssrc, self.clock_rate)
        rx.update(seq, ts, now)
        tap = self.session.tap
        if tap is not None:
            tap.packet(self.kind, "legacy", data, now)
        if self.coder is not None:
            self._to_coder(data, now, False)
            return
        session = self.session
        rewriter = self.to_webrtc
        tx = session.srtp_tx
        dest = session.ice.selected
        transport = session.transport
        if rewriter is None or tx is None or dest is None or transport is None:
            stats.dropped += 1
            return
        buf = bytearray(data)
        if not rewriter.rewrite(buf, now):
            stats.dropped += 1
            return
        packet = tx.protect(buf)
        transport.sendto(packet, dest)
        if self.history is not None:  # kept protected: a retransmission is the same SRTP packet
            self.history.store(int.from_bytes(buf[2:4], "big"), packet)
        self.last_webrtc_out = buf
        self.last_webrtc_out_time = now
        out = self.webrtc
        out.packets_out += 1
        out.bytes_out += len(packet)

    # -- transcoding (the Media Coder) ----------------------------------------------------------------

    def _to_coder(self, plain: bytes, now: float, from_webrtc: bool) -> None:
        """Submit one received packet's payload to the coder (off the loop, in order per direction);
        :meth:`_drain` sends what comes back under this leg's own SSRC and sequence."""
        link = self.coder
        assert link is not None
        stats = self.webrtc if from_webrtc else self.legacy
        _, b1, seq, ts, _ = RTP_HEADER.unpack_from(plain)
        pt = b1 & 0x7F
        start, end = payload_bounds(plain)
        if pt not in (link.from_webrtc if from_webrtc else link.from_legacy) or end <= start:
            stats.dropped += 1
            return
        direction = "to_legacy" if from_webrtc else "to_webrtc"
        future = link.pool.submit(link.session, direction, plain[start:end], ts, seq, bool(b1 & 0x80), now, pt)
        queue = self.coded_to_legacy if from_webrtc else self.coded_to_webrtc
        queue.append(future)
        future.add_done_callback(self._drain_to_legacy if from_webrtc else self._drain_to_webrtc)

    def _drain_to_legacy(self, _: object) -> None:
        self._drain(self.coded_to_legacy, True)

    def _drain_to_webrtc(self, _: object) -> None:
        self._drain(self.coded_to_webrtc, False)

    def _drain(self, queue: deque[asyncio.Future[list[OutPacket]]], to_legacy: bool) -> None:
        now = monotonic()
        while queue and queue[0].done():
            future = queue.popleft()
            if future.cancelled() or future.exception() is not None:
                (self.webrtc if to_legacy else self.legacy).dropped += 1
                if not future.cancelled():
                    log.debug("media session %s: coder refused a packet: %s", self.session.id, future.exception())
                continue
            for packet in future.result():
                if to_legacy:
                    self._send_coded_legacy(packet, now)
                else:
                    self._send_coded_webrtc(packet, now)
        if self.kind == "video":
            self._coder_wants_keyframe(to_legacy, now)

    def _send_coded_legacy(self, packet: OutPacket, now: float) -> None:
        rewriter, dest, transport = self.to_legacy, self.legacy_dest, self.legacy_rtp
        if rewriter is None or dest is None or transport is None:
            self.webrtc.dropped += 1
            return
        buf = bytearray(build_rtp(packet.payload_type, _advance(rewriter, packet.timestamp, now), packet.timestamp,
                                  self.legacy_ssrc, packet.payload, packet.marker))
        tx = self.legacy_tx_srtp
        transport.sendto(buf if tx is None else tx.protect(bytes(buf)), dest)
        self.last_legacy_out = buf
        self.last_legacy_out_time = now
        self.legacy.packets_out += 1
        self.legacy.bytes_out += len(buf)

    def _send_coded_webrtc(self, packet: OutPacket, now: float) -> None:
        session = self.session
        rewriter, tx, dest, transport = self.to_webrtc, session.srtp_tx, session.ice.selected, session.transport
        if rewriter is None or tx is None or dest is None or transport is None:
            self.legacy.dropped += 1
            return
        buf = bytearray(build_rtp(packet.payload_type, _advance(rewriter, packet.timestamp, now), packet.timestamp,
                                  self.webrtc_ssrc, packet.payload, packet.marker))
        protected = tx.protect(bytes(buf))
        transport.sendto(protected, dest)
        if self.history is not None:
            self.history.store(int.from_bytes(buf[2:4], "big"), protected)
        self.last_webrtc_out = buf
        self.last_webrtc_out_time = now
        self.webrtc.packets_out += 1
        self.webrtc.bytes_out += len(protected)

    def next_timestamp(self, to_legacy: bool, now: float) -> int | None:
        """Where the stream sent toward a leg would be now (None before its first packet): a coder
        started in mid-call continues the timeline instead of jumping (RFC 3550 §5.1)."""
        rewriter = self.to_legacy if to_legacy else self.to_webrtc
        if rewriter is None or rewriter._source is None:
            return None
        gap = max(1, round((now - rewriter._last_arrival) * rewriter.clock_rate))
        return (rewriter._last_ts + gap) & 0xFFFFFFFF

    def coder_stats(self) -> dict[str, object] | None:
        link = self.coder
        if link is None:
            return None
        out: dict[str, object] = {"codecs": link.description, "dropped": link.session.dropped}
        for direction in link.session.directions:
            stats = cast(Any, link.session.coder(direction)).stats
            # AudioTranscoder keeps a dataclass; VideoTranscoder's stats() is safe from any thread
            out[direction] = stats() if callable(stats) else asdict(stats)
        return out

    def _accept_source(self, addr: Address, now: float) -> bool:
        """Symmetric RTP (webrtc2sip ``enable-rtp-symetric``): send where the peer really sends from."""
        latched = self.latched
        if addr == latched:
            self.latched_last = now
            return True
        if not self.symmetric:
            return True
        if latched is None or now - self.latched_last > RELATCH_AFTER:
            self.latched = addr
            self.latched_last = now
            self.legacy_dest = addr
            if self.legacy_mux:
                self.legacy_rtcp_dest = addr
            return True
        return False

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer not listening yet: nothing to do, the next packet retries.
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.closed_one()

    # -- RTCP ---------------------------------------------------------------------------------------

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        """An RTCP datagram from the legacy peer (RTCP socket, or the RTP one when muxed)."""
        stats = self.legacy
        if self.legacy_rx_srtp is not None:
            try:
                data = self.legacy_rx_srtp.unprotect_rtcp(data)
            except SrtpError:
                stats.srtp_errors += 1
                return
        stats.rtcp_in += 1
        stats.last_in = monotonic()
        if self.symmetric and not self.rtcp_latched and not self.legacy_mux:
            self.rtcp_latched = True
            self.legacy_rtcp_dest = addr
        report = self._read_reports(data, self.legacy_rx, self.legacy_ssrc)
        if report is not None:
            self.legacy_rtt, self.legacy_remote_report = report
        if self.kind == "video":
            self._feedback_from_legacy(data)

    def webrtc_rtcp(self, data: bytes) -> None:
        """An SRTCP datagram from the browser, already unprotected."""
        self.webrtc.rtcp_in += 1
        report = self._read_reports(data, self.webrtc_rx, self.webrtc_ssrc)
        if report is not None:
            self.webrtc_rtt, self.webrtc_remote_report = report
        if self.kind == "video":
            self._feedback_from_webrtc(data)

    # -- video feedback (RFC 4585, RFC 5104) -----------------------------------------------------------

    def _count(self, what: str) -> None:
        self.feedback[what] = self.feedback.get(what, 0) + 1

    def _feedback_from_webrtc(self, data: bytes) -> None:
        """The browser's feedback about the stream we send it: its NACKs answered from the history,
        keyframe requests and bitrate passed to whoever produces that stream."""
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return
        now = monotonic()
        ours = self.webrtc_ssrc
        for packet in packets:
            if isinstance(packet, GenericNack) and packet.media_ssrc == ours:
                self._count("nack_in_webrtc")
                self._retransmit(packet.lost)
            elif isinstance(packet, PictureLossIndication) and packet.media_ssrc == ours:
                self._count("pli_in_webrtc")
                self.keyframe_wanted(toward_legacy=False, now=now)
            elif isinstance(packet, FullIntraRequest) and any(e.ssrc == ours for e in packet.entries):
                self._count("fir_in_webrtc")
                self.keyframe_wanted(toward_legacy=False, now=now)
            elif isinstance(packet, ReceiverEstimatedMaxBitrate) and ours in packet.ssrcs:
                self._count("remb_in_webrtc")
                self._bitrate_wanted(packet.bitrate, toward_legacy=False)

    def _feedback_from_legacy(self, data: bytes) -> None:
        """The legacy peer's feedback about the stream we send it (PLI, FIR, TMMBR, REMB)."""
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return
        now = monotonic()
        ours = self.legacy_ssrc
        for packet in packets:
            if isinstance(packet, PictureLossIndication) and packet.media_ssrc == ours:
                self._count("pli_in_legacy")
                self.keyframe_wanted(toward_legacy=True, now=now)
            elif isinstance(packet, FullIntraRequest) and any(e.ssrc == ours for e in packet.entries):
                self._count("fir_in_legacy")
                self.keyframe_wanted(toward_legacy=True, now=now)
            elif isinstance(packet, Tmmbr):
                for item in packet.items:
                    if item.ssrc == ours:
                        self._count("tmmbr_in_legacy")
                        self._bitrate_wanted(item.bitrate, toward_legacy=True)
                        # RFC 5104 §4.2.2.2: the owner of the stream answers with the bound it applies
                        self.send_rtcp_legacy(Tmmbn(ours, [TmmbItem(packet.sender_ssrc, item.bitrate,
                                                                    item.overhead)]))
            elif isinstance(packet, RtcpUnknown) and packet.type_code == PT_FIR_RFC2032:
                # RFC 2032 §5.2.1 FIR (H.261 era, still what libre/baresip sends without AVPF). Its
                # SSRC should name the stream to refresh, but libre puts its own: this socket
                # carries one stream of ours, so any FIR here is about it.
                self._count("fir_in_legacy")
                self.keyframe_wanted(toward_legacy=True, now=now)
            elif isinstance(packet, ReceiverEstimatedMaxBitrate) and ours in packet.ssrcs:
                self._count("remb_in_legacy")
                self._bitrate_wanted(packet.bitrate, toward_legacy=True)

    def _retransmit(self, lost: list[int]) -> None:
        """Resend what the browser lost from the history (RFC 4585 §6.2.1); too old is not sent."""
        session = self.session
        history, transport, dest = self.history, session.transport, session.ice.selected
        if history is None or transport is None or dest is None:
            return
        for packet in history.lookup(lost):
            transport.sendto(packet, dest)
            self._count("retransmitted")

    def keyframe_wanted(self, *, toward_legacy: bool, now: float) -> None:
        """Someone decoding the stream we send toward the legacy leg (``toward_legacy``) or the
        browser lost its picture: ask the transcoder that makes the stream, else the peer that
        sends what we relay (PLI to the browser; PLI and FIR to the legacy peer, which may know
        only one of them). At most one request every 300 ms per leg: both ends repeat theirs."""
        coder = self.coder
        if coder is not None:
            transcoder = coder.session.coder("to_legacy" if toward_legacy else "to_webrtc")
            request = getattr(transcoder, "request_keyframe", None)
            if request is not None:
                request()
                self._count("keyframe_to_coder")
            return
        self.request_keyframe_from("webrtc" if toward_legacy else "legacy", now)

    def request_keyframe_from(self, leg: str, now: float) -> bool:
        """Send a keyframe request to the peer sending on ``leg`` (False: nothing to ask yet)."""
        if now - self.last_keyframe_request[leg] < 0.3 and self.last_keyframe_request[leg] >= 0:
            return False
        if leg == "webrtc":
            rx = self.webrtc_rx
            if rx is None:
                return False
            sent = self.send_rtcp_webrtc(PictureLossIndication(self.webrtc_ssrc, rx.ssrc))
        else:
            rx = self.legacy_rx
            if rx is None:
                return False
            self.fir_sequence = (self.fir_sequence + 1) & 0xFF
            sent = self.send_rtcp_legacy(PictureLossIndication(self.legacy_ssrc, rx.ssrc),
                                         FullIntraRequest(self.legacy_ssrc, [FirEntry(rx.ssrc, self.fir_sequence)]))
            hook = self.session.on_keyframe_request
            if hook is not None:  # SIP INFO picture_fast_update, for phones without RTCP feedback
                hook(self.kind)
        if sent:
            self.last_keyframe_request[leg] = now
            self._count(f"keyframe_request_to_{leg}")
        return sent

    def _bitrate_wanted(self, bitrate: int, *, toward_legacy: bool) -> None:
        coder = self.coder
        if coder is not None:
            transcoder = coder.session.coder("to_legacy" if toward_legacy else "to_webrtc")
            set_bitrate = getattr(transcoder, "set_bitrate", None)
            if set_bitrate is not None:
                set_bitrate(bitrate)
            return
        # Relayed: the sender is the far peer; REMB is what both kinds of peer may act on.
        if not toward_legacy:
            rx = self.legacy_rx
            if rx is not None:
                self.send_rtcp_legacy(ReceiverEstimatedMaxBitrate(self.legacy_ssrc, bitrate, [rx.ssrc]))
        else:
            rx = self.webrtc_rx
            if rx is not None:
                self.send_rtcp_webrtc(ReceiverEstimatedMaxBitrate(self.webrtc_ssrc, bitrate, [rx.ssrc]))

    def _coder_wants_keyframe(self, to_legacy: bool, now: float) -> None:
        """The transcoder's decoder lost its reference: ask the leg that feeds it."""
        coder = self.coder
        if coder is None:
            return
        transcoder = coder.session.coder("to_legacy" if to_legacy else "to_webrtc")
        take = getattr(transcoder, "take_keyframe_request", None)
        if take is not None and take():
            self._count("keyframe_from_coder")
            self.request_keyframe_from("webrtc" if to_legacy else "legacy", now)

    def send_rtcp_webrtc(self, *packets: RtcpPacket) -> bool:
        """Feedback toward the browser: reduced-size RTCP (RFC 5506, negotiated by a=rtcp-rsize)."""
        session = self.session
        tx, dest, transport = session.srtp_tx, session.ice.selected, session.transport
        if tx is None or dest is None or transport is None:
            return False
        transport.sendto(tx.protect_rtcp(serialize_compound(packets)), dest)
        self.webrtc.rtcp_out += 1
        return True

    def send_rtcp_legacy(self, *packets: RtcpPacket) -> bool:
        """Feedback toward the legacy peer, in a compound packet (RFC 3550 §6.1: an RR first)."""
        dest = self.legacy_rtcp_dest
        transport = self.legacy_rtp if self.legacy_mux else self.legacy_rtcp
        if dest is None or transport is None:
            return False
        data = serialize_compound([ReceiverReport(self.legacy_ssrc, []), *packets])
        if self.legacy_tx_srtp is not None:
            data = self.legacy_tx_srtp.protect_rtcp(data)
        transport.sendto(data, dest)
        self.legacy.rtcp_out += 1
        return True

    @staticmethod
    def _read_reports(
        data: bytes, rx: ReceiveStatistics | None, our_ssrc: int
    ) -> tuple[float | None, dict[str, int]] | None:
        """Remember the peer's SR for our LSR/DLSR; return (RTT, loss/jitter) from its block about us."""
        try:
            packets = parse_compound(data)
        except RtcpParseError:
            return None
        found = None
        now = monotonic()
        for packet in packets:
            if isinstance(packet, SenderReport) and rx is not None and packet.ssrc == rx.ssrc:
                rx.on_sender_report(packet.ntp_timestamp, now)
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == our_ssrc:
                        rtt = round_trip_time(block, ntp_from_unix(time.time()))
                        found = (rtt, {"fraction_lost": block.fraction_lost, "packets_lost": block.packets_lost,
                                       "jitter": block.jitter})
        return found

    def build_report(self, leg: str, now: float, cname: str, bye: bool = False) -> bytes | None:
        """Our compound RTCP for one leg (RFC 3550 §6.1): SR if we sent on it, else RR, then SDES."""
        if leg == "webrtc":
            ssrc, rx, sent, last, last_time = (self.webrtc_ssrc, self.webrtc_rx, self.webrtc,
                                               self.last_webrtc_out, self.last_webrtc_out_time)
            clock = self.webrtc_clock_rate
        else:
            ssrc, rx, sent, last, last_time = (self.legacy_ssrc, self.legacy_rx, self.legacy,
                                               self.last_legacy_out, self.last_legacy_out_time)
            clock = self.clock_rate
        blocks = [rx.report_block(now)] if rx is not None and rx.received else []
        packets: list[Any] = []
        if last is not None:
            # The RTP timestamp of "now" on the stream we send (RFC 3550 §6.4.1), from the last packet.
            rtp_ts = (int.from_bytes(last[4:8], "big") + int((now - last_time) * clock)) & 0xFFFFFFFF
            packets.append(SenderReport(ssrc, ntp_from_unix(time.time()), rtp_ts, sent.packets_out,
                                        max(0, sent.bytes_out - 12 * sent.packets_out), blocks))
        else:
            packets.append(ReceiverReport(ssrc, blocks))
        packets.append(SourceDescription.cname(ssrc, cname))
        if bye:
            packets.append(Bye([ssrc]))
        return serialize_compound(packets)


def _advance(rewriter: RtpRewriter, timestamp: int, now: float) -> int:
    """The next sequence number of the rewriter's stream for a packet the gateway made (transcoded
    audio, CN, events): one numbering for everything sent on the leg (RFC 4733 §2.1). The next
    relayed packet continues after it, as after :meth:`RtpRewriter.take`."""
    seq = (rewriter._last_seq + 1) & 0xFFFF
    rewriter._last_seq = seq
    rewriter._last_ts = timestamp & 0xFFFFFFFF
    rewriter._last_arrival = now
    rewriter._source = -1
    return seq


class _LegacyRtcpProtocol(asyncio.DatagramProtocol):
    """The legacy RTCP socket (RTP port + 1, RFC 3550 §11)."""

    __slots__ = ("stream",)

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.legacy_rtcp = cast(asyncio.DatagramTransport, transport)
        _set_receive_size(transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) >= 8 and 127 < data[0] < 192:
            self.stream.rtcp_received(data, addr)
        else:
            self.stream.legacy.dropped += 1

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.session.closed_one()


class _WebRtcProtocol(asyncio.DatagramProtocol):
    """The WebRTC leg's one socket: RFC 7983 §7 first-byte demultiplexing."""

    __slots__ = ("session",)

    def __init__(self, session: MediaSession) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.transport = cast(asyncio.DatagramTransport, transport)
        _set_receive_size(transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        session = self.session
        b = data[0] if data else 255
        if 127 < b < 192:  # RTP or RTCP (RFC 7983: 128..191)
            ice = session.ice
            rx = session.srtp_rx
            if (addr != ice.selected and not ice.is_validated(addr)) or rx is None or len(data) < 12:
                session.dropped += 1
                return
            if 191 < data[1] < 224:  # RFC 5761 §4: RTCP packet types on a muxed flow
                session.srtcp_received(data)
                return
            try:
                plain = rx.unprotect(data)
            except SrtpError:
                session.srtp_errors += 1
                return
            _, _, seq, ts, ssrc = RTP_HEADER.unpack_from(plain)
            stream = session.streams_by_ssrc.get(ssrc)  # the common case: a source already seen
            if stream is None:
                stream = session.demultiplex(plain, ssrc)
                if stream is None:
                    session.dropped += 1
                    return
            stream.from_webrtc(plain, monotonic(), seq, ts, ssrc)
        elif b < 4:  # STUN (RFC 7983: 0..3)
            session.stun_received(data, addr)
        elif 19 < b < 64:  # DTLS (RFC 7983: 20..63)
            session.dtls_received(data, addr)
        else:
            session.dropped += 1

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.closed_one()


# How long an established DTLS association keeps its OpenSSL connection: long enough for a peer that
# lost our last flight to retransmit its own (1 s doubling, RFC 6347 §4.2.4), short against a call.
DTLS_LINGER = 20.0
# The heap is trimmed TRIM_DELAY after a DTLS connection was released (a burst of calls releases its
# connections over one housekeeping period: one trim takes them all), at most every TRIM_INTERVAL.
TRIM_DELAY = 1.0
TRIM_INTERVAL = 2.0


class _HeapTrimmer:
    """Gives the pages of released DTLS connections back to the system (glibc ``malloc_trim``).

    A released connection frees ~65 KB scattered among the allocations of calls that go on; glibc
    keeps such holes in the process's resident memory (only the top of the heap is returned by
    itself), so without this a call's handshake would cost memory for the whole life of the process
    whenever many calls start together. ``malloc_trim(0)`` hands back every free page; it is called
    from housekeeping, :data:`TRIM_DELAY` after a release, at most every :data:`TRIM_INTERVAL`.
    """

    __slots__ = ("_last", "_pending_since", "_trim")

    def __init__(self) -> None:
        self._pending_since: float | None = None
        self._last = 0.0
        # not glibc (musl, macOS): no malloc_trim, nothing to do
        self._trim: Callable[[int], int] | None = getattr(libc(), "malloc_trim", None)

    def released(self, now: float) -> None:
        if self._trim is not None and self._pending_since is None:
            self._pending_since = now

    def tick(self, now: float) -> None:
        since = self._pending_since
        if since is not None and now - since >= TRIM_DELAY and now - self._last >= TRIM_INTERVAL:
            self._pending_since = None
            self._last = now
            assert self._trim is not None
            started = monotonic()
            self._trim(0)
            log.debug("heap trimmed in %.1f ms", 1000 * (monotonic() - started))


_TRIMMER = _HeapTrimmer()


class MediaSession:
    """The transport side of one call; :class:`rtc2sip.media.plane.MediaPlane` drives it from SDP."""

    def __init__(
        self,
        session_id: str,
        *,
        host: str,
        ports: PortAllocator,
        certificate: Certificate,
        symmetric: bool,
        on_failure: Callable[[str], None],
        media_timeout: float,
        connect_timeout: float,
        addresses: Iterable[str] | None = None,
        stun_server: tuple[str, int] | None = None,
        avpf_tail: tuple[int, int] | None = (100, 400),
        legacy_host: str | None = None,
        mux: UdpMux | None = None,
    ) -> None:
        self.id = session_id
        # the plane's shared WebRTC socket ([media] webrtc_socket = "shared"); None: a socket per call
        self._mux = mux
        # webrtc2sip avpf-tail-length: (min, max) packets of video history for NACKs; None: none
        self.avpf_tail = avpf_tail
        # A keyframe request sent to the legacy peer (kind): the plane adds a SIP INFO for it
        self.on_keyframe_request: Callable[[str], None] | None = None
        self.host = host
        self.legacy_host = legacy_host or host  # the legacy sockets' address (its family may differ)
        # host candidates: the plane's announced addresses (a wildcard ``host`` has several)
        self._addresses = list(addresses) if addresses is not None else [host]
        self._stun_server = stun_server
        self._ports = ports
        self._certificate = certificate
        self._symmetric = symmetric
        self._on_failure = on_failure
        self._media_timeout = media_timeout
        self._connect_timeout = connect_timeout
        self.cname = secrets.token_urlsafe(12)
        self.ice = IceAgent(on_selected=self._ice_selected, name=session_id)
        self.dtls: DtlsEndpoint | None = None
        self.dtls_role: DtlsRole | None = None
        self._dtls_connected_at: float | None = None
        # We offered actpass and the answer is not in yet: a ClientHello may outrun it (the browser
        # answered active, as Chrome does), so the first DTLS packet makes us the server.
        self.accept_early_dtls = False
        self.srtp_tx: SrtpSession | None = None
        self.srtp_rx: SrtpSession | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.webrtc_port = 0
        self.streams: dict[str, _Stream] = {}
        # BUNDLE demultiplexing of the browser's packets (RFC 8843 §9.2, see demultiplex())
        self.streams_by_pt: list[_Stream | None] = [None] * 128
        self.streams_by_ssrc: dict[int, _Stream] = {}  # learnt, at most MAX_LEARNT_SSRCS
        self.streams_by_mid: dict[bytes, _Stream] = {}
        self.streams_by_announced: dict[int, _Stream] = {}  # the browser's a=ssrc
        self.ambiguous_pts: frozenset[int] = frozenset()
        self.mid_extmap = 0  # 0: no MID header extension negotiated
        self.sources_learnt = {"mid": 0, "ssrc": 0, "pt": 0}  # how demultiplex() learnt each source
        self.dropped = 0
        self.srtp_errors = 0
        self.failed: str | None = None
        self.started = monotonic()
        self.answered: float | None = None
        self._ports_held: list[int] = []
        self._open_transports = 0
        self._all_closed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._dtmf_lock: asyncio.Lock | None = None
        # sinks of every plain RTP packet received (rtc2sip.media.tap); None: no sink, no cost
        self.tap: Tap | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    async def open(self, kinds: Iterable[str]) -> None:
        """Bind the WebRTC socket and a legacy pair per kind, start housekeeping. On error, closes."""
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        try:
            if self._mux is not None:
                protocol = _WebRtcProtocol(self)
                view = self._mux.attach(protocol)
                self._open_transports += 1
                protocol.connection_made(cast(asyncio.BaseTransport, view))
                self.webrtc_port = self._mux.port
                self.ice.use_routes(view)
            else:
                sock = self._ports.bind_one(self.host)
                self.webrtc_port = sock.getsockname()[1]
                self._ports_held.append(self.webrtc_port)
                self._open_transports += 1
                await loop.create_datagram_endpoint(lambda: _WebRtcProtocol(self), sock=sock)
            assert self.transport is not None
            await self.ice.gather(self.transport, self._addresses, self.webrtc_port, self._stun_server,
                                  self._mux.srflx if self._mux is not None else None)
            for kind in kinds:
                await self.add_kind(kind)
        except BaseException:
            await self.close()
            raise
        self._task = loop.create_task(self._housekeeping(), name=f"rtc2sip-media-{self.id}")

    async def add_kind(self, kind: str) -> None:
        if kind in self.streams:
            return
        loop = asyncio.get_running_loop()
        rtp, rtcp = self._ports.bind_pair(self.legacy_host)
        port = rtp.getsockname()[1]
        self._ports_held += [port, port + 1]
        stream = _Stream(self, kind, port, self._symmetric)
        self.streams[kind] = stream
        self._open_transports += 2
        try:
            await loop.create_datagram_endpoint(lambda: stream, sock=rtp)
        except BaseException:
            rtcp.close()
            self._open_transports -= 1
            raise
        await loop.create_datagram_endpoint(lambda: _LegacyRtcpProtocol(stream), sock=rtcp)

    @property
    def legacy_ports(self) -> dict[str, int]:
        return {kind: s.legacy_port for kind, s in self.streams.items()}

    def closed_one(self) -> None:
        self._open_transports -= 1
        if self._open_transports <= 0 and self._all_closed is not None:
            self._all_closed.set()

    async def close(self) -> None:
        """Release everything, whatever the state: task, DTLS (close_notify), sockets, ports."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.dtls is not None and self.dtls.state is DtlsState.CONNECTED:
            self.dtls.close()
            self._flush_dtls(None)
        await self.ice.close()  # its checks and consent tasks; the socket is closed below
        if len(self.streams) > 1:
            log.info("media session %s: BUNDLE sources learnt by %s (mid extmap %s)", self.id,
                     self.sources_learnt, self.mid_extmap or None)
        for kind, stream in self.streams.items():
            history = stream.history
            if kind == "video" and (stream.feedback or history is not None):
                log.info("media session %s: video feedback: %s", self.id,
                         dict(stream.feedback) | {"history_depth": history.depth if history is not None else 0,
                                                  "transcoded": stream.coder is not None})
            if stream.coder is not None:
                log.info("media session %s: %s transcoding ended: %s", self.id, kind, stream.coder_stats())
            link, stream.coder = stream.coder, None
            stream.coded_to_legacy.clear()
            stream.coded_to_webrtc.clear()
            if link is not None:
                await link.pool.close(link.session)
        transports: list[asyncio.BaseTransport | None] = [self.transport]
        for stream in self.streams.values():
            transports += [stream.legacy_rtp, stream.legacy_rtcp]
        for transport in transports:
            if transport is not None:
                transport.close()
        if self._open_transports > 0 and self._all_closed is not None:
            try:
                await asyncio.wait_for(self._all_closed.wait(), 2.0)
            except TimeoutError:
                log.warning("media session %s: sockets did not close in time", self.id)
        self._ports.release(*self._ports_held)
        self._ports_held.clear()
        self.srtp_tx = self.srtp_rx = None
        self.dtls = None

    def fail(self, reason: str) -> None:
        """Stop relaying and tell the plane, once; delete() still has to release the session."""
        if self.failed is not None or self._closed:
            return
        self.failed = reason
        self.srtp_tx = self.srtp_rx = None
        for stream in self.streams.values():
            stream.legacy_dest = None
        log.info("media session %s failed: %s", self.id, reason)
        try:
            self._on_failure(reason)
        except Exception:
            log.exception("media session %s: failure callback raised", self.id)

    # -- signalling ---------------------------------------------------------------------------------

    def configure_streams(self, configs: Iterable[StreamConfig]) -> None:
        table: list[_Stream | None] = [None] * 128
        ambiguous: set[int] = set()
        by_mid: dict[bytes, _Stream] = {}
        announced: dict[int, _Stream] = {}
        mid_extmap = 0
        for config in configs:
            stream = self.streams[config.kind]
            stream.configure(config)
            for pt in config.to_legacy:
                if table[pt] is None:
                    table[pt] = stream
                elif table[pt] is not stream:
                    ambiguous.add(pt)
            if config.mid is not None:
                by_mid[config.mid.encode()] = stream
            for ssrc in config.webrtc_ssrcs:
                announced.setdefault(ssrc, stream)
            if config.mid_extmap is not None and not mid_extmap:
                mid_extmap = config.mid_extmap  # one ID for every bundled section (RFC 8843 §9.1)
        self.streams_by_pt = table
        self.ambiguous_pts = frozenset(ambiguous)
        self.streams_by_mid = by_mid
        self.streams_by_announced = announced
        self.mid_extmap = mid_extmap
        # A new answer may move sources between sections: learn them again.
        self.streams_by_ssrc = {}
        if self.answered is None:
            self.answered = monotonic()

    def demultiplex(self, plain: bytes, ssrc: int) -> _Stream | None:
        """The stream of a browser packet whose SSRC is not learnt yet (RFC 8843 §9.2): by the MID
        header extension, else the SSRCs the browser announced (RFC 5576), else the payload type
        when only one stream uses it. The SSRC is learnt for the packets that follow, so this runs
        for the first packet of each source only; a payload type several streams share routes to
        the first of them without being learnt (a MID or an a=ssrc may tell better later). A payload
        type no stream relays (RTX, FEC the answer left out) is dropped and its source not learnt."""
        pt = plain[1] & 0x7F
        by_pt = self.streams_by_pt[pt]
        if by_pt is None:
            return None
        stream: _Stream | None = None
        how = "mid"
        if self.mid_extmap:
            mid = header_extension(plain, self.mid_extmap)
            if mid is not None:
                stream = self.streams_by_mid.get(mid)
        if stream is None:
            stream, how = self.streams_by_announced.get(ssrc), "ssrc"
        if stream is None:
            stream, how = by_pt, "pt"
            if pt in self.ambiguous_pts:
                return stream
        self.sources_learnt[how] += 1
        learnt = self.streams_by_ssrc
        if len(learnt) >= MAX_LEARNT_SSRCS:
            # Bounded whatever the browser sends; the sources still in use are learnt again.
            learnt.clear()
        learnt[ssrc] = stream
        return stream

    def set_coder(self, kind: str, link: CoderLink | None) -> CoderLink | None:
        """Transcode the ``kind`` stream through ``link`` from now on (None: relay it as is again);
        returns the previous link, for the caller to close in its pool."""
        stream = self.streams[kind]
        old, stream.coder = stream.coder, link
        if link is not None and old is None:
            log.info("media session %s: %s transcoded, %s", self.id, kind, link.description)
        elif link is None and old is not None:
            log.info("media session %s: %s relayed without transcoding again", self.id, kind)
        return old

    async def send_dtmf(self, kind: str, event: int, duration_ms: int, interval: float = 0.05) -> bool:
        """An RFC 4733 event of the gateway's own toward the legacy peer (RFC 4733 §2.5.1): updates
        every ``interval`` with the duration so far, the end packet sent three times (§2.5.1.4). Events
        go one after the other. False when the legacy leg has no telephone-event (nothing sent)."""
        stream = self.streams.get(kind)
        if stream is None or stream.legacy_dtmf_pt is None or stream.to_legacy is None or self._closed:
            return False
        if self._dtmf_lock is None:
            self._dtmf_lock = asyncio.Lock()
        async with self._dtmf_lock:
            units = max(1, stream.clock_rate * duration_ms // 1000)
            step = max(1, round(stream.clock_rate * interval))
            start: int | None = None
            done = 0
            while True:
                done = min(units, done + step)
                end = done >= units
                for _ in range(3 if end else 1):
                    start = stream.send_legacy_event(event, done, end, start, monotonic())
                    if start is None:
                        return False
                    if end:
                        await asyncio.sleep(interval / 2.5)
                if end:
                    return True
                await asyncio.sleep(interval)

    def set_remote_transport(self, ufrag: str, pwd: str, fingerprints: list[str], role: DtlsRole,
                             candidates: Sequence[Candidate] = (), *, ice_lite: bool = False) -> None:
        """The browser's ICE credentials, candidates and fingerprints, and our DTLS role (RFC 5763 §5)."""
        self.ice.set_remote(ufrag, pwd, candidates, lite=ice_lite)
        self.accept_early_dtls = False
        dtls = self.dtls
        if dtls is not None and dtls.role is role and dtls.state not in (DtlsState.FAILED, DtlsState.CLOSED):
            # Same association (a re-INVITE, or a ClientHello that outran the answer): pin it now.
            dtls.set_remote_fingerprints(fingerprints)
            self._flush_dtls(None)
            self._check_dtls()
            return
        self.srtp_tx = self.srtp_rx = None
        self.dtls = DtlsEndpoint(self._certificate, role, fingerprints)
        self.dtls_role = role
        if role is DtlsRole.CLIENT and self.ice.selected is not None:
            self._start_client()

    # -- WebRTC leg slow paths ----------------------------------------------------------------------

    def stun_received(self, data: bytes, addr: Address) -> None:
        if self.failed is None and not self._closed:
            try:
                self.ice.datagram(data, addr)
            except Exception:  # aioice trusts authenticated checks: a malformed one must not escape
                self.dropped += 1
                log.exception("media session %s: STUN from %s:%d not handled", self.id, *addr[:2])

    def _ice_selected(self) -> None:
        # The ICE agent has a path (a check answered either way, or a nomination): a DTLS client
        # waiting for one starts now.
        dtls = self.dtls
        if dtls is not None and dtls.state is DtlsState.NEW and dtls.role is DtlsRole.CLIENT and not self._closed:
            self._start_client()

    def _start_client(self) -> None:
        # Only once ICE has a path: a ClientHello before that would go nowhere (TESTING.md's race);
        # the housekeeping task retransmits it on OpenSSL's timer (RFC 6347 §4.2.4).
        assert self.dtls is not None
        self.dtls.start()
        self._flush_dtls(None)

    def dtls_received(self, data: bytes, addr: Address) -> None:
        if not self.ice.is_validated(addr) or self.failed is not None:
            self.dropped += 1
            return
        if self.dtls is None:
            if not self.accept_early_dtls:
                self.dropped += 1
                return
            self.dtls = DtlsEndpoint(self._certificate, DtlsRole.SERVER)
            self.dtls_role = DtlsRole.SERVER
        self.dtls.feed(data)
        self._flush_dtls(addr)
        self._check_dtls()

    def _flush_dtls(self, addr: Address | None) -> None:
        dtls, transport = self.dtls, self.transport
        if dtls is None or transport is None:
            return
        dest = addr or self.ice.selected
        for datagram in dtls.datagrams_to_send():
            if dest is not None:
                transport.sendto(datagram, dest)

    def _check_dtls(self) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        if dtls.state is DtlsState.CONNECTED and self.srtp_rx is None and dtls.srtp_keys is not None:
            self.srtp_tx = dtls.srtp_keys.tx_session()
            self.srtp_rx = dtls.srtp_keys.rx_session()
            self._dtls_connected_at = monotonic()
            log.debug("media session %s: DTLS connected, %s", self.id, dtls.srtp_profile)
        elif dtls.state is DtlsState.FAILED:
            if isinstance(dtls.error, FingerprintMismatchError):
                self.fail(f"dtls fingerprint mismatch: {dtls.error}")
            else:
                self.fail(f"dtls failed: {dtls.error}")
        elif dtls.state is DtlsState.CLOSED and self.srtp_rx is not None:
            self.fail("dtls closed by the browser")

    def srtcp_received(self, data: bytes) -> None:
        rx = self.srtp_rx
        if rx is None:
            return
        try:
            plain = rx.unprotect_rtcp(data)
        except SrtpError:
            self.srtp_errors += 1
            return
        now = monotonic()
        # RFC 8843 §9.2: a compound's first packet (SR or RR) names its sender; Chrome sends one
        # compound per sending stream, so a learnt source's reports concern that stream alone. A
        # source never seen in RTP (Chrome's receive-only streams report as SSRC 1) goes to every
        # stream, which keeps what names its own SSRC.
        stream = self.streams_by_ssrc.get(_RTCP_SENDER.unpack_from(plain, 4)[0]) if len(plain) >= 8 else None
        if stream is not None:
            stream.webrtc.last_in = now
            stream.webrtc_rtcp(plain)
            return
        for stream in self.streams.values():
            stream.webrtc.last_in = now
            stream.webrtc_rtcp(plain)

    # -- housekeeping -------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            now = monotonic()
            delay = 1.0
            try:
                self._tick(now)
            except Exception as exc:
                log.exception("media session %s: housekeeping failed", self.id)
                self.fail(f"internal error: {exc}")
            dtls = self.dtls
            if dtls is not None and dtls.state is DtlsState.CONNECTING:
                due = dtls.next_timeout(now)
                if due is not None:
                    delay = min(delay, max(0.005, due - now))
            await asyncio.sleep(delay)

    def _tick(self, now: float) -> None:
        if self.failed is not None:
            return
        dtls = self.dtls
        if dtls is not None and dtls.state is DtlsState.CONNECTING:
            due = dtls.next_timeout(now)
            if due is not None and due <= now:
                dtls.handle_timeout(now)
                self._flush_dtls(None)
            self._check_dtls()
            if self.failed is not None:
                return
        done = self._dtls_connected_at
        if done is not None and now - done > DTLS_LINGER and dtls is not None and dtls.state is DtlsState.CONNECTED:
            dtls.release()
            self._dtls_connected_at = None
            _TRIMMER.released(now)
        _TRIMMER.tick(now)
        if self._mux is not None:
            self._mux.log_drops(now)
        if self.ice.consent_expired(now):
            self.fail(f"ice consent lost: no answer to our checks for {_ice.CONSENT_TIMEOUT:g} s (RFC 7675)")
            return
        if self.ice.failure is not None:
            self.fail(self.ice.failure)
            return
        if self.answered is not None and self.srtp_rx is None and now - self.answered > self._connect_timeout:
            what = "ICE" if self.ice.selected is None else "DTLS"
            self.fail(f"{what} did not connect within {self._connect_timeout:g} s")
            return
        if self.answered is not None and self._media_timeout > 0 and self.streams:
            last = max([self.answered] + [max(s.webrtc.last_in, s.legacy.last_in) for s in self.streams.values()])
            if now - last > self._media_timeout:
                self.fail(f"no media for {self._media_timeout:g} s")
                return
        for stream in self.streams.values():
            if now >= stream.next_rtcp:
                stream.next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.5)
                self._send_reports(stream, now)

    def _send_reports(self, stream: _Stream, now: float) -> None:
        if self.srtp_tx is not None and self.ice.selected is not None and self.transport is not None:
            report = stream.build_report("webrtc", now, self.cname)
            if report is not None:
                self.transport.sendto(self.srtp_tx.protect_rtcp(report), self.ice.selected)
                stream.webrtc.rtcp_out += 1
        dest = stream.legacy_rtcp_dest
        transport = stream.legacy_rtp if stream.legacy_mux else stream.legacy_rtcp
        if dest is not None and transport is not None and stream.to_legacy is not None:
            report = stream.build_report("legacy", now, self.cname)
            if report is not None:
                if stream.legacy_tx_srtp is not None:
                    report = stream.legacy_tx_srtp.protect_rtcp(report)
                transport.sendto(report, dest)
                stream.legacy.rtcp_out += 1

    # -- observation --------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        webrtc = LegStats()
        legacy = LegStats()
        streams: dict[str, object] = {}
        for kind, s in self.streams.items():
            for total, part in ((webrtc, s.webrtc), (legacy, s.legacy)):
                total.packets_in += part.packets_in
                total.bytes_in += part.bytes_in
                total.packets_out += part.packets_out
                total.bytes_out += part.bytes_out
                total.rtcp_in += part.rtcp_in
                total.rtcp_out += part.rtcp_out
                total.dropped += part.dropped
                total.srtp_errors += part.srtp_errors
            streams[kind] = {
                "webrtc_ssrc": s.webrtc_ssrc,
                "legacy_ssrc": s.legacy_ssrc,
                "legacy_port": s.legacy_port,
                "webrtc": _receive_summary(s.webrtc, s.webrtc_rx, s.webrtc_rtt, s.webrtc_remote_report),
                "legacy": _receive_summary(s.legacy, s.legacy_rx, s.legacy_rtt, s.legacy_remote_report)
                | {"remote": _fmt(s.legacy_dest), "latched": s.latched is not None,
                   "srtp": s.legacy_tx_srtp is not None,
                   # RTP diagnostics (issue 5 item 4): the SDP's address against the source latched on
                   "announced": _fmt(s.sdp_dest),
                   "nat": s.latched is not None and s.sdp_dest is not None and s.latched != s.sdp_dest},
                "transcoding": s.coder_stats(),
            }
            if kind == "video":
                cast(dict[str, object], streams[kind])["feedback"] = dict(s.feedback) | {
                    "history_depth": s.history.depth if s.history is not None else 0}
        dtls = self.dtls
        return {
            "failed": self.failed,
            "transcoded": any(s.coder is not None for s in self.streams.values()),
            "webrtc": {
                **_counters(webrtc),
                "dropped": webrtc.dropped + self.dropped,
                "srtp_errors": webrtc.srtp_errors + self.srtp_errors,
                "port": self.webrtc_port,
                "bundle": {"mid_extmap": self.mid_extmap or None, "sources_learnt": dict(self.sources_learnt)},
                "ice": {
                    "selected": _fmt(self.ice.selected),
                    "nominated": self.ice.nominated,
                    "checks": self.ice.checks,
                    "rejected_checks": self.ice.rejected_checks,
                    "local_ufrag": self.ice.local_ufrag,
                    **self.ice.describe(),
                },
                "dtls": {
                    "state": str(dtls.state) if dtls is not None else "new",
                    "role": str(dtls.role) if dtls is not None else None,
                    "srtp_profile": str(dtls.srtp_profile) if dtls is not None and dtls.srtp_profile else None,
                    "retransmissions": dtls.retransmissions if dtls is not None else 0,
                },
            },
            "legacy": {**_counters(legacy), "ports": self.legacy_ports},
            "streams": streams,
        }


def _counters(s: LegStats) -> dict[str, int]:
    return {"packets_in": s.packets_in, "bytes_in": s.bytes_in, "packets_out": s.packets_out,
            "bytes_out": s.bytes_out, "rtcp_in": s.rtcp_in, "rtcp_out": s.rtcp_out, "dropped": s.dropped,
            "srtp_errors": s.srtp_errors}


def _receive_summary(
    stats: LegStats, rx: ReceiveStatistics | None, rtt: float | None, remote: dict[str, int] | None
) -> dict[str, object]:
    """Loss and jitter of what we receive on a leg (RFC 3550 A.3, A.8); RTT and the peer's view of
    what we send from its reports (RFC 3550 §6.4.1)."""
    return {
        **_counters(stats),
        "lost": rx.lost if rx is not None else 0,
        "jitter_ms": round(1000 * rx.jitter / rx.clock_rate, 2) if rx is not None and rx.clock_rate else 0.0,
        "rtt_ms": round(1000 * rtt, 2) if rtt is not None else None,
        "remote_report": remote,
    }


def _fmt(addr: Address | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"

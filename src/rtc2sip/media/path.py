"""The per-packet path of one relayed stream: the seam a compiled implementation replaces.

Implements RFC 3550 §5.1, §7.1 and §8.1 (a translator's own SSRC, sequence number and timestamp per
leg, continuous across source changes: :class:`~rtc2sip.media.rtp.RtpRewriter`), RFC 3550 A.1, A.3
and A.8 input (receive statistics updated per packet), RFC 3264 §5.1 (each leg's own payload-type
numbers, mapped), RFC 3711 §3.3 (SRTP protect and unprotect, both legs), RFC 5761 §4 (RTCP told
from RTP on a muxed port), RFC 7983 §7 (first-byte demultiplexing of the browser leg), RFC 4585
§6.2.1 (what is sent to the browser kept for its NACKs), RFC 4733 §2.3 (the gateway's own DTMF
events in the relayed numbering) and symmetric RTP (RFC 4961; webrtc2sip ``enable-rtp-symetric``).

**The seam.** Once a call is up, every RTP packet goes through two entry points and nothing else:

- :meth:`WebRtcProtocol.datagram_received` (browser → phone; one per session, since BUNDLE puts every
  stream on one socket and one SRTP context; with the shared socket, :mod:`rtc2sip.media.udpmux`
  calls it with the datagrams routed to the session): first byte, source address (``session.ice``'s
  ``selected``, else ``is_validated``), SRTP unprotect with ``session.srtp_rx``, the stream of the
  packet's SSRC (``session.streams_by_ssrc``),
  then :meth:`StreamPath.from_webrtc`: receive statistics, payload type/SSRC/seq/ts rewrite, SDES-SRTP
  protect when the legacy leg has keys, ``sendto`` the legacy peer (``legacy_dest``), counters;
- :meth:`StreamPath.from_legacy` (phone → browser; the legacy RTP socket's ``datagram_received``, the
  stream is that socket's protocol so no call is spent in between): RTP version check, latching of
  the source (``latched``: a packet from elsewhere is dropped unless the latched one fell silent for
  :data:`RELATCH_AFTER`), SDES-SRTP unprotect, receive statistics, rewrite, SRTP protect with
  ``session.srtp_tx``, ``sendto`` ``session.ice.selected``, the protected packet kept in ``history``
  (video), counters.

Inputs: the datagram and its source address (``now`` is ``time.monotonic()``). Outputs: at most one
``sendto`` per packet, on ``legacy_rtp`` or ``session.transport``; a packet refused is counted
(``dropped``, ``srtp_errors`` of the leg, or of the session before a stream is known). Only byte 1
(payload type) and the sequence number, timestamp and SSRC are rewritten: CSRCs, header extensions
and payload pass as they came.

State, all plain attributes of :class:`StreamPath` (see ``__slots__``): ``kind``, ``legacy_port``,
the rewriters ``to_legacy``/``to_webrtc``, the SSRCs, clock rates, ``legacy_dtmf_pt``; the legacy
peer's addresses (``legacy_dest``, ``sdp_dest``, ``legacy_rtcp_dest``, ``latched``,
``latched_last``, ``rtcp_latched``, ``legacy_mux``, ``symmetric``); the legacy leg's SDES keys and
SRTP sessions (``sdes_local``, ``legacy_peer_crypto``, ``legacy_tx_srtp``, ``legacy_rx_srtp``);
``coder``; the counters (:class:`LegStats` ``webrtc``/``legacy``), the receive statistics
``webrtc_rx``/``legacy_rx``, the last packet sent on each leg with its time (for the RTCP sender
reports), ``history``. Of the session, read on every packet: ``srtp_rx``, ``srtp_tx``,
``transport``, ``ice.selected``, ``tap``, ``streams_by_ssrc``; all the path reads or calls of it is
:class:`SessionView`, which :class:`~rtc2sip.media.session.MediaSession` satisfies. The control plane
writes that state through :meth:`StreamPath.configure` (a new offer/answer) and the session's DTLS/ICE
code (SRTP keys, selected pair).

Handed up, not handled here: STUN (``session.stun_received``), DTLS (``session.dtls_received``) and
SRTCP (``session.srtcp_received``) from the browser; a browser SSRC not learnt yet
(``session.demultiplex``, BUNDLE); RTCP on a muxed legacy port (:meth:`StreamPath.rtcp_received`,
:mod:`rtc2sip.media.feedback`); a copy of every accepted packet to ``session.tap`` when one is set
(recording, forwarding); every packet of a transcoded stream (``coder`` set) to
:meth:`StreamPath.to_coder` (:mod:`rtc2sip.media.stream`), whose results come back through
:meth:`StreamPath.send_coded_legacy`/:meth:`StreamPath.send_coded_webrtc`. The gateway's own packets
(RFC 4733 events, :meth:`StreamPath.send_legacy_event`; transcoded output) enter the relayed numbering
through the same state, so an implementation of the seam provides those three methods as well.

The RTCP and coder layers (:class:`~rtc2sip.media.feedback.RtcpStream`,
:class:`~rtc2sip.media.stream.Stream`) subclass :class:`StreamPath` and use only what is named here,
so a compiled class with the same attributes and methods can take its place as their base.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..sdp import LegacyPeer
from .nack import RetransmissionHistory
from .ports import Address, wire_address
from .rtcpstats import ReceiveStatistics
from .rtp import RTP_HEADER, RtpRewriter, build_rtp
from .srtp import AES128_CM_SHA1_80, SdesCrypto, SrtpError, SrtpSession
from .tap import Tap

if TYPE_CHECKING:  # the coder imports PyAV: only a plane that transcodes loads it
    from ..coder import CoderPool, CoderSession, OutPacket

__all__ = [
    "RECEIVE_SIZE",
    "CoderLink",
    "FastHandle",
    "IceView",
    "LegStats",
    "SessionView",
    "StreamConfig",
    "StreamPath",
    "WebRtcProtocol",
    "set_receive_size",
]


# Stock asyncio reads every datagram into a fresh 256 KiB buffer, an mmap/munmap per packet
# (PERFORMANCE.md); the largest datagram here is a 1500-byte-MTU video packet or DTLS flight.
RECEIVE_SIZE = 4096
# A latched legacy source silent this long lets another source take over (a phone whose NAT
# binding changed); before that, packets from elsewhere are dropped so nobody can hijack the stream.
RELATCH_AFTER = 2.0
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
    """What a stream needs from the negotiated SDP (see negotiation.py): payload-type maps both ways
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
    into it (codec, CN, telephone-event); others are dropped. The path only tells a set ``coder``
    from None; :mod:`rtc2sip.media.stream` and :mod:`rtc2sip.media.feedback` use the rest."""

    pool: CoderPool
    session: CoderSession
    from_webrtc: frozenset[int]
    from_legacy: frozenset[int]
    description: str


class FastHandle(Protocol):
    """A stream the compiled fast path relays (:mod:`rtc2sip.media.fastlink`): its rewriters, SDES
    context and NACK history are the engine's, so the gateway's own packets and the browser's NACKs
    go through it."""

    def take(self, direction: str, now: float) -> tuple[int, int]: ...
    def protect_legacy(self, packet: bytes) -> bytes: ...
    def retransmit(self, seqs: list[int]) -> int: ...
    def sync(self) -> None: ...  # the engine's counters and statistics into the Python objects


class IceView(Protocol):
    """What the path reads of the session's ICE agent (:class:`~rtc2sip.media.ice.IceAgent`): the
    selected pair's remote address, and whether a source passed a connectivity check (RFC 8445 §7.3.1.4)."""

    @property
    def selected(self) -> Address | None: ...
    def is_validated(self, addr: Address) -> bool: ...


class SessionView(Protocol):
    """All the per-packet path reads, writes and calls of its session (the module docstring's seam):
    what a compiled path reads of :class:`~rtc2sip.media.session.MediaSession`, which satisfies it."""

    # read on every packet
    @property
    def srtp_rx(self) -> SrtpSession | None: ...
    @property
    def srtp_tx(self) -> SrtpSession | None: ...
    @property
    def ice(self) -> IceView: ...
    @property
    def tap(self) -> Tap | None: ...
    @property
    def streams_by_ssrc(self) -> Mapping[int, StreamPath]: ...
    transport: asyncio.DatagramTransport | None  # set by WebRtcProtocol.connection_made
    # a browser packet refused before its stream is known
    dropped: int
    srtp_errors: int
    # (min, max) packets of video history for the browser's NACKs; None: no history
    @property
    def avpf_tail(self) -> tuple[int, int] | None: ...

    # handed up
    def demultiplex(self, plain: bytes, ssrc: int) -> StreamPath | None: ...
    def stun_received(self, data: bytes, addr: Address) -> None: ...
    def dtls_received(self, data: bytes, addr: Address) -> None: ...
    def srtcp_received(self, data: bytes) -> None: ...
    def closed_one(self) -> None: ...


def set_receive_size(transport: asyncio.BaseTransport) -> None:
    if hasattr(transport, "max_size"):  # stock asyncio's selector transport; uvloop sizes its own
        cast(Any, transport).max_size = RECEIVE_SIZE


class StreamPath(asyncio.DatagramProtocol):
    """One media kind's per-packet state and forwarding between the legs (the module's seam)."""

    __slots__ = (
        "clock_rate",
        "coder",
        "fast",
        "history",
        "kind",
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
        "legacy_rtcp_dest",
        "legacy_rtp",
        "legacy_rx",
        "legacy_rx_srtp",
        "legacy_ssrc",
        "legacy_tx_srtp",
        "rtcp_latched",
        "sdes_local",
        "sdp_dest",
        "session",
        "symmetric",
        "to_legacy",
        "to_webrtc",
        "webrtc",
        "webrtc_clock_rate",
        "webrtc_rx",
        "webrtc_ssrc",
    )

    # The legacy RTP socket's protocol is the stream itself: one call less per packet.
    def __init__(self, session: SessionView, kind: str, legacy_port: int, symmetric: bool) -> None:
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
        # Transcoding (rtc2sip.media.stream): every packet is handed up to to_coder instead.
        self.coder: CoderLink | None = None
        # The fast path relays the stream (media.fastlink): Python's per-packet methods are not called
        self.fast: FastHandle | None = None
        self.to_legacy: RtpRewriter | None = None
        self.to_webrtc: RtpRewriter | None = None
        self.webrtc_rx: ReceiveStatistics | None = None
        self.legacy_rx: ReceiveStatistics | None = None
        self.legacy_rtp: asyncio.DatagramTransport | None = None
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
        # Video: what was sent to the browser, for its NACKs (None: audio, or no history wanted)
        self.history: RetransmissionHistory | None = None
        if kind == "video" and session.avpf_tail is not None:
            self.history = RetransmissionHistory(*session.avpf_tail)

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
            self.to_coder(plain, now, True)
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
        fast = self.fast
        seq, ts = rewriter.take(now) if fast is None else fast.take("to_legacy", now)
        first = start is None
        start = ts if start is None else start
        buf = bytearray(RTP_HEADER.pack(0x80, pt | (0x80 if first else 0), seq, start, self.legacy_ssrc))
        buf += bytes((event & 0xFF, (0x80 if end else 0) | 10)) + (min(duration, 0xFFFF)).to_bytes(2, "big")
        tx = self.legacy_tx_srtp
        if tx is not None:  # the engine's SDES context once it relays: one sender per context
            buf_out = tx.protect(bytes(buf)) if fast is None else fast.protect_legacy(bytes(buf))
            transport.sendto(buf_out, dest)
        else:
            transport.sendto(buf, dest)
        self.last_legacy_out = buf
        self.last_legacy_out_time = now
        self.legacy.packets_out += 1
        self.legacy.bytes_out += len(buf)
        return start

    # -- phone -> browser (asyncio.DatagramProtocol of the legacy RTP socket) ----------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.legacy_rtp = cast(asyncio.DatagramTransport, transport)
        set_receive_size(transport)

    def from_legacy(self, data: bytes, addr: Address) -> None:
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
            self.to_coder(data, now, False)
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

    datagram_received = from_legacy  # as the legacy RTP socket's protocol: no call in between

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

    # -- packets of the gateway's own: transcoded output ---------------------------------------------

    def send_coded_legacy(self, packet: OutPacket, now: float) -> None:
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

    def send_coded_webrtc(self, packet: OutPacket, now: float) -> None:
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

    # -- handed up (the concrete stream's: rtc2sip.media.feedback, rtc2sip.media.stream) ---------------

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        """An RTCP datagram from the legacy peer (RTCP socket, or the RTP one when muxed)."""
        raise NotImplementedError

    def to_coder(self, plain: bytes, now: float, from_webrtc: bool) -> None:
        """A packet of a transcoded stream (``coder`` set), received on either leg."""
        raise NotImplementedError


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


class WebRtcProtocol(asyncio.DatagramProtocol):
    """The WebRTC leg's one socket: RFC 7983 §7 first-byte demultiplexing."""

    __slots__ = ("session",)

    def __init__(self, session: SessionView) -> None:
        self.session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.session.transport = cast(asyncio.DatagramTransport, transport)
        set_receive_size(transport)

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

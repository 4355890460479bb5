"""RTCP of one relayed stream, terminated per leg, and video feedback translated between the legs.

Implements RFC 3550 §6.1 and §6.4 (the gateway's own compound SR or RR and SDES CNAME per leg, with
report blocks from what it received there; LSR/DLSR from the peer's SR, RTT from the peer's block
about the gateway's stream), §6.2 and §6.3.1 (5 s interval, randomised), RFC 5761 (rtcp-mux) and
RFC 5506 (reduced size toward the browser), symmetric RTCP latching (RFC 4961), RFC 4585 §6.2.1
(generic NACK answered from the history), §6.3.1 (PLI), RFC 5104 §4.3.1 (FIR, with its sequence
number, §4.3.1.2), §4.2.1 and §4.2.2 (TMMBR answered with TMMBN), REMB
(draft-alvestrand-rmcat-remb), and RFC 2032 §5.2.1 (the older FIR libre sends).

The gateway is an RTP translator that changes SSRCs, so the peer's SR/RR describe streams the other
side never saw (RFC 7667 §3.2.1.3): they are read, never forwarded. A PLI or FIR about the gateway's
stream on one leg becomes a PLI (browser leg) or a PLI and a FIR (legacy leg) about the far peer's
stream on the other, or a keyframe request to the transcoder that produces that stream; REMB and
TMMBR become REMB toward the other leg or the transcoder's target bitrate. The browser's NACKs are
answered from a :class:`~rtc2sip.media.nack.RetransmissionHistory` of what was sent to it
(webrtc2sip's ``avpf-tail-length`` rule), never forwarded: the legacy leg is plain RTP/AVP.

None of this is on the per-packet path (:mod:`rtc2sip.media.path`): it reads the path's receive
statistics, counters and last packets sent, and sends on the path's sockets.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol, cast

from .path import SessionView, StreamPath, set_receive_size
from .ports import Address
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
from .srtp import SrtpError, SrtpSession

__all__ = ["RTCP_INTERVAL", "LegacyRtcpProtocol", "RtcpSessionView", "RtcpStream"]

# RFC 3550 §6.2: 5 s minimum interval, randomised over [0.5, 1.5] (§6.3.1) so legs do not synchronise.
RTCP_INTERVAL = 5.0
PT_FIR_RFC2032 = 192  # RFC 2032 §5.2.1 Full Intra Request, before RFC 5104


class RtcpSessionView(SessionView, Protocol):
    """What the RTCP layer reads of the session beyond the path's :class:`SessionView`: the hook for a
    keyframe request sent to the legacy peer (the plane adds a SIP INFO for it)."""

    @property
    def on_keyframe_request(self) -> Callable[[str], None] | None: ...
    @property
    def srtcp_tx(self) -> SrtpSession | None: ...


class RtcpStream(StreamPath):
    """A stream's RTCP on both legs: reports, feedback translation, NACK answers."""

    __slots__ = (
        "feedback",
        "fir_sequence",
        "last_keyframe_request",
        "legacy_remote_report",
        "legacy_rtcp",
        "legacy_rtt",
        "next_rtcp",
        "webrtc_remote_report",
        "webrtc_rtt",
    )
    session: RtcpSessionView

    def __init__(self, session: RtcpSessionView, kind: str, legacy_port: int, symmetric: bool) -> None:
        super().__init__(session, kind, legacy_port, symmetric)
        self.legacy_rtcp: asyncio.DatagramTransport | None = None
        self.next_rtcp = monotonic() + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        self.webrtc_rtt: float | None = None
        self.legacy_rtt: float | None = None
        self.webrtc_remote_report: dict[str, int] | None = None
        self.legacy_remote_report: dict[str, int] | None = None
        self.fir_sequence = 0  # RFC 5104 §4.3.1.2: one more per new FIR we send
        self.last_keyframe_request = {"webrtc": -1.0, "legacy": -1.0}
        self.feedback: dict[str, int] = {}

    # -- RTCP ---------------------------------------------------------------------------------------

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        """An RTCP datagram from the legacy peer (RTCP socket, or the RTP one when muxed)."""
        if self.fast is not None:  # what follows reads the receive statistics: the engine's
            self.fast.sync()
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
        if self.fast is not None:
            self.fast.sync()
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
        if self.fast is not None:  # the engine keeps what it sent (media.fastlink), and resends it
            self.fast.retransmit(lost)
            return
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
        if self.fast is not None:
            self.fast.sync()
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
        tx, dest, transport = session.srtcp_tx, session.ice.selected, session.transport
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

    def send_reports_if_due(self, now: float, cname: str) -> None:
        """Our reports on both legs once the randomised interval has passed (RFC 3550 §6.2)."""
        if now < self.next_rtcp:
            return
        self.next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        session = self.session
        tx = session.srtcp_tx
        if tx is not None and session.ice.selected is not None and session.transport is not None:
            report = self.build_report("webrtc", now, cname)
            if report is not None:
                session.transport.sendto(tx.protect_rtcp(report), session.ice.selected)
                self.webrtc.rtcp_out += 1
        dest = self.legacy_rtcp_dest
        transport = self.legacy_rtp if self.legacy_mux else self.legacy_rtcp
        if dest is not None and transport is not None and self.to_legacy is not None:
            report = self.build_report("legacy", now, cname)
            if report is not None:
                if self.legacy_tx_srtp is not None:
                    report = self.legacy_tx_srtp.protect_rtcp(report)
                transport.sendto(report, dest)
                self.legacy.rtcp_out += 1


class LegacyRtcpProtocol(asyncio.DatagramProtocol):
    """The legacy RTCP socket (RTP port + 1, RFC 3550 §11)."""

    __slots__ = ("stream",)

    def __init__(self, stream: RtcpStream) -> None:
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.legacy_rtcp = cast(asyncio.DatagramTransport, transport)
        set_receive_size(transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(data) >= 8 and 127 < data[0] < 192:
            self.stream.rtcp_received(data, addr)
        else:
            self.stream.legacy.dropped += 1

    def error_received(self, exc: Exception) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream.session.closed_one()

"""Fuzz targets: one function per surface that reads untrusted bytes (issue 13 item 2).

Each target takes ``bytes`` and calls the real code the way the gateway does on what a peer sent,
catching exactly what the real caller catches (named in each docstring). Anything else that escapes
a target (IndexError, struct.error, UnicodeDecodeError, LookupError, RecursionError, ...) is a bug
of the code under test: fix it there, not here. Hangs are the runner's business (a per-input time
limit, ``tests/fuzz/runner.py``).

Stateful surfaces (a media session, a stream framer) are built once per process and fed every input,
as a long call would be; what a target leaves behind is bounded by the code under test itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.frames import Frame
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol

from rtc2sip.config import ConfigError, read_config_xml_text, read_options_text, settings_from
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.demux import DemuxTable, stun_local_ufrag
from rtc2sip.media.dtls import DtlsEndpoint, DtlsRole, DtlsState
from rtc2sip.media.path import StreamConfig, WebRtcProtocol
from rtc2sip.media.ports import PortAllocator
from rtc2sip.media.rtcp import RtcpParseError, parse_compound
from rtc2sip.media.rtp import RtpPacket, RtpParseError, classify, header_extension, parse_extensions, payload_bounds
from rtc2sip.media.session import MediaSession
from rtc2sip.media.stream import Stream
from rtc2sip.proxy import core
from rtc2sip.sdp import (
    BreakerPolicy,
    Candidate,
    CodecPolicy,
    Fingerprint,
    LegacyEndpoint,
    LegacyPeer,
    SdpError,
    SessionDescription,
    WebRtcEndpoint,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)
from rtc2sip.sip import MessageError, Request, SipParseError, StreamFramer, make_response, parse_message
from rtc2sip.sip.parser import check_request
from rtc2sip.transport.base import Source
from rtc2sip.transport.layer import Limits, TransportLayer
from rtc2sip.transport.stun_keepalive import binding_response

__all__ = ["TARGETS", "Target"]



@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    covers: str


# ---- SIP ------------------------------------------------------------------------------------------------

UDP_SOURCE = Source("udp", "192.0.2.7", 5062, "127.0.0.1", 5060, "udp:127.0.0.1:5060/192.0.2.7:5062")
TCP_SOURCE = Source("tcp", "192.0.2.7", 40123, "127.0.0.1", 5060, "tcp-1")
MAX_MESSAGE_SIZE = 65535


def _is_local(host: str, port: int | None) -> bool:
    return host in ("127.0.0.1", "gw.example.org") and port in (None, 5060)


def _reject_bad(e: MessageError) -> None:
    """Proxy._reject_bad: answer a request that failed to parse, if it can be routed back."""
    msg = e.message
    if isinstance(msg, Request) and msg.method != "ACK":
        try:
            resp = make_response(msg, e.status, e.reason)
            _ = resp.vias
            resp.to_bytes()
        except SipParseError:
            pass


def _handle(msg: Any, source: Source) -> None:
    """What the proxy reads and rewrites of a parsed message (Proxy.on_request/on_response and
    proxy.core); Proxy.on_data catches SipParseError and ValueError around it."""
    try:
        if isinstance(msg, Request):
            check_request(msg, {"outbound", "path"})
            core.fix_via(msg, source)
            core.looped(msg, _is_local)
            core.pop_own_routes(msg, _is_local)
            core.ruri_flow(msg, _is_local)
            core.strip_secret_params(msg)
            core.decrement_max_forwards(msg)
            core.branch_for(msg, "salt")
            core.rewrite_contacts(msg, "127.0.0.1", 5060, source.transport, source.flow_id)
            core.add_record_route(msg, ("127.0.0.1", 5060, source.transport), ("127.0.0.1", 5060, "udp"),
                                  source.flow_id, None)
            for name in ("Contact", "Route", "Record-Route"):
                msg.addresses(name)
            _ = msg.vias
            make_response(msg, 200, "OK", "totag").to_bytes()
        else:
            _ = msg.vias
            core.restore_contacts(msg, _is_local)
            for name in ("Contact", "Record-Route"):
                msg.addresses(name)
        msg.to_bytes()
    except (SipParseError, ValueError):
        pass


def sip_datagram(data: bytes) -> None:
    """A SIP message over UDP or WebSocket (Proxy.on_data, datagram framing): parse_message raises
    only MessageError, answered by _reject_bad; the proxy's handling catches SipParseError/ValueError."""
    try:
        msg = parse_message(data, MAX_MESSAGE_SIZE, datagram=True)
    except MessageError as e:
        _reject_bad(e)
        return
    _handle(msg, UDP_SOURCE)


def sip_stream(data: bytes) -> None:
    """SIP over TCP/TLS: StreamFlow.data_received's StreamFramer fed the input in chunks split where
    the input's first byte says (a stream arrives in any segmentation), then each message parsed with
    stream framing. A framing error is MessageError (the flow salvages and closes)."""
    framer = StreamFramer(MAX_MESSAGE_SIZE)
    sizes = random.Random(data[:1]).choices((1, 2, 5, 13, 100, 1000, 1 << 17), k=64)
    try:
        i, k = 1, 0
        while i < len(data):
            size = sizes[k % 64]
            for m in framer.feed(data[i : i + size]):
                _stream_message(m)
            i += size
            k += 1
    except MessageError:
        for m in framer.salvaged:
            _stream_message(m)
        if framer.rejected is not None:
            _stream_message(framer.rejected)


def _stream_message(m: bytes) -> None:
    try:
        msg = parse_message(m, MAX_MESSAGE_SIZE, datagram=False)
    except MessageError as e:
        _reject_bad(e)
        return
    _handle(msg, TCP_SOURCE)


# ---- SDP ------------------------------------------------------------------------------------------------

_GW_FP = Fingerprint("sha-256", ":".join(f"{i:02X}" for i in range(32)))
_WEB = WebRtcEndpoint("GwUf", "GwPwd0123456789abcdefXY", (_GW_FP,), (Candidate.host("127.0.0.1", 40000),),
                      session_id="7000")
_LEG = LegacyEndpoint("127.0.0.1", {"audio": 30000, "video": 30002}, session_id="8000")
_POLICY = BreakerPolicy(CodecPolicy(("opus", "pcmu", "pcma", "g722", "vp8", "h264-bp")))
_CHROME_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "a=msid-semantic: WMS\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:Lm3p\r\na=ice-pwd:ZqnvTnP4mDtqLHyI4sf8Q4EX\r\na=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 " + ":".join("AB" for _ in range(32)) + "\r\na=setup:actpass\r\na=mid:0\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:480927214 cname:x\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:Lm3p\r\n"
    "a=ice-pwd:ZqnvTnP4mDtqLHyI4sf8Q4EX\r\na=fingerprint:sha-256 " + ":".join("AB" for _ in range(32)) + "\r\n"
    "a=setup:actpass\r\na=mid:1\r\na=sendrecv\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\n"
    "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
)
_LEGACY_OFFER = (
    "v=0\r\no=root 1 1 IN IP4 192.0.2.10\r\ns=Asterisk\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 14562 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    "a=maxptime:150\r\na=sendrecv\r\n"
    "m=video 14564 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\na=sendrecv\r\n"
)
_sdp_state: dict[str, Any] = {}


def _sdp_fixed() -> dict[str, Any]:
    """The other side of each exchange: a browser offer and a legacy offer with their mappings."""
    if not _sdp_state:
        browser = SessionDescription.parse(_CHROME_OFFER)
        _, to_legacy = webrtc_offer_to_legacy(browser, _LEG, _POLICY)
        legacy = SessionDescription.parse(_LEGACY_OFFER)
        _, to_webrtc = legacy_offer_to_webrtc(legacy, _WEB, _POLICY)
        _sdp_state.update(browser=browser, to_legacy=to_legacy, legacy=legacy, to_webrtc=to_webrtc)
    return _sdp_state


def sdp(data: bytes) -> None:
    """An SDP body (breaker/invite.py: SessionDescription.parse, then the media plane's translation
    of it in every role it can have: browser offer, legacy answer, legacy offer, browser answer).
    The breaker catches SdpError (NoCommonCodec is one) and answers 488."""
    try:
        parsed = SessionDescription.parse(data)
    except SdpError:
        return
    str(parsed)
    fixed = _sdp_fixed()
    moves: tuple[Callable[[], Any], ...] = (
        lambda: webrtc_offer_to_legacy(parsed, _LEG, _POLICY),
        lambda: legacy_answer_to_webrtc(parsed, fixed["browser"], _WEB, fixed["to_legacy"]),
        lambda: legacy_offer_to_webrtc(parsed, _WEB, _POLICY),
        lambda: webrtc_answer_to_legacy(parsed, fixed["legacy"], _LEG, fixed["to_webrtc"]),
        lambda: webrtc_offer_to_legacy(parsed, _LEG, _POLICY, previous=fixed["to_legacy"]),
    )
    for move in moves:
        try:
            out, _ = move()
        except SdpError:
            continue
        # what the other peer receives must parse again
        SessionDescription.parse(str(out).encode(), max_size=1 << 20)


# ---- media: one session, built once ---------------------------------------------------------------------

BROWSER = ("127.0.0.1", 6000)
AUDIO_PHONE = ("127.0.0.1", 5000)
VIDEO_PHONE = ("127.0.0.1", 5002)
A_SSRC, V_SSRC = 0x1111, 0x2222


class _Recorder:
    """A datagram transport that keeps only a count (the relay's sendto)."""

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _ClearSrtp:
    """SRTP without the cipher: the fuzzed bytes reach the parsers behind it as if they had been
    authenticated (libsrtp itself is C, not ours, and an authentication tag cannot be guessed)."""

    def unprotect(self, data: bytes) -> bytes:
        return bytes(data)

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return bytes(data)

    def protect(self, data: bytes) -> bytes:
        return bytes(data)

    def protect_rtcp(self, data: bytes) -> bytes:
        return bytes(data)


_media: dict[str, Any] = {}


def _certificate() -> Certificate:
    if "cert" not in _media:
        _media["cert"] = Certificate.generate()
    cert: Certificate = _media["cert"]
    return cert


def media_session() -> tuple[MediaSession, Stream, Stream, WebRtcProtocol]:
    """A bundled audio+video session as tests/unit/test_bundle_demux.py builds it, its sockets
    replaced by counters and its SRTP by :class:`_ClearSrtp`."""
    if "session" not in _media:
        session = MediaSession("fuzz", host="127.0.0.1", ports=PortAllocator(41000, 41100),
                               certificate=_certificate(), symmetric=True, on_failure=lambda reason: None,
                               media_timeout=30, connect_timeout=10)
        audio = Stream(session, "audio", 41000, True)
        video = Stream(session, "video", 41002, True)
        session.streams.update(audio=audio, video=video)
        audio.legacy_rtp = _Recorder()  # type: ignore[assignment]
        video.legacy_rtp = _Recorder()  # type: ignore[assignment]
        audio.legacy_rtcp = _Recorder()  # type: ignore[assignment]
        video.legacy_rtcp = _Recorder()  # type: ignore[assignment]
        session.transport = _Recorder()  # type: ignore[assignment]
        session.ice.selected = BROWSER
        session.ice._validated[BROWSER] = 0.0
        clear: Any = _ClearSrtp()
        session.srtp_rx = session.srtp_tx = clear
        session.accept_early_dtls = True
        session.configure_streams([
            StreamConfig("audio", {111: 0, 0: 0, 126: 101}, {0: 0, 101: 126}, 8000,
                         LegacyPeer(*AUDIO_PHONE, AUDIO_PHONE[0], AUDIO_PHONE[1] + 1), mid="0",
                         webrtc_ssrcs=(A_SSRC,), mid_extmap=4),
            StreamConfig("video", {96: 96}, {96: 96}, 90000,
                         LegacyPeer(*VIDEO_PHONE, VIDEO_PHONE[0], VIDEO_PHONE[1] + 1), mid="1",
                         webrtc_ssrcs=(V_SSRC,), mid_extmap=4),
        ])
        _media.update(session=session, audio=audio, video=video, protocol=WebRtcProtocol(session))
    return _media["session"], _media["audio"], _media["video"], _media["protocol"]


# ---- RTP / RTCP -----------------------------------------------------------------------------------------


def rtp(data: bytes) -> None:
    """An RTP packet on both legs: the browser's (after SRTP, WebRtcProtocol.datagram_received: BUNDLE
    demultiplexing by MID extension, SSRC, PT; the rewrite), the phone's (StreamPath.from_legacy:
    version check, latching, rewrite, NACK history), and the packet codecs the coder and the
    recorder use (RtpParseError is theirs to catch). The relay itself never raises: it counts."""
    _, audio, video, protocol = media_session()
    b0 = bytes([0x80 | (data[0] & 0x3F)]) if data else b""  # keep it RTP, so it reaches the path
    packet = b0 + data[1:]
    protocol.datagram_received(packet, BROWSER)
    audio.from_legacy(packet, AUDIO_PHONE)
    video.from_legacy(packet, VIDEO_PHONE)
    if len(packet) >= 12:
        header_extension(packet, 4)
        payload_bounds(packet)
    try:
        parsed = RtpPacket.parse(data)
        parsed.serialize()
        if parsed.extension_profile is not None:
            parse_extensions(parsed.extension_profile, parsed.extension)
    except RtpParseError:
        pass


def rtcp(data: bytes) -> None:
    """A compound RTCP datagram from each side: the browser's SRTCP (session.srtcp_received: the
    sender SSRC routing, reports, NACK/PLI/FIR/REMB feedback), the phone's on the RTCP socket or
    the muxed RTP one (RtcpStream.rtcp_received: reports, PLI/FIR/TMMBR/REMB). parse_compound itself
    raises only RtcpParseError, which every caller catches."""
    session, audio, video, protocol = media_session()
    b0 = bytes([0x80 | (data[0] & 0x3F)]) if data else b""
    packet = b0 + data[1:]
    if len(packet) >= 2:
        # byte 1 is the packet type: keep it in the RTCP range so WebRtcProtocol sends it to SRTCP
        packet = packet[:1] + bytes([192 + packet[1] % 32]) + packet[2:]
    protocol.datagram_received(packet, BROWSER)
    session.srtcp_received(data)
    audio.rtcp_received(data, AUDIO_PHONE)
    video.rtcp_received(data, VIDEO_PHONE)
    try:
        parse_compound(data)
    except RtcpParseError:
        pass


# ---- STUN, DTLS and the first-byte demux ----------------------------------------------------------------

_demux = DemuxTable()


class _Owner:
    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


_OWNER = _Owner()
_demux.add_ufrag(_OWNER, "GwUf")
_demux.claim_address(_OWNER, BROWSER)


def stun_message(data: bytes) -> None:
    """A STUN datagram where the gateway parses one: the SIP UDP port's keepalive answer
    (UdpEndpoint.datagram_received -> binding_response, which catches ValueError), the shared
    socket's routing by ufrag and transaction (media/demux.py: never raises), and the session's ICE
    agent (IceAgent.datagram: aioice's parser, ValueError caught there)."""
    session, _, _, _ = media_session()
    binding_response(data, "192.0.2.7", 5062)
    stun_local_ufrag(data)
    _demux.route_stun(data, BROWSER, 0.0)
    session.ice.datagram(data, BROWSER)


def dtls(data: bytes) -> None:
    """A DTLS record from the browser to a fresh server endpoint (DtlsEndpoint.feed: OpenSSL's
    errors become states, nothing is raised), then what it answers cut back into records."""
    endpoint = DtlsEndpoint(_certificate(), DtlsRole.SERVER)
    endpoint.feed(data)
    endpoint.datagrams_to_send()
    endpoint.next_timeout(0.0)
    if endpoint.state not in (DtlsState.FAILED, DtlsState.CLOSED):
        endpoint.close()


def demux(data: bytes) -> None:
    """Any datagram on the browser's socket: RFC 7983 first-byte demultiplexing as the shared socket
    routes it (DemuxTable.route) and as the session splits it (WebRtcProtocol.datagram_received:
    STUN to ICE, DTLS to the session's DTLS endpoint, RTP/RTCP to SRTP and the path), and
    rtp.classify. None of them raises."""
    session, _, _, protocol = media_session()
    _demux.route(data, BROWSER, 0.0)
    classify(data)
    protocol.datagram_received(data, BROWSER)
    if session.dtls is not None and session.dtls.state in (DtlsState.FAILED, DtlsState.CLOSED):
        # a failed association fails the session (and stops it reading): start over
        _media.pop("session")
        session.failed = None


# ---- WebSocket ------------------------------------------------------------------------------------------


class _Conn:
    """What TransportLayer._ws_process_request uses of websockets' ServerConnection."""

    def __init__(self, protocol: ServerProtocol) -> None:
        self.protocol = protocol
        self.remote_address = ("192.0.2.7", 40000)

    def respond(self, status: int, text: str) -> Any:
        return self.protocol.reject(status, text)


_layer: list[TransportLayer] = []


def _transport_layer() -> TransportLayer:
    if not _layer:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        layer = TransportLayer(lambda data, src: None, lambda flow_id: None,
                               Limits(ws_origins=("https://gw.example.org",)))
        _layer.append(layer)
    return _layer[0]


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine that never suspends (the WS checks without an HTTP handler) without a loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the coroutine suspended")


WS_SOURCE = Source("ws", "192.0.2.7", 40000, "127.0.0.1", 8080, "ws-1")


def websocket(data: bytes) -> None:
    """A WebSocket connection's bytes (RFC 6455, RFC 7118): websockets' sans-I/O server parses the
    upgrade request, TransportLayer._ws_process_request checks Origin and the sip subprotocol (its
    answer is an HTTP response; an exception there is a 500), then the frames, each whole message
    handed to the SIP parser as _ws_handler does. websockets reports bad frames as events and a
    closed connection, never as exceptions out of receive_data."""
    layer = _transport_layer()
    protocol = ServerProtocol(max_size=MAX_MESSAGE_SIZE)
    head = data.find(b"\r\n\r\n")
    cut = head + 4 if head >= 0 else len(data)
    protocol.receive_data(data[:cut])
    request: WsRequest | None = None
    for event in protocol.events_received():
        if isinstance(event, WsRequest):
            request = event
    if request is None:
        return
    response = _run_coroutine(layer._ws_process_request(_Conn(protocol), request))  # type: ignore[arg-type]
    if response is None:
        response = protocol.accept(request)
    protocol.send_response(response)
    if response.status_code != 101:
        return
    protocol.receive_data(data[cut:])
    for event in protocol.events_received():
        if isinstance(event, Frame) and event.opcode.name in ("TEXT", "BINARY"):
            message: str | bytes
            if event.opcode.name == "TEXT":
                try:
                    message = bytes(event.data).decode("utf-8")
                except UnicodeDecodeError:
                    continue  # websockets' assembler closes with 1007 (RFC 6455 §8.1)
            else:
                message = bytes(event.data)
            payload = message.encode("utf-8", "surrogateescape") if isinstance(message, str) else message
            if not payload.strip(b"\r\n"):
                continue
            try:
                msg = parse_message(payload, MAX_MESSAGE_SIZE, datagram=not WS_SOURCE.reliable)
            except MessageError as e:
                _reject_bad(e)
                continue
            _handle(msg, WS_SOURCE)


# ---- configuration --------------------------------------------------------------------------------------


def config_xml(data: bytes) -> None:
    """webrtc2sip's config.xml (load_settings: read_config_xml, then settings_from's validation);
    the CLI catches ConfigError and exits with its message."""
    try:
        entries, warnings = read_config_xml_text(data)
        settings_from(entries, xml_warnings=warnings, check_files=False)
    except ConfigError:
        pass


def config_toml(data: bytes) -> None:
    """rtc2sip's TOML options (read_options: UTF-8 decoding, read_options_text's TOML and per-key
    checks, then settings_from's cross-checks); ConfigError, as for config.xml."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # read_options turns it into a ConfigError
    try:
        options = read_options_text(text)
        settings_from((), options, check_files=False)
    except ConfigError:
        pass


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("sip_datagram", sip_datagram, "SIP over UDP/WS: parse_message + the proxy's reads and rewrites"),
        Target("sip_stream", sip_stream, "SIP over TCP/TLS: StreamFramer in random chunk splits + parse"),
        Target("sdp", sdp, "SDP parse + the breaker's four translations + reparse of the output"),
        Target("stun", stun_message, "STUN: SIP-port keepalive, shared-socket routing, ICE agent (aioice)"),
        Target("rtp", rtp, "RTP: browser leg (BUNDLE demux, rewrite), phone leg (latch, rewrite), codecs"),
        Target("rtcp", rtcp, "RTCP compounds both legs: reports and feedback translation"),
        Target("dtls", dtls, "DTLS records into a server endpoint (OpenSSL)"),
        Target("demux", demux, "RFC 7983 first-byte demux: shared socket table + session split"),
        Target("websocket", websocket, "WS upgrade checks (Origin, subprotocol) + frames + SIP"),
        Target("config_xml", config_xml, "config.xml reader + validation"),
        Target("config_toml", config_toml, "TOML options reader + validation"),
    )
}


"""IPv6 on the media plane's packet path: peers' addresses from SDP and ICE are kept in the form an
AF_INET6 socket reports a datagram's source (a 4-tuple), so the relay's per-packet ``==`` checks
(ICE-validated source, symmetric RTP latching) hold for IPv6 as they do for IPv4."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace
from typing import Any

from rtc2sip.config import Settings
from rtc2sip.config.webrtc2sip import Listener
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.ice import IceAgent
from rtc2sip.media.path import StreamConfig, WebRtcProtocol
from rtc2sip.media.plane import MediaPlane
from rtc2sip.media.ports import PortAllocator, wire_address
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.session import MediaSession
from rtc2sip.media.sessionstats import _fmt
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession
from rtc2sip.media.stream import Stream
from rtc2sip.sdp import LegacyPeer
from rtc2sip.sdp.model import SessionDescription


def test_wire_address_forms() -> None:
    assert wire_address("127.0.0.1", 5) == ("127.0.0.1", 5)
    assert wire_address("::1", 5) == ("::1", 5, 0, 0)
    assert wire_address("FD00:0:0::01", 5) == ("fd00::1", 5, 0, 0)  # compressed, as the kernel gives it
    assert wire_address("phone.example.com", 5) == ("phone.example.com", 5)


def test_ice_keeps_validated_and_selected_addresses_as_the_socket_reports_them() -> None:
    agent = IceAgent(name="v6")
    agent._validate(("::1", 4000))  # aioice hands (host, port)
    agent._select(("0:0::1", 4000))
    assert agent.is_validated(("::1", 4000, 0, 0))
    assert agent.selected == ("::1", 4000, 0, 0)
    agent._validate(("127.0.0.1", 4001))
    assert agent.is_validated(("127.0.0.1", 4001))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append((bytes(data), addr))


def test_relay_over_ipv6_both_legs() -> None:
    browser, phone = ("::1", 6000, 0, 0), ("::1", 5000, 0, 0)
    key = os.urandom(30)
    session = MediaSession("v6", host="::1", ports=PortAllocator(42000, 42100), certificate=Certificate.generate(),
                           symmetric=True, on_failure=lambda reason: None, media_timeout=30, connect_timeout=10)
    stream = Stream(session, "audio", 42000, True)
    session.streams["audio"] = stream
    session.configure_streams([StreamConfig("audio", {0: 0}, {0: 0}, 8000, LegacyPeer("::1", 5000, "::1", 5001))])
    to_browser, to_phone = Recorder(), Recorder()
    session.transport = to_browser  # type: ignore[assignment]
    stream.legacy_rtp = to_phone  # type: ignore[assignment]
    session.ice._select(("::1", 6000))
    session.srtp_rx = SrtpSession(AES128_CM_SHA1_80, key, outbound=False)
    session.srtp_tx = SrtpSession(AES128_CM_SHA1_80, os.urandom(30), outbound=True)
    srtp = SrtpSession(AES128_CM_SHA1_80, key, outbound=True)
    WebRtcProtocol(session).datagram_received(srtp.protect(build_rtp(0, 1, 160, 77, bytes(160))), browser)
    assert [addr for _, addr in to_phone.sent] == [phone]
    stream.datagram_received(build_rtp(0, 1, 160, 88, bytes(160)), phone)
    assert [addr for _, addr in to_browser.sent] == [browser]
    summary = session.stats()["streams"]["audio"]["legacy"]  # type: ignore[index]
    # the phone sends from where its SDP said: latched, and no NAT seen
    assert summary["latched"] and not summary["nat"] and summary["remote"] == "[::1]:5000"
    assert _fmt(("127.0.0.1", 1)) == "127.0.0.1:1"


def _listeners(*spec: tuple[str, str]) -> Settings:
    return dataclasses.replace(Settings(), listeners=tuple(Listener(t, h, 5060) for t, h in spec))


def test_each_leg_takes_the_address_of_its_signalling() -> None:
    from rtc2sip.app import Gateway

    def hosts(settings: Settings) -> tuple[str, str]:
        app = SimpleNamespace(settings=settings)
        return Gateway._media_host(app, webrtc=True), Gateway._media_host(app)  # type: ignore[arg-type]

    assert hosts(_listeners(("udp", "::1"), ("ws", "127.0.0.1"))) == ("127.0.0.1", "::1")
    assert hosts(_listeners(("ws", "::1"), ("udp", "127.0.0.1"))) == ("::1", "127.0.0.1")
    assert hosts(_listeners(("udp", "10.0.0.1"), ("tcp", "10.0.0.1"))) == ("10.0.0.1", "10.0.0.1")
    # a wildcard listener does not name an address: the next one does
    assert hosts(_listeners(("ws", "0.0.0.0"), ("udp", "::1"))) == ("::1", "::1")


async def test_plane_translates_ipv4_browser_leg_to_ipv6_legacy_leg() -> None:
    """Browser on 127.0.0.1, phone on ::1: c=IN IP6 and a=rtcp toward the phone, the legacy sockets
    bound on ::1; the browser's answer carries IPv4 candidates only."""
    plane = MediaPlane(Settings(), Certificate.generate(), host="127.0.0.1", legacy_host="::1",
                       port_range=(42200, 42299))
    offer = SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n"
        "a=candidate:1 1 udp 2113937151 127.0.0.1 6000 typ host\r\na=ice-ufrag:brws\r\n"
        "a=ice-pwd:browserpassword0123456789\r\na=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\n"
        "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    try:
        session, legacy_offer = await plane.offer_from_webrtc("call-46", offer)
        text = str(legacy_offer)
        assert "c=IN IP6 ::1\r\n" in text and "IP4" not in text.split("s=", 1)[1], text
        phone = SessionDescription.parse(
            "v=0\r\no=- 7 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
            "m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
        answer = await plane.answer_from_legacy(session, phone)
        assert [c.ip for c in answer.media[0].candidates] == ["127.0.0.1"]
        assert answer.media[0].connection is not None and answer.media[0].connection.host == "127.0.0.1"
        stream: Any = plane.stats(session)["streams"]["audio"]  # type: ignore[index]
        assert stream["legacy"]["announced"] == "[::1]:5000"
    finally:
        await plane.close()

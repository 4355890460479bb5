"""IPv6 on the media plane's packet path: peers' addresses from SDP and ICE are kept in the form an
AF_INET6 socket reports a datagram's source (a 4-tuple), so the relay's per-packet ``==`` checks
(ICE-validated source, symmetric RTP latching) hold for IPv6 as they do for IPv4."""

from __future__ import annotations

import os

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.ice import IceAgent
from rtc2sip.media.ports import PortAllocator, wire_address
from rtc2sip.media.relay import MediaSession, StreamConfig, _fmt, _Stream, _WebRtcProtocol
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession
from rtc2sip.sdp.translate import LegacyPeer


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
    stream = _Stream(session, "audio", 42000, True)
    session.streams["audio"] = stream
    session.configure_streams([StreamConfig("audio", {0: 0}, {0: 0}, 8000, LegacyPeer("::1", 5000, "::1", 5001))])
    to_browser, to_phone = Recorder(), Recorder()
    session.transport = to_browser  # type: ignore[assignment]
    stream.legacy_rtp = to_phone  # type: ignore[assignment]
    session.ice._select(("::1", 6000))
    session.srtp_rx = SrtpSession(AES128_CM_SHA1_80, key, outbound=False)
    session.srtp_tx = SrtpSession(AES128_CM_SHA1_80, os.urandom(30), outbound=True)
    srtp = SrtpSession(AES128_CM_SHA1_80, key, outbound=True)
    _WebRtcProtocol(session).datagram_received(srtp.protect(build_rtp(0, 1, 160, 77, bytes(160))), browser)
    assert [addr for _, addr in to_phone.sent] == [phone]
    stream.datagram_received(build_rtp(0, 1, 160, 88, bytes(160)), phone)
    assert [addr for _, addr in to_browser.sent] == [browser]
    summary = session.stats()["streams"]["audio"]["legacy"]  # type: ignore[index]
    # the phone sends from where its SDP said: latched, and no NAT seen
    assert summary["latched"] and not summary["nat"] and summary["remote"] == "[::1]:5000"
    assert _fmt(("127.0.0.1", 1)) == "127.0.0.1:1"

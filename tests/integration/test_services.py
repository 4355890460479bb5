"""The built-in services ``sip:echo@DOMAIN`` and ``sip:diag@DOMAIN`` with a hand-written UDP phone.

The gateway runs in-process on loopback; the phone calls through its proxy (plain RTP, no breaker),
which routes a local-domain ``echo``/``diag`` Request-URI to the services' UAS. The echo call gets back
the RTP it sends; the diag call announces one RTP port and sends from another, and the verdict that
comes back in a MESSAGE names both; a diag call that sends nothing hears "no media received".
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.sdp import SessionDescription
from rtc2sip.sip import Response
from rtc2sip.web.api import calls_view
from sip_phone import HOST, SipPhone, udp_socket


class Phone(SipPhone):
    def invite(self, user: str, sdp_port: int, gw: int) -> None:  # type: ignore[override]
        super().invite(user, f"m=audio {sdp_port} RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n"
                       "a=rtpmap:101 telephone-event/8000\na=sendrecv\n", gw)


def rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def media_address(sdp: SessionDescription) -> tuple[str, int]:
    m = sdp.media[0]
    assert m.connection is not None
    return m.connection.host, m.port


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        listeners=(Listener("udp", HOST, 0), Listener("ws", HOST, 0)),
        gateway=GatewayOptions(data_dir=tmp_path, diag_duration=1),
    )
    gw = Gateway(settings)
    await gw.start()
    assert gw.services is not None
    gw.services.diag.wait = 1.0  # the no-media case need not wait the default 5 s
    yield gw
    await gw.stop()


def udp_port(gw: Gateway) -> int:
    return next(la.port for la in gw.listening if la.transport == "udp")


def reinvite(phone: SipPhone, media: str, gw: int) -> None:
    """A re-INVITE in the dialog with an SDP re-offer whose m= sections are ``media``."""
    phone.cseq += 1
    body = (f"v=0\no=- 1 2 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n{media}").replace("\n", "\r\n")
    routes = "".join(f"Route: {r}\n" for r in phone.route)
    phone.send(
        f"INVITE {phone.target} SIP/2.0\n"
        f"Via: SIP/2.0/UDP {HOST}:{phone.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
        f"{routes}Max-Forwards: 70\nFrom: <sip:alice@{HOST}>;tag=a1\nTo: {phone.to}\n"
        f"Call-ID: {phone.call_id}\nCSeq: {phone.cseq} INVITE\nContact: <sip:alice@{HOST}:{phone.port}>\n"
        f"Content-Type: application/sdp\nContent-Length: {len(body)}\n\n{body}", gw)


async def test_echo_takes_a_stream_added_by_a_reinvite(gateway: Gateway) -> None:
    """A camera turned on mid-call: the re-offer adds m=video; the echo answers it on new sockets and
    returns its packets, the audio stream keeps its port."""
    gw = udp_port(gateway)
    phone, audio, video = Phone(), udp_socket(), udp_socket()
    loop = asyncio.get_running_loop()
    try:
        phone.invite("echo", audio.getsockname()[1], gw)
        first = await phone.answered()
        phone.in_dialog("ACK", gw)
        reinvite(phone, f"m=audio {audio.getsockname()[1]} RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n"
                        f"m=video {video.getsockname()[1]} RTP/AVP 96\na=rtpmap:96 VP8/90000\na=sendrecv\n", gw)
        ok = await phone.expect("SIP/2.0 200")
        assert isinstance(ok, Response) and ok.cseq.method == "INVITE" and ok.cseq.number == phone.cseq
        answer = SessionDescription.parse(ok.body)
        phone.in_dialog("ACK", gw)
        assert [m.kind for m in answer.media] == ["audio", "video"]
        assert answer.media[0].port == first.media[0].port  # same sockets
        assert answer.media[1].port not in (0, answer.media[0].port)
        assert [c.name for c in answer.media[1].codecs] == ["VP8"]
        dest = (HOST, answer.media[1].port)
        packet = struct.pack("!BBHII", 0x80, 0x80 | 96, 1, 3000, 0x55667788) + b"\x90\x80\x80\x01" + bytes(100)
        video.sendto(packet, dest)
        back = await asyncio.wait_for(loop.sock_recv(video, 2048), 2.0)
        assert back[12:] == packet[12:]
        audio.sendto(rtp(1), media_address(answer))
        assert (await asyncio.wait_for(loop.sock_recv(audio, 2048), 2.0))[12:] == rtp(1)[12:]
        phone.in_dialog("BYE", gw)
        assert (await phone.expect("SIP/2.0 200")).cseq.method == "BYE"
        await asyncio.sleep(0.05)
        assert gateway.services is not None and not gateway.services.uas.calls
    finally:
        phone.close()
        audio.close()
        video.close()


async def test_echo_returns_the_callers_rtp(gateway: Gateway) -> None:
    gw = udp_port(gateway)
    phone, media = Phone(), udp_socket()
    loop = asyncio.get_running_loop()
    try:
        phone.invite("echo", media.getsockname()[1], gw)
        answer = await phone.answered()
        assert answer.media[0].payload_types == [0, 101]  # PCMU and its telephone-event
        phone.in_dialog("ACK", gw)
        dest = media_address(answer)
        for seq in range(1, 11):
            media.sendto(rtp(seq), dest)
            back = await asyncio.wait_for(loop.sock_recv(media, 2048), 2.0)
            sent = rtp(seq)
            assert back[12:] == sent[12:] and back[2:8] == sent[2:8]  # payload, sequence, timestamp
            assert back[8:12] != sent[8:12]  # under another SSRC (RFC 3550 §8.2)
        phone.in_dialog("BYE", gw)
        assert (await phone.expect("SIP/2.0 200")).cseq.method == "BYE"
        await asyncio.sleep(0.05)
        assert gateway.services is not None and not gateway.services.uas.calls
    finally:
        phone.close()
        media.close()


async def test_diag_reports_rtp_from_another_port_than_announced(gateway: Gateway) -> None:
    gw = udp_port(gateway)
    phone, announced, real = Phone(), udp_socket(), udp_socket()
    a_port, b_port = announced.getsockname()[1], real.getsockname()[1]
    try:
        phone.invite("diag", a_port, gw)
        dest = media_address(await phone.answered())
        phone.in_dialog("ACK", gw)
        for seq in range(1, 30):
            real.sendto(rtp(seq), dest)
            await asyncio.sleep(0.02)
        msg = await phone.expect("MESSAGE", timeout=6.0)
        text = msg.body.decode()
        assert f"RTP comes from {HOST}:{b_port} but SDP announced {HOST}:{a_port}" in text, text
        assert "NAT in the path, symmetric RTP needed" in text
        assert msg.get("Content-Type", ).startswith("text/plain")  # type: ignore[union-attr]
        assert msg.call_id == phone.call_id  # in the dialog
        phone.reply(msg, 200, gw)
        bye = await phone.expect("BYE", timeout=6.0)
        phone.reply(bye, 200, gw)
        view = calls_view(None, None, gateway.monitor)["diagnostics"]
        assert view and view[0]["verdict"] == "nat" and view[0]["call_id"] == phone.call_id
    finally:
        phone.close()
        announced.close()
        real.close()


async def test_diag_without_media(gateway: Gateway) -> None:
    gw = udp_port(gateway)
    phone, media = Phone(), udp_socket()
    try:
        phone.invite("diag", media.getsockname()[1], gw)
        await phone.answered()
        phone.in_dialog("ACK", gw)
        msg = await phone.expect("MESSAGE", timeout=6.0)
        assert msg.body.decode().startswith("no media received"), msg.body
        phone.reply(msg, 200, gw)
        phone.reply(await phone.expect("BYE", timeout=6.0), 200, gw)
    finally:
        phone.close()
        media.close()


async def test_diag_media_as_announced(gateway: Gateway) -> None:
    gw = udp_port(gateway)
    phone, media = Phone(), udp_socket()
    try:
        phone.invite("diag", media.getsockname()[1], gw)
        dest = media_address(await phone.answered())
        phone.in_dialog("ACK", gw)
        for seq in range(1, 20):
            media.sendto(rtp(seq), dest)
            await asyncio.sleep(0.02)
        msg = await phone.expect("MESSAGE", timeout=6.0)
        assert msg.body.decode().startswith("media as announced"), msg.body
        phone.reply(msg, 200, gw)
        phone.reply(await phone.expect("BYE", timeout=6.0), 200, gw)
    finally:
        phone.close()
        media.close()


async def test_unknown_service_user_is_not_routed(gateway: Gateway) -> None:
    phone = Phone()
    try:
        phone.invite("nobody", 4000, udp_port(gateway))
        assert (await phone.expect("SIP/2.0 4")).status == 480  # no binding: the usual answer
    finally:
        phone.close()

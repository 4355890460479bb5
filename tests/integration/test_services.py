"""The built-in services ``sip:echo@DOMAIN`` and ``sip:diag@DOMAIN`` with a hand-written UDP phone.

The gateway runs in-process on loopback; the phone calls through its proxy (plain RTP, no breaker),
which routes a local-domain ``echo``/``diag`` Request-URI to the services' UAS. The echo call gets back
the RTP it sends; the diag call announces one RTP port and sends from another, and the verdict that
comes back in a MESSAGE names both; a diag call that sends nothing hears "no media received".
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.sdp import SessionDescription
from rtc2sip.sip import Request, Response, parse_message
from rtc2sip.web.api import calls_view

HOST = "127.0.0.1"


class Phone:
    """A UDP SIP phone with just enough dialog logic: INVITE, ACK, answer requests, BYE."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.route: list[str] = []
        self.target = ""
        self.to = ""
        self.cseq = 1

    def send(self, text: str, port: int) -> None:
        self.sock.sendto(re.sub(r"(?<!\r)\n", "\r\n", text).encode(), (HOST, port))

    async def recv(self, timeout: float) -> Request | Response:
        loop = asyncio.get_running_loop()
        return parse_message(await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout))

    async def expect(self, pred: str, timeout: float = 5.0) -> Request | Response:
        end = asyncio.get_running_loop().time() + timeout
        while True:
            m = await self.recv(max(0.05, end - asyncio.get_running_loop().time()))
            if pred in m.start_line():
                return m

    def invite(self, user: str, sdp_port: int, gw: int) -> None:
        body = (f"v=0\no=- 1 1 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n"
                f"m=audio {sdp_port} RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
                "a=sendrecv\n").replace("\n", "\r\n")
        self.send(
            f"INVITE sip:{user}@{HOST} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
            f"Max-Forwards: 70\nFrom: <sip:alice@{HOST}>;tag=a1\nTo: <sip:{user}@{HOST}>\n"
            f"Call-ID: {self.call_id}\nCSeq: 1 INVITE\nContact: <sip:alice@{HOST}:{self.port}>\n"
            f"Content-Type: application/sdp\nContent-Length: {len(body)}\n\n{body}", gw)

    async def answered(self) -> SessionDescription:
        ok = await self.expect("SIP/2.0 200")
        assert isinstance(ok, Response)
        self.route = list(reversed(ok.values("Record-Route")))
        self.target = ok.values("Contact")[0].strip("<>")
        self.to = ok.get("To") or ""
        return SessionDescription.parse(ok.body)

    def in_dialog(self, method: str, gw: int) -> None:
        """ACK or BYE: to the first Route (the proxy), Request-URI the service's Contact."""
        if method != "ACK":
            self.cseq += 1
        routes = "".join(f"Route: {r}\n" for r in self.route)
        self.send(
            f"{method} {self.target} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
            f"{routes}Max-Forwards: 70\nFrom: <sip:alice@{HOST}>;tag=a1\nTo: {self.to}\n"
            f"Call-ID: {self.call_id}\nCSeq: {self.cseq} {method}\nContent-Length: 0\n\n", gw)

    def reply(self, req: Request | Response, status: int, gw: int) -> None:
        assert isinstance(req, Request)
        lines = [f"SIP/2.0 {status} OK"]
        lines += [f"{n}: {v}" for n, v in req.headers if n in ("Via", "From", "To", "Call-ID", "CSeq")]
        self.send("\n".join(lines) + "\nContent-Length: 0\n\n", gw)

    def close(self) -> None:
        self.sock.close()


def rtp(seq: int, ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def media_address(sdp: SessionDescription) -> tuple[str, int]:
    m = sdp.media[0]
    assert m.connection is not None
    return m.connection.host, m.port


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


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

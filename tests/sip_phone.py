"""A bare UDP SIP phone for the integration tests of the in-process services (echo, diag, testpattern)."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid

from rtc2sip.sdp import SessionDescription
from rtc2sip.sip import Request, Response, parse_message

HOST = "127.0.0.1"


class SipPhone:
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

    def invite(self, user: str, media: str, gw: int) -> None:
        """INVITE sip:USER@127.0.0.1 with an SDP offer whose m= sections are ``media`` (LF-separated)."""
        body = (f"v=0\no=- 1 1 IN IP4 {HOST}\ns=-\nc=IN IP4 {HOST}\nt=0 0\n{media}").replace("\n", "\r\n")
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


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s

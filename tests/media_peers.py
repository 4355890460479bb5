"""Media plane peers for tests: a fake browser (aioice.stun checks, DTLS client or server from
rtc2sip.media.dtls, SRTP) and a plain RTP phone, on local UDP sockets; used by the in-process plane's
unit tests and the worker-process plane's integration tests alike."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, cast

from aioice import stun

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.dtls import DtlsEndpoint, DtlsRole, DtlsState
from rtc2sip.media.rtp import RtpPacket, build_rtp
from rtc2sip.media.srtp import SrtpSession
from rtc2sip.sdp import SessionDescription

GW_CERT = Certificate.generate("gateway")
BROWSER_CERT = Certificate.generate("browser")
OTHER_CERT = Certificate.generate("someone-else")
Address = tuple[str, int]


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------------------------------
# Peers


class FakeBrowser(asyncio.DatagramProtocol):
    """The browser side in miniature: a minimal ICE agent (one check with USE-CANDIDATE when
    controlling; answers the gateway's checks once it has the gateway's SDP), DTLS, SRTP."""

    ufrag = "brws"
    pwd = "browserpassword0123456789"

    def __init__(self, advertised_cert: Certificate = BROWSER_CERT) -> None:
        self.advertised_cert = advertised_cert
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.gateway: Address | None = None
        self.gw_pwd = ""
        self.gw_ufrag = ""
        self.dtls: DtlsEndpoint | None = None
        self.tx: SrtpSession | None = None
        self.rx: SrtpSession | None = None
        self.received: list[RtpPacket] = []
        self.rtcp: list[bytes] = []
        self.stun_responses: asyncio.Queue[stun.Message] = asyncio.Queue()
        self._timer: asyncio.Task[None] | None = None
        self.controlling = True
        self.answering = False  # answers the gateway's checks (after connect())
        self.checks_received: list[stun.Message] = []

    async def start(self) -> FakeBrowser:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if data[0] < 4:
            message = stun.parse_message(data)
            if message.message_class == stun.Class.REQUEST:
                self._answer_check(message, addr)
            else:
                self.stun_responses.put_nowait(message)
        elif 19 < data[0] < 64 and self.dtls is not None:
            self.dtls.feed(data)
            self._flush()
        elif 127 < data[0] < 192 and self.rx is not None:
            if 191 < data[1] < 224:
                self.rtcp.append(self.rx.unprotect_rtcp(data))
            else:
                self.received.append(RtpPacket.parse(self.rx.unprotect(data)))

    def _answer_check(self, request: stun.Message, addr: Address) -> None:
        if not self.answering or self.transport is None or not request.check_message_integrity(self.pwd.encode()):
            return
        self.checks_received.append(request)
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id,
                                attributes={"XOR-MAPPED-ADDRESS": addr})
        response.add_message_integrity(self.pwd.encode())
        self.transport.sendto(bytes(response), addr)

    def _flush(self) -> None:
        assert self.dtls is not None and self.transport is not None and self.gateway is not None
        for datagram in self.dtls.datagrams_to_send():
            self.transport.sendto(datagram, self.gateway)
        if self.dtls.state is DtlsState.CONNECTED and self.tx is None:
            assert self.dtls.srtp_keys is not None
            self.tx = self.dtls.srtp_keys.tx_session()
            self.rx = self.dtls.srtp_keys.rx_session()

    def _transport_sdp(self, setup: str) -> str:
        return (
            f"c=IN IP4 127.0.0.1\r\n"
            f"a=candidate:1 1 udp 2113937151 127.0.0.1 {self.port} typ host\r\n"
            f"a=ice-ufrag:{self.ufrag}\r\na=ice-pwd:{self.pwd}\r\n"
            f"a=fingerprint:{self.advertised_cert.sdp_fingerprint}\r\na=setup:{setup}\r\na=mid:0\r\n"
            "a=sendrecv\r\na=rtcp-mux\r\n"
        )

    def offer(self) -> SessionDescription:
        return SessionDescription.parse(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
            f"m=audio {self.port} UDP/TLS/RTP/SAVPF 111 0 126\r\n" + self._transport_sdp("actpass")
            + "a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\n"
            "a=ssrc:1111 cname:fake\r\n"
        )

    def answer(self, setup: str = "active") -> SessionDescription:
        return SessionDescription.parse(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
            f"m=audio {self.port} UDP/TLS/RTP/SAVPF 0 126\r\n" + self._transport_sdp(setup)
            + "a=rtpmap:0 PCMU/8000\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:1111 cname:fake\r\n"
        )

    async def connect(self, gw_sdp: SessionDescription, role: DtlsRole = DtlsRole.CLIENT) -> None:
        """ICE check with USE-CANDIDATE toward the gateway's candidate, then DTLS (our side ``role``)."""
        media = gw_sdp.media[0]
        cand = media.candidates[0]
        self.gateway = (cand.ip, cand.port)
        self.gw_ufrag, self.gw_pwd = media.ice_ufrag or "", media.ice_pwd or ""
        # RFC 8445 §6.1.1: the offerer controls; an actpass SDP from the gateway is its offer.
        self.controlling = media.setup != "actpass"
        self.answering = True
        response = await self.check(use_candidate=self.controlling)
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", self.port)
        self.dtls = DtlsEndpoint(BROWSER_CERT, role, [f"{f.algorithm} {f.value}" for f in media.fingerprints])
        self.dtls.start()
        self._flush()
        self._timer = asyncio.get_running_loop().create_task(self._dtls_timer())

    async def check(self, *, use_candidate: bool = False, pwd: str | None = None) -> stun.Message:
        assert self.transport is not None and self.gateway is not None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.gw_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLING" if self.controlling else "ICE-CONTROLLED"] = 0x1234
        if use_candidate:
            request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity((pwd or self.gw_pwd).encode())
        self.transport.sendto(bytes(request), self.gateway)
        response = await asyncio.wait_for(self.stun_responses.get(), 2)
        assert response.transaction_id == request.transaction_id
        if response.message_class == stun.Class.RESPONSE:
            assert response.check_message_integrity(self.gw_pwd.encode())
        return response

    async def _dtls_timer(self) -> None:
        while self.dtls is not None:
            now = time.monotonic()
            due = self.dtls.next_timeout(now)
            await asyncio.sleep(0.05 if due is None else max(0.01, due - now))
            self.dtls.handle_timeout(time.monotonic())
            self._flush()

    def send_rtp(self, pt: int, seq: int, payload: bytes, ssrc: int = 1111) -> None:
        assert self.tx is not None and self.transport is not None and self.gateway is not None
        self.transport.sendto(self.tx.protect(build_rtp(pt, seq, seq * 160, ssrc, payload)), self.gateway)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


class Phone(asyncio.DatagramProtocol):
    """A plain RTP/AVP endpoint."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.received: list[RtpPacket] = []
        self.sources: list[Address] = []
        self.rtcp: list[bytes] = []

    async def start(self) -> Phone:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if 191 < data[1] < 224:
            self.rtcp.append(data)
            return
        self.received.append(RtpPacket.parse(data))
        self.sources.append(addr)

    def sdp(self, port: int | None = None, *, offer: bool = False, extra: str = "") -> SessionDescription:
        return SessionDescription.parse(
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port or self.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n" + extra
        )

    def send_rtp(self, dest: Address, pt: int, seq: int, payload: bytes, ssrc: int = 2222) -> None:
        assert self.transport is not None
        self.transport.sendto(build_rtp(pt, seq, seq * 160, ssrc, payload), dest)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def legacy_address(sdp: SessionDescription) -> Address:
    media = sdp.media[0]
    conn = media.connection
    assert conn is not None
    return conn.host, media.port



async def browser_calls_phone(plane: Any, browser: FakeBrowser, phone: Phone) -> tuple[str, SessionDescription]:
    session, legacy_offer = await plane.offer_from_webrtc("call-1", browser.offer())
    assert legacy_offer.media[0].proto == "RTP/AVP"
    browser_answer = await plane.answer_from_legacy(session, phone.sdp())
    assert not browser_answer.ice_lite and browser_answer.media[0].setup == "passive"
    await browser.connect(browser_answer)
    await until(lambda: browser.tx is not None, what="DTLS")
    return session, legacy_offer

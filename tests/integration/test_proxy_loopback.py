"""The gateway in-process, driven by hand-written SIP over real loopback sockets.

These check the proxy's routing rules message by message (what headers it adds, where it sends);
the end-to-end tests under tests/e2e prove the same paths with real browsers and phones. The RTCWeb
Breaker is off here (`breaker = "never"`): these fake browsers speak no DTLS.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.sip import MessageError, Request, Response, parse_message


class UdpPhone:
    """A bare UDP SIP endpoint: sends text, receives parsed messages."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def send(self, text: str, port: int) -> None:
        data = re.sub(r"(?<!\r)\n", "\r\n", text).encode()
        self.sock.sendto(data, ("127.0.0.1", port))

    def send_raw(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    async def recv(self, timeout: float = 3.0) -> Request | Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        try:
            return parse_message(data)
        except MessageError as e:
            # a 400 echoes the very header it complains about: look at it anyway
            assert e.message is not None, data
            return e.message  # type: ignore[return-value]

    async def expect(self, pred: str, timeout: float = 3.0) -> Request | Response:
        """The next message whose start line contains ``pred`` (skipping others, e.g. 100 Trying)."""
        end = asyncio.get_running_loop().time() + timeout
        while True:
            m = await self.recv(max(0.05, end - asyncio.get_running_loop().time()))
            if pred in m.start_line():
                return m

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("tcp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, breaker="never"),
    )
    gw = Gateway(settings)
    await gw.start()
    yield gw
    await gw.stop()


def port_of(gw: Gateway, transport: str) -> int:
    return next(la.port for la in gw.listening if la.transport == transport)


def register(user: str, phone: UdpPhone, expires: int = 3600) -> str:
    cid = uuid.uuid4().hex
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport\n"
        f"Max-Forwards: 70\nFrom: <sip:{user}@127.0.0.1>;tag=r1\nTo: <sip:{user}@127.0.0.1>\n"
        f"Call-ID: {cid}\nCSeq: 1 REGISTER\nContact: <sip:{user}@127.0.0.1:{phone.port}>\n"
        f"Expires: {expires}\nContent-Length: 0\n\n"
    )


def invite(frm: str, to: str, phone: UdpPhone, call_id: str, branch: str) -> str:
    body = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n"
    body = body.replace("\n", "\r\n")
    return (
        f"INVITE sip:{to}@127.0.0.1 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch={branch};rport\n"
        f"Max-Forwards: 70\nFrom: <sip:{frm}@127.0.0.1>;tag=c1\nTo: <sip:{to}@127.0.0.1>\n"
        f"Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:{frm}@127.0.0.1:{phone.port}>\n"
        f"Content-Type: application/sdp\nContent-Length: {len(body)}\n\n"
    ) + body


def answer(req: Request | Response, status: int, phone: UdpPhone, to_tag: str = "b1") -> str:
    assert isinstance(req, Request)
    lines = [f"SIP/2.0 {status} X"]
    for name, value in req.headers:
        if name in ("Via", "Record-Route", "From", "Call-ID", "CSeq"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag={to_tag}")
    lines.append(f"Contact: <sip:bob@127.0.0.1:{phone.port}>")
    lines.append("Content-Length: 0")
    return "\n".join(lines) + "\n\n"


async def test_udp_register_invite_bye(gateway: Gateway) -> None:
    udp = port_of(gateway, "udp")
    bob, alice = UdpPhone(), UdpPhone()
    try:
        bob.send(register("bob", bob), udp)
        ok = await bob.expect("200")
        assert isinstance(ok, Response)
        assert "expires=" in (ok.get("Contact") or "")

        call_id = uuid.uuid4().hex
        alice.send(invite("alice", "bob", alice, call_id, "z9hG4bKinv1"), udp)
        trying = await alice.expect("100")
        assert trying.call_id == call_id
        inv = await bob.expect("INVITE")
        assert isinstance(inv, Request)
        assert inv.uri_text == f"sip:bob@127.0.0.1:{bob.port}"
        assert len(inv.vias) == 2 and inv.get("Record-Route")
        assert inv.get("Max-Forwards") == "69"
        assert inv.body.startswith(b"v=0")

        bob.send(answer(inv, 180, bob), udp)
        ringing = await alice.expect("180")
        assert len(ringing.vias) == 1
        bob.send(answer(inv, 200, bob), udp)
        ok = await alice.expect("200")
        assert isinstance(ok, Response) and ok.to.tag == "b1"
        rr = ok.values("Record-Route")
        assert rr, "the 2xx keeps the Record-Route set"

        # ACK and BYE follow the route set (§12.2.1.1) through the proxy
        route = "".join(f"Route: {r}\n" for r in rr)
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            alice.send(
                f"{method} sip:bob@127.0.0.1:{bob.port} SIP/2.0\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bK{method}{cseq};rport\n"
                f"Max-Forwards: 70\n{route}From: <sip:alice@127.0.0.1>;tag=c1\n"
                f"To: <sip:bob@127.0.0.1>;tag=b1\nCall-ID: {call_id}\nCSeq: {cseq} {method}\n"
                f"Content-Length: 0\n\n",
                udp,
            )
            got = await bob.expect(method)
            assert isinstance(got, Request) and not got.has("Route")
        bye = got
        bob.send(answer(bye, 200, bob), udp)
        done = await alice.expect("200")
        assert done.cseq.method == "BYE"
    finally:
        bob.close()
        alice.close()


async def test_unregistered_target_gets_480(gateway: Gateway) -> None:
    udp = port_of(gateway, "udp")
    alice = UdpPhone()
    try:
        alice.send(invite("alice", "nobody", alice, uuid.uuid4().hex, "z9hG4bKx480"), udp)
        resp = await alice.expect("480")
        assert isinstance(resp, Response) and resp.to.tag
        alice.send(
            f"ACK sip:nobody@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bKx480;rport\n"
            f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=c1\nTo: <sip:nobody@127.0.0.1>;tag={resp.to.tag}\n"
            f"Call-ID: {resp.call_id}\nCSeq: 1 ACK\nContent-Length: 0\n\n",
            udp,
        )
    finally:
        alice.close()


async def test_malformed_requests_are_answered_or_dropped(gateway: Gateway) -> None:
    udp = port_of(gateway, "udp")
    p = UdpPhone()
    try:
        # bad CSeq: enough headers to answer, so a 400 comes back
        p.send(
            f"OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p.port};branch=z9hG4bKbad1\n"
            f"From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: bad1\nCSeq: x OPTIONS\n"
            f"Content-Length: 0\n\n",
            udp,
        )
        resp = await p.expect("400")
        assert isinstance(resp, Response)
        # SIP/3.0 gets a 505
        p.send(
            f"OPTIONS sip:127.0.0.1 SIP/3.0\nVia: SIP/2.0/UDP 127.0.0.1:{p.port};branch=z9hG4bKbad2\n"
            f"From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: bad2\nCSeq: 1 OPTIONS\n"
            f"Content-Length: 0\n\n",
            udp,
        )
        await p.expect("505")
        # unknown Proxy-Require: 420 with Unsupported
        p.send(
            f"OPTIONS sip:x@127.0.0.1:9 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p.port};branch=z9hG4bKbad3\n"
            f"Max-Forwards: 70\nProxy-Require: nonsense\n"
            f"From: <sip:a@127.0.0.1>;tag=1\nTo: <sip:x@127.0.0.1>\nCall-ID: bad3\nCSeq: 1 OPTIONS\n"
            f"Content-Length: 0\n\n",
            udp,
        )
        r420 = await p.expect("420")
        assert r420.get("Unsupported") == "nonsense"
        # junk: dropped, and the gateway still answers afterwards
        p.send_raw(b"\x00garbage\xff" * 50, udp)
        p.send_raw(b"INVITE\r\n\r\n", udp)
        p.send(
            f"OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p.port};branch=z9hG4bKok\n"
            f"Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: ok1\n"
            f"CSeq: 1 OPTIONS\nContent-Length: 0\n\n",
            udp,
        )
        ok = await p.expect("200")
        assert ok.call_id == "ok1"
    finally:
        p.close()


JSSIP_REGISTER = (
    "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/WS k1v3hs0cs2lb.invalid;branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 69\r\n"
    "To: <sip:carol@127.0.0.1>\r\n"
    "From: <sip:carol@127.0.0.1>;tag=jsreg\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: 1 REGISTER\r\n"
    'Contact: <sip:u3hdp5u1@k1v3hs0cs2lb.invalid;transport=ws>;+sip.ice;reg-id=1;'
    '+sip.instance="<urn:uuid:5f1b3c8e-7a0d-4c1e-9b7a-2a1f4e3d2c1b>";expires=600\r\n'
    "Expires: 600\r\n"
    "Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n"
    "Supported: path,gruu,outbound\r\n"
    "User-Agent: JsSIP 3.10.0\r\n"
    "Content-Length: 0\r\n\r\n"
)


async def test_browser_over_websocket_is_reached_on_its_flow(gateway: Gateway) -> None:
    udp, ws_port = port_of(gateway, "udp"), port_of(gateway, "ws")
    alice = UdpPhone()
    async with connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
        await ws.send(JSSIP_REGISTER.format(branch="r1", call_id=uuid.uuid4().hex))
        ok = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
        assert isinstance(ok, Response) and ok.status == 200
        assert ok.get("Require") == "outbound"

        call_id = uuid.uuid4().hex
        alice.send(invite("alice", "carol", alice, call_id, "z9hG4bKws1"), udp)
        inv = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
        assert isinstance(inv, Request) and inv.method == "INVITE"
        assert inv.uri_text == "sip:u3hdp5u1@k1v3hs0cs2lb.invalid;transport=ws"
        # the browser answers with its .invalid Contact; the phone must get one it can use
        resp = answer(inv, 200, alice).replace(
            f"Contact: <sip:bob@127.0.0.1:{alice.port}>", "Contact: <sip:u3hdp5u1@k1v3hs0cs2lb.invalid;transport=ws;ob>"
        )
        await ws.send(resp.replace("\n", "\r\n"))
        ok2 = await alice.expect("200")
        contact = ok2.addresses("Contact")[0].uri
        assert ".invalid" not in str(contact) and f":{udp}" in str(contact)
        # a request to that Contact (no Route: a peer that ignores Record-Route) reaches the browser
        alice.send(
            f"BYE {contact} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bKbye1;rport\n"
            f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=c1\nTo: <sip:carol@127.0.0.1>;tag=b1\n"
            f"Call-ID: {call_id}\nCSeq: 2 BYE\nContent-Length: 0\n\n",
            udp,
        )
        bye = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
        assert isinstance(bye, Request) and bye.method == "BYE"
        assert bye.uri_text == "sip:u3hdp5u1@k1v3hs0cs2lb.invalid;transport=ws;ob"
    # the WebSocket closed: its binding is gone
    await asyncio.sleep(0.2)
    alice.send(invite("alice", "carol", alice, uuid.uuid4().hex, "z9hG4bKws2"), udp)
    await alice.expect("480")
    alice.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 certificate for 127.0.0.1, made on the spot."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    kp, cp = tmp / "key.pem", tmp / "cert.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kp, cp


async def test_tls_and_wss_listeners(tmp_path: Path) -> None:
    import ssl

    from rtc2sip.config import SslCertificates, Webrtc2sipSettings

    key, cert = _self_signed(tmp_path)
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("tls", "127.0.0.1", 0), Listener("wss", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path / "data", breaker="never"),
        webrtc2sip=Webrtc2sipSettings(ssl_certificates=SslCertificates(key, cert, None, False)),
    )
    gw = Gateway(settings)
    await gw.start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with connect(f"wss://127.0.0.1:{port_of(gw, 'wss')}", subprotocols=["sip"],  # type: ignore[list-item]
                           ssl=ctx) as ws:
            await ws.send(JSSIP_REGISTER.format(branch="wss1", call_id=uuid.uuid4().hex))
            ok = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
            assert isinstance(ok, Response) and ok.status == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw, "tls"), ssl=ctx)
        local_port = writer.get_extra_info("sockname")[1]
        writer.write(
            (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bKtls1\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: tls1\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        )
        # a CRLF keepalive ping (RFC 5626 §3.5.1) is answered with a single CRLF
        writer.write(b"\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"SIP/2.0 200")
        pong = await asyncio.wait_for(reader.readexactly(2), 3)
        assert pong == b"\r\n"
        writer.close()
    finally:
        await gw.stop()


async def test_websocket_without_sip_subprotocol_is_refused(gateway: Gateway) -> None:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{port_of(gateway, 'ws')}"):
            pass


async def test_not_an_open_relay_beyond_loopback(gateway: Gateway) -> None:
    """Listeners beyond loopback cannot be made in the test namespace, so the policy is switched by
    hand to what a public listener gets: requests to foreign domains from unknown sources are refused,
    requests for local users still pass."""
    assert gateway.proxy is not None
    gateway.proxy.policy.trusted = False
    udp = port_of(gateway, "udp")
    bob, stranger = UdpPhone(), UdpPhone()
    try:
        bob.send(register("bob", bob), udp)
        await bob.expect("200")
        stranger.send(
            f"MESSAGE sip:someone@example.org SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{stranger.port};branch=z9hG4bKrel1\n"
            f"Max-Forwards: 70\nFrom: <sip:x@example.net>;tag=1\nTo: <sip:someone@example.org>\nCall-ID: relay1\n"
            f"CSeq: 1 MESSAGE\nContent-Type: text/plain\nContent-Length: 2\n\nhi",
            udp,
        )
        await stranger.expect("403")
        stranger.send(
            f"MESSAGE sip:bob@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{stranger.port};branch=z9hG4bKrel2\n"
            f"Max-Forwards: 70\nFrom: <sip:x@example.net>;tag=1\nTo: <sip:bob@127.0.0.1>\nCall-ID: relay2\n"
            f"CSeq: 1 MESSAGE\nContent-Type: text/plain\nContent-Length: 2\n\nhi",
            udp,
        )
        msg = await bob.expect("MESSAGE")
        assert msg.body == b"hi"
    finally:
        bob.close()
        stranger.close()


async def test_cancel_before_answer(gateway: Gateway) -> None:
    udp = port_of(gateway, "udp")
    bob, alice = UdpPhone(), UdpPhone()
    try:
        bob.send(register("bob", bob), udp)
        await bob.expect("200")
        call_id = uuid.uuid4().hex
        alice.send(invite("alice", "bob", alice, call_id, "z9hG4bKcan1"), udp)
        inv = await bob.expect("INVITE")
        bob.send(answer(inv, 180, bob), udp)
        await alice.expect("180")
        alice.send(
            f"CANCEL sip:bob@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{alice.port};branch=z9hG4bKcan1;rport\n"
            f"Max-Forwards: 70\nFrom: <sip:alice@127.0.0.1>;tag=c1\nTo: <sip:bob@127.0.0.1>\n"
            f"Call-ID: {call_id}\nCSeq: 1 CANCEL\nContent-Length: 0\n\n",
            udp,
        )
        ok = await alice.expect("200")
        assert ok.cseq.method == "CANCEL"
        cancel = await bob.expect("CANCEL")
        assert isinstance(cancel, Request) and cancel.top_via.branch == inv.top_via.branch
        bob.send(answer(cancel, 200, bob), udp)
        bob.send(answer(inv, 487, bob), udp)
        ack = await bob.expect("ACK")  # hop-by-hop ACK of the 487 (§17.1.1.3)
        assert ack.cseq.method == "ACK"
        final = await alice.expect("487")
        assert final.cseq.method == "INVITE"
    finally:
        bob.close()
        alice.close()


async def test_oversized_and_keepalives(gateway: Gateway) -> None:
    from aioice import stun

    udp = port_of(gateway, "udp")
    p = UdpPhone()
    try:
        # over TCP a header block beyond the size limit cannot be framed: that connection is closed
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway, "tcp"))
        writer.write(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nX-Pad: " + b"a" * 70000)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        # RFC 5626 §4.4.2: a STUN Binding request on the SIP port gets our view of its address
        req = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        p.send_raw(bytes(req), udp)
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(p.sock, 2048), 3)
        resp = stun.parse_message(data)
        assert resp.message_class == stun.Class.RESPONSE
        assert resp.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", p.port)
        p.send_raw(b"\r\n\r\n", udp)  # CRLF keepalive: silently absorbed
        p.send(
            f"OPTIONS sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{p.port};branch=z9hG4bKafter\n"
            f"Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:127.0.0.1>\nCall-ID: after1\n"
            f"CSeq: 1 OPTIONS\nContent-Length: 0\n\n",
            udp,
        )
        ok = await p.expect("200")
        assert ok.call_id == "after1", "the oversized stream was closed, nothing else was affected"
    finally:
        p.close()


async def test_browser_register_to_foreign_registrar_gets_path(tmp_path: Path) -> None:
    """A REGISTER for a domain that is not ours goes to the upstream proxy with a Path header of ours
    and a routable Contact; the registrar's 200 reaches the browser with its own Contact back."""
    upstream = UdpPhone()
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, upstream_proxy=f"sip:127.0.0.1:{upstream.port}", breaker="never"),
    )
    gw = Gateway(settings)
    await gw.start()
    try:
        reg = JSSIP_REGISTER.format(branch="up1", call_id=uuid.uuid4().hex).replace("@127.0.0.1>", "@example.org>")
        reg = reg.replace("REGISTER sip:127.0.0.1", "REGISTER sip:example.org")
        async with connect(f"ws://127.0.0.1:{port_of(gw, 'ws')}", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(reg)
            fwd = await upstream.expect("REGISTER")
            assert isinstance(fwd, Request)
            path = fwd.addresses("Path")
            assert path and path[0].uri.has("lr")
            contact = fwd.addresses("Contact")[0]
            assert ".invalid" not in str(contact.uri)
            assert contact.param("reg-id") == "1"
            ok = ["SIP/2.0 200 OK"] + [f"{n}: {v}" for n, v in fwd.headers if n in ("Via", "From", "Call-ID", "CSeq")]
            ok += [f"To: {fwd.get('To')};tag=reg", f"Contact: {fwd.get('Contact')};expires=600", "Content-Length: 0"]
            upstream.send("\n".join(ok) + "\n\n", port_of(gw, "udp"))
            back = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
            assert isinstance(back, Response) and back.status == 200
            assert "k1v3hs0cs2lb.invalid" in (back.get("Contact") or "")
    finally:
        upstream.close()
        await gw.stop()


async def test_rfc3263_srv_fail_over_on_503(tmp_path: Path) -> None:
    """pbx.test has two SRV targets; the preferred one answers 503, so the request goes to the next
    (RFC 3263 §4.3) and the caller sees the second one's answer."""
    from dataclasses import replace

    from dns_helper import start_server

    first, second, caller = UdpPhone(), UdpPhone(), UdpPhone()
    zone = {
        ("_sip._udp.pbx.test", "SRV"): (60, [f"10 0 {first.port} a.pbx.test.", f"20 0 {second.port} b.pbx.test."]),
        ("a.pbx.test", "A"): (60, ["127.0.0.1"]),
        ("b.pbx.test", "A"): (60, ["127.0.0.1"]),
    }
    _, dns_port, dns_tr = await start_server(zone)
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0),), gateway=GatewayOptions(data_dir=tmp_path, breaker="never")
    )
    settings = replace(settings, webrtc2sip=replace(settings.webrtc2sip, nameservers=(f"127.0.0.1:{dns_port}",)))
    gw = Gateway(settings)
    await gw.start()
    try:
        udp = port_of(gw, "udp")
        caller.send(
            f"MESSAGE sip:desk@pbx.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKfo1;rport\n"
            f"Max-Forwards: 70\nFrom: <sip:a@127.0.0.1>;tag=1\nTo: <sip:desk@pbx.test>\nCall-ID: fo1\n"
            f"CSeq: 1 MESSAGE\nContent-Type: text/plain\nContent-Length: 2\n\nhi",
            udp,
        )
        m1 = await first.expect("MESSAGE")
        first.send(answer(m1, 503, first), udp)
        m2 = await second.expect("MESSAGE")
        assert m2.call_id == "fo1"
        second.send(answer(m2, 202, second), udp)
        final = await caller.expect("202")
        assert final.call_id == "fo1"
    finally:
        dns_tr.close()
        await gw.stop()
        for p in (first, second, caller):
            p.close()


async def test_connections_per_source_are_limited(tmp_path: Path) -> None:
    from rtc2sip.config import Limits

    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("tcp", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, breaker="never"),
        limits=Limits(max_connections_per_source=2),
    )
    gw = Gateway(settings)
    await gw.start()
    conns = []
    try:
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", port_of(gw, "tcp")))
        # the third connection from the same address is closed at once; the first two stay usable
        assert await asyncio.wait_for(conns[2][0].read(), 3) == b""
        reader, writer = conns[0]
        port = writer.get_extra_info("sockname")[1]
        writer.write(
            (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKlim1\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: lim1\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        assert head.startswith(b"SIP/2.0 200")
    finally:
        for _, w in conns:
            w.close()
        await gw.stop()


async def test_ha1_never_leaves_the_gateway(gateway: Gateway) -> None:
    """webrtc2sip's browsers put their digest HA1 in the Contact for the breaker; when the proxy relays
    such a request, the secret is stripped from the Contact and from the flow token's copy of it."""
    import base64

    udp, ws_port = port_of(gateway, "udp"), port_of(gateway, "ws")
    bob = UdpPhone()
    try:
        bob.send(register("bob", bob), udp)
        await bob.expect("200")
        async with connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
            await ws.send(
                "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS k1.invalid;branch=z9hG4bKha1\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:carol@127.0.0.1>;tag=h1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                "Call-ID: ha1-test\r\nCSeq: 1 MESSAGE\r\n"
                "Contact: <sip:c@k1.invalid;transport=ws;ha1=0123456789abcdef;impi=carol>;ha1=fedcba9876543210\r\n"
                "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            )
            msg = await bob.expect("MESSAGE")
            raw = msg.to_bytes().decode()
            assert "ha1=" not in raw and "0123456789abcdef" not in raw and "fedcba9876543210" not in raw
            token = msg.addresses("Contact")[0].uri.param("r2sflow") or ""  # type: ignore[union-attr]
            b64 = token.partition("~")[2]
            original = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).decode()
            assert "0123456789abcdef" not in original and "impi=carol" in original
    finally:
        bob.close()


async def test_websocket_origin_allow_list(tmp_path: Path) -> None:
    from websockets.exceptions import InvalidStatus

    from rtc2sip.config import Limits

    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, breaker="never"),
        limits=Limits(ws_origins=("https://phone.example.com",)),
    )
    gw = Gateway(settings)
    await gw.start()
    try:
        url = f"ws://127.0.0.1:{port_of(gw, 'ws')}"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, subprotocols=["sip"], origin="https://evil.example.net"):  # type: ignore[list-item,arg-type]
                pass
        assert refused.value.response.status_code == 403
        async with connect(url, subprotocols=["sip"], origin="https://phone.example.com") as ws:  # type: ignore[list-item,arg-type]
            await ws.send(JSSIP_REGISTER.format(branch="orig1", call_id=uuid.uuid4().hex))
            ok = parse_message(str(await asyncio.wait_for(ws.recv(), 3)).encode())
            assert isinstance(ok, Response) and ok.status == 200
    finally:
        await gw.stop()


async def test_registrar_users_from_sqlite(tmp_path: Path) -> None:
    """Users added to data_dir/users.sqlite3 (``rtc2sip user add``) authenticate without a restart."""
    from rtc2sip.cli import manage_users
    from rtc2sip.sip import answer_challenge

    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0),),
        gateway=GatewayOptions(data_dir=tmp_path, breaker="never", auth="on"),
    )
    gw = Gateway(settings)
    await gw.start()
    phone = UdpPhone()
    try:
        udp = port_of(gw, "udp")
        assert manage_users(tmp_path, "add", "dave", "dave-pw") == 0  # while the gateway runs
        phone.send(register("dave", phone), udp)
        challenge = await phone.expect("401")
        www = challenge.get("WWW-Authenticate")
        assert www is not None
        auth = answer_challenge(www, "REGISTER", "sip:127.0.0.1", "dave", password="dave-pw")
        phone.send(register("dave", phone).replace("Expires: 3600", f"Authorization: {auth}\nExpires: 3600")
                   .replace("CSeq: 1 REGISTER", "CSeq: 2 REGISTER"), udp)
        ok = await phone.expect("SIP/2.0 ")
        assert isinstance(ok, Response) and ok.status == 200, ok
    finally:
        phone.close()
        await gw.stop()


async def test_ha1_never_leaves_in_a_forwarded_request(gateway: Gateway) -> None:
    # webrtc2sip's ha1 (a password equivalent) in the Request-URI and Contact of a request the
    # breaker does not take (issue 13 item 4): the next hop never sees it
    udp = port_of(gateway, "udp")
    alice, hop = UdpPhone(), UdpPhone()
    ha1 = "0123456789abcdef0123456789abcdef"
    try:
        text = invite("alice", "pstn", alice, uuid.uuid4().hex, "z9hG4bKha1").replace(
            "INVITE sip:pstn@127.0.0.1 SIP/2.0", f"INVITE sip:pstn@127.0.0.1:{hop.port};ha1={ha1};impi=alice SIP/2.0"
        ).replace(f"Contact: <sip:alice@127.0.0.1:{alice.port}>",
                  f'Contact: <sip:alice@127.0.0.1:{alice.port};ha1={ha1}>;ha1="{ha1}"')
        alice.send(text, udp)
        got = await hop.expect("INVITE")
        assert ha1 not in got.to_bytes().decode(), got.to_bytes()
        assert isinstance(got, Request) and "impi=alice" in got.uri_text
    finally:
        alice.close()
        hop.close()

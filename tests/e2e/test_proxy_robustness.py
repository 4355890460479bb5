"""rtc2sip's SIP proxy and registrar under load, across a restart, under bad input, and as a relay.

- 1,000 sipp calls through the gateway over UDP, then over TCP, none failed.
- A UDP phone's binding survives a restart of the gateway (SQLite); a browser's (WebSocket) does not.
- A storm of malformed, truncated and oversized messages on UDP, TCP and WebSocket neither kills the
  gateway nor disturbs a call in progress, and the malformed requests that can be answered get a 4xx.
- Not an open relay: the loopback-trusted default forwards to foreign domains (documented), and with
  `auth = "on"` REGISTER is challenged (SHA-256 and MD5 when both are configured), accepted with the
  right password, refused with a wrong one.

The small SIP client below (`UdpSip`) sends hand-written requests, so that the exact bytes on the
wire are the test's, not a user agent's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from harness import Baresip, Gateway, HarnessError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

ALICE_HZ = 600.0
BOB_HZ = 1400.0


# ---- a minimal SIP client over UDP ----------------------------------------------------------------


def _status(data: bytes) -> int | None:
    m = re.match(rb"SIP/2\.0 ([1-6][0-9][0-9]) ", data)
    return int(m.group(1)) if m else None


def _header(data: bytes, name: str) -> list[str]:
    text = data.decode("utf-8", "replace")
    head = text.split("\r\n\r\n", 1)[0]
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if ":" in line and line.split(":", 1)[0].strip().lower() == name.lower()
    ]


def _call_id(data: bytes) -> str | None:
    values = _header(data, "Call-ID") or _header(data, "i")
    return values[0] if values else None


class UdpSip:
    """One UDP socket on 127.0.0.1 that sends requests to the gateway and collects what comes back."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = (gateway.sip_address.split(":")[0], gateway.sip_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        ruri: str,
        *,
        from_uri: str = "sip:tester@example.test",
        to_uri: str | None = None,
        headers: list[str] | None = None,
        body: str = "",
        call_id: str | None = None,
        cseq: int = 1,
    ) -> bytes:
        call_id = call_id or f"{uuid.uuid4().hex}@robustness"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to_uri or ruri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:tester@127.0.0.1:{self.port}>",
            *(headers or []),
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        return "\r\n".join(lines).encode()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.gw)

    def drain(self, timeout: float = 0.0) -> list[bytes]:
        """Everything received so far (waiting up to `timeout` for the first datagram)."""
        self.sock.settimeout(timeout if timeout > 0 else None)
        self.sock.setblocking(timeout > 0)
        try:
            while True:
                data, _ = self.sock.recvfrom(65535)
                self.received.append(data)
                self.sock.setblocking(False)
        except (BlockingIOError, TimeoutError):
            pass
        return self.received

    def transact(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send a request (retransmitted every 500 ms, as UDP needs) and return its final response."""
        call_id = _call_id(data)
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send:
                self.send_raw(data)
                next_send = now + 0.5
            self.sock.settimeout(max(0.01, min(next_send, deadline) - time.monotonic()))
            try:
                reply, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(reply)
            status = _status(reply)
            if status is not None and status >= 200 and _call_id(reply) == call_id:
                return reply
        raise HarnessError(f"no final response within {timeout:g}s to:\n{data[:300].decode(errors='replace')}")


def ack_for(request: bytes, response: bytes) -> bytes:
    """The ACK of a non-2xx final response to an INVITE (§17.1.1.3): same branch, the response's To."""
    head = request.decode().split("\r\n\r\n", 1)[0].split("\r\n")
    ruri = head[0].split(" ")[1]
    keep = [h for h in head[1:] if h.split(":", 1)[0] in ("Via", "From", "Call-ID", "Max-Forwards")]
    cseq = next(h for h in head if h.startswith("CSeq:")).split()[1]
    to = _header(response, "To")[0]
    lines = [f"ACK {ruri} SIP/2.0", *keep, f"To: {to}", f"CSeq: {cseq} ACK", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


@contextmanager
def udp_client(gateway: Gateway) -> Iterator[UdpSip]:
    client = UdpSip(gateway)
    try:
        yield client
    finally:
        client.close()


def registrations_in_log(gw: Gateway, user: str, since_start: int) -> int:
    """REGISTERs for `user` the gateway logged in its `since_start`-th life (1 = first start)."""
    lives = gw.log_text().split("==== ")
    lines = "".join(lives[since_start:]) if len(lives) > since_start else ""
    return len(re.findall(rf"REGISTER sip:{re.escape(user)}@", lines))


# ---- 1. load ---------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_1000_calls_through_the_proxy(make_gateway, make_sipp, transport):
    gw = make_gateway()
    uas = make_sipp("uas", "uas_behind_proxy.xml", transport=transport).start()
    contact = f"sip:bob@{uas.address}" + (";transport=tcp" if transport.startswith("t") else "")
    registered = make_sipp(
        "register",
        "register.xml",
        remote=gw.sip_address,
        service="bob",
        calls=1,
        transport=transport,
        keys={"domain": gw.domain, "contact": contact, "expires": "300"},
    ).run(timeout=30)
    assert registered.returncode == 0, registered.summary()

    result = make_sipp(
        "uac",
        "uac_via_proxy.xml",
        remote=gw.sip_address,
        service="bob",
        calls=1000,
        rate=150,
        limit=300,
        transport=transport,
        keys={"domain": gw.domain},
        timeout_s=120,
    ).run(timeout=150)
    assert (result.successful, result.failed) == (1000, 0), result.summary()
    assert result.returncode == 0, result.summary()
    served = uas.stop()
    assert served.successful == 1000, served.summary()
    assert gw.proc is not None and gw.proc.running


# ---- 2. restart ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_udp_binding_survives_a_restart(make_gateway, make_baresip):
    gw = make_gateway()
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=BOB_HZ)
    # alice only places calls: she does not register, so nothing of hers is in the location store.
    alice = make_baresip(
        "alice", user="alice", domain=gw.domain, registrar=gw.udp_uri, register=False, tone_hz=ALICE_HZ
    )
    assert registrations_in_log(gw, "bob", 1) == 1

    gw.restart()

    with udp_client(gw) as client:
        options = client.transact(client.request("OPTIONS", gw.aor("bob")))
        assert _status(options) == 200, options.decode(errors="replace")
        message = client.transact(
            client.request(
                "MESSAGE", gw.aor("bob"), headers=["Content-Type: text/plain"], body="after the restart"
            )
        )
        assert _status(message) == 200, message.decode(errors="replace")
    assert bob.wait_message("after the restart")[1] == "after the restart"

    alice.dial(gw.aor("bob"))
    bob.wait_event("CALL_ESTABLISHED")
    alice.wait_event("CALL_ESTABLISHED")
    alice.wait_event("CALL_RTPESTAB")
    time.sleep(2)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    heard_by_bob = bob.recorded_tone()
    assert abs(heard_by_bob.frequency - ALICE_HZ) <= 5, heard_by_bob

    # bob never registered again: the gateway found his binding in its store.
    assert registrations_in_log(gw, "bob", 2) == 0, gw.log_text()[-3000:]


@pytest.mark.e2e
def test_websocket_binding_ends_with_the_restart(make_gateway, make_browser):
    gw = make_gateway()
    alice = make_browser("alice", tone_hz=None)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200

    with udp_client(gw) as client:
        before = client.transact(
            client.request("MESSAGE", gw.aor("alice"), headers=["Content-Type: text/plain"], body="before")
        )
        assert _status(before) == 200, before.decode(errors="replace")
        alice.wait_message("before")

        gw.stop()
        # JsSIP reconnects (and registers again) by itself; stop it while the gateway is down, so
        # that the only binding alice could have after the restart is the one from before.
        alice.rtc("stop")
        gw.start()

        after = client.transact(
            client.request("MESSAGE", gw.aor("alice"), headers=["Content-Type: text/plain"], body="after")
        )
        assert _status(after) in (404, 480), after.decode(errors="replace")
        request = client.request("INVITE", gw.aor("alice"))
        invite = client.transact(request)
        assert _status(invite) in (404, 480), invite.decode(errors="replace")
        client.send_raw(ack_for(request, invite))
    assert registrations_in_log(gw, "alice", 2) == 0


# ---- 3. bad input during a call ----------------------------------------------------------------------


def answerable_bad_requests(client: UdpSip, aor: str) -> dict[str, tuple[bytes, range]]:
    """Malformed or unacceptable requests that still carry Via, From, To, Call-ID and CSeq, so that a
    response can be built and routed: each must get a final response in the given range."""
    good = client.request("OPTIONS", aor)

    def edit(old: bytes, new: bytes, data: bytes | None = None) -> bytes:
        data = client.request("OPTIONS", aor) if data is None else data
        assert old in data, old
        return data.replace(old, new, 1)

    fourxx = range(400, 500)
    return {
        "Content-Length not a number": (edit(b"Content-Length: 0", b"Content-Length: abc"), fourxx),
        "negative Content-Length": (edit(b"Content-Length: 0", b"Content-Length: -5"), fourxx),
        "Content-Length beyond the datagram": (edit(b"Content-Length: 0", b"Content-Length: 500"), fourxx),
        "invalid Request-URI": (edit(f"OPTIONS {aor} ".encode(), b"OPTIONS sip:@@bob@@:x:y ", good), fourxx),
        "unsupported URI scheme": (edit(f"OPTIONS {aor} ".encode(), b"OPTIONS foo:bar@baz "), range(416, 417)),
        "CSeq method mismatch": (edit(b"CSeq: 1 OPTIONS", b"CSeq: 1 BYE"), fourxx),
        "CSeq not a number": (edit(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"), fourxx),
        "unparseable From": (edit(b"From: <", b"From: <<<sip:"), fourxx),
        "Max-Forwards 0": (edit(b"Max-Forwards: 70", b"Max-Forwards: 0"), range(483, 484)),
        "Max-Forwards not a number": (edit(b"Max-Forwards: 70", b"Max-Forwards: many"), fourxx),
        "unknown Proxy-Require": (edit(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nProxy-Require: x-nothing"),
                                  range(420, 421)),
        "bad SIP version": (edit(b" SIP/2.0\r\n", b" SIP/7.0\r\n"), range(400, 506)),
        "unknown Content-Encoding garbage header": (
            edit(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nExpires: soon\r\nContent-Type: /"), fourxx),
    }


def udp_junk(client: UdpSip, aor: str, nobody: str, rng: random.Random) -> Iterator[bytes]:
    """Datagrams that cannot be answered (or need not be), a few thousand in all. Truncated INVITEs go
    to `nobody` (an AOR without bindings): the gateway forwards some of them (see
    test_datagram_truncated_in_its_headers_is_not_forwarded), which must not ring a phone of the test."""
    invite = client.request(
        "INVITE", nobody, headers=["Content-Type: application/sdp"], body="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    )
    for _ in range(800):  # garbage bytes (a first byte of 0 or 1 is taken for STUN)
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 1400)))
    for _ in range(600):  # truncated messages
        yield invite[: rng.randint(1, len(invite) - 1)]
    for _ in range(600):  # CRLF floods
        yield b"\r\n" * rng.randint(1, 2000)
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):  # a header a response needs is missing
        for _ in range(60):
            yield re.sub(rf"\r\n{name}: [^\r]*".encode(), b"", client.request("OPTIONS", aor), count=1)
    for _ in range(300):  # invalid URIs everywhere
        bad = rng.choice([b"sip:", b"sip:@", b"<sip:a@b", b"sip:a@[::1", b"sip:a@b:99999", b"\xff\xfe", b"%%%"])
        yield client.request("OPTIONS", aor).replace(f"<{aor}>".encode(), bad)
    for _ in range(20):  # nearly the largest datagram, with one huge header
        yield client.request("OPTIONS", aor, headers=["X-Big: " + "a" * 60000])
    for _ in range(200):  # responses nobody asked for
        yield b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone\r\nCall-ID: x\r\n\r\n"


def tcp_storm(gw: Gateway, aor: str, rng: random.Random) -> list[socket.socket]:
    """Bad input over TCP; returns the connections left open on purpose (incomplete messages)."""
    addr = ("127.0.0.1", gw.sip_port)
    for _ in range(30):  # garbage, then hang up
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000))))
    # a header block larger than 64 KiB: the gateway must close the connection, not buffer forever
    with socket.create_connection(addr, timeout=10) as s:
        try:
            s.sendall(b"OPTIONS " + aor.encode() + b" SIP/2.0\r\nX-Big: " + b"a" * 200_000)
        except OSError:
            pass  # closed by the gateway while we were still sending: that is the point
        assert _closed_by_peer(s), "a >64 KiB header block did not end the connection"
    # a Content-Length that cannot be honoured: also fatal for the stream
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(f"OPTIONS {aor} SIP/2.0\r\nContent-Length: many\r\n\r\n".encode())
        assert _closed_by_peer(s), "a malformed Content-Length on a stream did not end the connection"
    # a CRLF flood: double-CRLF pings are answered with CRLF pongs, the connection stays usable
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"\r\n\r\n" * 2000)
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += s.recv(65536)
        assert got.startswith(b"\r\n"), got[:50]
    # streams that never complete a message, left open while the call goes on
    hanging = []
    for i in range(20):
        s = socket.create_connection(addr, timeout=5)
        s.sendall(f"INVITE {aor} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{i};branch=z9hG4bKhang{i}\r\nCont".encode())
        hanging.append(s)
    return hanging


def _closed_by_peer(s: socket.socket, timeout: float = 10.0) -> bool:
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def ws_storm(gw: Gateway, aor: str, rng: random.Random) -> None:
    # no "sip" subprotocol: refused at the upgrade (RFC 7118 §4)
    with pytest.raises(Exception, match="400"), ws_connect(gw.ws_url, open_timeout=5):
        pass
    with ws_connect(gw.ws_url, subprotocols=["sip"], open_timeout=5) as ws:  # type: ignore[list-item]
        for _ in range(300):
            ws.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))))  # binary junk
        for _ in range(300):
            ws.send("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(1, 500))))  # text junk
        for _ in range(100):
            ws.send("\r\n" * rng.randint(1, 100))
        # a malformed request that can still be answered gets its 4xx down the same WebSocket
        call_id = uuid.uuid4().hex
        ws.send(
            f"OPTIONS {aor} SIP/2.0\r\nVia: SIP/2.0/WS abc.invalid;branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:ws@example.test>;tag=1\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: abc\r\n\r\n"
        )
        deadline = time.monotonic() + 10
        answer = None
        while answer is None and time.monotonic() < deadline:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            text = msg if isinstance(msg, str) else msg.decode(errors="replace")
            if call_id in text and text.startswith("SIP/2.0 "):
                answer = text
        assert answer is not None and 400 <= int(answer[8:11]) < 500, answer
    # a message above the 64 KiB limit ends that WebSocket (close code 1009), and only that one
    with ws_connect(gw.ws_url, subprotocols=["sip"], open_timeout=5) as ws:  # type: ignore[list-item]
        ws.send(f"OPTIONS {aor} SIP/2.0\r\nX-Big: " + "a" * 100_000 + "\r\n\r\n")
        with pytest.raises(ConnectionClosed):
            for _ in range(10):
                ws.recv(timeout=5)


def reinvite_reaches(caller: Baresip, callee: Baresip, attempts: int = 5) -> None:
    """`caller` sends a re-INVITE in the call and `callee` gets its offer. baresip silently sends none
    while a previous re-INVITE of the dialog is still unacknowledged, so the command is repeated."""
    for attempt in range(attempts):
        callee.mark_events()
        caller.command("reinvite")
        try:
            callee.wait_event("CALL_REMOTE_SDP", timeout=3)
            return
        except HarnessError:
            if attempt == attempts - 1:
                raise


@pytest.mark.e2e
def test_bad_input_does_not_disturb_a_call(make_gateway, make_baresip):
    gw = make_gateway()
    alice = make_baresip("alice", user="alice", domain=gw.domain, registrar=gw.udp_uri, tone_hz=ALICE_HZ)
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=BOB_HZ)
    rng = random.Random(3261)

    alice.dial(gw.aor("bob"))
    for phone in (alice, bob):
        phone.wait_event("CALL_ESTABLISHED")
        phone.wait_event("CALL_RTPESTAB")
    started = time.monotonic()

    with udp_client(gw) as client:
        # 1. every malformed request that can be answered is answered with a 4xx (or 505)
        wrong = {}
        for label, (data, expected) in answerable_bad_requests(client, gw.aor("bob")).items():
            try:
                status = _status(client.transact(data, timeout=5))
            except HarnessError:
                status = None
            if status not in expected:
                wrong[label] = status
        assert not wrong, f"malformed requests not answered as expected: {wrong}"

        # 2. the storm: UDP, TCP, WebSocket
        for sent, datagram in enumerate(udp_junk(client, gw.aor("bob"), gw.aor("nobody"), rng), 1):
            client.send_raw(datagram)
            if sent % 200 == 0:
                client.drain()  # keep our own receive buffer from filling up
                time.sleep(0.01)
        hanging = tcp_storm(gw, gw.aor("bob"), rng)
        ws_storm(gw, gw.aor("bob"), rng)
        assert gw.proc is not None
        gw.proc.check_alive()

        # 3. the call is still up, both ways, through the proxy (Record-Route): re-INVITEs, then BYE
        for caller, callee in ((alice, bob), (bob, alice)):
            reinvite_reaches(caller, callee)
        time.sleep(max(0.0, 3 - (time.monotonic() - started)))  # a few seconds of audio to record
        alice.hangup()
        bob.wait_event("CALL_CLOSED")
        alice.wait_event("CALL_CLOSED")
        heard_by_bob, heard_by_alice = bob.recorded_tone(), alice.recorded_tone()
        assert abs(heard_by_bob.frequency - ALICE_HZ) <= 5, heard_by_bob
        assert abs(heard_by_alice.frequency - BOB_HZ) <= 5, heard_by_alice
        assert heard_by_bob.voiced_seconds >= 1.0, heard_by_bob

        # 4. new requests still work: a MESSAGE, and a new call
        message = client.transact(
            client.request("MESSAGE", gw.aor("bob"), headers=["Content-Type: text/plain"], body="still here")
        )
        assert _status(message) == 200, message.decode(errors="replace")
        bob.wait_message("still here")
        for phone in (alice, bob):
            phone.mark_events()
        alice.dial(gw.aor("bob"))
        for phone in (alice, bob):
            phone.wait_event("CALL_ESTABLISHED")
        bob.hangup()
        alice.wait_event("CALL_CLOSED")

    for s in hanging:
        s.close()
    gw.proc.check_alive()
    assert "Traceback" not in gw.log_text(), gw.log_text()[-5000:]


@pytest.mark.e2e
def test_datagram_truncated_in_its_headers_is_not_forwarded(make_gateway):
    gw = make_gateway()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far_port = far.getsockname()[1]
    with far, udp_client(gw) as client:
        invite = client.request("INVITE", f"sip:carol@127.0.0.1:{far_port}")
        head_end = invite.index(b"\r\n\r\n")
        start_line_end = invite.index(b"\r\n")
        for cut in range(start_line_end + 2, head_end + 3):  # every cut before the empty line is complete
            # a new transaction each time (fresh branch and Call-ID), or the rest would be retransmissions
            client.send_raw(client.request("INVITE", f"sip:carol@127.0.0.1:{far_port}")[:cut])
        time.sleep(1)
        far.setblocking(False)
        forwarded = []
        with contextlib.suppress(BlockingIOError):
            while True:
                forwarded.append(far.recv(65535))
        assert not forwarded, f"{len(forwarded)} truncated INVITEs forwarded, e.g.:\n{forwarded[0].decode()}"


# ---- 4. relay policy and authentication --------------------------------------------------------------


@pytest.mark.e2e
def test_loopback_default_relays_to_foreign_domains(make_gateway):
    """Documented: with every listener on loopback (auth = "auto") everything is trusted, so requests
    for other domains are forwarded (README, docs/CONFIG.md)."""
    gw = make_gateway()
    far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    far.bind(("127.0.0.1", 0))
    far.settimeout(10)
    far_port = far.getsockname()[1]
    with far, udp_client(gw) as client:
        request = client.request("OPTIONS", f"sip:carol@127.0.0.1:{far_port}", from_uri="sip:tester@elsewhere.test")
        client.send_raw(request)
        forwarded, via_gateway = far.recvfrom(65535)
        assert via_gateway == ("127.0.0.1", gw.sip_port)
        assert forwarded.startswith(f"OPTIONS sip:carol@127.0.0.1:{far_port} SIP/2.0".encode())
        assert f"127.0.0.1:{gw.sip_port};branch=" in _header(forwarded, "Via")[0]
        head, _, _ = forwarded.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        vias = [ln for ln in lines if ln.lower().startswith(b"via:")]
        answer = [b"SIP/2.0 200 OK", *vias]
        answer += [ln for ln in lines if ln.split(b":")[0].lower() in (b"from", b"to", b"call-id", b"cseq")]
        far.sendto(b"\r\n".join([*answer, b"Content-Length: 0", b"", b""]), via_gateway)
        reply = client.transact(request)
        assert _status(reply) == 200, reply.decode(errors="replace")

        # a domain that does not resolve is tried, not refused (no 403 Relaying Denied, no challenge)
        foreign = client.transact(client.request("MESSAGE", "sip:carol@foreign.invalid"), timeout=40)
        assert _status(foreign) not in (401, 403, 407), foreign.decode(errors="replace")


def _digest_params(challenge: str) -> dict[str, str]:
    assert challenge.lower().startswith("digest "), challenge
    return {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', challenge[7:])}


def _authorization(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    p = _digest_params(challenge)
    algorithm = p.get("algorithm", "MD5")
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm.upper()]

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    cnonce, nc = os.urandom(8).hex(), "00000001"
    ha1, ha2 = hx(f"{user}:{p['realm']}:{password}"), hx(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{p["realm"]}"', f'nonce="{p["nonce"]}"', f'uri="{uri}"',
              f"algorithm={algorithm}"]
    if "qop" in p:
        qop = "auth"
        assert qop in p["qop"].split(","), p
        response = hx(f"{ha1}:{p['nonce']}:{nc}:{cnonce}:{qop}:{ha2}")
        fields += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = hx(f"{ha1}:{p['nonce']}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in p:
        fields.append(f'opaque="{p["opaque"]}"')
    return "Digest " + ", ".join(fields)


@pytest.mark.e2e
def test_register_needs_credentials_when_auth_is_on(make_gateway):
    gw = make_gateway(
        gateway_options={"auth": "on", "digest_algorithms": ["SHA-256", "MD5"]},
        extra_toml='[users]\nalice = "alice-pw"\nbob = "bob-pw"\n',
    )
    registrar_uri = f"sip:{gw.domain}"

    def register(client: UdpSip, user: str, call_id: str, cseq: int, auth: str | None = None) -> bytes:
        headers = [f"Contact: <sip:{user}@127.0.0.1:{client.port}>", "Expires: 300"]
        if auth is not None:
            headers.append(f"Authorization: {auth}")
        data = client.request(
            "REGISTER", registrar_uri, from_uri=gw.aor(user), to_uri=gw.aor(user), headers=headers,
            call_id=call_id, cseq=cseq,
        )
        # request() adds its own Contact; keep only ours (the one with Expires next to it)
        data = data.replace(f"Contact: <sip:tester@127.0.0.1:{client.port}>\r\n".encode(), b"", 1)
        return client.transact(data)

    with udp_client(gw) as client:
        call_id = uuid.uuid4().hex
        challenge = register(client, "alice", call_id, 1)
        assert _status(challenge) == 401, challenge.decode(errors="replace")
        challenges = _header(challenge, "WWW-Authenticate")
        algorithms = [_digest_params(c).get("algorithm", "MD5").upper() for c in challenges]
        assert "SHA-256" in algorithms and "MD5" in algorithms, challenges
        # offered in the configured order, the preferred first (RFC 8760 §2.4)
        assert algorithms.index("SHA-256") < algorithms.index("MD5"), challenges

        cseq = 2
        for wanted in ("SHA-256", "MD5"):
            # a fresh challenge each time: a nonce answered once (nc=1) is not accepted again
            fresh = _header(register(client, "alice", call_id, cseq), "WWW-Authenticate")
            chosen = next(c for c in fresh if _digest_params(c).get("algorithm", "MD5").upper() == wanted)
            ok = register(client, "alice", call_id, cseq + 1,
                          _authorization(chosen, "alice", "alice-pw", "REGISTER", registrar_uri))
            assert _status(ok) == 200, (wanted, ok.decode(errors="replace"))
            assert f"sip:alice@127.0.0.1:{client.port}" in ok.decode(), ok.decode(errors="replace")
            cseq += 2

        wrong = register(client, "alice", call_id, cseq,
                         _authorization(challenges[0], "alice", "not-the-password", "REGISTER", registrar_uri))
        assert _status(wrong) in (401, 403), wrong.decode(errors="replace")
        unknown = register(client, "mallory", uuid.uuid4().hex, 1,
                           _authorization(challenges[0], "mallory", "x", "REGISTER", registrar_uri))
        assert _status(unknown) in (401, 403, 404), unknown.decode(errors="replace")
        # credentials of one user do not register another AOR
        other = register(client, "bob", call_id, cseq + 1,
                         _authorization(challenges[0], "alice", "alice-pw", "REGISTER", registrar_uri))
        assert _status(other) in (401, 403), other.decode(errors="replace")



@pytest.mark.e2e
def test_legacy_phone_registers_with_digest(make_gateway, make_baresip):
    gw = make_gateway(gateway_options={"auth": "on"}, extra_toml='[users]\nbob = "bob-pw"\n')
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, password="bob-pw")
    assert bob.registered()
    with pytest.raises(HarnessError, match="ERR"):
        make_baresip("eve", user="bob", domain=gw.domain, registrar=gw.udp_uri, password="wrong")

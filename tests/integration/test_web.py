"""HTTP on the WebSocket port (rtc2sip.web), against a gateway in-process over real loopback sockets:
the web phone's files, /api/config, /api/registrations, /api/calls, /metrics (parsed, and its counters
moving with SIP traffic), the admin gate, and SIP over WebSocket still working on the same port.

Calls with media are proven by tests/e2e/test_webphone_e2e.py (Chromium and baresip).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.web.http import STATIC, WebRouter
from rtc2sip.web.metrics import Exposition
from rtc2sip.web.monitor import Monitor, cause_label, failure_kind

TOKEN = "an-admin-token-0123456789"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, domains=("example.test", "127.0.0.1")),
    )
    gw = Gateway(settings)
    await gw.start()
    yield gw
    await gw.stop()


def port_of(gw: Gateway, transport: str) -> int:
    return next(la.port for la in gw.listening if la.transport == transport)


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        assert int(self.headers["content-length"]) == len(self.body)

    def json(self) -> object:
        assert self.headers["content-type"] == "application/json"
        return json.loads(self.body)


async def get(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> Reply:
    """One HTTP/1.1 GET on the WebSocket port; the gateway closes the connection after its answer."""
    port = port_of(gw, "ws")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return Reply(raw)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The text format 0.0.4, strictly: every sample line parses and belongs to a family whose HELP and
    TYPE came first; no family twice."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    helped: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, f"family {name} twice"
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name in helped and name not in types
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.groups()
            assert name in types, f"{name} has no TYPE"
            if types[name] == "counter":
                assert name.endswith("_total"), name
            key = (name, frozenset(_LABEL.findall(labels or "")))
            assert key not in samples, f"sample {key} twice"
            samples[key] = float(value)
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def sip(text: str) -> bytes:
    return re.sub(r"(?<!\r)\n", "\r\n", text).encode()


async def udp_exchange(port: int, request: str) -> str:
    """Send one request over UDP and return the first final response's status line."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.sendto(sip(request.replace("PORT", str(s.getsockname()[1]))), ("127.0.0.1", port))
        while True:
            data = await asyncio.wait_for(loop.sock_recv(s, 65535), 3)
            line = data.split(b"\r\n", 1)[0].decode()
            if not line.startswith("SIP/2.0 1"):
                return line


def register(user: str) -> str:
    return (
        f"REGISTER sip:example.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK{uuid.uuid4().hex[:12]}"
        f";rport\nMax-Forwards: 70\nFrom: <sip:{user}@example.test>;tag=r1\nTo: <sip:{user}@example.test>\n"
        f"Call-ID: {uuid.uuid4().hex}\nCSeq: 1 REGISTER\nContact: <sip:{user}@127.0.0.1:PORT>\n"
        f"User-Agent: web-test\nExpires: 600\nContent-Length: 0\n\n"
    )


def options() -> str:
    return (
        f"OPTIONS sip:example.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK{uuid.uuid4().hex[:12]}"
        f";rport\nMax-Forwards: 70\nFrom: <sip:probe@example.test>;tag=o1\nTo: <sip:example.test>\n"
        f"Call-ID: {uuid.uuid4().hex}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )


# ---- the pages ----------------------------------------------------------------------------------


async def test_web_phone_is_served(gateway: Gateway) -> None:
    page = await get(gateway, "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    html = page.body.decode()
    assert '<script src="/phone.js"' in html and 'id="register-form"' in html and 'id="keypad"' in html
    assert page.headers["connection"] == "close"
    assert "default-src 'self'" in page.headers["content-security-policy"]

    js = await get(gateway, "/phone.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    head = js.body[:4000].decode()
    assert "jssip 3." in head and "Permission is hereby granted" in head  # the bundled licences
    assert b"rtc2sipPhone" in js.body and len(js.body) > 100_000  # JsSIP really is inside

    again = await get(gateway, "/phone.js", {"If-None-Match": js.headers["etag"]})
    assert again.status == 304 and again.body == b""

    for path in ("/calls", "/calls.js", "/style.css", "/openapi.json", "/index.html", "/calls/"):
        r = await get(gateway, path)
        assert r.status == 200, path
    missing = await get(gateway, "/nope?x=1")
    assert missing.status == 404


async def test_openapi_describes_every_api_route(gateway: Gateway) -> None:
    doc = (await get(gateway, "/openapi.json")).json()
    assert isinstance(doc, dict) and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/config", "/api/registrations", "/api/calls", "/api/calls/{id}", "/metrics"}
    assert set(STATIC) >= {"/", "/calls", "/openapi.json"}


async def test_api_config(gateway: Gateway) -> None:
    config = (await get(gateway, "/api/config")).json()
    assert config == {"version": "0.1.0", "domain": "example.test", "domains": ["example.test", "127.0.0.1"],
                      "auth_required": False, "admin_open": True}


async def test_websocket_still_works_on_the_same_port(gateway: Gateway) -> None:
    async with connect(f"ws://127.0.0.1:{port_of(gateway, 'ws')}/", subprotocols=["sip"]) as ws:  # type: ignore[list-item]
        await ws.send(options().replace("UDP 127.0.0.1:PORT", "WS x.invalid").replace(";rport", ""))
        answer = await asyncio.wait_for(ws.recv(), 3)
        assert str(answer).startswith("SIP/2.0 ")


# ---- data ---------------------------------------------------------------------------------------


async def test_registrations_calls_and_metrics_move_with_sip(gateway: Gateway) -> None:
    udp = port_of(gateway, "udp")
    before = parse_metrics((await get(gateway, "/metrics")).body.decode())
    assert metric(before, "rtc2sip_calls_active") == 0
    assert metric(before, "rtc2sip_registrations") == 0
    assert metric(before, "rtc2sip_info", version="0.1.0") == 1
    assert (await get(gateway, "/metrics")).headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

    assert await udp_exchange(udp, register("alice")) == "SIP/2.0 200 OK"
    status = await udp_exchange(udp, options())
    code = status.split()[1]

    after = parse_metrics((await get(gateway, "/metrics")).body.decode())
    assert metric(after, "rtc2sip_registrations") == 1
    for name, labels, grew in (
        ("rtc2sip_sip_requests_received_total", {"method": "REGISTER"}, 1),
        ("rtc2sip_sip_requests_received_total", {"method": "OPTIONS"}, 1),
        ("rtc2sip_sip_responses_sent_total", {"code": "200"}, 1 + (code == "200")),
    ):
        assert metric(after, name, **labels) - metric(before, name, **labels) == grew, (name, labels)
    if code != "200":
        assert metric(after, "rtc2sip_sip_responses_sent_total", code=code) == 1
    for leg in ("webrtc", "legacy"):
        for d in ("in", "out"):
            assert ("rtc2sip_media_packets_total", frozenset({("leg", leg), ("direction", d)})) in after
    assert metric(after, "rtc2sip_event_loop_lag_seconds") >= 0

    regs = (await get(gateway, "/api/registrations")).json()
    assert isinstance(regs, dict)
    [alice] = regs["registrations"]
    assert alice["aor"] == "sip:alice@example.test" and alice["transport"] == "udp"
    assert alice["user_agent"] == "web-test" and 0 < alice["expires_in"] <= 600

    calls = (await get(gateway, "/api/calls")).json()
    assert calls == {"active": [], "ended": [], "diagnostics": []}
    assert (await get(gateway, "/api/calls/b1")).status == 404


async def test_admin_routes_need_the_token_beyond_loopback(gateway: Gateway) -> None:
    """A listener beyond loopback cannot be opened in the test namespace: the router is switched by hand
    to what such a gateway gets (as test_proxy_loopback does with the relay policy)."""
    web = gateway.web
    assert web is not None and web.admin_open
    web.admin_open = False
    # no token configured: the admin routes are off, the phone still works
    for path in ("/api/calls", "/api/registrations", "/metrics", "/api/calls/b1"):
        assert (await get(gateway, path)).status == 403, path
    assert (await get(gateway, "/")).status == 200
    assert (await get(gateway, "/api/config")).status == 200
    assert (await get(gateway, "/calls")).status == 200  # the page's shell; its data needs the token

    web.admin_token = TOKEN
    refused = await get(gateway, "/metrics")
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    wrong = await get(gateway, "/metrics", {"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status == 401 and "invalid_token" in wrong.headers["www-authenticate"]
    assert (await get(gateway, "/metrics", {"Authorization": f"Basic {TOKEN}"})).status == 401
    for path in ("/api/calls", "/api/registrations", "/metrics"):
        assert (await get(gateway, path, {"Authorization": f"Bearer {TOKEN}"})).status == 200, path


def test_admin_is_open_only_on_loopback(tmp_path: Path) -> None:
    def router(host: str) -> WebRouter:
        settings = Settings(listeners=(Listener("ws", host, 0),),
                            gateway=GatewayOptions(data_dir=tmp_path, admin_token=TOKEN))
        return WebRouter(settings, proxy=None, monitor=Monitor(None, None))  # type: ignore[arg-type]

    assert router("127.0.0.1").admin_open
    assert router("::1").admin_open
    public = router("0.0.0.0")
    assert not public.admin_open
    assert public.route("/metrics", {}).status == 401
    assert public.route("/", {}).status == 200


# ---- pieces -------------------------------------------------------------------------------------


def test_end_causes_are_a_bounded_label_set() -> None:
    assert cause_label("486 from legacy") == "sip_486"
    assert cause_label("487") == "sip_487"
    assert cause_label("BYE from browser") == "bye"
    assert cause_label("connection closed") == "connection_closed"
    assert cause_label("caller unreachable") == "caller_unreachable"
    assert cause_label("media: dtls failed: handshake timeout") == "media_dtls"
    assert cause_label("media: DTLS did not connect within 30 s") == "media_dtls"
    assert cause_label("media: ICE did not connect within 30 s") == "media_ice"
    assert cause_label("media: ice consent lost: no check from the browser for 30 s (RFC 7675)") == "media_ice"
    assert cause_label("media: no media for 60 s") == "media_timeout"
    assert cause_label("media: dtls closed by the browser") == "media_closed"
    assert cause_label("something new") == "other"
    assert failure_kind("internal error: boom") == "other"


def test_exposition_escapes_labels() -> None:
    e = Exposition()
    e.add("x_total", "counter", "with \\ and\nnewline", [({"a": 'q"\\\n'}, 1), ({}, 2.5)])
    e.add("y", "gauge", "nan", float("nan"))
    samples = parse_metrics(e.text())
    assert metric(samples, "x_total", a='q\\"\\\\\\n') == 1
    assert metric(samples, "x_total") == 2.5
    assert "y NaN" in e.text()

"""HTTP on the WebSocket port (rtc2sip.web), against a gateway in-process over real loopback sockets:
the web phone's files, /api/config, /api/registrations, /api/calls, /metrics (parsed, and its counters
moving with SIP traffic), the admin gate, and SIP over WebSocket still working on the same port. The
admin listener ([admin], rtc2sip.web.admin) over aiohttp's client: POST/DELETE of recording and
forwarding on a fake call, the refusals (405, 415, cross-site, token), TLS, a clean close.
The monitor's per-call time series (/api/calls/{id}/history) and ended calls' quality summary are
driven with a fake breaker and media plane and synthetic media statistics.

Calls with media are proven by tests/e2e/test_webphone_e2e.py (Chromium and baresip).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import aiohttp
import pytest
from websockets.asyncio.client import connect

from rtc2sip.app import Gateway
from rtc2sip.breaker.call import Call, Leg
from rtc2sip.breaker.dialog import Dialog
from rtc2sip.config import AdminOptions, ConfigError, GatewayOptions, Listener, Settings, read_options_text
from rtc2sip.web import monitor as monitor_module
from rtc2sip.web.http import STATIC, WebRouter
from rtc2sip.web.metrics import Exposition
from rtc2sip.web.monitor import SAMPLES, SERIES, Monitor, cause_label, e_model, failure_kind

TOKEN = "an-admin-token-0123456789"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path, domains=("example.test", "127.0.0.1")),
        admin=AdminOptions(listen=("127.0.0.1", 0)),
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
    assert set(doc["paths"]) == {"/api/config", "/api/registrations", "/api/calls", "/api/calls/{id}",
                                 "/api/calls/{id}/history", "/metrics", "/api/calls/{id}/recording",
                                 "/api/calls/{id}/forward"}
    from rtc2sip.web.admin import ROUTES

    for pattern, name, methods, _ in ROUTES:
        path = "/" + "/".join(pattern)
        if name in ("admin", "config", "recording", "forward"):
            described = {m.upper() for m in doc["paths"][path]} - {"PARAMETERS"}
            assert described == set(methods) - {"HEAD"}, path
    assert "ActionHeader" not in json.dumps(doc)
    schemas = doc["components"]["schemas"]
    assert set(schemas["History"]["properties"]["legs"]["items"]["properties"]["samples"]["required"]) == set(SERIES)
    assert schemas["Call"]["properties"]["quality"] == {"$ref": "#/components/schemas/Quality"}
    assert set(STATIC) >= {"/", "/calls", "/openapi.json"}


async def test_api_config(gateway: Gateway) -> None:
    config = (await get(gateway, "/api/config")).json()
    assert gateway.admin is not None
    assert config == {"version": "0.1.0", "domain": "example.test", "domains": ["example.test", "127.0.0.1"],
                      "auth_required": False, "admin_open": True,
                      "admin": {"actions": False, "url": f"http://127.0.0.1:{gateway.admin.port}/calls"}}


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
    assert metric(after, "rtc2sip_transcoding_sessions") == 0  # moving: tests/e2e/test_recording_e2e.py

    # the shared WebRTC socket's counters: a datagram that is not STUN, DTLS or RTP is garbage
    from rtc2sip.media.plane import MediaPlane

    assert isinstance(gateway.media, MediaPlane) and gateway.media.mux is not None
    garbage = metric(after, "rtc2sip_webrtc_socket_dropped_total", reason="garbage")
    received = metric(after, "rtc2sip_webrtc_socket_datagrams_total", direction="received")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
        junk.sendto(b"\xff not media", ("127.0.0.1", gateway.media.mux.port))
        for _ in range(200):
            now = parse_metrics((await get(gateway, "/metrics")).body.decode())
            if metric(now, "rtc2sip_webrtc_socket_dropped_total", reason="garbage") > garbage:
                break
            await asyncio.sleep(0.01)
    assert metric(now, "rtc2sip_webrtc_socket_dropped_total", reason="garbage") == garbage + 1
    assert metric(now, "rtc2sip_webrtc_socket_datagrams_total", direction="received") == received + 1
    for reason in ("unrouted", "unsendable", "send_error"):
        assert ("rtc2sip_webrtc_socket_dropped_total", frozenset({("reason", reason)})) in now

    regs = (await get(gateway, "/api/registrations")).json()
    assert isinstance(regs, dict)
    [alice] = regs["registrations"]
    assert alice["aor"] == "sip:alice@example.test" and alice["transport"] == "udp"
    assert alice["user_agent"] == "web-test" and 0 < alice["expires_in"] <= 600

    calls = (await get(gateway, "/api/calls")).json()
    assert calls == {"active": [], "ended": [], "diagnostics": []}
    assert (await get(gateway, "/api/calls/b1")).status == 404
    missing = await get(gateway, "/api/calls/b1/history")
    assert missing.status == 404 and "error" in cast(dict[str, Any], missing.json())


async def test_admin_routes_need_the_token_beyond_loopback(gateway: Gateway) -> None:
    """A listener beyond loopback cannot be opened in the test namespace: the router is switched by hand
    to what such a gateway gets (as test_proxy_loopback does with the relay policy)."""
    web = gateway.web
    assert web is not None and web.admin_open
    web.admin_open = False
    # no token configured: the admin routes are off, the phone still works
    for path in ("/api/calls", "/api/registrations", "/metrics", "/api/calls/b1", "/api/calls/b1/history"):
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


# ---- time series and quality (the monitor, driven with synthetic media statistics) ---------------


PCMU_ANSWER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n")


def make_call(call_id: str, session: str | None = None) -> Call:
    """A real breaker Call: a browser caller, a legacy callee that answered."""
    call = Call(call_id, session=session or f"s-{call_id}")
    for name, webrtc, is_caller in (("browser", True, True), ("legacy", False, False)):
        dialog = Dialog.uac(f"{name}-{call_id}", "<sip:gw@example.test>", f"<sip:{name}@example.test>",
                            f"sip:{name}@127.0.0.1", "<sip:gw@127.0.0.1>")
        leg = Leg(call=call, name=name, webrtc=webrtc, is_caller=is_caller, dialog=dialog)
        if is_caller:
            leg.local_sdp = PCMU_ANSWER
            call.caller = leg
        else:
            leg.ack = cast(Any, object())  # answered
            call.callee = leg
    return call


class FakeBreaker:
    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.observers: list[Any] = []

    def end(self, call: Call, reason: str) -> None:
        """What B2bua._end does for the observers, then forgets the call."""
        call.ended = True
        for observer in self.observers:
            observer(call, reason)
        del self.calls[call.id]


class FakePlane:
    """MediaPlane.stats() of synthetic sessions: `figures[session][side]` = (packets in, bytes in,
    packets out, bytes out, lost, jitter ms, RTT ms or None) of each leg's side."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.figures: dict[str, dict[str, tuple[int, int, int, int, int, float, float | None]]] = {}

    @property
    def sessions(self) -> list[str]:
        return list(self.figures)

    def on_failure(self, callback: Any) -> None:
        pass

    def stats(self, session: str) -> dict[str, Any]:
        if session not in self.figures:
            raise KeyError(session)
        out: dict[str, Any] = {"failed": None, "streams": {"audio": {}}}
        for side, (p_in, b_in, p_out, b_out, lost, jitter, rtt) in self.figures[session].items():
            counters = {"packets_in": p_in, "bytes_in": b_in, "packets_out": p_out, "bytes_out": b_out,
                        "rtcp_in": 0, "rtcp_out": 0, "dropped": 0}
            out[side] = dict(counters)
            out["streams"]["audio"][side] = {**counters, "lost": lost, "jitter_ms": jitter, "rtt_ms": rtt,
                                             "remote_report": None}
        return out


def fixture_monitor() -> tuple[Monitor, FakeBreaker, FakePlane]:
    breaker, plane = FakeBreaker(), FakePlane()
    return Monitor(cast(Any, breaker), cast(Any, plane)), breaker, plane


def test_history_shape_and_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monitor, breaker, plane = fixture_monitor()
    call = make_call("c1")
    breaker.calls["c1"] = call
    t0 = 1_700_000_000.0
    # 200 s of 50 packets/s of 172 bytes each way; every 10th second 5 packets lost on the legacy side
    for i in range(201):
        lost = 5 * (i // 10)
        rtt = 40.0 if i >= 3 else None  # no RTCP report in the first seconds
        plane.figures["s-c1"] = {
            "webrtc": (50 * i, 8600 * i, 50 * i, 8600 * i, 0, 2.0 + (i % 3), rtt),
            "legacy": (50 * i - lost, 8600 * i - 172 * lost, 50 * i, 8600 * i, lost, 10.0, None),
        }
        monitor.sample(now=t0 + i)
    history = monitor.call_history("c1")
    assert history is not None and history["id"] == "c1" and history["state"] == "active"
    assert history["interval_s"] == 1.0 and history["max_samples"] == SAMPLES == 120
    assert history["series"] == list(SERIES)
    assert [(leg["name"], leg["role"], leg["side"]) for leg in history["legs"]] == [
        ("browser", "caller", "webrtc"), ("legacy", "callee", "legacy")]
    browser, legacy = history["legs"]
    for leg in (browser, legacy):
        columns = leg["samples"]
        assert set(columns) == set(SERIES)
        assert all(len(v) == SAMPLES for v in columns.values())  # bounded: the last 120 of 200
        assert columns["t"] == [t0 + i for i in range(81, 201)]
        assert columns["kbps_out"] == [68.8] * SAMPLES  # 8 * 8600 B/s
    assert browser["samples"]["kbps_in"] == [68.8] * SAMPLES
    assert browser["samples"]["packets_in"] == [50.0] * SAMPLES
    assert browser["samples"]["jitter_ms"] == [2.0 + (i % 3) for i in range(81, 201)]
    assert browser["samples"]["rtt_ms"] == [40.0] * SAMPLES
    assert legacy["samples"]["rtt_ms"] == [None] * SAMPLES  # unknown, not 0
    assert browser["samples"]["lost"] == [0.0] * SAMPLES
    # legacy: the second after each multiple of 10 counts 5 lost, 45 received: 10 %
    assert legacy["samples"]["lost"] == [5.0 if i % 10 == 0 else 0.0 for i in range(81, 201)]
    assert legacy["samples"]["loss_pct"] == [10.0 if i % 10 == 0 else 0.0 for i in range(81, 201)]
    assert len(json.dumps(history)) < 20_000

    # the route, through the admin gate like every /api/calls path
    settings = Settings(listeners=(Listener("ws", "127.0.0.1", 0),), gateway=GatewayOptions(data_dir=tmp_path))
    router = WebRouter(settings, proxy=cast(Any, None), monitor=monitor)
    r = router.route("/api/calls/c1/history", {})
    assert r.status == 200 and json.loads(r.body) == history
    assert router.route("/api/calls/c2/history", {}).status == 404
    router.admin_open = False
    assert router.route("/api/calls/c1/history", {}).status == 403

    # bounded in total: calls in progress beyond TRACKED get no series; ended ones, the last ENDED_SERIES
    monkeypatch.setattr(monitor_module, "TRACKED", 3)
    monkeypatch.setattr(monitor_module, "ENDED_SERIES", 2)
    for n in range(2, 6):
        breaker.calls[f"c{n}"] = make_call(f"c{n}")
        plane.figures[f"s-c{n}"] = plane.figures["s-c1"]
    monitor.sample(now=t0 + 201)
    assert sorted(monitor.series) == ["c1", "c2", "c3"]
    assert monitor.call_history("c5") is None
    for n in range(1, 6):
        breaker.end(breaker.calls[f"c{n}"], "BYE from browser")
    assert monitor.series == {} and list(monitor.ended_series) == ["c2", "c3"]
    ended = monitor.call_history("c3")
    assert ended is not None and ended["state"] == "ended" and ended["quality"]["legs"][0]["name"] == "browser"
    assert monitor.call_history("c1") is None  # pushed out of the ended series


def test_quality_summary_of_an_ended_call() -> None:
    monitor, breaker, plane = fixture_monitor()
    call = make_call("q1")
    breaker.calls["q1"] = call
    t0 = 1_700_000_000.0
    jitters = [1.0, 3.0, 5.0, 3.0]
    for i, jitter in enumerate(jitters):
        plane.figures["s-q1"] = {
            # browser leg: clean, RTT 20 then 60 ms
            "webrtc": (100 * i, 17_200 * i, 100 * i, 17_200 * i, 0, jitter, 20.0 if i < 2 else 60.0),
            # legacy leg: 5 % loss overall by the end (19 lost for 361 received), jitter 8 ms, no RTT
            "legacy": (361 * i // 3, 17_200 * i, 100 * i, 17_200 * i, 19 * i // 3, 8.0, None),
        }
        monitor.sample(now=t0 + i)
    breaker.end(call, "BYE from browser")
    [ended] = monitor.history
    assert ended["state"] == "ended" and ended["cause"] == "BYE from browser" and ended["answered"]
    q = ended["quality"]
    assert set(q) == {"duration_s", "legs", "model"} and "G.107" in q["model"]
    browser, legacy = q["legs"]
    # the sample at the end (call_ended samples once more) repeats the last figures: 5 jitter samples
    assert browser == {
        "name": "browser", "role": "caller", "media": True, "codec": "PCMU/8000",
        "packets_in": 300, "packets_out": 300, "lost": 0, "loss_pct": 0.0,
        "jitter_ms_mean": round((1 + 3 + 5 + 3 + 3) / 5, 2), "jitter_ms_max": 5.0,
        "rtt_ms_mean": round((20 + 20 + 60 + 60 + 60) / 5, 2),
        **{k: v for k, v in e_model(0.0, 44.0, 3.0, "PCMU/8000").items() if k in ("delay_ms", "r", "mos")},
    }
    assert legacy["packets_in"] == 361 and legacy["lost"] == 19 and legacy["loss_pct"] == 5.0
    assert legacy["rtt_ms_mean"] is None and legacy["jitter_ms_mean"] == 8.0
    rating = e_model(5.0, None, 8.0, "PCMU")
    assert (legacy["delay_ms"], legacy["r"], legacy["mos"]) == (rating["delay_ms"], rating["r"], rating["mos"])
    assert browser["mos"] > legacy["mos"]
    # the same summary in /api/calls's ended list and in the call's history
    history = monitor.call_history("q1")
    assert history is not None and history["quality"] == q
    assert len(history["legs"][0]["samples"]["t"]) == 4  # 3 deltas during the call + the one at its end


def test_quality_summary_of_a_call_never_sampled() -> None:
    """A call shorter than a sample interval: its last figures make the summary; a leg with nothing
    received has no rating."""
    monitor, breaker, plane = fixture_monitor()
    call = make_call("short")
    breaker.calls["short"] = call
    plane.figures["s-short"] = {"webrtc": (20, 3440, 0, 0, 1, 4.0, 12.0), "legacy": (0, 0, 20, 3440, 0, 0.0, None)}
    breaker.end(call, "BYE from legacy")
    browser, legacy = monitor.history[0]["quality"]["legs"]
    assert browser["jitter_ms_mean"] == browser["jitter_ms_max"] == 4.0 and browser["rtt_ms_mean"] == 12.0
    assert browser["loss_pct"] == round(100 / 21, 2) and browser["mos"] is not None
    assert legacy["packets_in"] == 0 and legacy["r"] is None and legacy["mos"] is None
    assert monitor.call_history("short") is None  # no series: never sampled


def test_e_model_simplified() -> None:
    """Hand-computed points of the simplified E-model (G.107 with default factors, G.113 Appendix I)."""
    # G.711, no loss, d = 20 ms (packetisation only): Id = 0.48, R = 92.72
    best = e_model(0.0, 0.0, 0.0, "PCMU/8000")
    assert best == {"delay_ms": 20.0, "r": 92.7, "mos": 4.4}
    # 5 % random loss: Ie,eff = 95 * 5 / (5 + 25.1) = 15.78
    assert e_model(5.0, 0.0, 0.0, "PCMA/8000") == {"delay_ms": 20.0, "r": 76.9, "mos": 3.9}
    # d = 760 / 2 + 20 = 400 ms, past the 177.3 ms knee: Id = 9.6 + 0.11 * 222.7 = 34.1, R = 59.1
    assert e_model(0.0, 760.0, 0.0, "PCMU") == {"delay_ms": 400.0, "r": 59.1, "mos": 3.05}
    # G.729A: Ie 11, d = 25 ms (R = 93.2 - 0.6 - 11); Opus: G.711's impairment with its 26.5 ms delay;
    # an unknown codec: G.711
    assert e_model(0.0, 0.0, 0.0, "G729/8000")["r"] == 81.6
    assert e_model(0.0, 0.0, 0.0, "opus/48000")["delay_ms"] == 26.5
    assert e_model(0.0, 0.0, 0.0, "L16/8000") == best
    # jitter counts twice (the buffer); everything lost: R below 0, MOS 1
    assert e_model(0.0, 0.0, 10.0, "PCMU")["delay_ms"] == 40.0
    assert e_model(100.0, 2000.0, 50.0, "PCMU")["mos"] == 1.0
    assert all(not math.isnan(v) for v in best.values())


# ---- the admin listener: recording and forwarding of one call ---------------------------------------


async def admin(gw: Gateway, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
                ssl_context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], Any]:
    """One request to the gateway's admin listener (aiohttp's client): status, headers, JSON or text."""
    assert gw.admin is not None
    if method == "POST" and body is None and not headers:
        body = {}  # a POST's body is JSON, even when the action needs nothing in it
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{gw.admin.url}{path}", json=body, headers=headers, ssl=ssl_context if ssl_context else True,
    ) as r:
        text = await r.text()
        doc = json.loads(text) if r.content_type == "application/json" else text
        return r.status, dict(r.headers), doc


def fake_call(gw: Gateway, call_id: str, session: str | None = "no-such-session") -> Call:
    breaker = gw.proxy.breaker if gw.proxy is not None else None
    assert breaker is not None
    call = make_call(call_id, session=session or "x")
    call.session = session
    breaker.calls[call_id] = call  # type: ignore[attr-defined]
    return call


async def test_admin_actions_on_the_admin_listener(gateway: Gateway) -> None:
    """POST/DELETE of recording and forwarding, their refusals; the actions themselves on real calls are
    in tests/e2e/test_recording_e2e.py (here the call's media session does not exist)."""
    call = fake_call(gateway, "c1")
    status, _, doc = await admin(gateway, "POST", "/api/calls/c1/recording")
    assert status == 404 and "gone" in doc["error"]  # the plane does not know the session
    status, _, doc = await admin(gateway, "POST", "/api/calls/c1/forward", {"host": "127.0.0.1", "port": 40000})
    assert status == 404 and "gone" in doc["error"]
    assert await admin(gateway, "DELETE", "/api/calls/c1/recording") == (
        200, ANY, {"call": "c1", "recording": False, "stopped": False})
    status, _, doc = await admin(gateway, "DELETE", "/api/calls/c1/forward")
    assert (status, doc) == (200, {"call": "c1", "forwarding": False, "stopped": False})
    assert (await admin(gateway, "POST", "/api/calls/nope/recording"))[0] == 404
    for bad in ({"host": "example.org", "port": 40000}, {"host": "127.0.0.1", "port": 0}, {"host": "127.0.0.1"}):
        status, _, doc = await admin(gateway, "POST", "/api/calls/c1/forward", bad)
        assert status == 400 and doc["error"], bad
    # GET of an action is no action; neither is a form post, nor a cross-site fetch
    status, headers, doc = await admin(gateway, "GET", "/api/calls/c1/recording")
    assert status == 405 and headers["Allow"] == "POST, DELETE" and "error" in doc
    status, _, _ = await admin(gateway, "POST", "/api/calls/c1/recording", None,
                               {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, _, doc = await admin(gateway, "POST", "/api/calls/c1/recording", {}, {"Sec-Fetch-Site": "cross-site"})
    assert status == 403 and "cross-site" in doc["error"]
    status, _, doc = await admin(gateway, "GET", "/api/calls", None, {"Host": "rebound.example"})  # DNS rebinding
    assert status == 403 and "Host" in doc["error"]
    status, headers, _ = await admin(gateway, "OPTIONS", "/api/calls/c1/recording",
                                     headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 405 and not any(k.lower().startswith("access-control-") for k in headers)
    status, _, doc = await admin(gateway, "POST", "/api/calls/c1/forward", {"host": "127.0.0.1", "pad": "x" * 20000})
    assert status == 413 and "larger" in doc["error"]
    call.session = None
    assert (await admin(gateway, "POST", "/api/calls/c1/recording"))[0] == 409
    # the read-only routes and the live view
    status, _, calls = await admin(gateway, "GET", "/api/calls")
    assert status == 200 and [c["id"] for c in calls["active"]] == ["c1"]
    for path in ("/api/registrations", "/metrics", "/calls", "/calls.js", "/style.css"):
        assert (await admin(gateway, "GET", path))[0] == 200, path
    assert (await admin(gateway, "GET", "/api/config"))[2]["admin"]["actions"] is True
    # the public port no longer acts, and says where to go
    moved = await get(gateway, "/api/calls/c1/recording/start", {"X-Rtc2sip-Action": "1"})
    assert moved.status == 404 and gateway.admin is not None
    assert f"{gateway.admin.url}/api/calls/c1/recording" in cast(dict[str, Any], moved.json())["error"]


async def start_gateway(tmp_path: Path, admin_options: AdminOptions) -> Gateway:
    gw = Gateway(Settings(listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
                          gateway=GatewayOptions(data_dir=tmp_path, domains=("example.test",)), admin=admin_options))
    await gw.start()
    return gw


async def test_admin_token_is_required_when_set(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, AdminOptions(listen=("127.0.0.1", 0), token=TOKEN))
    try:
        fake_call(gw, "c1")
        for method, path in (("GET", "/api/calls"), ("GET", "/metrics"), ("DELETE", "/api/calls/c1/recording")):
            status, headers, _ = await admin(gw, method, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            status, _, _ = await admin(gw, method, path, headers={"Authorization": "Bearer not-the-token-00000"})
            assert status == 401, path
            status, _, _ = await admin(gw, method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200, path
        assert (await admin(gw, "GET", "/calls"))[0] == 200  # the shell, to ask for the token
    finally:
        await gw.stop()


async def test_admin_over_tls(tmp_path: Path) -> None:
    from test_proxy_loopback import _self_signed  # type: ignore[import-not-found]

    key, cert = _self_signed(tmp_path)
    gw = await start_gateway(tmp_path, AdminOptions(listen=("127.0.0.1", 0), token=TOKEN, tls_cert=cert,
                                                    tls_key=key))
    try:
        assert gw.admin is not None and gw.admin.url.startswith("https://127.0.0.1:")
        assert gw.web is not None and gw.web.admin_url == gw.admin.url
        ctx = ssl.create_default_context(cafile=str(cert))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, headers, _ = await admin(gw, "GET", "/api/calls", headers=auth, ssl_context=ctx)
        assert status == 200 and headers["Content-Type"] == "application/json"
        fake_call(gw, "c1")
        status, _, doc = await admin(gw, "DELETE", "/api/calls/c1/forward", headers=auth, ssl_context=ctx)
        assert status == 200 and doc["stopped"] is False
        # plain HTTP on the TLS port gets nothing useful, and nothing acts
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.admin.port)
        writer.write(b"DELETE /api/calls/c1/forward HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert b"200 OK" not in raw
    finally:
        await gw.stop()


async def test_admin_listener_closes_with_the_gateway(tmp_path: Path) -> None:
    gw = await start_gateway(tmp_path, AdminOptions(listen=("127.0.0.1", 0)))
    assert gw.admin is not None
    port = gw.admin.port
    assert port != 0 and (await admin(gw, "GET", "/api/config"))[0] == 200
    # a client that keeps its connection open must not hold the gateway's stop
    _, idle = await asyncio.open_connection("127.0.0.1", port)
    tasks = asyncio.all_tasks()
    await asyncio.wait_for(gw.stop(), 10)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    idle.close()
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() - tasks if not t.done()]
    assert leftover == [], leftover


def test_admin_beyond_loopback_needs_a_token_and_tls() -> None:
    for extra in ("", f'token = "{TOKEN}"\n'):
        with pytest.raises(ConfigError, match="beyond loopback") as err:
            read_options_text(f'[admin]\nlisten = "0.0.0.0:8089"\n{extra}')
        assert err.value.key == "admin.listen"
    assert read_options_text('[admin]\nlisten = "127.0.0.1:0"\n').admin.listen == ("127.0.0.1", 0)

"""The admin listener's router (rtc2sip.web.admin), sans I/O: requests in, responses out, over a fake
breaker and media plane. The listener itself (aiohttp, TLS, the token over the wire) is in
tests/integration/test_web.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.web.admin import ROUTES, AdminRequest, AdminRouter
from rtc2sip.web.http import HttpResponse, WebRouter
from rtc2sip.web.monitor import Monitor

TOKEN = "an-admin-token-0123456789"
JSON_CT = {"Content-Type": "application/json"}


@dataclass
class FakeCall:
    session: str | None


@dataclass
class FakeBreaker:
    calls: dict[str, FakeCall] = field(default_factory=dict)
    observers: list[Any] = field(default_factory=list)


class FakePlane:
    """What the admin actions call on a media plane; ``done`` records them."""

    def __init__(self) -> None:
        self.done: list[tuple[Any, ...]] = []
        self.sessions: list[str] = []

    def on_failure(self, callback: Any) -> None:
        pass

    def start_recording(self, session: str) -> str:
        if session == "gone":
            raise KeyError(session)
        self.done.append(("record", session))
        return f"/rec/{session}.json"

    def stop_recording(self, session: str) -> bool:
        self.done.append(("stop-record", session))
        return True

    def start_forward(self, session: str, host: str, port: int) -> str:
        self.done.append(("forward", session, host, port))
        return f"/rec/{session}.sdp"

    def stop_forward(self, session: str) -> bool:
        self.done.append(("stop-forward", session))
        return False


def make_router(tmp_path: Path, token: str | None = None) -> tuple[AdminRouter, FakeBreaker, FakePlane]:
    breaker, plane = FakeBreaker(), FakePlane()
    breaker.calls["c1"] = FakeCall("s1")
    breaker.calls["early"] = FakeCall(None)
    breaker.calls["a/b"] = FakeCall("s2")
    settings = Settings(listeners=(Listener("ws", "127.0.0.1", 0),), gateway=GatewayOptions(data_dir=tmp_path))
    web = WebRouter(settings, proxy=cast(Any, None), monitor=Monitor(cast(Any, breaker), cast(Any, plane)),
                    media=cast(Any, plane))
    return AdminRouter(web, token), breaker, plane


def body(r: HttpResponse) -> dict[str, Any]:
    assert r.content_type == "application/json", r
    doc = json.loads(r.body)
    assert isinstance(doc, dict)
    return doc


def req(method: str, target: str, headers: dict[str, str] | None = None, data: object = None) -> AdminRequest:
    raw = b"" if data is None else data if isinstance(data, bytes) else json.dumps(data).encode()
    return AdminRequest(method, target, headers if headers is not None else JSON_CT, raw)


def test_recording_start_and_stop(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path)
    started = router.route(req("POST", "/api/calls/c1/recording"))
    assert started.status == 201 and body(started) == {"call": "c1", "recording": True, "sidecar": "/rec/s1.json"}
    assert router.route(req("POST", "/api/calls/c1/recording", data={})).status == 201  # {} as good as nothing
    stopped = router.route(req("DELETE", "/api/calls/c1/recording", {}))
    assert stopped.status == 200 and body(stopped) == {"call": "c1", "recording": False, "stopped": True}
    assert plane.done == [("record", "s1"), ("record", "s1"), ("stop-record", "s1")]


def test_forward_takes_a_json_destination(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path)
    r = router.route(req("POST", "/api/calls/c1/forward", data={"host": "[::1]", "port": 40000}))
    assert r.status == 201 and body(r)["to"] == {"host": "::1", "port": 40000} and body(r)["sdp"] == "/rec/s1.sdp"
    assert plane.done == [("forward", "s1", "::1", 40000)]
    for bad in ({"host": "example.org", "port": 40000}, {"host": "127.0.0.1", "port": 0},
                {"host": "127.0.0.1", "port": 65530}, {"host": "127.0.0.1", "port": "40000"},
                {"host": "127.0.0.1", "port": True}, {"host": "127.0.0.1"}, {"port": 40000}, {"host": 1, "port": 2},
                {"host": "127.0.0.1", "port": 40000, "ttl": 3}, [1], "x"):
        r = router.route(req("POST", "/api/calls/c1/forward", data=bad))
        assert r.status == 400 and body(r)["error"], bad
    assert router.route(req("POST", "/api/calls/c1/forward", data=b"{not json")).status == 400
    assert router.route(req("POST", "/api/calls/c1/recording", data={"x": 1})).status == 400
    stop = router.route(req("DELETE", "/api/calls/c1/forward", {}))
    assert body(stop) == {"call": "c1", "forwarding": False, "stopped": False}
    assert len(plane.done) == 2  # nothing refused reached the plane


def test_calls_that_cannot_be_acted_on(tmp_path: Path) -> None:
    router, breaker, _ = make_router(tmp_path)
    assert router.route(req("POST", "/api/calls/nope/recording")).status == 404
    assert router.route(req("POST", "/api/calls/early/recording")).status == 409  # no media session yet
    breaker.calls["c1"].session = "gone"  # ended meanwhile: the plane no longer knows it
    gone = router.route(req("POST", "/api/calls/c1/recording"))
    assert gone.status == 404 and "gone" in body(gone)["error"]
    # a call id is one percent-encoded segment
    assert router.route(req("POST", "/api/calls/a%2Fb/recording")).status == 201


def test_methods_and_allow(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path)
    for target in ("/api/calls/c1/recording", "/api/calls/c1/forward"):
        r = router.route(req("GET", target))
        assert r.status == 405 and ("Allow", "POST, DELETE") in r.headers, target
        assert router.route(req("PUT", target)).status == 405
    for target in ("/api/calls", "/metrics", "/calls", "/api/calls/c1/history"):
        r = router.route(req("POST", target))
        assert r.status == 405 and ("Allow", "GET, HEAD") in r.headers, target
    assert router.route(req("OPTIONS", "/api/calls/c1/recording")).status == 405  # no CORS preflight
    # the old GET actions of the WebSocket ports are not routes here
    assert router.route(req("GET", "/api/calls/c1/recording/start")).status == 404
    assert router.route(req("GET", "/nope")).status == 404
    assert router.route(req("POST", "/api/calls//recording")).status == 404
    assert plane.done == []
    assert {name for _, name, _, _ in ROUTES} >= {"recording", "forward", "admin", "static", "config"}


def test_cross_site_and_non_json_are_refused(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path)
    for site in ("cross-site", "same-site"):
        for method in ("POST", "DELETE"):
            r = router.route(req(method, "/api/calls/c1/recording", {**JSON_CT, "Sec-Fetch-Site": site}))
            assert r.status == 403 and "cross-site" in body(r)["error"], (site, method)
    for ct in ({}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"},
               {"Content-Type": "multipart/form-data; boundary=x"}):
        r = router.route(req("POST", "/api/calls/c1/forward", ct, b'{"host": "127.0.0.1", "port": 40000}'))
        assert r.status == 415, ct
    assert plane.done == []
    ok = {"content-type": "application/json; charset=utf-8", "sec-fetch-site": "same-origin"}
    assert router.route(req("POST", "/api/calls/c1/recording", ok)).status == 201
    assert router.route(req("GET", "/calls", {"Sec-Fetch-Site": "cross-site"})).status == 200  # a link, not an act


def test_a_foreign_origin_is_refused(tmp_path: Path) -> None:
    """Browsers too old for Sec-Fetch-Site still send Origin on a POST or DELETE (RFC 6454 §7)."""
    router, _, plane = make_router(tmp_path)
    host = {**JSON_CT, "Host": "127.0.0.1:8089"}
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "https://127.0.0.1:8089x", "garbage"):
        for method in ("POST", "DELETE"):
            r = router.route(req(method, "/api/calls/c1/recording", {**host, "Origin": origin}))
            assert r.status == 403 and "cross-site" in body(r)["error"], (origin, method)
    r = router.route(req("POST", "/api/calls/c1/recording", {**JSON_CT, "Origin": "http://127.0.0.1:8089"}))
    assert r.status == 403  # an Origin with no Host to compare it with
    assert plane.done == []
    ours = {**host, "Origin": "http://127.0.0.1:8089"}
    assert router.route(req("POST", "/api/calls/c1/recording", ours)).status == 201
    same = {**JSON_CT, "Host": "localhost", "Origin": "http://LOCALHOST:80"}
    assert router.route(req("DELETE", "/api/calls/c1/recording", same)).status != 403


def test_token(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path, TOKEN)
    for method, target in (("GET", "/api/calls"), ("GET", "/metrics"), ("GET", "/api/registrations"),
                           ("GET", "/api/calls/c1"), ("POST", "/api/calls/c1/recording"),
                           ("DELETE", "/api/calls/c1/forward")):
        r = router.route(req(method, target))
        assert r.status == 401 and any(k == "WWW-Authenticate" for k, _ in r.headers), target
        wrong = router.route(req(method, target, {**JSON_CT, "Authorization": "Bearer not-the-token-0000"}))
        assert wrong.status == 401 and "invalid_token" in dict(wrong.headers)["WWW-Authenticate"]
    assert plane.done == []
    good = {**JSON_CT, "Authorization": f"Bearer {TOKEN}"}
    assert router.route(req("POST", "/api/calls/c1/recording", good)).status == 201
    assert router.route(req("GET", "/api/calls/c1/history", good)).status == 404  # past the gate: no series
    # the page's shell and what it needs to ask for the token stay open
    for target in ("/calls", "/calls.js", "/style.css", "/api/config", "/openapi.json"):
        assert router.route(req("GET", target, {})).status == 200, target
    assert dict(router.route(req("GET", "/", {})).headers)["Location"] == "/calls"


def test_config_tells_the_live_view_it_may_act(tmp_path: Path) -> None:
    router, _, _ = make_router(tmp_path)
    router.web.admin_url = "http://127.0.0.1:8089"
    assert body(router.route(req("GET", "/api/config", {})))["admin"] == {
        "actions": True, "url": "http://127.0.0.1:8089/calls"}
    public = router.web.route("/api/config", {})
    assert json.loads(public.body)["admin"] == {"actions": False, "url": "http://127.0.0.1:8089/calls"}
    # the public port's former GET actions are gone, and say where they went
    moved = router.web.route("/api/calls/c1/recording/start", {"X-Rtc2sip-Action": "1"})
    assert moved.status == 404 and "POST and DELETE on http://127.0.0.1:8089/api/calls/c1/recording" in body(
        moved)["error"]


def test_media_workers_answer_once_the_worker_started(tmp_path: Path) -> None:
    router, _, plane = make_router(tmp_path)
    refusal: list[BaseException] = []

    async def tap_settled(session: str) -> None:
        if refusal:
            raise refusal[0]

    plane.tap_settled = tap_settled  # type: ignore[attr-defined]
    r = router.route(req("POST", "/api/calls/c1/recording"))
    assert r.settle is not None and asyncio.run(r.settle()) is None and r.status == 201
    refusal.append(RuntimeError("disk full"))
    r = router.route(req("POST", "/api/calls/c1/forward", data={"host": "127.0.0.1", "port": 5004}))
    assert r.settle is not None
    refused = asyncio.run(r.settle())
    assert refused is not None and refused.status == 409 and "disk full" in body(refused)["error"]


@pytest.mark.parametrize("target", ["/api/calls/c1/recording?x=1", "/api/calls/c1/recording/"])
def test_query_and_trailing_slash(tmp_path: Path, target: str) -> None:
    router, _, _ = make_router(tmp_path)
    assert router.route(req("POST", target)).status == 201


def test_dns_rebinding_is_refused_without_a_token(tmp_path: Path) -> None:
    """A page of evil.example rebound to 127.0.0.1 is same-origin with the listener: its Host gives it away."""
    router, _, plane = make_router(tmp_path)
    for host in ("127.0.0.1:8089", "localhost:8089", "[::1]:8089", "127.0.0.2", "LOCALHOST."):
        assert router.route(req("POST", "/api/calls/c1/recording", {**JSON_CT, "Host": host})).status == 201, host
    for host in ("evil.example:8089", "evil.example", "192.0.2.1:8089", "[::ffff:192.0.2.1]", "127.0.0.1.evil.example",
                 "[bad"):
        for method, target in (("POST", "/api/calls/c1/recording"), ("GET", "/api/calls"), ("GET", "/calls")):
            r = router.route(req(method, target, {**JSON_CT, "Host": host}))
            assert r.status == 403 and "Host" in body(r)["error"], (host, target)
    assert len(plane.done) == 5
    # with a token the attacker has nothing: any Host (a reverse proxy's name) will do
    router.token = TOKEN
    r = router.route(req("GET", "/calls", {"Host": "admin.example.org"}))
    assert r.status == 200

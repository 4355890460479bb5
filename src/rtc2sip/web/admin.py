"""The admin listener (``[admin]``): the admin API with real POST and DELETE, and the live view that uses it.

A listener of its own, apart from the SIP WebSocket ports (whose HTTP is websockets' handshake parser,
GET only): ``127.0.0.1:8089`` by default; beyond loopback the configuration refuses it without both a
bearer token and TLS (rtc2sip.config.options ``_admin``). :meth:`AdminRouter.route` is the whole
behaviour with no I/O (:class:`AdminRequest` in, :class:`~rtc2sip.web.http.HttpResponse` out);
:class:`AdminListener` adapts it to aiohttp's server.

Routes (``ROUTES``)::

    GET  /calls, /calls.js, /style.css, /openapi.json     the live view, its actions enabled      open
    GET  /api/config                                      with "admin": {"actions": true}        open
    GET  /api/calls, /api/calls/{id}, /api/calls/{id}/history, /api/registrations, /metrics    token
    POST /api/calls/{id}/recording   start (201)   DELETE /api/calls/{id}/recording   stop      token
    POST /api/calls/{id}/forward     {"host": IP, "port": N} (201)   DELETE …/forward  stop     token

"token": ``Authorization: Bearer <token>`` (RFC 6750 §2.1) when ``[admin] token`` (or ``[gateway]
admin_token``) is set; with none, which only a loopback listener allows, every route is open. The
page shell stays open so that a browser can load it and ask for the token.

Cross-site request forgery: a POST must be ``Content-Type: application/json`` (415 otherwise), which
no HTML form can send, and this server answers no CORS preflight (OPTIONS is 405 and no response
carries ``Access-Control-Allow-Origin``), so a page of another origin cannot make the browser send
one; a DELETE needs a preflight as well. On top of that, a POST or DELETE the browser marks
``Sec-Fetch-Site`` other than ``same-origin`` or ``none`` is refused (403), and so is one whose
``Origin`` (RFC 6454 §7, sent by browsers on every POST and DELETE, also those too old for
Sec-Fetch-*) names another host and port than the request's ``Host``. With no token (loopback
only) a request whose ``Host`` is not a loopback address or ``localhost`` is refused (403): a page
whose domain was rebound to 127.0.0.1 (DNS rebinding) is same-origin with this listener and would
otherwise read and act freely.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import api
from .http import SECURITY_HEADERS, STATIC, HttpResponse, destination

if TYPE_CHECKING:
    from aiohttp import web as aioweb

    from .http import WebRouter

log = logging.getLogger("rtc2sip.web.admin")

READ = ("GET", "HEAD")
ACT = ("POST", "DELETE")
# the largest request body read: an action's JSON is tens of bytes
MAX_BODY = 16 * 1024

# (path segments, "{id}" for a call's, route name, methods, needs the token)
ROUTES: tuple[tuple[tuple[str, ...], str, tuple[str, ...], bool], ...] = (
    ((), "root", READ, False),
    (("calls",), "static", READ, False),
    (("calls.js",), "static", READ, False),
    (("style.css",), "static", READ, False),
    (("openapi.json",), "static", READ, False),
    (("favicon.ico",), "favicon", READ, False),
    (("api", "config"), "config", READ, False),
    (("api", "calls"), "admin", READ, True),
    (("api", "registrations"), "admin", READ, True),
    (("metrics",), "admin", READ, True),
    (("api", "calls", "{id}"), "admin", READ, True),
    (("api", "calls", "{id}", "history"), "admin", READ, True),
    (("api", "calls", "{id}", "recording"), "recording", ACT, True),
    (("api", "calls", "{id}", "forward"), "forward", ACT, True),
)


@dataclass(frozen=True, slots=True)
class AdminRequest:
    method: str
    target: str  # the request target as sent: percent-encoded path, optional query
    headers: Mapping[str, str]
    body: bytes = b""


def _error(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    r = HttpResponse.json({"error": text}, status)
    return HttpResponse(r.status, r.body, r.content_type, r.headers + headers)


def _match(segments: list[str]) -> tuple[str, str | None, tuple[str, ...], bool] | None:
    """(route name, call id, methods, needs the token) of a path, None when no route has it."""
    for pattern, name, methods, gated in ROUTES:
        if len(pattern) != len(segments):
            continue
        call_id = None
        for want, got in zip(pattern, segments, strict=True):
            if want == "{id}":
                call_id = got
            elif want != got:
                break
        else:
            if call_id == "":
                continue
            return name, call_id, methods, gated
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    """``Origin`` names this listener: its host[:port] is the request's ``Host`` ("null", an opaque
    origin of a sandboxed page or a file, never is)."""
    if host is None:
        return False
    try:
        parts = urllib.parse.urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = "443" if parts.scheme == "https" else "80"

    def key(netloc: str) -> str:
        netloc = netloc.lower()
        return netloc if netloc.rsplit("]", 1)[-1].count(":") else f"{netloc}:{default}"

    return key(parts.netloc) == key(host.strip())


def _loopback_host(host: str | None) -> bool:
    """A Host header naming a loopback address or localhost (any port); no Host (HTTP/1.0) too."""
    if host is None:
        return True
    try:
        name = urllib.parse.urlsplit("//" + host.strip()).hostname or ""
    except ValueError:
        return False
    if name.rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AdminRouter:
    """Every route of the admin listener (see the module docstring), over the public ports' router
    (its views, static files, media-worker settling and call actions are the same code)."""

    def __init__(self, web: WebRouter, token: str | None) -> None:
        self.web = web
        self.token = token

    def route(self, request: AdminRequest) -> HttpResponse:
        raw_path = request.target.split("?", 1)[0].split("#", 1)[0]
        segments = [urllib.parse.unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        found = _match(segments)
        if found is None:
            return _error(404, f"no such route: {raw_path[:200]} (see /openapi.json)")
        name, call_id, methods, gated = found
        method = request.method.upper()
        if method not in methods:
            return _error(405, f"{method[:20]} is not allowed here (allowed: {', '.join(methods)})",
                          (("Allow", ", ".join(methods)),))
        headers = {k.lower(): v for k, v in request.headers.items()}
        if self.token is None and not _loopback_host(headers.get("host")):
            return _error(403, f"Host {headers.get('host', '')[:100]!r} refused: without a token this listener "
                          "answers only requests for a loopback address or localhost")
        if gated:
            refused = self._gate(headers.get("authorization"))
            if refused is not None:
                return refused
        if name == "root":
            return HttpResponse(302, headers=(("Location", "/calls"),))
        if name == "static":
            file, content_type = STATIC["/" + segments[0]]
            return self.web.static_file(file, content_type, headers.get("if-none-match"))
        if name == "favicon":
            return HttpResponse(204)
        if name == "config":
            web = self.web
            return HttpResponse.json(api.config_view(web.settings, web.admin_open, web.admin_url, actions=True))
        if name == "admin":
            return self.web.admin_get("/" + "/".join(segments))
        assert call_id is not None
        return self._action(name, call_id, method, headers, request.body)

    def _action(self, what: str, call_id: str, method: str, headers: dict[str, str], body: bytes) -> HttpResponse:
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return _error(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]})")
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, headers.get("host")):
            return _error(403, f"cross-site request refused (Origin: {origin[:100]})")
        if method == "DELETE":
            return self.web.call_action(call_id, what, start=False)
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return _error(415, "a POST takes a JSON body: Content-Type: application/json")
        try:
            doc: Any = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        if not isinstance(doc, dict):
            return _error(400, "the body must be a JSON object")
        known = ("host", "port") if what == "forward" else ()
        unknown = sorted(set(doc) - set(known))
        if unknown:
            return _error(400, f"unknown field {unknown[0][:40]!r} (known: {', '.join(known) or 'none'})")
        if what == "recording":
            return self.web.call_action(call_id, what, start=True)
        to = destination(doc.get("host"), doc.get("port"))
        if isinstance(to, str):
            return _error(400, to)
        return self.web.call_action(call_id, what, start=True, to=to)

    def _gate(self, authorization: str | None) -> HttpResponse | None:
        """None when the token is right or none is configured; otherwise the refusal (RFC 6750 §3)."""
        if self.token is None:
            return None
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(401, "a bearer token is required ([admin] token)",
                          (("WWW-Authenticate", 'Bearer realm="rtc2sip-admin"'),))
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return _error(401, "wrong token",
                          (("WWW-Authenticate", 'Bearer realm="rtc2sip-admin", error="invalid_token"'),))
        return None


def admin_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key, password=lambda: b"")
    return ctx


class AdminListener:
    """:class:`AdminRouter` served by aiohttp on one address; :meth:`close` stops it and its connections."""

    def __init__(self, router: AdminRouter, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.router = router
        self.host = host
        self.port = port
        self.tls = tls
        self._runner: aioweb.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        from aiohttp import web as aioweb

        app = aioweb.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # no access log: the actions log their own line, reads are not events
        runner = aioweb.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            site = aioweb.TCPSite(runner, self.host, self.port, ssl_context=self.tls, reuse_address=True)
            await site.start()
        except BaseException:
            await self.close()
            raise
        if runner.addresses:  # port 0: the one the system chose
            self.port = int(runner.addresses[0][1])
        log.info("admin listener on %s (the live view with its actions at /calls; %s)", self.url,
                 "bearer token required" if self.router.token else "no token")

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: aioweb.Request) -> aioweb.StreamResponse:
        from aiohttp import web as aioweb

        try:
            body = await request.read() if request.can_read_body else b""
        except aioweb.HTTPRequestEntityTooLarge:
            return _aiohttp_response(_error(413, f"the body is larger than {MAX_BODY} bytes"))
        req = AdminRequest(request.method, request.rel_url.raw_path, request.headers, body)
        try:
            r = self.router.route(req)
            if r.settle is not None:
                r = await r.settle() or r
        except Exception:
            log.exception("admin: %s %s failed", request.method[:20], request.rel_url.raw_path[:200])
            r = _error(500, "internal error: see the gateway's log")
        return _aiohttp_response(r)


def _aiohttp_response(r: HttpResponse) -> aioweb.Response:
    from aiohttp import web as aioweb

    headers = [("Content-Type", r.content_type), *SECURITY_HEADERS, *r.headers]
    return aioweb.Response(status=r.status, body=r.body if r.status != 304 else None, headers=headers)

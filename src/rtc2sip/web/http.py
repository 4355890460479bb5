"""Plain HTTP on the gateway's WebSocket ports: the routes, the admin gate, the static files.

The transport layer hands over every request that is not a WebSocket upgrade
(``TransportLayer.http_handler``); websockets has parsed it already and accepts only GET, one request
per connection (the answer carries ``Connection: close``). :meth:`WebRouter.route` is the whole
behaviour, with no I/O: (path, headers) in, :class:`HttpResponse` out; :meth:`WebRouter.handle` adapts
it to websockets' types.

Routes::

    /               the web phone (static/index.html + phone.js, JsSIP bundled)   public
    /calls          the live view's page (a shell: its data comes from /api)     public
    /openapi.json   the API's description                                       public
    /api/config     what the web phone needs (domain, version), and where the
                    admin listener is ("admin": {"actions": false, "url": …})    public
    /api/calls, /api/calls/{id}, /api/calls/{id}/history, /api/registrations    admin
    /metrics        Prometheus text format 0.0.4                                admin

Actions on calls (record, forward to a player) are not served here: they are POST and DELETE on the
admin listener (rtc2sip.web.admin, ``[admin]``), and a GET can never be made safe against cross-site
requests. The former GETs (``/api/calls/{id}/recording/start`` …) answer 404 saying where the admin
listener is, and the live view served here is read-only. The read-only admin routes stay, gated as
they were, for the scrapers and scripts that use them: open when every listener is on loopback,
otherwise ``Authorization: Bearer <[gateway] admin_token>`` (RFC 6750 §2.1); with no token configured
they are refused (403), never open by default. The admin listener serves them as well, and
:meth:`WebRouter.admin_get` and :meth:`WebRouter.call_action` are the code both share.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from . import api, metrics

if TYPE_CHECKING:
    from ..config import Settings
    from ..media.remote import AnyPlane as MediaPlane
    from ..proxy.server import Proxy
    from ..transport.layer import TransportLayer
    from .monitor import Monitor

log = logging.getLogger("rtc2sip.web")

HTML = "text/html; charset=utf-8"
JS = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

# path -> (file in static/, content type)
STATIC: dict[str, tuple[str, str]] = {
    "/": ("index.html", HTML),
    "/index.html": ("index.html", HTML),
    "/phone.js": ("phone.js", JS),
    "/calls": ("calls.html", HTML),
    "/calls.js": ("calls.js", JS),
    "/style.css": ("style.css", CSS),
    "/openapi.json": ("openapi.json", JSON),
}
ADMIN_PATHS = ("/api/calls", "/api/registrations", "/metrics")
# /api/calls/{id}/<what>: POST and DELETE on the admin listener (rtc2sip.web.admin)
ACTIONS = ("recording", "forward")

# The pages load only their own scripts and talk only to this gateway (or, typed in by the user,
# another one's WebSocket).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; "
     "img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()
    # work to await before answering (a media worker writing the file the body names); it may return
    # the response to send instead (an error)
    settle: Callable[[], Awaitable[HttpResponse | None]] | None = field(default=None, compare=False)

    @classmethod
    def text(cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return cls(status, (text + "\n").encode(), TEXT, headers)

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> HttpResponse:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status, body, JSON, (("Cache-Control", "no-store"),))


_REASONS = {200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 409: "Conflict", 500: "Internal Server Error"}


class WebRouter:
    """Every HTTP route of one gateway (see the module docstring)."""

    def __init__(self, settings: Settings, proxy: Proxy, monitor: Monitor, media: MediaPlane | None = None,
                 transports: TransportLayer | None = None) -> None:
        self.settings = settings
        self.proxy = proxy
        self.monitor = monitor
        self.media = media
        self.transports = transports
        self.admin_open = settings.loopback_only()
        self.admin_token = settings.gateway.admin_token
        # the admin listener's scheme://host:port once it listens (rtc2sip.app), for the pages to point at
        self.admin_url: str | None = None
        self._static: dict[str, tuple[bytes, str]] = {}  # file -> (content, ETag)

    # ---- the adapter -----------------------------------------------------------------------------

    def handle(self, request: WsRequest) -> WsResponse | Awaitable[WsResponse]:
        """websockets' request in, websockets' response out (TransportLayer.http_handler); a coroutine
        when the response waits for a media worker (:attr:`HttpResponse.settle`)."""
        try:
            r = self.route(request.path, request.headers)
        except Exception:
            log.exception("http: GET %s failed", request.path[:200])
            r = HttpResponse.text(500, "Internal error: see the gateway's log")
        if r.settle is not None:
            return self._settled(r, r.settle)
        return self._ws_response(r)

    async def _settled(self, r: HttpResponse, settle: Callable[[], Awaitable[HttpResponse | None]]) -> WsResponse:
        try:
            r = await settle() or r
        except Exception:
            log.exception("http: waiting for the media plane failed")
            r = HttpResponse.text(500, "Internal error: see the gateway's log")
        return self._ws_response(r)

    def _ws_response(self, r: HttpResponse) -> WsResponse:
        headers = Headers([
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(r.body))),
            ("Content-Type", r.content_type),
            *SECURITY_HEADERS,
            *r.headers,
        ])
        return WsResponse(r.status, _REASONS.get(r.status, "Error"), headers, r.body)

    # ---- routing ---------------------------------------------------------------------------------

    def route(self, target: str, headers: Headers | dict[str, str]) -> HttpResponse:
        """One GET: ``target`` is the request target (path and query), ``headers`` the request's."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        entry = STATIC.get(path)
        if entry is not None:
            return self.static_file(entry[0], entry[1], headers.get("If-None-Match"))
        if path == "/favicon.ico":
            return HttpResponse(204)
        if path == "/api/config":
            return HttpResponse.json(api.config_view(self.settings, self.admin_open, self.admin_url, actions=False))
        if path in ADMIN_PATHS or path.startswith("/api/calls/"):
            refused = self._gate(headers.get("Authorization"))
            if refused is not None:
                return refused
            parts = path.split("/")  # "", "api", "calls", id, what[, verb]
            if len(parts) in (5, 6) and parts[4] in ACTIONS:
                return self._moved(parts[3], parts[4])
            return self.admin_get(path)
        return HttpResponse.text(404, f"Not found: {path[:200]} (the web phone is at /)")

    def admin_get(self, path: str) -> HttpResponse:
        """One read-only admin route (``path`` normalised), with the media workers' figures current."""
        fresh = getattr(self.media, "fresh_stats", None)
        if fresh is not None and path != "/api/registrations":
            # media workers: the figures come from their snapshots; have them current first
            async def settle() -> HttpResponse:
                await fresh()
                return self._admin(path)

            return HttpResponse(200, settle=settle)
        return self._admin(path)

    def _moved(self, call_id: str, what: str) -> HttpResponse:
        where = f"{self.admin_url}/api/calls/{call_id[:100]}/{what}" if self.admin_url else "the admin listener"
        hint = "" if self.admin_url else " (off: see [admin] listen)"
        return HttpResponse.json({"error": f"actions are POST and DELETE on {where}{hint}, not on this port"}, 404)

    def _admin(self, path: str) -> HttpResponse:
        if path == "/metrics":
            text = metrics.render(self.proxy, self.transports, self.monitor)
            return HttpResponse(200, text.encode(), metrics.CONTENT_TYPE, (("Cache-Control", "no-store"),))
        if path == "/api/registrations":
            return HttpResponse.json(api.registrations_view(self.proxy.store))
        if path.startswith("/api/calls/") and path.endswith("/history"):
            history = self.monitor.call_history(path[len("/api/calls/"):-len("/history")])
            if history is None:
                return HttpResponse.json({"error": "no time series for this call (not in progress, not among the "
                                                   "last ended ones, or beyond the tracked calls)"}, 404)
            return HttpResponse.json(history)
        view = api.calls_view(self.monitor.breaker, self.media, self.monitor)
        if path == "/api/calls":
            return HttpResponse.json(view)
        call = api.find_call(view, path[len("/api/calls/"):])
        if call is None:
            return HttpResponse.json({"error": "no such call (in progress or in the recent history)"}, 404)
        return HttpResponse.json(call)

    def call_action(self, call_id: str, what: str, start: bool, to: tuple[str, int] | None = None) -> HttpResponse:
        """Start or stop the recording (``what`` "recording") or the forwarding ("forward", to ``to``)
        of one call's media; the admin listener's POST and DELETE (rtc2sip.web.admin)."""
        breaker, media = self.monitor.breaker, self.media
        call = breaker.calls.get(call_id) if breaker is not None else None
        if call is None or media is None:
            return HttpResponse.json({"error": "no such call in progress"}, 404)
        session = call.session
        if session is None:
            return HttpResponse.json({"error": "the call has no media session yet"}, 409)
        from ..media.plane import MediaPlaneError

        try:
            if what == "recording" and start:
                sidecar = media.start_recording(session)
                log.info("call %s: recording started through the API (%s)", call_id, sidecar)
                return self._after_worker(HttpResponse.json({"call": call_id, "recording": True, "sidecar": sidecar},
                                                            201), session)
            if what == "recording":
                stopped = media.stop_recording(session)
                if stopped:
                    log.info("call %s: recording stopped through the API", call_id)
                return HttpResponse.json({"call": call_id, "recording": False, "stopped": stopped})
            if not start:
                stopped = media.stop_forward(session)
                if stopped:
                    log.info("call %s: forwarding stopped through the API", call_id)
                return HttpResponse.json({"call": call_id, "forwarding": False, "stopped": stopped})
            if to is None:
                return HttpResponse.json({"error": "a forward needs its destination"}, 400)
            host, port = to
            sdp = media.start_forward(session, host, port)
            log.info("call %s: forwarding to %s port %s through the API (%s)", call_id, host, port, sdp)
            return self._after_worker(HttpResponse.json({"call": call_id, "forwarding": True,
                                                         "to": {"host": host, "port": port}, "sdp": sdp}, 201),
                                      session)
        except KeyError:  # UnknownSession: the call ended meanwhile
            return HttpResponse.json({"error": "the call's media session is gone"}, 404)
        except MediaPlaneError as exc:
            return HttpResponse.json({"error": str(exc)}, 409)

    def _after_worker(self, r: HttpResponse, session: str) -> HttpResponse:
        """With media workers the start happens in the session's worker: answer once it is done there."""
        settled = getattr(self.media, "tap_settled", None)
        if settled is None or r.status >= 300:
            return r

        async def settle() -> HttpResponse | None:
            try:
                await settled(session)
            except KeyError:
                return HttpResponse.json({"error": "the call's media session is gone"}, 404)
            except Exception as exc:
                return HttpResponse.json({"error": f"the media worker refused: {exc}"}, 409)
            return None

        return dataclasses.replace(r, settle=settle)

    def _gate(self, authorization: str | None) -> HttpResponse | None:
        """None when the admin routes may be used; otherwise the refusal (RFC 6750 §3)."""
        if self.admin_open:
            return None
        if self.admin_token is None:
            return HttpResponse.text(
                403, "Admin pages are off: rtc2sip listens beyond loopback and [gateway] admin_token is not set")
        challenge = (("WWW-Authenticate", 'Bearer realm="rtc2sip"'),)
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return HttpResponse.text(401, "A bearer token is required ([gateway] admin_token)", challenge)
        if not hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
            return HttpResponse.text(401, "Wrong token", (("WWW-Authenticate", 'Bearer realm="rtc2sip", '
                                                            'error="invalid_token"'),))
        return None

    def static_file(self, name: str, content_type: str, if_none_match: str | None) -> HttpResponse:
        """A file of static/, read once, with its ETag (304 when the client has it already)."""
        cached = self._static.get(name)
        if cached is None:
            try:
                content = resources.files(__package__).joinpath("static", name).read_bytes()
            except OSError:
                log.error("http: static/%s is missing from the installed package", name)
                return HttpResponse.text(404, f"{name} is missing from this installation (see webphone/README.md)")
            cached = (content, '"' + hashlib.sha256(content).hexdigest()[:20] + '"')
            self._static[name] = cached
        content, etag = cached
        headers = (("ETag", etag), ("Cache-Control", "no-cache"))
        if if_none_match is not None and etag in (t.strip() for t in if_none_match.split(",")):
            return HttpResponse(304, b"", content_type, headers)
        return HttpResponse(200, content, content_type, headers)


def destination(host: object, port: object) -> tuple[str, int] | str:
    """(host, port) of a forward, or why not. An IP literal only: a name would be resolved on the
    event loop. ``port`` to ``port + 6`` are used (audio and video of both legs)."""
    text = host.strip().strip("[]") if isinstance(host, str) else ""
    try:
        ip = str(ipaddress.ip_address(text))
    except ValueError:
        return "host must be an IPv4 or IPv6 address"
    # bool is an int in Python, not in JSON
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65529:
        return "port must be a number from 1 to 65529 (the call uses port to port + 6)"
    return ip, port

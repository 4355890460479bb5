"""What the RTCWeb Breaker's B2BUA needs from the outside: the media plane's API (:class:`MediaPlane`),
the proxy as its SIP host (:class:`Host`: transactions, transports, routing) and :class:`ProxyHost`,
that host over :class:`rtc2sip.proxy.server.Proxy`.

RFC 3261 §17 (the transaction layer it borrows), §16.5 and RFC 3263 (where new requests go); ACKs of a
2xx are sent without a transaction (§13.2.2.4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..sdp import SessionDescription
from ..sip import ClientTransaction, InviteServerTransaction, ServerTransaction
from ..sip.headers import parse_name_addr
from ..sip.message import Request, Response
from ..sip.uri import SipUri, parse_uri
from ..transport.base import Target

if TYPE_CHECKING:
    from ..proxy.server import Proxy

__all__ = ["Cancellable", "Host", "MediaPlane", "ProxyHost"]

log = logging.getLogger("rtc2sip.breaker")


class MediaPlane(Protocol):
    """The media plane's API (``rtc2sip.media``); raises :class:`SdpError` for an SDP it refuses."""

    async def offer_from_webrtc(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]: ...
    async def answer_from_legacy(self, session: str, answer: SessionDescription) -> SessionDescription: ...
    async def offer_from_legacy(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]: ...
    async def answer_from_webrtc(self, session: str, answer: SessionDescription) -> SessionDescription: ...
    async def update(self, session: str, offer: SessionDescription, from_webrtc: bool) -> SessionDescription: ...
    async def delete(self, session: str) -> None: ...
    def stats(self, session: str) -> dict[str, object]: ...
    def on_failure(self, callback: Callable[[str, str], None]) -> None: ...
    async def send_dtmf(self, session: str, digit: str, duration_ms: int = 100) -> bool:
        """RFC 4733 events toward the legacy side; False when it negotiated no telephone-event."""
        ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """The proxy, as the B2BUA sees it (:class:`ProxyHost`; a fake in unit tests)."""

    def now(self) -> float: ...
    def new_branch(self) -> str: ...
    def local_address(self, transport: str, ipv6: bool = False) -> tuple[str, int] | None: ...
    def send_request(self, request: Request, target: Target, context: object) -> ClientTransaction | None:
        """Start a client transaction (None: the layer is full)."""
        ...
    def send_response(self, st: ServerTransaction, response: Response) -> None: ...
    def send_stateless(self, request: Request, target: Target) -> None:
        """An ACK for a 2xx (§13.2.2.4: no transaction)."""
        ...
    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None: ...
    def target_is_webrtc(self, request: Request) -> bool | None:
        """Whether a new request would go down a WebSocket flow; None when there is no target."""
        ...
    async def route_initial(self, request: Request) -> list[Target]:
        """Targets of a new out-of-dialog request (the proxy's routing: its own Routes popped, a
        registered user's binding, the upstream proxy, RFC 3263); may rewrite the Request-URI and
        add Route (a Path)."""
        ...
    async def resolve(self, uri: SipUri) -> list[Target]: ...
    def flow_alive(self, flow_id: str) -> bool: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...


class ProxyHost:
    """:class:`Host` over :class:`rtc2sip.proxy.server.Proxy`: its transaction layer, transports,
    location service and resolver. Only reads the proxy's state and calls its action dispatcher."""

    def __init__(self, proxy: Proxy) -> None:
        self.p = proxy

    def now(self) -> float:
        return self.p.loop.time()

    def new_branch(self) -> str:
        return self.p.tl.new_branch()

    def local_address(self, transport: str, ipv6: bool = False) -> tuple[str, int] | None:
        return self.p.tp.local_address(transport, ipv6)

    def send_request(self, request: Request, target: Target, context: object) -> ClientTransaction | None:
        from ..sip.transaction import LayerFull, LocalProtocolError

        try:
            txn, actions = self.p.tl.send_request(request, self.now(), reliable=target.transport != "udp",
                                                  peer=target, context=context)
        except (LayerFull, LocalProtocolError) as e:
            log.info("call-id=%s %s not sent: %s", request.get("Call-ID"), request.method, e)
            return None
        for a in actions:
            self.p._act(a)
        self.p._arm_timer()
        return txn

    def send_response(self, st: ServerTransaction, response: Response) -> None:
        if st.terminated:
            return
        for a in self.p.tl.send_response(st, response, self.now()):
            self.p._act(a)
        self.p._arm_timer()

    def send_stateless(self, request: Request, target: Target) -> None:
        self.p._transmit(request.to_bytes(), target, None)

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        return self.p.tl.find_cancel_target(cancel)

    def flow_alive(self, flow_id: str) -> bool:
        return self.p.tp.flow_alive(flow_id)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await coro
            finally:
                self.p._arm_timer()

        self.p._spawn(run())

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return self.p.loop.call_later(delay, callback)

    def _first_binding(self, uri: SipUri) -> tuple[str, str | None, list[str]] | None:
        from ..proxy.location import reachable, targets_for
        from ..proxy.server import _usable_flow

        services = self.p.services
        service = services.contact(uri.user) if services is not None else None
        if service is not None:
            return service, None, []  # a built-in service (rtc2sip.services): a plain SIP UAS on loopback
        for b in self.p.store.lookup(uri, time.time()):
            if reachable(b, self.p.tp.flow_alive):
                contact, flow, path = targets_for(b, self.p.tp.flow_alive)
                return contact, _usable_flow(b, contact, flow), path
        return None

    def target_is_webrtc(self, request: Request) -> bool | None:
        from ..proxy import core

        req = request.copy()
        routes = core.pop_own_routes(req, self.p._is_local)
        flow = core.decode_flow(routes.flow_token)[0] if routes.flow_token else None
        rf = core.ruri_flow(req, self.p._is_local)
        if rf is not None:
            flow = rf[0]
        if flow is not None and not req.has("Route"):
            return flow.startswith("ws")  # WebSocket flow ids are "ws-N" and "wss-N"
        if req.has("Route"):
            return False
        uri = req.uri
        if isinstance(uri, SipUri) and self.p.is_local_domain(uri):
            found = self._first_binding(uri)
            if found is None:
                return None
            _, flow, path = found
            return flow is not None and not path and flow.startswith("ws")
        return False

    async def route_initial(self, request: Request) -> list[Target]:
        from ..proxy import core

        p = self.p
        routes = core.pop_own_routes(request, p._is_local)
        flow = core.decode_flow(routes.flow_token)[0] if routes.flow_token else None
        rf = core.ruri_flow(request, p._is_local)
        if rf is not None:
            flow = rf[0]
            if rf[1]:
                request.uri = parse_uri(rf[1])
        if flow is not None and not request.has("Route"):
            return [p._flow_target(flow)] if p.tp.flow_alive(flow) else []
        if request.has("Route"):
            top = parse_name_addr(request.values("Route")[0]).uri
            return await self.resolve(top) if isinstance(top, SipUri) else []
        uri = request.uri
        if isinstance(uri, SipUri) and p.is_local_domain(uri):
            found = self._first_binding(uri)
            if found is None:
                return []
            contact, flow, path = found
            request.uri = parse_uri(contact)
            for route in reversed(path):
                request.add("Route", route, top=True)
            if flow is not None and not path:
                return [p._flow_target(flow)]
            nxt = parse_name_addr(path[0]).uri if path else request.uri
            return await self.resolve(nxt) if isinstance(nxt, SipUri) else []
        if p.policy.upstream is not None:
            return await self.resolve(p.policy.upstream)
        return await self.resolve(uri) if isinstance(uri, SipUri) else []

    async def resolve(self, uri: SipUri) -> list[Target]:
        found = self.p._numeric_targets(uri)
        if found is not None:
            return found
        return await self.p.locate(uri)

"""The proxy's routing (RFC 3261 §16.3-16.5) and its registrar, over the stateful core.

:meth:`Proxy.route` is the one place routing policy is decided: which requests the registrar takes
(§10.3, after :mod:`rtc2sip.proxy.auth`), which go to a registered browser's WebSocket (its flow, RFC
5626 / RFC 7118), to a built-in service, to the upstream proxy or to RFC 3263 targets; the §16.3
checks come first, and an :class:`~rtc2sip.proxy.handlers.Interceptor` (the RTCWeb Breaker) may take
a request before any of it. Forwarding and responses are :class:`~rtc2sip.proxy.stateful.StatefulProxy`'s.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from ..sip import MessageError, Request, make_response, parse_message
from ..sip.errors import SipParseError
from ..sip.headers import parse_name_addr
from ..sip.transaction import Deliver, ServerTransaction
from ..sip.uri import SipUri, TelUri, parse_uri
from ..transport.base import Source, Target
from ..transport.layer import TransportLayer
from . import core
from .auth import Gatekeeper, Policy, Refusal
from .handlers import LocalServices
from .locate import Resolver
from .location import Binding, LocationStore, reachable, targets_for
from .registrar import Registrar
from .stateful import StatefulProxy, is_ip, method_label
from .throttle import Throttle
from .users import UserStore

log = logging.getLogger("rtc2sip.proxy")


class Proxy(StatefulProxy):
    """rtc2sip's SIP proxy and registrar: one instance per process."""

    def __init__(
        self,
        transports: TransportLayer,
        store: LocationStore,
        registrar: Registrar,
        resolver: Resolver,
        policy: Policy,
        max_message_size: int = 65535,
        nonce_lifetime: float = 300.0,
        user_store: UserStore | None = None,
        *,
        final_response_timeout: float = 8.0,
        dns_timeout: float = 1.5,
        throttle: Throttle | None = None,
    ) -> None:
        super().__init__(transports, resolver, final_response_timeout=final_response_timeout,
                         dns_timeout=dns_timeout)
        self.store = store
        self.registrar = registrar
        self.policy = policy
        self.max_message_size = max_message_size
        self.services: LocalServices | None = None  # sip:echo@ / sip:diag@ (rtc2sip.services), set by the app
        self.throttle = throttle or Throttle(rate=0, max_auth_failures=0)
        self.gate = Gatekeeper(policy, store, user_store, nonce_lifetime, self.throttle)
        self.stats: dict[str, int] = {"requests": 0, "responses": 0, "bad": 0, "dropped": 0}
        # parsed messages received, by method (method_label) and by status code: /metrics
        self.requests_in: Counter[str] = Counter()
        self.responses_in: Counter[int] = Counter()

    # ---- entry points ------------------------------------------------------------------------------

    def on_data(self, data: bytes, source: Source) -> None:
        """Everything a transport receives comes here. Never raises: bad input is answered or dropped."""
        if not self.throttle.admit(source.host, time.monotonic()):
            return  # counted in the throttle; a scanner gets no answer (rtc2sip.proxy.throttle)
        try:
            msg = parse_message(data, self.max_message_size, datagram=not source.reliable)
        except MessageError as e:
            self.stats["bad"] += 1
            self._reject_bad(e, source)
            return
        try:
            if isinstance(msg, Request):
                self.stats["requests"] += 1
                self.requests_in[method_label(msg.method)] += 1
                self.on_request(msg, source)
            else:
                self.stats["responses"] += 1
                self.responses_in[msg.status] += 1
                self.on_response(msg, source)
        except (SipParseError, ValueError) as e:
            self.stats["bad"] += 1
            log.warning("call-id=%s dropped a message from %s:%s: %s", msg.get("Call-ID"), source.host,
                        source.port, e)
        except Exception:
            log.exception("call-id=%s internal error on a message from %s:%s", msg.get("Call-ID"),
                          source.host, source.port)
        self._arm_timer()

    def on_flow_closed(self, flow_id: str) -> None:
        gone = self.store.flow_closed(flow_id)
        if self.breaker is not None:
            self.breaker.on_flow_closed(flow_id)
        for b in gone:
            log.info("aor=%s binding on %s ended with its connection", b.aor, flow_id)

    def _reject_bad(self, e: MessageError, source: Source) -> None:
        msg = e.message
        if isinstance(msg, Request) and msg.method != "ACK":
            try:
                resp = make_response(msg, e.status, e.reason)
                _ = resp.vias  # a response we cannot route is not worth sending
                # RFC 4475 §3.1.2.15 (insuf): a request missing From, To or Call-ID still gets its
                # 400; Via and CSeq are what the client needs to match the answer
                if not all(resp.get(h) for h in ("Via", "CSeq")):
                    raise SipParseError(400, "cannot answer")
                self.tp.send_on_flow(source.flow_id, resp.to_bytes())
                log.info("call-id=%s answered %s %s to a bad request from %s:%s", msg.get("Call-ID"),
                         e.status, e.reason, source.host, source.port)
                return
            except SipParseError:
                pass
        self.stats["dropped"] += 1
        log.info("dropped a malformed message from %s %s:%s: %s %s", source.transport, source.host,
                 source.port, e.status, e.reason)

    # ---- requests ----------------------------------------------------------------------------------

    def on_request(self, req: Request, source: Source) -> None:
        core.fix_via(req, source)
        now = self.loop.time()
        actions = self.tl.receive_request(req, now, reliable=source.reliable, peer=source)
        for a in actions:
            if type(a) is Deliver:
                if a.txn is None:
                    if self.breaker is None or not self.breaker.on_request(req, source, None):
                        self._stray_ack(req, source)
                else:
                    assert isinstance(a.txn, ServerTransaction)
                    self._new_request(req, source, a.txn)
            else:
                self._act(a)

    def _new_request(self, req: Request, source: Source, st: ServerTransaction) -> None:
        method = req.method
        call_id = req.call_id
        log.debug("call-id=%s %s %s from %s %s:%s", call_id, method, req.uri_text, source.transport,
                  source.host, source.port)
        breaker = self.breaker
        if breaker is not None and breaker.on_request(req, source, st):
            return  # in a dialog of a broken call, or the CANCEL of its INVITE
        if method == "CANCEL":
            self._cancel(req, st)
            return
        problem = self._check(req)
        if problem is not None:
            self._respond(st, *problem)
            return
        if breaker is not None and method == "INVITE" and breaker.should_break(req, source).breaks:
            uri = req.uri
            # the breaker relays only what the proxy would: local users, or a source allowed to relay
            if (isinstance(uri, SipUri) and self.is_local_domain(uri)) or self._relay_allowed(req, source, st):
                breaker.handle_invite(req, source, st)
            return
        self.route(req, source, st)

    def _check(self, req: Request) -> Refusal | None:
        """§16.3: the checks a proxy makes before routing."""
        uri = req.uri
        if not isinstance(uri, SipUri | TelUri):
            return Refusal(416, "Unsupported URI Scheme")
        unsupported = [o for o in req.option_tags("Proxy-Require") if o not in core.SUPPORTED_OPTIONS]
        if unsupported:
            return Refusal(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))
        mf = req.get("Max-Forwards")
        if mf is not None and mf.strip() == "0":
            return Refusal(483, "Too Many Hops")
        if core.looped(req, self._own_sent_by):
            return Refusal(482, "Loop Detected")
        return None

    def _own_sent_by(self, host: str, port: int | None) -> bool:
        return self.tp.is_local(host, port)

    def is_local_domain(self, uri: SipUri) -> bool:
        """A URI this gateway is authoritative for: one of the domains on one of our ports (a domain
        that is also an IP, like 127.0.0.1, names other elements when the port is not ours)."""
        host = uri.host.lower().rstrip(".")
        if host in self.policy.domains:
            return uri.port is None or self.tp.is_local(uri.host, uri.port) or not is_ip(host)
        return self.tp.is_local(uri.host, uri.port)

    def route(self, req: Request, source: Source, st: ServerTransaction) -> None:
        """Where a new request goes (§16.4, §16.5): the one place routing policy is decided."""
        routes = core.pop_own_routes(req, self._is_local)
        flow: str | None = None
        if routes.flow_token:
            flow, _ = core.decode_flow(routes.flow_token)
        rf = core.ruri_flow(req, self._is_local)
        if rf is not None:
            # the Request-URI is a browser Contact we rewrote: restore it, send down its WebSocket
            flow = rf[0]
            if rf[1]:
                req.uri = parse_uri(rf[1])
        if flow is not None and not req.has("Route"):
            if not self.tp.flow_alive(flow):
                self._respond(st, 430 if flow.startswith("ws") else 480, "Flow Failed")
                return
            self._forward(req, source, st, [self._flow_target(flow)])
            return
        if req.has("Route"):
            top = parse_name_addr(req.values("Route")[0]).uri
            self._forward_to_uri(req, source, st, top)
            return
        uri = req.uri
        if isinstance(uri, SipUri) and self.is_local_domain(uri):
            self._local(req, source, st, uri)
            return
        if not self._relay_allowed(req, source, st):
            return
        if req.method == "REGISTER":
            self._add_path(req, source)
        if self.policy.upstream is not None:
            self._forward_to_uri(req, source, st, self.policy.upstream)
            return
        if isinstance(uri, TelUri):
            self._respond(st, 404, "No route for tel URI")
            return
        assert isinstance(uri, SipUri)
        self._forward_to_uri(req, source, st, uri)

    def _flow_target(self, flow_id: str) -> Target:
        f = self.tp.flows.get(flow_id)
        if f is not None:
            return Target(f.transport, f.remote[0], f.remote[1], flow_id)
        # a UDP "flow" is the socket and the remote address
        remote = flow_id.rpartition("/")[2]
        host, _, port = remote.rpartition(":")
        return Target("udp", host, int(port), flow_id)

    def _relay_allowed(self, req: Request, source: Source, st: ServerTransaction) -> bool:
        """Whether ``req`` may go to a foreign domain (:meth:`Gatekeeper.relay_refusal`); if not, answered."""
        refusal = self.gate.relay_refusal(req, source, self.services)
        if refusal is None:
            return True
        self._respond(st, *refusal)
        return False

    def _local(self, req: Request, source: Source, st: ServerTransaction, uri: SipUri) -> None:
        """A request for one of our domains: the registrar, a registered user, or us."""
        method = req.method
        if method == "REGISTER":
            to = req.to.uri
            owner = to.user if isinstance(to, SipUri) else None
            if self.policy.auth_required:
                refusal = self.gate.auth_refusal(req, "Authorization", 401, owner, source.host)
                if refusal is not None:
                    self._respond(st, *refusal)
                    return
            resp = self.registrar.handle(req, source, time.time())
            log.info("call-id=%s REGISTER %s from %s %s:%s -> %s", req.call_id, req.to.uri, source.transport,
                     source.host, source.port, resp.status)
            self._send_response(st, resp)
            return
        if not uri.user:
            if method == "OPTIONS":
                self._respond(st, 200, None, [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, "
                                               "INFO, UPDATE, REFER, NOTIFY, SUBSCRIBE, PRACK"),
                                              ("Accept", "application/sdp")])
            else:
                self._respond(st, 404, "Not Found")
            return
        service = self.services.contact(uri.user) if self.services is not None else None
        if service is not None:
            # a built-in service (rtc2sip.services): its UAS on loopback, reached like a Contact
            service_uri = parse_uri(service)
            assert isinstance(service_uri, SipUri)
            req.uri = service_uri
            self._forward(req, source, st, self._numeric_targets(service_uri) or [])
            return
        now = time.time()
        bindings = self.store.lookup(uri, now)
        bindings = [b for b in bindings if reachable(b, self.tp.flow_alive)]
        if not bindings:
            log.info("call-id=%s %s for %s: no reachable binding", req.call_id, method, uri.aor())
            self._respond(st, 480, "Temporarily Unavailable")
            return
        targets: list[tuple[Request, Target | SipUri]] = []
        for b in bindings:
            contact, flow, path = targets_for(b, self.tp.flow_alive)
            flow = _usable_flow(b, contact, flow)
            copy = req.copy()
            copy.uri = parse_uri(contact)
            for route in reversed(path):
                copy.add("Route", route, top=True)
            if flow is not None and not path:
                targets.append((copy, self._flow_target(flow)))
            else:
                nxt = parse_name_addr(path[0]).uri if path else copy.uri
                if not isinstance(nxt, SipUri):
                    continue
                targets.append((copy, nxt))
        if not targets:
            self._respond(st, 480, "Temporarily Unavailable")
            return
        ctx = self._context(req, source, st)
        for copy, t in targets:
            if isinstance(t, Target):
                self._start_branch(ctx, copy, [t])
            else:
                self._resolve_then_branch(ctx, copy, t)
        self._maybe_finish(ctx)

    def _add_path(self, req: Request, source: Source) -> None:
        """RFC 3327: a REGISTER relayed to a foreign registrar carries our address in Path, so
        requests for the browser come back through us (and down its WebSocket)."""
        if not source.websocket and not source.reliable:
            return
        local = self.tp.local_address("udp") or self.tp.local_address("tcp")
        if local is None:
            return
        token = core.encode_flow(source.flow_id)
        transport = "udp" if self.tp.local_address("udp") else "tcp"
        req.add("Path", f"<{core.our_uri(local[0], local[1], transport, token)}>", top=True)

    def _stray_ack(self, req: Request, source: Source) -> None:
        """An ACK for a 2xx (§16.6 end-to-end): routed like any request, without a transaction."""
        routes = core.pop_own_routes(req, self._is_local)
        flow = core.decode_flow(routes.flow_token)[0] if routes.flow_token else None
        rf = core.ruri_flow(req, self._is_local)
        if rf is not None:
            flow = rf[0]
            if rf[1]:
                req.uri = parse_uri(rf[1])
        if flow is not None and not req.has("Route"):
            targets: list[Target] | None = [self._flow_target(flow)]
        elif req.has("Route"):
            nxt = parse_name_addr(req.values("Route")[0]).uri
            targets = self._numeric_targets(nxt) if isinstance(nxt, SipUri) else []
        else:
            uri = req.uri
            if isinstance(uri, SipUri) and self.is_local_domain(uri):
                bindings = self.store.lookup(uri, time.time())
                targets = []
                for b in bindings[:1]:
                    contact, fl, _ = targets_for(b, self.tp.flow_alive)
                    fl = _usable_flow(b, contact, fl)
                    req.uri = parse_uri(contact)
                    targets = [self._flow_target(fl)] if fl else self._numeric_targets(parse_uri(contact))  # type: ignore[arg-type]
            elif isinstance(uri, SipUri):
                targets = self._numeric_targets(self.policy.upstream or uri)
            else:
                targets = []
        if not targets:
            log.debug("call-id=%s ACK dropped: no route without DNS", req.call_id)
            return
        target = targets[0]
        out = req
        core.decrement_max_forwards(out)
        local = self.tp.local_address(target.transport, ":" in target.host) or self.tp.local_address("udp")
        if local is None:
            return
        if source.websocket and target.transport not in ("ws", "wss"):
            core.rewrite_contacts(out, local[0], local[1], target.transport, source.flow_id)
        out.add("Via", f"SIP/2.0/{target.transport.upper()} {core._uri_host(local[0])}:{local[1]};"
                       f"branch={core.branch_for(req, self._salt)}", top=True)
        self._transmit(out.to_bytes(), target, None)


def _usable_flow(b: Binding, contact: str, flow: str | None) -> str | None:
    """The flow a binding's requests go down, or None to send to its Contact (RFC 3261 §16.5).

    A WebSocket or outbound (RFC 5626) binding is reached only through its flow. Otherwise the flow is
    the REGISTER's source, used for a UA behind a NAT (its Contact host is not the address the
    REGISTER came from); when the hosts are the same there is no NAT, and a Contact on another port
    is where the UA listens (a third-party registration, §10.2, or a TCP phone's listening port).
    """
    if flow is None or b.outbound or b.websocket_flow:
        return flow
    try:
        uri = parse_uri(contact)
    except SipParseError:
        return flow
    if isinstance(uri, SipUri) and uri.host_lower.strip("[]") == b.source_host.strip("[]").lower():
        return None
    return flow

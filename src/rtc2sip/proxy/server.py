"""The stateful proxy (RFC 3261 §16) with its registrar, on top of the transaction layer.

Routing policy lives in :meth:`Proxy.route`: which requests the registrar takes, which go to a
registered browser's WebSocket, which go to the upstream proxy or to RFC 3263 targets. The
mechanism (matching, timers, retransmissions) is the sans-I/O :class:`TransactionLayer`; this module
turns its actions into socket writes and keeps one :class:`ResponseContext` per proxied request.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..sip import (
    ClientTransaction,
    Deliver,
    DigestServer,
    InviteClientTransaction,
    LayerFull,
    MessageError,
    Outcome,
    Request,
    Response,
    ServerTransaction,
    SipParseError,
    SipUri,
    TelUri,
    Terminated,
    Timeout,
    TransactionLayer,
    Transmit,
    TransportError,
    find_credentials,
    make_cancel,
    make_response,
    parse_message,
    parse_name_addr,
    parse_uri,
)
from ..transport.base import DEFAULT_PORTS, Source, Target
from ..transport.layer import TransportLayer
from ..transport.timers import LayerTimer
from . import core
from .locate import Resolver, locate
from .location import Binding, LocationStore, reachable, targets_for
from .registrar import Registrar
from .users import UserStore

if TYPE_CHECKING:
    from ..breaker.b2bua import B2bua
    from ..services import Services

log = logging.getLogger("rtc2sip.proxy")

SUPPORTED_TRANSPORTS = frozenset({"udp", "tcp", "tls", "ws", "wss"})
# Methods counted by name in Proxy.requests_in/requests_out; any other is "other", so that the label
# set of /metrics stays bounded whatever the wire carries.
COUNTED_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE",
                             "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})


def method_label(method: str) -> str:
    return method if method in COUNTED_METHODS else "other"


@dataclass(slots=True)
class Policy:
    """What the proxy lets through (issue: "not an open relay")."""

    domains: frozenset[str]
    trusted: bool = True  # every listener on loopback: everything is trusted
    open_relay: bool = False
    auth_required: bool = False
    upstream: SipUri | None = None
    users: dict[str, str] = field(default_factory=dict)
    digest_algorithms: tuple[str, ...] = ("MD5",)  # see GatewayOptions.digest_algorithms


@dataclass(slots=True, eq=False)
class Branch:
    """One forwarded copy of a request (§16.6) and where it may still go (RFC 3263 fail-over)."""

    ctx: ResponseContext
    request: Request
    target: Target
    alternatives: list[Target]
    txn: ClientTransaction | None = None
    final: int = 0
    cancel_pending: bool = False
    provisional: bool = False


@dataclass(slots=True, eq=False)
class ResponseContext:
    """§16.7: the server transaction, its branches and the best final response so far."""

    server: ServerTransaction | None
    request: Request
    source: Source
    branches: list[Branch] = field(default_factory=list)
    best: Response | None = None
    final_sent: bool = False
    cancelled: bool = False


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    """Numeric host? (Called on every routed request: the few hosts a proxy sees are cached.)"""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _response_rank(status: int) -> tuple[int, int]:
    """§16.7 step 6: 6xx first, then the lowest class; 503 is avoided (it becomes 500 anyway)."""
    cls = status // 100
    if cls == 6:
        return (0, status)
    if status == 503:
        return (9, status)
    if status == 408:
        return (8, status)
    return (cls, status)


class Proxy:
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
    ) -> None:
        self.tp = transports
        self.store = store
        self.registrar = registrar
        self.resolver = resolver
        self.policy = policy
        self.max_message_size = max_message_size
        self.tl = TransactionLayer()
        self.loop = asyncio.get_event_loop()
        self.timers = LayerTimer(self.tl, self._act, "proxy")
        self._salt = os.urandom(8).hex()
        self.user_store: UserStore | None = None  # SQLite users beside the TOML ones (set by the app)
        self.breaker: B2bua | None = None  # the RTCWeb Breaker (issue 3), set by the app when enabled
        self.services: Services | None = None  # sip:echo@ / sip:diag@ (rtc2sip.services), set by the app
        self._tasks: set[asyncio.Task[Any]] = set()
        self.digest = DigestServer(
            next(iter(sorted(policy.domains)), "rtc2sip"), os.urandom(32), nonce_lifetime=nonce_lifetime,
            algorithms=policy.digest_algorithms,
        )
        self.stats: dict[str, int] = {"requests": 0, "responses": 0, "bad": 0, "dropped": 0}
        # parsed messages received, and messages sent through transactions (retransmissions
        # included), by method (method_label) and by status code: /metrics
        self.requests_in: Counter[str] = Counter()
        self.responses_in: Counter[int] = Counter()
        self.requests_out: Counter[str] = Counter()
        self.responses_out: Counter[int] = Counter()

    # ---- entry points ------------------------------------------------------------------------------

    def on_data(self, data: bytes, source: Source) -> None:
        """Everything a transport receives comes here. Never raises: bad input is answered or dropped."""
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
                if not all(resp.get(h) for h in ("Via", "From", "To", "Call-ID", "CSeq")):
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

    def _respond(self, st: ServerTransaction, status: int, reason: str | None = None,
                 extra: list[tuple[str, str]] | None = None) -> None:
        resp = make_response(st.request, status, reason, to_tag=self._salt[:10] if status > 100 else None)
        for name, value in extra or ():
            resp.add(name, value)
        self._send_response(st, resp)

    def _send_response(self, st: ServerTransaction, resp: Response) -> None:
        if st.terminated:
            return
        peer = st.peer
        if isinstance(peer, Source) and peer.websocket and resp.has("Contact"):
            # a foreign registrar's 200 lists the Contact we rewrote: the browser gets its own back
            core.restore_contacts(resp, self._is_local)
        for a in self.tl.send_response(st, resp, self.loop.time()):
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

    def _check(self, req: Request) -> tuple[int, str] | tuple[int, str, list[tuple[str, str]]] | None:
        """§16.3: the checks a proxy makes before routing."""
        uri = req.uri
        if not isinstance(uri, SipUri | TelUri):
            return (416, "Unsupported URI Scheme")
        unsupported = [o for o in req.option_tags("Proxy-Require") if o not in core.SUPPORTED_OPTIONS]
        if unsupported:
            return (420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
        mf = req.get("Max-Forwards")
        if mf is not None and mf.strip() == "0":
            return (483, "Too Many Hops")
        if core.looped(req, self._own_sent_by):
            return (482, "Loop Detected")
        return None

    def _own_sent_by(self, host: str, port: int | None) -> bool:
        return self.tp.is_local(host, port)

    def _is_local(self, host: str, port: int | None) -> bool:
        return self.tp.is_local(host, port)

    def is_local_domain(self, uri: SipUri) -> bool:
        """A URI this gateway is authoritative for: one of the domains on one of our ports (a domain
        that is also an IP, like 127.0.0.1, names other elements when the port is not ours)."""
        host = uri.host.lower().rstrip(".")
        if host in self.policy.domains:
            return uri.port is None or self.tp.is_local(uri.host, uri.port) or not _is_ip(host)
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
        """Not an open relay: beyond loopback, only registered or authenticated sources may send
        requests to domains that are not ours (requests *for* local users never get here)."""
        p = self.policy
        if p.trusted or p.open_relay:
            return True
        if req.method == "ACK" or (self.services is not None and self.services.is_source(source.host, source.port)):
            return True  # our own services' in-dialog MESSAGE and BYE
        try:
            aor = req.from_.uri
        except SipParseError:
            aor = None
        if isinstance(aor, SipUri):
            for b in self.store.lookup(aor.aor(), time.time()):
                if b.flow_id == source.flow_id or b.source.split(";")[0].endswith(f"{source.host}:{source.port}"):
                    return True
        have_users = bool(p.users) or (self.user_store is not None and len(self.user_store) > 0)
        if have_users and self._authenticated(req, st, "Proxy-Authorization", 407):
            return True
        if not have_users:
            self._respond(st, 403, "Relaying Denied")
        return False

    def _authenticated(self, req: Request, st: ServerTransaction, header: str, status: int,
                       owner: str | None = None) -> bool:
        """Digest-authenticate `req` (challenging it when needed); with `owner`, the user must be that one
        (§10.3 steps 3-4: a user may only change the bindings of its own AOR), else 403."""
        now = time.time()
        creds = find_credentials(req.get_all(header), self.digest.realm)
        if creds is not None:
            result = self.digest.verify(creds, req.method, now, self._lookup_password, request_uri=req.uri_text)
            if result.outcome is Outcome.ACCEPTED:
                if owner is not None and result.username != owner:
                    self._respond(st, 403, "Forbidden")
                    return False
                return True
            stale = result.outcome is Outcome.STALE
        else:
            stale = False
        challenge_header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        self._respond(st, status, None, [(challenge_header, c) for c in self.digest.challenge(now, stale=stale)])
        return False

    def _lookup_password(self, username: str, realm: str, algorithm: str) -> str | None:
        password = self.policy.users.get(username)
        if password is None and self.user_store is not None:
            password = self.user_store.password(username)
        return password

    def _local(self, req: Request, source: Source, st: ServerTransaction, uri: SipUri) -> None:
        """A request for one of our domains: the registrar, a registered user, or us."""
        method = req.method
        if method == "REGISTER":
            to = req.to.uri
            owner = to.user if isinstance(to, SipUri) else None
            if self.policy.auth_required and not self._authenticated(req, st, "Authorization", 401, owner):
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

    def _context(self, req: Request, source: Source, st: ServerTransaction | None) -> ResponseContext:
        ctx = ResponseContext(st, req, source)
        if st is not None:
            st.context = ctx
        return ctx

    def _forward(self, req: Request, source: Source, st: ServerTransaction, targets: list[Target]) -> None:
        ctx = self._context(req, source, st)
        self._start_branch(ctx, req, targets)  # _send_branch copies: the original stays for fail-over
        self._maybe_finish(ctx)

    def _forward_to_uri(self, req: Request, source: Source, st: ServerTransaction, uri: SipUri | Any) -> None:
        if not isinstance(uri, SipUri):
            self._respond(st, 416, "Unsupported URI Scheme")
            return
        ctx = self._context(req, source, st)
        self._resolve_then_branch(ctx, req, uri)
        self._maybe_finish(ctx)

    def _resolve_then_branch(self, ctx: ResponseContext, req: Request, uri: SipUri) -> None:
        targets = self._numeric_targets(uri)
        if targets is not None:
            self._start_branch(ctx, req, targets)
            return
        # a placeholder branch keeps the context open while DNS answers
        placeholder = Branch(ctx, req, Target("udp", "", 0), [])
        ctx.branches.append(placeholder)

        async def resolve() -> None:
            try:
                found = await locate(uri.host, uri.port, uri.transport, uri.scheme == "sips", self.resolver,
                                     supported=SUPPORTED_TRANSPORTS)
            except Exception as e:  # DNS failures of any kind end in a 503 for this branch
                log.info("call-id=%s cannot resolve %s: %s", req.call_id, uri.host, e)
                found = []
            ctx.branches.remove(placeholder)
            if not found:
                log.info("call-id=%s no target for %s", req.call_id, uri)
                self._branch_final(ctx, None, make_response(ctx.request, 503, "No route to destination"))
            else:
                self._start_branch(ctx, req, found)
            self._maybe_finish(ctx)
            self._arm_timer()

        self._spawn(resolve())

    def _numeric_targets(self, uri: SipUri) -> list[Target] | None:
        """RFC 3263 §4.2 for numeric hosts and localhost: no DNS needed, so no task either."""
        host = uri.host.strip("[]")
        if not _is_ip(host) and host.lower() != "localhost":
            return None
        transport = uri.transport or ("tls" if uri.scheme == "sips" else "udp")
        if transport not in SUPPORTED_TRANSPORTS:
            return []
        if host.lower() == "localhost":
            host = "127.0.0.1"
        return [Target(transport, host, uri.port or DEFAULT_PORTS.get(transport, 5060))]

    def _start_branch(self, ctx: ResponseContext, req: Request, targets: list[Target]) -> None:
        if ctx.cancelled or ctx.final_sent:
            return
        if not targets:
            self._branch_final(ctx, None, make_response(ctx.request, 503, "No route to destination"))
            return
        target, alternatives = targets[0], targets[1:]
        branch = Branch(ctx, req, target, alternatives)
        ctx.branches.append(branch)
        self._send_branch(branch)

    def _send_branch(self, branch: Branch) -> None:
        """§16.6 steps 3-8 for one target, then a client transaction (§16.6 step 10)."""
        ctx = branch.ctx
        out = branch.request.copy()
        core.decrement_max_forwards(out)
        target = branch.target
        transport = target.transport
        ipv6 = ":" in target.host
        local = self.tp.local_address(transport, ipv6) or self.tp.local_address("udp", ipv6)
        if local is None:
            self._branch_final(ctx, branch, make_response(ctx.request, 503, f"No {transport} transport"))
            return
        src = ctx.source
        # the To of the received request is parsed already; the copy's cache starts empty
        if out.method in core.DIALOG_METHODS and not ctx.request.to.tag:
            inbound = (src.local_host if src.local_host not in ("0.0.0.0", "::") else local[0], src.local_port,
                       src.transport)
            outbound = (local[0], local[1], transport)
            core.add_record_route(
                out, inbound, outbound,
                core.encode_flow(src.flow_id) if src.reliable else None,
                core.encode_flow(target.flow_id) if target.flow_id and transport != "udp" else None,
            )
        if src.websocket and transport not in ("ws", "wss"):
            core.rewrite_contacts(out, local[0], local[1], transport, src.flow_id)
        branch_id = self.tl.new_branch()
        via = f"SIP/2.0/{transport.upper()} {core._uri_host(local[0])}:{local[1]};branch={branch_id}"
        if transport == "udp":
            via += ";rport"
        out.add("Via", via, top=True)
        try:
            txn, actions = self.tl.send_request(out, self.loop.time(), reliable=transport != "udp",
                                                peer=target, context=branch)
        except LayerFull:
            self._branch_final(ctx, branch, make_response(ctx.request, 503, "Overloaded"))
            return
        branch.txn = txn
        for a in actions:
            self._act(a)

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

    def _cancel(self, cancel: Request, st: ServerTransaction) -> None:
        """§16.10: answer the CANCEL at once, then cancel every pending branch of its INVITE."""
        inv = self.tl.find_cancel_target(cancel)
        if inv is None:
            self._respond(st, 481, "Call/Transaction Does Not Exist")
            return
        self._respond(st, 200)
        ctx = inv.context
        if not isinstance(ctx, ResponseContext):
            return
        ctx.cancelled = True
        for b in ctx.branches:
            self._cancel_branch(b)
        if not ctx.branches and not ctx.final_sent:
            self._final(ctx, make_response(ctx.request, 487))

    def _cancel_branch(self, b: Branch, reason: str | None = None) -> None:
        txn = b.txn
        if txn is None or b.final or not isinstance(txn, InviteClientTransaction):
            return
        if not txn.cancellable:
            # §9.1: no CANCEL before a provisional response; send it when one arrives
            b.cancel_pending = True
            return
        b.cancel_pending = False
        cancel = make_cancel(txn.request, reason)
        try:
            _, actions = self.tl.send_request(cancel, self.loop.time(), reliable=txn.reliable, peer=txn.peer)
        except Exception as e:  # a CANCEL already under way for this branch
            log.debug("call-id=%s CANCEL not sent: %s", cancel.get("Call-ID"), e)
            return
        for a in actions:
            self._act(a)

    # ---- responses ---------------------------------------------------------------------------------

    def on_response(self, resp: Response, source: Source) -> None:
        for a in self.tl.receive_response(resp, self.loop.time()):
            if type(a) is Deliver and a.txn is None:
                if self.breaker is None or not self.breaker.on_response(None, resp):
                    self._stray_response(resp, source)
            elif type(a) is Deliver and a.txn is not None:
                branch = a.txn.context
                if isinstance(branch, Branch):
                    self._branch_response(branch, resp, source)
                elif self.breaker is not None:
                    self.breaker.on_response(a.txn, resp)
            else:
                self._act(a)

    def _stray_response(self, resp: Response, source: Source) -> None:
        """§16.11 / RFC 6026 §7.3: a response that matches no client transaction is forwarded statelessly
        only when it is a 2xx for INVITE (the retransmissions the UAC must see), else dropped."""
        top = resp.top_via
        if not self.tp.is_local(top.host, top.port) or resp.cseq.method != "INVITE" or not 200 <= resp.status < 300:
            log.debug("call-id=%s stray %s dropped", resp.get("Call-ID"), resp.status)
            return
        resp.pop_first_value("Via")
        if not resp.has("Via"):
            return
        if source.websocket:
            local = self.tp.local_address("udp") or self.tp.local_address("tcp")
            if local:
                core.rewrite_contacts(resp, local[0], local[1], "udp", source.flow_id)
        self._send_by_via(resp)

    def _send_by_via(self, resp: Response) -> None:
        via = resp.top_via
        host = via.param("received") or via.host
        rport = via.param("rport")
        port = int(rport) if rport else (via.port or 5060)
        t = via.transport.lower()
        flow = self.tp.by_remote.get((t, host, port))
        if flow is not None:
            self.tp.send_on_flow(flow.id, resp.to_bytes())
        elif t == "udp":
            self.tp.send_udp(host, port, resp.to_bytes())
        elif t in ("tcp", "tls"):
            self._transmit(resp.to_bytes(), Target(t, host, port), None)

    def _branch_response(self, b: Branch, resp: Response, source: Source) -> None:
        ctx = b.ctx
        status = resp.status
        if status < 200:
            b.provisional = True
            if b.cancel_pending:
                self._cancel_branch(b)
            if status == 100:
                return  # §16.7 step 3: 100 Trying is hop by hop
            if ctx.final_sent:
                return
            self._prepare_upstream(resp, source)
            if ctx.server is not None:
                self._send_response(ctx.server, resp)
            return
        if status == 503 and b.alternatives and not ctx.cancelled:
            # RFC 3263 §4.3: try the next target
            self._retry_next(b)
            return
        self._branch_final(ctx, b, resp, source)
        self._maybe_finish(ctx)

    def _retry_next(self, b: Branch) -> None:
        b.target, b.alternatives = b.alternatives[0], b.alternatives[1:]
        b.txn = None
        log.info("call-id=%s fail-over to %s:%s:%s", b.request.get("Call-ID"), b.target.transport, b.target.host,
                 b.target.port)
        self._send_branch(b)

    def _prepare_upstream(self, resp: Response, source: Source | None) -> None:
        resp.pop_first_value("Via")
        if source is not None and source.websocket:
            local = self.tp.local_address("udp") or self.tp.local_address("tcp")
            if local:
                core.rewrite_contacts(resp, local[0], local[1], "udp" if self.tp.local_address("udp") else "tcp",
                                      source.flow_id)

    def _branch_final(self, ctx: ResponseContext, b: Branch | None, resp: Response,
                      source: Source | None = None) -> None:
        status = resp.status
        if b is not None:
            b.final = status
        if b is not None and (source is not None or self._ours(resp)):
            # a response from the branch (or synthesised from its request) still has our Via on top
            self._prepare_upstream(resp, source)
        if 200 <= status < 300:
            # §16.7 step 5: every 2xx goes up at once; the other branches are cancelled
            if ctx.server is not None:
                self._send_response(ctx.server, resp)
            ctx.final_sent = True
            for other in ctx.branches:
                if other is not b:
                    self._cancel_branch(other, 'SIP;cause=200;text="Call completed elsewhere"')
            return
        if ctx.final_sent:
            return
        if status >= 600:
            for other in ctx.branches:
                if other is not b:
                    self._cancel_branch(other)
        if ctx.best is None or _response_rank(status) < _response_rank(ctx.best.status):
            ctx.best = resp

    def _ours(self, resp: Response) -> bool:
        top = resp.top_via
        return self.tp.is_local(top.host, top.port)

    def _maybe_finish(self, ctx: ResponseContext) -> None:
        """§16.7 step 6: when every branch is final, send the best response."""
        if ctx.final_sent or any(not b.final for b in ctx.branches):
            return
        best = ctx.best
        if best is None:
            best = make_response(ctx.request, 408 if not ctx.cancelled else 487)
        if best.status == 503:
            best = make_response(ctx.request, 500, "Next hop unavailable")
        self._final(ctx, best)

    def _final(self, ctx: ResponseContext, resp: Response) -> None:
        ctx.final_sent = True
        if ctx.server is not None:
            if not _has_tag(resp):
                _add_tag(resp, self._salt[:10])
            self._send_response(ctx.server, resp)

    # ---- actions -----------------------------------------------------------------------------------

    def _act(self, a: Any) -> None:
        t = type(a)
        if t is Transmit:
            msg = a.message
            if isinstance(msg, Response):
                self.responses_out[msg.status] += 1
            else:
                self.requests_out[method_label(msg.method)] += 1
            self._transmit(a.payload(), a.peer, a.txn)
        elif t is Timeout or t is TransportError:
            txn = a.txn
            if isinstance(txn, ClientTransaction) and isinstance(txn.context, Branch) and a.response is not None:
                b = txn.context
                if b.alternatives and not b.ctx.cancelled:
                    self._retry_next(b)
                else:
                    self._branch_final(b.ctx, b, a.response)
                    self._maybe_finish(b.ctx)
            elif self.breaker is not None:
                self.breaker.on_transaction_failed(txn, a.response)
        elif t is Terminated:
            # break the context cycles at once (see TransactionLayer._drop): the cyclic GC would free
            # them too, but its full passes over a busy proxy's heap stall every call for tens of ms
            txn = a.txn
            ctx = txn.context
            txn.context = None
            if isinstance(ctx, Branch):
                ctx.txn = None
            elif isinstance(ctx, ResponseContext):
                ctx.server = None
                ctx.branches.clear()

    def _transmit(self, data: bytes, peer: Any, txn: Any) -> None:
        if isinstance(peer, Source):
            if not self.tp.send_on_flow(peer.flow_id, data) and txn is not None:
                # the connection a request came on is gone: §18.2.2 would open a new one to the
                # Via; a browser's WebSocket cannot be reopened, so this ends the transaction
                for a in self.tl.transport_error(txn, self.loop.time()):
                    self._act(a)
            return
        if not isinstance(peer, Target):
            return
        if peer.flow_id is not None or peer.transport == "udp":
            ok = self.tp.send_on_flow(peer.flow_id, data) if peer.flow_id else \
                self.tp.send_udp(peer.host, peer.port, data) is not None
            if not ok and txn is not None:
                for a in self.tl.transport_error(txn, self.loop.time()):
                    self._act(a)
            return

        async def send() -> None:
            src = await self.tp.send(peer, data)
            if src is None and txn is not None:
                for a in self.tl.transport_error(txn, self.loop.time()):
                    self._act(a)
                self._arm_timer()

        self._spawn(send())

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- timers ------------------------------------------------------------------------------------

    def _arm_timer(self) -> None:
        self.timers.arm()

    async def close(self) -> None:
        self.timers.cancel()
        for t in list(self._tasks):
            t.cancel()


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


def _has_tag(resp: Response) -> bool:
    try:
        return resp.to.tag is not None
    except SipParseError:
        return True


def _add_tag(resp: Response, tag: str) -> None:
    to = resp.get("To")
    if to is not None:
        resp.set("To", f"{to};tag={tag}")


Clock = Callable[[], float]

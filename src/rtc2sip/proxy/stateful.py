"""The stateful proxy core (RFC 3261 §16.6-16.11) on top of the sans-I/O transaction layer.

Given a request and where it goes, :class:`StatefulProxy` forwards it (§16.6: a copy per target with
Max-Forwards, Record-Route (RFC 5658 double) and our Via, each in a client transaction), collects the
responses in a :class:`ResponseContext` (§16.7: provisionals up at once, every 2xx up, the best final
response when all branches are final), fails over to the next RFC 3263 target on a 503 or a timeout
(RFC 3263 §4.3), cancels branches (§16.10) and forwards stray 2xx responses to INVITE statelessly
(§16.11, RFC 6026 §7.3). It turns the transaction layer's actions into socket writes. Where a request
goes is decided above it, by :class:`rtc2sip.proxy.server.Proxy`.

Every request it takes gets a final response in bounded time (issue 13): DNS lookups are cut at
``dns_timeout`` (then 503, or 404 when the domain does not exist), and a context still without a final
response ``final_response_timeout`` after the request arrived is answered 408 and its branches
cancelled. An INVITE that has rung (a provisional came back) is left to its own timers, since a
callee may ring for minutes. Waiting for timer F (32 s) would answer after the client's own timer
had long given up (RFC 4320 §2), which to a user is silence.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..sip import (
    ClientTransaction,
    Deliver,
    InviteClientTransaction,
    LayerFull,
    ServerTransaction,
    Terminated,
    Timeout,
    TransactionLayer,
    Transmit,
    TransportError,
    make_cancel,
)
from ..sip.errors import SipParseError
from ..sip.message import Request, Response, make_response
from ..sip.uri import SipUri
from ..transport.base import DEFAULT_PORTS, Source, Target
from ..transport.layer import TransportLayer
from ..transport.timers import LayerTimer
from . import core
from .handlers import Interceptor
from .locate import Resolver, locate

log = logging.getLogger("rtc2sip.proxy")

SUPPORTED_TRANSPORTS = frozenset({"udp", "tcp", "tls", "ws", "wss"})
# Methods counted by name in Proxy.requests_in/requests_out; any other is "other", so that the label
# set of /metrics stays bounded whatever the wire carries.
COUNTED_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "PRACK", "SUBSCRIBE",
                             "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})


def method_label(method: str) -> str:
    return method if method in COUNTED_METHODS else "other"


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
    # answers 408 when it fires (see the module's docstring)
    deadline: asyncio.TimerHandle | None = None
    # a 503 the proxy made itself (no route, DNS failure): sent as is, where a downstream 503 becomes
    # 500 (§16.7 step 6), since it is this proxy that is unavailable for the request
    own_503: Response | None = None


@functools.lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
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


class StatefulProxy:
    """Forwarding and response processing of one proxy (§16.6-16.11); routing is the subclass's."""

    def __init__(self, transports: TransportLayer, resolver: Resolver, *, final_response_timeout: float = 8.0,
                 dns_timeout: float = 1.5) -> None:
        self.tp = transports
        self.resolver = resolver
        self.final_response_timeout = final_response_timeout
        self.dns_timeout = dns_timeout
        self._closed = False  # deadlines still pending when the proxy stops do nothing
        self.tl = TransactionLayer()
        self.loop = asyncio.get_event_loop()
        self.timers = LayerTimer(self.tl, self._act, "proxy")
        self._salt = os.urandom(8).hex()
        self.breaker: Interceptor | None = None  # the RTCWeb Breaker (issue 3), set by the app when enabled
        self._tasks: set[asyncio.Task[Any]] = set()
        # messages sent through transactions (retransmissions included), by method (method_label)
        # and by status code: /metrics
        self.requests_out: Counter[str] = Counter()
        self.responses_out: Counter[int] = Counter()

    # ---- answering ---------------------------------------------------------------------------------

    def _respond(self, st: ServerTransaction, status: int, reason: str | None = None,
                 extra: Iterable[tuple[str, str]] = ()) -> None:
        resp = make_response(st.request, status, reason, to_tag=self._salt[:10] if status > 100 else None)
        for name, value in extra:
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

    def _is_local(self, host: str, port: int | None) -> bool:
        return self.tp.is_local(host, port)

    # ---- forwarding (§16.6) ------------------------------------------------------------------------

    def _context(self, req: Request, source: Source, st: ServerTransaction | None) -> ResponseContext:
        ctx = ResponseContext(st, req, source)
        if st is not None:
            st.context = ctx
            ctx.deadline = self.loop.call_later(self.final_response_timeout, self._deadline, ctx)
        return ctx

    def _deadline(self, ctx: ResponseContext) -> None:
        ctx.deadline = None
        if self._closed or ctx.final_sent or ctx.server is None:
            return
        if ctx.request.method == "INVITE" and any(b.provisional for b in ctx.branches):
            return
        log.info("call-id=%s no final response in %.1f s: 408", ctx.request.call_id, self.final_response_timeout)
        ctx.cancelled = True  # no fail-over and no new branch from now on
        for b in ctx.branches:
            self._cancel_branch(b)
        self._final(ctx, make_response(ctx.request, 408, "Request Timeout"))
        self._arm_timer()

    @staticmethod
    def _disarm(ctx: ResponseContext) -> None:
        if ctx.deadline is not None:
            ctx.deadline.cancel()
            ctx.deadline = None

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
                found = await self.locate(uri, req.call_id)
            except Exception as e:  # DNS failures of any kind end in a 503 for this branch
                log.info("call-id=%s cannot resolve %s: %s", req.call_id, uri.host, e)
                found = []
            if placeholder in ctx.branches:  # the context may have been answered and cleared meanwhile
                ctx.branches.remove(placeholder)
            if ctx.final_sent or ctx.server is None:
                return
            if not found:
                log.info("call-id=%s no target for %s", req.call_id, uri)
                if self.resolver.is_nxdomain(uri.host):
                    resp = make_response(ctx.request, 404, "Domain Not Found")
                else:
                    resp = ctx.own_503 = make_response(ctx.request, 503, "No route to destination")
                self._branch_final(ctx, None, resp)
            else:
                self._start_branch(ctx, req, found)
            self._maybe_finish(ctx)
            self._arm_timer()

        self._spawn(resolve())

    async def locate(self, uri: SipUri, call_id: str = "-") -> list[Target]:
        """RFC 3263 targets of ``uri``, the whole lookup cut at ``dns_timeout`` (then none): for the
        proxy's branches and the breaker's legs alike."""
        try:
            return await asyncio.wait_for(
                locate(uri.host, uri.port, uri.transport, uri.scheme == "sips", self.resolver,
                       supported=SUPPORTED_TRANSPORTS),
                self.dns_timeout)
        except TimeoutError:
            log.info("call-id=%s DNS for %s timed out after %.1f s", call_id, uri.host, self.dns_timeout)
            return []

    def _numeric_targets(self, uri: SipUri) -> list[Target] | None:
        """RFC 3263 §4.2 for numeric hosts and localhost: no DNS needed, so no task either."""
        host = uri.host.strip("[]")
        if not is_ip(host) and host.lower() != "localhost":
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
            ctx.own_503 = make_response(ctx.request, 503, "No route to destination")
            self._branch_final(ctx, None, ctx.own_503)
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
        core.strip_secret_params(out)
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

    # ---- CANCEL (§16.10) ---------------------------------------------------------------------------

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
            self._disarm(ctx)
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
        if best.status == 503 and best is not ctx.own_503:
            best = make_response(ctx.request, 500, "Next hop unavailable")
        self._final(ctx, best)

    def _final(self, ctx: ResponseContext, resp: Response) -> None:
        ctx.final_sent = True
        self._disarm(ctx)
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
                self._disarm(ctx)
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
        self._closed = True
        for t in list(self._tasks):
            t.cancel()


def _has_tag(resp: Response) -> bool:
    try:
        return resp.to.tag is not None
    except SipParseError:
        return True


def _add_tag(resp: Response, tag: str) -> None:
    to = resp.get("To")
    if to is not None:
        resp.set("To", f"{to};tag={tag}")

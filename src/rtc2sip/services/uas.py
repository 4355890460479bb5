"""The SIP user agent server behind rtc2sip's built-in services (``sip:echo@DOMAIN``, ``sip:diag@DOMAIN``).

It is a plain UDP SIP endpoint on a loopback port of the gateway's own process: the proxy routes a
local-domain Request-URI whose user names a service to ``sip:<user>@127.0.0.1:<port>``, as it would
to a registered phone, and the RTCWeb Breaker makes it the legacy leg of a browser's call. So a
browser reaches a service through the full breaker path (ICE, DTLS-SRTP, the media plane's relay)
and a phone reaches it directly with plain RTP; the UAS needs no special case for either.

What it does with SIP is small (RFC 3261 §8.2, §12, §13.3 and §15 as a UAS; the 2xx retransmitted by
the core, RFC 6026 §7.1): answer an INVITE with an SDP offer (RTP/AVP or RTP/AVPF) at once with one
codec per m= line and a local RTP/RTCP socket pair per accepted stream (:mod:`.streams`), honour ACK, BYE,
re-INVITE/UPDATE (same sockets; a re-INVITE that adds an m= line, such as a camera turned on mid-call,
gets a socket pair for it), OPTIONS, INFO, MESSAGE, and send MESSAGE and BYE in the dialog.
Transactions are the sans-I/O :class:`rtc2sip.sip.transaction.TransactionLayer`, dialogs
:class:`rtc2sip.breaker.dialog.Dialog`. A :class:`Service` decides what the streams do with packets
and when the call ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..breaker.dialog import Dialog, DialogError, State
from ..media.ports import PortAllocator
from ..sdp import SdpError, SessionDescription
from ..sip import (
    ClientTransaction,
    Deliver,
    LayerFull,
    LocalProtocolError,
    MessageError,
    Request,
    Response,
    ServerTransaction,
    Terminated,
    Timeout,
    TransactionLayer,
    Transmit,
    TransportError,
    make_response,
    parse_message,
)
from ..sip.errors import SipParseError
from ..sip.uri import SipUri, parse_uri
from ..transport.timers import LayerTimer
from .streams import Address, Stream, answer_sdp, attach, open_streams

__all__ = ["Service", "ServiceCall", "ServiceUas"]

log = logging.getLogger("rtc2sip.services")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE"


class Service(Protocol):
    """What one service does with a call (echo, diag)."""

    name: str
    reflect: bool  # streams send every RTP packet back to its source

    def started(self, call: ServiceCall) -> None:
        """The call is answered (the 200 is out): the service's work starts."""

    def ended(self, call: ServiceCall, reason: str) -> None:
        """The call is over (BYE either way, timeout, shutdown); its sockets are closing."""


@dataclass(eq=False)
class ServiceCall:
    """One call to a service: its dialog, where the caller's SIP came from, its streams."""

    uas: ServiceUas
    service: Service
    dialog: Dialog
    source: Address  # where the INVITE came from (the proxy or the breaker): requests go back there
    offer: SessionDescription
    streams: list[Stream]
    local_sdp: bytes = b""
    started_at: float = field(default_factory=time.monotonic)
    acked: bool = False
    ended: bool = False
    end_reason: str = ""
    caller: str = ""  # the caller's From URI
    data: dict[str, Any] = field(default_factory=dict)  # the service's own state
    _retransmit: asyncio.TimerHandle | None = None
    _limit: asyncio.TimerHandle | None = None
    _ports: list[int] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    async def send(self, method: str, body: bytes = b"", content_type: str | None = None,
                   timeout: float = 8.0) -> int:
        """A request in the dialog; the final status (408 on timeout, 0 when it could not be sent)."""
        return await self.uas.send_in_dialog(self, method, body, content_type, timeout)

    async def hang_up(self, reason: str) -> None:
        """BYE (when the dialog is still up), then the call is over."""
        if self.ended:
            return
        if self.dialog.state is State.CONFIRMED:
            status = await self.send("BYE", timeout=4.0)
            log.info("call-id=%s %s: BYE -> %s", self.call_id, self.service.name, status)
        self.uas.end(self, reason)


class ServiceUas:
    """The services' SIP endpoint: one UDP socket on ``sip_host``, media sockets on ``media_host``
    (from ``ports``, the media plane's range, when given). ``services`` maps a Request-URI user to
    its :class:`Service`. ``max_duration`` ends any call after that long (BYE)."""

    def __init__(self, services: dict[str, Service], *, sip_host: str = "127.0.0.1",
                 media_host: str = "127.0.0.1", ports: PortAllocator | None = None,
                 max_duration: float = 600.0) -> None:
        self.services = {k.lower(): v for k, v in services.items()}
        self.sip_host = sip_host
        self.media_host = media_host
        self.ports = ports
        self.max_duration = max_duration
        self.tl = TransactionLayer()
        self.calls: dict[tuple[str, str], ServiceCall] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.timers = LayerTimer(self.tl, self._act, "services")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- life cycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        uas = self

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                uas.on_datagram(data, (addr[0], addr[1]))

            def error_received(self, exc: Exception) -> None:
                pass

        transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=(self.sip_host, 0))
        self.transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        log.info("services %s on sip:%s:%d", ", ".join(sorted(self.services)), self.sip_host, self.port)

    def contact(self, user: str) -> str:
        host = f"[{self.sip_host}]" if ":" in self.sip_host else self.sip_host
        return f"sip:{user}@{host}:{self.port}"

    def contacts(self) -> dict[str, str]:
        """Request-URI user -> the URI the proxy sends the service's calls to."""
        return {user: self.contact(user) for user in self.services}

    def is_source(self, host: str, port: int) -> bool:
        """Is (host, port) this UAS's SIP socket (the proxy lets its in-dialog requests through)?"""
        return port == self.port and host.strip("[]") == self.sip_host

    async def close(self) -> None:
        for call in list(self.calls.values()):
            self.end(call, "shutdown")
        self.timers.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- SIP in ----------------------------------------------------------------------------------

    def on_datagram(self, data: bytes, source: Address) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse_message(data)
        except MessageError as e:
            log.debug("services dropped a bad message from %s:%s: %s", *source, e)
            return
        now = self._now()
        try:
            if isinstance(msg, Request):
                actions = self.tl.receive_request(msg, now, reliable=False, peer=source)
            else:
                actions = self.tl.receive_response(msg, now)
            for a in actions:
                self._act(a, source)
        except (SipParseError, ValueError) as e:
            log.info("call-id=%s services dropped a message: %s", msg.get("Call-ID"), e)
        except Exception:
            log.exception("call-id=%s services: internal error", msg.get("Call-ID"))
        self._arm_timer()

    def _act(self, a: Any, source: Address | None = None) -> None:
        t = type(a)
        if t is Transmit:
            peer = a.peer
            if self.transport is not None and isinstance(peer, tuple):
                self.transport.sendto(a.payload(), peer)
        elif t is Deliver:
            msg = a.message
            if isinstance(msg, Request):
                if a.txn is None:
                    if msg.method == "ACK":
                        self._on_ack(msg)
                elif isinstance(a.txn, ServerTransaction) and source is not None:
                    self._on_request(msg, a.txn, source)
            elif isinstance(a.txn, ClientTransaction) and msg.status >= 200:
                self._settle(a.txn, msg.status)
        elif t is Timeout or t is TransportError:
            if isinstance(a.txn, ClientTransaction):
                self._settle(a.txn, 408 if t is Timeout else 503)
        elif t is Terminated:
            a.txn.context = None

    def _settle(self, txn: ClientTransaction, status: int) -> None:
        fut = txn.context
        if isinstance(fut, asyncio.Future) and not fut.done():
            fut.set_result(status)

    def _respond(self, st: ServerTransaction, resp: Response) -> None:
        for a in self.tl.send_response(st, resp, self._now()):
            self._act(a)
        self._arm_timer()

    def _on_request(self, req: Request, st: ServerTransaction, source: Address) -> None:
        method = req.method
        if req.to.tag is None:
            if method == "INVITE":
                self._on_invite(req, st, source)
            elif method == "OPTIONS":
                self._respond(st, _response(req, 200, [("Allow", ALLOW), ("Accept", "application/sdp")]))
            elif method == "CANCEL":
                # every INVITE is answered at once: nothing is left to cancel (§9.2)
                self._respond(st, make_response(req, 481 if self.tl.find_cancel_target(req) is None else 200))
            else:
                self._respond(st, make_response(req, 405 if method != "MESSAGE" else 404, to_tag=_tag()))
            return
        call = self.calls.get((req.call_id, req.to.tag))
        if call is None or not call.dialog.matches(req):
            self._respond(st, make_response(req, 481))
            return
        try:
            call.dialog.receive(req)
        except DialogError as e:
            self._respond(st, make_response(req, e.status, e.reason))
            return
        if method == "BYE":
            self._respond(st, call.dialog.response(req, 200))
            log.info("call-id=%s %s: BYE from the caller", call.call_id, call.service.name)
            self.end(call, "BYE from the caller")
        elif method in ("INVITE", "UPDATE") and req.body:
            try:
                offer = SessionDescription.parse(req.body)
            except SdpError as e:
                self._respond(st, call.dialog.response(req, 488, None, headers=[("Warning", f'399 rtc2sip "{e}"')]))
                return
            added: list[Stream] = []
            if method == "INVITE":  # RFC 3264 §8.2: a stream added by a re-offer gets its own sockets
                try:
                    added = open_streams(offer, call.service.reflect, self.media_host, self.ports,
                                         existing=call.streams)
                except (SdpError, OSError):  # none new, or no port left: answered with port 0
                    added = []
            if added:
                call.streams.extend(added)
                call._ports += [p for x in added for p in (x.rtp_port, x.rtcp_port) if p]
                self.spawn(self._reanswer(call, req, st, offer, added))
                return
            try:
                call.local_sdp = _answer(offer, call.streams, self.media_host, call.service)
            except SdpError as e:
                self._respond(st, call.dialog.response(req, 488, None, headers=[("Warning", f'399 rtc2sip "{e}"')]))
                return
            call.offer = offer
            self._respond(st, call.dialog.response(req, 200, None, call.local_sdp, headers=[("Allow", ALLOW)]))
        elif method == "INVITE":
            self._respond(st, call.dialog.response(req, 200, None, call.local_sdp, headers=[("Allow", ALLOW)]))
        else:  # INFO, MESSAGE, OPTIONS, NOTIFY, UPDATE without an offer: accepted, nothing to do
            self._respond(st, call.dialog.response(req, 200))

    def _on_invite(self, req: Request, st: ServerTransaction, source: Address) -> None:
        uri = req.uri
        user = (uri.user or "").lower() if isinstance(uri, SipUri) else ""
        service = self.services.get(user)
        if service is None:
            self._respond(st, make_response(req, 404, "No such service", to_tag=_tag()))
            return
        if not req.body or req.content_type != "application/sdp":
            self._respond(st, make_response(req, 488, "SDP offer required", to_tag=_tag()))
            return
        try:
            offer = SessionDescription.parse(req.body)
            streams = open_streams(offer, service.reflect, self.media_host, self.ports)
        except SdpError as e:
            self._respond(st, _response(req, 488, [("Warning", f'399 rtc2sip "{e}"')], to_tag=_tag()))
            return
        except OSError as e:  # no port left
            log.warning("call-id=%s %s: no media port: %s", req.call_id, user, e)
            self._respond(st, make_response(req, 503, "No media port", to_tag=_tag()))
            return
        try:
            dialog = Dialog.uas(req, f"<{self.contact(user)}>")
        except (DialogError, SipParseError) as e:
            for s in streams:
                s.close()
            self._respond(st, make_response(req, getattr(e, "status", 400), getattr(e, "reason", None), to_tag=_tag()))
            return
        call = ServiceCall(self, service, dialog, source, offer, streams, caller=str(req.from_.uri))
        call._ports = [p for s in streams for p in (s.rtp_port, s.rtcp_port) if p]
        self.calls[dialog.key] = call
        self.spawn(self._bind(call, req, st))

    async def _reanswer(self, call: ServiceCall, req: Request, st: ServerTransaction, offer: SessionDescription,
                        added: list[Stream]) -> None:
        """A re-INVITE that added streams: attach their sockets, then answer 200."""
        try:
            await attach(added)
            call.local_sdp = _answer(offer, call.streams, self.media_host, call.service)
        except (OSError, SdpError) as e:
            self._respond(st, call.dialog.response(req, 488, None, headers=[("Warning", f'399 rtc2sip "{e}"')]))
            return
        if call.ended:
            return
        call.offer = offer
        self._respond(st, call.dialog.response(req, 200, None, call.local_sdp, headers=[("Allow", ALLOW)]))
        log.info("call-id=%s %s: re-INVITE added %s", call.call_id, call.service.name,
                 ", ".join(f"{s.kind} {s.rtp_port}" for s in added))
        added_hook = getattr(call.service, "streams_added", None)
        if added_hook is not None:
            try:
                added_hook(call, added)
            except Exception:
                log.exception("call-id=%s %s failed to take the new streams", call.call_id, call.service.name)

    async def _bind(self, call: ServiceCall, req: Request, st: ServerTransaction) -> None:
        """Attach the streams' sockets to the loop, answer 200, start the service."""
        loop = asyncio.get_running_loop()
        try:
            await attach(call.streams)
            call.local_sdp = _answer(call.offer, call.streams, self.media_host, call.service)
        except (OSError, SdpError) as e:
            log.warning("call-id=%s %s: cannot answer: %s", call.call_id, call.service.name, e)
            self._respond(st, make_response(req, 500, "Service failed", to_tag=call.dialog.local_tag))
            self.end(call, f"failed: {e}")
            return
        ok = call.dialog.response(req, 200, None, call.local_sdp, headers=[("Allow", ALLOW)])
        self._respond(st, ok)
        log.info("call-id=%s %s answered a call from %s (%s)", call.call_id, call.service.name, call.caller,
                 ", ".join(f"{s.kind} {s.rtp_port}" for s in call.streams))
        self._retransmit_2xx(call, st, ok, 0.5)
        call._limit = loop.call_later(self.max_duration, lambda: self.spawn(call.hang_up("maximum duration")))
        try:
            call.service.started(call)
        except Exception:
            log.exception("call-id=%s %s failed to start", call.call_id, call.service.name)

    def _retransmit_2xx(self, call: ServiceCall, st: ServerTransaction, ok: Response, delay: float) -> None:
        """RFC 6026 §7.1: the UAS core, not the transaction, resends its 2xx until the ACK (T1 doubling
        to T2, 64*T1 in all)."""
        if call.acked or call.ended or delay > 4.0 * 8:
            return

        def again() -> None:
            if not call.acked and not call.ended and not st.terminated:
                self._respond(st, ok)
                self._retransmit_2xx(call, st, ok, min(delay * 2, 4.0) if delay < 4.0 else delay + 4.0)

        assert self._loop is not None
        call._retransmit = self._loop.call_later(delay, again)

    def _on_ack(self, req: Request) -> None:
        tag = req.to.tag
        call = self.calls.get((req.call_id, tag)) if tag else None
        if call is not None and not call.acked:
            call.acked = True
            if call._retransmit is not None:
                call._retransmit.cancel()

    # ---- SIP out ---------------------------------------------------------------------------------

    async def send_in_dialog(self, call: ServiceCall, method: str, body: bytes, content_type: str | None,
                             timeout: float) -> int:
        if self.transport is None or call.dialog.state is not State.CONFIRMED:
            return 0
        req = call.dialog.request(method, body, content_type)
        if method == "BYE":
            call.dialog.terminate()
        peer = self._next_hop(call)
        host = f"[{self.sip_host}]" if ":" in self.sip_host else self.sip_host
        req.add("Via", f"SIP/2.0/UDP {host}:{self.port};branch={self.tl.new_branch()};rport", top=True)
        assert self._loop is not None
        fut: asyncio.Future[int] = self._loop.create_future()
        try:
            _, actions = self.tl.send_request(req, self._now(), reliable=False, peer=peer, context=fut)
        except (LayerFull, LocalProtocolError) as e:
            log.info("call-id=%s %s not sent: %s", call.call_id, method, e)
            return 0
        for a in actions:
            self._act(a)
        self._arm_timer()
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return 408

    def _next_hop(self, call: ServiceCall) -> Address:
        """§8.1.2 for numeric hops (the gateway's own addresses: its Record-Route, the breaker's
        Contact); anything else goes back where the INVITE came from."""
        try:
            uri = parse_uri(call.dialog.next_hop())
        except SipParseError:
            return call.source
        if isinstance(uri, SipUri) and (uri.transport or "udp") == "udp":
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(uri.host.strip("[]"))
                return (uri.host.strip("[]"), uri.port or 5060)
        return call.source

    # ---- ending ----------------------------------------------------------------------------------

    def end(self, call: ServiceCall, reason: str) -> None:
        if call.ended:
            return
        call.ended = True
        call.end_reason = reason
        call.dialog.terminate()
        for h in (call._retransmit, call._limit):
            if h is not None:
                h.cancel()
        self.calls.pop(call.dialog.key, None)
        try:
            call.service.ended(call, reason)
        except Exception:
            log.exception("call-id=%s %s: error at the end of the call", call.call_id, call.service.name)
        for s in call.streams:
            s.close()
        self._release_ports(*call._ports)

    def _release_ports(self, *ports: int) -> None:
        if self.ports is not None:
            self.ports.release(*(p for p in ports if p))

    # ---- timers ----------------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _arm_timer(self) -> None:
        self.timers.arm()


def _tag() -> str:
    return secrets.token_hex(6)


def _response(req: Request, status: int, headers: list[tuple[str, str]], to_tag: str | None = None) -> Response:
    resp = make_response(req, status, to_tag=to_tag or _tag())
    for name, value in headers:
        resp.add(name, value)
    return resp


def _answer(offer: SessionDescription, streams: list[Stream], media_host: str, service: Service) -> bytes:
    """:func:`answer_sdp`, the codec chosen by the service when it has a ``choose_codec(kind, codecs)``."""
    return answer_sdp(offer, streams, media_host, getattr(service, "choose_codec", None))

"""The RTCWeb Breaker's signalling: a back-to-back user agent (RFC 3261 §6 "B2BUA", RFC 7092 §3.1).

A broken call has two legs, each a full SIP dialog of its own (§12): its own Call-ID, tags, CSeq and
route set. The *caller* leg is the UAS side (it received the INVITE), the *callee* leg the UAC side
(the B2BUA sends the INVITE). One leg is a WebRTC endpoint (a browser, usually on a WebSocket flow), the
other a legacy one; the media plane (:class:`MediaPlane`) translates every SDP between them.

The B2BUA lives inside the proxy and borrows its machinery through :class:`Host`: the transaction layer
(client and server transactions, their timers), the transports and the routing of new requests (the
location service, an upstream proxy, RFC 3263). The proxy hands over what belongs to a broken call:

- :meth:`B2bua.on_request` first, for every request: requests inside the B2BUA's dialogs (matched by
  Call-ID and To tag, §12.2.2), the ACK of its 2xx, CANCELs of the INVITEs it answers;
- :meth:`B2bua.should_break` then :meth:`B2bua.handle_invite` for a new INVITE;
- :meth:`B2bua.on_response` and :meth:`B2bua.on_transaction_failed` for its client transactions (their
  ``context`` is the B2BUA's), and :meth:`B2bua.on_flow_closed` when a connection ends.

Events of one call run one after the other (a per-call job queue): the media plane is asynchronous, and
a 200 must never overtake the 183 whose SDP it repeats. Whatever ends a call (BYE, CANCEL, a failure,
the WebSocket closed, the media plane's failure callback) goes through :meth:`B2bua._end`, which ends the
other leg and releases every table entry and the media session.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ..media.dtmf_sink import DtmfSink
from ..media.plane import MediaPlaneError
from ..media.ports import PortsExhausted
from ..sdp import SdpError, SessionDescription
from ..sip.digest import DigestError, answer_challenge, select_challenge
from ..sip.errors import SipParseError
from ..sip.headers import NameAddr, parse_name_addr
from ..sip.message import Request, Response, make_response
from ..sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
    Transaction,
    make_cancel,
)
from ..sip.uri import SipUri, del_param, parse_uri, set_param
from ..transport.base import Source, Target
from .dialog import Dialog, DialogError, State
from .dtmf import dtmf_relay_body
from .policy import CLIENT_PARAMS, ClientParams, Decision, Facts, Mode, client_params, decide, offer_is_webrtc

if TYPE_CHECKING:
    from ..proxy.server import Proxy

__all__ = ["B2B_PARAM", "B2bua", "BreakerConfig", "Call", "Host", "Leg", "MediaPlane", "ProxyHost",
           "rewrite_refer_to"]

log = logging.getLogger("rtc2sip.breaker")

# A URI parameter in the Contacts the B2BUA gives out: a late request for a call already gone is
# answered 481 (§12.2.2) instead of being routed as if it were for a registered user.
B2B_PARAM = "r2sb"
ALLOW = "INVITE, ACK, CANCEL, BYE, UPDATE, INFO, MESSAGE, REFER, NOTIFY, OPTIONS, PRACK"
# RFC 5168 §3: the XML schema for media control, the one request everyone implements
PICTURE_FAST_UPDATE = (b'<?xml version="1.0" encoding="utf-8" ?>\r\n<media_control><vc_primitive><to_encoder>'
                       b"<picture_fast_update/></to_encoder></vc_primitive></media_control>\r\n")
T1 = 0.5

# Headers carried from one leg to the other. Everything else is per leg and never crosses: Via, Route,
# Contact, tags, Call-ID, CSeq, credentials of the other hop, and the client's ha1 (issue 3, item 3).
REQUEST_HEADERS = frozenset({
    "Subject", "Priority", "Alert-Info", "Call-Info", "P-Asserted-Identity", "P-Preferred-Identity",
    "Privacy", "Event", "Subscription-State", "Referred-By", "Info-Package", "Recv-Info", "Reason",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Accept", "Allow-Events", "Expires",
    "User-Agent", "Organization",
})
RESPONSE_HEADERS = frozenset({
    "WWW-Authenticate", "Proxy-Authenticate", "Retry-After", "Warning", "Reason", "Unsupported",
    "Error-Info", "Alert-Info", "Call-Info", "P-Asserted-Identity", "Accept", "Min-SE", "Allow-Events",
    "Server",
})
# Credentials a browser answered a relayed challenge with: reused on the legacy leg (issue 3 item 3).
CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")


# ---- what the B2BUA needs from the outside ---------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    mode: Mode = Mode.AUTO
    enable_100rel: bool = False  # webrtc2sip's enable-100rel: Supported: 100rel on the legacy leg
    max_calls: int = 10_000  # each costs two dialogs, two SDPs and a media session (~10 KB here)
    # webrtc2sip's dtmf-type: rfc4733 turns a browser's INFO digits into RFC 4733; "info" (or webrtc2sip's
    # "rfc2833") keeps them INFO and turns the legacy side's RFC 4733 events into INFO toward the browser
    dtmf_type: str = "rfc4733"


# ---- calls and legs ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Leg:
    """One side of a broken call: a dialog and how to reach the peer."""

    call: Call
    name: str  # "browser" or "legacy", for the log
    webrtc: bool
    is_caller: bool  # UAS side: it sent us the INVITE
    dialog: Dialog
    flow: Target | None = None  # fixed next hop: a browser's WebSocket (RFC 7118 §5.4: no other way in)
    target: Target | None = None  # where our initial INVITE went (callee leg)
    invite_st: ServerTransaction | None = None  # caller leg: the INVITE we answer
    final_sent: bool = False
    invite: Request | None = None  # callee leg: our last INVITE (CANCEL and auth retries copy it)
    invite_ct: ClientTransaction | None = None
    invite_final: bool = False
    cancel_pending: bool = False
    initial_routes: list[str] = field(default_factory=list)
    ack: Request | None = None  # callee leg: the ACK of the 2xx, sent again for each retransmission
    ack_target: Target | None = None
    local_sdp: bytes = b""  # the last SDP we sent this leg (an offerless re-INVITE gets it again)
    early_answer: bytes = b""  # callee leg: SDP answer already taken from a 18x (§13.2.1)
    creds: ClientParams | None = None  # impi and ha1 for the legacy leg's challenges
    relay_auth: list[tuple[str, str]] = field(default_factory=list)  # the browser's own credentials
    auth_tries: int = 0
    nonce_counts: dict[str, int] = field(default_factory=dict)
    last_rseq: int = 0
    # RFC 3262 toward the caller: what its INVITE said, and our reliable provisionals to it
    rel_supported: bool = False  # 100rel in its Supported or Require
    rel_required: bool = False  # 100rel in its Require: every 1xx we send it must be reliable
    rseq_out: int = 0
    rel_pending: tuple[int, Response, Response | None] | None = None  # (RSeq, our 1xx, the callee's to PRACK)
    rel_queue: deque[tuple[Response, Response | None]] = field(default_factory=deque)  # §3: one at a time
    rel_timer: Cancellable | None = None
    rel_interval: float = 0.0
    held_final: Response | None = None  # our 2xx, waiting for the PRACK of a reliable 1xx with SDP
    hop: tuple[str, list[Target]] | None = None  # cached resolution of the dialog's next hop
    reinvite_st: ServerTransaction | None = None  # a re-INVITE/UPDATE with an offer from this leg
    reinvite_out: bool = False  # our re-INVITE/UPDATE toward this leg awaits its answer
    refer_ids: dict[int, int] = field(default_factory=dict)  # CSeq of a REFER we sent here -> the original's

    @property
    def call_id(self) -> str:
        return self.dialog.call_id


@dataclass(eq=False)
class Call:
    id: str
    caller: Leg | None = None
    callee: Leg | None = None
    session: str | None = None
    ended: bool = False
    cancelled: bool = False
    jobs: deque[Callable[[], Awaitable[None]]] = field(default_factory=deque)
    running: bool = False
    started: float = field(default_factory=time.monotonic)
    last_picture_update: float = -1e9  # RFC 5168 INFO sent to the legacy leg (rate-limited)

    def other(self, leg: Leg) -> Leg:
        o = self.callee if leg is self.caller else self.caller
        assert o is not None
        return o

    @property
    def legs(self) -> list[Leg]:
        return [leg for leg in (self.caller, self.callee) if leg is not None]

    @property
    def browser(self) -> Leg | None:
        return next((leg for leg in self.legs if leg.webrtc), None)

    def ids(self) -> str:
        a = self.caller.call_id if self.caller else "-"
        b = self.callee.call_id if self.callee else "-"
        return f"call={self.id} a={a} b={b}"


@dataclass(eq=False, slots=True)
class TxnContext:
    """The ``context`` of the B2BUA's client transactions: which call, which leg, what for."""

    call: Call
    leg: Leg
    kind: str  # invite, reinvite, relay, bye, cancel, prack
    server: ServerTransaction | None = None  # relay/reinvite: the request on the other leg to answer
    request: Request | None = None  # what was sent (auth retries)


# ---- the B2BUA -----------------------------------------------------------------------------------


class B2bua:
    """Breaks calls between WebRTC and legacy endpoints into two legs (one instance per proxy)."""

    def __init__(self, host: Host, media: MediaPlane, config: BreakerConfig | None = None,
                 secret: bytes | None = None) -> None:
        self.host = host
        self.media = media
        self.config = config or BreakerConfig()
        self._secret = secret or os.urandom(16)
        self._ids = 0
        # every table is emptied by _release, whatever ended the call
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], Leg] = {}  # (Call-ID, local tag) -> leg
        self.call_ids: dict[str, int] = {}  # Call-IDs of live legs: the cheap first test in on_request
        self.by_flow: dict[str, set[Call]] = {}
        self.by_session: dict[str, Call] = {}
        # called as observer(call, reason) when a call ends, before its media session is deleted
        # (the live view's history and /metrics, rtc2sip.web.monitor); exceptions are logged
        self.observers: list[Callable[[Call, str], None]] = []
        media.on_failure(self._media_failed)
        # RFC 5168 keyframe requests over SIP INFO (duck-typed: a plane without video has none)
        on_keyframe = getattr(media, "on_keyframe_request", None)
        if on_keyframe is not None:
            on_keyframe(self._keyframe_to_legacy)

    def table_sizes(self) -> dict[str, int]:
        return {"calls": len(self.calls), "dialogs": len(self.dialogs), "call_ids": len(self.call_ids),
                "by_flow": len(self.by_flow), "by_session": len(self.by_session)}

    # ---- the hooks the proxy calls -------------------------------------------------------------

    def should_break(self, req: Request, source: Source) -> Decision:
        """Issue 3 item 1, for an INVITE that creates a dialog (no To tag). Never raises."""
        try:
            if req.method != "INVITE" or req.to.tag is not None:
                return Decision(False, "not a new INVITE")
            replaced = self._replaces(req) if req.has("Replaces") else None
            if isinstance(replaced, Leg):
                # RFC 3891: the INVITE asks us to replace one of our legs; the new call goes to the peer
                # of the other leg, with Replaces naming that leg (_setup)
                source_webrtc = source.websocket or offer_is_webrtc(req.body, req.content_type)
                if source_webrtc != replaced.call.other(replaced).webrtc:
                    return Decision(True, "Replaces names a dialog of a broken call")
                return Decision(False, "Replaces names a broken call's dialog, toward the same kind of endpoint")
            target = self.host.target_is_webrtc(req)
        except (SipParseError, ValueError) as e:
            return Decision(False, f"unparsable: {e}")
        if target is None:
            return Decision(False, "no target")
        facts = Facts(
            asked=client_params(req).breaker,
            source_webrtc=source.websocket or offer_is_webrtc(req.body, req.content_type),
            target_webrtc=target,
        )
        return decide(self.config.mode, facts)

    def on_request(self, req: Request, source: Source, st: ServerTransaction | None) -> bool:
        """Take ``req`` when it belongs to a broken call; never raises. ``st`` is None for an ACK
        that matched no transaction (the ACK of a 2xx, §17.2.3)."""
        try:
            return self._on_request(req, source, st)
        except (SipParseError, ValueError) as e:
            log.info("call-id=%s breaker dropped a request: %s", req.get("Call-ID"), e)
            return False

    def _on_request(self, req: Request, source: Source, st: ServerTransaction | None) -> bool:
        call_id = req.call_id
        method = req.method
        if method == "CANCEL":
            if call_id not in self.call_ids or st is None:
                return False
            inv = self.host.find_cancel_target(req)
            if inv is None or not isinstance(inv.context, Call):
                return False
            call = inv.context
            self._respond(st, make_response(req, 200))
            self._post(call, lambda: self._on_cancel(call))
            return True
        to_tag = req.to.tag
        if to_tag is None:
            if method == "INVITE" and st is not None and req.has("Replaces"):
                found = self._replaces(req)
                if found is False:
                    self._respond(st, make_response(req, 481, "Replaced dialog does not exist", to_tag=_tag()))
                    return True
            return False
        leg = self.dialogs.get((call_id, to_tag)) if call_id in self.call_ids else None
        if leg is None or not leg.dialog.matches(req):
            uri = req.uri
            if isinstance(uri, SipUri) and uri.has(B2B_PARAM):
                # for a dialog of ours that is gone (§12.2.2)
                if st is not None and method != "ACK":
                    self._respond(st, make_response(req, 481))
                return True
            return False
        if method == "ACK":
            self._post(leg.call, lambda: self._on_ack(leg, req))
            return True
        if st is None:
            return True
        try:
            leg.dialog.receive(req)
        except DialogError as e:
            self._respond(st, make_response(req, e.status, e.reason))
            return True
        self._post(leg.call, lambda: self._on_in_dialog(leg, req, st))
        return True

    def handle_invite(self, req: Request, source: Source, st: ServerTransaction) -> None:
        """Break this INVITE (after :meth:`should_break` said so and the proxy's checks passed)."""
        if len(self.calls) >= self.config.max_calls:
            self._respond(st, make_response(req, 503, "Too many calls", to_tag=_tag()))
            return
        self._ids += 1
        call = Call(f"b{self._ids}")
        params = client_params(req)
        webrtc = source.websocket or offer_is_webrtc(req.body, req.content_type)
        host = self.host.local_address(source.transport, ":" in source.host) or self.host.local_address("udp")
        contact = self._contact(req.to.uri, source.transport, host)
        try:
            dialog = Dialog.uas(req, contact)
        except (DialogError, SipParseError) as e:
            self._respond(st, make_response(req, e.status, e.reason, to_tag=_tag()))
            return
        leg = Leg(call, "browser" if webrtc else "legacy", webrtc, True, dialog, invite_st=st)
        # requests for the caller go back the way its INVITE came: a browser has no other address
        # (RFC 7118 §5.4), and a phone behind a NAT is reachable at its source, not its Contact
        leg.flow = Target(source.transport, source.host, source.port, source.flow_id)
        if webrtc:
            leg.creds = params if params.ha1 else None
        leg.rel_required = "100rel" in req.option_tags("Require")
        leg.rel_supported = leg.rel_required or "100rel" in req.option_tags("Supported")
        call.caller = leg
        st.context = call
        self.calls[call.id] = call
        self._index(leg)
        self._watch_flow(call, leg)
        log.info("%s INVITE %s %s -> breaker (%s)", call.ids(), "browser" if webrtc else "legacy",
                 _safe_uri(req.uri), "ha1" if params.ha1 else "no ha1")
        self._post(call, lambda: self._setup(call, req, params))

    def on_response(self, txn: Transaction | None, resp: Response) -> bool:
        """A response to one of our client transactions (``txn.context`` is a :class:`TxnContext`), or a
        stray 2xx retransmission of our INVITE (``txn`` None): True when taken."""
        try:
            if txn is None:
                return self._stray_response(resp)
            ctx = txn.context
            if not isinstance(ctx, TxnContext):
                return False
            self._post(ctx.call, lambda: self._on_response(ctx, resp), force=True)
            return True
        except (SipParseError, ValueError) as e:
            log.info("call-id=%s breaker dropped a response: %s", resp.get("Call-ID"), e)
            return txn is not None and isinstance(txn.context, TxnContext)

    def on_transaction_failed(self, txn: Transaction, response: Response | None) -> bool:
        """Timeout or transport error of one of our transactions (§8.1.3.1: act as on a 408/503)."""
        ctx = txn.context
        if isinstance(ctx, TxnContext):
            if response is not None:
                self._post(ctx.call, lambda: self._on_response(ctx, response), force=True)
            return True
        if isinstance(ctx, Call):
            # the caller's INVITE could not be answered: its connection is gone
            self._end(ctx, "caller unreachable", by=ctx.caller)
            return True
        return False

    def on_flow_closed(self, flow_id: str) -> None:
        """A connection ended: every call whose browser was on it ends (issue 3 item 2)."""
        for call in list(self.by_flow.get(flow_id, ())):
            dead = next((leg for leg in call.legs if leg.flow and leg.flow.flow_id == flow_id), None)
            self._end(call, "connection closed", by=dead)

    # A browser that hangs up closes DTLS (close_notify over UDP) and sends BYE (over its WebSocket):
    # the close often arrives first. Give the BYE this long to end the call with its true cause.
    CLOSE_GRACE = 2.0

    def _media_failed(self, session: str, reason: str) -> None:
        call = self.by_session.get(session)
        if call is None:
            return
        if reason.startswith("dtls closed"):
            def later() -> None:
                if not call.ended:
                    self._end(call, f"media: {reason}", by=None)

            self.host.call_later(self.CLOSE_GRACE, later)
            return
        self._end(call, f"media: {reason}", by=None)

    # ---- call set-up -----------------------------------------------------------------------------

    async def _setup(self, call: Call, req: Request, params: ClientParams) -> None:
        """The callee leg: translate the offer, route, send the INVITE (§13.2.1)."""
        a = call.caller
        assert a is not None
        if not req.body or req.content_type != "application/sdp":
            # a delayed offer would need an offer from the media plane first: not in its API
            self._fail(call, 488, "SDP offer required")
            return
        try:
            offer = SessionDescription.parse(req.body)
            if a.webrtc:
                session, out = await self.media.offer_from_webrtc(call.id, offer)
            else:
                session, out = await self.media.offer_from_legacy(call.id, offer)
        except SdpError as e:
            self._fail(call, 488, None, [("Warning", f'{getattr(e, "warning", 399)} rtc2sip "{_oneline(e)}"')])
            return
        except (MediaPlaneError, PortsExhausted) as e:  # no port left, no media worker running
            log.warning("%s media plane refused the call: %s", call.ids(), _oneline(e))
            self._fail(call, 503, "Media resources unavailable", [("Retry-After", "5")])
            return
        if call.ended:
            self._delete_session(session)
            return
        call.session = session
        self.by_session[session] = call
        if self._dtmf_as_info:
            self._watch_dtmf(call, session)
        to = str(_strip_na(req.to))
        headers = _carried(req, REQUEST_HEADERS)
        replaced = self._replaces(req) if req.has("Replaces") else None
        if isinstance(replaced, Leg):
            # RFC 3891 through the B2BUA: the new call goes to the peer of the replaced leg's other leg,
            # asking it to replace the dialog it has with us; its BYE of that dialog then ends the old call
            peer = replaced.call.other(replaced)
            d = peer.dialog
            draft = Request("INVITE", parse_uri(d.remote_target), [["Route", r] for r in d.route_set])
            hop = await self._hop(peer)
            targets = [hop] if hop is not None else []
            to = str(d.remote)
            value = f"{d.call_id};to-tag={d.remote_tag or ''};from-tag={d.local_tag}"
            if "early-only" in _parse_replaces(req.get("Replaces") or "")[1]:
                value += ";early-only"
            headers.append(("Replaces", value))
            log.info("%s INVITE replaces %s of %s -> %s of the same call", call.ids(), replaced.name,
                     replaced.call.id, peer.name)
        elif replaced is False:
            self._fail(call, 481, "Replaced dialog does not exist")
            return
        else:
            if req.has("Replaces"):
                headers.append(("Replaces", req.get("Replaces") or ""))  # a dialog beyond us: as it is
            draft = self._draft_invite(req)
            try:
                targets = await self.host.route_initial(draft)
            except Exception as e:  # a routing failure fails this call only
                log.info("%s no route: %s", call.ids(), e)
                targets = []
        if call.ended:
            return
        if not targets:
            self._fail(call, 480, "No route to destination")
            return
        target = targets[0]
        callee_webrtc = not a.webrtc
        host = self.host.local_address(target.transport, ":" in target.host) or self.host.local_address("udp")
        contact = self._contact(req.from_.uri, target.transport, host)
        from_ = str(_strip_na(req.from_))
        call_id, tag = self._derived_ids(req)
        dialog = Dialog.uac(call_id, from_, to, draft.uri_text, contact, cseq=req.cseq.number,
                            route_set=draft.values("Route"), local_tag=tag)
        b = Leg(call, "browser" if callee_webrtc else "legacy", callee_webrtc, False, dialog, target=target,
                initial_routes=draft.values("Route"))
        if target.flow_id is not None:
            b.flow = target  # a registered flow (a browser's WebSocket, a phone behind a NAT)
        b.creds = a.creds
        if a.webrtc and a.creds is None:
            b.relay_auth = [(h, v) for h in CREDENTIAL_HEADERS for v in req.get_all(h)]
        call.callee = b
        self._index(b)
        self._watch_flow(call, b)
        body = str(out).encode()
        b.local_sdp = body
        headers.append(("Allow", ALLOW))
        # 100rel when configured, or when the caller takes reliable provisionals: they are then relayed
        # end to end (the caller's PRACK becomes ours), else the B2BUA acknowledges them itself
        rel = self.config.enable_100rel or a.rel_supported
        headers.append(("Supported", "100rel, replaces" if rel else "replaces"))
        headers += b.relay_auth
        invite = dialog.request("INVITE", body, "application/sdp", headers, cseq=req.cseq.number)
        dialog.local_seq = req.cseq.number
        self._send_invite(b, invite)
        shown = f"[{target.host}]" if ":" in target.host else target.host
        log.info("%s INVITE -> %s %s:%s:%s", call.ids(), b.name, target.transport, shown, target.port)

    def _draft_invite(self, req: Request) -> Request:
        """The caller's Request-URI and remaining Route, for the proxy's routing to work on."""
        uri = req.uri
        if isinstance(uri, SipUri):
            uri = uri.copy()
            for name in ("impi", "ha1"):
                del_param(uri.params, name)
        draft = Request("INVITE", uri, [["Route", r] for r in req.values("Route")])
        draft.add("Call-ID", req.call_id)
        return draft

    def _derived_ids(self, req: Request) -> tuple[str, str]:
        """The callee leg's Call-ID and From tag, a keyed hash of the caller's (§8.1.1.4 allows any
        unique value). A browser answering a relayed challenge sends a new INVITE with the same
        Call-ID and From tag (§22.2); deriving ours means the legacy server sees the same dialog
        try again, as servers that bind nonces to a Call-ID require."""
        key = f"{req.call_id}\0{req.from_.tag}".encode("utf-8", "surrogateescape")
        h = hashlib.blake2s(key, key=self._secret, digest_size=16).hexdigest()
        host = self.host.local_address("udp") or self.host.local_address("tcp") or ("rtc2sip", 0)
        return f"{h[:20]}@{host[0]}", h[20:]

    def _send_invite(self, b: Leg, invite: Request) -> None:
        assert b.target is not None
        self._add_via(invite, b.target)
        ctx = TxnContext(b.call, b, "invite", request=invite)
        txn = self.host.send_request(invite, b.target, ctx)
        if txn is None:
            self._fail(b.call, 503, "Overloaded")
            return
        b.invite, b.invite_ct, b.invite_final = invite, txn, False

    # ---- responses -----------------------------------------------------------------------------

    async def _on_response(self, ctx: TxnContext, resp: Response) -> None:
        kind = ctx.kind
        if kind == "invite":
            await self._invite_response(ctx.leg, resp)
        elif kind == "reinvite":
            await self._reinvite_response(ctx, resp)
        elif kind == "relay":
            self._relay_response(ctx, resp)
        elif resp.status in (401, 407) and ctx.request is not None and not ctx.call.ended:
            self._retry_with_credentials(ctx, resp)

    async def _invite_response(self, b: Leg, resp: Response) -> None:
        call = b.call
        status = resp.status
        if status == 100:
            return
        if status < 200:
            if b.cancel_pending:
                self._send_cancel(b)
            if call.ended or call.cancelled:
                return
            b.dialog.on_response(resp)
            await self._provisional(b, resp)
            return
        b.invite_final = True
        if 200 <= status < 300:
            await self._invite_success(b, resp)
            return
        if call.ended:
            return
        if status in (401, 407) and self._retry_with_credentials(TxnContext(call, b, "invite", request=b.invite),
                                                                 resp):
            return
        a = call.other(b)
        log.info("%s %s %s from %s", call.ids(), status, resp.reason, b.name)
        if a.invite_st is not None and not a.final_sent:
            out = a.dialog.response(a.invite_st.request, status, resp.reason, headers=_carried(resp, RESPONSE_HEADERS))
            a.final_sent = True
            self._respond(a.invite_st, out)
        self._end(call, f"{status} from {b.name}", by=b)

    async def _provisional(self, b: Leg, resp: Response) -> None:
        """1xx from the callee: SDP through the media plane, then relayed to the caller. A reliable 1xx
        (RFC 3262) is relayed reliably when the caller supports 100rel, and its PRACK becomes ours on the
        callee leg; otherwise the B2BUA PRACKs the callee itself (JsSIP has no 100rel). Toward a caller
        that requires 100rel every 1xx is reliable."""
        call = b.call
        a = call.other(b)
        rseq_text = (resp.get("RSeq") or "").strip()
        reliable_in = "100rel" in resp.option_tags("Require") and rseq_text.isdigit()
        if reliable_in:
            rseq = int(rseq_text)
            if rseq <= b.last_rseq:
                return  # a retransmission: acknowledged already, or its PRACK is the caller's (§4)
            b.last_rseq = rseq
        relayed = reliable_in and a.rel_supported and a.invite_st is not None and not a.final_sent
        if reliable_in and not relayed:
            self._send_in_dialog(b, b.dialog.prack(resp), TxnContext(call, b, "prack"))
        body = b""
        if resp.body and resp.content_type == "application/sdp" and not b.early_answer:
            try:
                translated = await self._answer(call, b, resp.body)
            except SdpError as e:
                log.info("%s early SDP from %s refused: %s", call.ids(), b.name, _oneline(e))
                translated = b""
            if call.ended or call.cancelled:
                return
            b.early_answer = resp.body
            body = translated
            a.local_sdp = body
        elif b.early_answer:
            body = a.local_sdp
        if a.invite_st is None or a.final_sent:
            return
        out = a.dialog.response(a.invite_st.request, resp.status, resp.reason, body,
                                headers=[("Allow", ALLOW), *_carried(resp, RESPONSE_HEADERS)])
        if relayed or a.rel_required or (a.rel_supported and self.config.enable_100rel and body):
            self._send_reliable(a, out, resp if relayed else None)
        else:
            self._respond(a.invite_st, out)
        log.info("%s %s %s%s%s -> %s", call.ids(), resp.status, resp.reason, " with SDP" if body else "",
                 " (100rel relayed)" if relayed else "", a.name)

    # ---- reliable provisional responses toward the caller (RFC 3262 §3) -------------------------

    def _send_reliable(self, a: Leg, out: Response, callee_resp: Response | None) -> None:
        """Send ``out`` to the caller as a reliable 1xx, after the one still unacknowledged (§3);
        ``callee_resp`` is the callee's reliable 1xx that the caller's PRACK acknowledges."""
        if a.rel_pending is not None:
            a.rel_queue.append((out, callee_resp))
            return
        a.rseq_out = a.rseq_out + 1 if a.rseq_out else int.from_bytes(os.urandom(2), "big") + 1
        out.set("Require", "100rel")
        out.set("RSeq", str(a.rseq_out))
        a.rel_pending = (a.rseq_out, out, callee_resp)
        a.rel_interval = T1
        assert a.invite_st is not None
        self._respond(a.invite_st, out)
        self._arm_reliable(a)

    def _arm_reliable(self, a: Leg) -> None:
        def fire() -> None:
            a.rel_timer = None
            pending = a.rel_pending
            if pending is None or a.call.ended or (a.final_sent and a.held_final is None) or a.invite_st is None:
                return
            if a.rel_interval >= 32 * T1:  # 64*T1 in all without a PRACK: §3 says reject with a 5xx
                log.info("%s no PRACK from %s for RSeq %d", a.call.ids(), a.name, pending[0])
                if a.held_final is not None:
                    a.held_final, a.final_sent = None, False
                self._fail(a.call, 504, "No PRACK")
                return
            a.rel_interval *= 2
            self._respond(a.invite_st, pending[1])
            self._arm_reliable(a)

        a.rel_timer = self.host.call_later(a.rel_interval, fire)

    def _stop_reliable(self, a: Leg) -> None:
        if a.rel_timer is not None:
            a.rel_timer.cancel()
            a.rel_timer = None
        a.rel_pending = None

    def _on_prack(self, leg: Leg, req: Request, st: ServerTransaction) -> None:
        """The caller's PRACK (§4): it matches our outstanding reliable 1xx by ``RAck``, else 481. When
        that 1xx relayed a reliable one of the callee, the PRACK goes on as ours on the callee leg and
        its answer comes back; otherwise we answer it."""
        call = leg.call
        pending = leg.rel_pending
        rack = (req.get("RAck") or "").split()
        invite_cseq = leg.invite_st.request.cseq.number if leg.invite_st is not None else -1
        if (pending is None or len(rack) != 3 or not rack[0].isdigit() or int(rack[0]) != pending[0]
                or rack[1] != str(invite_cseq) or rack[2].upper() != "INVITE"):
            self._respond(st, leg.dialog.response(req, 481, "No matching reliable provisional response"))
            return
        self._stop_reliable(leg)
        callee_resp = pending[2]
        other = call.other(leg)
        if callee_resp is not None and other.dialog.state is not State.TERMINATED:
            prack = other.dialog.prack(callee_resp)
            self._send_in_dialog(other, prack, TxnContext(call, other, "relay", st, prack))
            log.info("%s PRACK %s -> %s (RSeq %s)", call.ids(), leg.name, other.name, prack.get("RAck"))
        else:
            self._respond(st, leg.dialog.response(req, 200))
        if leg.held_final is not None and leg.invite_st is not None:
            final, leg.held_final = leg.held_final, None
            leg.rel_queue.clear()
            self._respond(leg.invite_st, final)
            log.info("%s 200 OK -> %s: call up", call.ids(), leg.name)
        elif leg.rel_queue and not leg.final_sent and leg.invite_st is not None:
            out, resp = leg.rel_queue.popleft()
            self._send_reliable(leg, out, resp)

    async def _invite_success(self, b: Leg, resp: Response) -> None:
        """2xx: ACK at once (the offer was in our INVITE, the ACK carries nothing, §13.2.2.4), then the
        answer through the media plane, then 2xx to the caller."""
        call = b.call
        if not b.dialog.on_response(resp):
            # another UAS answered too (forking): acknowledge and end that dialog (§13.2.2.4)
            other = b.dialog.fork(resp)
            self._ack_and_bye(b, other)
            return
        if b.ack is not None:
            self._send_ack(b)  # a retransmission of the 2xx: our ACK got lost
            return
        b.ack = b.dialog.ack(headers=_credentials(b.invite))
        b.ack_target = await self._hop(b)
        if b.ack_target is not None:
            self._add_via(b.ack, b.ack_target)
        self._send_ack(b)
        if call.ended or call.cancelled:
            self._bye(b, "call already ended")
            self._release(call)
            return
        a = call.other(b)
        try:
            if b.early_answer and (not resp.body or resp.body == b.early_answer):
                body = a.local_sdp
            elif resp.body and resp.content_type == "application/sdp":
                body = await self._answer(call, b, resp.body)
            else:
                raise SdpError("2xx without the SDP answer")
        except SdpError as e:
            log.info("%s answer from %s refused: %s", call.ids(), b.name, _oneline(e))
            self._bye(b, 'SIP;cause=488;text="Not Acceptable Here"')
            self._fail(call, 488, None)
            return
        if call.ended:
            return
        a.local_sdp = body
        assert a.invite_st is not None
        if a.final_sent:
            return
        out = a.dialog.response(a.invite_st.request, 200, None, body,
                                headers=[("Allow", ALLOW), *_carried(resp, RESPONSE_HEADERS)])
        a.final_sent = True
        if a.rel_pending is not None and a.rel_pending[1].body:
            # RFC 3262 §3: no 2xx before the PRACK of a reliable 1xx that carried SDP
            a.held_final = out
            log.info("%s 200 OK for %s held until its PRACK", call.ids(), a.name)
            return
        self._respond(a.invite_st, out)
        log.info("%s 200 OK -> %s: call up", call.ids(), a.name)

    async def _answer(self, call: Call, answerer: Leg, body: bytes) -> bytes:
        """The SDP answer of ``answerer`` translated for the other leg (which made the offer)."""
        assert call.session is not None
        sdp = SessionDescription.parse(body)
        if answerer.webrtc:
            out = await self.media.answer_from_webrtc(call.session, sdp)
        else:
            out = await self.media.answer_from_legacy(call.session, sdp)
        return str(out).encode()

    def _retry_with_credentials(self, ctx: TxnContext, resp: Response) -> bool:
        """401/407 on the legacy leg: answer with the browser's ``impi``/``ha1`` (webrtc2sip), at most
        twice per request (a second challenge means the credentials are wrong, or the nonce stale).
        RFC 3261 §22.2: same Call-ID, From tag, Request-URI; new CSeq and branch."""
        leg, req = ctx.leg, ctx.request
        creds = leg.creds
        if creds is None or creds.ha1 is None or req is None or leg.webrtc or leg.auth_tries >= 2:
            return False
        header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        algs = ("MD5", "MD5-sess") if len(creds.ha1) == 32 else ("SHA-256", "SHA-256-sess")
        challenge = select_challenge(resp.get_all(header), algs)
        if challenge is None:
            return False
        username = creds.impi or _user_of(req.from_.uri) or ""
        nc = leg.nonce_counts.get(challenge.nonce, 0) + 1
        try:
            value = answer_challenge(challenge, req.method, req.uri_text, username, ha1=creds.ha1, nc=nc,
                                     body=req.body)
        except (DigestError, ValueError) as e:
            log.info("%s cannot answer the challenge of %s: %s", ctx.call.ids(), leg.name, e)
            return False
        leg.nonce_counts = {challenge.nonce: nc}
        leg.auth_tries += 1
        retry = req.copy()
        retry.remove("Via")
        retry.remove(answer)
        retry.add(answer, value)
        leg.dialog.local_seq += 1
        retry.set("CSeq", f"{leg.dialog.local_seq} {req.method}")
        if req.method == "INVITE":
            leg.dialog.invite_seq = leg.dialog.local_seq
            # the challenge ended the early dialogs of the first try (§12.1.2)
            leg.dialog.remote_tag = None
            leg.dialog.state = State.INIT
            leg.dialog.route_set = list(leg.initial_routes)
            self._send_invite(leg, retry)
        else:
            self._send_in_dialog(leg, retry, TxnContext(ctx.call, leg, ctx.kind, ctx.server, retry))
        log.info("%s %s %s answered with the client's ha1 (%s %s)", ctx.call.ids(), resp.status, resp.reason,
                 req.method, answer)
        return True

    def _stray_response(self, resp: Response) -> bool:
        """A 2xx retransmission after our INVITE transaction ended (RFC 6026 §7.2): ACK it again."""
        if resp.cseq.method != "INVITE" or not 200 <= resp.status < 300:
            return False
        leg = self.dialogs.get((resp.call_id, resp.from_.tag or ""))
        if leg is None or leg.is_caller:
            return False
        if leg.ack is not None and resp.to.tag == leg.dialog.remote_tag:
            self._send_ack(leg)
        return True

    # ---- requests inside a call ----------------------------------------------------------------

    async def _on_ack(self, leg: Leg, req: Request) -> None:
        """The ACK of our 2xx (§13.3.1.4). The callee leg was acknowledged when its 2xx came, and an
        offer can only ride in it after an offerless INVITE, whose answer we never asked for."""
        log.debug("%s ACK from %s", leg.call.ids(), leg.name)

    async def _on_in_dialog(self, leg: Leg, req: Request, st: ServerTransaction) -> None:
        call = leg.call
        method = req.method
        if call.ended:
            self._respond(st, make_response(req, 481))
            return
        if method == "BYE":
            self._respond(st, leg.dialog.response(req, 200))
            log.info("%s BYE from %s", call.ids(), leg.name)
            self._end(call, f"BYE from {leg.name}", by=leg)
            return
        if method == "PRACK":
            self._on_prack(leg, req, st)
            return
        other = call.other(leg)
        if method in ("INVITE", "UPDATE") and (req.body or method == "INVITE"):
            await self._offer_in_dialog(leg, req, st)
            return
        if other.dialog.state is not State.CONFIRMED and not (other.dialog.state is State.EARLY and method == "UPDATE"):
            self._respond(st, leg.dialog.response(req, 491 if method == "INVITE" else 481))
            return
        if method == "INFO" and leg.webrtc and not self._dtmf_as_info and await self._info_dtmf(leg, req, st):
            return
        if method == "INFO" and not leg.webrtc and self._info_picture_update(leg, req, st):
            return
        self._relay_request(leg, req, st)

    @property
    def _dtmf_as_info(self) -> bool:
        """``dtmf-type`` info, or webrtc2sip's rfc2833 (which it relayed as SIP INFO): digits stay
        SIP INFO toward the legacy side, and the legacy side's RFC 4733 events reach the browser as INFO."""
        return self.config.dtmf_type in ("info", "rfc2833")

    def _watch_dtmf(self, call: Call, session: str) -> None:
        """RFC 4733 events from the legacy leg, seen on the media plane's tap (the sink is closed with
        the session), become INFO toward the browser. A plane without taps (unit tests' fake): none."""
        attach = getattr(self.media, "attach", None)
        if attach is None:
            return

        def digit(d: str, duration_ms: int) -> None:
            self._post(call, lambda: self._send_info_dtmf(call, d, duration_ms))

        try:
            attach(session, DtmfSink(digit))
        except Exception as e:  # the session is gone already: the call is ending
            log.info("%s no DTMF watch: %s", call.ids(), e)

    async def _send_info_dtmf(self, call: Call, digit: str, duration_ms: int) -> None:
        leg = call.browser
        if leg is None or leg.dialog.state is not State.CONFIRMED:
            return
        req = leg.dialog.request("INFO", dtmf_relay_body(digit, duration_ms), "application/dtmf-relay")
        self._send_in_dialog(leg, req, TxnContext(call, leg, "info", request=req))
        log.info("%s RFC 4733 DTMF %s (%d ms) from %s -> INFO toward %s", call.ids(), digit, duration_ms,
                 call.other(leg).name, leg.name)

    async def _info_dtmf(self, leg: Leg, req: Request, st: ServerTransaction) -> bool:
        """A browser's INFO ``application/dtmf-relay`` (``Signal=5``, ``Duration=160``) played toward the
        legacy side as RFC 4733 events (``dtmf-type`` rfc4733/rfc2833) and answered 200 here. False
        (relay the INFO as it is) for other INFOs, or when the legacy leg has no telephone-event."""
        call = leg.call
        if req.content_type != "application/dtmf-relay" or call.session is None:
            return False
        fields = {}
        for line in req.body.decode("utf-8", "replace").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                fields[name.strip().lower()] = value.strip()
        digit = fields.get("signal", "")
        duration = fields.get("duration", "")
        if len(digit) != 1 or digit.upper() not in "0123456789*#ABCD":
            return False
        try:
            sent = await self.media.send_dtmf(call.session, digit, int(duration) if duration.isdigit() else 100)
        except Exception as e:  # the session went away meanwhile: relay, the peer may take INFO
            log.info("%s DTMF %s not played: %s", call.ids(), digit, e)
            return False
        if not sent:
            return False
        self._respond(st, leg.dialog.response(req, 200))
        log.info("%s INFO DTMF %s from %s -> RFC 4733 toward %s", call.ids(), digit, leg.name, call.other(leg).name)
        return True

    def _info_picture_update(self, leg: Leg, req: Request, st: ServerTransaction) -> bool:
        """A legacy phone's INFO ``application/media_control+xml`` with ``picture_fast_update``
        (RFC 5168 §3): its decoder wants a keyframe. The browser knows no such INFO: the media plane
        asks it with a PLI (or asks the transcoder's encoder) and the INFO is answered 200 here."""
        call = leg.call
        if req.content_type != "application/media_control+xml" or call.session is None:
            return False
        if b"picture_fast_update" not in req.body:
            return False
        request = getattr(self.media, "request_keyframe", None)
        try:
            done = bool(request(call.session, from_webrtc=True)) if request is not None else False
        except Exception as e:  # the session went away meanwhile
            log.info("%s picture_fast_update not passed on: %s", call.ids(), e)
            done = False
        self._respond(st, leg.dialog.response(req, 200 if done else 415))
        log.info("%s INFO picture_fast_update from %s -> %s", call.ids(), leg.name,
                 "keyframe request" if done else "no video")
        return True

    def _keyframe_to_legacy(self, session: str, call_id: str) -> None:
        """The media plane asked the legacy peer for a keyframe over RTCP; phones that ignore RTCP
        feedback (plain RTP/AVP) get the RFC 5168 INFO as well, at most one a second per call."""
        call = self.by_session.get(session)
        if call is None or call.ended:
            return
        leg = next((leg for leg in call.legs if not leg.webrtc), None)
        if leg is None or leg.dialog.state is not State.CONFIRMED:
            return
        now = time.monotonic()
        if now - call.last_picture_update < 1.0:
            return
        call.last_picture_update = now
        info = leg.dialog.request("INFO", PICTURE_FAST_UPDATE, "application/media_control+xml")
        self._send_in_dialog(leg, info, TxnContext(call, leg, "info", request=info))
        log.info("%s INFO picture_fast_update -> %s", call.ids(), leg.name)

    async def _offer_in_dialog(self, leg: Leg, req: Request, st: ServerTransaction) -> None:
        """re-INVITE or UPDATE with an offer (hold, unhold, ICE restart): through the media plane's
        ``update``, then to the other leg; its answer comes back through ``answer_from_*``."""
        call = leg.call
        other = call.other(leg)
        if leg.reinvite_st is not None or other.reinvite_st is not None or other.reinvite_out or leg.reinvite_out:
            self._respond(st, leg.dialog.response(req, 491))  # §14.2: one offer at a time
            return
        if not req.body:
            # an offerless re-INVITE (a session refresh): our last SDP is the offer (RFC 3264 §8)
            self._respond(st, leg.dialog.response(req, 200, None, leg.local_sdp, headers=[("Allow", ALLOW)]))
            return
        # RFC 3311 §5.1: an UPDATE may make a new offer in an early dialog once the first offer/answer
        # is done (the callee's early SDP answer); a re-INVITE only in a confirmed one
        early_ok = (req.method == "UPDATE" and other.dialog.state is State.EARLY and call.callee is not None
                    and bool(call.callee.early_answer))
        if call.session is None or (other.dialog.state is not State.CONFIRMED and not early_ok):
            self._respond(st, leg.dialog.response(req, 491))
            return
        try:
            offer = await self.media.update(call.session, SessionDescription.parse(req.body), leg.webrtc)
        except SdpError as e:
            warning = f'399 rtc2sip "{_oneline(e)}"'
            self._respond(st, leg.dialog.response(req, 488, None, headers=[("Warning", warning)]))
            return
        except Exception as e:  # the media plane refuses this offer (e.g. one still pending): keep the call
            log.info("%s %s from %s refused by the media plane: %s", call.ids(), req.method, leg.name, e)
            self._respond(st, leg.dialog.response(req, 500, None, headers=[("Retry-After", "1")]))
            return
        if call.ended:
            self._respond(st, make_response(req, 481))
            return
        body = str(offer).encode()
        leg.reinvite_st = st
        other.reinvite_out = True
        other.local_sdp = body
        out = other.dialog.request(req.method, body, "application/sdp", _carried(req, REQUEST_HEADERS))
        self._send_in_dialog(other, out, TxnContext(call, other, "reinvite", st, out))
        log.info("%s %s with offer %s -> %s (%s)", call.ids(), req.method, leg.name, other.name, _direction(req.body))

    async def _reinvite_response(self, ctx: TxnContext, resp: Response) -> None:
        other, st = ctx.leg, ctx.server
        call = ctx.call
        if resp.status < 200 or st is None:
            return
        origin = call.other(other)
        other.reinvite_out = False
        method = st.request.method
        if 200 <= resp.status < 300:
            other.dialog.refresh_from_response(resp)
            if method == "INVITE":
                ack = other.dialog.ack(headers=_credentials(ctx.request))
                target = await self._hop(other)
                if target is not None:
                    self._add_via(ack, target)
                    self.host.send_stateless(ack, target)
            if call.ended:
                return
            try:
                body = await self._answer(call, other, resp.body)
            except SdpError as e:
                origin.reinvite_st = None
                self._respond(st, origin.dialog.response(st.request, 488, None,
                                                         headers=[("Warning", f'399 rtc2sip "{_oneline(e)}"')]))
                return
            origin.local_sdp = body
            origin.reinvite_st = None  # the ACK may still come: a new offer in between is the peer's glare
            self._respond(st, origin.dialog.response(st.request, 200, None, body, headers=[("Allow", ALLOW)]))
            log.info("%s %s answered by %s", call.ids(), method, other.name)
            return
        if resp.status in (401, 407) and self._retry_with_credentials(ctx, resp):
            return
        origin.reinvite_st = None
        self._respond(st, origin.dialog.response(st.request, resp.status, resp.reason,
                                                 headers=_carried(resp, RESPONSE_HEADERS)))
        if resp.status in (408, 481):
            self._end(call, f"{resp.status} to {method}", by=other)  # §12.2.1.2: the dialog is gone

    def _relay_request(self, leg: Leg, req: Request, st: ServerTransaction) -> None:
        """INFO, MESSAGE, NOTIFY, OPTIONS, REFER, UPDATE without offer: the same request on the other
        leg, its final response back (REFER's Refer-To rewritten, RFC 3891 §3 / RFC 3515 §2.1)."""
        call = leg.call
        other = call.other(leg)
        headers = _carried(req, REQUEST_HEADERS)
        refer_to = req.get("Refer-To")
        if refer_to is not None:
            try:
                headers.append(("Refer-To", rewrite_refer_to(refer_to, self._replaced_dialog)))
            except SipParseError:
                self._respond(st, leg.dialog.response(req, 400, "Bad Refer-To"))
                return
        if req.method == "NOTIFY" and leg.refer_ids:
            headers = [(n, _refer_event(v, leg.refer_ids) if n == "Event" else v) for n, v in headers]
        out = other.dialog.request(req.method, req.body, req.get("Content-Type"), headers)
        if req.method == "REFER":
            # RFC 3515 §2.4.6: the NOTIFYs name the subscription by the REFER's CSeq (Event: refer;id=N),
            # which differs on each leg
            other.refer_ids[out.cseq.number] = req.cseq.number
        self._send_in_dialog(other, out, TxnContext(call, other, "relay", st, out))
        log.info("%s %s %s -> %s", call.ids(), req.method, leg.name, other.name)

    def _relay_response(self, ctx: TxnContext, resp: Response) -> None:
        st = ctx.server
        if st is None or resp.status < 200:
            return
        if resp.status in (401, 407) and self._retry_with_credentials(ctx, resp):
            return
        origin = ctx.call.other(ctx.leg)
        ctype = resp.get("Content-Type")
        out = origin.dialog.response(st.request, resp.status, resp.reason, resp.body if ctype else b"", ctype,
                                     headers=_carried(resp, RESPONSE_HEADERS))
        self._respond(st, out)

    def _replaced_dialog(self, call_id: str, to_tag: str, from_tag: str) -> tuple[str, str, str, str] | None:
        """RFC 3891 §3: the dialog a Replaces names on one of our legs (to-tag = our local tag) ->
        the other leg of that call: (Call-ID, to-tag, from-tag, remote target) as its peer sees them."""
        leg = self.dialogs.get((call_id, to_tag))
        if leg is None or leg.dialog.remote_tag != from_tag:
            return None
        other = leg.call.other(leg)
        d = other.dialog
        # a browser's Contact (…@….invalid;transport=ws) routes nowhere: its address of record does
        target = str(d.remote.uri) if other.webrtc else d.remote_target
        return d.call_id, d.remote_tag or "", d.local_tag, target

    def _replaces(self, req: Request) -> Leg | bool | None:
        """The leg an INVITE's ``Replaces`` (RFC 3891 §3) asks *us* to replace: its to-tag is our local
        tag. None when it names no dialog of ours, or names one as our peer knows it (to-tag = the
        peer's tag: the INVITE is for that peer and passes, e.g. after a REFER we rewrote); False when
        it names one of our Call-IDs but no live dialog (481, §6.1)."""
        value = req.get("Replaces")
        if value is None:
            return None
        call_id, params = _parse_replaces(value)
        if call_id not in self.call_ids:
            return None
        to_tag, from_tag = params.get("to-tag", ""), params.get("from-tag", "")
        leg = self.dialogs.get((call_id, to_tag))
        if leg is not None and leg.dialog.remote_tag == from_tag and not leg.call.ended:
            if "early-only" in params and leg.dialog.state is State.CONFIRMED:
                return False  # §6.1: early-only and already confirmed (RFC 3891 says 486; 481 is as safe)
            return leg
        peer = self.dialogs.get((call_id, from_tag))
        if peer is not None and peer.dialog.remote_tag == to_tag:
            return None
        return False

    # ---- CANCEL and the end of a call ------------------------------------------------------------

    async def _on_cancel(self, call: Call) -> None:
        """§9.2: the caller gave up. 487 to it, CANCEL on the callee leg (§9.1: once a provisional
        came); a 2xx that crosses the CANCEL is acknowledged and ended with BYE."""
        a = call.caller
        if call.ended or a is None or a.final_sent:
            return
        log.info("%s CANCEL from %s", call.ids(), a.name)
        call.cancelled = True
        self._fail(call, 487, None)

    def _end(self, call: Call, reason: str, by: Leg | None, status: int = 480) -> None:
        """End both legs (except ``by``, which ended itself) and release everything. Idempotent."""
        if call.ended:
            return
        call.ended = True
        for observer in self.observers:
            try:
                observer(call, reason)
            except Exception:
                log.exception("%s call observer failed", call.ids())
        for leg in call.legs:
            if leg is by:
                continue
            try:
                self._end_leg(leg, reason, status)
            except (SipParseError, ValueError, AssertionError) as e:
                log.info("%s could not end %s: %s", call.ids(), leg.name, e)
        log.info("%s ended: %s (%.1f s)", call.ids(), reason, time.monotonic() - call.started)
        self._release(call)

    def _end_leg(self, leg: Leg, reason: str, status: int) -> None:
        text = reason.replace('"', "'")
        if leg.is_caller:
            if leg.invite_st is not None and not leg.final_sent:
                leg.final_sent = True
                self._respond(leg.invite_st, leg.dialog.response(leg.invite_st.request, status, None,
                                                                  headers=[("Reason", f'SIP;text="{text}"')]))
            elif leg.dialog.state is State.CONFIRMED:
                self._bye(leg, f'SIP;text="{text}"')
            return
        if leg.invite is not None and not leg.invite_final:
            self._send_cancel(leg)
        elif leg.dialog.state is State.CONFIRMED:
            self._bye(leg, f'SIP;text="{text}"')

    def _send_cancel(self, b: Leg) -> None:
        txn = b.invite_ct
        if b.invite is None or b.invite_final:
            return
        if not isinstance(txn, InviteClientTransaction) or not txn.cancellable:
            b.cancel_pending = True  # §9.1: not before a provisional response
            return
        b.cancel_pending = False
        assert b.target is not None
        cancel = make_cancel(b.invite)
        self.host.send_request(cancel, b.target, TxnContext(b.call, b, "cancel"))
        log.info("%s CANCEL -> %s", b.call.ids(), b.name)

    def _bye(self, leg: Leg, reason: str | None) -> None:
        if leg.dialog.state is State.TERMINATED:
            return
        bye = leg.dialog.request("BYE", headers=[("Reason", reason)] if reason else None)
        leg.dialog.terminate()
        self._send_in_dialog(leg, bye, TxnContext(leg.call, leg, "bye", request=bye))
        log.info("%s BYE -> %s", leg.call.ids(), leg.name)

    def _ack_and_bye(self, b: Leg, dialog: Dialog) -> None:
        ack = dialog.ack()
        bye = dialog.request("BYE")
        dialog.terminate()

        async def send() -> None:
            target = await self._resolve_first(dialog.target_uri()) or b.target
            if target is None:
                return
            self._add_via(ack, target)
            self.host.send_stateless(ack, target)
            self._add_via(bye, target)
            self.host.send_request(bye, target, TxnContext(b.call, b, "bye"))

        self.host.spawn(send())

    def _fail(self, call: Call, status: int, reason: str | None,
              headers: list[tuple[str, str]] | None = None) -> None:
        a = call.caller
        if a is not None and a.invite_st is not None and not a.final_sent:
            a.final_sent = True
            self._respond(a.invite_st, a.dialog.response(a.invite_st.request, status, reason, headers=headers))
        self._end(call, f"{status} {reason or ''}".strip(), by=a)

    def _release(self, call: Call) -> None:
        """Every table entry of the call, and its media session (issue 3 item 5)."""
        call.ended = True
        self.calls.pop(call.id, None)
        for leg in call.legs:
            self._stop_reliable(leg)
            leg.rel_queue.clear()
            key = leg.dialog.key
            if self.dialogs.get(key) is leg:
                del self.dialogs[key]
                n = self.call_ids.get(key[0], 0) - 1
                if n > 0:
                    self.call_ids[key[0]] = n
                else:
                    self.call_ids.pop(key[0], None)
            if leg.flow is not None and leg.flow.flow_id is not None:
                calls = self.by_flow.get(leg.flow.flow_id)
                if calls is not None:
                    calls.discard(call)
                    if not calls:
                        del self.by_flow[leg.flow.flow_id]
        if call.session is not None:
            session, call.session = call.session, None
            if self.by_session.get(session) is call:
                del self.by_session[session]
            self._delete_session(session)

    def _delete_session(self, session: str) -> None:
        async def delete() -> None:
            try:
                await self.media.delete(session)
            except Exception:
                log.exception("media session %s: delete failed", session)

        self.host.spawn(delete())

    # ---- sending -------------------------------------------------------------------------------

    def _respond(self, st: ServerTransaction, resp: Response) -> None:
        if st.terminated:
            return
        try:
            self.host.send_response(st, resp)
        except Exception as e:  # a transaction in the wrong state (a late response): log, go on
            log.info("call-id=%s response %s not sent: %s", resp.get("Call-ID"), resp.status, e)

    def _send_in_dialog(self, leg: Leg, req: Request, ctx: TxnContext) -> None:
        async def send() -> None:
            target = await self._hop(leg)
            if target is None:
                log.info("%s no route to %s for %s", leg.call.ids(), leg.name, req.method)
                if ctx.server is not None:
                    origin = leg.call.other(leg)
                    self._respond(ctx.server, origin.dialog.response(ctx.server.request, 480))
                return
            self._add_via(req, target)
            ctx.request = req
            if self.host.send_request(req, target, ctx) is None and ctx.server is not None:
                self._respond(ctx.server, make_response(ctx.server.request, 503))

        if leg.flow is not None and leg.flow.flow_id is not None:
            # no DNS for a flow: send now, so that requests keep their order on the connection
            target = leg.flow
            self._add_via(req, target)
            ctx.request = req
            if self.host.send_request(req, target, ctx) is None and ctx.server is not None:
                self._respond(ctx.server, make_response(ctx.server.request, 503))
            return
        self.host.spawn(send())

    def _send_ack(self, b: Leg) -> None:
        if b.ack is not None and b.ack_target is not None:
            self.host.send_stateless(b.ack, b.ack_target)

    async def _hop(self, leg: Leg) -> Target | None:
        """Where the leg's in-dialog requests go: its connection, else its next hop (§12.2.1.1, RFC 3263)."""
        if leg.flow is not None and leg.flow.flow_id is not None:
            return leg.flow if self.host.flow_alive(leg.flow.flow_id) else None
        nxt = leg.dialog.next_hop()
        if leg.hop is not None and leg.hop[0] == nxt:
            return leg.hop[1][0] if leg.hop[1] else None
        targets = await self._resolve_all(leg.dialog.target_uri())
        if not targets and leg.target is not None:
            targets = [leg.target]
        leg.hop = (nxt, targets)
        return targets[0] if targets else None

    async def _resolve_all(self, uri: SipUri | None) -> list[Target]:
        if uri is None:
            return []
        try:
            return await self.host.resolve(uri)
        except Exception as e:
            log.info("cannot resolve %s: %s", _safe_uri(uri), e)
            return []

    async def _resolve_first(self, uri: SipUri | None) -> Target | None:
        targets = await self._resolve_all(uri)
        return targets[0] if targets else None

    def _add_via(self, req: Request, target: Target) -> None:
        local = self.host.local_address(target.transport, ":" in target.host) or self.host.local_address("udp")
        host, port = local or ("127.0.0.1", 5060)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        via = f"SIP/2.0/{target.transport.upper()} {host}:{port};branch={self.host.new_branch()}"
        if target.transport == "udp":
            via += ";rport"
        req.remove("Via")
        req.add("Via", via, top=True)

    def _contact(self, peer_uri: object, transport: str, local: tuple[str, int] | None) -> str:
        """Our Contact on one leg: an address of ours on the leg's transport, marked as the B2BUA's."""
        host, port = local or ("127.0.0.1", 5060)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        user = _user_of(peer_uri) or "rtc2sip"
        uri = SipUri("sip", quote(user, safe="-_.!~*'()&=+$,;?/"), None, host, port, [])
        set_param(uri.params, "transport", transport)
        set_param(uri.params, B2B_PARAM, None)
        return f"<{uri}>"

    # ---- bookkeeping ---------------------------------------------------------------------------

    def _index(self, leg: Leg) -> None:
        key = leg.dialog.key
        self.dialogs[key] = leg
        self.call_ids[key[0]] = self.call_ids.get(key[0], 0) + 1

    def _watch_flow(self, call: Call, leg: Leg) -> None:
        if leg.flow is not None and leg.flow.flow_id is not None:
            self.by_flow.setdefault(leg.flow.flow_id, set()).add(call)

    def _post(self, call: Call, job: Callable[[], Awaitable[None]], force: bool = False) -> None:
        """Queue an event of ``call``: one at a time, in arrival order."""
        if call.ended and not force:
            return
        call.jobs.append(job)
        if not call.running:
            call.running = True
            self.host.spawn(self._work(call))

    async def _work(self, call: Call) -> None:
        try:
            while call.jobs:
                job = call.jobs.popleft()
                try:
                    await job()
                except Exception:
                    log.exception("%s internal error", call.ids())
                    self._fail(call, 500, "Internal error")
        finally:
            call.running = False


# ---- pure helpers ----------------------------------------------------------------------------------


def _tag() -> str:
    return os.urandom(6).hex()


def _oneline(e: Exception) -> str:
    return str(e).replace("\r", " ").replace("\n", " ").replace('"', "'")[:120]


def _user_of(uri: object) -> str | None:
    return uri.user if isinstance(uri, SipUri) else None


def _safe_uri(uri: object) -> str:
    """A URI for a log line: without the client's parameters (ha1 is never logged)."""
    if isinstance(uri, SipUri):
        u = uri.copy()
        for name in CLIENT_PARAMS:
            del_param(u.params, name)
        return str(u)
    return str(uri)


def _strip_na(na: NameAddr) -> NameAddr:
    """From/To for the other leg: no tag, no client parameters."""
    out = parse_name_addr(str(na), allow_star=False)
    out.params = [p for p in out.params if p[0].lower() not in ("tag", *CLIENT_PARAMS)]
    if isinstance(out.uri, SipUri):
        out.uri = _strip_uri(out.uri)
    return out


def _strip_uri(uri: SipUri) -> SipUri:
    u = uri.copy()
    for name in CLIENT_PARAMS:
        del_param(u.params, name)
    return u


def _carried(msg: Request | Response, allowed: frozenset[str]) -> list[tuple[str, str]]:
    return [(h[0], h[1]) for h in msg.headers if h[0] in allowed]


def _credentials(req: Request | None) -> list[tuple[str, str]]:
    """§22.4 / §13.2.2.4: the ACK of a 2xx carries the credentials of its INVITE."""
    if req is None:
        return []
    return [(h, v) for h in CREDENTIAL_HEADERS for v in req.get_all(h)]


def _refer_event(value: str, ids: dict[int, int]) -> str:
    """``Event: refer;id=N`` of a NOTIFY with N, our REFER's CSeq on this leg, turned into the CSeq of
    the REFER it relays (RFC 3515 §2.4.6); other Event values pass unchanged."""
    event, *params = [p.strip() for p in value.split(";")]
    if event.lower() != "refer":
        return value
    out = [event]
    for param in params:
        name, sep, number = param.partition("=")
        if name.strip().lower() == "id" and sep and number.strip().isdigit() and int(number) in ids:
            param = f"id={ids[int(number)]}"
        out.append(param)
    return ";".join(out)


def _parse_replaces(value: str) -> tuple[str, dict[str, str]]:
    """``Replaces: call-id;to-tag=…;from-tag=…[;early-only]`` (RFC 3891 §6.1)."""
    call_id, *params = value.split(";")
    return call_id.strip(), {k.strip().lower(): v.strip() for k, _, v in (x.partition("=") for x in params)}


def _direction(body: bytes) -> str:
    for d in (b"a=sendonly", b"a=recvonly", b"a=inactive"):
        if d in body:
            return d[2:].decode()
    return "sendrecv"


def rewrite_refer_to(value: str, lookup: Callable[[str, str, str], tuple[str, str, str, str] | None]) -> str:
    """An attended transfer's Refer-To (RFC 3515 §2.1, RFC 3891 §3) rewritten for the other leg.

    ``Replaces`` names a dialog of the REFER's sender with us; the party that will send the INVITE
    with Replaces only knows the *other* leg of that call. ``lookup(call_id, to_tag, from_tag)`` gives
    that leg's (Call-ID, to-tag, from-tag, remote target); the URI becomes the remote target, since the
    sender's URI is our own Contact. A blind transfer (no Replaces) passes unchanged.
    """
    na = parse_name_addr(value, allow_star=False)
    uri = na.uri
    if not isinstance(uri, SipUri) or not uri.headers:
        return value
    fields = uri.header_fields()
    idx = next((i for i, (n, _) in enumerate(fields) if n.lower() == "replaces"), None)
    if idx is None:
        return value
    call_id, *params = fields[idx][1].split(";")
    p = {k.strip().lower(): v.strip() for k, _, v in (x.partition("=") for x in params)}
    found = lookup(call_id.strip(), p.get("to-tag", ""), p.get("from-tag", ""))
    if found is None:
        return value
    new_call_id, to_tag, from_tag, target = found
    replaces = f"{new_call_id};to-tag={to_tag};from-tag={from_tag}"
    if "early-only" in p:
        replaces += ";early-only"
    fields[idx] = ("Replaces", replaces)
    parsed = parse_uri(target)
    new_uri = parsed.copy() if isinstance(parsed, SipUri) else uri.copy()
    new_uri.headers = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in fields)
    na.uri = new_uri
    return str(na)


# ---- the proxy as a Host ----------------------------------------------------------------------------


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
        from ..proxy.locate import locate
        from ..proxy.server import SUPPORTED_TRANSPORTS

        found = self.p._numeric_targets(uri)
        if found is not None:
            return found
        return await locate(uri.host, uri.port, uri.transport, uri.scheme == "sips", self.p.resolver,
                            supported=SUPPORTED_TRANSPORTS)

"""The RTCWeb Breaker's signalling: a back-to-back user agent (RFC 3261 §6 "B2BUA", RFC 7092 §3.1).

A broken call has two legs, each a full SIP dialog of its own (§12): its own Call-ID, tags, CSeq and
route set. The *caller* leg is the UAS side (it received the INVITE), the *callee* leg the UAC side
(the B2BUA sends the INVITE). One leg is a WebRTC endpoint (a browser, usually on a WebSocket flow), the
other a legacy one; the media plane (:class:`.host.MediaPlane`) translates every SDP between them.

The B2BUA lives inside the proxy and borrows its machinery through :class:`.host.Host`: the transaction layer
(client and server transactions, their timers), the transports and the routing of new requests (the
location service, an upstream proxy, RFC 3263). The proxy hands over what belongs to a broken call:

- :meth:`B2bua.on_request` first, for every request: requests inside the B2BUA's dialogs (matched by
  Call-ID and To tag, §12.2.2), the ACK of its 2xx, CANCELs of the INVITEs it answers;
- :meth:`B2bua.should_break` then :meth:`B2bua.handle_invite` for a new INVITE;
- :meth:`B2bua.on_response` and :meth:`B2bua.on_transaction_failed` for its client transactions (their
  ``context`` is the B2BUA's), and :meth:`B2bua.on_flow_closed` when a connection ends.

Events of one call run one after the other (a per-call job queue): the media plane is asynchronous, and
a 200 must never overtake the 183 whose SDP it repeats. Whatever ends a call (BYE, CANCEL, a failure,
the WebSocket closed, the media plane's failure callback) goes through :meth:`.core.B2buaCore.end`, which
ends the other leg and releases every table entry and the media session.

This module is the thin part that takes the proxy's hooks; the rest is in :mod:`.call` (the model),
:mod:`.core` (tables, sending, ending), :mod:`.invite` (set-up and offer/answer), :mod:`.reliable`
(RFC 3262), :mod:`.in_dialog` (requests mapped between the dialogs), :mod:`.info` (DTMF and RFC 5168),
:mod:`.refer` (RFC 3515, RFC 3891) and :mod:`.auth` (§22, RFC 7616).
"""


from __future__ import annotations

import logging
from functools import partial

from ..sip.errors import SipParseError
from ..sip.message import Request, Response, make_response
from ..sip.transaction import ServerTransaction, Transaction
from ..sip.uri import SipUri
from ..transport.base import Source, Target
from .auth import retry_with_credentials
from .call import BreakerConfig, Call, Leg, TxnContext
from .core import B2buaCore
from .dialog import Dialog, DialogError
from .host import Host, MediaPlane
from .in_dialog import on_ack, on_cancel, on_in_dialog, relay_response
from .info import keyframe_to_legacy
from .invite import invite_response, reinvite_response, setup, stray_response
from .messages import B2B_PARAM, new_tag, safe_uri
from .policy import Decision, Facts, client_params, decide, offer_is_webrtc
from .refer import replaces

__all__ = ["B2bua"]

log = logging.getLogger("rtc2sip.breaker")


class B2bua(B2buaCore):
    """Breaks calls between WebRTC and legacy endpoints into two legs (one instance per proxy)."""

    def __init__(self, host: Host, media: MediaPlane, config: BreakerConfig | None = None,
                 secret: bytes | None = None) -> None:
        super().__init__(host, media, config, secret)
        self._ids = 0  # numbers the calls: b1, b2, …
        media.on_failure(self._media_failed)
        # RFC 5168 keyframe requests over SIP INFO (duck-typed: a plane without video has none)
        on_keyframe = getattr(media, "on_keyframe_request", None)
        if on_keyframe is not None:
            on_keyframe(partial(keyframe_to_legacy, self))

    # ---- the hooks the proxy calls -------------------------------------------------------------

    def should_break(self, req: Request, source: Source) -> Decision:
        """Issue 3 item 1, for an INVITE that creates a dialog (no To tag). Never raises."""
        try:
            if req.method != "INVITE" or req.to.tag is not None:
                return Decision(False, "not a new INVITE")
            replaced = replaces(self, req) if req.has("Replaces") else None
            if isinstance(replaced, Leg):
                # RFC 3891: the INVITE asks us to replace one of our legs; the new call goes to the peer
                # of the other leg, with Replaces naming that leg (invite.setup)
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
            self.respond(st, make_response(req, 200))
            self.post(call, lambda: on_cancel(self, call))
            return True
        to_tag = req.to.tag
        if to_tag is None:
            if method == "INVITE" and st is not None and req.has("Replaces"):
                found = replaces(self, req)
                if found is False:
                    self.respond(st, make_response(req, 481, "Replaced dialog does not exist", to_tag=new_tag()))
                    return True
            return False
        leg = self.dialogs.get((call_id, to_tag)) if call_id in self.call_ids else None
        if leg is None or not leg.dialog.matches(req):
            uri = req.uri
            if isinstance(uri, SipUri) and uri.has(B2B_PARAM):
                # for a dialog of ours that is gone (§12.2.2)
                if st is not None and method != "ACK":
                    self.respond(st, make_response(req, 481))
                return True
            return False
        if method == "ACK":
            self.post(leg.call, lambda: on_ack(leg, req))
            return True
        if st is None:
            return True
        try:
            leg.dialog.receive(req)
        except DialogError as e:
            self.respond(st, make_response(req, e.status, e.reason))
            return True
        self.post(leg.call, lambda: on_in_dialog(self, leg, req, st))
        return True

    def handle_invite(self, req: Request, source: Source, st: ServerTransaction) -> None:
        """Break this INVITE (after :meth:`should_break` said so and the proxy's checks passed)."""
        if len(self.calls) >= self.config.max_calls:
            self.respond(st, make_response(req, 503, "Too many calls", to_tag=new_tag()))
            return
        self._ids += 1
        call = Call(f"b{self._ids}")
        params = client_params(req)
        webrtc = source.websocket or offer_is_webrtc(req.body, req.content_type)
        host = self.host.local_address(source.transport, ":" in source.host) or self.host.local_address("udp")
        contact = self.contact(req.to.uri, source.transport, host)
        try:
            dialog = Dialog.uas(req, contact)
        except (DialogError, SipParseError) as e:
            self.respond(st, make_response(req, e.status, e.reason, to_tag=new_tag()))
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
        self.index(leg)
        self.watch_flow(call, leg)
        log.info("%s INVITE %s %s -> breaker (%s)", call.ids(), "browser" if webrtc else "legacy",
                 safe_uri(req.uri), "ha1" if params.ha1 else "no ha1")
        self.post(call, lambda: setup(self, call, req, params))

    def on_response(self, txn: Transaction | None, resp: Response) -> bool:
        """A response to one of our client transactions (``txn.context`` is a :class:`TxnContext`), or a
        stray 2xx retransmission of our INVITE (``txn`` None): True when taken."""
        try:
            if txn is None:
                return stray_response(self, resp)
            ctx = txn.context
            if not isinstance(ctx, TxnContext):
                return False
            self.post(ctx.call, lambda: self._on_response(ctx, resp), force=True)
            return True
        except (SipParseError, ValueError) as e:
            log.info("call-id=%s breaker dropped a response: %s", resp.get("Call-ID"), e)
            return txn is not None and isinstance(txn.context, TxnContext)

    def on_transaction_failed(self, txn: Transaction, response: Response | None) -> bool:
        """Timeout or transport error of one of our transactions (§8.1.3.1: act as on a 408/503)."""
        ctx = txn.context
        if isinstance(ctx, TxnContext):
            if response is not None:
                self.post(ctx.call, lambda: self._on_response(ctx, response), force=True)
            return True
        if isinstance(ctx, Call):
            # the caller's INVITE could not be answered: its connection is gone
            self.end(ctx, "caller unreachable", by=ctx.caller)
            return True
        return False

    def on_flow_closed(self, flow_id: str) -> None:
        """A connection ended: every call whose browser was on it ends (issue 3 item 2)."""
        for call in list(self.by_flow.get(flow_id, ())):
            dead = next((leg for leg in call.legs if leg.flow and leg.flow.flow_id == flow_id), None)
            self.end(call, "connection closed", by=dead)

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
                    self.end(call, f"media: {reason}", by=None)

            self.host.call_later(self.CLOSE_GRACE, later)
            return
        self.end(call, f"media: {reason}", by=None)

    async def _on_response(self, ctx: TxnContext, resp: Response) -> None:
        kind = ctx.kind
        if kind == "invite":
            await invite_response(self, ctx.leg, resp)
        elif kind == "reinvite":
            await reinvite_response(self, ctx, resp)
        elif kind == "relay":
            relay_response(self, ctx, resp)
        elif resp.status in (401, 407) and ctx.request is not None and not ctx.call.ended:
            retry_with_credentials(self, ctx, resp)

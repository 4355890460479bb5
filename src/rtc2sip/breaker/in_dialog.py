"""Requests inside a broken call mapped from one dialog to the other (RFC 3261 §12.2.2).

BYE ends the call (§15.1.2), CANCEL of the caller's INVITE fails it with 487 (§9.2); INFO (RFC 6086),
MESSAGE (RFC 3428), NOTIFY (RFC 6665), OPTIONS, REFER (RFC 3515) and an UPDATE without offer (RFC 3311)
are sent again on the other leg as that dialog's own request, their final response relayed back;
PRACK goes to :mod:`.reliable`, offers to :mod:`.invite`. A request for a leg whose peer has no
confirmed dialog gets 481 (491 for a re-INVITE).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from ..sip.errors import SipParseError
from ..sip.message import Request, Response, make_response
from ..sip.transaction import ServerTransaction
from .auth import retry_with_credentials
from .call import Call, Leg, TxnContext
from .dialog import State
from .info import dtmf_as_info, info_dtmf, info_picture_update
from .invite import offer_in_dialog
from .messages import REQUEST_HEADERS, RESPONSE_HEADERS, carried
from .refer import refer_event, refer_subscription_state, replaced_dialog, rewrite_refer_to
from .reliable import on_prack

if TYPE_CHECKING:
    from .core import B2buaCore

log = logging.getLogger("rtc2sip.breaker")


async def on_ack(leg: Leg, req: Request) -> None:
    """The ACK of our 2xx (§13.3.1.4). The callee leg was acknowledged when its 2xx came, and an
    offer can only ride in it after an offerless INVITE, whose answer we never asked for."""
    log.debug("%s ACK from %s", leg.call.ids(), leg.name)


async def on_in_dialog(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> None:
    call = leg.call
    method = req.method
    if call.ended:
        core.respond(st, make_response(req, 481))
        return
    if method == "BYE":
        core.respond(st, leg.dialog.response(req, 200))
        log.info("%s BYE from %s", call.ids(), leg.name)
        core.end(call, f"BYE from {leg.name}", by=leg)
        return
    if method == "PRACK":
        on_prack(core, leg, req, st)
        return
    other = call.other(leg)
    if method in ("INVITE", "UPDATE") and (req.body or method == "INVITE"):
        await offer_in_dialog(core, leg, req, st)
        return
    if other.dialog.state is not State.CONFIRMED and not (other.dialog.state is State.EARLY and method == "UPDATE"):
        core.respond(st, leg.dialog.response(req, 491 if method == "INVITE" else 481))
        return
    if method == "INFO" and leg.webrtc and not dtmf_as_info(core) and await info_dtmf(core, leg, req, st):
        return
    if method == "INFO" and not leg.webrtc and info_picture_update(core, leg, req, st):
        return
    relay_request(core, leg, req, st)


def relay_request(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> None:
    """INFO, MESSAGE, NOTIFY, OPTIONS, REFER, UPDATE without offer: the same request on the other
    leg, its final response back (REFER's Refer-To rewritten, RFC 3891 §3 / RFC 3515 §2.1)."""
    call = leg.call
    other = call.other(leg)
    headers = carried(req, REQUEST_HEADERS)
    refer_to = req.get("Refer-To")
    if refer_to is not None:
        try:
            headers.append(("Refer-To", rewrite_refer_to(refer_to, partial(replaced_dialog, core))))
        except SipParseError:
            core.respond(st, leg.dialog.response(req, 400, "Bad Refer-To"))
            return
    if req.method == "NOTIFY" and leg.refer_ids:
        headers = [(n, refer_event(v, leg.refer_ids) if n == "Event" else v) for n, v in headers]
    if req.method == "NOTIFY":
        event = req.get("Event")
        headers = [(n, refer_subscription_state(v, event, req.body) if n == "Subscription-State" else v)
                   for n, v in headers]
    out = other.dialog.request(req.method, req.body, req.get("Content-Type"), headers)
    if req.method == "REFER":
        # RFC 3515 §2.4.6: the NOTIFYs name the subscription by the REFER's CSeq (Event: refer;id=N),
        # which differs on each leg
        other.refer_ids[out.cseq.number] = req.cseq.number
    core.send_in_dialog(other, out, TxnContext(call, other, "relay", st, out))
    log.info("%s %s %s -> %s", call.ids(), req.method, leg.name, other.name)


def relay_response(core: B2buaCore, ctx: TxnContext, resp: Response) -> None:
    st = ctx.server
    if st is None or resp.status < 200:
        return
    if resp.status in (401, 407) and retry_with_credentials(core, ctx, resp):
        return
    origin = ctx.call.other(ctx.leg)
    ctype = resp.get("Content-Type")
    out = origin.dialog.response(st.request, resp.status, resp.reason, resp.body if ctype else b"", ctype,
                                 headers=carried(resp, RESPONSE_HEADERS))
    core.respond(st, out)


async def on_cancel(core: B2buaCore, call: Call) -> None:
    """§9.2: the caller gave up. 487 to it, CANCEL on the callee leg (§9.1: once a provisional
    came); a 2xx that crosses the CANCEL is acknowledged and ended with BYE."""
    a = call.caller
    if call.ended or a is None or a.final_sent:
        return
    log.info("%s CANCEL from %s", call.ids(), a.name)
    call.cancelled = True
    core.fail(call, 487, None)

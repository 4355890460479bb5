"""Call set-up through the RTCWeb Breaker, and the offer/answer exchanges of a broken call.

The caller's INVITE becomes the callee leg's own (RFC 3261 §13.2.1, a Call-ID and From tag of ours,
§8.1.1.4), its SDP offer translated by the media plane; provisional and final responses come back the
same way (§13.2.2, early media from a 18x's SDP answer, RFC 3262 relayed through :mod:`.reliable`,
a forked 2xx ended, a 2xx retransmission ACKed again, RFC 6026 §7.2). re-INVITE and UPDATE with an
offer (§14, RFC 3311 §5.1: hold, unhold, ICE restart) go through the media plane's ``update``, one
offer at a time (§14.2: 491); an offerless re-INVITE gets our last SDP (RFC 3264 §8). An INVITE with
Replaces naming one of our legs goes to the other leg's peer (RFC 3891 §3, via :mod:`.refer`).
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from ..media.plane import MediaPlaneError
from ..media.ports import PortsExhausted
from ..sdp import SdpError, SessionDescription
from ..sip import InviteClientTransaction
from ..sip.message import Request, Response, make_response
from ..sip.transaction import ServerTransaction
from ..sip.uri import SipUri, del_param, parse_uri
from .auth import retry_with_credentials
from .call import Call, Leg, TxnContext
from .dialog import Dialog, State
from .info import dtmf_as_info, watch_dtmf
from .messages import (
    ALLOW,
    CREDENTIAL_HEADERS,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    carried,
    credentials,
    direction,
    oneline,
    strip_na,
)
from .policy import ClientParams
from .refer import parse_replaces, replaces
from .reliable import send_reliable

if TYPE_CHECKING:
    from .core import B2buaCore

log = logging.getLogger("rtc2sip.breaker")


async def setup(core: B2buaCore, call: Call, req: Request, params: ClientParams) -> None:
    """The callee leg: translate the offer, route, send the INVITE (§13.2.1)."""
    a = call.caller
    assert a is not None
    if not req.body or req.content_type != "application/sdp":
        # a delayed offer would need an offer from the media plane first: not in its API
        core.fail(call, 488, "SDP offer required")
        return
    try:
        offer = SessionDescription.parse(req.body)
        if a.webrtc:
            session, out = await core.media.offer_from_webrtc(call.id, offer)
        else:
            session, out = await core.media.offer_from_legacy(call.id, offer)
    except SdpError as e:
        core.fail(call, 488, None, [("Warning", f'{getattr(e, "warning", 399)} rtc2sip "{oneline(e)}"')])
        return
    except (MediaPlaneError, PortsExhausted) as e:  # no port left, no media worker running
        log.warning("%s media plane refused the call: %s", call.ids(), oneline(e))
        core.fail(call, 503, "Media resources unavailable", [("Retry-After", "5")])
        return
    if call.ended:
        core.delete_session(session)
        return
    call.session = session
    core.by_session[session] = call
    if dtmf_as_info(core):
        watch_dtmf(core, call, session)
    to = str(strip_na(req.to))
    headers = carried(req, REQUEST_HEADERS)
    replaced = replaces(core, req) if req.has("Replaces") else None
    if isinstance(replaced, Leg):
        # RFC 3891 through the B2BUA: the new call goes to the peer of the replaced leg's other leg,
        # asking it to replace the dialog it has with us; its BYE of that dialog then ends the old call
        peer = replaced.call.other(replaced)
        d = peer.dialog
        draft = Request("INVITE", parse_uri(d.remote_target), [["Route", r] for r in d.route_set])
        hop = await core.hop(peer)
        targets = [hop] if hop is not None else []
        to = str(d.remote)
        value = f"{d.call_id};to-tag={d.remote_tag or ''};from-tag={d.local_tag}"
        if "early-only" in parse_replaces(req.get("Replaces") or "")[1]:
            value += ";early-only"
        headers.append(("Replaces", value))
        log.info("%s INVITE replaces %s of %s -> %s of the same call", call.ids(), replaced.name,
                 replaced.call.id, peer.name)
    elif replaced is False:
        core.fail(call, 481, "Replaced dialog does not exist")
        return
    else:
        if req.has("Replaces"):
            headers.append(("Replaces", req.get("Replaces") or ""))  # a dialog beyond us: as it is
        draft = draft_invite(req)
        try:
            targets = await core.host.route_initial(draft)
        except Exception as e:  # a routing failure fails this call only
            log.info("%s no route: %s", call.ids(), e)
            targets = []
    if call.ended:
        return
    if not targets:
        core.fail(call, 480, "No route to destination")
        return
    target = targets[0]
    callee_webrtc = not a.webrtc
    host = core.host.local_address(target.transport, ":" in target.host) or core.host.local_address("udp")
    contact = core.contact(req.from_.uri, target.transport, host)
    from_ = str(strip_na(req.from_))
    call_id, tag = derived_ids(core, req)
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
    core.index(b)
    core.watch_flow(call, b)
    body = str(out).encode()
    b.local_sdp = body
    headers.append(("Allow", ALLOW))
    # 100rel when configured, or when the caller takes reliable provisionals: they are then relayed
    # end to end (the caller's PRACK becomes ours), else the B2BUA acknowledges them itself
    rel = core.config.enable_100rel or a.rel_supported
    headers.append(("Supported", "100rel, replaces" if rel else "replaces"))
    headers += b.relay_auth
    invite = dialog.request("INVITE", body, "application/sdp", headers, cseq=req.cseq.number)
    dialog.local_seq = req.cseq.number
    core.send_invite(b, invite)
    shown = f"[{target.host}]" if ":" in target.host else target.host
    log.info("%s INVITE -> %s %s:%s:%s", call.ids(), b.name, target.transport, shown, target.port)
    _arm_no_answer(core, call, b)


def _arm_no_answer(core: B2buaCore, call: Call, b: Leg) -> None:
    """A callee that neither rings nor answers within ``final_response_timeout``: 408 to the caller, a
    CANCEL (once cancellable) to the callee. Timer B alone would leave the caller 32 s in silence."""
    timeout = core.config.final_response_timeout

    def check() -> None:
        if call.ended or call.cancelled or b.invite_final or call.callee is not b:
            return
        txn = b.invite_ct
        if isinstance(txn, InviteClientTransaction) and txn.cancellable:
            return  # a provisional came: ringing is left to the caller's CANCEL and the timers
        log.info("%s %s has not answered in %.1f s: 408", call.ids(), b.name, timeout)
        core.fail(call, 408, "Request Timeout")

    core.host.call_later(timeout, check)


def draft_invite(req: Request) -> Request:
    """The caller's Request-URI and remaining Route, for the proxy's routing to work on."""
    uri = req.uri
    if isinstance(uri, SipUri):
        uri = uri.copy()
        for name in ("impi", "ha1"):
            del_param(uri.params, name)
    draft = Request("INVITE", uri, [["Route", r] for r in req.values("Route")])
    draft.add("Call-ID", req.call_id)
    return draft


def derived_ids(core: B2buaCore, req: Request) -> tuple[str, str]:
    """The callee leg's Call-ID and From tag, a keyed hash of the caller's (§8.1.1.4 allows any
    unique value). A browser answering a relayed challenge sends a new INVITE with the same
    Call-ID and From tag (§22.2); deriving ours means the legacy server sees the same dialog
    try again, as servers that bind nonces to a Call-ID require."""
    key = f"{req.call_id}\0{req.from_.tag}".encode("utf-8", "surrogateescape")
    h = hashlib.blake2s(key, key=core.secret, digest_size=16).hexdigest()
    host = core.host.local_address("udp") or core.host.local_address("tcp") or ("rtc2sip", 0)
    return f"{h[:20]}@{host[0]}", h[20:]


async def invite_response(core: B2buaCore, b: Leg, resp: Response) -> None:
    call = b.call
    status = resp.status
    if status == 100:
        return
    if status < 200:
        if b.cancel_pending:
            core.send_cancel(b)
        if call.ended or call.cancelled:
            return
        b.dialog.on_response(resp)
        await provisional(core, b, resp)
        return
    b.invite_final = True
    if 200 <= status < 300:
        await invite_success(core, b, resp)
        return
    if call.ended:
        return
    if status in (401, 407) and retry_with_credentials(core, TxnContext(call, b, "invite", request=b.invite),
                                                             resp):
        return
    a = call.other(b)
    log.info("%s %s %s from %s", call.ids(), status, resp.reason, b.name)
    if a.invite_st is not None and not a.final_sent:
        out = a.dialog.response(a.invite_st.request, status, resp.reason, headers=carried(resp, RESPONSE_HEADERS))
        a.final_sent = True
        core.respond(a.invite_st, out)
    core.end(call, f"{status} from {b.name}", by=b)


async def provisional(core: B2buaCore, b: Leg, resp: Response) -> None:
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
        core.send_in_dialog(b, b.dialog.prack(resp), TxnContext(call, b, "prack"))
    body = b""
    if resp.body and resp.content_type == "application/sdp" and not b.early_answer:
        try:
            translated = await answer(core, call, b, resp.body)
        except SdpError as e:
            log.info("%s early SDP from %s refused: %s", call.ids(), b.name, oneline(e))
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
                            headers=[("Allow", ALLOW), *carried(resp, RESPONSE_HEADERS)])
    if relayed or a.rel_required or (a.rel_supported and core.config.enable_100rel and body):
        send_reliable(core, a, out, resp if relayed else None)
    else:
        core.respond(a.invite_st, out)
    log.info("%s %s %s%s%s -> %s", call.ids(), resp.status, resp.reason, " with SDP" if body else "",
             " (100rel relayed)" if relayed else "", a.name)


async def invite_success(core: B2buaCore, b: Leg, resp: Response) -> None:
    """2xx: ACK at once (the offer was in our INVITE, the ACK carries nothing, §13.2.2.4), then the
    answer through the media plane, then 2xx to the caller."""
    call = b.call
    if not b.dialog.on_response(resp):
        # another UAS answered too (forking): acknowledge and end that dialog (§13.2.2.4)
        other = b.dialog.fork(resp)
        core.ack_and_bye(b, other)
        return
    if b.ack is not None:
        core.send_ack(b)  # a retransmission of the 2xx: our ACK got lost
        return
    b.ack = b.dialog.ack(headers=credentials(b.invite))
    b.ack_target = await core.hop(b)
    if b.ack_target is not None:
        core.add_via(b.ack, b.ack_target)
    core.send_ack(b)
    if call.ended or call.cancelled:
        core.bye(b, "call already ended")
        core.release(call)
        return
    a = call.other(b)
    try:
        if b.early_answer and (not resp.body or resp.body == b.early_answer):
            body = a.local_sdp
        elif resp.body and resp.content_type == "application/sdp":
            body = await answer(core, call, b, resp.body)
        else:
            raise SdpError("2xx without the SDP answer")
    except SdpError as e:
        log.info("%s answer from %s refused: %s", call.ids(), b.name, oneline(e))
        core.bye(b, 'SIP;cause=488;text="Not Acceptable Here"')
        core.fail(call, 488, None)
        return
    if call.ended:
        return
    a.local_sdp = body
    assert a.invite_st is not None
    if a.final_sent:
        return
    out = a.dialog.response(a.invite_st.request, 200, None, body,
                            headers=[("Allow", ALLOW), *carried(resp, RESPONSE_HEADERS)])
    a.final_sent = True
    if a.rel_pending is not None and a.rel_pending[1].body:
        # RFC 3262 §3: no 2xx before the PRACK of a reliable 1xx that carried SDP
        a.held_final = out
        log.info("%s 200 OK for %s held until its PRACK", call.ids(), a.name)
        return
    core.respond(a.invite_st, out)
    log.info("%s 200 OK -> %s: call up", call.ids(), a.name)


async def answer(core: B2buaCore, call: Call, answerer: Leg, body: bytes) -> bytes:
    """The SDP answer of ``answerer`` translated for the other leg (which made the offer)."""
    assert call.session is not None
    sdp = SessionDescription.parse(body)
    if answerer.webrtc:
        out = await core.media.answer_from_webrtc(call.session, sdp)
    else:
        out = await core.media.answer_from_legacy(call.session, sdp)
    return str(out).encode()


def stray_response(core: B2buaCore, resp: Response) -> bool:
    """A 2xx retransmission after our INVITE transaction ended (RFC 6026 §7.2): ACK it again."""
    if resp.cseq.method != "INVITE" or not 200 <= resp.status < 300:
        return False
    leg = core.dialogs.get((resp.call_id, resp.from_.tag or ""))
    if leg is None or leg.is_caller:
        return False
    if leg.ack is not None and resp.to.tag == leg.dialog.remote_tag:
        core.send_ack(leg)
    return True


async def offer_in_dialog(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> None:
    """re-INVITE or UPDATE with an offer (hold, unhold, ICE restart): through the media plane's
    ``update``, then to the other leg; its answer comes back through ``answer_from_*``."""
    call = leg.call
    other = call.other(leg)
    if leg.reinvite_st is not None or other.reinvite_st is not None or other.reinvite_out or leg.reinvite_out:
        core.respond(st, leg.dialog.response(req, 491))  # §14.2: one offer at a time
        return
    if not req.body:
        # an offerless re-INVITE (a session refresh): our last SDP is the offer (RFC 3264 §8)
        core.respond(st, leg.dialog.response(req, 200, None, leg.local_sdp, headers=[("Allow", ALLOW)]))
        return
    # RFC 3311 §5.1: an UPDATE may make a new offer in an early dialog once the first offer/answer
    # is done (the callee's early SDP answer); a re-INVITE only in a confirmed one
    early_ok = (req.method == "UPDATE" and other.dialog.state is State.EARLY and call.callee is not None
                and bool(call.callee.early_answer))
    if call.session is None or (other.dialog.state is not State.CONFIRMED and not early_ok):
        core.respond(st, leg.dialog.response(req, 491))
        return
    try:
        offer = await core.media.update(call.session, SessionDescription.parse(req.body), leg.webrtc)
    except SdpError as e:
        warning = f'399 rtc2sip "{oneline(e)}"'
        core.respond(st, leg.dialog.response(req, 488, None, headers=[("Warning", warning)]))
        return
    except Exception as e:  # the media plane refuses this offer (e.g. one still pending): keep the call
        log.info("%s %s from %s refused by the media plane: %s", call.ids(), req.method, leg.name, e)
        core.respond(st, leg.dialog.response(req, 500, None, headers=[("Retry-After", "1")]))
        return
    if call.ended:
        core.respond(st, make_response(req, 481))
        return
    body = str(offer).encode()
    leg.reinvite_st = st
    other.reinvite_out = True
    other.local_sdp = body
    out = other.dialog.request(req.method, body, "application/sdp", carried(req, REQUEST_HEADERS))
    core.send_in_dialog(other, out, TxnContext(call, other, "reinvite", st, out))
    log.info("%s %s with offer %s -> %s (%s)", call.ids(), req.method, leg.name, other.name, direction(req.body))


async def reinvite_response(core: B2buaCore, ctx: TxnContext, resp: Response) -> None:
    other, st = ctx.leg, ctx.server
    call = ctx.call
    if resp.status < 200 or st is None:
        return
    origin = call.other(other)
    other.reinvite_out = False
    method = st.request.method
    if 200 <= resp.status < 300:
        if ctx.ack is not None:
            # RFC 6026 §7.2: the transaction hands up every retransmission of the 2xx; our ACK
            # got lost (or was late: a loaded gateway), so send it again and do nothing else
            if ctx.ack_target is not None:
                core.host.send_stateless(ctx.ack, ctx.ack_target)
            return
        other.dialog.refresh_from_response(resp)
        if method == "INVITE":
            # even when the dialog ended meanwhile (a BYE crossed this 2xx): a 2xx is always
            # acknowledged (§13.2.2.4), or the other end retransmits it for 32 s
            ack = other.dialog.ack(headers=credentials(ctx.request))
            ctx.ack = ack
            target = await core.hop(other)
            ctx.ack_target = target
            if target is not None:
                core.add_via(ack, target)
                core.host.send_stateless(ack, target)
        if call.ended:
            return
        try:
            body = await answer(core, call, other, resp.body)
        except SdpError as e:
            origin.reinvite_st = None
            core.respond(st, origin.dialog.response(st.request, 488, None,
                                                     headers=[("Warning", f'399 rtc2sip "{oneline(e)}"')]))
            return
        origin.local_sdp = body
        origin.reinvite_st = None  # the ACK may still come: a new offer in between is the peer's glare
        core.respond(st, origin.dialog.response(st.request, 200, None, body, headers=[("Allow", ALLOW)]))
        log.info("%s %s answered by %s", call.ids(), method, other.name)
        return
    if resp.status in (401, 407) and retry_with_credentials(core, ctx, resp):
        return
    origin.reinvite_st = None
    core.respond(st, origin.dialog.response(st.request, resp.status, resp.reason,
                                             headers=carried(resp, RESPONSE_HEADERS)))
    if resp.status in (408, 481):
        core.end(call, f"{resp.status} to {method}", by=other)  # §12.2.1.2: the dialog is gone

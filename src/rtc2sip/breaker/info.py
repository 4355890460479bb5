"""SIP INFO through the RTCWeb Breaker (RFC 6086): DTMF and keyframe requests translated between the
legs.

A browser's ``application/dtmf-relay`` INFO becomes RFC 4733 events toward the legacy leg (``dtmf-type``
rfc4733), or the legacy side's RFC 4733 events become INFO toward the browser (``dtmf-type`` info, via
the media plane's tap, :mod:`.dtmf`). A phone's RFC 5168 ``picture_fast_update`` becomes a PLI toward
the browser, and the media plane's keyframe requests toward the phone also go as that INFO (§3).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..media.dtmf_sink import DtmfSink
from ..sip.message import Request
from ..sip.transaction import ServerTransaction
from .call import Call, Leg, TxnContext
from .dialog import State
from .dtmf import dtmf_relay_body

if TYPE_CHECKING:
    from .core import B2buaCore

log = logging.getLogger("rtc2sip.breaker")

# RFC 5168 §3: the XML schema for media control, the one request everyone implements
PICTURE_FAST_UPDATE = (b'<?xml version="1.0" encoding="utf-8" ?>\r\n<media_control><vc_primitive><to_encoder>'
                       b"<picture_fast_update/></to_encoder></vc_primitive></media_control>\r\n")


def dtmf_as_info(core: B2buaCore) -> bool:
    """``dtmf-type`` info, or webrtc2sip's rfc2833 (which it relayed as SIP INFO): digits stay
    SIP INFO toward the legacy side, and the legacy side's RFC 4733 events reach the browser as INFO."""
    return core.config.dtmf_type in ("info", "rfc2833")


def watch_dtmf(core: B2buaCore, call: Call, session: str) -> None:
    """RFC 4733 events from the legacy leg, seen on the media plane's tap (the sink is closed with
    the session), become INFO toward the browser. A plane without taps (unit tests' fake): none."""
    attach = getattr(core.media, "attach", None)
    if attach is None:
        return

    def digit(d: str, duration_ms: int) -> None:
        core.post(call, lambda: send_info_dtmf(core, call, d, duration_ms))

    try:
        attach(session, DtmfSink(digit))
    except Exception as e:  # the session is gone already: the call is ending
        log.info("%s no DTMF watch: %s", call.ids(), e)


async def send_info_dtmf(core: B2buaCore, call: Call, digit: str, duration_ms: int) -> None:
    leg = call.browser
    if leg is None or leg.dialog.state is not State.CONFIRMED:
        return
    req = leg.dialog.request("INFO", dtmf_relay_body(digit, duration_ms), "application/dtmf-relay")
    core.send_in_dialog(leg, req, TxnContext(call, leg, "info", request=req))
    log.info("%s RFC 4733 DTMF %s (%d ms) from %s -> INFO toward %s", call.ids(), digit, duration_ms,
             call.other(leg).name, leg.name)


async def info_dtmf(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> bool:
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
        sent = await core.media.send_dtmf(call.session, digit, int(duration) if duration.isdigit() else 100)
    except Exception as e:  # the session went away meanwhile: relay, the peer may take INFO
        log.info("%s DTMF %s not played: %s", call.ids(), digit, e)
        return False
    if not sent:
        return False
    core.respond(st, leg.dialog.response(req, 200))
    log.info("%s INFO DTMF %s from %s -> RFC 4733 toward %s", call.ids(), digit, leg.name, call.other(leg).name)
    return True


def info_picture_update(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> bool:
    """A legacy phone's INFO ``application/media_control+xml`` with ``picture_fast_update``
    (RFC 5168 §3): its decoder wants a keyframe. The browser knows no such INFO: the media plane
    asks it with a PLI (or asks the transcoder's encoder) and the INFO is answered 200 here."""
    call = leg.call
    if req.content_type != "application/media_control+xml" or call.session is None:
        return False
    if b"picture_fast_update" not in req.body:
        return False
    request = getattr(core.media, "request_keyframe", None)
    try:
        done = bool(request(call.session, from_webrtc=True)) if request is not None else False
    except Exception as e:  # the session went away meanwhile
        log.info("%s picture_fast_update not passed on: %s", call.ids(), e)
        done = False
    core.respond(st, leg.dialog.response(req, 200 if done else 415))
    log.info("%s INFO picture_fast_update from %s -> %s", call.ids(), leg.name,
             "keyframe request" if done else "no video")
    return True


def keyframe_to_legacy(core: B2buaCore, session: str, call_id: str) -> None:
    """The media plane asked the legacy peer for a keyframe over RTCP; phones that ignore RTCP
    feedback (plain RTP/AVP) get the RFC 5168 INFO as well, at most one a second per call."""
    call = core.by_session.get(session)
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
    core.send_in_dialog(leg, info, TxnContext(call, leg, "info", request=info))
    log.info("%s INFO picture_fast_update -> %s", call.ids(), leg.name)

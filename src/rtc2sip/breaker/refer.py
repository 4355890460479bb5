"""Call transfer through the RTCWeb Breaker: REFER (RFC 3515) and Replaces (RFC 3891).

A REFER is relayed to the other leg (:mod:`.in_dialog`) with an attended transfer's Refer-To rewritten
(RFC 3515 §2.1, RFC 3891 §3: the Replaces it carries names the dialog as the other party knows it), and
the NOTIFYs' ``Event: refer;id=N`` mapped to each leg's REFER CSeq (RFC 3515 §2.4.6). An INVITE whose
Replaces names one of our legs is found here (RFC 3891 §3, §6.1; 481 for a gone dialog).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..sip.headers import parse_name_addr
from ..sip.message import Request
from ..sip.uri import SipUri, parse_uri
from .call import Leg
from .dialog import State

if TYPE_CHECKING:
    from .core import B2buaCore


def replaced_dialog(core: B2buaCore, call_id: str, to_tag: str, from_tag: str) -> tuple[str, str, str, str] | None:
    """RFC 3891 §3: the dialog a Replaces names on one of our legs (to-tag = our local tag) ->
    the other leg of that call: (Call-ID, to-tag, from-tag, remote target) as its peer sees them."""
    leg = core.dialogs.get((call_id, to_tag))
    if leg is None or leg.dialog.remote_tag != from_tag:
        return None
    other = leg.call.other(leg)
    d = other.dialog
    # a browser's Contact (…@….invalid;transport=ws) routes nowhere: its address of record does
    target = str(d.remote.uri) if other.webrtc else d.remote_target
    return d.call_id, d.remote_tag or "", d.local_tag, target


def replaces(core: B2buaCore, req: Request) -> Leg | bool | None:
    """The leg an INVITE's ``Replaces`` (RFC 3891 §3) asks *us* to replace: its to-tag is our local
    tag. None when it names no dialog of ours, or names one as our peer knows it (to-tag = the
    peer's tag: the INVITE is for that peer and passes, e.g. after a REFER we rewrote); False when
    it names one of our Call-IDs but no live dialog (481, §6.1)."""
    value = req.get("Replaces")
    if value is None:
        return None
    call_id, params = parse_replaces(value)
    if call_id not in core.call_ids:
        return None
    to_tag, from_tag = params.get("to-tag", ""), params.get("from-tag", "")
    leg = core.dialogs.get((call_id, to_tag))
    if leg is not None and leg.dialog.remote_tag == from_tag and not leg.call.ended:
        if "early-only" in params and leg.dialog.state is State.CONFIRMED:
            return False  # §6.1: early-only and already confirmed (RFC 3891 says 486; 481 is as safe)
        return leg
    peer = core.dialogs.get((call_id, from_tag))
    if peer is not None and peer.dialog.remote_tag == to_tag:
        return None
    return False


def refer_event(value: str, ids: dict[int, int]) -> str:
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


def refer_subscription_state(value: str, event: str | None, body: bytes) -> str:
    """``Subscription-State`` of a relayed refer NOTIFY: ``terminated`` with a provisional sipfrag
    (``SIP/2.0 1xx``) becomes ``active``. SIP.js 0.21 (Inviter.notifyReferer) ends every NOTIFY's
    subscription, even the 100 Trying's; the transferor (baresip) then takes the first as the end
    (RFC 6665 §4.1.3), answers the later ones, the 200 among them, with 481 and never learns the
    transfer succeeded, so it stays in the call. RFC 3515 §2.4.5: the subscription ends with the NOTIFY
    of the final response, which keeps its ``terminated``."""
    if not event or event.split(";")[0].strip().lower() != "refer":
        return value
    state = value.split(";")[0].strip().lower()
    line = body.split(b"\n", 1)[0].strip()
    status = line[8:11] if line[:8].upper() == b"SIP/2.0 " else b""
    if state != "terminated" or not (status.isdigit() and status[:1] == b"1"):
        return value
    return "active;expires=60"


def parse_replaces(value: str) -> tuple[str, dict[str, str]]:
    """``Replaces: call-id;to-tag=…;from-tag=…[;early-only]`` (RFC 3891 §6.1)."""
    call_id, *params = value.split(";")
    return call_id.strip(), {k.strip().lower(): v.strip() for k, _, v in (x.partition("=") for x in params)}


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

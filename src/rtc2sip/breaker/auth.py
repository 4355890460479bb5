"""Legacy authentication through the RTCWeb Breaker: a 401/407 on the legacy leg answered with the
browser's ``impi``/``ha1`` (webrtc2sip's client parameters), as RFC 3261 §22.2 and §22.4 say (same
Call-ID, From tag and Request-URI; new CSeq and branch), with MD5 or SHA-256 digests (RFC 7616 §3.4).
A browser without ``ha1`` gets the challenge relayed and answers it itself (its credentials are then
reused on the legacy leg, :mod:`.invite`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..sip import DigestError, answer_challenge, select_challenge
from ..sip.message import Response
from .call import TxnContext
from .dialog import State
from .messages import user_of

if TYPE_CHECKING:
    from .core import B2buaCore

log = logging.getLogger("rtc2sip.breaker")


def retry_with_credentials(core: B2buaCore, ctx: TxnContext, resp: Response) -> bool:
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
    username = creds.impi or user_of(req.from_.uri) or ""
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
        core.send_invite(leg, retry)
    else:
        core.send_in_dialog(leg, retry, TxnContext(ctx.call, leg, ctx.kind, ctx.server, retry))
    log.info("%s %s %s answered with the client's ha1 (%s %s)", ctx.call.ids(), resp.status, resp.reason,
             req.method, answer)
    return True

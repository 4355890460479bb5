"""Reliable provisional responses through the RTCWeb Breaker (RFC 3262).

Toward a caller that supports 100rel, the callee's reliable 1xx is relayed reliably and the caller's
PRACK becomes ours on the callee leg (§4: matched by RAck); our reliable 1xx go one at a time (§3),
are retransmitted from T1 doubling, and the call fails 504 after 64*T1 without a PRACK. A 2xx waits
for the PRACK of a reliable 1xx that carried SDP (§3).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from ..sip.message import Request, Response
from ..sip.transaction import ServerTransaction
from .call import Leg, TxnContext
from .dialog import State

if TYPE_CHECKING:
    from .core import B2buaCore

log = logging.getLogger("rtc2sip.breaker")

T1 = 0.5


def send_reliable(core: B2buaCore, a: Leg, out: Response, callee_resp: Response | None) -> None:
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
    core.respond(a.invite_st, out)
    _arm(core, a)


def _arm(core: B2buaCore, a: Leg) -> None:
    def fire() -> None:
        a.rel_timer = None
        pending = a.rel_pending
        if pending is None or a.call.ended or (a.final_sent and a.held_final is None) or a.invite_st is None:
            return
        if a.rel_interval >= 32 * T1:  # 64*T1 in all without a PRACK: §3 says reject with a 5xx
            log.info("%s no PRACK from %s for RSeq %d", a.call.ids(), a.name, pending[0])
            if a.held_final is not None:
                a.held_final, a.final_sent = None, False
            core.fail(a.call, 504, "No PRACK")
            return
        a.rel_interval *= 2
        core.respond(a.invite_st, pending[1])
        _arm(core, a)

    a.rel_timer = core.host.call_later(a.rel_interval, fire)


def on_prack(core: B2buaCore, leg: Leg, req: Request, st: ServerTransaction) -> None:
    """The caller's PRACK (§4): it matches our outstanding reliable 1xx by ``RAck``, else 481. When
    that 1xx relayed a reliable one of the callee, the PRACK goes on as ours on the callee leg and
    its answer comes back; otherwise we answer it."""
    call = leg.call
    pending = leg.rel_pending
    rack = (req.get("RAck") or "").split()
    invite_cseq = leg.invite_st.request.cseq.number if leg.invite_st is not None else -1
    if (pending is None or len(rack) != 3 or not rack[0].isdigit() or int(rack[0]) != pending[0]
            or rack[1] != str(invite_cseq) or rack[2].upper() != "INVITE"):
        core.respond(st, leg.dialog.response(req, 481, "No matching reliable provisional response"))
        return
    core.stop_reliable(leg)
    callee_resp = pending[2]
    other = call.other(leg)
    if callee_resp is not None and other.dialog.state is not State.TERMINATED:
        prack = other.dialog.prack(callee_resp)
        core.send_in_dialog(other, prack, TxnContext(call, other, "relay", st, prack))
        log.info("%s PRACK %s -> %s (RSeq %s)", call.ids(), leg.name, other.name, prack.get("RAck"))
    else:
        core.respond(st, leg.dialog.response(req, 200))
    if leg.held_final is not None and leg.invite_st is not None:
        final, leg.held_final = leg.held_final, None
        leg.rel_queue.clear()
        core.respond(leg.invite_st, final)
        log.info("%s 200 OK -> %s: call up", call.ids(), leg.name)
    elif leg.rel_queue and not leg.final_sent and leg.invite_st is not None:
        out, resp = leg.rel_queue.popleft()
        send_reliable(core, leg, out, resp)

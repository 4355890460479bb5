"""SIP server transactions, sans-I/O: the INVITE machine (RFC 3261 §17.2.1 with RFC 6026 §7.1, figure 7)
and the non-INVITE one (RFC 3261 §17.2.2, figure 8), as tables of ``(state, event) -> (new state,
operations)``.
"""

from __future__ import annotations

from typing import Any, cast

from .message import Message, Request, make_response
from .transaction import (
    _CANCEL,
    ACCEPTED,
    COMPLETED,
    CONFIRMED,
    DEFAULT_TIMERS,
    INIT,
    PROCEEDING,
    TERMINATED,
    TRYING,
    Action,
    E,
    LocalProtocolError,
    ServerTransaction,
    StartTimer,
    Table,
    Timeout,
    Timers,
    Transaction,
    Transmit,
    TransportError,
    _deliver,
    _linger,
    _terminate,
)

__all__ = [
    "InviteServerTransaction",
    "NonInviteServerTransaction",
    "server_transaction",
]


# ---- machines --------------------------------------------------------------------------------------------


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with the Accepted state and timer L of RFC 6026 §7.1 (figure 7)."""

    __slots__ = ()
    kind = "INVITE server"


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    __slots__ = ()
    kind = "non-INVITE server"


def server_transaction(
    request: Request,
    *,
    reliable: bool = False,
    timers: Timers = DEFAULT_TIMERS,
    peer: object = None,
    context: Any = None,
    trying: bool = True,
) -> ServerTransaction:
    """The server machine for ``request`` (§17.2). ``trying``: answer an INVITE with 100 at once (§17.2.1:
    a proxy does, since it cannot know the next hop will answer within 200 ms)."""
    if request.method == "ACK":
        raise LocalProtocolError("an ACK never creates a server transaction (§17.2.3)")
    cls = InviteServerTransaction if request.method == "INVITE" else NonInviteServerTransaction
    return cls(request, reliable=reliable, timers=timers, peer=peer, context=context, trying=trying)


# ---- operations: the right-hand side of the tables -------------------------------------------------------
# Each is op(transaction, message or None, actions out). The table has already moved the state.


def _trying(t: ServerTransaction, msg: Message | None, out: list[Action]) -> None:
    if t._trying:
        tx = t._tx = Transmit(make_response(t.request, 100), t, t.peer)
        out.append(tx)


def _send_response(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    tx = t._tx = Transmit(cast(Message, msg), t, t.peer)
    out.append(tx)


def _forward_response(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    # A 2xx the TU forwards after a non-2xx final (§16.7 step 5): sent once, the machine keeps resending
    # its own final response, and the 2xx retransmissions are the UAS's business (§13.3.1.4).
    out.append(Transmit(cast(Message, msg), t, t.peer))


def _resend_response(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    if t._tx is not None:
        out.append(t._tx)


def _start_g_h(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    if not t.reliable:
        t._interval = t.config.t1
        out.append(StartTimer("G", t.config.t1))
    out.append(StartTimer("H", t.config.h))


def _backoff_g(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    t._interval = min(2 * t._interval, t.config.t2)
    out.append(StartTimer("G", t._interval))


def _cancel_g_h(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(_CANCEL["G"])
    out.append(_CANCEL["H"])


def _linger_i(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    _linger(t, "I", t.config.i, out)


def _linger_j(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    _linger(t, "J", t.config.j, out)


def _start_l(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(StartTimer("L", t.config.l))


def _server_timeout(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(Timeout(t, None))


def _server_transport_error(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(TransportError(t, None))


# ---- the tables ------------------------------------------------------------------------------------------


INVITE_SERVER: Table = {
    # RFC 3261 §17.2.1, RFC 6026 §7.1 and figure 7
    (INIT, E.START): (PROCEEDING, (_deliver, _trying)),
    (PROCEEDING, E.REQUEST): (PROCEEDING, (_resend_response,)),
    (PROCEEDING, E.TU_PROVISIONAL): (PROCEEDING, (_send_response,)),
    (PROCEEDING, E.TU_SUCCESS): (ACCEPTED, (_send_response, _start_l)),
    (PROCEEDING, E.TU_FAILURE): (COMPLETED, (_send_response, _start_g_h)),
    (PROCEEDING, E.TRANSPORT_ERROR): (PROCEEDING, (_server_transport_error,)),
    (COMPLETED, E.REQUEST): (COMPLETED, (_resend_response,)),
    (COMPLETED, E.TIMER_G): (COMPLETED, (_resend_response, _backoff_g)),
    (COMPLETED, E.TIMER_H): (TERMINATED, (_server_timeout, _terminate)),
    (COMPLETED, E.ACK): (CONFIRMED, (_cancel_g_h, _linger_i)),
    (COMPLETED, E.TRANSPORT_ERROR): (TERMINATED, (_server_transport_error, _terminate)),
    (COMPLETED, E.TU_SUCCESS): (COMPLETED, (_forward_response,)),
    (COMPLETED, E.TU_FAILURE): (COMPLETED, ()),  # only one final response per transaction
    (CONFIRMED, E.TIMER_I): (TERMINATED, (_terminate,)),
    (CONFIRMED, E.TU_SUCCESS): (CONFIRMED, (_forward_response,)),
    (CONFIRMED, E.TU_FAILURE): (CONFIRMED, ()),
    (ACCEPTED, E.REQUEST): (ACCEPTED, ()),  # absorbed, not passed up (RFC 6026 §7.1)
    (ACCEPTED, E.ACK): (ACCEPTED, (_deliver,)),
    (ACCEPTED, E.TU_SUCCESS): (ACCEPTED, (_send_response,)),
    (ACCEPTED, E.TIMER_L): (TERMINATED, (_terminate,)),
    (ACCEPTED, E.TRANSPORT_ERROR): (ACCEPTED, (_server_transport_error,)),
}
NON_INVITE_SERVER: Table = {
    # RFC 3261 §17.2.2, figure 8
    (INIT, E.START): (TRYING, (_deliver,)),
    (TRYING, E.REQUEST): (TRYING, ()),  # discarded until the TU says something
    (TRYING, E.TU_PROVISIONAL): (PROCEEDING, (_send_response,)),
    (TRYING, E.TU_SUCCESS): (COMPLETED, (_send_response, _linger_j)),
    (TRYING, E.TU_FAILURE): (COMPLETED, (_send_response, _linger_j)),
    (PROCEEDING, E.REQUEST): (PROCEEDING, (_resend_response,)),
    (PROCEEDING, E.TU_PROVISIONAL): (PROCEEDING, (_send_response,)),
    (PROCEEDING, E.TU_SUCCESS): (COMPLETED, (_send_response, _linger_j)),
    (PROCEEDING, E.TU_FAILURE): (COMPLETED, (_send_response, _linger_j)),
    (PROCEEDING, E.TRANSPORT_ERROR): (TERMINATED, (_server_transport_error, _terminate)),
    (COMPLETED, E.REQUEST): (COMPLETED, (_resend_response,)),
    (COMPLETED, E.TU_SUCCESS): (COMPLETED, ()),  # §17.2.2: other final responses are discarded
    (COMPLETED, E.TU_FAILURE): (COMPLETED, ()),
    (COMPLETED, E.TIMER_J): (TERMINATED, (_terminate,)),
    (COMPLETED, E.TRANSPORT_ERROR): (TERMINATED, (_server_transport_error, _terminate)),
}
InviteServerTransaction._table = INVITE_SERVER
NonInviteServerTransaction._table = NON_INVITE_SERVER


"""SIP client transactions, sans-I/O: the INVITE machine (RFC 3261 §17.1.1 with RFC 6026 §7.2, figure 5)
and the non-INVITE one (RFC 3261 §17.1.2, figure 6), as tables of ``(state, event) -> (new state,
operations)``; the ACK of a non-2xx final response (§17.1.1.3), CANCEL (§9.1) and new branch ids (§8.1.1.7).
"""

from __future__ import annotations

import secrets
from typing import Any, cast

from .headers import split_comma
from .message import MAGIC_COOKIE, Message, Request, Response, make_response
from .transaction import (
    _CANCEL,
    ACCEPTED,
    CALLING,
    COMPLETED,
    DEFAULT_TIMERS,
    INIT,
    PROCEEDING,
    TERMINATED,
    TRYING,
    Action,
    ClientTransaction,
    E,
    LocalProtocolError,
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
    "InviteClientTransaction",
    "NonInviteClientTransaction",
    "client_transaction",
    "make_ack",
    "make_cancel",
    "new_branch",
]


# ---- machines --------------------------------------------------------------------------------------------


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with the Accepted state and timer M of RFC 6026 §7.2 (figure 5)."""

    __slots__ = ("_ack",)
    kind = "INVITE client"

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        timers: Timers = DEFAULT_TIMERS,
        peer: object = None,
        context: Any = None,
    ) -> None:
        super().__init__(request, reliable=reliable, timers=timers, peer=peer, context=context)
        self._ack: Transmit | None = None

    @property
    def cancellable(self) -> bool:
        """§9.1: a CANCEL may go only once a provisional response came and before a final one."""
        return self.state is PROCEEDING


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2 (figure 6)."""

    __slots__ = ()
    kind = "non-INVITE client"


def client_transaction(
    request: Request,
    *,
    reliable: bool = False,
    timers: Timers = DEFAULT_TIMERS,
    peer: object = None,
    context: Any = None,
) -> ClientTransaction:
    """The client machine for ``request`` (§17.1). ACK has none: §17.1.1.3 and §13.2.2.4 send it directly."""
    if request.method == "ACK":
        raise LocalProtocolError("ACK is sent without a client transaction (§17.1.1.3, §13.2.2.4)")
    cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
    return cls(request, reliable=reliable, timers=timers, peer=peer, context=context)


# ---- operations: the right-hand side of the tables -------------------------------------------------------
# Each is op(transaction, message or None, actions out). The table has already moved the state.


def _send_request(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    tx = t._tx = Transmit(t.request, t, t.peer)
    out.append(tx)


def _resend_request(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    if t._tx is not None:
        out.append(t._tx)


def _start_a_b(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    if not t.reliable:
        t._interval = t.config.t1
        out.append(StartTimer("A", t.config.t1))
    out.append(StartTimer("B", t.config.b))


def _double_a(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    # §17.1.1.2: A doubles with no T2 cap; B (64*T1) ends the series after six retransmissions.
    t._interval *= 2
    out.append(StartTimer("A", t._interval))


def _cancel_a_b(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(_CANCEL["A"])
    out.append(_CANCEL["B"])


def _start_e_f(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    if not t.reliable:
        t._interval = t.config.t1
        out.append(StartTimer("E", t.config.t1))
    out.append(StartTimer("F", t.config.f))


def _backoff_e(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    t._interval = min(2 * t._interval, t.config.t2)
    out.append(StartTimer("E", t._interval))


def _e_at_t2(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    # §17.1.2.2: once a provisional response came, retransmit every T2.
    t._interval = t.config.t2
    out.append(StartTimer("E", t._interval))


def _cancel_e_f(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(_CANCEL["E"])
    out.append(_CANCEL["F"])


def _send_ack(t: InviteClientTransaction, msg: Message | None, out: list[Action]) -> None:
    tx = t._ack = Transmit(make_ack(t.request, cast(Response, msg)), t, t.peer)
    out.append(tx)


def _resend_ack(t: InviteClientTransaction, msg: Message | None, out: list[Action]) -> None:
    if t._ack is not None:
        out.append(t._ack)


def _linger_d(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    _linger(t, "D", t.config.d, out)


def _linger_k(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    _linger(t, "K", t.config.k, out)


def _start_m(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(StartTimer("M", t.config.m))


def _client_timeout(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(Timeout(t, make_response(t.request, 408)))


def _client_transport_error(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(TransportError(t, make_response(t.request, 503)))


def _late_transport_error(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(TransportError(t, None))


# ---- the tables ------------------------------------------------------------------------------------------


INVITE_CLIENT: Table = {
    # RFC 3261 §17.1.1.2, RFC 6026 §7.2 and figure 5
    (INIT, E.START): (CALLING, (_send_request, _start_a_b)),
    (CALLING, E.TIMER_A): (CALLING, (_resend_request, _double_a)),
    (CALLING, E.TIMER_B): (TERMINATED, (_client_timeout, _terminate)),
    (CALLING, E.TRANSPORT_ERROR): (TERMINATED, (_client_transport_error, _terminate)),
    (CALLING, E.PROVISIONAL): (PROCEEDING, (_cancel_a_b, _deliver)),
    (CALLING, E.SUCCESS): (ACCEPTED, (_cancel_a_b, _deliver, _start_m)),
    (CALLING, E.FAILURE): (COMPLETED, (_cancel_a_b, _send_ack, _deliver, _linger_d)),
    (PROCEEDING, E.PROVISIONAL): (PROCEEDING, (_deliver,)),
    (PROCEEDING, E.SUCCESS): (ACCEPTED, (_deliver, _start_m)),
    (PROCEEDING, E.FAILURE): (COMPLETED, (_send_ack, _deliver, _linger_d)),
    (COMPLETED, E.FAILURE): (COMPLETED, (_resend_ack,)),  # §17.1.1.2: not passed up again
    (COMPLETED, E.TIMER_D): (TERMINATED, (_terminate,)),
    (COMPLETED, E.TRANSPORT_ERROR): (TERMINATED, (_late_transport_error, _terminate)),
    # every 2xx goes up, the TU acknowledges it (RFC 6026 §7.2); the machine only keeps the match alive
    (ACCEPTED, E.SUCCESS): (ACCEPTED, (_deliver,)),
    (ACCEPTED, E.TIMER_M): (TERMINATED, (_terminate,)),
}
NON_INVITE_CLIENT: Table = {
    # RFC 3261 §17.1.2.2, figure 6
    (INIT, E.START): (TRYING, (_send_request, _start_e_f)),
    (TRYING, E.TIMER_E): (TRYING, (_resend_request, _backoff_e)),
    (TRYING, E.TIMER_F): (TERMINATED, (_client_timeout, _terminate)),
    (TRYING, E.TRANSPORT_ERROR): (TERMINATED, (_client_transport_error, _terminate)),
    (TRYING, E.PROVISIONAL): (PROCEEDING, (_deliver,)),
    (TRYING, E.SUCCESS): (COMPLETED, (_cancel_e_f, _deliver, _linger_k)),
    (TRYING, E.FAILURE): (COMPLETED, (_cancel_e_f, _deliver, _linger_k)),
    (PROCEEDING, E.TIMER_E): (PROCEEDING, (_resend_request, _e_at_t2)),
    (PROCEEDING, E.TIMER_F): (TERMINATED, (_client_timeout, _terminate)),
    (PROCEEDING, E.TRANSPORT_ERROR): (TERMINATED, (_client_transport_error, _terminate)),
    (PROCEEDING, E.PROVISIONAL): (PROCEEDING, (_deliver,)),
    (PROCEEDING, E.SUCCESS): (COMPLETED, (_cancel_e_f, _deliver, _linger_k)),
    (PROCEEDING, E.FAILURE): (COMPLETED, (_cancel_e_f, _deliver, _linger_k)),
    (COMPLETED, E.TIMER_K): (TERMINATED, (_terminate,)),
}
InviteClientTransaction._table = INVITE_CLIENT
NonInviteClientTransaction._table = NON_INVITE_CLIENT


# ---- ACK and CANCEL --------------------------------------------------------------------------------------


def _top_via_value(line: str) -> str:
    return split_comma(line)[0] if "," in line else line


def _hop_request(method: str, request: Request, to: str | None, extra: list[list[str]]) -> Request:
    """A request that shares the hop of ``request``: its top Via only, its Request-URI, From, Call-ID,
    CSeq number, Route set and Max-Forwards; To replaced when ``to`` is given."""
    headers: list[list[str]] = []
    via = True
    max_forwards = False
    for name, value in request.headers:
        if name == "Via":
            if via:
                headers.append(["Via", _top_via_value(value)])
                via = False
        elif name == "To":
            headers.append(["To", value if to is None else to])
        elif name == "CSeq":
            headers.append(["CSeq", f"{request.cseq.number} {method}"])
        elif name in ("From", "Call-ID", "Route"):
            headers.append([name, value])
        elif name == "Max-Forwards":
            headers.append([name, value])
            max_forwards = True
    if not max_forwards:
        headers.append(["Max-Forwards", "70"])
    headers.extend(extra)
    request.start_line()  # refreshes uri_text when the TU edited the parsed URI in place
    return Request(method, request.uri_text, headers)


def make_ack(request: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a 300-699 response to ``request`` (§17.1.1.3): Request-URI,
    Call-ID, From, top Via, CSeq number and Route of the INVITE; To of the response."""
    return _hop_request("ACK", request, response.get("To"), [])


def make_cancel(request: Request, reason: str | None = None) -> Request:
    """The CANCEL of ``request`` (§9.1): Request-URI, Call-ID, To, From, CSeq number, top Via and Route
    of the request. ``reason`` is a Reason header value (RFC 3326), e.g. ``SIP;cause=200;text="Call
    completed elsewhere"``. Send it on its own client transaction (same branch, method CANCEL)."""
    if request.method == "ACK":
        raise LocalProtocolError("an ACK cannot be cancelled (§9.1)")
    return _hop_request("CANCEL", request, None, [["Reason", reason]] if reason else [])


def new_branch() -> str:
    """A branch id for a new client transaction: the RFC 3261 magic cookie then 64 unguessable bits
    (§8.1.1.7; unguessable so that an off-path attacker cannot forge responses or CANCELs)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


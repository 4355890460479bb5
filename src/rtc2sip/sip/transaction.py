"""SIP transactions (RFC 3261 §17 as corrected by RFC 6026), sans-I/O.

Four state machines, each a table of ``(state, event) -> (new state, operations)`` in the manner of h11's
``_state.py``: reading a table is reading the figure of the RFC it comes from (RFC 6026 figures 5 and 7,
RFC 3261 figures 6 and 8). A machine never touches a socket or a clock: it is fed events
(:meth:`~Transaction.start`, ``receive``, ``send``, :meth:`~Transaction.timer_fired`,
:meth:`~Transaction.transport_error`) and answers with a list of actions:

- :class:`Transmit`: put this message on the wire, toward ``peer`` (the same instance comes back for every
  retransmission, so a transport may cache the bytes in :attr:`Transmit.data`);
- :class:`StartTimer` / :class:`CancelTimer`: arm or disarm one of the §17 timers (A … M);
- :class:`Deliver`: pass this request or response up to the transaction user (TU);
- :class:`Timeout` / :class:`TransportError`: tell the TU the transaction failed; a client transaction
  carries the response a proxy must act on as if it had arrived (408, §16.8; 503, §16.9);
- :class:`Terminated`: the transaction is over; its owner drops it and every timer it armed.

Events the RFC does not list for a state are absorbed when they come from the network or a timer (a late
retransmission, a stale timer) and raise :class:`LocalProtocolError` when they come from the TU.

:class:`TransactionLayer` owns the transactions of one SIP element: it matches incoming messages to them
(§17.1.3, §17.2.3, with the RFC 2543 fallback), keeps their timers in one heap driven by a clock value the
caller passes in, and bounds their number.
"""

from __future__ import annotations

import heapq
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, cast, final

from .headers import split_comma
from .message import MAGIC_COOKIE, Message, Request, Response, make_response

__all__ = [
    "DEFAULT_MAX_TRANSACTIONS",
    "Action",
    "CancelTimer",
    "ClientTransaction",
    "Deliver",
    "Event",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "LayerAction",
    "LayerFull",
    "LocalProtocolError",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "ServerTransaction",
    "StartTimer",
    "State",
    "Terminated",
    "Timeout",
    "Timers",
    "Transaction",
    "TransactionError",
    "TransactionLayer",
    "Transmit",
    "TransportError",
    "client_transaction",
    "make_ack",
    "make_cancel",
    "new_branch",
    "server_transaction",
]


# ---- errors ----------------------------------------------------------------------------------------------


class TransactionError(Exception):
    """Base of the errors this module raises."""


class LocalProtocolError(TransactionError):
    """The TU asked for something the transaction cannot do in its state (h11's name for our own bugs)."""


class LayerFull(TransactionError):
    """:class:`TransactionLayer` already holds ``max_transactions``; the TU should answer 503."""


# ---- timers ----------------------------------------------------------------------------------------------


class Timers:
    """Timer values of RFC 3261 table 4 and RFC 6026 §8, derived from T1, T2 and T4 (seconds).

    One instance is shared by every transaction of a layer. ``d`` defaults to the larger of 32 s and
    64*T1, since §17.1.1.2 asks for "at least 32 seconds" and it must outlast the server's timer H.
    """

    __slots__ = ("b", "d", "f", "h", "i", "j", "k", "l", "m", "t1", "t2", "t4")

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0, d: float | None = None) -> None:
        if not 0 < t1 <= t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if t4 <= 0:
            raise ValueError("T4 must be positive")
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.b = self.f = self.h = self.j = self.l = self.m = 64 * t1
        self.d = max(32.0, 64 * t1) if d is None else d
        self.i = self.k = t4

    def __repr__(self) -> str:
        return f"Timers(t1={self.t1}, t2={self.t2}, t4={self.t4}, d={self.d})"


DEFAULT_TIMERS = Timers()


# ---- actions ---------------------------------------------------------------------------------------------


@final
@dataclass(slots=True, eq=False)
class Transmit:
    """Send ``message`` toward ``peer`` (opaque to this module: a flow, a target…).

    A retransmission re-emits the very same instance, so :meth:`payload` serialises once.
    """

    message: Message
    txn: Transaction | None
    peer: object
    data: bytes | None = None

    def payload(self) -> bytes:
        if self.data is None:
            self.data = self.message.to_bytes()
        return self.data


@final
@dataclass(slots=True)
class StartTimer:
    """Arm timer ``name`` to fire after ``delay`` seconds (re-arming replaces the previous deadline)."""

    name: str
    delay: float


@final
@dataclass(slots=True, frozen=True)
class CancelTimer:
    name: str


@final
@dataclass(slots=True, eq=False)
class Deliver:
    """Pass ``message`` to the TU. ``txn`` is None for a stray message (no transaction matched, §17.1.3 /
    §17.2.3): an ACK for a 2xx, or a response to nothing this element sent."""

    message: Message
    txn: Transaction | None


@final
@dataclass(slots=True, eq=False)
class Timeout:
    """Timer B, F or H fired. ``response`` is the 408 a client transaction's TU acts on (§16.8, §8.1.3.1);
    None for a server transaction (timer H: the ACK never came, §17.2.1)."""

    txn: Transaction
    response: Response | None


@final
@dataclass(slots=True, eq=False)
class TransportError:
    """The transport could not send (§17.1.4, §17.2.4). ``response`` is the 503 a client transaction's TU
    acts on (§16.9, §8.1.3.1), or None when a final response already reached the TU."""

    txn: Transaction
    response: Response | None


@final
@dataclass(slots=True, eq=False)
class Terminated:
    """The transaction is over (§17.1.1.2: destroyed the instant it enters Terminated)."""

    txn: Transaction


Action = Transmit | StartTimer | CancelTimer | Deliver | Timeout | TransportError | Terminated
# What TransactionLayer hands back: the timer actions stay inside it. Every one has a ``txn``.
LayerAction = Transmit | Deliver | Timeout | TransportError | Terminated


# ---- states and events -----------------------------------------------------------------------------------


class State(StrEnum):
    INIT = "init"  # built, not started: not in the RFC figures, it makes start() one more table entry
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class Event(StrEnum):
    """What a machine reacts to. A timer event's value is the timer's letter, so ``timer_fired("A")``
    looks the table up with the plain string."""

    START = "start"
    # from the network
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "300-699"
    REQUEST = "request"  # the request again: a retransmission
    ACK = "ack"
    TRANSPORT_ERROR = "transport-error"
    # from the TU
    TU_PROVISIONAL = "1xx from TU"
    TU_SUCCESS = "2xx from TU"
    TU_FAILURE = "300-699 from TU"
    # timers
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"


INIT, CALLING, TRYING, PROCEEDING = State.INIT, State.CALLING, State.TRYING, State.PROCEEDING
COMPLETED, CONFIRMED, ACCEPTED = State.COMPLETED, State.CONFIRMED, State.ACCEPTED
TERMINATED = State.TERMINATED
E = Event
_RETRANSMIT_TIMERS = frozenset({E.TIMER_A, E.TIMER_E, E.TIMER_G})
_LOCAL_EVENTS = frozenset({E.START, E.TU_PROVISIONAL, E.TU_SUCCESS, E.TU_FAILURE})

# Cancelling is the same action every time: share the instances instead of allocating.
_CANCEL = {name: CancelTimer(name) for name in "ABDEFGHIJKLM"}


def _response_event(status: int) -> Event:
    if status < 200:
        return E.PROVISIONAL
    return E.SUCCESS if status < 300 else E.FAILURE


def _tu_event(status: int) -> Event:
    if status < 200:
        return E.TU_PROVISIONAL
    return E.TU_SUCCESS if status < 300 else E.TU_FAILURE


# ---- transactions ----------------------------------------------------------------------------------------

Op = Callable[[Any, Message | None, list[Action]], None]
Table = Mapping[tuple[str, str], tuple[State, tuple[Op, ...]]]


class Transaction:
    """State shared by the four machines. ``context`` is free for the TU (a proxy's branch record…)."""

    __slots__ = ("_interval", "_keys", "_timers", "_tx", "config", "context", "peer", "reliable", "request",
                 "state")

    _table: ClassVar[Table]
    kind: ClassVar[str]

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        timers: Timers = DEFAULT_TIMERS,
        peer: object = None,
        context: Any = None,
    ) -> None:
        self.request = request
        self.state = INIT
        self.reliable = reliable
        self.config = timers
        self.peer = peer
        self.context = context
        self._tx: Transmit | None = None  # request (client) or last response (server) to send again
        self._interval = 0.0  # current value of the doubling timer (A, E or G)
        # bookkeeping of TransactionLayer: its keys for this transaction and its live timers
        self._keys: list[tuple[object, ...]] = []
        self._timers: dict[str, int] = {}

    @property
    def terminated(self) -> bool:
        return self.state is TERMINATED

    @property
    def branch(self) -> str | None:
        return self.request.top_via.branch

    def start(self) -> list[Action]:
        """Client: send the request (§17.1.1.2, §17.1.2.2). Server: pass it up to the TU (§17.2.1)."""
        return self._handle(E.START, None)

    def timer_fired(self, name: str) -> list[Action]:
        """Timer ``name`` (a letter, A … M) expired."""
        if self.reliable and name in _RETRANSMIT_TIMERS:
            return []  # never armed over a reliable transport (§17.1.1.2, §17.1.2.2, §17.2.1)
        return self._handle(name, None)

    def transport_error(self) -> list[Action]:
        """The transport failed to send one of this transaction's messages (§17.1.4, §17.2.4)."""
        return self._handle(E.TRANSPORT_ERROR, None)

    def _handle(self, event: str, msg: Message | None) -> list[Action]:
        entry = self._table.get((self.state, event))
        if entry is None:
            if event in _LOCAL_EVENTS:
                raise LocalProtocolError(f"{self.kind} transaction in state {self.state}: cannot {event}")
            return []  # absorbed: a late retransmission or a timer of a state already left
        self.state = entry[0]
        out: list[Action] = []
        for op in entry[1]:
            op(self, msg, out)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} branch={self.branch} {self.state}>"


class ClientTransaction(Transaction):
    __slots__ = ()

    def receive(self, response: Response) -> list[Action]:
        """A response matched this transaction (§17.1.3)."""
        return self._handle(_response_event(response.status), response)


class ServerTransaction(Transaction):
    __slots__ = ("_trying",)

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool = False,
        timers: Timers = DEFAULT_TIMERS,
        peer: object = None,
        context: Any = None,
        trying: bool = True,
    ) -> None:
        super().__init__(request, reliable=reliable, timers=timers, peer=peer, context=context)
        self._trying = trying

    def receive(self, request: Request) -> list[Action]:
        """A retransmission of the request, or the ACK of an INVITE, matched this transaction (§17.2.3)."""
        return self._handle(E.ACK if request.method == "ACK" else E.REQUEST, request)

    def send(self, response: Response) -> list[Action]:
        """The TU answers the request."""
        return self._handle(_tu_event(response.status), response)

    @property
    def last_response(self) -> Response | None:
        tx = self._tx
        return cast(Response, tx.message) if tx is not None else None


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


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with the Accepted state and timer L of RFC 6026 §7.1 (figure 7)."""

    __slots__ = ()
    kind = "INVITE server"


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2 (figure 8)."""

    __slots__ = ()
    kind = "non-INVITE server"


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


def _deliver(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(Deliver(msg if msg is not None else t.request, t))


def _terminate(t: Transaction, msg: Message | None, out: list[Action]) -> None:
    out.append(Terminated(t))


def _linger(t: Transaction, name: str, delay: float, out: list[Action]) -> None:
    # Completed/Confirmed only absorb retransmissions; a reliable transport has none, so the timer is zero
    # and the transaction ends now (§17.1.1.2 D, §17.1.2.2 K, §17.2.1 I, §17.2.2 J).
    if t.reliable or delay <= 0:
        t.state = TERMINATED
        out.append(Terminated(t))
    else:
        out.append(StartTimer(name, delay))


# client side


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


# server side


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

InviteClientTransaction._table = INVITE_CLIENT
NonInviteClientTransaction._table = NON_INVITE_CLIENT
InviteServerTransaction._table = INVITE_SERVER
NonInviteServerTransaction._table = NON_INVITE_SERVER


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


# ---- the transaction layer -------------------------------------------------------------------------------

# Sized for one process at 1,200 calls/s of ~7 transactions: over UDP an INVITE transaction lives ~35 s
# (timer L or M after the answer), a non-INVITE one up to 32 s (J) or 5 s (K), i.e. ~200,000 alive at once.
DEFAULT_MAX_TRANSACTIONS = 250_000

_COMPACT_MIN = 1024
_LEGACY_KEY_LEN = 7  # RFC 2543 keys have 7 fields, RFC 3261 ones 4: one dict holds both without clashes


def _legacy_key(request: Request, method: str, to_tag: str | None) -> tuple[object, ...]:
    # §17.2.3 RFC 2543 matching: Request-URI, To tag, From tag, Call-ID, CSeq and top Via
    cseq = request.cseq
    return (request.uri_text, to_tag, request.from_.tag, request.call_id, cseq.number, method,
            str(request.top_via))


def _server_key(request: Request, method: str) -> tuple[object, ...]:
    """§17.2.3: branch, sent-by and method (ACK and CANCEL pass the method they are matched with)."""
    via = request.top_via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, method)
    return _legacy_key(request, method, request.to.tag)


@dataclass(slots=True, eq=False)
class _Stats:
    """Counters for monitoring."""

    created: int = 0
    rejected: int = 0  # requests answered 503 because the layer was full
    stray_responses: int = 0
    stray_acks: int = 0


class TransactionLayer:
    """The transactions of one SIP element: matching (§17.1.3, §17.2.3), timers, bounds. Sans-I/O.

    Every entry point takes ``now`` (seconds on any monotonic clock the caller chooses) and returns the
    actions for the caller to perform: :class:`Transmit`, :class:`Deliver`, :class:`Timeout`,
    :class:`TransportError` and :class:`Terminated`. Timer actions never leave the layer: the caller
    sleeps until :meth:`next_timer_deadline` and then calls :meth:`tick`.

    ``max_transactions`` bounds the live transactions (client and server together). Measured: a
    transaction with its 100 and final response and its timers costs ~1.6 KB, plus the request it
    holds (~5 KB for a small parsed INVITE, usually shared with the TU), so the default bound is
    ~1.5 GB at worst. The timer heap holds at most two live entries per transaction, and stale ones
    are compacted away once they outnumber live ones. When full, :meth:`send_request` raises
    :class:`LayerFull` and a new incoming request is answered 503 statelessly (its ACK then matches
    nothing and is delivered as stray). Terminated transactions are removed at once.

    A proxy drives it like this (``dispatch`` sends each Transmit on ``a.peer`` and hands the rest to
    the proxy core)::

        dispatch(layer.receive(msg, loop.time(), reliable=src.reliable, peer=src))
        # core, on Deliver(request, server_txn): forward on a new branch
        fwd.add("Via", f"SIP/2.0/UDP {me};branch={layer.new_branch()}", top=True)
        client_txn, actions = layer.send_request(fwd, loop.time(), peer=target, context=server_txn)
        # core, on Deliver(response, client_txn) or Timeout(client_txn, 408): answer upstream
        dispatch(layer.send_response(client_txn.context, upstream_copy, loop.time()))
        # timer task: sleep until layer.next_timer_deadline(), then
        dispatch(layer.tick(loop.time()))
    """

    __slots__ = ("_clients", "_count", "_heap", "_seq", "_servers", "_stale", "auto_trying", "branch_factory",
                 "max_transactions", "stats", "timers")

    def __init__(
        self,
        timers: Timers = DEFAULT_TIMERS,
        *,
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
        auto_trying: bool = True,
        branch_factory: Callable[[], str] = new_branch,
    ) -> None:
        if max_transactions < 1:
            raise ValueError("max_transactions must be positive")
        self.timers = timers
        self.max_transactions = max_transactions
        self.auto_trying = auto_trying
        self.branch_factory = branch_factory
        self.stats = _Stats()
        self._clients: dict[tuple[object, ...], ClientTransaction] = {}
        self._servers: dict[tuple[object, ...], ServerTransaction] = {}
        self._count = 0
        # (deadline, sequence, transaction, timer name); an entry is live while txn._timers[name] == seq
        self._heap: list[tuple[float, int, Transaction, str]] = []
        self._seq = 0
        self._stale = 0

    def __len__(self) -> int:
        return self._count

    def new_branch(self) -> str:
        return self.branch_factory()

    # ---- client side ---------------------------------------------------------------------------------

    def send_request(
        self,
        request: Request,
        now: float,
        *,
        reliable: bool = False,
        peer: object = None,
        context: Any = None,
    ) -> tuple[ClientTransaction, list[LayerAction]]:
        """Start a client transaction for ``request``, whose top Via must carry a branch this element
        made (:meth:`new_branch`). ``peer`` is where the request goes; it comes back on each
        :class:`Transmit`. A CANCEL (:func:`make_cancel`) shares its INVITE's branch: the CSeq method
        keeps their transactions apart (§17.1.3)."""
        branch = request.top_via.branch
        if not branch:
            raise LocalProtocolError("a client transaction needs a branch in its top Via")
        key = (branch, request.method)
        if key in self._clients:
            raise LocalProtocolError(f"a {request.method} client transaction with branch {branch} exists")
        if self._count >= self.max_transactions:
            raise LayerFull(f"{self._count} transactions")
        txn = client_transaction(request, reliable=reliable, timers=self.timers, peer=peer, context=context)
        self._clients[key] = txn
        txn._keys.append(key)
        self._count += 1
        self.stats.created += 1
        return txn, self._run(txn, txn.start(), now)

    def receive_response(self, response: Response, now: float) -> list[LayerAction]:
        """§17.1.3: match on the top Via branch and the CSeq method; a stray response is delivered with
        ``txn=None`` (RFC 6026 §7.3: a proxy drops it rather than forwarding it)."""
        key = (response.top_via.branch, response.cseq.method)
        txn = self._clients.get(key)
        if txn is None:
            self.stats.stray_responses += 1
            return [Deliver(response, None)]
        return self._run(txn, txn.receive(response), now)

    def find_client(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    # ---- server side ---------------------------------------------------------------------------------

    def receive_request(
        self,
        request: Request,
        now: float,
        *,
        reliable: bool = False,
        peer: object = None,
    ) -> list[LayerAction]:
        """Match ``request`` to a server transaction (§17.2.3) or create one and deliver the request.

        ``peer`` is where responses go (the flow it came on); ``reliable`` whether that transport is.
        An ACK that matches nothing (the ACK of a 2xx) is delivered with ``txn=None``.
        """
        method = request.method
        if method == "ACK":
            txn = self._match_ack(request)
            if txn is None:
                self.stats.stray_acks += 1
                return [Deliver(request, None)]
            return self._run(txn, txn.receive(request), now)
        key = _server_key(request, method)
        txn = self._servers.get(key)
        if txn is not None:
            return self._run(txn, txn.receive(request), now)
        if self._count >= self.max_transactions:
            self.stats.rejected += 1
            busy = make_response(request, 503)
            busy.add("Retry-After", "5")
            return [Transmit(busy, None, peer)]
        txn = server_transaction(request, reliable=reliable, timers=self.timers, peer=peer,
                                 trying=self.auto_trying)
        self._servers[key] = txn
        txn._keys.append(key)
        self._count += 1
        self.stats.created += 1
        return self._run(txn, txn.start(), now)

    def send_response(self, txn: ServerTransaction, response: Response, now: float) -> list[LayerAction]:
        """The TU answers the request of ``txn``."""
        if txn.state is TERMINATED:
            raise LocalProtocolError(f"{txn!r} is terminated")
        actions = txn.send(response)
        if (response.status >= 200 and type(txn) is InviteServerTransaction and txn._keys
                and len(txn._keys[0]) == _LEGACY_KEY_LEN):
            # An RFC 2543 ACK carries the To tag of the response it acknowledges (§17.2.3), which the
            # INVITE did not have: index the transaction under that too.
            # Built from the stored key, not txn.request, which a proxy may have rewritten since.
            key = txn._keys[0]
            alias = (key[0], response.to.tag, key[2], key[3], key[4], "ACK", key[6])
            if alias not in self._servers:
                self._servers[alias] = txn
                txn._keys.append(alias)
        return self._run(txn, actions, now)

    def find_server(self, request: Request) -> ServerTransaction | None:
        """The server transaction ``request`` belongs to, without feeding it (§17.2.3)."""
        if request.method == "ACK":
            return self._match_ack(request)
        return self._servers.get(_server_key(request, request.method))

    def _match_ack(self, ack: Request) -> ServerTransaction | None:
        key = _server_key(ack, "INVITE")
        txn = self._servers.get(key)
        if txn is None and len(key) == _LEGACY_KEY_LEN:
            # RFC 2543: the To tag is the one of the response acknowledged, indexed by send_response
            txn = self._servers.get(_legacy_key(ack, "ACK", ack.to.tag))
        return txn

    def find_cancel_target(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE server transaction a CANCEL names (§9.2: the §17.2.3 rules, method aside), or None
        (then the TU answers the CANCEL 481)."""
        txn = self._servers.get(_server_key(cancel, "INVITE"))
        return txn if type(txn) is InviteServerTransaction else None

    # ---- both ----------------------------------------------------------------------------------------

    def receive(
        self, message: Request | Response, now: float, *, reliable: bool = False, peer: object = None
    ) -> list[LayerAction]:
        """A message from the network: :meth:`receive_request` or :meth:`receive_response`."""
        if type(message) is Response:
            return self.receive_response(message, now)
        return self.receive_request(cast(Request, message), now, reliable=reliable, peer=peer)

    def transport_error(self, txn: Transaction, now: float) -> list[LayerAction]:
        """The transport could not send a :class:`Transmit` of ``txn``."""
        if txn.state is TERMINATED:
            return []
        return self._run(txn, txn.transport_error(), now)

    # ---- time ----------------------------------------------------------------------------------------

    def next_timer_deadline(self) -> float | None:
        """When :meth:`tick` has work next (None: no timer armed)."""
        heap = self._heap
        while heap:
            _, seq, txn, name = heap[0]
            if txn._timers.get(name) == seq:
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def tick(self, now: float) -> list[LayerAction]:
        """Fire every timer due at ``now``. Timers re-armed here count from ``now``, so a late tick
        delays the rest of a retransmission series instead of sending a burst."""
        heap = self._heap
        out: list[LayerAction] = []
        while heap and heap[0][0] <= now:
            _, seq, txn, name = heapq.heappop(heap)
            timers = txn._timers
            if timers.get(name) != seq:
                self._stale -= 1
                continue
            del timers[name]
            out.extend(self._run(txn, txn.timer_fired(name), now))
        return out

    def _run(self, txn: Transaction, actions: list[Action], now: float) -> list[LayerAction]:
        """Apply the timer and termination actions of ``txn``; return the rest, in order."""
        out: list[LayerAction] = []
        timers = txn._timers
        for a in actions:
            if type(a) is StartTimer:
                seq = self._seq = self._seq + 1
                name = a.name
                if name in timers:
                    self._stale += 1
                timers[name] = seq
                heapq.heappush(self._heap, (now + a.delay, seq, txn, name))
            elif type(a) is CancelTimer:
                if timers.pop(a.name, None) is not None:
                    self._stale += 1
            else:
                if type(a) is Terminated:
                    self._drop(txn)
                out.append(a)
        if self._stale > _COMPACT_MIN and self._stale > len(self._heap) >> 1:
            self._compact()
        return out

    def _drop(self, txn: Transaction) -> None:
        table: dict[tuple[object, ...], Any]
        table = self._clients if isinstance(txn, ClientTransaction) else self._servers
        for key in txn._keys:
            if table.get(key) is txn:
                del table[key]
        txn._keys.clear()
        self._stale += len(txn._timers)
        txn._timers.clear()
        # a Transmit points back at its transaction: break the cycle so reference counting frees both
        # at once instead of leaving them to the cyclic GC, whose full passes stall a busy proxy
        txn._tx = None
        if type(txn) is InviteClientTransaction:
            txn._ack = None
        self._count -= 1

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2]._timers.get(e[3]) == e[1]]
        heapq.heapify(self._heap)
        self._stale = 0

"""SIP transactions (RFC 3261 §17 as corrected by RFC 6026), sans-I/O: what the four machines share.

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

This module holds the timers (RFC 3261 table 4, RFC 6026 §8), actions, states, events and the table-driven
:class:`Transaction`; the client machines are in ``client_transaction`` (§17.1.1, §17.1.2), the server ones in
``server_transaction`` (§17.2.1, §17.2.2), and ``transaction_layer`` has :class:`TransactionLayer`, which owns
the transactions of one SIP element: it matches incoming messages to them (§17.1.3, §17.2.3, with the RFC
2543 fallback), keeps their timers in one heap driven by a clock value the caller passes in, and bounds
their number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, cast, final

from .message import Message, Request, Response

__all__ = [
    "Action",
    "CancelTimer",
    "ClientTransaction",
    "Deliver",
    "Event",
    "LayerAction",
    "LayerFull",
    "LocalProtocolError",
    "ServerTransaction",
    "StartTimer",
    "State",
    "Terminated",
    "Timeout",
    "Timers",
    "Transaction",
    "TransactionError",
    "Transmit",
    "TransportError",
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


# ---- operations both sides share -------------------------------------------------------------------------


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


"""The transactions of one SIP element (RFC 3261 §17.1.3, §17.2.3 matching with the RFC 2543 fallback), sans-I/O.

:class:`TransactionLayer` creates the client and server machines, matches incoming messages to them,
keeps their timers in one heap driven by a clock value the caller passes in, and bounds their number.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .client_transaction import InviteClientTransaction, client_transaction, new_branch
from .message import MAGIC_COOKIE, Request, Response, make_response
from .server_transaction import InviteServerTransaction, server_transaction
from .transaction import (
    DEFAULT_TIMERS,
    TERMINATED,
    Action,
    CancelTimer,
    ClientTransaction,
    Deliver,
    LayerAction,
    LayerFull,
    LocalProtocolError,
    ServerTransaction,
    StartTimer,
    Terminated,
    Timers,
    Transaction,
    Transmit,
)

__all__ = [
    "DEFAULT_MAX_TRANSACTIONS",
    "TransactionLayer",
]

# Sized for one process at 1,200 calls/s of ~7 transactions: over UDP an INVITE transaction lives ~35 s
# (timer L or M after the answer), a non-INVITE one up to 32 s (J) or 5 s (K), i.e. ~200,000 alive at once.
DEFAULT_MAX_TRANSACTIONS = 250_000
_COMPACT_MIN = 1024
_LEGACY_KEY_LEN = 7  # RFC 2543 keys have 7 fields, RFC 3261 ones 6: one dict holds both without clashes


def _legacy_key(request: Request, method: str, to_tag: str | None) -> tuple[object, ...]:
    # §17.2.3 RFC 2543 matching: Request-URI, To tag, From tag, Call-ID, CSeq and top Via
    cseq = request.cseq
    return (request.uri_text, to_tag, request.from_.tag, request.call_id, cseq.number, method,
            str(request.top_via))


def _server_key(request: Request, method: str) -> tuple[object, ...]:
    """§17.2.3: branch, sent-by and method (ACK and CANCEL pass the method they are matched with).

    Call-ID and CSeq number join them because senders reuse branches: RFC 4475's escnull and
    regescrt share one, and over UDP the second would be absorbed as a retransmission of the first
    and never answered. A real retransmission, a CANCEL and a non-2xx ACK all carry the same Call-ID
    and CSeq number (§9.1, §17.1.1.3), so they still match."""
    via = request.top_via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host.lower(), via.port, method, request.call_id, request.cseq.number)
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


"""The RTCWeb Breaker's model of a broken call: a :class:`Call` of two :class:`Leg` s, each a SIP dialog
of its own (RFC 3261 §12), the ``context`` of the B2BUA's client transactions (:class:`TxnContext`) and
the breaker's settings (:class:`BreakerConfig`).

A leg also carries its share of RFC 3262 (reliable provisionals toward the caller), RFC 3515 (the
REFERs it relays) and §22 (the credentials its challenges are answered with).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..sip.message import Request, Response
from ..sip.transaction import ClientTransaction, ServerTransaction
from ..transport.base import Target
from .dialog import Dialog
from .host import Cancellable
from .policy import ClientParams, Mode

__all__ = ["BreakerConfig", "Call", "Leg", "TxnContext"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    mode: Mode = Mode.AUTO
    enable_100rel: bool = False  # webrtc2sip's enable-100rel: Supported: 100rel on the legacy leg
    max_calls: int = 10_000  # each costs two dialogs, two SDPs and a media session (~10 KB here)
    # webrtc2sip's dtmf-type: rfc4733 turns a browser's INFO digits into RFC 4733; "info" (or webrtc2sip's
    # "rfc2833") keeps them INFO and turns the legacy side's RFC 4733 events into INFO toward the browser
    dtmf_type: str = "rfc4733"
    # [limits] final_response_timeout: a callee leg that has not rung by then gets the caller a 408
    # (issue 13: never silence; once it rings it may ring for minutes)
    final_response_timeout: float = 8.0


@dataclass(eq=False)
class Leg:
    """One side of a broken call: a dialog and how to reach the peer."""

    call: Call
    name: str  # "browser" or "legacy", for the log
    webrtc: bool
    is_caller: bool  # UAS side: it sent us the INVITE
    dialog: Dialog
    flow: Target | None = None  # fixed next hop: a browser's WebSocket (RFC 7118 §5.4: no other way in)
    target: Target | None = None  # where our initial INVITE went (callee leg)
    invite_st: ServerTransaction | None = None  # caller leg: the INVITE we answer
    final_sent: bool = False
    invite: Request | None = None  # callee leg: our last INVITE (CANCEL and auth retries copy it)
    invite_ct: ClientTransaction | None = None
    invite_final: bool = False
    cancel_pending: bool = False
    initial_routes: list[str] = field(default_factory=list)
    ack: Request | None = None  # callee leg: the ACK of the 2xx, sent again for each retransmission
    ack_target: Target | None = None
    local_sdp: bytes = b""  # the last SDP we sent this leg (an offerless re-INVITE gets it again)
    early_answer: bytes = b""  # callee leg: SDP answer already taken from a 18x (§13.2.1)
    creds: ClientParams | None = None  # impi and ha1 for the legacy leg's challenges
    relay_auth: list[tuple[str, str]] = field(default_factory=list)  # the browser's own credentials
    auth_tries: int = 0
    nonce_counts: dict[str, int] = field(default_factory=dict)
    last_rseq: int = 0
    # RFC 3262 toward the caller: what its INVITE said, and our reliable provisionals to it
    rel_supported: bool = False  # 100rel in its Supported or Require
    rel_required: bool = False  # 100rel in its Require: every 1xx we send it must be reliable
    rseq_out: int = 0
    rel_pending: tuple[int, Response, Response | None] | None = None  # (RSeq, our 1xx, the callee's to PRACK)
    rel_queue: deque[tuple[Response, Response | None]] = field(default_factory=deque)  # §3: one at a time
    rel_timer: Cancellable | None = None
    rel_interval: float = 0.0
    held_final: Response | None = None  # our 2xx, waiting for the PRACK of a reliable 1xx with SDP
    hop: tuple[str, list[Target]] | None = None  # cached resolution of the dialog's next hop
    reinvite_st: ServerTransaction | None = None  # a re-INVITE/UPDATE with an offer from this leg
    reinvite_out: bool = False  # our re-INVITE/UPDATE toward this leg awaits its answer
    refer_ids: dict[int, int] = field(default_factory=dict)  # CSeq of a REFER we sent here -> the original's

    @property
    def call_id(self) -> str:
        return self.dialog.call_id


@dataclass(eq=False)
class Call:
    id: str
    caller: Leg | None = None
    callee: Leg | None = None
    session: str | None = None
    ended: bool = False
    cancelled: bool = False
    jobs: deque[Callable[[], Awaitable[None]]] = field(default_factory=deque)
    running: bool = False
    started: float = field(default_factory=time.monotonic)
    last_picture_update: float = -1e9  # RFC 5168 INFO sent to the legacy leg (rate-limited)

    def other(self, leg: Leg) -> Leg:
        o = self.callee if leg is self.caller else self.caller
        assert o is not None
        return o

    @property
    def legs(self) -> list[Leg]:
        return [leg for leg in (self.caller, self.callee) if leg is not None]

    @property
    def browser(self) -> Leg | None:
        return next((leg for leg in self.legs if leg.webrtc), None)

    def ids(self) -> str:
        a = self.caller.call_id if self.caller else "-"
        b = self.callee.call_id if self.callee else "-"
        return f"call={self.id} a={a} b={b}"


@dataclass(eq=False, slots=True)
class TxnContext:
    """The ``context`` of the B2BUA's client transactions: which call, which leg, what for."""

    call: Call
    leg: Leg
    kind: str  # invite, reinvite, relay, bye, cancel, prack
    server: ServerTransaction | None = None  # relay/reinvite: the request on the other leg to answer
    request: Request | None = None  # what was sent (auth retries)
    ack: Request | None = None  # reinvite: the ACK of its 2xx, sent again for each retransmission
    ack_target: Target | None = None

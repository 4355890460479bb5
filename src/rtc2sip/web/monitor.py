"""What the live view and ``/metrics`` need beyond the gateway's live tables.

The B2BUA forgets a call and the media plane its session as soon as the call ends; an operator still
wants the ended calls with their cause, and Prometheus wants counters that never go down. The monitor
keeps, with stated bounds:

- the last :data:`HISTORY` ended calls, each a JSON snapshot taken when the call ended (its legs'
  final media figures included): :meth:`Monitor.call_ended` is a B2BUA observer, called before the
  media session is deleted;
- calls ended and failed (never answered) by cause, a label from :func:`cause_label` (bounded set);
- media counters of sessions gone, so that the per-direction packet and byte totals of
  :meth:`Monitor.media_totals` only grow;
- media failures by kind (ICE, DTLS, timeout), from the media plane's failure callback;
- the event loop's lag, measured by a task that sleeps :data:`LAG_INTERVAL` and sees how late it wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, cast

from .api import call_view

if TYPE_CHECKING:
    from ..breaker.b2bua import B2bua, Call
    from ..media.plane import MediaPlane

HISTORY = 100  # ended calls kept for /calls and /api/calls (~3 KB each)
LAG_INTERVAL = 0.5  # seconds between two event-loop lag probes
LAG_WINDOW = 120  # probes kept for the maximum (one minute)

# (leg, direction) of the counters in MediaPlane.stats(): webrtc/legacy, in/out
MEDIA_KEYS = tuple((leg, d) for leg in ("webrtc", "legacy") for d in ("in", "out"))

_STATUS = re.compile(r"^([1-6]\d\d)\b")


def failure_kind(reason: str) -> str:
    """A media plane failure (relay.py's reasons) as ice, dtls, timeout, closed or other. "closed" is
    the browser's DTLS close_notify: a browser hanging up sends it, often before its BYE arrives."""
    r = reason.lower()
    if r.startswith("dtls closed"):
        return "closed"
    if r.startswith("dtls"):  # handshake failed, fingerprint mismatch, closed, did not connect
        return "dtls"
    if r.startswith("ice"):
        return "ice"
    if r.startswith("no media"):
        return "timeout"
    return "other"


def cause_label(reason: str) -> str:
    """The B2BUA's end reason ("486 from legacy", "BYE from browser", "media: dtls failed: ...") as
    a label from a small set: sip_<status>, bye, connection_closed, caller_unreachable,
    media_<ice|dtls|timeout|closed|other>, other."""
    m = _STATUS.match(reason)
    if m:
        return f"sip_{m.group(1)}"
    if reason.startswith("BYE from"):
        return "bye"
    if reason.startswith("connection closed"):
        return "connection_closed"
    if reason.startswith("caller unreachable"):
        return "caller_unreachable"
    if reason.startswith("media: "):
        return "media_" + failure_kind(reason[len("media: "):])
    return "other"


def _counters(stats: dict[str, Any]) -> dict[str, int]:
    """Flat ``"webrtc.in.packets"``-style counters of one MediaPlane.stats() result."""
    out: dict[str, int] = {}
    for leg, d in MEDIA_KEYS:
        part = stats.get(leg) or {}
        out[f"{leg}.{d}.packets"] = int(part.get(f"packets_{d}", 0))
        out[f"{leg}.{d}.bytes"] = int(part.get(f"bytes_{d}", 0))
    for leg in ("webrtc", "legacy"):
        lost = 0
        for stream in (stats.get("streams") or {}).values():
            lost += max(0, int((stream.get(leg) or {}).get("lost", 0)))
        out[f"{leg}.lost"] = lost
    return out


class Monitor:
    """See the module docstring. ``breaker`` and ``media`` are None when the breaker is off."""

    def __init__(self, breaker: B2bua | None, media: MediaPlane | None, *, history: int = HISTORY) -> None:
        self.breaker = breaker
        self.media = media
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.ended: Counter[str] = Counter()  # by cause_label
        self.failed: Counter[str] = Counter()  # ended without an answer, by cause_label
        self.answered = 0
        self.media_failures: Counter[str] = Counter()  # by failure_kind
        self._gone: Counter[str] = Counter()  # counters of media sessions no longer live
        self._live: dict[str, dict[str, int]] = {}  # last counters seen of each live session
        self._final: set[str] = set()  # sessions whose final counters are in _gone already
        self.lag = 0.0
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._probe: asyncio.Task[None] | None = None
        # verdicts of sip:diag@ calls, newest first (rtc2sip.services.diag: on_verdict)
        self.diagnostics: deque[dict[str, Any]] = deque(maxlen=history)
        if breaker is not None:
            breaker.observers.append(self.call_ended)
        if media is not None:
            media.on_failure(self.media_failed)

    # ---- observers -----------------------------------------------------------------------------

    def call_ended(self, call: Call, reason: str) -> None:
        """B2BUA observer: the call's last snapshot goes to the history, its counters to the totals."""
        label = cause_label(reason)
        callee = call.callee
        answered = callee is not None and callee.ack is not None
        self.ended[label] += 1
        if answered:
            self.answered += 1
        else:
            self.failed[label] += 1
        stats = self._session_stats(call.session)
        view = call_view(call, stats, self.media)
        view.update(state="ended", ended_at=time.time(), cause=reason, cause_label=label)
        self.history.appendleft(view)
        if call.session is not None and stats is not None:
            self._gone.update(_counters(stats))
            self._final.add(call.session)
            self._live.pop(call.session, None)

    def media_failed(self, session: str, reason: str) -> None:
        self.media_failures[failure_kind(reason)] += 1

    # ---- figures -------------------------------------------------------------------------------

    @property
    def calls_total(self) -> int:
        """Calls the breaker took: ended ones plus those in progress."""
        active = len(self.breaker.calls) if self.breaker is not None else 0
        return sum(self.ended.values()) + active

    def media_totals(self) -> dict[str, int]:
        """Counters of every media session since start ("webrtc.in.packets", ..., "legacy.lost"):
        sessions gone (their last figures) plus those live."""
        live: dict[str, dict[str, int]] = {}
        if self.media is not None:
            for session in self.media.sessions:
                if session in self._final:
                    continue  # counted when its call ended; its delete is on its way
                stats = self._session_stats(session)
                if stats is not None:
                    live[session] = _counters(stats)
            current = set(self.media.sessions)
            self._final &= current
        for session, counters in self._live.items():
            if session not in live:
                self._gone.update(counters)  # ended without the B2BUA's observer (a failed set-up)
        self._live = live
        total: Counter[str] = Counter(self._gone)
        for counters in live.values():
            total.update(counters)
        return dict(total)

    @property
    def lag_max(self) -> float:
        return max(self._lags, default=0.0)

    def _session_stats(self, session: str | None) -> dict[str, Any] | None:
        if self.media is None or session is None:
            return None
        try:
            return cast(dict[str, Any], self.media.stats(session))
        except KeyError:  # UnknownSession: deleted meanwhile
            return None

    # ---- event-loop lag --------------------------------------------------------------------------

    def start(self) -> None:
        if self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._measure_lag())

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.lag = max(0.0, loop.time() - started - LAG_INTERVAL)
            self._lags.append(self.lag)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

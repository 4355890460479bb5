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
- the event loop's lag, measured by a task that sleeps :data:`LAG_INTERVAL` and sees how late it wakes;
- per call, a time series of each leg sampled every :data:`SAMPLE_INTERVAL` (bitrate in/out, packets
  lost since the last sample and their share, jitter, RTT): the last :data:`SAMPLES` samples, in
  fixed-size float arrays (about 6 KB a call), for at most :data:`TRACKED` calls in progress (calls
  beyond get none) and the last :data:`ENDED_SERIES` ended ones (``/api/calls/{id}/history``);
- for each ended call, a quality summary (:func:`quality_summary`): per leg packets, loss, mean and
  maximum jitter, mean RTT, and an E-model rating with its MOS (:func:`e_model`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from array import array
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, cast

from .callview import call_view

if TYPE_CHECKING:
    from ..breaker.b2bua import B2bua
    from ..breaker.call import Call
    from ..media.remote import AnyPlane as MediaPlane

HISTORY = 100  # ended calls kept for /calls and /api/calls (~3 KB each)
LAG_INTERVAL = 0.5  # seconds between two event-loop lag probes
LAG_WINDOW = 120  # probes kept for the maximum (one minute)
SAMPLE_INTERVAL = 1.0  # seconds between two samples of the calls in progress
SAMPLES = 120  # samples kept per leg (two minutes)
TRACKED = 1000  # calls in progress with a time series (~6 KB each); calls beyond get none
ENDED_SERIES = 20  # ended calls whose time series is kept

# (leg, direction) of the counters in MediaPlane.stats(): webrtc/legacy, in/out
MEDIA_KEYS = tuple((leg, d) for leg in ("webrtc", "legacy") for d in ("in", "out"))

log = logging.getLogger("rtc2sip.web")

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


# ---- quality: the E-model, simplified --------------------------------------------------------------

# codec (lower-case name) -> (Ie, Bpl, codec delay in ms: frame + look-ahead). G.711 and G.729A are
# ITU-T G.113 Appendix I's values (G.711 with packet loss concealment). Opus has no entry there: it is
# given G.711's (Ie 0, Bpl 25.1), an assumption, with its 26.5 ms algorithmic delay at 20 ms frames
# (RFC 6716). Any other codec is rated as G.711.
CODEC_IMPAIRMENT: dict[str, tuple[float, float, float]] = {
    "pcmu": (0.0, 25.1, 20.0),
    "pcma": (0.0, 25.1, 20.0),
    "g729": (11.0, 19.0, 25.0),
    "opus": (0.0, 25.1, 26.5),
}
E_MODEL = ("ITU-T G.107 E-model, simplified: R = 93.2 - Id - Ie,eff with default values for every other "
           "factor; Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3) (Cole & Rosenbluth), d the one-way delay "
           "estimated as RTT/2 + codec delay + a jitter buffer of twice the mean jitter; Ie,eff = Ie + "
           "(95 - Ie) Ppl / (Ppl + Bpl) (random loss, BurstR = 1) with the loss of what the gateway "
           "receives on the leg; Ie, Bpl from G.113 Appendix I (G.711, G.729A; Opus assumed as G.711); "
           "MOS from R by G.107 Annex B. Rates one hop (the leg), not mouth to ear.")


def e_model(loss_pct: float, rtt_ms: float | None, jitter_ms: float, codec: str | None) -> dict[str, float]:
    """R and MOS of one leg by the simplified E-model (see :data:`E_MODEL`)."""
    name = (codec or "pcmu").split("/", 1)[0].lower()
    ie, bpl, codec_delay = CODEC_IMPAIRMENT.get(name, CODEC_IMPAIRMENT["pcmu"])
    d = (rtt_ms or 0.0) / 2 + codec_delay + 2 * max(0.0, jitter_ms)
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = min(100.0, max(0.0, loss_pct))
    ie_eff = ie + (95 - ie) * ppl / (ppl + bpl)
    r = 93.2 - i_d - ie_eff
    if r < 0:
        mos = 1.0
    elif r > 100:
        mos = 4.5
    else:
        mos = 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6
    return {"delay_ms": round(d, 1), "r": round(r, 1), "mos": round(mos, 2)}


def _leg_figures(stats: dict[str, Any], side: str) -> tuple[int, int, int, int, int, float, float | None]:
    """(bytes in, bytes out, packets in, packets out, lost, jitter ms, RTT ms) of one leg of a
    MediaPlane.stats() result; loss, jitter and RTT of its main stream (audio, else the first), as
    callview.media_view shows them."""
    part: dict[str, Any] = stats.get(side) or {}
    streams: dict[str, Any] = stats.get("streams") or {}
    kind = "audio" if "audio" in streams else next(iter(streams), None)
    rx: dict[str, Any] = ((streams.get(kind) or {}).get(side) or {}) if kind is not None else {}
    rtt = rx.get("rtt_ms")
    return (int(part.get("bytes_in", 0)), int(part.get("bytes_out", 0)), int(part.get("packets_in", 0)),
            int(part.get("packets_out", 0)), int(rx.get("lost", 0)), float(rx.get("jitter_ms") or 0.0),
            float(rtt) if rtt is not None else None)


# the series of a leg, in order: unix time, then float32 figures (NaN: unknown)
SERIES = ("t", "kbps_in", "kbps_out", "packets_in", "lost", "loss_pct", "jitter_ms", "rtt_ms")


class LegSeries:
    """One leg's last :data:`SAMPLES` samples, and running sums over the whole call for its summary."""

    __slots__ = ("_size", "data", "jitter_max", "jitter_n", "jitter_sum", "last", "name", "role", "rtt_n",
                 "rtt_sum", "side")

    def __init__(self, name: str, role: str, side: str, size: int = SAMPLES) -> None:
        self.name, self.role, self.side = name, role, side
        self.data = {k: array("d" if k == "t" else "f") for k in SERIES}
        self.last: tuple[float, int, int, int, int] | None = None  # t, bytes in, bytes out, packets in, lost
        self.jitter_sum = self.jitter_max = self.rtt_sum = 0.0
        self.jitter_n = self.rtt_n = 0
        self._size = size

    def add(self, now: float, stats: dict[str, Any]) -> None:
        b_in, b_out, p_in, _p_out, lost, jitter, rtt = _leg_figures(stats, self.side)
        self.observe(jitter, rtt)
        last, self.last = self.last, (now, b_in, b_out, p_in, lost)
        if last is None or now <= last[0] or b_in < last[1] or b_out < last[2] or p_in < last[3]:
            return  # the first sample, or counters that went back: a baseline only
        dt = now - last[0]
        d_in, d_lost = p_in - last[3], max(0, lost - last[4])
        row = (now, 8 * (b_in - last[1]) / dt / 1000, 8 * (b_out - last[2]) / dt / 1000, d_in, d_lost,
               100 * d_lost / (d_in + d_lost) if d_in + d_lost else 0.0, jitter,
               rtt if rtt is not None else math.nan)
        for key, value in zip(SERIES, row, strict=True):
            a = self.data[key]
            a.append(value)
            if len(a) > self._size:
                del a[0]

    def observe(self, jitter: float, rtt: float | None) -> None:
        self.jitter_sum += jitter
        self.jitter_max = max(self.jitter_max, jitter)
        self.jitter_n += 1
        if rtt is not None:
            self.rtt_sum += rtt
            self.rtt_n += 1

    def view(self) -> dict[str, Any]:
        def values(key: str) -> list[float | None]:
            digits = 3 if key == "t" else 2
            return [None if math.isnan(v) else round(v, digits) for v in self.data[key]]

        return {"name": self.name, "role": self.role, "side": self.side, "samples": {k: values(k) for k in SERIES}}


class CallSeries:
    """The time series of one call's legs (``/api/calls/{id}/history``)."""

    __slots__ = ("ended", "id", "legs")

    def __init__(self, call: Call) -> None:
        self.id = call.id
        self.legs = [LegSeries(leg.name, role, "webrtc" if leg.webrtc else "legacy")
                     for leg, role in ((call.caller, "caller"), (call.callee, "callee")) if leg is not None]
        self.ended = False

    def add(self, now: float, stats: dict[str, Any]) -> None:
        for leg in self.legs:
            leg.add(now, stats)

    def leg(self, role: str) -> LegSeries | None:
        return next((leg for leg in self.legs if leg.role == role), None)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "state": "ended" if self.ended else "active", "interval_s": SAMPLE_INTERVAL,
                "max_samples": SAMPLES, "series": list(SERIES), "legs": [leg.view() for leg in self.legs]}


def quality_summary(view: dict[str, Any], series: CallSeries | None) -> dict[str, Any]:
    """An ended call's quality (``view`` its last call_view, ``series`` its samples, if any): per leg
    what the gateway received from that leg's peer."""
    legs = []
    for leg in view["legs"]:
        m = leg.get("media")
        if not m:
            legs.append({"name": leg["name"], "role": leg["role"], "media": False})
            continue
        s = series.leg(leg["role"]) if series is not None else None
        if s is None:
            s = LegSeries(leg["name"], leg["role"], "webrtc" if leg["webrtc"] else "legacy", 0)
        if s.jitter_n == 0:  # never sampled (a call shorter than a sample interval): its last figures
            s.observe(float(m.get("jitter_ms") or 0.0), m.get("rtt_ms"))
        lost = max(0, int(m.get("lost", 0)))
        received = int(m.get("packets_in", 0))
        loss_pct = 100 * lost / (received + lost) if received + lost else 0.0
        jitter_mean = s.jitter_sum / s.jitter_n if s.jitter_n else 0.0
        rtt_mean = s.rtt_sum / s.rtt_n if s.rtt_n else None
        rating = e_model(loss_pct, rtt_mean, jitter_mean, leg.get("codec")) if received else None
        legs.append({
            "name": leg["name"], "role": leg["role"], "media": True, "codec": leg.get("codec"),
            "packets_in": received, "packets_out": int(m.get("packets_out", 0)), "lost": lost,
            "loss_pct": round(loss_pct, 2), "jitter_ms_mean": round(jitter_mean, 2),
            "jitter_ms_max": round(s.jitter_max, 2),
            "rtt_ms_mean": round(rtt_mean, 2) if rtt_mean is not None else None,
            "delay_ms": rating["delay_ms"] if rating else None,
            "r": rating["r"] if rating else None, "mos": rating["mos"] if rating else None,
        })
    return {"duration_s": view.get("duration_s"), "legs": legs, "model": E_MODEL}


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
        self.transcoding = 0  # live media sessions transcoding, at the last media_totals()
        self._final: set[str] = set()  # sessions whose final counters are in _gone already
        self.lag = 0.0
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._probe: asyncio.Task[None] | None = None
        # verdicts of sip:diag@ calls, newest first (rtc2sip.services.diag: on_verdict)
        self.diagnostics: deque[dict[str, Any]] = deque(maxlen=history)
        self.series: dict[str, CallSeries] = {}  # calls in progress (at most TRACKED)
        self.ended_series: dict[str, CallSeries] = {}  # the last ENDED_SERIES ended calls, oldest first
        self._sampler: asyncio.Task[None] | None = None
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
        series = self.series.pop(call.id, None)
        if series is not None and stats is not None:
            series.add(time.time(), stats)  # the last figures, up to the end
        view["quality"] = quality_summary(view, series)
        self.history.appendleft(view)
        if series is not None:
            series.ended = True
            self.ended_series[call.id] = series
            while len(self.ended_series) > ENDED_SERIES:
                del self.ended_series[next(iter(self.ended_series))]
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
        transcoding = 0
        if self.media is not None:
            for session in self.media.sessions:
                if session in self._final:
                    continue  # counted when its call ended; its delete is on its way
                stats = self._session_stats(session)
                if stats is not None:
                    live[session] = _counters(stats)
                    transcoding += bool(stats.get("transcoded"))
            current = set(self.media.sessions)
            self._final &= current
        for session, counters in self._live.items():
            if session not in live:
                self._gone.update(counters)  # ended without the B2BUA's observer (a failed set-up)
        self._live = live
        self.transcoding = transcoding
        total: Counter[str] = Counter(self._gone)
        for counters in live.values():
            total.update(counters)
        return dict(total)

    def sample(self, now: float | None = None) -> None:
        """One sample of every call in progress with media (the sampler task calls it every
        :data:`SAMPLE_INTERVAL`); series of calls gone without the observer are dropped."""
        if self.breaker is None:
            return
        now = time.time() if now is None else now
        calls = self.breaker.calls
        for call_id in [c for c in self.series if c not in calls]:
            del self.series[call_id]
        for call in list(calls.values()):
            if call.ended:
                continue
            stats = self._session_stats(call.session)
            if stats is None:
                continue
            series = self.series.get(call.id)
            if series is None:
                if len(self.series) >= TRACKED:
                    continue
                series = self.series[call.id] = CallSeries(call)
            series.add(now, stats)

    def call_history(self, call_id: str) -> dict[str, Any] | None:
        """``/api/calls/{id}/history``: the call's samples; an ended call's with its quality summary."""
        series = self.series.get(call_id)
        if series is not None:
            return series.view()
        series = self.ended_series.get(call_id)
        if series is None:
            return None
        view = series.view()
        ended = next((c for c in self.history if c["id"] == call_id), None)
        view["quality"] = ended.get("quality") if ended is not None else None
        return view

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
        loop = asyncio.get_running_loop()
        if self._probe is None:
            self._probe = loop.create_task(self._measure_lag())
        if self._sampler is None and self.breaker is not None:
            self._sampler = loop.create_task(self._sample_calls())

    async def _sample_calls(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            try:
                self.sample()
            except Exception:  # a sample lost, never the sampler
                log.exception("monitor: sampling the calls failed")

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.lag = max(0.0, loop.time() - started - LAG_INTERVAL)
            self._lags.append(self.lag)

    async def close(self) -> None:
        for task in (self._probe, self._sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._probe = self._sampler = None

"""A tap on the relay: every plain RTP packet a call receives, per media kind and leg, handed to sinks.

The per-packet path (:mod:`rtc2sip.media.path`) calls :meth:`Tap.packet` from its two receive paths,
after SRTP is removed and before anything is rewritten: ``leg`` says where the packet came from
("webrtc": what the browser sent, "legacy": what the phone sent), so each direction of the call is one
stream of the original codec and payload types. A session with no sink has no tap
(``MediaSession.tap`` is None): one attribute read per packet.

Sinks must be cheap on the event loop and never block. :class:`QueuedSink` gives slow sinks (decoding,
disk) a bounded queue drained on a small thread pool shared by all of them, in order per sink; when
the queue is full packets are dropped and counted, never waited for. A sink that raises is detached
with one log line; the relay never sees the exception.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["CodecInfo", "LegCodecs", "QueuedSink", "Tap", "TapPlane", "TapSink", "TapWorker", "ask_keyframes"]

log = logging.getLogger("rtc2sip.media")

LEGS = ("webrtc", "legacy")


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """A payload type as negotiated on a leg (RFC 4566 a=rtpmap/a=fmtp)."""

    name: str  # as in SDP: PCMU, opus, G722, telephone-event...
    clock_rate: int
    channels: int = 1
    fmtp: str = ""

    def rtpmap(self, pt: int) -> str:
        extra = f"/{self.channels}" if self.channels > 1 else ""
        return f"a=rtpmap:{pt} {self.name}/{self.clock_rate}{extra}"


# kind -> leg -> payload type -> codec: what each leg sends, from the negotiated SDP
LegCodecs = dict[str, dict[str, dict[int, CodecInfo]]]


class TapSink(Protocol):
    """What a tap feeds. ``packet`` runs on the event loop for every packet: keep it cheap."""

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None: ...
    def codecs_changed(self, codecs: LegCodecs) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> dict[str, object]: ...


class TapPlane(Protocol):
    """The media plane as the services that attach sinks see it (recording, forwarding): a session's
    call and its tap. :class:`~rtc2sip.media.plane.MediaPlane` is one; it raises its UnknownSession
    for a session it does not hold."""

    def call_id(self, session: str) -> str: ...
    def attach(self, session: str, sink: TapSink) -> None: ...
    def detach(self, session: str, sink: TapSink) -> bool: ...


class Tap:
    """The sinks of one media session; see the module docstring."""

    __slots__ = ("codecs", "session_id", "sinks")

    def __init__(self, session_id: str, codecs: LegCodecs | None = None) -> None:
        self.session_id = session_id
        self.sinks: list[TapSink] = []
        self.codecs: LegCodecs = codecs or {}

    def add(self, sink: TapSink) -> None:
        self.sinks.append(sink)
        self._guard(sink, "codecs_changed", self.codecs)

    def remove(self, sink: TapSink) -> bool:
        """Detach and close ``sink``; False when it was not attached."""
        if sink not in self.sinks:
            return False
        self.sinks.remove(sink)
        self._guard(sink, "close")
        return True

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        for sink in self.sinks:
            try:
                sink.packet(kind, leg, data, now)
            except Exception as exc:
                log.warning("media session %s: %s failed, detached: %r", self.session_id, type(sink).__name__, exc)
                self.sinks = [s for s in self.sinks if s is not sink]
                self._guard(sink, "close")
                return

    def set_codecs(self, codecs: LegCodecs) -> None:
        self.codecs = codecs
        for sink in list(self.sinks):
            self._guard(sink, "codecs_changed", codecs)

    def close(self) -> None:
        """The call ended: close every sink (they finalise on their own time)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            self._guard(sink, "close")

    def _guard(self, sink: TapSink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception:
            log.exception("media session %s: %s.%s failed", self.session_id, type(sink).__name__, method)


class TapWorker:
    """A small thread pool shared by every :class:`QueuedSink` (decoding and writing are off the loop)."""

    def __init__(self, threads: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rtc2sip-tap")

    def submit(self, fn: Any) -> None:
        self._executor.submit(fn)

    async def shutdown(self) -> None:
        """Wait for every queued job (recordings being finalised), then stop the threads."""
        await asyncio.to_thread(self._executor.shutdown, True)


_CLOSE = object()


class QueuedSink:
    """A sink whose work runs on a :class:`TapWorker`: :meth:`put` is a bounded append (drops and
    counts when ``max_queue`` items wait), :meth:`handle` runs in a worker thread, one item at a time
    and in order; :meth:`finish` runs once after :meth:`close`, and :attr:`finished` resolves then."""

    def __init__(self, worker: TapWorker, max_queue: int = 1000) -> None:
        self._worker = worker
        self._max = max_queue
        self._items: deque[object] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closing = False
        self.queue_dropped = 0
        self.finished: Future[None] = Future()

    def put(self, item: object) -> bool:
        with self._lock:
            if self._closing or len(self._items) >= self._max:
                self.queue_dropped += 1
                return False
            self._items.append(item)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._submit()
        return True

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._items.append(_CLOSE)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._submit()

    async def wait_closed(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.wrap_future(self.finished), timeout)

    def _submit(self) -> None:
        try:
            self._worker.submit(self._run)
        except RuntimeError:  # the pool is shut down (process exit): finish here, once
            self._run()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    self._scheduled = False
                    return
                batch = list(self._items)
                self._items.clear()
            for item in batch:
                if item is _CLOSE:
                    try:
                        self.finish()
                    except Exception:
                        log.exception("%s: finishing failed", type(self).__name__)
                    if not self.finished.done():
                        self.finished.set_result(None)
                    continue
                try:
                    self.handle(item)
                except Exception:
                    log.exception("%s: dropped an item", type(self).__name__)

    def handle(self, item: object) -> None:
        """One queued item, in a worker thread."""

    def finish(self) -> None:
        """After the last item, in a worker thread."""


def ask_keyframes(plane: Any, session: str) -> None:
    """A sink attached mid-call (recording, forwarding) sees video only from each sender's next
    keyframe, and a browser sends one only when asked: ask both legs' senders through the media
    plane's ``request_keyframe`` (RTCP PLI/FIR) when the plane has it."""
    request = getattr(plane, "request_keyframe", None)
    if request is None:
        return
    for from_webrtc in (True, False):
        try:
            request(session, from_webrtc=from_webrtc)
        except Exception as exc:  # the session went away meanwhile: nothing to ask
            log.debug("media session %s: no keyframe request: %r", session, exc)

"""The media plane in worker processes (``[media] workers``), behind the plane's own API.

:class:`RemotePlane` is what the B2BUA, the monitor and the web pages see instead of an in-process
:class:`~rtc2sip.media.plane.MediaPlane`: the same methods, each async one a request over the channel
(:mod:`rtc2sip.media.channel`) to one worker process (:mod:`rtc2sip.media.worker`, started and spoken
to through :class:`~rtc2sip.media.workerproc.WorkerProcess`), which runs a real plane on its own
event loop and its own slice of the RTP port range. A new session goes to the worker with the fewest
sessions; a session id then maps to its worker until it is deleted.

The synchronous methods are served from what this process keeps: ``sessions`` and ``call_id`` from
the session table, ``stats`` from the last snapshot of the session's worker. A snapshot is fetched when
a reader finds it older than :data:`STATS_MAX_AGE` (the live view and /metrics read about once a
second), so a gateway nobody watches costs its workers nothing for stats; a reader sees figures up to
about a second old.

A worker that dies fails only its own sessions (each one's ``on_failure`` callbacks, so the B2BUA ends
those calls), is logged in one line and started again; the other workers' calls go on. One that is
alive but does not answer the heartbeat for :data:`HEARTBEAT_TIMEOUT` is killed and handled alike.

Taps run in the workers: the DTMF-to-INFO sink (:mod:`rtc2sip.media.dtmf_sink`; a sink with
``remote_kind`` is rebuilt there and its findings come back as events), recording and forwarding
(each worker has its own Recorder and Forwarder; the ``[recording]``/``[forward]`` rules are applied
here, where the parties' AORs are known, and a start is a request carrying them; file names are
chosen here, so the synchronous API returns the paths at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic
from typing import Any, Protocol

from ..sdp import SessionDescription
from .callinfo import CallInfo, file_base, matches_rule
from .certificate import Certificate
from .plane import MediaPlane, MediaPlaneError, UnknownSession
from .ports import PortAllocator
from .settings import RemotePlaneSettings, WorkerSettings
from .tap import TapSink
from .workerproc import WorkerGone, WorkerProcess, split_port_range

__all__ = ["AnyPlane", "RemotePlane", "RemoteSink"]

log = logging.getLogger("rtc2sip.media")

STATS_MAX_AGE = 0.5  # seconds: an older snapshot is refreshed when read
RESTART_DELAYS = (0.2, 1.0, 5.0)  # after the 1st, 2nd, 3rd and later deaths in a row
# A worker that is alive but does not answer (stuck in a loop, stopped, swapping) is worse than a dead
# one: its calls hang. Each running worker is asked for its state every HEARTBEAT_INTERVAL; one that
# has not answered within HEARTBEAT_TIMEOUT is killed, and its death is handled as any other (its
# calls fail, it is started again). Read at use time, so tests may shorten them.
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 10.0


class RemoteSink(TapSink, Protocol):
    """A tap sink that can run in a media worker: the worker builds its own of ``remote_kind``
    (:mod:`rtc2sip.media.worker` knows "dtmf") and hands what it reports to :meth:`remote_event`."""

    remote_kind: str

    def remote_event(self, *args: Any) -> None: ...


@dataclass(eq=False)
class _Session:
    id: str
    call_id: str
    worker: WorkerProcess
    has_video: bool = False
    stats: dict[str, object] | None = None
    sinks: dict[int, RemoteSink] = field(default_factory=dict)
    recording: str | None = None  # the sidecar's path while recorded
    forward: tuple[tuple[str, int], str] | None = None  # destination and .sdp path while forwarded
    starting: set[asyncio.Future[Any]] = field(default_factory=set)  # recording/forward starts under way


class RemotePlane:
    """The media plane API over ``workers`` worker processes (see the module docstring)."""

    def __init__(
        self,
        settings: RemotePlaneSettings,
        certificate: Certificate,
        *,
        workers: int,
        host: str = "127.0.0.1",
        legacy_host: str | None = None,
        port_range: tuple[int, int] = (20000, 29999),
        coder_limit: int = 0,
        uvloop: bool | None = None,
        recording_dir: Path | None = None,
        forward_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("RemotePlane needs at least one worker")
        self.settings = settings
        self.certificate = certificate
        self.host = host
        self.legacy_host = legacy_host
        self._socket_totals: dict[str, int] = {}
        local, slices = split_port_range(*port_range, workers)
        # the gateway's own media (test services): never a port a worker may take
        self.ports = PortAllocator(*local, buffer_size=settings.webrtc2sip.rtp_buffsize)
        self.recorder = None
        self.forwarder = None
        self.coder = None
        # recording and forwarding run in the workers; the rules' facts (the parties' AORs) are here:
        # the app sets call_info once the B2BUA exists (rtc2sip.breaker.call_info.breaker_call_info)
        self.recording_dir = recording_dir
        self.forward_dir = forward_dir or recording_dir
        self.call_info: Callable[[str], CallInfo] = CallInfo  # no parties known
        self._coder_limit = coder_limit
        self._uvloop = uvloop
        self._workers = [WorkerProcess(self, i, r) for i, r in enumerate(slices)]
        self._sessions: dict[str, _Session] = {}
        self._failure: list[Callable[[str, str], None]] = []
        self._answered: list[Callable[[str, str], None]] = []
        self._keyframe: list[Callable[[str, str], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sink_ids = itertools.count(1)
        self._closing = False

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._uvloop is None:
            self._uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        try:
            await asyncio.gather(*(self._start_worker(w) for w in self._workers))
        except BaseException:
            await self.close()
            raise
        self.spawn(self._watchdog())
        log.info("media plane in %d worker processes (pids %s), ports %s", len(self._workers),
                 " ".join(str(w.pid) for w in self._workers),
                 " ".join(f"{lo}-{hi}" for lo, hi in (w.port_range for w in self._workers)))

    def _init(self, worker: WorkerProcess) -> dict[str, Any]:
        root = logging.getLogger()
        fmt = "json" if any(type(h.formatter).__name__ == "JsonFormatter" for h in root.handlers) else "text"
        # the registrar's passwords stay here: the media plane never needs them
        return {"settings": WorkerSettings.of(self.settings), "certificate": self.certificate.certificate_pem(),
                "key": self.certificate.key_pem(), "host": self.host, "legacy_host": self.legacy_host,
                "port_range": worker.port_range,
                "coder_limit": self._coder_limit, "log_level": root.level, "log_format": fmt,
                "index": worker.index, "recording_dir": self.recording_dir, "forward_dir": self.forward_dir}

    async def _start_worker(self, worker: WorkerProcess) -> None:
        await worker.start(self._init(worker), bool(self._uvloop))

    async def close(self) -> None:
        """Delete every session (the workers do, as their channels close) and stop every worker."""
        self._closing = True
        for s in list(self._sessions.values()):
            self._forget(s)
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the API: offers and answers ----------------------------------------------------------------

    async def offer_from_webrtc(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        return await self._new(call_id, "offer_from_webrtc", offer)

    async def offer_from_legacy(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        return await self._new(call_id, "offer_from_legacy", offer)

    async def answer_from_legacy(self, session: str, answer: SessionDescription) -> SessionDescription:
        return await self._sdp(session, "answer_from_legacy", answer)

    async def answer_from_webrtc(self, session: str, answer: SessionDescription) -> SessionDescription:
        return await self._sdp(session, "answer_from_webrtc", answer)

    async def update(self, session: str, offer: SessionDescription, from_webrtc: bool) -> SessionDescription:
        return await self._sdp(session, "update", offer, from_webrtc)

    async def send_dtmf(self, session: str, digit: str, duration_ms: int = 100) -> bool:
        return bool(await self._get(session).worker.request("send_dtmf", session, digit, duration_ms))

    async def delete(self, session: str) -> None:
        """Release the session in its worker; unknown ids (and a dead worker's) are ignored."""
        s = self._sessions.get(session)
        if s is None:
            return
        self._forget(s)
        with contextlib.suppress(WorkerGone):
            await s.worker.request("delete", session)

    async def _new(self, call_id: str, method: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        running = [w for w in self._workers if w.running]
        if not running:
            raise WorkerGone("no media worker is running")
        worker = min(running, key=lambda w: len(w.sessions))
        future = worker.call(method, (call_id, offer))
        try:
            session, out = await asyncio.shield(future)
        except asyncio.CancelledError:
            # the caller gave up (its call ended): the worker creates the session anyway, delete it there
            future.add_done_callback(lambda f: self._orphan(worker, f))
            raise
        if not worker.running:  # died after answering: its sessions are failed and gone
            raise WorkerGone(f"media worker {worker.index} died")
        s = _Session(session, call_id, worker, has_video=_has_video(out))
        self._sessions[session] = s
        worker.sessions.add(session)
        worker.deaths = 0
        return session, out

    async def _sdp(self, session: str, method: str, sdp: SessionDescription, *args: Any) -> SessionDescription:
        s = self._get(session)
        out: SessionDescription = await s.worker.request(method, session, sdp, *args)
        s.has_video = s.has_video or _has_video(out)
        return out

    # -- the API: observation -----------------------------------------------------------------------

    @property
    def sessions(self) -> list[str]:
        return list(self._sessions)

    def call_id(self, session: str) -> str:
        return self._get(session).call_id

    def stats(self, session: str) -> dict[str, object]:
        """The session's last snapshot from its worker (at most about a second old when read once a
        second); before the first one, only what this process knows."""
        s = self._get(session)
        worker = s.worker
        if monotonic() - worker.stats_at > STATS_MAX_AGE:
            worker.refresh_stats()
        if s.stats is not None:
            return dict(s.stats)
        return {"session": s.id, "call_id": s.call_id, "pending": "unknown", "worker": worker.index}

    async def fresh_stats(self, max_age: float = STATS_MAX_AGE, timeout: float = 2.0) -> None:
        """Snapshots of every session no older than ``max_age`` (the web API awaits this before it
        reads :meth:`stats`); a worker that does not answer in ``timeout`` leaves its old figures."""
        now = monotonic()
        stale = [w for w in self._workers if w.running and w.sessions and now - w.stats_at > max_age]
        for w in stale:
            w.refresh_stats()
        tasks: list[asyncio.Future[Any]] = [w.stats_task for w in stale if w.stats_task is not None]
        counters: list[asyncio.Future[Any]] = [asyncio.ensure_future(w.request("socket_stats"))
                                               for w in self._workers if w.running]
        if tasks or counters:
            await asyncio.wait(tasks + counters, timeout=timeout)
        totals: dict[str, int] = {}
        for task in counters:
            if not task.done():
                task.cancel()
                return  # a worker that did not answer: keep the last totals
            if task.cancelled() or task.exception() is not None:
                return
            for key, value in task.result().items():
                totals[key] = totals.get(key, 0) + value
        # (a restarted worker counts from zero again: a counter reset, which Prometheus's rate() expects)
        self._socket_totals = totals

    def webrtc_socket_stats(self) -> dict[str, int]:
        """The workers' shared WebRTC sockets' counters, summed, as of the last :meth:`fresh_stats`."""
        return dict(self._socket_totals)

    async def worker_states(self) -> list[dict[str, int]]:
        """Each running worker's own count of sessions, ports, tasks and remote sinks (leak checks)."""
        return [await w.request("state") for w in self._workers if w.running]

    @property
    def worker_pids(self) -> list[int]:
        return [pid for pid in (w.pid for w in self._workers) if pid is not None]

    def request_keyframe(self, session: str, *, from_webrtc: bool) -> bool:
        """As in-process; the request reaches the worker a moment later. False without video."""
        s = self._get(session)
        if not s.has_video:
            return False
        s.worker.post("request_keyframe", session, from_webrtc)
        return True

    def on_failure(self, callback: Callable[[str, str], None]) -> None:
        self._failure.append(callback)

    def on_answered(self, callback: Callable[[str, str], None]) -> None:
        self._answered.append(callback)

    def on_keyframe_request(self, callback: Callable[[str, str], None]) -> None:
        self._keyframe.append(callback)

    # -- taps ---------------------------------------------------------------------------------------

    def attach(self, session: str, sink: TapSink) -> None:
        """Sinks with a ``remote_kind`` (the DTMF-to-INFO sink) run in the worker; others cannot."""
        kind = getattr(sink, "remote_kind", None)
        if not isinstance(kind, str):
            raise MediaPlaneError(f"{type(sink).__name__} cannot run in a media worker ([media] workers)")
        s = self._get(session)
        sink_id = next(self._sink_ids)
        s.sinks[sink_id] = sink  # type: ignore[assignment]
        s.worker.post("attach", session, sink_id, kind)

    def detach(self, session: str, sink: TapSink) -> bool:
        s = self._sessions.get(session)
        if s is None:
            return False
        for sink_id, held in list(s.sinks.items()):
            if held is sink:
                del s.sinks[sink_id]
                s.worker.post("detach", session, sink_id)
                _close(sink)
                return True
        return False

    def start_recording(self, session: str) -> str:
        """Record this session's call now (in its worker); returns the sidecar's path."""
        s = self._get(session)
        if self.recording_dir is None:
            raise MediaPlaneError("recording is not configured ([recording])")
        if s.recording is None:
            base = file_base(session)
            path = s.recording = str(self.recording_dir / f"{base}.json")
            self._start_tap(s, "start_recording", (session, self.call_info(s.call_id), base),
                            lambda: s.recording == path, lambda: setattr(s, "recording", None))
        return s.recording

    def stop_recording(self, session: str) -> bool:
        return self._stop_tap(session, "recording")

    def start_forward(self, session: str, host: str, port: int) -> str:
        """Fork this session's audio as plain RTP (from its worker); returns the ``.sdp``'s path."""
        s = self._get(session)
        if self.forward_dir is None:
            raise MediaPlaneError("forwarding is not available")
        dest = (host, port)
        if s.forward is not None and s.forward[0] == dest:
            return s.forward[1]
        base = file_base(session)
        forward = s.forward = (dest, str(self.forward_dir / f"{base}.sdp"))
        self._start_tap(s, "start_forward", (session, dest, self.call_info(s.call_id), base),
                        lambda: s.forward == forward, lambda: setattr(s, "forward", None))
        return forward[1]

    def _start_tap(self, s: _Session, method: str, args: tuple[Any, ...], current: Callable[[], bool],
                   undo: Callable[[], None]) -> None:
        future = s.worker.call(method, args)
        s.starting.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            s.starting.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.info("media session %s: %s failed in its worker: %s", s.id, method, f.exception())
                if current():
                    undo()

        future.add_done_callback(done)

    async def tap_settled(self, session: str, timeout: float = 5.0) -> None:
        """Once the session's recording and forwarding starts are done in its worker (the files the
        synchronous calls named exist); raises what the worker raised (the web API answers with it)."""
        s = self._get(session)
        if s.starting:
            await asyncio.wait_for(asyncio.gather(*s.starting), timeout)

    def stop_forward(self, session: str) -> bool:
        return self._stop_tap(session, "forward")

    def _stop_tap(self, session: str, tap: str) -> bool:
        """Stop the session's ``tap`` ("recording" or "forward", a _Session field) in its worker."""
        s = self._sessions.get(session)
        if s is None or getattr(s, tap) is None:
            return False
        setattr(s, tap, None)
        s.worker.post(f"stop_{tap}", session)
        return True

    def call_ended(self, call: Any, reason: str) -> None:
        """A B2BUA observer: the end cause for a recording's sidecar, ahead of the session's delete."""
        s = self._sessions.get(getattr(call, "session", None) or "")
        if s is not None and s.recording is not None:
            s.worker.post("call_ended", getattr(call, "id", ""), reason)

    def _answered_taps(self, session: str, call_id: str) -> None:
        """The ``[recording]`` and ``[forward]`` rules, as Recorder.answered and Forwarder.answered."""
        rec, fwd = self.settings.recording, self.settings.forward
        if not rec.enabled and fwd.to is None:
            return
        parties = self.call_info(call_id).parties()
        if rec.enabled and matches_rule(rec.rule, parties):
            self.start_recording(session)
        if fwd.to is not None and matches_rule(fwd.rule, parties):
            self.start_forward(session, *fwd.to)

    # -- from the workers ---------------------------------------------------------------------------

    def worker_stats(self, worker: WorkerProcess, snapshots: dict[str, dict[str, object]]) -> None:
        for session, stats in snapshots.items():
            s = self._sessions.get(session)
            if s is not None and s.worker is worker:
                s.stats = stats

    def _orphan(self, worker: WorkerProcess, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None and worker.running:
            worker.post("delete", future.result()[0])

    def worker_event(self, worker: WorkerProcess, name: str, args: tuple[Any, ...]) -> None:
        session = args[0]
        s = self._sessions.get(session)
        if s is None or s.worker is not worker:
            if name == "failure":  # a session this side does not know (an offer given up): free it
                worker.post("delete", session)
            return  # deleted meanwhile
        if name == "failure":
            _fire(self._failure, session, args[1], "on_failure")
        elif name == "answered":
            _fire([self._answered_taps, *self._answered], session, args[1], "on_answered")
        elif name == "keyframe":
            _fire(self._keyframe, session, args[1], "on_keyframe_request")
        elif name == "sink":
            sink = s.sinks.get(args[1])
            if sink is not None:
                try:
                    sink.remote_event(*args[2])
                except Exception:
                    log.exception("media session %s: %s failed", session, type(sink).__name__)

    async def _watchdog(self) -> None:
        while not self._closing:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            await asyncio.gather(*(self._ping(w) for w in self._workers if w.running))

    async def _ping(self, worker: WorkerProcess) -> None:
        pid = worker.pid
        try:
            await asyncio.wait_for(worker.request("state"), HEARTBEAT_TIMEOUT)
        except TimeoutError:
            if not worker.running or worker.pid != pid or pid is None or self._closing:
                return  # it died or was replaced meanwhile: that path has it
            log.warning("media worker %d (pid %d) did not answer for %g s: killed", worker.index, pid,
                        HEARTBEAT_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the channel closes: worker_gone fails its calls, restarts it
        except MediaPlaneError:
            pass  # the worker died while asked: worker_gone has it

    def worker_gone(self, worker: WorkerProcess, reason: str) -> None:
        """The channel closed under a running worker: fail its calls, start another."""
        worker.running = False
        worker.fail_pending(reason)
        lost = [self._sessions[s] for s in list(worker.sessions) if s in self._sessions]
        worker.sessions.clear()
        self.spawn(self._restart(worker, reason, lost))

    async def _restart(self, worker: WorkerProcess, reason: str, lost: list[_Session]) -> None:
        pid = worker.pid
        code = await worker.reap()
        log.warning("media worker %d (pid %s) died (exit %s, %s): %d calls failed%s", worker.index, pid, code,
                    reason, len(lost), "" if self._closing else "; starting another")
        for s in lost:
            self._forget(s)
            _fire(self._failure, s.id, f"media worker died (exit {code})", "on_failure")
        while not self._closing:
            delay = RESTART_DELAYS[min(worker.deaths, len(RESTART_DELAYS) - 1)]
            worker.deaths += 1
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await self._start_worker(worker)
            except Exception as exc:
                log.warning("media worker %d did not start again: %r", worker.index, exc)
                continue
            log.info("media worker %d started again (pid %s)", worker.index, worker.pid)
            return

    # -- internals ----------------------------------------------------------------------------------

    def _get(self, session: str) -> _Session:
        s = self._sessions.get(session)
        if s is None:
            raise UnknownSession(session)
        return s

    def _forget(self, s: _Session) -> None:
        self._sessions.pop(s.id, None)
        s.worker.sessions.discard(s.id)
        sinks, s.sinks = s.sinks, {}
        for sink in sinks.values():
            _close(sink)


def _has_video(sdp: SessionDescription) -> bool:
    return any(m.kind == "video" and not m.rejected for m in sdp.media)


def _close(sink: TapSink) -> None:
    try:
        sink.close()
    except Exception:
        log.exception("%s: close failed", type(sink).__name__)


def _fire(callbacks: list[Callable[[str, str], None]], session: str, arg: str, what: str) -> None:
    for callback in list(callbacks):
        try:
            callback(session, arg)
        except Exception:
            log.exception("media plane: %s callback raised for %s", what, session)


# what the B2BUA's neighbours (monitor, web pages, services) take: either plane
AnyPlane = MediaPlane | RemotePlane

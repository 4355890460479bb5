"""Transcoding off the event loop, with a bound on concurrent transcoded sessions (issue 4 §4).

A :class:`CoderPool` has a few worker threads, each a single-thread executor; a session (one call,
its directions) is pinned to one worker for its whole life, so its packets are transcoded in the
order they were submitted and its PyAV/libopus state is touched by one thread only. Threads, not
processes: FFmpeg's codec calls (PyAV, ``with nogil``) and libopus (ctypes) run without the GIL,
and a process would add a pickle and two pipe crossings to every 20 ms packet (see the module's
tests for the figures measured here).

Bounds: ``max_sessions`` sessions (the next :meth:`CoderPool.open` raises :class:`CoderBusy`, for
the caller to answer 488 (RFC 3261 §21.4.26) or to fall back to audio only); sessions opened with
the same ``group`` (one call's audio and video) count once, so the bound is on transcoded calls and ``max_pending``
packets in flight per session (beyond it packets are dropped and counted: late audio is worth less
than lost audio, RFC 3550 §6.4 loss is what the far end is built to conceal).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from .common import CoderError, OutPacket

__all__ = ["CoderBusy", "CoderPool", "CoderSession", "Transcoder"]


class CoderBusy(CoderError):
    """Every transcoding slot is taken: answer 488 Not Acceptable Here or bridge audio only."""

    status = 488

    def __init__(self, limit: int) -> None:
        super().__init__(f"media coder busy: {limit} transcoded sessions already")
        self.limit = limit


class Transcoder(Protocol):
    """What a pool runs: :class:`~rtc2sip.coder.audio.AudioTranscoder` (a video one later)."""

    def push(self, payload: bytes, timestamp: int, seq: int, marker: bool, arrival: float,
             payload_type: int | None = None) -> list[OutPacket]: ...  # fmt: skip

    def close(self) -> None: ...


class CoderSession:
    """One transcoded call: named directions (``"to_legacy"``, ``"to_webrtc"``) on one worker."""

    __slots__ = ("_coders", "_worker", "closed", "dropped", "group", "id", "max_pending", "pending")

    def __init__(self, session_id: int, worker: int, group: str | None = None, max_pending: int = 25) -> None:
        self.id = session_id
        self.group = group
        self.max_pending = max_pending
        self._worker = worker
        self._coders: dict[str, Transcoder] = {}
        self.pending = 0
        self.dropped = 0
        self.closed = False

    def coder(self, direction: str) -> Transcoder:
        """The direction's transcoder, for its stats; only the session's worker may call into it."""
        return self._coders[direction]

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(self._coders)


class CoderPool:
    """Worker threads running transcoders for up to ``max_sessions`` sessions at once."""

    def __init__(self, max_sessions: int = 64, *, workers: int | None = None, max_pending: int = 25) -> None:
        if max_sessions < 1 or max_pending < 1:
            raise ValueError("max_sessions and max_pending must be positive")
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        count = workers if workers is not None else max(1, min(os.cpu_count() or 1, 8))
        self._executors = [ThreadPoolExecutor(1, thread_name_prefix=f"rtc2sip-coder-{i}") for i in range(count)]
        self._load = [0] * count
        self._sessions: dict[int, CoderSession] = {}
        self._groups: dict[str, int] = {}  # group -> its open sessions
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def active(self) -> int:
        """Slots taken: sessions without a group, plus one per group."""
        grouped = sum(self._groups.values())
        return len(self._sessions) - grouped + len(self._groups)

    def holds(self, group: str) -> bool:
        """Whether ``group`` (a call) holds a slot already: its next session costs none."""
        return group in self._groups

    async def open(self, group: str | None = None, *, max_pending: int | None = None,
                   **directions: Callable[[], Transcoder]) -> CoderSession:  # fmt: skip
        """Reserve a slot (or raise :class:`CoderBusy` at once; a ``group`` holding one already
        needs no new one), then build each direction's transcoder on the session's worker: opening
        codecs costs milliseconds, not for the loop. ``max_pending`` overrides the pool's bound for
        this session (video: a keyframe arrives as a burst of tens of packets, and losing one of them
        costs the whole frame and another keyframe request)."""
        if self._closed:
            raise CoderError("coder pool is shut down")
        if (group is None or group not in self._groups) and self.active >= self.max_sessions:
            raise CoderBusy(self.max_sessions)
        worker = min(range(len(self._load)), key=self._load.__getitem__)
        session = CoderSession(next(self._ids), worker, group, max_pending or self.max_pending)
        self._sessions[session.id] = session
        if group is not None:
            self._groups[group] = self._groups.get(group, 0) + 1
        self._load[worker] += 1
        loop = asyncio.get_running_loop()
        try:
            for name, factory in directions.items():
                session._coders[name] = await loop.run_in_executor(self._executors[worker], factory)
        except BaseException:
            await self.close(session)
            raise
        return session

    def submit(
        self,
        session: CoderSession,
        direction: str,
        payload: bytes,
        timestamp: int,
        seq: int,
        marker: bool,
        arrival: float,
        payload_type: int | None = None,
    ) -> asyncio.Future[list[OutPacket]]:
        """Queue one packet on the session's worker; await the result for the packets to send.

        A plain function returning a future, so the queue order is the call order even when the
        caller does not await each result before submitting the next. Over ``max_pending`` (the
        worker is behind) or after close, the packet is dropped and the future is already done
        with no packets.
        """
        loop = asyncio.get_running_loop()
        if session.closed or session.pending >= session.max_pending:
            session.dropped += not session.closed
            done: asyncio.Future[list[OutPacket]] = loop.create_future()
            done.set_result([])
            return done
        coder = session._coders[direction]
        session.pending += 1
        future = loop.run_in_executor(
            self._executors[session._worker], coder.push, payload, timestamp, seq, marker, arrival, payload_type
        )

        def _done(_: asyncio.Future[list[OutPacket]]) -> None:
            session.pending -= 1

        future.add_done_callback(_done)
        return future

    async def close(self, session: CoderSession) -> None:
        """Release the session's slot; its transcoders are closed on its worker after the packets
        already queued for them."""
        if self._sessions.pop(session.id, None) is None:
            return
        group = session.group
        if group is not None:
            left = self._groups.get(group, 1) - 1
            if left > 0:
                self._groups[group] = left
            else:
                self._groups.pop(group, None)
        session.closed = True
        self._load[session._worker] -= 1
        coders = list(session._coders.values())
        if coders and not self._closed:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executors[session._worker], _close_all, coders)

    async def shutdown(self) -> None:
        """Close every session and join the worker threads."""
        for session in list(self._sessions.values()):
            await self.close(session)
        self._closed = True
        # Drain each queue from the loop first, so the joins below return at once.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(e, _noop) for e in self._executors))
        for executor in self._executors:
            executor.shutdown(wait=True)


def _noop() -> None:
    pass


def _close_all(coders: list[Transcoder]) -> None:
    for coder in coders:
        coder.close()

"""One media worker process seen from the gateway: started, spoken to over its channel, stopped.

A :class:`WorkerProcess` starts ``python -m rtc2sip.media.worker`` with one end of a socketpair
(:mod:`rtc2sip.media.channel` frames), sends it its configuration and waits for its ``ready``; then
:meth:`WorkerProcess.request` is one plane API call (a future answered by the worker's ``ok`` or
``error`` frame, the plane's exception types kept), sent through one ordered writer task. What the
worker reports on its own (a session's failure, a tap sink's finding) and its death (the channel
closing) go to its :class:`WorkerOwner`, :class:`rtc2sip.media.remote.RemotePlane`, which supervises
the workers (heartbeat, restart) and routes sessions to them. :func:`split_port_range` gives each
worker its own slice of the RTP port range.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from time import monotonic
from typing import Any, Protocol

from .channel import ChannelError, FrameDecoder, decode_exception, frame
from .plane import MediaPlaneError

__all__ = ["LOCAL_PORTS", "START_TIMEOUT", "STOP_TIMEOUT", "WorkerGone", "WorkerOwner", "WorkerProcess",
           "split_port_range"]

log = logging.getLogger("rtc2sip.media")

START_TIMEOUT = 30.0  # a worker imports the media stack (and PyAV with the coder) before it is ready
STOP_TIMEOUT = 10.0  # closing a worker finalises its recordings
# Ports the gateway process keeps for itself (the test services' RTP, sip:echo@ and sip:diag@);
# the rest of the range is shared out between the workers.
LOCAL_PORTS = 1000


class WorkerGone(MediaPlaneError):
    """The worker holding the session died (or none is running): its calls have failed."""


class WorkerOwner(Protocol):
    """What a :class:`WorkerProcess` reports to (:class:`rtc2sip.media.remote.RemotePlane`)."""

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def worker_stats(self, worker: WorkerProcess, snapshots: dict[str, dict[str, object]]) -> None:
        """The sessions' snapshots the worker sent (:meth:`WorkerProcess.refresh_stats`)."""

    def worker_event(self, worker: WorkerProcess, name: str, args: tuple[Any, ...]) -> None:
        """An ``event`` frame: a plane callback or a remote sink's finding."""

    def worker_gone(self, worker: WorkerProcess, reason: str) -> None:
        """The channel closed under a running worker."""


def split_port_range(low: int, high: int, workers: int, local: int = LOCAL_PORTS) -> tuple[tuple[int, int],
                                                                                            list[tuple[int, int]]]:
    """The gateway's own slice (``local`` ports, fewer in a small range) and one disjoint slice per
    worker out of ``low..high``; every slice starts on an even port (RTP pairs, RFC 3550 §11)."""
    total = high - low + 1
    local = min(local, total // (workers + 1))
    local -= local % 2
    if local < 2 or (total - local) // workers < 4:
        raise ValueError(f"port range {low}-{high} is too small for {workers} media workers")
    mine = (low, low + local - 1)
    start = low + local
    size = (high - start + 1) // workers
    size -= size % 2
    slices = [(start + i * size, start + (i + 1) * size - 1) for i in range(workers)]
    return mine, slices


class WorkerProcess:
    """One worker process and its channel; :meth:`request` is one API call."""

    def __init__(self, owner: WorkerOwner, index: int, port_range: tuple[int, int]) -> None:
        self.owner = owner
        self.index = index
        self.port_range = port_range
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.sessions: set[str] = set()
        self.running = False
        self.deaths = 0  # in a row, reset by a worker that served a call
        self.stats_at = -1e9
        self.stats_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        # Frames go out through one writer task, in the order the API was called (a recording's end
        # cause before the session's delete); sock_sendall from several tasks could interleave frames.
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, init: dict[str, Any], uvloop: bool) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
            args = [sys.executable, "-m", "rtc2sip.media.worker", str(child.fileno()), str(os.getpid())]
            if uvloop:
                args.append("uvloop")
            self.process = await asyncio.create_subprocess_exec(
                *args, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        loop = asyncio.get_running_loop()
        decoder = FrameDecoder()
        try:
            await loop.sock_sendall(parent, frame(init))

            async def ready() -> list[Any]:
                while True:
                    data = await loop.sock_recv(parent, 1 << 16)
                    if not data:
                        raise WorkerGone(f"media worker {self.index} exited while starting")
                    got = decoder.feed(data)
                    if got:
                        return got

            first = await asyncio.wait_for(ready(), START_TIMEOUT)
        except BaseException:
            await self.reap()
            raise
        if not (isinstance(first[0], tuple) and first[0][0] == "ready"):
            await self.reap()
            raise WorkerGone(f"media worker {self.index} sent {first[0]!r} instead of ready")
        self.running = True
        self._out = asyncio.Queue()
        self._reader = loop.create_task(self._read(decoder, first[1:]))
        self._writer = loop.create_task(self._write(parent, self._out))

    def call(self, method: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if not self.running or self.sock is None:
            raise WorkerGone(f"media worker {self.index} is not running")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        future.add_done_callback(lambda _: self._pending.pop(ident, None))
        self._out.put_nowait(frame(("call", ident, method, args)))
        return future

    async def request(self, method: str, *args: Any) -> Any:
        return await self.call(method, args)

    def post(self, method: str, *args: Any) -> None:
        """A request whose outcome nobody waits for (synchronous API methods); failures are logged."""
        try:
            future = self.call(method, args)
        except WorkerGone as exc:
            log.debug("media worker %d: %s not sent: %r", self.index, method, exc)
            return

        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.debug("media worker %d: %s failed: %r", self.index, method, f.exception())

        future.add_done_callback(done)

    async def _write(self, sock: socket.socket, queue: asyncio.Queue[bytes | None]) -> None:
        loop = asyncio.get_running_loop()
        while (data := await queue.get()) is not None:
            try:
                await loop.sock_sendall(sock, data)
            except OSError:
                return  # the reader sees the channel close and fails what is pending

    def refresh_stats(self) -> None:
        if self.stats_task is not None or not self.running or not self.sessions:
            return
        self.stats_at = monotonic()

        async def run() -> None:
            try:
                self.owner.worker_stats(self, await self.request("stats", None))
                self.stats_at = monotonic()
            except Exception as exc:
                log.debug("media worker %d: stats failed: %r", self.index, exc)
            finally:
                self.stats_task = None

        self.stats_task = self.owner.spawn(run())

    async def _read(self, decoder: FrameDecoder, early: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        reason = "channel closed"
        try:
            for message in early:
                self._handle(message)
            while True:
                data = await loop.sock_recv(self.sock, 1 << 16)
                if not data:
                    break
                for message in decoder.feed(data):
                    self._handle(message)
        except (OSError, ChannelError) as exc:
            reason = repr(exc)
        except asyncio.CancelledError:
            return
        self.owner.worker_gone(self, reason)

    def _handle(self, message: Any) -> None:
        kind = message[0]
        if kind in ("ok", "error"):
            future = self._pending.get(message[1])
            if future is None or future.done():
                return
            if kind == "ok":
                future.set_result(message[2])
            else:
                future.set_exception(decode_exception(message[2]))
        elif kind == "event":
            self.owner.worker_event(self, message[1], message[2])

    def fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"media worker {self.index} died: {reason}"))
        self._pending.clear()

    async def stop(self) -> None:
        """Close the channel (the worker deletes its sessions and exits), then reap it."""
        self.running = False
        await self._stop_writer()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self.fail_pending("stopped")
        await self.reap()

    async def _stop_writer(self) -> None:
        """Let what is queued go out (a delete sent just before), then end the writer."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._out.put_nowait(None)
            try:
                await asyncio.wait_for(writer, STOP_TIMEOUT)
            except TimeoutError:
                pass

    async def reap(self) -> int | None:
        await self._stop_writer()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)  # EOF: the worker closes its plane and exits
        process, self.process = self.process, None
        code: int | None = None
        if process is not None:
            try:
                code = await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                code = await process.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return code

"""A media worker process: one real :class:`~rtc2sip.media.plane.MediaPlane` served over a channel.

Started by :class:`rtc2sip.media.remote.RemotePlane` as ``python -m rtc2sip.media.worker FD PPID`` with one
end of a socketpair inherited as ``FD`` (:mod:`rtc2sip.media.channel` frames). The first frame is the
configuration (settings, the gateway's DTLS certificate, the media host, this worker's slice of the
RTP port range, the coder's share of ``max_transcoded_calls``); then each ``call`` frame is one plane
API call, answered in its own task (a slow DTLS-heavy offer never holds up another session's delete),
and the plane's callbacks go back as ``event`` frames.

The worker never outlives the gateway: the kernel kills it when its parent dies (``PR_SET_PDEATHSIG``),
and it closes every session and exits when the channel closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

from .channel import ChannelError, FrameDecoder, encode_exception, frame
from .libc import libc

log = logging.getLogger("rtc2sip.media.worker")

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the process that started it (pid ``parent``) exits, whatever
    killed it."""
    prctl = getattr(libc(), "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: nobody will read us
        os._exit(0)


async def _read_frames(sock: socket.socket, decoder: FrameDecoder) -> list[Any] | None:
    loop = asyncio.get_running_loop()
    data = await loop.sock_recv(sock, 1 << 16)
    if not data:
        return None
    return decoder.feed(data)


class _ClosingSink:
    """A tap sink that tells when it is closed (with its session, or detached): the server's table of
    remote sinks then forgets it, so that the table stays bounded by the live sessions."""

    __slots__ = ("_inner", "_on_close")

    def __init__(self, inner: Any, on_close: Callable[[], object]) -> None:
        self._inner = inner
        self._on_close = on_close

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        self._inner.packet(kind, leg, data, now)

    def codecs_changed(self, codecs: Any) -> None:
        self._inner.codecs_changed(codecs)

    def close(self) -> None:
        self._on_close()
        self._inner.close()

    def describe(self) -> dict[str, object]:
        return dict(self._inner.describe())


class WorkerServer:
    """The worker's side of the channel: the plane's API by name, its callbacks as events."""

    def __init__(self, sock: socket.socket, plane: Any, coder: Any = None, recorder: Any = None,
                 forwarder: Any = None) -> None:
        self.sock = sock
        self.plane = plane
        self.coder = coder
        # recording and forwarding run here, on the gateway's word (it has the rules' facts: the AORs)
        self.recorder = recorder
        self.forwarder = forwarder
        self._out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sinks: dict[tuple[str, int], Any] = {}
        plane.on_failure(lambda s, reason: self.event("failure", s, reason))
        plane.on_keyframe_request(lambda s, call_id: self.event("keyframe", s, call_id))
        plane.on_answered(lambda s, call_id: self.event("answered", s, call_id))
        self.methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "offer_from_webrtc": plane.offer_from_webrtc,
            "answer_from_legacy": plane.answer_from_legacy,
            "offer_from_legacy": plane.offer_from_legacy,
            "answer_from_webrtc": plane.answer_from_webrtc,
            "update": plane.update,
            "send_dtmf": plane.send_dtmf,
            "delete": plane.delete,
            "stats": self._stats,
            "state": self._state,
            "socket_stats": self._socket_stats,
            "request_keyframe": self._request_keyframe,
            "attach": self._attach,
            "detach": self._detach,
            "start_recording": self._start_recording,
            "stop_recording": self._stop_recording,
            "start_forward": self._start_forward,
            "stop_forward": self._stop_forward,
            "call_ended": self._call_ended,
        }

    def event(self, name: str, *args: object) -> None:
        self._out.put_nowait(frame(("event", name, args)))

    async def serve(self) -> None:
        writer = asyncio.get_running_loop().create_task(self._write())
        decoder = FrameDecoder()
        try:
            while True:
                messages = await _read_frames(self.sock, decoder)
                if messages is None:
                    break
                for message in messages:
                    self._dispatch(message)
        except (OSError, ChannelError) as exc:
            log.warning("media worker %d: channel broken: %r", os.getpid(), exc)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await self.plane.close()  # closes every tap: recordings finalise
            if self.recorder is not None:
                await self.recorder.close()
            if self.coder is not None:
                await self.coder.shutdown()
            self._out.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2)

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, tuple) or len(message) != 4 or message[0] != "call":
            raise ChannelError(f"unexpected message {type(message).__name__}")
        _, ident, method, args = message
        task = asyncio.get_running_loop().create_task(self._run(ident, method, args))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ident: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            fn = self.methods[method]
            result = await fn(*args)
        except Exception as exc:
            reply = frame(("error", ident, encode_exception(exc)))
        else:
            try:
                reply = frame(("ok", ident, result))
            except Exception as exc:  # an unpicklable result is a bug here, not the gateway's problem
                reply = frame(("error", ident, encode_exception(exc)))
        self._out.put_nowait(reply)

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await self._out.get()
            if data is None:
                return
            try:
                await loop.sock_sendall(self.sock, data)
            except OSError:
                return

    # -- methods beyond the plane's own async ones ---------------------------------------------------

    async def _stats(self, sessions: list[str] | None = None) -> dict[str, dict[str, object]]:
        """Snapshots of the given sessions (None: all of them); sessions gone are left out."""
        from .plane import UnknownSession

        out: dict[str, dict[str, object]] = {}
        for session in self.plane.sessions if sessions is None else sessions:
            with contextlib.suppress(UnknownSession):
                out[session] = self.plane.stats(session)
        return out

    async def _state(self) -> dict[str, int]:
        """What this worker holds (tests check it drops to zero after calls)."""
        return {"pid": os.getpid(), "sessions": len(self.plane.sessions), "ports": self.plane.ports.in_use,
                "tasks": len(asyncio.all_tasks()), "sinks": len(self._sinks)}

    async def _socket_stats(self) -> dict[str, int]:
        return dict(self.plane.webrtc_socket_stats())

    async def _request_keyframe(self, session: str, from_webrtc: bool) -> bool:
        return bool(self.plane.request_keyframe(session, from_webrtc=from_webrtc))

    async def _attach(self, session: str, sink_id: int, kind: str) -> None:
        """A sink the gateway asked for by kind; what it finds comes back as ``sink`` events."""
        if kind != "dtmf":
            raise ValueError(f"no remote sink of kind {kind!r}")
        from .dtmf_sink import DtmfSink

        def digit(d: str, duration_ms: int) -> None:
            self.event("sink", session, sink_id, (d, duration_ms))

        sink = _ClosingSink(DtmfSink(digit), lambda: self._sinks.pop((session, sink_id), None))
        self.plane.attach(session, sink)
        self._sinks[(session, sink_id)] = sink

    async def _start_recording(self, session: str, info: Any, base: str) -> str:
        if self.recorder is None:
            raise ValueError("recording is not available")
        return str(self.recorder.start(session, info, base=base).sidecar)

    async def _stop_recording(self, session: str) -> bool:
        return self.recorder is not None and bool(self.recorder.stop(session))

    async def _start_forward(self, session: str, dest: tuple[str, int], info: Any, base: str) -> str:
        if self.forwarder is None:
            raise ValueError("forwarding is not available")
        return str(self.forwarder.start(session, dest, info, base=base).sdp_path)

    async def _stop_forward(self, session: str) -> bool:
        return self.forwarder is not None and bool(self.forwarder.stop(session))

    async def _call_ended(self, call_id: str, reason: str) -> None:
        """The B2BUA's end cause, for the recording's sidecar (sent before the session's delete)."""
        if self.recorder is not None:
            self.recorder.call_ended(types.SimpleNamespace(id=call_id), reason)

    async def _detach(self, session: str, sink_id: int) -> bool:
        sink = self._sinks.pop((session, sink_id), None)
        return sink is not None and bool(self.plane.detach(session, sink))


async def _main(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    decoder = FrameDecoder()
    messages: list[Any] = []
    while not messages:
        got = await _read_frames(sock, decoder)
        if got is None:
            return
        messages = got
    init = messages[0]
    from ..logs import setup as log_setup
    from .certificate import Certificate
    from .plane import MediaPlane

    log_setup(init["log_level"], init["log_format"])
    coder = None
    settings = init["settings"]
    if settings.webrtc2sip.enable_media_coder and init["coder_limit"]:
        from ..coder import CoderPool

        coder = CoderPool(init["coder_limit"])
    plane = MediaPlane(settings, Certificate.from_pem(init["certificate"], init["key"]), host=init["host"],
                       legacy_host=init.get("legacy_host"),
                       port_range=init["port_range"], coder=coder)
    await plane.start()  # this worker's shared WebRTC socket, bound before it says ready
    recorder = forwarder = None
    if init.get("recording_dir") is not None:
        from .callinfo import CallInfo
        from .forward import Forwarder
        from .recording import Recorder

        def info(call_id: str) -> CallInfo:
            return CallInfo(call_id)  # the gateway sends what it knows with each start

        recorder = Recorder(settings.recording, init["recording_dir"], plane, info)
        forwarder = Forwarder(settings.forward, init["forward_dir"], plane, info)
        plane.recorder, plane.forwarder = recorder, forwarder
    server = WorkerServer(sock, plane, coder, recorder, forwarder)
    from ..gc_tuning import manage_gc, tune_gc

    tune_gc()  # as the gateway does: a busy plane holds many long-lived objects
    collector = loop.create_task(manage_gc())
    await loop.sock_sendall(sock, frame(("ready", os.getpid())))
    for message in messages[1:]:
        server._dispatch(message)
    try:
        await server.serve()
    finally:
        collector.cancel()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv  # FD PARENT_PID [uvloop]
    die_with_parent(int(args[1]))
    # Ctrl-C and a service manager's SIGTERM reach the gateway's whole process group: the gateway then
    # ends us by closing the channel, after our sessions are deleted and recordings finalised
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    sock.setblocking(False)
    if len(args) > 2 and args[2] == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            uvloop.install()
    try:
        asyncio.run(_main(sock))
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

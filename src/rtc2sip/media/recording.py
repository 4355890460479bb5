"""Call recording (issue 5 item 6): both legs of a call's audio and video to files, with a JSON sidecar.

A :class:`CallRecording` is a :class:`~rtc2sip.media.tap.QueuedSink` on the call's tap: the relay
hands it every audio RTP packet each leg sends (the original codec, before transcoding), and a
worker thread decodes it with PyAV (G.711 µ/A-law, G.722, Opus) and writes it
(:mod:`rtc2sip.media.audiofile`). **One mono file per leg**: ``<base>-webrtc.<ext>`` is what the
browser sent, ``<base>-legacy.<ext>`` what the phone sent;
both start at the recording's start (leading silence) and follow the RTP timestamps, with silence
for gaps (loss, DTX, comfort noise, hold), so they stay aligned and can be mixed or put side by side
(``ffmpeg -i a.wav -i b.wav -filter_complex amerge out.wav``). ``format = "wav"`` writes 16-bit PCM at
the codec's rate (8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus); ``"ogg"`` writes Ogg/Opus.

Video (VP8, RFC 7741) goes, per leg, to ``<base>-webrtc.webm`` and ``<base>-legacy.webm`` as it came,
without re-encoding (:mod:`rtc2sip.media.webm`): the frames start at the leg's first keyframe and are
timed by their RTP timestamps. Another video codec is counted in the sidecar, not recorded.

``<base>.json`` (the sidecar) is written when the recording starts and rewritten when it ends: the
parties, both legs' Call-IDs, start and end times, codecs, packet counts, files and any error.

A disk error (full disk, permission, anything the file system raises) ends that recording with one
log line and an ``error`` in the sidecar when it can still be written; the call goes on. Files are
finalised (WAV sizes patched, Ogg trailer written) when the call's media session is deleted,
whatever ended the call, and when the gateway stops (:meth:`Recorder.close`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..coder.rtp_video import EncodedFrame
from .audiofile import DECODERS, OGG_RATE, OggOpusWriter, PayloadDecoder, PcmWriter, WavWriter
from .callinfo import CallInfo, file_base, matches_rule
from .rtp import RTP_HEADER, payload_bounds
from .tap import LEGS, LegCodecs, QueuedSink, TapPlane, TapWorker, ask_keyframes
from .webm import Vp8Reader, WebmWriter

if TYPE_CHECKING:
    from .settings import RecordingRule

__all__ = ["CallRecording", "Recorder"]

log = logging.getLogger("rtc2sip.media")

_MAX_GAP_S = 60.0  # a longer silence (a timestamp jump, a long hold) is written as this much


def _now_iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(slots=True)
class _LegState:
    """One leg's file and timeline."""

    path: Path
    writer: PcmWriter | None = None
    decoders: dict[int, PayloadDecoder | None] = field(default_factory=dict)
    ssrc: int | None = None
    next_ts: int = 0  # RTP timestamp where the next packet should start
    clock_rate: int = 8000
    last_arrival: float = 0.0
    samples: int = 0  # written, at the writer's rate
    packets: int = 0  # received
    decoded: int = 0
    skipped: int = 0  # not audio (telephone-event, CN), or a codec the recorder does not decode
    late: int = 0  # reordered or duplicated: already covered by silence
    codecs: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _VideoState:
    """One leg's video: its depacketizer and WebM file."""

    path: Path
    writer: WebmWriter | None = None
    reader: Vp8Reader = field(default_factory=Vp8Reader)
    ssrc: int | None = None
    packets: int = 0
    skipped: int = 0  # not VP8 (RTX, FEC, another codec)
    codecs: set[str] = field(default_factory=set)

    def summary(self) -> dict[str, Any]:
        w, d = self.writer, self.reader
        return {
            "file": self.path.name if w is not None and w.frames else None,
            "codecs": sorted(self.codecs),
            "width": w.size[0] if w is not None and w.size else None,
            "height": w.size[1] if w is not None and w.size else None,
            "frames": w.frames if w is not None else 0,
            "keyframes": d.keyframes,
            "seconds": round(w.seconds, 3) if w is not None else 0.0,
            "packets": self.packets, "skipped": self.skipped, "frames_dropped": d.dropped,
        }


def _default_opener(path: Path) -> IO[bytes]:
    return open(path, "wb")


class CallRecording(QueuedSink):
    """The recording of one call; see the module docstring. ``opener`` opens each file for writing
    (tests inject failing file objects)."""

    def __init__(self, worker: TapWorker, directory: Path, base: str, info: CallInfo, session: str, *,
                 fmt: str = "wav", opener: Callable[[Path], IO[bytes]] = _default_opener,
                 max_queue: int = 1000) -> None:
        super().__init__(worker, max_queue)
        self.directory = directory
        self.base = base
        self.info = info
        self.session = session
        self.format = fmt
        self._opener = opener
        self._codecs: LegCodecs = {}
        ext = "ogg" if fmt == "ogg" else "wav"
        self.legs = {leg: _LegState(directory / f"{base}-{leg}.{ext}") for leg in LEGS}
        self.video = {leg: _VideoState(directory / f"{base}-{leg}.webm") for leg in LEGS}
        self.sidecar = directory / f"{base}.json"
        self.started = time.time()
        self._started_mono: float | None = None
        self.ended: float | None = None
        self.error: str | None = None
        self.put(("start",))

    # -- event loop side ---------------------------------------------------------------------------

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        if kind in ("audio", "video") and self.error is None:
            self.put((kind, leg, data, now))

    def codecs_changed(self, codecs: LegCodecs) -> None:
        self._codecs = codecs  # read by the worker; a reference swap

    def close(self) -> None:
        if self.ended is None:
            self.ended = time.time()
        super().close()

    def describe(self) -> dict[str, object]:
        return {"type": "recording", "sidecar": str(self.sidecar), "error": self.error,
                "queue_dropped": self.queue_dropped}

    # -- worker side -------------------------------------------------------------------------------

    def handle(self, item: object) -> None:
        assert isinstance(item, tuple)
        if self.error is not None:
            return
        try:
            if item[0] == "start":
                self.directory.mkdir(parents=True, exist_ok=True)
                self._write_sidecar()
                log.info("recording call %s to %s", self.info.call_id, self.sidecar)
                return
            kind, leg, data, now = item
            if kind == "video":
                self._video(leg, data, now)
            else:
                self._packet(self.legs[leg], data, now)
        except OSError as exc:
            self._fail(exc)
        except Exception as exc:
            import av.error

            if isinstance(exc, av.error.FFmpegError):
                self._fail(exc)
            else:
                raise

    def _fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.error = reason
        log.warning("recording of call %s stopped (the call goes on): %s", self.info.call_id, reason)
        for state in self.legs.values():
            writer, state.writer = state.writer, None
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass
        for video in self.video.values():
            try:
                if video.writer is not None:
                    video.writer.close()
            except Exception:
                pass

    def _packet(self, state: _LegState, data: bytes, now: float) -> None:
        if self._started_mono is None:
            self._started_mono = now  # the first packet's arrival; its leading silence is the other leg's
        state.packets += 1
        _, b1, _, ts, ssrc = RTP_HEADER.unpack_from(data)
        pt = b1 & 0x7F
        decoder = self._decoder(state, pt)
        if decoder is None:
            state.skipped += 1
            return
        start, end = payload_bounds(data)
        if end <= start:
            state.skipped += 1
            return
        writer = state.writer
        if writer is None:
            writer = state.writer = self._open(state, decoder)
            self._silence(state, now - self._started_mono)
        elif ssrc != state.ssrc or decoder.clock_rate != state.clock_rate:
            # a new source (re-INVITE, transfer) or codec: place it by the arrival time
            self._silence(state, now - state.last_arrival)
        else:
            gap = (ts - state.next_ts) & 0xFFFFFFFF
            if gap >= 0x80000000:
                state.late += 1
                return
            if gap:
                self._silence(state, gap / state.clock_rate)
        pcm, duration = decoder.decode(bytes(data[start:end]))
        if not pcm:
            state.skipped += 1
            return
        state.ssrc, state.clock_rate = ssrc, decoder.clock_rate
        state.next_ts = (ts + duration) & 0xFFFFFFFF
        state.last_arrival = now
        writer.write(pcm)
        state.samples += len(pcm) // 2
        state.decoded += 1

    def _video(self, leg: str, data: bytes, now: float) -> None:
        state = self.video[leg]
        state.packets += 1
        _, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        codec = self._codecs.get("video", {}).get(leg, {}).get(b1 & 0x7F)
        if codec is None or codec.name.lower() != "vp8":
            state.skipped += 1
            return
        state.codecs.add(f"{codec.name}/{codec.clock_rate}")
        start, end = payload_bounds(data)
        if ssrc != state.ssrc:
            if state.ssrc is not None:  # a new source: its frames wait for its keyframe
                self._write_video(state, state.reader.flush())
                state.reader = Vp8Reader()
                if state.writer is not None:
                    state.writer.rebase(ts)
            state.ssrc = ssrc
        payload = bytes(data[start:end]) if end > start else b""
        self._write_video(state, state.reader.push(seq, ts, bool(b1 & 0x80), payload, now))

    def _write_video(self, state: _VideoState, frames: list[EncodedFrame]) -> None:
        for frame in frames:
            if state.writer is None:
                state.writer = WebmWriter(state.path, self._opener)
            state.writer.write(frame)

    def _silence(self, state: _LegState, seconds: float) -> None:
        writer = state.writer
        if writer is None or seconds <= 0:
            return
        n = int(min(seconds, _MAX_GAP_S) * writer.rate)
        chunk = bytes(2 * min(n, writer.rate))
        while n > 0:
            part = chunk[: 2 * min(n, len(chunk) // 2)]
            writer.write(part)
            n -= len(part) // 2
            state.samples += len(part) // 2

    def _decoder(self, state: _LegState, pt: int) -> PayloadDecoder | None:
        if pt in state.decoders:
            return state.decoders[pt]
        codec = self._codecs.get("audio", {}).get(self._leg_name(state), {}).get(pt)
        decoder = None
        if codec is not None and codec.name.lower() in DECODERS:
            rate = state.writer.rate if state.writer is not None else (
                OGG_RATE if self.format == "ogg" else DECODERS[codec.name.lower()][1])
            decoder = PayloadDecoder(codec, rate)
            state.codecs.add(f"{codec.name}/{codec.clock_rate}")
        state.decoders[pt] = decoder
        return decoder

    def _leg_name(self, state: _LegState) -> str:
        return next(name for name, s in self.legs.items() if s is state)

    def _open(self, state: _LegState, decoder: PayloadDecoder) -> PcmWriter:
        if self.format == "ogg":
            return OggOpusWriter(state.path, OGG_RATE, self._opener)
        return WavWriter(state.path, decoder.pcm_rate, self._opener)

    def finish(self) -> None:
        if self.error is None:
            try:
                for state in self.legs.values():
                    writer, state.writer = state.writer, None
                    if writer is not None:
                        writer.close()
                for video in self.video.values():
                    self._write_video(video, video.reader.flush())
                    if video.writer is not None:
                        video.writer.close()
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:
                import av.error

                if not isinstance(exc, av.error.FFmpegError):
                    raise
                self._fail(exc)
        try:
            self._write_sidecar()
        except OSError as exc:
            if self.error is None:
                self._fail(exc)
        if self.error is None:
            log.info("recording of call %s ended: %s", self.info.call_id, ", ".join(
                [f"{leg} {s.decoded}/{s.packets} packets" for leg, s in self.legs.items()]
                + [f"{leg} video {v.writer.frames} frames" for leg, v in self.video.items() if v.writer is not None]))

    def summary(self) -> dict[str, Any]:
        legs: dict[str, Any] = {}
        codecs = self._codecs.get("audio", {})
        for name, s in self.legs.items():
            rate = OGG_RATE if self.format == "ogg" else next(
                (d.pcm_rate for d in s.decoders.values() if d is not None), None)
            legs[name] = {
                "file": s.path.name if s.samples else None,
                "party": self._party(name),
                "sample_rate": rate if s.samples else None,
                "seconds": round(s.samples / rate, 3) if s.samples and rate else 0.0,
                "codecs": sorted(s.codecs),
                "negotiated": {str(pt): f"{c.name}/{c.clock_rate}" for pt, c in codecs.get(name, {}).items()},
                "packets": s.packets, "decoded": s.decoded, "skipped": s.skipped, "late": s.late,
                "video": self.video[name].summary() if self.video[name].packets else None,
            }
        info = self.info
        return {
            "call": info.call_id,
            "media_session": self.session,
            "parties": {"caller": info.caller, "callee": info.callee},
            "call_ids": {"caller": info.caller_call_id, "callee": info.callee_call_id},
            "caller_leg": info.caller_leg,
            "started": _now_iso(self.started),
            "ended": _now_iso(self.ended) if self.ended is not None else None,
            "duration_s": round(self.ended - self.started, 3) if self.ended is not None else None,
            "end_reason": info.end_reason,
            "format": self.format,
            "layout": "one mono file per leg (and a WebM file per leg with video): webrtc = what the browser "
                      "sent, legacy = what the phone sent",
            "legs": legs,
            "queue_dropped": self.queue_dropped,
            "error": self.error,
        }

    def _party(self, leg: str) -> str | None:
        info = self.info
        if info.caller_leg is None:
            return None
        return info.caller if leg == info.caller_leg else info.callee

    def _write_sidecar(self) -> None:
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        with self._opener(tmp) as f:
            f.write(json.dumps(self.summary(), indent=2).encode() + b"\n")
        os.replace(tmp, self.sidecar)


# ---- the service -------------------------------------------------------------------------------------


class Recorder:
    """Records the calls the ``[recording]`` rule picks (automatically, when their media starts),
    or any call on demand (:meth:`start`); one :class:`CallRecording` per media session."""

    def __init__(self, options: RecordingRule, directory: Path, plane: TapPlane,
                 call_info: Callable[[str], CallInfo], worker: TapWorker | None = None) -> None:
        self.options = options
        self.directory = directory
        self.plane = plane
        self.call_info = call_info
        self.worker = worker or TapWorker()
        self.recordings: dict[str, CallRecording] = {}  # media session -> recording
        self._by_call: dict[str, CallRecording] = {}
        self.finished: list[CallRecording] = []

    def answered(self, session: str, call_id: str) -> None:
        """The plane's on_answered hook: start recording when the rule says so."""
        if not self.options.enabled or session in self.recordings:
            return
        info = self.call_info(call_id)
        if matches_rule(self.options.rule, info.parties()):
            self.start(session, info)

    def start(self, session: str, info: CallInfo | None = None, *, base: str | None = None) -> CallRecording:
        """Record the media session ``session`` (raises the plane's UnknownSession); ``base`` names
        the files (default :func:`file_base`)."""
        existing = self.recordings.get(session)
        if existing is not None:
            return existing
        call_id = self.plane.call_id(session)
        info = info or self.call_info(call_id)
        rec = CallRecording(self.worker, self.directory, base or file_base(session), info, session,
                            fmt=self.options.format)
        self.recordings[session] = rec
        self._by_call[call_id] = rec
        loop = asyncio.get_running_loop()

        def finished(_: object) -> None:  # in the worker thread: back to the loop's
            try:
                loop.call_soon_threadsafe(self._done, session, call_id, rec)
            except RuntimeError:  # the loop is gone (process exit)
                pass

        rec.finished.add_done_callback(finished)
        self.plane.attach(session, rec)
        ask_keyframes(self.plane, session)
        return rec

    def stop(self, session: str) -> bool:
        rec = self.recordings.get(session)
        return rec is not None and self.plane.detach(session, rec)

    def call_ended(self, call: Any, reason: str) -> None:
        """A B2BUA observer: the end cause goes into the sidecar."""
        rec = self._by_call.get(getattr(call, "id", ""))
        if rec is not None:
            rec.info.end_reason = reason

    def _done(self, session: str, call_id: str, rec: CallRecording) -> None:
        if self.recordings.get(session) is rec:
            del self.recordings[session]
        if self._by_call.get(call_id) is rec:
            del self._by_call[call_id]
        self.finished = [*self.finished[-99:], rec]

    async def close(self) -> None:
        """Finalise every recording (the plane closes the sessions) and stop the worker threads."""
        for rec in list(self.recordings.values()):
            rec.close()
        await self.worker.shutdown()

    def describe(self) -> dict[str, object]:
        o = self.options
        return {"options": {"enabled": o.enabled, "rule": o.rule, "dir": str(self.directory), "format": o.format},
                "active": len(self.recordings)}

"""VP8 over RTP into a WebM file, without re-encoding (issue 5 item 6: "video WebM").

:class:`Vp8Reader` is sans-I/O: RTP packets of one VP8 stream in (RFC 7741), whole compressed frames
out. Packets go through a :class:`~rtc2sip.coder.jitterbuffer.VideoJitterBuffer` (a packet overtaken
on the way is put back in its place) into the coder's RFC 7741 depacketizer
(:class:`~rtc2sip.coder.rtp_video.Vp8Depacketizer`). A frame with a hole is dropped, and so is every
frame after a loss until the next keyframe (§4.3: a keyframe is the only frame that decodes on its
own), so the file never holds a frame its decoder cannot place; the drops are counted.

:class:`WebmWriter` muxes those frames with PyAV (libavformat's Matroska/WebM muxer, 1 ms time base)
as they came, timed by their RTP timestamps (90 kHz, §4.1) from the first keyframe. The picture size
comes from the keyframe header (RFC 6386 §9.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, cast

from ..coder.jitterbuffer import VideoJitterBuffer
from ..coder.rtp_video import EncodedFrame, Vp8Depacketizer

__all__ = ["Vp8Reader", "WebmWriter", "vp8_keyframe_size"]

# Packets overtaken on the way are put back in order if they arrive within this (the recorder has
# no latency to keep: a little more than the coder's jitter buffer)
_REORDER_DELAY = 0.2
_CLOCK = 90000


def vp8_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of a VP8 keyframe (RFC 6386 §9.1), None for an interframe or a bad header."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


class Vp8Reader:
    """One VP8 stream's RTP packets in, the frames a WebM file may hold out; see the module docstring.

    :meth:`push` takes one packet's fields and its arrival time and returns the frames it completes
    (several when it fills a gap); :meth:`flush` returns what is still held, at the end.
    """

    def __init__(self, max_delay: float = _REORDER_DELAY) -> None:
        self._buffer = VideoJitterBuffer(max_delay)
        self._depacketizer = Vp8Depacketizer()
        self.waiting_keyframe = True
        self.frames = 0
        self.keyframes = 0
        self.dropped = 0  # frames incomplete, or undecodable (after a loss, before a keyframe)

    @property
    def malformed(self) -> int:
        return self._depacketizer.malformed

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes, now: float) -> list[EncodedFrame]:
        """An empty ``payload`` is a padding-only packet (RFC 3550 §5.1): it takes its sequence number."""
        return self._frames(self._buffer.push((timestamp, marker, payload), seq, now))

    def flush(self) -> list[EncodedFrame]:
        return self._frames(self._buffer.flush(math.inf))

    def _frames(self, released: list[tuple[int, object]]) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        for seq, item in released:
            timestamp, marker, payload = cast(tuple[int, bool, bytes], item)
            for frame in self._depacketizer.push(payload, seq, timestamp, marker):
                if self._admit(frame):
                    out.append(frame)
        return out

    def _admit(self, frame: EncodedFrame) -> bool:
        # RFC 7741 §4.3: only a keyframe decodes on its own, so after any loss the file waits for one
        keyframe = frame.complete and vp8_keyframe_size(frame.data) is not None
        if not frame.complete or frame.after_gap:
            self.waiting_keyframe = True
        if not frame.complete or (self.waiting_keyframe and not keyframe):
            self.dropped += 1
            return False
        self.waiting_keyframe = False
        self.frames += 1
        self.keyframes += keyframe
        return True


class WebmWriter:
    """One VP8 track in a WebM file; opened at the first keyframe (which gives the picture size)."""

    def __init__(self, path: Path, opener: Callable[[Path], IO[bytes]]) -> None:
        self.path = path
        self._opener = opener
        self._file: IO[bytes] | None = None
        self._out: Any = None
        self._stream: Any = None
        self._first_ts: int | None = None
        self._last_pts = -1
        self._high = 0  # RTP timestamp unwrapped past 2**32
        self._prev_ts = 0
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self.seconds = 0.0

    def write(self, frame: EncodedFrame) -> None:
        import av

        if self._out is None:
            size = vp8_keyframe_size(frame.data)
            if size is None:
                return  # a file starts with a keyframe (the depacketizer gives one first)
            self._file = self._opener(self.path)
            try:
                self._out = av.open(self._file, "w", format="webm")
                stream = self._out.add_stream("libvpx", rate=30)
                stream.width, stream.height = size
                stream.pix_fmt = "yuv420p"
                stream.time_base = Fraction(1, 1000)
                self._stream = stream
            except BaseException:
                self._file.close()
                self._file = self._out = None
                raise
            self.size = size
            self._first_ts = self._prev_ts = frame.timestamp
        if (frame.timestamp - self._prev_ts) & 0xFFFFFFFF >= 0x80000000:
            return  # older than the last frame written: out of order, a muxer refuses it
        if self.frames and frame.timestamp == self._prev_ts:
            return  # the same picture again (RFC 7741 §4.1: one timestamp per frame), e.g. rebuilt from a late copy
        if frame.timestamp < self._prev_ts:
            self._high += 1 << 32
        self._prev_ts = frame.timestamp
        assert self._first_ts is not None
        pts = (self._high + frame.timestamp - self._first_ts) * 1000 // _CLOCK
        if pts <= self._last_pts:
            pts = self._last_pts + 1  # two frames in one millisecond: keep the order strict
        self._last_pts = pts
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.time_base = Fraction(1, 1000)
        packet.pts = packet.dts = pts
        packet.is_keyframe = frame.keyframe
        self._out.mux(packet)
        self.frames += 1
        self.seconds = pts / 1000

    def rebase(self, timestamp: int) -> None:
        """A new source (re-INVITE, transfer) whose RTP timestamps have another origin: its next frame
        follows the last one written."""
        if self._first_ts is not None:
            self._first_ts = timestamp - (self._last_pts + 1) * _CLOCK // 1000
            self._high = 0
            self._prev_ts = timestamp

    def close(self) -> None:
        out, self._out = self._out, None
        file, self._file = self._file, None
        try:
            if out is not None:
                out.close()  # writes the cues and the segment size
        finally:
            if file is not None:
                file.close()

"""VP8 over RTP into a WebM file, without re-encoding (issue 5 item 6: "video WebM").

:class:`Vp8Depacketizer` is sans-I/O: RTP packets of one VP8 stream in (RFC 7741), whole compressed
frames out. A frame is the packets of one RTP timestamp, from the one that starts partition 0 (S=1,
PartID=0, §4.2) to the one with the marker bit (§4.1), with no sequence number missing between them.
A frame with a hole is dropped, and so is every frame after it until the next keyframe (§4.3: a
keyframe is the only frame that decodes on its own), so the file never holds a frame its decoder
cannot place; the drops are counted.

:class:`WebmWriter` muxes those frames with PyAV (libavformat's Matroska/WebM muxer, 1 ms time base)
as they came, timed by their RTP timestamps (90 kHz, §4.1) from the first keyframe. The picture size
comes from the keyframe header (RFC 6386 §9.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from ..coder.rtp_video import parse_vp8_descriptor

__all__ = ["Vp8Depacketizer", "Vp8Frame", "WebmWriter", "vp8_keyframe_size"]

_MAX_FRAME_PACKETS = 2000  # a frame bigger than this (2 MB and more) is broken input, not video
_CLOCK = 90000


@dataclass(frozen=True, slots=True)
class Vp8Frame:
    data: bytes
    timestamp: int  # RTP, 90 kHz
    keyframe: bool


def vp8_keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of a VP8 keyframe (RFC 6386 §9.1), None for an interframe or a bad header."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


class Vp8Depacketizer:
    """See the module docstring. :meth:`push` takes one RTP packet's fields and returns the frame it
    completes, if any."""

    def __init__(self) -> None:
        self._ts: int | None = None
        self._parts: dict[int, tuple[bytes, bool, bool]] = {}  # seq -> (VP8 data, starts frame, marker)
        self._last_seq: int | None = None  # of the last frame emitted: a gap before the next one is a loss
        self.waiting_keyframe = True
        self.frames = 0
        self.keyframes = 0
        self.dropped = 0  # frames incomplete, or undecodable (after a loss, before a keyframe)
        self.malformed = 0

    def push(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> Vp8Frame | None:
        parsed = parse_vp8_descriptor(payload)
        if parsed is None or parsed[1] >= len(payload):
            self.malformed += 1
            return None
        s_bit, n, _pid, partition = parsed
        start = s_bit and partition == 0
        if timestamp != self._ts:
            if self._parts:
                self._lost()  # the previous frame never completed
            self._ts = timestamp
        if len(self._parts) >= _MAX_FRAME_PACKETS:
            self._lost()
            return None
        self._parts[seq] = (payload[n:], start, marker)
        if not marker:
            return None
        return self._assemble()

    def padding(self, seq: int) -> None:
        """A packet with no payload (padding only, RFC 3550 §5.1) took a sequence number between two
        frames: not a loss."""
        if not self._parts and self._last_seq is not None and (seq - self._last_seq) & 0xFFFF == 1:
            self._last_seq = seq

    def _lost(self) -> None:
        self.dropped += 1
        self.waiting_keyframe = True
        self._parts = {}

    def _assemble(self) -> Vp8Frame | None:
        parts, self._parts = self._parts, {}
        first = next((s for s, (_, start, _) in parts.items() if start), None)
        last = next((s for s, (_, _, m) in parts.items() if m), None)
        if first is None or last is None:
            self.dropped += 1
            self.waiting_keyframe = True
            return None
        count = ((last - first) & 0xFFFF) + 1
        seqs = [(first + i) & 0xFFFF for i in range(count)]
        if count != len(parts) or any(s not in parts for s in seqs):
            self.dropped += 1
            self.waiting_keyframe = True
            return None
        if self._last_seq is not None and (first - self._last_seq) & 0xFFFF != 1:
            self.waiting_keyframe = True  # a whole frame went missing between the two
        self._last_seq = last
        data = b"".join(parts[s][0] for s in seqs)
        keyframe = vp8_keyframe_size(data) is not None
        assert self._ts is not None
        if self.waiting_keyframe and not keyframe:
            self.dropped += 1
            return None
        self.waiting_keyframe = False
        self.frames += 1
        self.keyframes += keyframe
        return Vp8Frame(data, self._ts, keyframe)


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

    def write(self, frame: Vp8Frame) -> None:
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

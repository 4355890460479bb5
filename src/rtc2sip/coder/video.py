"""Video transcoding for the Media Coder, sans I/O: RTP payloads of one codec in, of another out.

One :class:`VideoTranscoder` serves one direction of one call, VP8 ⇄ H.264 (issue 4 §3):
jitter buffer (``enable-videojb``) → depacketizer (RFC 7741 / RFC 6184) → FFmpeg's ``vp8`` or ``h264``
decoder → scaling to ``width`` x ``height`` (``video-size-pref``; a source already that size is not
touched) → encoder → packetizer. The encoders are set for real-time conversation:

- H.264: libx264 ``ultrafast``/``zerolatency``, profile baseline level 3.1 (x264 marks it constrained
  baseline, the ``42e01f`` the SDP offers), no B-frames, SPS and PPS repeated before each IDR (x264's
  ``repeat-headers``, FFmpeg's default without global headers) so that a receiver joining on a
  keyframe can decode it; in packetization-mode 0 ``slice-max-size`` keeps every NAL unit within
  ``max_payload`` (RFC 6184 §6.2 allows no fragmentation there).
- VP8: libvpx ``deadline=realtime``, ``cpu-used=8``, no frame lag, error resilient.

Keyframes: a PLI/FIR from the destination calls :meth:`VideoTranscoder.request_keyframe` (any
thread); the next frame is encoded as one. The other way, the decoder needs a keyframe from the
source at the start, after a loss that left a frame incomplete or took whole frames, and after a
decode error: it then drops frames until one arrives (a picture predicted from a missing one is
smeared until the next keyframe anyway), and :meth:`~VideoTranscoder.take_keyframe_request` tells
the relay to send PLI/FIR (again every ``KEYFRAME_RETRY`` seconds while it waits).

Payloads come without RTP padding (an empty one, a padding-only probe, just takes its sequence
number); ``arrival`` is the caller's monotonic clock in seconds, which paces the jitter buffer and
the keyframe retries. The jitter buffer releases on the next push, or on :meth:`VideoTranscoder.flush`
for an owner that runs a timer.

Output timestamps are the destination stream's own (90 kHz, a random base unless
``dst_timestamp``), advancing with each decoded picture's presentation timestamp, so a source
restart (timestamp jump) does not show on the destination. Sequence numbers and SSRC are the
caller's, as for audio. x264's SEI (its settings string) is not sent.
"""

from __future__ import annotations

import logging
import secrets
import threading
from fractions import Fraction
from typing import cast

import av
import av.error
import av.video.codeccontext
from av.video.frame import PictureType

from .common import CoderError, OutPacket
from .jitterbuffer import VideoJitterBuffer
from .rtp_video import (
    NAL_SEI,
    EncodedFrame,
    H264Depacketizer,
    Vp8Depacketizer,
    packetize_h264,
    packetize_vp8,
    split_annexb,
)

__all__ = ["KEYFRAME_RETRY", "MIN_BITRATE", "VIDEO_CODECS", "VideoTranscoder"]

log = logging.getLogger("rtc2sip.coder")

VIDEO_CODECS = ("vp8", "h264")
CLOCK = 90000  # RTP clock of both formats (RFC 7741 §4.1, RFC 6184 §5.1)
MIN_BITRATE = 100_000
MAX_SOURCE_PIXELS = 4096 * 2304
KEYFRAME_RETRY = 1.0  # seconds between keyframe requests toward a source that does not send one
_MAX_STEP_S = 5  # a larger (or backward) source timestamp step is a restart, not a pause
_VP8_REOPEN_RATIO = 0.2  # libvpx through FFmpeg takes no live bitrate change: re-open only on a real one
_VP8_REOPEN_MIN_S = 2.0


def _codec(name: str) -> str:
    name = name.lower()
    if name.startswith("h264"):  # webrtc2sip's h264-bp / h264-mp names
        return "h264"
    if name not in VIDEO_CODECS:
        raise CoderError(f"no video transcoding for {name!r} (known: {', '.join(VIDEO_CODECS)})")
    return name


class VideoTranscoder:
    """One direction of one call's video; see the module docstring. Runs on one worker thread; only
    :meth:`request_keyframe`, :meth:`set_bitrate`, :meth:`take_keyframe_request` and :meth:`stats`
    may be called from others."""

    def __init__(self, src_codec: str, dst_codec: str, *, src_pt: int, dst_pt: int,
                 width: int = 640, height: int = 480, fps: int = 30, bitrate: int = 1_000_000,
                 max_bitrate: int = 2_500_000, h264_mode: int = 1, max_payload: int = 1200,
                 jitter_buffer: bool = True, dst_timestamp: int | None = None) -> None:  # fmt: skip
        self.src = _codec(src_codec)
        self.dst = _codec(dst_codec)
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise CoderError(f"video size {width}x{height}: need even sides of at least 16")
        if not 1 <= fps <= 120:
            raise CoderError(f"fps {fps} out of 1..120")
        if h264_mode not in (0, 1):
            raise CoderError(f"H.264 packetization-mode {h264_mode} is not supported (0 or 1)")
        if not 100 <= max_payload <= 65000:
            raise CoderError(f"max_payload {max_payload} out of 100..65000")
        self.src_pt, self.dst_pt = src_pt, dst_pt
        self.width, self.height, self.fps = width, height, fps
        self.max_bitrate = max(MIN_BITRATE, max_bitrate)
        self.h264_mode = h264_mode
        self.max_payload = max_payload
        self._lock = threading.Lock()
        self._bitrate = self._clamp(bitrate)
        self._applied_bitrate = self._bitrate
        self._bitrate_changed_at: float | None = None
        self._force_keyframe = False
        self._need_keyframe = True  # toward the source: nothing decodes before a keyframe
        self._waiting_keyframe = True
        self._keyframe_asked_at: float | None = None
        self._jb = VideoJitterBuffer() if jitter_buffer else None
        self._depacketizer = Vp8Depacketizer() if self.src == "vp8" else H264Depacketizer()
        self._decoder = self._open_decoder()
        self._encoder = self._open_encoder(self._bitrate)
        self._picture_id = secrets.randbits(15)
        self._ts_out = (secrets.randbits(32) if dst_timestamp is None else dst_timestamp) & 0xFFFFFFFF
        self._pts = 0  # encoder pts (90 kHz, from 0, never wraps)
        self._last_src_ts: int | None = None
        self._closed = False
        self.frames_in = 0
        self.frames_incomplete = 0
        self.frames_skipped = 0  # complete but undecodable: waiting for a keyframe
        self.frames_decoded = 0
        self.frames_out = 0
        self.keyframes_out = 0
        self.keyframes_requested = 0  # by the destination
        self.decode_errors = 0
        self.encode_errors = 0
        self.packets_in = 0
        self.packets_out = 0
        self.malformed = 0
        self.src_width = self.src_height = 0

    # -- codecs --------------------------------------------------------------------------------------

    def _open_decoder(self) -> av.video.codeccontext.VideoCodecContext:
        cc = av.CodecContext.create(self.src, "r")
        assert isinstance(cc, av.video.codeccontext.VideoCodecContext)
        cc.thread_count = 1  # frame threads would hold frames back; the pool gives parallelism
        # max_pixels: a forged keyframe header must not make FFmpeg allocate gigabytes
        cc.options = {"flags": "low_delay", "max_pixels": str(MAX_SOURCE_PIXELS)}
        return cc

    def _open_encoder(self, bitrate: int) -> av.video.codeccontext.VideoCodecContext:
        name = "libx264" if self.dst == "h264" else "libvpx"
        try:
            cc = av.CodecContext.create(name, "w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise CoderError(f"no {name} encoder in this FFmpeg: {exc}") from exc
        assert isinstance(cc, av.video.codeccontext.VideoCodecContext)
        cc.width, cc.height, cc.pix_fmt = self.width, self.height, "yuv420p"
        cc.time_base = Fraction(1, CLOCK)
        cc.framerate = Fraction(self.fps, 1)
        cc.bit_rate = bitrate
        cc.gop_size = self.fps * 10  # a periodic keyframe for receivers that never ask for one
        cc.max_b_frames = 0
        cc.thread_count = 1
        if self.dst == "h264":
            # ABR without VBV: FFmpeg's wrapper re-applies avctx's VBV fields on a live bitrate change
            options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "level": "3.1",
                       "forced-idr": "1"}
            if self.h264_mode == 0:
                options["x264-params"] = f"slice-max-size={self.max_payload}"
            cc.options = options
        else:
            cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
                          "error-resilient": "1"}
        try:
            cc.open()
        except av.error.FFmpegError as exc:
            raise CoderError(f"{name} would not open at {self.width}x{self.height}: {exc}") from exc
        return cc

    # -- thread-safe controls ------------------------------------------------------------------------

    def _clamp(self, bps: int) -> int:
        return max(MIN_BITRATE, min(int(bps), self.max_bitrate))

    def request_keyframe(self) -> None:
        """The destination asked (PLI, FIR, SIP INFO picture_fast_update): the next frame is a keyframe."""
        with self._lock:
            self._force_keyframe = True
            self.keyframes_requested += 1

    def set_bitrate(self, bps: int) -> None:
        """The destination's REMB or TMMBR: the encoder's target, within [MIN_BITRATE, max_bitrate]."""
        with self._lock:
            self._bitrate = self._clamp(bps)

    def take_keyframe_request(self) -> bool:
        """True once per request the decoder makes for a keyframe from the source (for the relay to
        send PLI/FIR toward it)."""
        with self._lock:
            wanted, self._need_keyframe = self._need_keyframe, False
            return wanted

    def stats(self) -> dict[str, object]:
        jb = self._jb
        return {
            "src_codec": self.src, "dst_codec": self.dst,
            "packets_in": self.packets_in, "packets_out": self.packets_out,
            "frames_in": self.frames_in, "frames_incomplete": self.frames_incomplete,
            "frames_skipped": self.frames_skipped, "frames_decoded": self.frames_decoded,
            "frames_out": self.frames_out, "keyframes_out": self.keyframes_out,
            "keyframes_requested": self.keyframes_requested, "decode_errors": self.decode_errors,
            "encode_errors": self.encode_errors, "malformed": self.malformed + self._depacketizer.malformed,
            "lost": jb.lost if jb is not None else 0, "bitrate": self._applied_bitrate,
            "width": self.width, "height": self.height, "src_width": self.src_width, "src_height": self.src_height,
        }  # fmt: skip

    # -- the media path ------------------------------------------------------------------------------

    def push(self, payload: bytes, timestamp: int, seq: int, marker: bool, arrival: float,
             payload_type: int | None = None) -> list[OutPacket]:  # fmt: skip
        """One source RTP packet in; the destination payloads it completes out (marker on each frame's
        last). A payload of another type is a :class:`CoderError`; a malformed one is counted."""
        if self._closed:
            return []
        if payload_type is not None and payload_type != self.src_pt:
            raise CoderError(f"payload type {payload_type} is not {self.src} ({self.src_pt})")
        self.packets_in += 1
        item = (bytes(payload), timestamp & 0xFFFFFFFF, bool(marker))
        if self._jb is None:
            released: list[tuple[int, object]] = [(seq & 0xFFFF, item)]
        else:
            released = self._jb.push(item, seq, arrival)
        out = self._depacketize(released, arrival)
        if self._waiting_keyframe:
            if self._keyframe_asked_at is None:  # the request made at start counts as asked now
                self._keyframe_asked_at = arrival
            self._ask_keyframe(arrival)
        return out

    def flush(self, now: float) -> list[OutPacket]:
        """Release what the jitter buffer held past its delay (for an owner with a timer)."""
        if self._closed or self._jb is None:
            return []
        return self._depacketize(self._jb.flush(now), now)

    def _depacketize(self, released: list[tuple[int, object]], now: float) -> list[OutPacket]:
        out: list[OutPacket] = []
        for seq, item in released:
            data, ts, mark = cast(tuple[bytes, int, bool], item)
            for frame in self._depacketizer.push(data, seq, ts, mark):
                out.extend(self._frame(frame, now))
        return out

    def _ask_keyframe(self, now: float, force: bool = False) -> None:
        if force or self._keyframe_asked_at is None or now - self._keyframe_asked_at >= KEYFRAME_RETRY:
            self._keyframe_asked_at = now
            with self._lock:
                self._need_keyframe = True

    def _lose_sync(self, now: float) -> None:
        first = not self._waiting_keyframe
        self._waiting_keyframe = True
        self._ask_keyframe(now, force=first)

    def _frame(self, frame: EncodedFrame, now: float) -> list[OutPacket]:
        self.frames_in += 1
        if not frame.complete:
            self.frames_incomplete += 1
            self._lose_sync(now)
            return []
        if frame.after_gap and not frame.keyframe:
            self._lose_sync(now)  # whole frames were lost: this one may predict from them
        if self._waiting_keyframe and not frame.keyframe:
            self.frames_skipped += 1
            return []
        try:
            packet = av.Packet(frame.data)
            packet.pts = frame.timestamp  # comes back on the picture: right even if a decoder reorders
            pictures = self._decoder.decode(packet)
        except (av.error.FFmpegError, ValueError) as exc:
            self.decode_errors += 1
            log.debug("video %s decode error: %s", self.src, exc)
            self._lose_sync(now)
            return []
        if frame.keyframe:
            self._waiting_keyframe = False
        out: list[OutPacket] = []
        for picture in pictures:
            self.frames_decoded += 1
            src_ts = frame.timestamp if picture.pts is None else picture.pts & 0xFFFFFFFF
            out.extend(self._encode(picture, src_ts, now))
        return out

    def _advance(self, src_ts: int) -> int:
        """The destination timestamp of a source frame: the source's step, unless it jumped."""
        if self._last_src_ts is not None:
            step = (src_ts - self._last_src_ts) & 0xFFFFFFFF
            if step == 0 or step > _MAX_STEP_S * CLOCK:
                step = CLOCK // self.fps
            self._ts_out = (self._ts_out + step) & 0xFFFFFFFF
            self._pts += step
        self._last_src_ts = src_ts
        return self._ts_out

    def _encode(self, picture: av.VideoFrame, src_ts: int, now: float) -> list[OutPacket]:
        self.src_width, self.src_height = picture.width, picture.height
        if picture.width != self.width or picture.height != self.height or picture.format.name != "yuv420p":
            picture = picture.reformat(width=self.width, height=self.height, format="yuv420p")
        ts = self._advance(src_ts)
        self._apply_bitrate(now)
        with self._lock:
            key, self._force_keyframe = self._force_keyframe, False
        picture.pts = self._pts
        picture.pict_type = PictureType.I if key else PictureType.NONE
        try:
            packets = [(bytes(p), bool(p.is_keyframe)) for p in self._encoder.encode(picture)]
        except (av.error.FFmpegError, ValueError) as exc:
            self.encode_errors += 1
            log.warning("video %s encode error, re-opening the encoder: %s", self.dst, exc)
            self._encoder = self._open_encoder(self._applied_bitrate)
            return []
        out: list[OutPacket] = []
        for data, keyframe in packets:
            try:
                if self.dst == "h264":
                    payloads = packetize_h264(_strip_sei(data), self.max_payload, self.h264_mode)
                else:
                    payloads = packetize_vp8(data, self.max_payload, self._picture_id)
                    self._picture_id = (self._picture_id + 1) & 0x7FFF
            except CoderError as exc:  # mode 0 and a slice x264 could not keep small: drop, ask again
                self.encode_errors += 1
                log.warning("video %s packetization: %s", self.dst, exc)
                self.request_keyframe()
                continue
            self.frames_out += 1
            self.keyframes_out += keyframe
            last = len(payloads) - 1
            out.extend(OutPacket(p, ts, i == last, self.dst_pt) for i, p in enumerate(payloads))
        self.packets_out += len(out)
        return out

    def _apply_bitrate(self, now: float) -> None:
        with self._lock:
            wanted = self._bitrate
        current = self._applied_bitrate
        if wanted == current:
            return
        if self.dst == "h264":
            # FFmpeg's libx264 wrapper compares bit_rate before each frame and calls x264_encoder_reconfig
            self._encoder.bit_rate = wanted
            self._applied_bitrate = wanted
            return
        # libvpx would need a new encoder (and so a keyframe): only for a change worth it, not too often
        if abs(wanted - current) < current * _VP8_REOPEN_RATIO:
            return
        if self._bitrate_changed_at is not None and now - self._bitrate_changed_at < _VP8_REOPEN_MIN_S:
            return
        self._bitrate_changed_at = now
        self._encoder = self._open_encoder(wanted)
        self._applied_bitrate = wanted

    def close(self) -> None:
        """Drop the codec contexts; later pushes return nothing."""
        self._closed = True
        self._jb = None


def _strip_sei(access_unit: bytes) -> bytes:
    """The access unit without SEI NAL units: x264 puts its ~600-byte settings string in one before
    the first IDR, of no use to a receiver and larger than a mode-0 packet may be."""
    if b"\x06" not in access_unit:
        return access_unit
    nals = split_annexb(access_unit)
    if all(n[0] & 0x1F != NAL_SEI for n in nals):
        return access_unit
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals if n[0] & 0x1F != NAL_SEI)

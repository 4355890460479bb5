"""``sip:testpattern@DOMAIN``: a generated VP8 picture with a running clock, and a tone.

A user without a camera (or a phone without video) checks that video reaches them: the service
answers an audio+video offer and sends, until the caller hangs up (or ``max_duration``):

- video: colour bars, a block moving along a strip (every frame differs) and the wall clock to the
  tenth of a second in block digits (``HH:MM:SS.t``), drawn into the frame planes with plain Python,
  encoded with PyAV's libvpx (VP8) on a worker thread, off the event loop, and packetised per
  RFC 7741 (payload descriptor with a 15-bit PictureID, fragments of at most ``max_payload`` bytes,
  marker on a frame's last packet, 90 kHz timestamps). A keyframe starts the stream, follows a PLI or
  FIR received on the stream's RTCP, and comes every ``keyframe_interval`` seconds anyway (the media
  plane does not relay a browser's feedback yet);
- audio: a ``tone_hz`` sine in the first offered codec PyAV can encode (PCMU, PCMA, G722 or Opus):
  one second of packets is encoded when the call starts and looped (seamless for an integer
  frequency).

The caller's own media is ignored. RTP goes where the caller's RTP comes from (symmetric RTP), or
to the address its SDP announced until then. A browser reaches the service through the RTCWeb
Breaker, which makes the services' UAS the plain-RTP legacy leg of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import struct
import time
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from ..coder import rtp_video
from ..sdp import Codec
from .streams import Address, Stream
from .uas import ServiceCall

__all__ = ["AudioTone", "PatternGenerator", "TestPatternService", "Vp8Encoder", "packetize_vp8", "parse_vp8_descriptor"]

log = logging.getLogger("rtc2sip.services")

# --------------------------------------------------------------------------------------------------
# The picture

# BT.601 75 % colour bars: white, yellow, cyan, green, magenta, red, blue, black (Y, Cb, Cr)
_BARS = ((180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
         (84, 184, 198), (65, 100, 212), (35, 212, 114), (16, 128, 128))
_BLACK, _WHITE = 16, 235

# 5x7 block font, one string of five 0/1 per row
_FONT: dict[str, tuple[str, ...]] = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    " ": ("00000",) * 7,
}
CLOCK_CHARS = 10  # "HH:MM:SS.t"


class PatternGenerator:
    """yuv420p frames: bars on the top 60 %, a strip with a moving block, the clock below it. Only the
    luma plane changes from frame to frame (the strip and the clock sit on neutral chroma)."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        if width % 2 or height % 2 or width < 160 or height < 96:
            raise ValueError(f"unsupported picture size {width}x{height}")
        self.width, self.height = width, height
        self.scale = max(2, height // 60)  # font pixel size
        self.bars_h = (height * 6 // 10) & ~1
        self.strip_y, self.strip_h = self.bars_h + self.scale * 2, self.scale * 4
        cw = 6 * self.scale
        self.clock_w, self.clock_h = CLOCK_CHARS * cw - self.scale, 7 * self.scale
        self.clock_x = ((width - self.clock_w) // 2) & ~1
        self.clock_y = (self.strip_y + self.strip_h + (height - self.strip_y - self.strip_h - self.clock_h) // 2) & ~1
        w2, h2 = width // 2, height // 2
        bar = [_BARS[x * 8 // width] for x in range(width)]
        y_row = bytes(c[0] for c in bar)
        self._y = bytearray(y_row * self.bars_h + bytes([_BLACK]) * width * (height - self.bars_h))
        u_row = bytes(bar[2 * x][1] for x in range(w2))
        v_row = bytes(bar[2 * x][2] for x in range(w2))
        rest = bytes([128]) * w2 * (h2 - self.bars_h // 2)
        self._u = u_row * (self.bars_h // 2) + rest
        self._v = v_row * (self.bars_h // 2) + rest
        # each glyph row, scaled: 5 * scale bytes, plus one blank column between glyphs
        self._glyphs = {
            ch: tuple(bytes(_WHITE if bit == "1" else _BLACK for bit in row for _ in range(self.scale)) for row in rows)
            for ch, rows in _FONT.items()
        }

    @property
    def clock_box(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the clock in the luma plane."""
        return self.clock_x, self.clock_y, self.clock_w, self.clock_h

    def luma(self, index: int, wall: float) -> bytearray:
        """The luma plane (width * height bytes) of frame ``index`` showing wall-clock time ``wall``."""
        w = self.width
        y = bytearray(self._y)
        # the moving block: a square travelling the strip, one scale-step per frame
        side = self.strip_h
        span = w - side
        pos = (index * self.scale) % (2 * span)
        x0 = pos if pos < span else 2 * span - pos
        block = bytes([_WHITE]) * side
        for r in range(self.strip_y, self.strip_y + side):
            y[r * w + x0:r * w + x0 + side] = block
        t = time.localtime(wall)
        text = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{int(wall * 10) % 10}"
        s = self.scale
        for i, ch in enumerate(text):
            x = self.clock_x + i * 6 * s
            for gr, pattern in enumerate(self._glyphs.get(ch, self._glyphs[" "])):
                top = self.clock_y + gr * s
                for r in range(top, top + s):
                    y[r * w + x:r * w + x + 5 * s] = pattern
        return y

    def frame(self, index: int, wall: float) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        planes: tuple[bytes, bytes, bytes] = (bytes(self.luma(index, wall)), self._u, self._v)
        for plane, data, pw in zip(frame.planes, planes, (self.width, self.width // 2, self.width // 2),
                                   strict=True):
            plane.update(_strided(data, pw, plane.line_size, plane.buffer_size))
        return frame


def _strided(data: bytes, width: int, stride: int, size: int) -> bytes:
    if stride == width and len(data) == size:
        return data
    out = bytearray(size)
    for r in range(len(data) // width):
        out[r * stride:r * stride + width] = data[r * width:(r + 1) * width]
    return bytes(out)


class Vp8Encoder:
    """PyAV's libvpx in real-time mode, no frame lag: one compressed frame out per frame in."""

    def __init__(self, width: int, height: int, fps: int, bitrate: int = 600_000) -> None:
        cc = av.CodecContext.create("libvpx", "w")
        assert isinstance(cc, av.VideoCodecContext)
        cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
        cc.time_base = Fraction(1, fps)
        cc.framerate = Fraction(fps, 1)
        cc.bit_rate = bitrate
        cc.gop_size = 100_000  # keyframes when asked for (start, PLI/FIR, every few seconds)
        cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0",
                      "error-resilient": "1", "threads": "1"}
        self.cc = cc

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> list[tuple[bytes, bool]]:
        frame.pts = pts
        if keyframe:
            frame.pict_type = PictureType.I
        return [(bytes(p), bool(p.is_keyframe)) for p in self.cc.encode(frame)]


def packetize_vp8(frame: bytes, picture_id: int, max_payload: int = 1200) -> list[bytes]:
    """RFC 7741 §4.2 payloads of one VP8 frame with a 15-bit PictureID (the Media Coder's packetizer)."""
    return rtp_video.packetize_vp8(frame, max_payload, picture_id)


def parse_vp8_descriptor(payload: bytes) -> tuple[bool, int, int | None]:
    """(S bit, header length, PictureID or None) of an RFC 7741 payload."""
    parsed = rtp_video.parse_vp8_descriptor(payload)
    if parsed is None:
        raise ValueError("truncated VP8 payload descriptor")
    return parsed[:3]


# --------------------------------------------------------------------------------------------------
# The tone

@dataclass(frozen=True)
class _AudioCodec:
    encoder: str
    sample_rate: int
    samples: int  # per 20 ms packet
    rtp_step: int  # RTP timestamp units per packet
    constant: int = 0  # bytes per packet for a constant-rate codec (0: one encoder packet each)


_AUDIO: dict[str, _AudioCodec] = {
    "pcmu": _AudioCodec("pcm_mulaw", 8000, 160, 160, 160),
    "pcma": _AudioCodec("pcm_alaw", 8000, 160, 160, 160),
    "g722": _AudioCodec("g722", 16000, 320, 160, 160),  # RFC 3551 §4.5.2: 8000 Hz RTP clock
    "opus": _AudioCodec("libopus", 48000, 960, 960),
}
_AUDIO_CLOCK = {"pcmu": 8000, "pcma": 8000, "g722": 8000, "opus": 48000}


class AudioTone:
    """One second of 20 ms packets of a sine in one codec, to be looped."""

    def __init__(self, codec: str, tone_hz: float = 1000.0, level: float = 0.3) -> None:
        spec = _AUDIO[codec.lower()]
        self.rtp_step = spec.rtp_step
        rate = spec.sample_rate
        cc = av.CodecContext.create(spec.encoder, "w")
        assert isinstance(cc, av.AudioCodecContext)
        cc.sample_rate = rate
        cc.layout = "mono"
        cc.format = "s16"
        if spec.encoder == "libopus":
            cc.bit_rate = 32000
        amp = level * 32767
        seconds = 2 if not spec.constant else 1  # Opus: skip the encoder's start-up second
        out: list[bytes] = []
        for n in range(seconds * 50):
            pcm = array("h", (int(amp * math.sin(2 * math.pi * tone_hz * (n * spec.samples + i) / rate))
                              for i in range(spec.samples)))
            frame = av.AudioFrame(format="s16", layout="mono", samples=spec.samples)
            frame.sample_rate = rate
            frame.pts = n * spec.samples
            frame.planes[0].update(pcm.tobytes())
            out.extend(bytes(p) for p in cc.encode(frame))
        out.extend(bytes(p) for p in cc.encode(None))
        if spec.constant:
            data = b"".join(out)
            self.packets = [data[i:i + spec.constant] for i in range(0, 50 * spec.constant, spec.constant)]
        else:
            self.packets = out[-50:]
        if len(self.packets) != 50 or not all(self.packets):
            raise ValueError(f"{codec}: the encoder gave {len(self.packets)} packets for a second")


# --------------------------------------------------------------------------------------------------
# The service

@dataclass(eq=False)
class _Sender:
    stream: Stream
    codec: Codec
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    packets: int = 0
    keyframe_wanted: bool = True
    keyframes: int = 0

    def destination(self) -> Address | None:
        if self.stream.sources:
            return self.stream.sources.most_common(1)[0][0]  # symmetric RTP
        return self.stream.announced

    def send(self, payload: bytes, timestamp: int, marker: bool) -> None:
        dest = self.destination()
        transport = self.stream.rtp
        if dest is None or transport is None:
            return
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | self.codec.pt, self.seq,
                             timestamp & 0xFFFFFFFF, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        transport.sendto(header + payload, dest)
        self.packets += 1


def _feedback(data: bytes) -> Iterator[tuple[int, int]]:
    """(packet type, FMT) of each packet of an RTCP compound packet."""
    i = 0
    while i + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, i)
        if b0 >> 6 != 2:
            return
        yield pt, b0 & 0x1F
        i += 4 * (length + 1)


class TestPatternService:
    """See the module docstring."""

    __test__ = False  # not a pytest class, whatever its name
    name = "testpattern"
    reflect = False

    def __init__(self, *, width: int = 640, height: int = 360, fps: int = 15, tone_hz: float = 1000.0,
                 keyframe_interval: float = 2.0, max_duration: float = 600.0, bitrate: int = 600_000,
                 max_payload: int = 1200) -> None:
        if not 1 <= fps <= 60:
            raise ValueError(f"fps {fps} out of 1..60")
        self.width, self.height, self.fps = width, height, fps
        self.tone_hz = tone_hz
        self.keyframe_interval = keyframe_interval
        self.max_duration = max_duration
        self.bitrate = bitrate
        self.max_payload = max_payload
        self.pattern = PatternGenerator(width, height)  # validates the size; shared, read-only
        self._tones: dict[str, AudioTone] = {}

    def choose_codec(self, kind: str, codecs: list[Codec]) -> Codec | None:
        """Audio: the first offered codec there is an encoder for; video: VP8."""
        for c in codecs:
            name = c.name.lower()
            if kind == "audio" and name in _AUDIO and c.clock_rate == _AUDIO_CLOCK[name]:
                return c
            if kind == "video" and name == "vp8" and c.clock_rate == 90000:
                return c
        return None

    def started(self, call: ServiceCall) -> None:
        tasks: list[asyncio.Task[Any]] = []
        senders: list[_Sender] = []
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"testpattern-{call.call_id[:8]}")
        call.data["executor"] = executor
        loop = asyncio.get_running_loop()
        for s in call.streams:
            codec = self.choose_codec(s.kind, [c for c in s.offer.codecs])
            if codec is None or s.offer.rejected or s.offer.direction not in ("sendrecv", "recvonly"):
                continue
            sender = _Sender(s, codec)
            senders.append(sender)
            if s.kind == "video":
                s.on_rtcp = lambda _s, data, sender=sender: self._on_rtcp(sender, data)
                tasks.append(loop.create_task(self._video(call, sender, executor)))
            else:
                tasks.append(loop.create_task(self._audio(call, sender, executor)))
        call.data["senders"] = senders
        call.data["tasks"] = tasks
        call.uas.spawn(self._limit(call))
        log.info("call-id=%s testpattern: sending %s", call.call_id,
                 ", ".join(f"{x.stream.kind} {x.codec.name}/{x.codec.clock_rate}" for x in senders) or "nothing")

    def ended(self, call: ServiceCall, reason: str) -> None:
        for t in call.data.get("tasks", []):
            t.cancel()
        executor = call.data.get("executor")
        if isinstance(executor, ThreadPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
        log.info("call-id=%s testpattern: ended (%s), %s", call.call_id, reason,
                 ", ".join(f"{x.stream.kind} {x.packets} packets sent" + (f" ({x.keyframes} keyframes)"
                                                                          if x.stream.kind == "video" else "")
                           for x in call.data.get("senders", [])))

    async def _limit(self, call: ServiceCall) -> None:
        await asyncio.sleep(self.max_duration)
        if not call.ended:
            await call.hang_up("test pattern time limit")

    @staticmethod
    def _on_rtcp(sender: _Sender, data: bytes) -> None:
        for pt, fmt in _feedback(data):
            if pt == 206 and fmt in (1, 4):  # RFC 4585 PLI, RFC 5104 FIR
                sender.keyframe_wanted = True

    async def _audio(self, call: ServiceCall, sender: _Sender, executor: ThreadPoolExecutor) -> None:
        name = sender.codec.name.lower()
        try:
            tone = self._tones.get(name)
            if tone is None:
                loop = asyncio.get_running_loop()
                tone = self._tones[name] = await loop.run_in_executor(executor, AudioTone, name, self.tone_hz)
            start = time.monotonic()
            n = 0
            while not call.ended:
                sender.send(tone.packets[n % 50], n * tone.rtp_step, n == 0)
                n += 1
                delay = start + n * 0.02 - time.monotonic()
                if delay < -0.2:  # the loop stalled: skip ahead, the timestamps keep real time
                    n += int(-delay / 0.02)
                    delay = 0
                await asyncio.sleep(max(0.0, delay))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call-id=%s testpattern: audio failed", call.call_id)

    async def _video(self, call: ServiceCall, sender: _Sender, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        try:
            encoder = await loop.run_in_executor(executor, Vp8Encoder, self.width, self.height, self.fps,
                                                 self.bitrate)
            period = 1.0 / self.fps
            start = time.monotonic()
            last_key = -math.inf
            n = 0
            picture_id = secrets.randbits(15)
            while not call.ended:
                now = time.monotonic()
                key = sender.keyframe_wanted or now - last_key >= self.keyframe_interval
                frames = await loop.run_in_executor(executor, self._encode, encoder, n, time.time(), key)
                if call.ended:
                    return
                if key:
                    sender.keyframe_wanted = False
                    last_key = now
                timestamp = n * 90000 // self.fps
                for data, is_key in frames:
                    sender.keyframes += is_key
                    payloads = packetize_vp8(data, picture_id, self.max_payload)
                    picture_id = (picture_id + 1) & 0x7FFF
                    for i, p in enumerate(payloads):
                        sender.send(p, timestamp, i == len(payloads) - 1)
                n += 1
                delay = start + n * period - time.monotonic()
                if delay < -0.5:  # encoding fell behind: drop frames, keep the clock
                    n += int(-delay / period)
                    delay = 0
                await asyncio.sleep(max(0.0, delay))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call-id=%s testpattern: video failed", call.call_id)

    def _encode(self, encoder: Vp8Encoder, index: int, wall: float, key: bool) -> list[tuple[bytes, bool]]:
        with contextlib.suppress(av.error.EOFError):
            return encoder.encode(self.pattern.frame(index, wall), index, key)
        return []

"""The audio codecs of the Media Coder: their table, and payload ⇄ mono 16-bit PCM in both directions.

Clock rates are the RTP ones: Opus always 48000 whatever it carries (RFC 7587 §4.1), G.722 8000 for
16 kHz audio (RFC 3551 §4.5.2, a historical error kept for compatibility), G.711 8000.

Opus is decoded through libopus itself (the copy PyAV's wheel bundles, or the system's), through
ctypes: FFmpeg's libopus wrapper always passes ``decode_fec=0`` and decodes at 48 kHz only, and in-band
FEC (RFC 7587 §3.3) needs the flag. libopus also decodes straight at 8 or 16 kHz, which saves the
resampler on the browser → legacy path. Without a loadable libopus, Opus goes through PyAV with
packet loss concealment only (RFC 6716 §3.2.1). Every encoder, and the G.711/G.722 decoders, are
FFmpeg's via PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from dataclasses import dataclass
from typing import Protocol

import av
import av.audio.codeccontext
import av.error

from .common import CoderError

__all__ = ["CODECS", "OPUS_RATES", "AudioCodec", "AvDecoder", "AvEncoder", "LibOpusDecoder", "PcmDecoder",
           "av_frame", "libopus_available", "pcm_of"]


@dataclass(frozen=True, slots=True)
class AudioCodec:
    """An audio codec as the coder sees it: FFmpeg names, PCM rate, RTP clock (RFC 3551 §6)."""

    name: str
    encoder: str
    decoder: str
    pcm_rate: int  # the audio the codec carries
    clock_rate: int  # the RTP timestamp clock
    ptimes: tuple[int, ...]  # packet durations the encoder can produce, in ms


_ANY_PTIME = tuple(range(10, 61))
# Names are webrtc2sip's (sdp.translate.CODEC_SPECS keys).
CODECS: dict[str, AudioCodec] = {
    "opus": AudioCodec("opus", "libopus", "libopus", 48000, 48000, (10, 20, 40, 60)),
    "pcmu": AudioCodec("pcmu", "pcm_mulaw", "pcm_mulaw", 8000, 8000, _ANY_PTIME),
    "pcma": AudioCodec("pcma", "pcm_alaw", "pcm_alaw", 8000, 8000, _ANY_PTIME),
    "g722": AudioCodec("g722", "g722", "g722", 16000, 8000, _ANY_PTIME),
}

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus encodes and decodes at (RFC 6716 §2)
# Bandwidth edge (FFmpeg's AVCodecContext.cutoff, which libopusenc maps to OPUS_SET_MAX_BANDWIDTH)
# and a speech bitrate per input rate (RFC 7587 §3.1.1 ranges).
_OPUS_CUTOFF = {8000: 4000, 12000: 6000, 16000: 8000, 24000: 12000, 48000: 20000}
_OPUS_BITRATE = {8000: 16000, 12000: 20000, 16000: 24000, 24000: 28000, 48000: 32000}


# -- libopus through ctypes ------------------------------------------------------------------------


def _find_libopus() -> str | None:
    # PyAV's manylinux wheel vendors the libopus its FFmpeg links (av.libs/libopus-<hash>.so.0).
    site = os.path.dirname(os.path.dirname(os.path.abspath(av.__file__)))
    vendored = sorted(glob.glob(os.path.join(site, "av.libs", "libopus*.so*")))
    return vendored[0] if vendored else ctypes.util.find_library("opus")


def _load_libopus() -> ctypes.CDLL | None:
    path = _find_libopus()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_int,
                                ctypes.c_int]  # fmt: skip
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    return lib


_LIBOPUS: ctypes.CDLL | None = _load_libopus()


def libopus_available() -> bool:
    """Whether Opus decoding has in-band FEC (a loadable libopus)."""
    return _LIBOPUS is not None


def _opus_duration(payload: bytes) -> int | None:
    """Samples at 48 kHz in an Opus packet (RFC 6716 §3.1-3.2), None if the framing is invalid."""
    if not payload:
        return None
    if _LIBOPUS is not None:
        n = int(_LIBOPUS.opus_packet_get_nb_samples(payload, len(payload), 48000))
        return n if n > 0 else None
    toc = payload[0]
    config, code = toc >> 3, toc & 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        per = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        per = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        per = (120, 240, 480, 960)[config & 3]
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    elif len(payload) < 2:
        return None
    else:
        frames = payload[1] & 0x3F
    total = per * frames
    return total if 0 < total <= 5760 else None


# -- decoders: payload → mono s16 PCM at ``rate`` ----------------------------------------------------


class PcmDecoder(Protocol):
    rate: int
    fec: bool

    def duration(self, payload: bytes) -> int | None:
        """The payload's duration in RTP clock units, None when it cannot be decoded."""

    def decode(self, payload: bytes) -> bytes | None: ...

    def conceal(self, samples: int, following: bytes | None) -> tuple[bytes, bool]:
        """``samples`` of audio for a hole; FEC from ``following`` when possible (second item True)."""

    def close(self) -> None: ...


class LibOpusDecoder:
    """libopus with PLC and in-band FEC (RFC 6716 §4.4, RFC 7587 §3.3), decoding at ``rate``."""

    def __init__(self, rate: int, fec: bool) -> None:
        assert _LIBOPUS is not None
        self._lib = _LIBOPUS
        err = ctypes.c_int(0)
        state = self._lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if not state or err.value != 0:
            raise CoderError(f"opus_decoder_create({rate}) failed: {err.value}")
        self._state: int | None = state
        self.rate = rate
        self.fec = fec
        self._per_ms = rate // 1000
        self._buf = ctypes.create_string_buffer(rate * 120 // 1000 * 2)  # libopus's longest packet

    def duration(self, payload: bytes) -> int | None:
        return _opus_duration(payload)

    def decode(self, payload: bytes) -> bytes | None:
        n = self._lib.opus_decode(self._state, payload, len(payload), self._buf, len(self._buf) // 2, 0)
        return self._buf.raw[: 2 * n] if n > 0 else None

    def conceal(self, samples: int, following: bytes | None) -> tuple[bytes, bool]:
        # libopus wants PLC and FEC lengths in whole 2.5 ms steps; with decode_fec it runs the PLC for
        # the part of the hole the FEC data cannot cover (the last lost frame only).
        step = self.rate // 400
        out = bytearray()
        use_fec = self.fec and following is not None
        remaining = samples - samples % step
        while remaining > 0:
            chunk = min(remaining, len(self._buf) // 2)
            last = chunk == remaining
            data = following if use_fec and last else None
            size = len(data) if data is not None else 0
            n = self._lib.opus_decode(self._state, data, size, self._buf, chunk, int(data is not None))
            if n <= 0:
                break
            out += self._buf.raw[: 2 * n]
            remaining -= n
        out += bytes(2 * (samples - len(out) // 2))
        return bytes(out), use_fec

    def close(self) -> None:
        if self._state:
            self._lib.opus_decoder_destroy(self._state)
            self._state = None


def _context(name: str, mode: str) -> av.audio.codeccontext.AudioCodecContext:
    ctx = av.CodecContext.create(name, "r" if mode == "r" else "w")
    if not isinstance(ctx, av.audio.codeccontext.AudioCodecContext):
        raise CoderError(f"FFmpeg codec {name!r} is not an audio codec")
    return ctx


def av_frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    return frame


def pcm_of(frames: list[av.AudioFrame]) -> bytes:
    return b"".join(bytes(f.planes[0])[: 2 * f.samples] for f in frames)


class AvDecoder:
    """An FFmpeg decoder through PyAV. For Opus (no libopus to load) only PLC, done by sending a
    packet whose single frame is empty: RFC 6716 §3.2.1 lets a 0-byte frame mean "lost", and libopus
    then conceals one frame of the duration the TOC byte says."""

    def __init__(self, codec: AudioCodec) -> None:
        self._codec = codec
        self._ctx = _context(codec.decoder, "r")
        self._ctx.sample_rate = codec.pcm_rate
        self._ctx.layout = "mono"
        self._ctx.open()
        self.rate = codec.pcm_rate
        self.fec = False
        self._last_toc = 0x08  # SILK NB 20 ms, mono, one frame (RFC 6716 §3.1)

    def duration(self, payload: bytes) -> int | None:
        if not payload:
            return None
        if self._codec.name == "opus":
            return _opus_duration(payload)
        samples = len(payload) * 2 if self._codec.name == "g722" else len(payload)  # 4 / 8 bits per sample
        return samples * self._codec.clock_rate // self._codec.pcm_rate

    def _run(self, payload: bytes) -> bytes | None:
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError):
            return None
        return pcm_of(frames)

    def decode(self, payload: bytes) -> bytes | None:
        pcm = self._run(payload)
        if pcm and self._codec.name == "opus":
            self._last_toc = payload[0] & 0xFC
        return pcm

    def conceal(self, samples: int, following: bytes | None) -> tuple[bytes, bool]:
        out = bytearray()
        if self._codec.name == "opus":
            while len(out) // 2 < samples:
                pcm = self._run(bytes((self._last_toc,)))
                if not pcm or len(out) // 2 + len(pcm) // 2 > samples:
                    break
                out += pcm
        out += bytes(2 * samples - len(out))  # G.711/G.722 (and what PLC left): silence
        return bytes(out), False

    def close(self) -> None:
        pass


# -- encoder: mono s16 PCM frames of exactly ``frame_samples`` → one payload each --------------------


class AvEncoder:
    def __init__(self, codec: AudioCodec, rate: int, ptime_ms: int, *, opus_fec: bool, opus_bitrate: int | None,
                 opus_complexity: int) -> None:  # fmt: skip
        ctx = _context(codec.encoder, "w")
        ctx.sample_rate = rate
        ctx.format = "s16"
        ctx.layout = "mono"
        self.frame_samples = rate * ptime_ms // 1000
        options = {"frame_size": str(self.frame_samples)}
        if codec.name == "opus":
            ctx.bit_rate = opus_bitrate or _OPUS_BITRATE[rate]
            # RFC 7587 §3.1.1: voice application; frame_duration = ptime so one frame is one packet;
            # FEC needs an expected loss above zero before libopus spends bits on LBRR frames.
            options = {
                "application": "voip",
                "frame_duration": str(ptime_ms),
                "fec": "1" if opus_fec else "0",
                "packet_loss": "10" if opus_fec else "0",
                "cutoff": str(_OPUS_CUTOFF[rate]),
                "compression_level": str(opus_complexity),
            }
        ctx.options = options
        ctx.open()
        self._ctx = ctx
        self._rate = rate
        self._pts = 0

    def encode(self, pcm: bytes) -> list[bytes]:
        frame = av_frame(pcm, self._rate, self._pts)
        self._pts += len(pcm) // 2
        return [bytes(p) for p in self._ctx.encode(frame)]

"""Audio transcoding for the Media Coder, sans I/O: RTP payloads in, RTP payloads out.

One :class:`AudioTranscoder` serves one direction of one call (Opus/48000/2 ⇄ PCMU/8000, PCMA/8000,
G722/8000): decode → resample → re-frame to the destination ptime → encode. It owns the destination
stream's timestamps (its own base, RFC 3550 §5.1) but not its sequence numbers or SSRC: the caller
numbers every packet it sends on the stream, audio, CN (RFC 3389) and telephone-event (RFC 4733)
alike, and :class:`DtmfMapper` places events on the same timeline.

Clock rates are the RTP ones: Opus always 48000 whatever it carries (RFC 7587 §4.1), G.722 8000 for
16 kHz audio (RFC 3551 §4.5.2, a historical error kept for compatibility), G.711 8000.

Opus is decoded through libopus itself (the copy PyAV's wheel bundles, or the system's), through
ctypes: FFmpeg's libopus wrapper always passes ``decode_fec=0`` and decodes at 48 kHz only, and in-band
FEC (RFC 7587 §3.3) needs the flag. libopus also decodes straight at 8 or 16 kHz, which saves the
resampler on the browser → legacy path. Without a loadable libopus, Opus goes through PyAV with
packet loss concealment only. Every encoder, and the G.711/G.722 decoders, are FFmpeg's via PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import av
import av.audio.codeccontext
import av.audio.resampler
import av.error

__all__ = [
    "CODECS",
    "AudioCodec",
    "AudioTranscoder",
    "CoderError",
    "DtmfMapper",
    "OutPacket",
    "TranscoderStats",
    "libopus_available",
]


class CoderError(ValueError):
    """The transcoder was asked for something it cannot do (unknown codec, payload type, ptime)."""


class OutPacket(NamedTuple):
    """One RTP payload for the destination stream; the caller adds sequence number and SSRC."""

    payload: bytes
    timestamp: int
    marker: bool
    payload_type: int


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

_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus encodes and decodes at (RFC 6716 §2)
# Bandwidth edge (FFmpeg's AVCodecContext.cutoff, which libopusenc maps to OPUS_SET_MAX_BANDWIDTH)
# and a speech bitrate per input rate (RFC 7587 §3.1.1 ranges).
_OPUS_CUTOFF = {8000: 4000, 12000: 6000, 16000: 8000, 24000: 12000, 48000: 20000}
_OPUS_BITRATE = {8000: 16000, 12000: 20000, 16000: 24000, 24000: 28000, 48000: 32000}

_MAX_CONCEAL_MS = 120  # a longer hole is a discontinuity, not a loss to paper over
_MAX_GAP_S = 30  # a larger timestamp jump (or a backward one) means the source restarted
_MAX_DROPOUT = 3000  # RFC 3550 §A.1: a larger sequence jump is a restart, not loss


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


# --------------------------------------------------------------------------------------------------
# libopus through ctypes


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


# --------------------------------------------------------------------------------------------------
# Decoders: payload → mono s16 PCM at ``rate``


class _Decoder(Protocol):
    rate: int
    fec: bool

    def duration(self, payload: bytes) -> int | None:
        """The payload's duration in RTP clock units, None when it cannot be decoded."""

    def decode(self, payload: bytes) -> bytes | None: ...

    def conceal(self, samples: int, following: bytes | None) -> tuple[bytes, bool]:
        """``samples`` of audio for a hole; FEC from ``following`` when possible (second item True)."""

    def close(self) -> None: ...


class _LibOpusDecoder:
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


def _frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    return frame


def _pcm_of(frames: list[av.AudioFrame]) -> bytes:
    return b"".join(bytes(f.planes[0])[: 2 * f.samples] for f in frames)


class _AvDecoder:
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
        return _pcm_of(frames)

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


# --------------------------------------------------------------------------------------------------
# Encoder: mono s16 PCM frames of exactly ``frame_samples`` → one payload each


class _AvEncoder:
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
        frame = _frame(pcm, self._rate, self._pts)
        self._pts += len(pcm) // 2
        return [bytes(p) for p in self._ctx.encode(frame)]


# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TranscoderStats:
    """Counters of one direction; ``concealed_ms`` covers PLC and FEC, ``fec_frames`` FEC alone."""

    packets_in: int = 0
    packets_out: int = 0
    late: int = 0  # duplicates and packets older than the newest one (no jitter buffer here)
    invalid: int = 0  # payloads that did not decode: treated as lost
    lost: int = 0
    concealed_ms: float = 0.0
    fec_frames: int = 0
    discontinuities: int = 0
    cn_in: int = 0
    dtmf_in: int = 0


class AudioTranscoder:
    """One direction of a transcoded call: ``push`` a source RTP payload, get destination payloads.

    ``src_codec``/``dst_codec`` are names of :data:`CODECS`. Packets must come in arrival order, with
    their RTP sequence number, timestamp and marker (RFC 3550 §5.1); duplicates and late packets are
    dropped (a reorder buffer is the relay's business). A sequence gap is a loss: for an Opus source
    it is concealed, by in-band FEC from the packet that follows when ``opus_fec`` (RFC 7587 §3.3),
    else by PLC (RFC 6716 §4.4); other sources get silence. A timestamp jump without a sequence gap
    is silence suppression (DTX, RFC 3551 §4.1): the output jumps too and marks the next packet.

    Comfort noise (RFC 3389) arrives with ``payload_type=src_cn_pt``: it is passed through
    unchanged (the payload is codec-independent, §3) when the destination negotiated CN
    (``dst_cn_pt``), else dropped; either way it starts a silence period, not a loss.
    Telephone-events (``src_dtmf_pt``) share the audio's sequence numbers (RFC 4733 §2.1), so they
    come through here too: remapped by a :class:`DtmfMapper` on the output timeline when the
    destination has ``dst_dtmf_pt``, else dropped, and never counted as lost audio.

    ``opus_maxrate`` caps the Opus encoder's audio bandwidth (``codec-opus-maxrates``, the peer's
    maxplaybackrate, RFC 7587 §6.1); ``opus_bitrate`` its bitrate (maxaveragebitrate).
    """

    def __init__(
        self,
        src_codec: str,
        dst_codec: str,
        *,
        src_pt: int,
        dst_pt: int,
        dst_ptime_ms: int = 20,
        opus_maxrate: int = 48000,
        opus_fec: bool = True,
        opus_bitrate: int | None = None,
        opus_complexity: int = 5,
        src_cn_pt: int | None = 13,
        dst_cn_pt: int | None = None,
        src_dtmf_pt: int | None = None,
        dst_dtmf_pt: int | None = None,
        dst_timestamp: int | None = None,
        use_libopus: bool = True,
    ) -> None:
        try:
            self.src = CODECS[src_codec]
            self.dst = CODECS[dst_codec]
        except KeyError as exc:
            raise CoderError(f"no audio transcoding for {exc.args[0]!r} (known: {', '.join(CODECS)})") from None
        if dst_ptime_ms not in self.dst.ptimes:
            raise CoderError(f"{dst_codec} cannot be packetized at {dst_ptime_ms} ms (allowed: {self.dst.ptimes})")
        self.src_pt, self.dst_pt = src_pt, dst_pt
        self.src_cn_pt, self.dst_cn_pt = src_cn_pt, dst_cn_pt
        self.src_dtmf_pt = src_dtmf_pt
        self._dtmf: DtmfMapper | None = None
        if src_dtmf_pt is not None and dst_dtmf_pt is not None:
            self._dtmf = DtmfMapper(src_dtmf_pt, self.src.clock_rate, dst_dtmf_pt, self.dst.clock_rate)
        self.ptime_ms = dst_ptime_ms
        self.stats = TranscoderStats()

        # The encoder runs at the lowest rate that loses nothing: the source's audio rate, capped by
        # opus_maxrate for Opus (libopus takes 8/12/16/24/48 kHz input and sets its bandwidth by it).
        if self.dst.name == "opus":
            cap = min(self.src.pcm_rate, max(opus_maxrate, 8000))
            enc_rate = max(r for r in _OPUS_RATES if r <= cap)
        else:
            enc_rate = self.dst.pcm_rate
        self._enc_rate = enc_rate
        self._encoder = _AvEncoder(self.dst, enc_rate, dst_ptime_ms, opus_fec=opus_fec, opus_bitrate=opus_bitrate,
                                   opus_complexity=opus_complexity)  # fmt: skip
        self._decoder: _Decoder
        if self.src.name == "opus" and use_libopus and _LIBOPUS is not None:
            self._decoder = _LibOpusDecoder(enc_rate if enc_rate in _OPUS_RATES else 48000, opus_fec)
        else:
            self._decoder = _AvDecoder(self.src)
        self._resampler: av.audio.resampler.AudioResampler | None = None
        if self._decoder.rate != enc_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=enc_rate)
        self._resample_pts = 0

        self._frame_bytes = 2 * self._encoder.frame_samples
        self._frame_ts = dst_ptime_ms * self.dst.clock_rate // 1000
        self._pcm = bytearray()  # encoder-rate samples waiting for a full frame
        self._out_ts = secrets.randbits(32) if dst_timestamp is None else dst_timestamp & 0xFFFFFFFF
        self._marker = True  # the first packet of a stream starts a talkspurt (RFC 3551 §4.1)
        self._last_seq: int | None = None
        self._next_ts = 0  # source timestamp the next packet should carry
        self._last_arrival = 0.0
        self._anchor: tuple[int, int] | None = None  # (source ts, destination ts) of the latest audio

    # -- timeline

    def _dst_units(self, enc_samples: int) -> int:
        return enc_samples * self.dst.clock_rate // self._enc_rate

    def _src_to_dst(self, src_units: int) -> int:
        return src_units * self.dst.clock_rate // self.src.clock_rate

    def dst_timestamp(self, src_timestamp: int) -> int:
        """The destination timestamp of a source one, on the timeline of the latest audio packet:
        how :class:`DtmfMapper` keeps events in step with the transcoded audio (RFC 4733 §2.3.1)."""
        if self._anchor is None:
            return self._out_ts + self._dst_units(len(self._pcm) // 2)
        src, dst = self._anchor
        return (dst + self._src_to_dst(_signed32(src_timestamp - src))) & 0xFFFFFFFF

    # -- input

    def push(
        self,
        payload: bytes,
        timestamp: int,
        seq: int,
        marker: bool,
        arrival: float,
        payload_type: int | None = None,
    ) -> list[OutPacket]:
        """Transcode one source packet; returns the destination packets now complete (often none
        when the destination ptime is longer than the source's)."""
        pt = self.src_pt if payload_type is None else payload_type
        is_cn = pt == self.src_cn_pt and pt != self.src_pt
        is_dtmf = pt == self.src_dtmf_pt and pt != self.src_pt
        if pt != self.src_pt and not is_cn and not is_dtmf:
            raise CoderError(f"payload type {pt} is neither {self.src.name} ({self.src_pt}), CN nor telephone-event")
        self.stats.packets_in += 1
        if self._last_seq is not None:
            delta = (seq - self._last_seq) & 0xFFFF
            if delta == 0 or (delta >= 0x8000 and 0x10000 - delta <= _MAX_DROPOUT):
                self.stats.late += 1
                return []
        if is_dtmf:
            # The audio resumes after the event with a timestamp jump and no sequence gap: a
            # silence to skip, not a loss to conceal.
            self.stats.dtmf_in += 1
            self._commit(seq, arrival)
            events = self._dtmf.map(payload, timestamp, marker, self.dst_timestamp) if self._dtmf else []
            self.stats.packets_out += len(events)
            return events
        out: list[OutPacket] = []
        if is_cn:
            self.stats.cn_in += 1
            self._gap(seq, timestamp, arrival, None, out)
            self._flush(out)
            if self.dst_cn_pt is not None:
                out.append(OutPacket(bytes(payload), self._out_ts, False, self.dst_cn_pt))
            self._marker = True
            self._next_ts = timestamp  # CN covers no samples of its own (RFC 3389 §4)
            self._commit(seq, arrival)
            self.stats.packets_out += len(out)
            return out

        duration = self._decoder.duration(payload)
        if duration is None:
            self.stats.invalid += 1  # the state stays as it was: the next packet sees the hole
            return []
        self._gap(seq, timestamp, arrival, payload, out)
        pcm = self._decoder.decode(payload)
        if pcm is None:
            self.stats.invalid += 1
            pcm = self._decoder.conceal(duration * self._decoder.rate // self.src.clock_rate, None)[0]
        if marker:
            self._marker = True
        self._anchor = (timestamp & 0xFFFFFFFF, (self._out_ts + self._dst_units(len(self._pcm) // 2)) & 0xFFFFFFFF)
        self._append(pcm)
        self._next_ts = (timestamp + duration) & 0xFFFFFFFF
        self._commit(seq, arrival)
        self._emit(out)
        self.stats.packets_out += len(out)
        return out

    def _commit(self, seq: int, arrival: float) -> None:
        self._last_seq = seq
        self._last_arrival = arrival

    def _gap(self, seq: int, timestamp: int, arrival: float, following: bytes | None, out: list[OutPacket]) -> None:
        """Conceal a loss or skip a silence between the previous packet and this one."""
        if self._last_seq is None:
            return
        lost = ((seq - self._last_seq) & 0xFFFF) - 1
        gap = _signed32(timestamp - self._next_ts)
        clock = self.src.clock_rate
        if lost >= _MAX_DROPOUT or gap < 0 or gap > _MAX_GAP_S * clock:
            # The source restarted (RFC 3550 §A.1): place it by arrival time, as RtpRewriter does.
            self.stats.discontinuities += 1
            elapsed = round((arrival - self._last_arrival) * self.dst.clock_rate)
            self._skip(max(0, elapsed - self._src_to_dst(self._last_duration_guess())), out)
            return
        if lost > 0:
            self.stats.lost += lost
        if gap == 0:
            return
        if lost > 0 and gap <= _MAX_CONCEAL_MS * clock // 1000:
            samples = gap * self._decoder.rate // clock
            pcm, fec = self._decoder.conceal(samples, following)
            self.stats.concealed_ms += 1000 * gap / clock
            self.stats.fec_frames += int(fec)
            self._append(pcm)
            self._emit(out)
            return
        self.stats.discontinuities += 1
        self._skip(self._src_to_dst(gap), out)

    def _last_duration_guess(self) -> int:
        return self.ptime_ms * self.src.clock_rate // 1000

    def _skip(self, dst_units: int, out: list[OutPacket]) -> None:
        """A silence of ``dst_units``: finish the pending frame, move the timeline, mark the next."""
        padded = self._flush(out)
        self._out_ts = (self._out_ts + max(0, dst_units - padded)) & 0xFFFFFFFF
        self._marker = True

    def _flush(self, out: list[OutPacket]) -> int:
        """Pad the pending partial frame with silence and send it; its padding in destination units."""
        if not self._pcm:
            return 0
        pad = self._frame_bytes - len(self._pcm)
        self._pcm += bytes(pad)
        self._emit(out)
        return self._dst_units(pad // 2)

    def _append(self, pcm: bytes) -> None:
        if self._resampler is not None and pcm:
            frame = _frame(pcm, self._decoder.rate, self._resample_pts)
            self._resample_pts += len(pcm) // 2
            pcm = _pcm_of(self._resampler.resample(frame))
        self._pcm += pcm

    def _emit(self, out: list[OutPacket]) -> None:
        size = self._frame_bytes
        while len(self._pcm) >= size:
            chunk = bytes(self._pcm[:size])
            del self._pcm[:size]
            for payload in self._encoder.encode(chunk):
                out.append(OutPacket(payload, self._out_ts, self._marker, self.dst_pt))
                self._marker = False
            self._out_ts = (self._out_ts + self._frame_ts) & 0xFFFFFFFF

    def close(self) -> None:
        self._decoder.close()


# --------------------------------------------------------------------------------------------------
# RFC 4733 telephone-events: remapped, never transcoded

_EVENT = struct.Struct("!BBH")  # event, E|R|volume, duration (RFC 4733 §2.3)


class DtmfMapper:
    """Carries RFC 4733 telephone-events across clock rates: payload type remapped, timestamp and
    duration scaled (§2.3.1, §2.3.5: both count in the RTP clock of the stream), end bit, volume and
    the marker of the event's first packet kept.

    Every packet of one event shares its start timestamp (§2.3.1), so the destination timestamp is
    computed once per event. ``timeline`` (an :meth:`AudioTranscoder.dst_timestamp`) puts events on the
    transcoded audio's timeline; without it the mapper keeps its own, from ``dst_timestamp``.
    Durations that overflow 16 bits after scaling are clamped (§2.5.1.3 splits long events; the
    source already did).
    """

    def __init__(self, src_pt: int, src_clock: int, dst_pt: int, dst_clock: int, *,
                 dst_timestamp: int | None = None) -> None:  # fmt: skip
        self.src_pt, self.src_clock, self.dst_pt, self.dst_clock = src_pt, src_clock, dst_pt, dst_clock
        self._base_dst = secrets.randbits(32) if dst_timestamp is None else dst_timestamp & 0xFFFFFFFF
        self._base_src: int | None = None
        self._event: tuple[int, int] | None = None  # (source ts, destination ts) of the current event

    def _scale(self, units: int) -> int:
        return units * self.dst_clock // self.src_clock

    def map(self, payload: bytes, timestamp: int, marker: bool,
            timeline: Callable[[int], int] | None = None) -> list[OutPacket]:  # fmt: skip
        """The destination packet(s) for one event packet; an empty list for a malformed one.
        A payload may hold several 4-byte event blocks (§2.5.1.5, redundant events): all are kept."""
        if not payload or len(payload) % 4:
            return []
        timestamp &= 0xFFFFFFFF
        if self._event is None or self._event[0] != timestamp:
            if timeline is not None:
                dst = timeline(timestamp)
            else:
                if self._base_src is None:
                    self._base_src = timestamp
                dst = (self._base_dst + self._scale(_signed32(timestamp - self._base_src))) & 0xFFFFFFFF
            self._event = (timestamp, dst)
        out = bytearray()
        for offset in range(0, len(payload), 4):
            event, flags, duration = _EVENT.unpack_from(payload, offset)
            out += _EVENT.pack(event, flags, min(0xFFFF, self._scale(duration)))
        return [OutPacket(bytes(out), self._event[1], marker, self.dst_pt)]

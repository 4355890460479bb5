"""RTP audio payloads decoded to PCM, and PCM written to WAV or Ogg/Opus (RFC 7845): the recorder's files.

:class:`PayloadDecoder` decodes one codec's payloads (G.711 µ/A-law, G.722, Opus, by their SDP names
in :data:`DECODERS`) with PyAV to mono 16-bit PCM at the file's rate; :class:`WavWriter` writes it as
16-bit PCM WAV (sizes patched on close), :class:`OggOpusWriter` encodes it with libopus in 20 ms
frames. Both run in the recorder's worker threads and write through an ``opener`` the caller gives.
"""

from __future__ import annotations

import wave
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from .tap import CodecInfo

__all__ = ["DECODERS", "OGG_FRAME", "OGG_RATE", "OggOpusWriter", "PayloadDecoder", "PcmWriter", "WavWriter"]

# SDP name (lower case) -> FFmpeg decoder, PCM rate the decoder gives
DECODERS = {"pcmu": ("pcm_mulaw", 8000), "pcma": ("pcm_alaw", 8000), "g722": ("g722", 16000),
             "opus": ("libopus", 48000)}
OGG_RATE = 48000
OGG_FRAME = 960  # 20 ms at 48 kHz


class PayloadDecoder:
    """One codec's payloads → mono s16 PCM at ``out_rate`` (PyAV decoder + resampler)."""

    def __init__(self, codec: CodecInfo, out_rate: int) -> None:
        import av
        import av.audio.resampler

        name, self.pcm_rate = DECODERS[codec.name.lower()]
        if name == "libopus" and "libopus" not in av.codecs_available:
            name = "opus"
        ctx = av.CodecContext.create(name, "r")
        assert isinstance(ctx, av.audio.codeccontext.AudioCodecContext)
        ctx.sample_rate = self.pcm_rate
        ctx.layout = "mono"
        self._ctx = ctx
        self._resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=out_rate)
        self._av = av
        self.clock_rate = codec.clock_rate

    def decode(self, payload: bytes) -> tuple[bytes, int]:
        """PCM at the output rate, and the payload's duration in RTP clock units."""
        av = self._av
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except (av.error.FFmpegError, ValueError):
            return b"", 0
        native = sum(f.samples for f in frames)
        out = bytearray()
        for frame in frames:
            frame.pts = None
            for res in self._resampler.resample(frame):
                out += bytes(res.planes[0])[: 2 * res.samples]
        return bytes(out), native * self.clock_rate // self.pcm_rate


class PcmWriter(Protocol):
    """A mono 16-bit PCM file at ``rate``."""

    rate: int

    def write(self, pcm: bytes) -> None: ...
    def close(self) -> None: ...


class WavWriter:
    def __init__(self, path: Path, rate: int, opener: Callable[[Path], IO[bytes]]) -> None:
        self.rate = rate
        self._file = opener(path)
        try:
            w = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close()
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
        except BaseException:
            self._file.close()
            raise
        self._wav: wave.Wave_write | None = w

    def write(self, pcm: bytes) -> None:
        if self._wav is not None:
            self._wav.writeframesraw(pcm)

    def close(self) -> None:
        wav, self._wav = self._wav, None
        try:
            if wav is not None:
                wav.close()  # patches the RIFF and data sizes
        finally:
            self._file.close()


class OggOpusWriter:
    """Ogg/Opus (RFC 7845) through PyAV's libopus encoder, 20 ms frames."""

    rate = OGG_RATE

    def __init__(self, path: Path, rate: int, opener: Callable[[Path], IO[bytes]]) -> None:
        import av

        self._av = av
        self._file = opener(path)
        try:
            self._out = av.open(self._file, "w", format="ogg")
            self._stream = self._out.add_stream("libopus", rate=OGG_RATE)
            self._stream.layout = "mono"
            self._stream.bit_rate = 32000
        except BaseException:
            self._file.close()
            raise
        self._fifo = av.AudioFifo()
        self._pts = 0
        self._closed = False

    def write(self, pcm: bytes) -> None:
        av = self._av
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = OGG_RATE
        frame.pts = None
        self._fifo.write(frame)
        self._drain(False)

    def _drain(self, last: bool) -> None:
        while self._fifo.samples >= OGG_FRAME or (last and self._fifo.samples):
            frame = self._fifo.read(OGG_FRAME, partial=last)
            if frame is None:
                break
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._out.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._drain(True)
            for packet in self._stream.encode(None):
                self._out.mux(packet)
            self._out.close()
        finally:
            self._file.close()

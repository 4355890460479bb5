"""Test tones: write a sine WAV for a peer to play, find which tone a recording holds.

Each side of a call plays its own frequency, so the far end can tell not only that audio arrived but
that it is the right audio (not silence, not its own echo, not comfort noise). Pure stdlib: a
Goertzel scan over a short window is fast enough and needs no numpy.
"""

from __future__ import annotations

import array
import math
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ToneResult", "analyse_samples", "analyse_wav", "read_wav", "write_tone_ulaw", "write_tone_wav"]


def write_tone_wav(
    path: Path, frequency: float, *, rate: int = 8000, seconds: float = 10.0, amplitude: float = 0.3
) -> Path:
    """Mono 16-bit sine; a whole number of periods per second so that a looping player adds no click."""
    n = int(rate * seconds)
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / rate
    samples = array.array("h", (round(peak * math.sin(step * i)) for i in range(n)))
    if sys.byteorder != "little":
        samples.byteswap()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def _ulaw(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (audioop is gone from Python 3.13)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = max(0, min(7, magnitude.bit_length() - 8))
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def write_tone_ulaw(path: Path, frequency: float, *, seconds: float = 4.0, amplitude: float = 0.37) -> Path:
    """Raw G.711 mu-law at 8 kHz, no header: what sipp's rtp_stream plays (PCMU)."""
    peak = amplitude * 32767
    step = 2 * math.pi * frequency / 8000
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(_ulaw(round(peak * math.sin(step * i))) for i in range(int(8000 * seconds))))
    return path


def read_wav(path: Path) -> tuple[list[float], int]:
    """Samples of the first channel scaled to [-1, 1], and the sample rate. 16-bit PCM only."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit")
        channels = w.getnchannels()
        rate = w.getframerate()
        raw = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        raw.byteswap()
    return [s / 32768.0 for s in raw[::channels]], rate


@dataclass(frozen=True)
class ToneResult:
    frequency: float  # Hz of the strongest component; 0.0 when everything was silent
    rms: float  # of the voiced part, full scale = 1.0 (a 0.3-amplitude sine gives ~0.21)
    voiced_seconds: float  # how much of the recording was above the silence threshold

    @property
    def rms_dbfs(self) -> float:
        return 20 * math.log10(self.rms) if self.rms > 0 else -math.inf


def _goertzel_power(samples: list[float], window: list[float], frequency: float, rate: int) -> float:
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x, w in zip(samples, window, strict=True):
        s1, s2 = x * w + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def _hann(n: int) -> list[float]:
    return [0.5 - 0.5 * math.cos(2 * math.pi * i / (n - 1)) for i in range(n)]


def _rms(samples: list[float]) -> float:
    return math.sqrt(sum(x * x for x in samples) / len(samples)) if samples else 0.0


def analyse_samples(
    samples: list[float],
    rate: int,
    *,
    fmin: float = 100.0,
    fmax: float | None = None,
    silence_rms: float = 0.003,
) -> ToneResult:
    """Dominant frequency (about 1 Hz resolution) and level of the non-silent part of `samples`.

    Coarse scan with a short window (wide main lobe, so a 10 Hz grid cannot step over the peak), then
    a fine scan with a long window around the coarse maximum.
    """
    frame = max(1, rate // 50)
    voiced: list[float] = []
    for i in range(0, len(samples) - frame + 1, frame):
        chunk = samples[i : i + frame]
        if _rms(chunk) > silence_rms:
            voiced.extend(chunk)
    if not voiced:
        return ToneResult(0.0, 0.0, 0.0)
    rms = _rms(voiced)
    fmax = min(fmax if fmax is not None else rate / 2, rate / 2 * 0.95)
    # Middle of the voiced audio: away from ringback, jitter-buffer start-up and hang-up edges.
    mid = len(voiced) // 2
    fine_n = min(len(voiced), rate // 2)
    fine = voiced[max(0, mid - fine_n // 2) :][:fine_n]
    coarse_n = min(len(fine), max(16, rate // 20))
    coarse = fine[(len(fine) - coarse_n) // 2 :][:coarse_n]
    coarse_window = _hann(len(coarse))
    best_f, best_p = fmin, -1.0
    f = fmin
    while f <= fmax:
        p = _goertzel_power(coarse, coarse_window, f, rate)
        if p > best_p:
            best_f, best_p = f, p
        f += 10.0
    fine_window = _hann(len(fine))
    lo, hi = max(fmin, best_f - 25.0), min(fmax, best_f + 25.0)
    best_fine, best_p = best_f, -1.0
    f = lo
    while f <= hi:
        p = _goertzel_power(fine, fine_window, f, rate)
        if p > best_p:
            best_fine, best_p = f, p
        f += 1.0
    return ToneResult(best_fine, rms, len(voiced) / rate)


def analyse_wav(path: Path, **kwargs: float) -> ToneResult:
    samples, rate = read_wav(path)
    return analyse_samples(samples, rate, **kwargs)

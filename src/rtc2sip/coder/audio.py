"""Audio transcoding for the Media Coder, sans I/O: RTP payloads in, RTP payloads out.

One :class:`AudioTranscoder` serves one direction of one call (Opus/48000/2 ⇄ PCMU/8000, PCMA/8000,
G722/8000): decode → resample → re-frame to the destination ptime → encode. It owns the destination
stream's timestamps (its own base, RFC 3550 §5.1) but not its sequence numbers or SSRC: the caller
numbers every packet it sends on the stream, audio, CN (RFC 3389) and telephone-event (RFC 4733)
alike, and :class:`DtmfMapper` places events on the same timeline.

The codecs themselves (the table, libopus with in-band FEC, FFmpeg's decoders and encoders) are
:mod:`rtc2sip.coder.audiocodec`.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.audio.resampler

from .audiocodec import (
    CODECS,
    OPUS_RATES,
    AvDecoder,
    AvEncoder,
    LibOpusDecoder,
    PcmDecoder,
    av_frame,
    libopus_available,
    pcm_of,
)
from .common import CoderError, OutPacket

__all__ = ["AudioTranscoder", "DtmfMapper", "TranscoderStats"]

_MAX_CONCEAL_MS = 120  # a longer hole is a discontinuity, not a loss to paper over
_MAX_GAP_S = 30  # a larger timestamp jump (or a backward one) means the source restarted
_MAX_DROPOUT = 3000  # RFC 3550 §A.1: a larger sequence jump is a restart, not loss


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value & 0x80000000 else value


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
            enc_rate = max(r for r in OPUS_RATES if r <= cap)
        else:
            enc_rate = self.dst.pcm_rate
        self._enc_rate = enc_rate
        self._encoder = AvEncoder(self.dst, enc_rate, dst_ptime_ms, opus_fec=opus_fec, opus_bitrate=opus_bitrate,
                                   opus_complexity=opus_complexity)  # fmt: skip
        self._decoder: PcmDecoder
        if self.src.name == "opus" and use_libopus and libopus_available():
            self._decoder = LibOpusDecoder(enc_rate if enc_rate in OPUS_RATES else 48000, opus_fec)
        else:
            self._decoder = AvDecoder(self.src)
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
            frame = av_frame(pcm, self._decoder.rate, self._resample_pts)
            self._resample_pts += len(pcm) // 2
            pcm = pcm_of(self._resampler.resample(frame))
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

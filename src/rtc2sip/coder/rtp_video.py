"""RTP payload formats of the video coder, sans I/O and without PyAV: VP8 (RFC 7741) and H.264 (RFC 6184).

A depacketizer is fed one stream's payloads in sequence order (a :class:`~rtc2sip.coder.jitterbuffer.
VideoJitterBuffer` in front puts them there) and returns whole frames: a VP8 frame or an H.264 access
unit in Annex-B byte-stream form (ITU-T H.264 Annex B, what FFmpeg's ``h264`` decoder reads). A frame
ends at the RTP marker bit (RFC 7741 §4.1, RFC 6184 §5.1) or when the timestamp changes; a sequence
gap inside it, or a missing start, makes it ``complete=False`` for the caller to drop rather than
decode into a smeared picture. Malformed payloads are counted in ``malformed`` and dropped (their
loss shows on the frame they were part of), empty ones (padding) in ``padding``: a bad packet from one
peer never raises into the media path.

The packetizers produce payloads of at most ``max_payload`` bytes, RTP header excluded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .common import CoderError

__all__ = [
    "EncodedFrame",
    "H264Depacketizer",
    "Vp8Depacketizer",
    "is_keyframe",
    "packetize_h264",
    "packetize_vp8",
    "split_annexb",
]

MAX_FRAME_BYTES = 4 * 1024 * 1024  # a 4K keyframe is well below; beyond it the sender is broken or hostile
MAX_FRAME_PACKETS = 4096
_START_CODE = b"\x00\x00\x00\x01"

# H.264 NAL unit types (ITU-T H.264 Table 7-1; 24-29 RFC 6184 §5.2)
NAL_SLICE, NAL_IDR, NAL_SEI, NAL_SPS, NAL_PPS, NAL_AUD = 1, 5, 6, 7, 8, 9
STAP_A, STAP_B, MTAP16, MTAP24, FU_A, FU_B = 24, 25, 26, 27, 28, 29


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One compressed picture: a VP8 frame, or an H.264 access unit in Annex-B form.

    ``complete``: every packet of it arrived; ``after_gap``: a sequence gap came before its first packet
    (for VP8 the S bit still proves it starts there, so it may be complete yet undecodable)."""

    data: bytes
    timestamp: int
    keyframe: bool
    complete: bool
    after_gap: bool = False  # packets were lost before it: whole frames it may reference


def _seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 §A.1 modular order)."""
    return a != b and (a - b) & 0xFFFF < 0x8000


class _Assembler:
    """What both depacketizers share: one frame under construction, keyed by timestamp, and the
    sequence continuity that decides whether it is complete."""

    def __init__(self) -> None:
        self.malformed = 0
        self.padding = 0
        self.late = 0  # duplicates and packets older than the last one taken
        self.frames = 0
        self._expected: int | None = None  # next sequence number
        self._ts: int | None = None  # timestamp of the frame under construction
        self._parts: list[bytes] = []
        self._size = 0
        self._complete = True
        self._keyframe = False
        self._after_gap = False
        self._lost_since = False  # an unusable packet came since the last usable one

    def _sequence(self, seq: int) -> bool | None:
        """None: drop (late or duplicate); else whether a gap (or an unusable packet) precedes ``seq``."""
        seq &= 0xFFFF
        if self._expected is None:
            self._expected = (seq + 1) & 0xFFFF
            return False
        if seq != self._expected and not _seq_newer(seq, self._expected):
            self.late += 1
            return None
        gap = seq != self._expected or self._lost_since
        self._lost_since = False
        self._expected = (seq + 1) & 0xFFFF
        return gap

    def _unusable(self, payload: bytes, seq: int) -> list[EncodedFrame]:
        """An empty payload (RTP padding only, as a sender's bandwidth probe) takes its sequence number
        and nothing else; a malformed one is counted, and its data is lost to the frame it was in."""
        gap = self._sequence(seq)
        if gap is None:
            return []
        if payload:
            self.malformed += 1
        else:
            self.padding += 1
        if gap or payload:
            self._lost_since = True
            if self._ts is not None:
                self._complete = False
        return []

    def _start(self, timestamp: int, complete: bool, after_gap: bool) -> None:
        self._ts = timestamp & 0xFFFFFFFF
        self._parts = []
        self._size = 0
        self._complete = complete
        self._keyframe = False
        self._after_gap = after_gap

    def _add(self, data: bytes) -> None:
        if self._size + len(data) > MAX_FRAME_BYTES or len(self._parts) >= MAX_FRAME_PACKETS:
            self._complete = False  # keep what fits; the frame will not be decoded anyway
            return
        self._parts.append(data)
        self._size += len(data)

    def _finish(self) -> EncodedFrame | None:
        if self._ts is None:
            return None
        ts, self._ts = self._ts, None
        if not self._parts:
            return None
        self.frames += 1
        return EncodedFrame(b"".join(self._parts), ts, self._keyframe, self._complete, self._after_gap)


class Vp8Depacketizer(_Assembler):
    """RFC 7741 payloads → VP8 frames. A frame is complete when its first packet (S=1, PID 0) and every
    packet up to the marker arrived; its keyframe flag is the P bit of the VP8 payload header (§4.3)."""

    def push(self, payload: bytes, seq: int, timestamp: int, marker: bool) -> list[EncodedFrame]:
        parsed = parse_vp8_descriptor(payload)
        if parsed is None or parsed[1] >= len(payload):
            return self._unusable(payload, seq)
        gap = self._sequence(seq)
        if gap is None:
            return []
        start, offset, _pid, partition = parsed
        first = start and partition == 0
        out: list[EncodedFrame] = []
        timestamp &= 0xFFFFFFFF
        if self._ts is not None and (timestamp != self._ts or first):
            # the previous frame lost its marker packet (or the sender reused the timestamp)
            self._complete = False
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        if self._ts is None:
            self._start(timestamp, complete=first, after_gap=gap)
            if first:
                self._keyframe = not payload[offset] & 0x01
        elif gap:
            self._complete = False
        self._add(payload[offset:])
        if marker:
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        return out


class H264Depacketizer(_Assembler):
    """RFC 6184 payloads → Annex-B access units: single NAL unit packets, STAP-A and FU-A (packetization
    modes 0 and 1, §6.2-6.3). The interleaved mode's STAP-B, MTAPs and FU-B are counted as malformed.
    An FU-A whose fragments do not follow each other is dropped from its start to its end (§5.8: a
    receiver may not reassemble around a lost fragment); the access unit is then incomplete."""

    def __init__(self) -> None:
        super().__init__()
        self._fu: list[bytes] | None = None  # fragments of the FU-A being reassembled
        self._fu_size = 0

    def push(self, payload: bytes, seq: int, timestamp: int, marker: bool) -> list[EncodedFrame]:
        nals = self._nal_units(payload)
        if nals is None:
            return self._unusable(payload, seq)
        gap = self._sequence(seq)
        if gap is None:
            return []
        out: list[EncodedFrame] = []
        timestamp &= 0xFFFFFFFF
        if self._ts is not None and timestamp != self._ts:
            self._complete = False  # the marker packet of the previous access unit is missing
            self._drop_fu()
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        if self._ts is None:
            self._start(timestamp, complete=not gap, after_gap=gap)
        elif gap:
            self._complete = False
        if gap:
            self._drop_fu()
        kind = payload[0] & 0x1F
        if kind == FU_A:
            self._fragment(payload)
        else:
            for nal in nals:
                self._nal(nal)
        if marker:
            if self._fu is not None:  # an FU-A without its end fragment
                self._drop_fu()
                self._complete = False
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        return out

    def _nal(self, nal: bytes) -> None:
        if nal[0] & 0x1F == NAL_IDR:
            self._keyframe = True
        self._add(_START_CODE + nal)

    def _drop_fu(self) -> None:
        if self._fu is not None:
            self._complete = False
        self._fu = None
        self._fu_size = 0

    def _fragment(self, payload: bytes) -> None:
        header = payload[1]
        start, end = header & 0x80, header & 0x40
        if start:
            if self._fu is not None:
                self._drop_fu()
            self._fu = [bytes([(payload[0] & 0xE0) | (header & 0x1F)])]
            self._fu_size = 1
        elif self._fu is None:  # a middle or end fragment whose start was lost: §5.8, discard
            self._complete = False
            return
        self._fu.append(payload[2:])
        self._fu_size += len(payload) - 2
        if self._fu_size > MAX_FRAME_BYTES:
            self._drop_fu()
            return
        if end:
            nal = b"".join(self._fu)
            self._fu = None
            self._fu_size = 0
            self._nal(nal)

    @staticmethod
    def _nal_units(payload: bytes) -> list[bytes] | None:
        """The NAL units a payload carries whole (an FU-A: an empty list), None if malformed."""
        if not payload or payload[0] & 0x80:  # F bit: a syntax violation (RFC 6184 §5.3)
            return None
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            return [payload]
        if kind == STAP_A:
            return _stap_a(payload)
        if kind == FU_A:
            if len(payload) < 3 or (payload[1] & 0xC0) == 0xC0:  # S and E together are forbidden (§5.8)
                return None
            return []
        return None  # 0, 30, 31 undefined; STAP-B, MTAP, FU-B are interleaved mode only


def _stap_a(payload: bytes) -> list[bytes] | None:
    """NAL units of an STAP-A (RFC 6184 §5.7.1): 16-bit size, NAL unit, repeated to the end."""
    nals = []
    i = 1
    while i < len(payload):
        if i + 2 > len(payload):
            return None
        (size,) = struct.unpack_from("!H", payload, i)
        i += 2
        if size == 0 or i + size > len(payload) or payload[i] & 0x80:
            return None
        nals.append(payload[i:i + size])
        i += size
    return nals or None


def parse_vp8_descriptor(payload: bytes) -> tuple[bool, int, int | None, int] | None:
    """(S bit, descriptor length, PictureID or None, PartID) of an RFC 7741 §4.2 payload, or None if
    it is too short for its own extension bits."""
    if not payload:
        return None
    b0 = payload[0]
    n = 1
    pid = None
    if b0 & 0x80:  # X: extended control bits
        if len(payload) < 2:
            return None
        x = payload[1]
        n = 2
        if x & 0x80:  # I: PictureID, 7 or 15 bits (M)
            if len(payload) < n + 1:
                return None
            if payload[n] & 0x80:
                if len(payload) < n + 2:
                    return None
                pid = ((payload[n] & 0x7F) << 8) | payload[n + 1]
                n += 2
            else:
                pid = payload[n]
                n += 1
        if x & 0x40:  # L: TL0PICIDX
            n += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX
            n += 1
        if len(payload) < n:
            return None
    return bool(b0 & 0x10), n, pid, b0 & 0x07


def packetize_vp8(frame: bytes, max_payload: int = 1200, picture_id: int | None = None) -> list[bytes]:
    """RFC 7741 §4.2 payloads of one VP8 frame: S=1 on the first, PartID 0; with ``picture_id`` the
    X and I bits and a 15-bit PictureID (M=1), which WebRTC receivers use to spot lost frames."""
    if picture_id is None:
        heads = (b"\x10", b"\x00")
    else:
        pid = struct.pack("!H", 0x8000 | (picture_id & 0x7FFF))
        heads = (b"\x90\x80" + pid, b"\x80\x80" + pid)
    room = max_payload - len(heads[0])
    if room < 1:
        raise CoderError(f"max_payload {max_payload} leaves no room for VP8 data")
    return [heads[i > 0] + frame[start:start + room] for i, start in enumerate(range(0, max(len(frame), 1), room))]


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (3- or 4-byte start codes; trailing zero bytes dropped)."""
    nals = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else j
        nal = data[start:end].rstrip(b"\x00")  # the next 4-byte start code's zero, trailing_zero_8bits
        if nal:
            nals.append(nal)
        i = j
    return nals


def packetize_h264(access_unit_annexb: bytes, max_payload: int = 1200, mode: int = 1) -> list[bytes]:
    """RFC 6184 payloads of one access unit.

    Mode 1 (non-interleaved, §6.3): consecutive NAL units that fit together go in one STAP-A (§5.7.1;
    in practice SPS+PPS, and the small slices of a still picture), a NAL unit larger than
    ``max_payload`` in FU-As (§5.8), any other as a single NAL unit packet. Mode 0 (§6.2): single NAL
    unit packets only; an oversize NAL unit is a :class:`CoderError` (the encoder is configured with a
    maximum slice size so that it never happens).
    """
    if mode not in (0, 1):
        raise CoderError(f"H.264 packetization-mode {mode} is not supported (0 or 1)")
    if max_payload < 16:
        raise CoderError(f"max_payload {max_payload} is too small for H.264")
    nals = split_annexb(access_unit_annexb)
    out: list[bytes] = []
    if mode == 0:
        for nal in nals:
            if len(nal) > max_payload:
                raise CoderError(f"H.264 NAL unit of {len(nal)} bytes exceeds {max_payload} in packetization-mode 0")
            out.append(nal)
        return out
    group: list[bytes] = []
    size = 1  # STAP-A header

    def close_group() -> None:
        if len(group) == 1:
            out.append(group[0])
        elif group:
            nri = max(n[0] & 0x60 for n in group)  # §5.7.1: the highest NRI of the aggregated units
            out.append(bytes([nri | STAP_A]) + b"".join(struct.pack("!H", len(n)) + n for n in group))
        group.clear()

    for nal in nals:
        if len(nal) > max_payload:
            close_group()
            size = 1
            out.extend(_fu_a(nal, max_payload))
            continue
        if size + 2 + len(nal) > max_payload:
            close_group()
            size = 1
        group.append(nal)
        size += 2 + len(nal)
    close_group()
    return out


def _fu_a(nal: bytes, max_payload: int) -> list[bytes]:
    indicator = bytes([(nal[0] & 0xE0) | FU_A])
    kind = nal[0] & 0x1F
    room = max_payload - 2
    body = nal[1:]
    chunks = [body[i:i + room] for i in range(0, len(body), room)]
    out = []
    for i, chunk in enumerate(chunks):
        header = kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        out.append(indicator + bytes([header]) + chunk)
    return out


def is_keyframe(codec: str, payload: bytes) -> bool:
    """Whether ``payload``, the first RTP packet of a frame, starts a keyframe: VP8 S=1, PartID 0 and
    P=0 (RFC 7741 §4.3); H.264 an IDR slice or an SPS, alone, in an STAP-A or starting an FU-A."""
    codec = codec.lower()
    if codec == "vp8":
        parsed = parse_vp8_descriptor(payload)
        if parsed is None or parsed[1] >= len(payload):
            return False
        start, offset, _pid, partition = parsed
        return start and partition == 0 and not payload[offset] & 0x01
    if codec.startswith("h264"):
        if not payload:
            return False
        kind = payload[0] & 0x1F
        if kind == FU_A:
            return len(payload) >= 2 and bool(payload[1] & 0x80) and payload[1] & 0x1F in (NAL_IDR, NAL_SPS)
        if kind == STAP_A:
            return any(n[0] & 0x1F in (NAL_IDR, NAL_SPS) for n in _stap_a(payload) or ())
        return kind in (NAL_IDR, NAL_SPS)
    return False

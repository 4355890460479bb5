"""RTP packets on buffers (RFC 3550 §5.1, RFC 8285) and first-byte demultiplexing (RFC 7983, RFC 5761).

The relay path touches only the fixed 12-byte header, with one precompiled ``struct.Struct`` read and
one write per packet; the :class:`RtpPacket` object is for tests, tools and the slow path.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "RTP_HEADER",
    "PacketKind",
    "RtpPacket",
    "RtpParseError",
    "RtpRewriter",
    "build_extensions",
    "build_rtp",
    "classify",
    "header_extension",
    "is_rtcp",
    "parse_extensions",
    "rewrite_header",
]

RTP_VERSION = 2
# V P X CC | M PT | sequence number | timestamp | SSRC (RFC 3550 §5.1).
RTP_HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXTENSION_HEADER = struct.Struct("!HH")
_CSRC = struct.Struct("!I")
ONE_BYTE_PROFILE = 0xBEDE  # RFC 8285 §4.2
TWO_BYTE_PROFILE = 0x1000  # RFC 8285 §4.3 (low 4 bits: appbits)


class RtpParseError(ValueError):
    """Not a valid RTP packet (RFC 3550 §A.1 validity checks)."""


class PacketKind(enum.IntEnum):
    """What a datagram on a multiplexed 5-tuple is, by its first byte (RFC 7983 §7)."""

    UNKNOWN = 0
    STUN = 1
    ZRTP = 2
    DTLS = 3
    TURN_CHANNEL = 4
    RTP = 5
    RTCP = 6


def _first_byte_table() -> tuple[PacketKind, ...]:
    table = [PacketKind.UNKNOWN] * 256
    for ranges, kind in (
        ((0, 3), PacketKind.STUN),
        ((16, 19), PacketKind.ZRTP),
        ((20, 63), PacketKind.DTLS),
        ((64, 79), PacketKind.TURN_CHANNEL),
        ((128, 191), PacketKind.RTP),
    ):
        for b in range(ranges[0], ranges[1] + 1):
            table[b] = kind
    return tuple(table)


_FIRST_BYTE = _first_byte_table()


def classify(datagram: bytes | bytearray | memoryview) -> PacketKind:
    """RFC 7983 §7 first-byte demultiplexing, then RTP vs RTCP by packet type (RFC 5761 §4).

    RTCP packet types 192..223 are the values the second byte takes for RTCP; RTP payload types
    that would collide (64..95 with the marker bit) are not used with rtcp-mux.
    """
    if len(datagram) < 2:
        return PacketKind.UNKNOWN
    kind = _FIRST_BYTE[datagram[0]]
    if kind is PacketKind.RTP and 192 <= datagram[1] <= 223:
        return PacketKind.RTCP
    return kind


def payload_bounds(packet: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(start, end) of an RTP packet's payload: after the CSRCs and a header extension (RFC 3550
    §5.3.1), before the padding (§5.1); ``end <= start`` when there is none."""
    b0 = packet[0]
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10 and len(packet) >= start + 4:
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    return start, len(packet) - (packet[-1] if b0 & 0x20 else 0)


def is_rtcp(packet: bytes | bytearray | memoryview) -> bool:
    """RFC 5761 §4: on an rtcp-mux flow, second byte 192..223 means RTCP."""
    return 192 <= packet[1] <= 223


def rewrite_header(
    buf: bytearray | memoryview, payload_type: int, sequence_number: int, timestamp: int, ssrc: int
) -> None:
    """Overwrite PT (keeping the marker bit), sequence number, timestamp and SSRC in place."""
    buf[1] = (buf[1] & 0x80) | payload_type
    _SEQ_TS_SSRC.pack_into(buf, 2, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)


class RtpRewriter:
    """Keeps one outgoing stream continuous while its sources change (RFC 3550 §8.2, RFC 7667 §3.2.1.3).

    The breaker relays a leg under one SSRC of its own; when the far side's SSRC changes (re-INVITE,
    transfer, a PBX switching media) the receiver would otherwise see a new source or a jump in
    sequence and timestamp. Offsets are recomputed so the output sequence continues at +1 and the
    timestamp advances by the wall-clock gap since the last packet. Payload types are mapped
    through ``payload_types`` (input PT → output PT); packets of unmapped types are refused.
    """

    __slots__ = (
        "_last_arrival",
        "_last_seq",
        "_last_ts",
        "_pt_map",
        "_seq_offset",
        "_source",
        "_ts_offset",
        "clock_rate",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int, payload_types: dict[int, int], initial_sequence: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._pt_map: list[int] = [-1] * 128
        self.remap(payload_types, clock_rate)
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_seq = (initial_sequence - 1) & 0xFFFF
        self._last_ts = 0
        self._last_arrival = 0.0

    def remap(self, payload_types: dict[int, int], clock_rate: int) -> None:
        """New payload-type map and clock (a re-INVITE changed the codecs); the stream stays continuous."""
        table = [-1] * 128
        for src, dst in payload_types.items():
            table[src] = dst
        self._pt_map[:] = table
        self.clock_rate = clock_rate

    def rewrite(self, buf: bytearray | memoryview, arrival: float) -> bool:
        """Rewrite ``buf`` in place; False (buffer untouched) when its payload type is not mapped."""
        b1 = buf[1]
        pt = self._pt_map[b1 & 0x7F]
        if pt < 0:
            return False
        seq, ts, source = _SEQ_TS_SSRC.unpack_from(buf, 2)
        if source != self._source:
            gap = max(1, round((arrival - self._last_arrival) * self.clock_rate)) if self._source is not None else 0
            self._seq_offset = (self._last_seq + 1 - seq) & 0xFFFF
            self._ts_offset = (self._last_ts + gap - ts) & 0xFFFFFFFF
            self._source = source
        out_seq = (seq + self._seq_offset) & 0xFFFF
        out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
        # Track the newest (not the latest-arrived) packet so a reordered one does not move the base.
        if (out_seq - self._last_seq) & 0xFFFF < 0x8000:
            self._last_seq = out_seq
            self._last_ts = out_ts
            self._last_arrival = arrival
        buf[1] = (b1 & 0x80) | pt
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, out_ts, self.ssrc)
        return True

    def take(self, arrival: float) -> tuple[int, int]:
        """The next sequence number and the timestamp of ``arrival`` on this stream, for a packet of
        the gateway's own (an RFC 4733 event); the next relayed packet continues after it, at +1 and
        with the timestamp advanced by the wall-clock gap, as after a change of source."""
        gap = round((arrival - self._last_arrival) * self.clock_rate) if self._source is not None else 0
        self._last_seq = (self._last_seq + 1) & 0xFFFF
        self._last_ts = (self._last_ts + max(0, gap)) & 0xFFFFFFFF
        self._last_arrival = arrival
        self._source = -1  # no SSRC: the next relayed packet recomputes the offsets
        return self._last_seq, self._last_ts


def parse_extensions(profile: int, data: bytes) -> dict[int, bytes]:
    """RFC 8285 header extension elements by ID (one-byte §4.2 and two-byte §4.3 forms)."""
    elements: dict[int, bytes] = {}
    i, end = 0, len(data)
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = data[i]
            if b == 0:  # padding
                i += 1
                continue
            ext_id, length = b >> 4, (b & 0x0F) + 1
            if ext_id == 15:  # reserved: stop processing (RFC 8285 §4.2)
                break
            if i + 1 + length > end:
                raise RtpParseError("one-byte header extension element overruns the extension")
            elements[ext_id] = bytes(data[i + 1 : i + 1 + length])
            i += 1 + length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while i < end:
            ext_id = data[i]
            if ext_id == 0:
                i += 1
                continue
            if i + 2 > end:
                raise RtpParseError("two-byte header extension element truncated")
            length = data[i + 1]
            if i + 2 + length > end:
                raise RtpParseError("two-byte header extension element overruns the extension")
            elements[ext_id] = bytes(data[i + 2 : i + 2 + length])
            i += 2 + length
    else:
        raise RtpParseError(f"unknown header extension profile 0x{profile:04x}")
    return elements


def header_extension(packet: bytes | bytearray | memoryview, ext_id: int) -> bytes | None:
    """The value of header extension element ``ext_id`` in a whole RTP packet (RFC 8285 §4.2 one-byte
    and §4.3 two-byte forms), or None: no extension (X bit clear, checked first and free of
    allocation), no such element, or a malformed header. Never raises: it runs on what a peer sent.

    For the BUNDLE demultiplexer (RFC 8843 §9.2), which needs one element (the MID) of packets
    whose SSRC it does not know yet, so it does not build :func:`parse_extensions`' dict.
    """
    n = len(packet)
    if n < 12 or not packet[0] & 0x10:
        return None
    start = 12 + 4 * (packet[0] & 0x0F)  # after the CSRCs (RFC 3550 §5.3.1)
    if start + 4 > n:
        return None
    profile = packet[start] << 8 | packet[start + 1]
    end = start + 4 + 4 * (packet[start + 2] << 8 | packet[start + 3])
    if end > n:
        return None
    i = start + 4
    if profile == ONE_BYTE_PROFILE:
        if not 1 <= ext_id <= 14:
            return None
        while i < end:
            b = packet[i]
            if b == 0:  # padding between elements
                i += 1
                continue
            if b >> 4 == 15:  # reserved: stop processing (RFC 8285 §4.2)
                return None
            length = (b & 0x0F) + 1
            if i + 1 + length > end:
                return None
            if b >> 4 == ext_id:
                return bytes(packet[i + 1 : i + 1 + length])
            i += 1 + length
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while i < end:
            b = packet[i]
            if b == 0:
                i += 1
                continue
            if i + 2 > end:
                return None
            length = packet[i + 1]
            if i + 2 + length > end:
                return None
            if b == ext_id:
                return bytes(packet[i + 2 : i + 2 + length])
            i += 2 + length
    return None


def build_extensions(elements: dict[int, bytes]) -> tuple[int, bytes]:
    """(profile, data) for RFC 8285 elements: one-byte form when every element allows it."""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in elements.items())
    out = bytearray()
    if one_byte:
        for ext_id, value in elements.items():
            out.append(ext_id << 4 | (len(value) - 1))
            out += value
        profile = ONE_BYTE_PROFILE
    else:
        for ext_id, value in elements.items():
            if not 1 <= ext_id <= 255 or len(value) > 255:
                raise ValueError("two-byte header extension element out of range")
            out += bytes((ext_id, len(value)))
            out += value
        profile = TWO_BYTE_PROFILE
    out += b"\x00" * (-len(out) % 4)
    return profile, bytes(out)


@dataclass(slots=True)
class RtpPacket:
    """A parsed RTP packet (RFC 3550 §5.1). ``extension`` is the raw extension body (a multiple of 4)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse and validate per RFC 3550 §5.1 and §A.1 (version, CSRC, extension, padding lengths)."""
        if len(data) < RTP_HEADER.size:
            raise RtpParseError(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
        b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version {b0 >> 6}")
        offset = RTP_HEADER.size
        cc = b0 & 0x0F
        if len(data) < offset + 4 * cc:
            raise RtpParseError("CSRC list overruns the packet")
        csrc = struct.unpack_from(f"!{cc}I", data, offset) if cc else ()
        offset += 4 * cc
        extension_profile = None
        extension = b""
        if b0 & 0x10:
            if len(data) < offset + 4:
                raise RtpParseError("header extension header overruns the packet")
            extension_profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            if len(data) < offset + 4 * words:
                raise RtpParseError("header extension overruns the packet")
            extension = bytes(data[offset : offset + 4 * words])
            offset += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpParseError(f"invalid padding count {padding}")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension_profile=extension_profile,
            extension=extension,
            padding_size=padding,
        )

    def serialize(self) -> bytes:
        b0 = RTP_VERSION << 6 | len(self.csrc)
        if self.padding_size:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        out = bytearray(RTP_HEADER.pack(b0, (self.marker << 7) | self.payload_type, self.sequence_number,
                                        self.timestamp, self.ssrc))  # fmt: skip
        for source in self.csrc:
            out += _CSRC.pack(source)
        if self.extension_profile is not None:
            if len(self.extension) % 4:
                raise ValueError("RTP header extension length must be a multiple of 4 (RFC 3550 §5.3.1)")
            out += _EXTENSION_HEADER.pack(self.extension_profile, len(self.extension) // 4)
            out += self.extension
        out += self.payload
        if self.padding_size:
            out += b"\x00" * (self.padding_size - 1) + bytes((self.padding_size,))
        return bytes(out)


def build_rtp(
    payload_type: int, sequence_number: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """A plain RTP packet with no CSRC, extension or padding: the fast path for generators and tests."""
    return (
        RTP_HEADER.pack(0x80, (marker << 7) | payload_type, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        + payload
    )

"""RTCP packets (RFC 3550 §6, RFC 4585 §6, RFC 5104 §4, REMB) and compound packets (RFC 3550 §6.1, §A.2).

Packet types are one table: (packet type, FMT) → class, each class knowing how to parse its body and
build it back, in the manner of aioice's STUN attribute table. Unknown packets (XR, APP, other
feedback) survive as :class:`RtcpUnknown` so a relay can forward what it does not understand.

The statistics that fill the report blocks (RFC 3550 appendix A) are :mod:`rtc2sip.media.rtcpstats`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Bye",
    "FirEntry",
    "FullIntraRequest",
    "GenericNack",
    "PictureLossIndication",
    "ReceiverEstimatedMaxBitrate",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpParseError",
    "RtcpUnknown",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "TmmbItem",
    "Tmmbn",
    "Tmmbr",
    "parse_compound",
    "serialize_compound",
]

PT_SR, PT_RR, PT_SDES, PT_BYE, PT_APP, PT_RTPFB, PT_PSFB, PT_XR = 200, 201, 202, 203, 204, 205, 206, 207
SDES_CNAME = 1

_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_TWO_U32 = struct.Struct("!II")
_SR_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
_REPORT_BLOCK = struct.Struct("!IIIIII")
_NACK_ITEM = struct.Struct("!HH")
_FIR_ITEM = struct.Struct("!IB3x")


class RtcpParseError(ValueError):
    """A compound packet failing the RFC 3550 §A.2 validity checks; the whole datagram is dropped."""


class RtcpPacket:
    """Base of every RTCP packet: subclasses give their type, FMT and body codec."""

    __slots__ = ()
    packet_type: ClassVar[int]
    fmt: ClassVar[int | None] = None  # feedback message type (RFC 4585 §6.1); None: count field is data

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpPacket:
        raise NotImplementedError

    def build_body(self) -> tuple[int, bytes]:
        """(count or FMT, body padded to 32 bits)."""
        raise NotImplementedError

    def serialize(self) -> bytes:
        count, body = self.build_body()
        if len(body) % 4:
            raise ValueError("RTCP body must be a multiple of 32 bits")
        if not 0 <= count <= 31:
            raise ValueError(f"RTCP count/FMT {count} does not fit 5 bits (split the packet)")
        return _HEADER.pack(0x80 | count, self._packet_type(), len(body) // 4) + body

    def _packet_type(self) -> int:
        return self.packet_type


def _pad(data: bytes | bytearray) -> bytes:
    return bytes(data) + b"\x00" * (-len(data) % 4)


# --- reports (RFC 3550 §6.4) --------------------------------------------------------------------------


@dataclass(slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block. ``packets_lost`` is the signed 24-bit cumulative count."""

    ssrc: int
    fraction_lost: int = 0
    packets_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    lsr: int = 0
    dlsr: int = 0

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        # Clamp rather than wrap: RFC 3550 §A.3 saturates the 24-bit signed field.
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc, (self.fraction_lost & 0xFF) << 24 | lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )


def _parse_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    if len(body) < offset + 24 * count:
        raise RtcpParseError(f"{count} report blocks overrun the packet")
    return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]


@dataclass(slots=True)
class SenderReport(RtcpPacket):
    """SR (RFC 3550 §6.4.1). ``ntp_timestamp`` is the full 64-bit NTP time."""

    packet_type: ClassVar[int] = PT_SR
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SR_INFO.size:
            raise RtcpParseError("SR shorter than its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        return cls(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, _SR_INFO.size, count))

    def build_body(self) -> tuple[int, bytes]:
        info = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        )  # fmt: skip
        return len(self.reports), info + b"".join(block.serialize() for block in self.reports)


@dataclass(slots=True)
class ReceiverReport(RtcpPacket):
    """RR (RFC 3550 §6.4.2)."""

    packet_type: ClassVar[int] = PT_RR
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise RtcpParseError("RR shorter than its SSRC")
        return cls(_U32.unpack_from(body)[0], _parse_blocks(body, 4, count))

    def build_body(self) -> tuple[int, bytes]:
        return len(self.reports), _U32.pack(self.ssrc) + b"".join(block.serialize() for block in self.reports)


# --- SDES and BYE (RFC 3550 §6.5, §6.6) ----------------------------------------------------------------


@dataclass(slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> str | None:
        for item_type, value in self.items:
            if item_type == SDES_CNAME:
                return value.decode("utf-8", errors="replace")
        return None


@dataclass(slots=True)
class SourceDescription(RtcpPacket):
    """SDES (RFC 3550 §6.5); every compound packet carries our CNAME (§6.1)."""

    packet_type: ClassVar[int] = PT_SDES
    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls([SdesChunk(ssrc, [(SDES_CNAME, cname.encode("utf-8"))])])

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks = []
        offset = 0
        for _ in range(count):
            if offset + 4 > len(body):
                raise RtcpParseError("SDES chunk overruns the packet")
            chunk = SdesChunk(_U32.unpack_from(body, offset)[0])
            offset += 4
            while True:
                if offset >= len(body):
                    raise RtcpParseError("SDES chunk lacks its terminating null item")
                item_type = body[offset]
                if item_type == 0:
                    offset = (offset + 4) & ~3  # null item, then padding to the next 32-bit boundary
                    break
                if offset + 2 > len(body) or offset + 2 + body[offset + 1] > len(body):
                    raise RtcpParseError("SDES item overruns the packet")
                length = body[offset + 1]
                chunk.items.append((item_type, bytes(body[offset + 2 : offset + 2 + length])))
                offset += 2 + length
            chunks.append(chunk)
        return cls(chunks)

    def build_body(self) -> tuple[int, bytes]:
        out = bytearray()
        for chunk in self.chunks:
            out += _U32.pack(chunk.ssrc)
            for item_type, value in chunk.items:
                if len(value) > 255:
                    raise ValueError("SDES item longer than 255 bytes")
                out += bytes((item_type, len(value))) + value
            # At least one null octet ends the item list, then pad to 32 bits (RFC 3550 §6.5).
            out += b"\x00" * (4 - len(out) % 4)
        return len(self.chunks), bytes(out)


@dataclass(slots=True)
class Bye(RtcpPacket):
    """BYE (RFC 3550 §6.6)."""

    packet_type: ClassVar[int] = PT_BYE
    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Bye:
        if len(body) < 4 * count:
            raise RtcpParseError("BYE source list overruns the packet")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        offset = 4 * count
        if offset < len(body):
            length = body[offset]
            if offset + 1 + length > len(body):
                raise RtcpParseError("BYE reason overruns the packet")
            reason = bytes(body[offset + 1 : offset + 1 + length])
        return cls(sources, reason)

    def build_body(self) -> tuple[int, bytes]:
        body = b"".join(_U32.pack(s) for s in self.sources)
        if self.reason is not None:
            body += bytes((len(self.reason),)) + self.reason[:255]
        return len(self.sources), _pad(body)


# --- feedback (RFC 4585 §6, RFC 5104 §4) --------------------------------------------------------------


def _feedback_header(body: bytes) -> tuple[int, int]:
    if len(body) < 8:
        raise RtcpParseError("feedback message shorter than its two SSRCs")
    sender, media = _TWO_U32.unpack_from(body)
    return sender, media


@dataclass(slots=True)
class GenericNack(RtcpPacket):
    """Generic NACK (RFC 4585 §6.2.1): ``lost`` lists sequence numbers in ascending order (mod 2^16),
    encoded as PID + BLP pairs."""

    packet_type: ClassVar[int] = PT_RTPFB
    fmt: ClassVar[int | None] = 1
    sender_ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> GenericNack:
        sender, media = _feedback_header(body)
        lost = []
        for offset in range(8, len(body) - 3, 4):
            pid, blp = _NACK_ITEM.unpack_from(body, offset)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return cls(sender, media, lost)

    def build_body(self) -> tuple[int, bytes]:
        # One pass over ``lost`` in ascending order (mod 2^16, as a receiver discovers gaps): each
        # number within 16 of the current PID becomes a BLP bit, any other starts a new item.
        items = bytearray()
        pid: int | None = None
        blp = 0
        for seq in self.lost:
            distance = 0 if pid is None else (seq - pid - 1) & 0xFFFF
            if pid is not None and distance < 16:
                blp |= 1 << distance
            elif seq != pid:
                if pid is not None:
                    items += _NACK_ITEM.pack(pid, blp)
                pid, blp = seq & 0xFFFF, 0
        if pid is not None:
            items += _NACK_ITEM.pack(pid, blp)
        return 1, _TWO_U32.pack(self.sender_ssrc, self.media_ssrc) + bytes(items)


@dataclass(slots=True)
class TmmbItem:
    """RFC 5104 §4.2.1.1: one SSRC's maximum total bitrate (bit/s) and measured overhead (bytes)."""

    ssrc: int
    bitrate: int
    overhead: int = 0


def _encode_mantissa(bitrate: int, bits: int) -> tuple[int, int]:
    exponent = 0
    limit = (1 << bits) - 1
    while bitrate > limit:
        bitrate >>= 1
        exponent += 1
    return exponent, bitrate


class _TmmbBase(RtcpPacket):
    """TMMBR/TMMBN share one FCI layout (RFC 5104 §4.2.1.1, §4.2.2.1)."""

    __slots__ = ()
    sender_ssrc: int
    items: list[TmmbItem]

    @staticmethod
    def _parse_items(body: bytes) -> list[TmmbItem]:
        items = []
        for offset in range(8, len(body) - 7, 8):
            ssrc, word = _TWO_U32.unpack_from(body, offset)
            items.append(TmmbItem(ssrc, ((word >> 9) & 0x1FFFF) << (word >> 26), word & 0x1FF))
        return items

    def build_body(self) -> tuple[int, bytes]:
        out = bytearray(_TWO_U32.pack(self.sender_ssrc, 0))  # media SSRC unused: set to 0 (§4.2.1.2)
        for item in self.items:
            exponent, mantissa = _encode_mantissa(item.bitrate, 17)
            out += _TWO_U32.pack(item.ssrc, exponent << 26 | mantissa << 9 | (item.overhead & 0x1FF))
        assert self.fmt is not None
        return self.fmt, bytes(out)


@dataclass(slots=True)
class Tmmbr(_TmmbBase):
    """Temporary Maximum Media Stream Bit Rate Request (RFC 5104 §4.2.1)."""

    packet_type: ClassVar[int] = PT_RTPFB
    fmt: ClassVar[int | None] = 3
    sender_ssrc: int
    items: list[TmmbItem] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Tmmbr:
        sender, _ = _feedback_header(body)
        return cls(sender, cls._parse_items(body))


@dataclass(slots=True)
class Tmmbn(_TmmbBase):
    """Temporary Maximum Media Stream Bit Rate Notification (RFC 5104 §4.2.2)."""

    packet_type: ClassVar[int] = PT_RTPFB
    fmt: ClassVar[int | None] = 4
    sender_ssrc: int
    items: list[TmmbItem] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Tmmbn:
        sender, _ = _feedback_header(body)
        return cls(sender, cls._parse_items(body))


@dataclass(slots=True)
class PictureLossIndication(RtcpPacket):
    """PLI (RFC 4585 §6.3.1): no FCI."""

    packet_type: ClassVar[int] = PT_PSFB
    fmt: ClassVar[int | None] = 1
    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> PictureLossIndication:
        return cls(*_feedback_header(body))

    def build_body(self) -> tuple[int, bytes]:
        return 1, _TWO_U32.pack(self.sender_ssrc, self.media_ssrc)


@dataclass(slots=True)
class FirEntry:
    ssrc: int
    sequence_number: int


@dataclass(slots=True)
class FullIntraRequest(RtcpPacket):
    """FIR (RFC 5104 §4.3.1): the media SSRC field is unused; targets are in the FCI entries."""

    packet_type: ClassVar[int] = PT_PSFB
    fmt: ClassVar[int | None] = 4
    sender_ssrc: int
    entries: list[FirEntry] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> FullIntraRequest:
        sender, _ = _feedback_header(body)
        entries = [FirEntry(*_FIR_ITEM.unpack_from(body, offset)) for offset in range(8, len(body) - 7, 8)]
        return cls(sender, entries)

    def build_body(self) -> tuple[int, bytes]:
        fci = b"".join(_FIR_ITEM.pack(e.ssrc, e.sequence_number & 0xFF) for e in self.entries)
        return 4, _TWO_U32.pack(self.sender_ssrc, 0) + fci


@dataclass(slots=True)
class ReceiverEstimatedMaxBitrate(RtcpPacket):
    """REMB (draft-alvestrand-rmcat-remb-03 §2.2): PSFB application layer feedback, "REMB" tag."""

    packet_type: ClassVar[int] = PT_PSFB
    fmt: ClassVar[int | None] = 15
    sender_ssrc: int
    bitrate: int
    ssrcs: list[int] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpPacket:
        sender, _ = _feedback_header(body)
        if len(body) < 16 or body[8:12] != b"REMB":
            return RtcpUnknown(PT_PSFB, count, bytes(body))  # some other application layer feedback
        word = _U32.unpack_from(body, 12)[0]
        number = word >> 24
        if len(body) < 16 + 4 * number:
            raise RtcpParseError("REMB SSRC list overruns the packet")
        bitrate = (word & 0x3FFFF) << ((word >> 18) & 0x3F)
        return cls(sender, bitrate, list(struct.unpack_from(f"!{number}I", body, 16)))

    def build_body(self) -> tuple[int, bytes]:
        exponent, mantissa = _encode_mantissa(self.bitrate, 18)
        body = _TWO_U32.pack(self.sender_ssrc, 0) + b"REMB"
        body += _U32.pack(len(self.ssrcs) << 24 | exponent << 18 | mantissa)
        return 15, body + b"".join(_U32.pack(s) for s in self.ssrcs)


@dataclass(slots=True)
class RtcpUnknown(RtcpPacket):
    """Any packet type or FMT not in the table, kept verbatim (XR, APP, TCC, ...)."""

    type_code: int
    count: int
    body: bytes

    def _packet_type(self) -> int:
        return self.type_code

    def build_body(self) -> tuple[int, bytes]:
        return self.count, self.body


# (packet type, FMT or None) → class. Feedback types are looked up by FMT, the rest by type alone.
PACKET_TYPES: dict[tuple[int, int | None], type[RtcpPacket]] = {
    (cls.packet_type, cls.fmt): cls
    for cls in (
        SenderReport,
        ReceiverReport,
        SourceDescription,
        Bye,
        GenericNack,
        Tmmbr,
        Tmmbn,
        PictureLossIndication,
        FullIntraRequest,
        ReceiverEstimatedMaxBitrate,
    )
}
_FEEDBACK_TYPES = frozenset({PT_RTPFB, PT_PSFB})


def iter_compound(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(packet type, count/FMT, body) for each packet, with the RFC 3550 §A.2 length checks."""
    offset = 0
    end = len(data)
    if end < 4:
        raise RtcpParseError("RTCP datagram shorter than a header")
    while offset < end:
        if offset + 4 > end:
            raise RtcpParseError("trailing bytes after the last RTCP packet")
        b0, packet_type, words = _HEADER.unpack_from(data, offset)
        if b0 >> 6 != 2:
            raise RtcpParseError(f"RTCP version {b0 >> 6}")
        size = 4 * (words + 1)
        if offset + size > end:
            raise RtcpParseError("RTCP packet length overruns the datagram")
        body = data[offset + 4 : offset + size]
        if b0 & 0x20:
            # Only the last packet of a compound may be padded (RFC 3550 §6.4.1, §A.2).
            if offset + size != end:
                raise RtcpParseError("padding bit set on a packet that is not the last")
            padding = body[-1] if body else 0
            # RFC 3550 §6.4.1: the count includes itself and is a multiple of four (packets are
            # 32-bit aligned), so what is left stays whole words for the report blocks and FCI
            if padding == 0 or padding > len(body) or padding % 4:
                raise RtcpParseError(f"invalid RTCP padding count {padding}")
            body = body[:-padding]
        yield packet_type, b0 & 0x1F, body
        offset += size


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a (possibly reduced-size, RFC 5506) compound RTCP datagram."""
    packets: list[RtcpPacket] = []
    for packet_type, count, body in iter_compound(data):
        cls = PACKET_TYPES.get((packet_type, count if packet_type in _FEEDBACK_TYPES else None))
        packets.append(RtcpUnknown(packet_type, count, body) if cls is None else cls.parse_body(count, body))
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets; RFC 3550 §6.1 wants SR or RR first and an SDES CNAME in each compound."""
    return b"".join(packet.serialize() for packet in packets)

"""RTCP codec table (RFC 3550, 4585, 5104, REMB) and RFC 3550 appendix A receive statistics."""

from __future__ import annotations

import random
import struct
import time

import pytest

from rtc2sip.media.rtcp import (
    Bye,
    FirEntry,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverEstimatedMaxBitrate,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpParseError,
    RtcpUnknown,
    SdesChunk,
    SenderReport,
    SourceDescription,
    TmmbItem,
    Tmmbn,
    Tmmbr,
    parse_compound,
    serialize_compound,
)
from rtc2sip.media.rtcpstats import ReceiveStatistics, ntp_from_unix, ntp_middle, round_trip_time, unix_from_ntp
from rtc2sip.media.rtp import PacketKind, classify

BLOCK = ReportBlock(ssrc=0xBEEF, fraction_lost=25, packets_lost=-3, highest_sequence=0x1FFFF, jitter=40, lsr=7, dlsr=9)

PACKETS: list[RtcpPacket] = [
    SenderReport(0xCAFE, ntp_from_unix(1.7e9), 123456, 1000, 172000, [BLOCK]),
    SenderReport(0xCAFE, 1, 2, 3, 4),
    ReceiverReport(0xCAFE, [BLOCK, ReportBlock(1)]),
    ReceiverReport(0xCAFE),
    SourceDescription.cname(0xCAFE, "rtc2sip@example"),
    SourceDescription([SdesChunk(1, [(1, b"abc"), (2, b"name")]), SdesChunk(2, [])]),
    Bye([0xCAFE, 0xBEEF], b"hang up"),
    Bye([0xCAFE]),
    GenericNack(0xCAFE, 0xBEEF, [100, 101, 105, 117, 200]),
    Tmmbr(0xCAFE, [TmmbItem(0xBEEF, 256_000, 40)]),
    Tmmbn(0xCAFE, [TmmbItem(0xBEEF, 256_000, 40), TmmbItem(0xF00D, 64_000, 0)]),
    Tmmbn(0xCAFE),
    PictureLossIndication(0xCAFE, 0xBEEF),
    FullIntraRequest(0xCAFE, [FirEntry(0xBEEF, 7), FirEntry(0xF00D, 255)]),
    ReceiverEstimatedMaxBitrate(0xCAFE, 1_000_000, [0xBEEF, 0xF00D]),
    RtcpUnknown(207, 0, b"\x00\x00\x00\x01" + bytes(8)),  # XR kept verbatim
    RtcpUnknown(205, 15, bytes(12)),  # transport-cc, not in the table
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_round_trip(packet: RtcpPacket) -> None:
    data = packet.serialize()
    assert len(data) % 4 == 0
    assert classify(data) is PacketKind.RTCP
    assert parse_compound(data) == [packet]


def test_compound_round_trip() -> None:
    data = serialize_compound(PACKETS)
    assert parse_compound(data) == PACKETS


def test_nack_wire_format() -> None:
    """RFC 4585 §6.2.1: PID then BLP, bit i set means PID+i+1 lost."""
    data = GenericNack(1, 2, [100, 101, 105, 117]).serialize()
    assert data[:4] == bytes([0x81, 205, 0, 4])
    assert struct.unpack("!IIHHHH", data[4:]) == (1, 2, 100, 0b10001, 117, 0)
    wrapped = GenericNack(1, 2, [65535, 0, 3]).serialize()
    assert parse_compound(wrapped)[0] == GenericNack(1, 2, [65535, 0, 3])
    assert struct.unpack("!HH", wrapped[12:16]) == (65535, 0b1001)


def test_pli_fir_remb_wire_format() -> None:
    assert PictureLossIndication(1, 2).serialize() == bytes([0x81, 206, 0, 2]) + struct.pack("!II", 1, 2)
    fir = FullIntraRequest(1, [FirEntry(2, 9)]).serialize()
    assert fir == bytes([0x84, 206, 0, 4]) + struct.pack("!IIIB3x", 1, 0, 2, 9)
    remb = ReceiverEstimatedMaxBitrate(1, 1_000_000, [2]).serialize()
    assert remb[:4] == bytes([0x8F, 206, 0, 5]) and remb[12:16] == b"REMB"
    word = struct.unpack("!I", remb[16:20])[0]
    assert word >> 24 == 1 and (word & 0x3FFFF) << ((word >> 18) & 0x3F) == 1_000_000
    # Bitrates beyond the mantissa lose only low bits.
    big = parse_compound(ReceiverEstimatedMaxBitrate(1, 3_000_001, []).serialize())[0]
    assert isinstance(big, ReceiverEstimatedMaxBitrate) and 2_999_000 < big.bitrate <= 3_000_001


def test_other_afb_is_unknown() -> None:
    data = RtcpUnknown(206, 15, struct.pack("!II", 1, 0) + b"ABCD").serialize()
    assert isinstance(parse_compound(data)[0], RtcpUnknown)


def test_report_block_lost_saturates() -> None:
    block = ReportBlock(1, packets_lost=10_000_000)
    assert ReportBlock.parse(block.serialize(), 0).packets_lost == 0x7FFFFF
    assert ReportBlock.parse(ReportBlock(1, packets_lost=-10_000_000).serialize(), 0).packets_lost == -0x800000


def test_padding_on_last_packet_only() -> None:
    rr = ReceiverReport(5).serialize()
    padded = bytearray(rr)
    padded[0] |= 0x20
    padded[3] += 1
    padded += b"\x00\x00\x00\x04"
    assert parse_compound(bytes(padded)) == [ReceiverReport(5)]
    with pytest.raises(RtcpParseError):
        parse_compound(bytes(padded) + rr)


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\xc9\x00",  # shorter than a header
        b"\x40\xc9\x00\x01" + bytes(4),  # version 1
        b"\x80\xc9\x00\x05" + bytes(4),  # length beyond the datagram
        b"\x81\xc9\x00\x01" + bytes(4),  # one report block announced, none present
        b"\x81\xca\x00\x01" + bytes(4),  # SDES chunk without terminator
        ReceiverReport(1).serialize() + b"\x80",  # trailing garbage
    ],
)
def test_invalid_compounds(data: bytes) -> None:
    with pytest.raises(RtcpParseError):
        parse_compound(data)


def test_sdes_cname() -> None:
    packet = parse_compound(SourceDescription.cname(9, "héllo").serialize())[0]
    assert isinstance(packet, SourceDescription) and packet.chunks[0].cname == "héllo"


# --- time and RTT ------------------------------------------------------------------------------------


def test_ntp_conversion() -> None:
    t = 1_700_000_000.25
    assert abs(unix_from_ntp(ntp_from_unix(t)) - t) < 1e-6
    assert ntp_from_unix(0) >> 32 == 2208988800


def test_rtt_from_lsr_dlsr() -> None:
    """RFC 3550 §6.4.1: our SR at T0, the peer holds it 100 ms, its RR arrives at T0 + 150 ms."""
    t0 = 1_700_000_000.0
    sr = SenderReport(0xCAFE, ntp_from_unix(t0), 0, 0, 0)
    peer = ReceiveStatistics(0xCAFE, 8000, min_sequential=0)
    peer.update(1, 0, 0.0)
    peer.on_sender_report(sr.ntp_timestamp, arrival=10.000)
    block = peer.report_block(now=10.100)
    assert block.lsr == ntp_middle(sr.ntp_timestamp)
    assert abs(block.dlsr / 65536 - 0.100) < 1e-4
    rtt = round_trip_time(block, ntp_from_unix(t0 + 0.150))
    assert rtt is not None and abs(rtt - 0.050) < 1e-3
    assert round_trip_time(ReportBlock(1), ntp_from_unix(t0)) is None


# --- RFC 3550 appendix A statistics ------------------------------------------------------------------


def reference_jitter(events: list[tuple[int, float]], clock_rate: int) -> int:
    """A.8 with plain (unwrapped) integers, as a cross-check."""
    jitter = 0.0
    previous: int | None = None
    for timestamp, arrival in events:
        transit = int(arrival * clock_rate) - timestamp
        if previous is not None:
            jitter += (abs(transit - previous) - jitter) / 16
        previous = transit
    return int(jitter)


def test_loss_and_jitter_with_reordering_and_wrap() -> None:
    clock = 8000
    stats = ReceiveStatistics(0x1234, clock, min_sequential=0)
    first_seq, first_ts = 65_400, 2**32 - 20 * 160  # both counters wrap inside the stream
    rng = random.Random(7)
    sent = []
    for i in range(300):
        send_time = i * 0.020
        arrival = 5.0 + send_time + rng.uniform(0.0, 0.010)  # up to 10 ms of network jitter
        sent.append(((first_seq + i) & 0xFFFF, first_ts + 160 * i, arrival))
    dropped = {5, 40, 41, 150, 299}
    arrivals = [p for i, p in enumerate(sent) if i not in dropped]
    arrivals[60], arrivals[61] = arrivals[61], arrivals[60]  # reordered pair
    arrivals.insert(100, arrivals[99])  # one duplicate
    for seq, ts, arrival in arrivals:
        assert stats.update(seq, ts & 0xFFFFFFFF, arrival)

    assert stats.extended_highest_sequence == first_seq + 298  # 299 lost; last received is index 298
    assert stats.expected == 299
    # A.3: duplicates count as received, so they hide one loss.
    assert stats.received == 300 - len(dropped) + 1
    assert stats.lost == 299 - stats.received == 3
    assert stats.jitter == reference_jitter([(ts, a) for _, ts, a in arrivals], clock)
    assert 0 < stats.jitter < 80  # 10 ms of uniform jitter is ~27 timestamp units on average

    block = stats.report_block(now=20.0)
    assert block.fraction_lost == 3 * 256 // 299
    assert block.highest_sequence == first_seq + 298 and block.packets_lost == 3
    assert block.lsr == 0 and block.dlsr == 0

    # Next interval: indexes 299..399 expected (101), 299 and every tenth lost (11).
    for i in range(300, 400):
        if i % 10 != 0:
            seq = (first_seq + i) & 0xFFFF
            stats.update(seq, (first_ts + 160 * i) & 0xFFFFFFFF, 5.0 + i * 0.020)
    block = stats.report_block(now=30.0)
    assert block.fraction_lost == 11 * 256 // 101
    assert block.packets_lost == 3 + 11
    assert stats.report_block(now=31.0).fraction_lost == 0  # empty interval


def test_constant_transit_has_no_jitter() -> None:
    stats = ReceiveStatistics(1, 48000, min_sequential=0)
    for i in range(100):
        stats.update(i, (2**32 - 4800 + 960 * i) & 0xFFFFFFFF, 1.0 + i * 0.020)
    assert stats.jitter == 0 and stats.lost == 0


def test_probation_and_restart() -> None:
    """A.1: a source is valid after MIN_SEQUENTIAL in-order packets; a big jump needs confirming."""
    stats = ReceiveStatistics(1, 8000)
    assert not stats.update(1000, 0, 0.0)
    assert stats.update(1001, 160, 0.02)
    assert stats.received == 1 and stats.expected == 1
    assert stats.update(1002, 320, 0.04)
    assert not stats.update(30000, 640, 0.06)  # jump: held back
    assert stats.update(30001, 800, 0.08)  # confirmed: statistics restart from here
    assert stats.expected == 1 and stats.received == 1
    # A late packet from just before the max (within MAX_MISORDER) counts as received.
    assert stats.update(29990, 0, 0.1)


def test_benchmark_statistics(capsys: pytest.CaptureFixture[str]) -> None:
    stats = ReceiveStatistics(1, 8000, min_sequential=0)
    n = 50000
    start = time.perf_counter()
    for i in range(n):
        stats.update(i & 0xFFFF, i * 160, i * 0.02)
    per_packet = (time.perf_counter() - start) / n * 1e6
    nack = GenericNack(1, 2, list(range(0, 64, 3)))
    start = time.perf_counter()
    for _ in range(2000):
        parse_compound(nack.serialize())
    nack_cost = (time.perf_counter() - start) / 2000 * 1e6
    with capsys.disabled():
        print(f"\n[bench] ReceiveStatistics.update {per_packet:.2f} µs/packet, NACK build+parse {nack_cost:.1f} µs")

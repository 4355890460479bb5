"""RTP header codec, in-place rewrite, continuity rewriter and RFC 7983 demultiplexing."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtc2sip.media.rtp import (
    ONE_BYTE_PROFILE,
    PacketKind,
    RtpPacket,
    RtpParseError,
    RtpRewriter,
    build_extensions,
    build_rtp,
    classify,
    header_extension,
    is_rtcp,
    parse_extensions,
    rewrite_header,
)


def test_parse_simple() -> None:
    packet = RtpPacket.parse(build_rtp(111, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"abc", marker=True))
    assert (packet.payload_type, packet.sequence_number, packet.timestamp, packet.ssrc) == (
        111,
        65535,
        0xFFFFFFFF,
        0xDEADBEEF,
    )
    assert packet.marker and packet.payload == b"abc" and packet.csrc == () and packet.extension_profile is None


def test_full_round_trip_with_csrc_extension_padding() -> None:
    profile, ext = build_extensions({1: b"\x7f", 3: b"\x00\x01\x02"})
    original = RtpPacket(
        payload_type=96,
        sequence_number=1234,
        timestamp=99999,
        ssrc=42,
        payload=b"\x01" * 20,
        marker=False,
        csrc=(7, 8),
        extension_profile=profile,
        extension=ext,
        padding_size=4,
    )
    data = original.serialize()
    assert len(data) == 12 + 8 + 4 + len(ext) + 20 + 4
    parsed = RtpPacket.parse(data)
    assert parsed == original
    assert parse_extensions(parsed.extension_profile or 0, parsed.extension) == {1: b"\x7f", 3: b"\x00\x01\x02"}


def test_two_byte_extensions() -> None:
    elements = {1: b"", 20: b"x" * 20}
    profile, data = build_extensions(elements)
    assert profile & 0xFFF0 == 0x1000
    assert parse_extensions(profile, data) == elements


def test_one_byte_extension_padding_and_reserved_id() -> None:
    data = bytes([0x10, 0xAA, 0x00, 0x00, 0xF0, 0x00, 0x00, 0x00])
    assert parse_extensions(ONE_BYTE_PROFILE, data) == {1: b"\xaa"}


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x00",  # shorter than a header
        b"\x40" + bytes(11),  # version 1
        b"\x82" + bytes(11),  # CSRC count beyond the packet
        b"\x90" + bytes(11) + b"\xbe\xde\x00\x05",  # extension beyond the packet
        b"\xa0" + bytes(11) + b"\x00",  # padding count 0
        b"\xa0" + bytes(11) + b"\x00\x09",  # padding beyond the payload
    ],
)
def test_invalid_packets(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        RtpPacket.parse(data)


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_round_trip_property(
    pt: int, seq: int, ts: int, ssrc: int, marker: bool, csrc: tuple[int, ...], payload: bytes, padding: int
) -> None:
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrc, padding_size=padding)
    assert RtpPacket.parse(packet.serialize()) == packet


def test_rewrite_in_place_keeps_marker_and_payload() -> None:
    buf = bytearray(build_rtp(0, 1, 2, 3, b"payload", marker=True))
    rewrite_header(buf, 8, 70000, 2**32 + 5, 0xABCDEF)
    packet = RtpPacket.parse(buf)
    assert (packet.payload_type, packet.sequence_number, packet.timestamp, packet.ssrc) == (
        8,
        70000 - 65536,
        5,
        0xABCDEF,
    )
    assert packet.marker and packet.payload == b"payload"


def test_rewriter_continuity_across_source_change() -> None:
    rewriter = RtpRewriter(ssrc=0x1111, clock_rate=8000, payload_types={0: 0, 101: 96}, initial_sequence=500)
    out = []
    t = 0.0
    for i in range(3):
        buf = bytearray(build_rtp(0, 40000 + i, 7_000_000 + 160 * i, 0xAAAA, b"x"))
        assert rewriter.rewrite(buf, t)
        out.append(RtpPacket.parse(buf))
        t += 0.02
    # New source (re-INVITE to another phone): wildly different seq/ts/SSRC; output stays continuous.
    t += 0.02  # one packet time of silence
    for i in range(2):
        buf = bytearray(build_rtp(0, 3 + i, 123 + 160 * i, 0xBBBB, b"y"))
        assert rewriter.rewrite(buf, t)
        out.append(RtpPacket.parse(buf))
        t += 0.02
    assert [p.sequence_number for p in out] == [500, 501, 502, 503, 504]
    assert {p.ssrc for p in out} == {0x1111}
    stamps = [p.timestamp for p in out]
    assert stamps[1] - stamps[0] == 160 and stamps[3] - stamps[2] == 320 and stamps[4] - stamps[3] == 160
    # Payload types are mapped; unmapped ones are refused and left untouched.
    dtmf = bytearray(build_rtp(101, 5, 0, 0xBBBB, b"z"))
    assert rewriter.rewrite(dtmf, t) and RtpPacket.parse(dtmf).payload_type == 96
    other = bytearray(build_rtp(9, 6, 0, 0xBBBB, b"z"))
    before = bytes(other)
    assert not rewriter.rewrite(other, t) and bytes(other) == before


def test_rewriter_reordered_packet_does_not_move_base() -> None:
    rewriter = RtpRewriter(ssrc=1, clock_rate=8000, payload_types={0: 0})
    for seq in (10, 12, 11):
        rewriter.rewrite(bytearray(build_rtp(0, seq, seq * 160, 5, b"")), 0.0)
    buf = bytearray(build_rtp(0, 0, 0, 6, b""))  # source change after the reordered packet
    rewriter.rewrite(buf, 0.02)
    assert RtpPacket.parse(buf).sequence_number == 3  # continues after the newest (12 → output 2)


@pytest.mark.parametrize(
    ("first", "second", "kind"),
    [
        (0, 1, PacketKind.STUN),
        (3, 0, PacketKind.STUN),
        (16, 0, PacketKind.ZRTP),
        (20, 0, PacketKind.DTLS),
        (22, 0xFE, PacketKind.DTLS),
        (63, 0, PacketKind.DTLS),
        (64, 0, PacketKind.TURN_CHANNEL),
        (0x80, 0, PacketKind.RTP),
        (0x80, 0x80 | 63, PacketKind.RTP),  # PT 63 with marker; 64..95 would collide (RFC 5761 §4)
        (0x80, 200, PacketKind.RTCP),
        (0x81, 205, PacketKind.RTCP),
        (0xBF, 223, PacketKind.RTCP),
        (0x80, 224, PacketKind.RTP),  # PT 96 with marker
        (192, 0, PacketKind.UNKNOWN),
        (100, 0, PacketKind.UNKNOWN),
    ],
)
def test_classify_rfc7983(first: int, second: int, kind: PacketKind) -> None:
    assert classify(bytes([first, second, 0, 0])) is kind
    if kind in (PacketKind.RTP, PacketKind.RTCP):
        assert is_rtcp(bytes([first, second])) is (kind is PacketKind.RTCP)


def test_classify_short() -> None:
    assert classify(b"") is PacketKind.UNKNOWN and classify(b"\x80") is PacketKind.UNKNOWN


def test_benchmark_header(capsys: pytest.CaptureFixture[str]) -> None:
    n = 100000
    buf = bytearray(build_rtp(0, 1, 160, 7, b"\xd5" * 160))
    start = time.perf_counter()
    for i in range(n):
        rewrite_header(buf, 0, i, i * 160, 0x1234)
    rewrite = (time.perf_counter() - start) / n * 1e6
    rewriter = RtpRewriter(0x1234, 8000, {0: 0})
    start = time.perf_counter()
    for i in range(n):
        rewriter.rewrite(buf, i * 0.02)
    stream = (time.perf_counter() - start) / n * 1e6
    data = bytes(buf)
    start = time.perf_counter()
    for _ in range(n):
        classify(data)
    demux = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(n // 10):
        RtpPacket.parse(data)
    parse = (time.perf_counter() - start) / (n // 10) * 1e6
    with capsys.disabled():
        print(
            f"\n[bench] rewrite_header {rewrite:.2f} µs, RtpRewriter.rewrite {stream:.2f} µs, "
            f"classify {demux:.2f} µs, RtpPacket.parse {parse:.2f} µs per packet"
        )


# -- header_extension: one element of a whole packet, for the BUNDLE demultiplexer (RFC 8843 §9.2) --


def _with_ext(profile: int, data: bytes, csrc: tuple[int, ...] = ()) -> bytes:
    return RtpPacket(96, 1, 2, 3, b"payload", csrc=csrc, extension_profile=profile, extension=data).serialize()


def test_header_extension_one_byte_with_padding_and_csrcs() -> None:
    # padding bytes between elements (RFC 8285 §4.2), MID "1" as ID 3 after a 3-byte element
    data = bytes([0x12, 1, 2, 3, 0x00, 0x00, 0x30]) + b"1"
    packet = _with_ext(ONE_BYTE_PROFILE, data + bytes(-len(data) % 4), csrc=(7, 8))
    assert header_extension(packet, 3) == b"1"
    assert header_extension(packet, 1) == b"\x01\x02\x03"
    assert header_extension(packet, 2) is None
    assert header_extension(packet, 15) is None and header_extension(packet, 0) is None


def test_header_extension_one_byte_stops_at_the_reserved_id() -> None:
    packet = _with_ext(ONE_BYTE_PROFILE, bytes([0xF0, 0x00, 0x30, ord("a")]))
    assert header_extension(packet, 3) is None


def test_header_extension_two_byte_form() -> None:
    profile, data = build_extensions({1: b"", 20: b"video-mid-that-is-long" * 2})
    packet = _with_ext(profile, data)
    assert header_extension(packet, 20) == b"video-mid-that-is-long" * 2
    assert header_extension(packet, 1) == b""
    assert header_extension(packet, 2) is None


def test_header_extension_absent_or_of_another_profile() -> None:
    assert header_extension(build_rtp(0, 1, 2, 3, b"x" * 20), 1) is None
    assert header_extension(_with_ext(0xABCD, bytes([0x10, 0x41, 0, 0])), 1) is None


@pytest.mark.parametrize("packet", [
    b"",
    bytes([0x90]) + bytes(10),  # shorter than the fixed header
    bytes([0x90]) + bytes(11),  # X set, no extension header
    bytes([0x9F]) + bytes(11 + 8),  # 15 CSRCs announced, not there
    bytes([0x90, 0, 0, 0]) + bytes(8) + bytes([0xBE, 0xDE, 0, 5]) + bytes(4),  # length beyond the packet
    bytes([0x90, 0, 0, 0]) + bytes(8) + bytes([0xBE, 0xDE, 0, 1, 0x3F, 1, 2, 3]),  # element overruns
    bytes([0x90, 0, 0, 0]) + bytes(8) + bytes([0x10, 0x00, 0, 1, 0, 0, 3, 9]),  # two-byte element overruns
    bytes([0x90, 0, 0, 0]) + bytes(8) + bytes([0x10, 0x00, 0, 1, 0, 0, 0, 3]),  # two-byte length byte missing
])
def test_header_extension_malformed_is_none(packet: bytes) -> None:
    assert header_extension(packet, 3) is None


@given(st.binary(max_size=80), st.integers(0, 255))
def test_header_extension_never_raises(data: bytes, ext_id: int) -> None:
    for packet in (data, bytes([0x90]) + data, bytes([0x90]) + bytes(11) + b"\xbe\xde" + data,
                   bytes([0x90]) + bytes(11) + b"\x10\x00" + data):
        value = header_extension(packet, ext_id)
        assert value is None or isinstance(value, bytes)

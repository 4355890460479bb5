"""RFC 7741 and RFC 6184 payloads: packetizers, depacketizers (loss, reorder, malformed), keyframe detection."""

from __future__ import annotations

import os
import struct

import pytest

from rtc2sip.coder.common import CoderError
from rtc2sip.coder.rtp_video import (
    EncodedFrame,
    H264Depacketizer,
    Vp8Depacketizer,
    is_keyframe,
    packetize_h264,
    packetize_vp8,
    parse_vp8_descriptor,
    split_annexb,
)

SPS = bytes([0x67, 0x42, 0xC0, 0x1F]) + b"\x11" * 8
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65]) + bytes(range(1, 256)) * 12  # 3,061 bytes
SLICE = bytes([0x41]) + b"\x22" * 500


def annexb(*nals: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def feed(depack: H264Depacketizer | Vp8Depacketizer, payloads: list[bytes], seq0: int, ts: int,
         skip: tuple[int, ...] = ()) -> list[EncodedFrame]:  # fmt: skip
    out = []
    for i, p in enumerate(payloads):
        if i not in skip:
            out += depack.push(p, (seq0 + i) & 0xFFFF, ts, i == len(payloads) - 1)
    return out


# -- VP8 -------------------------------------------------------------------------------------------------


def vp8_frame(key: bool, size: int) -> bytes:
    # P bit (RFC 7741 §4.3 / RFC 6386 §9.1): 0 on a keyframe
    return bytes([0x00 if key else 0x01]) + os.urandom(size - 1)


def test_packetize_vp8_descriptors_and_sizes() -> None:
    frame = vp8_frame(True, 2500)
    plain = packetize_vp8(frame, max_payload=1000)
    assert [len(p) for p in plain] == [1000, 1000, 503]
    assert [p[0] for p in plain] == [0x10, 0x00, 0x00]
    assert b"".join(p[1:] for p in plain) == frame
    with_pid = packetize_vp8(frame, 1000, picture_id=0x8123)
    assert [parse_vp8_descriptor(p) for p in with_pid] == [(True, 4, 0x0123, 0), (False, 4, 0x0123, 0),
                                                           (False, 4, 0x0123, 0)]  # fmt: skip
    assert all(len(p) <= 1000 for p in with_pid)
    with pytest.raises(CoderError):
        packetize_vp8(frame, max_payload=1)


def test_parse_vp8_descriptor_extensions() -> None:
    # X, I with 7-bit PictureID, L (TL0PICIDX), T/K: 5 bytes of descriptor
    payload = bytes([0x90, 0xF0, 0x05, 0x07, 0x20]) + b"\x00data"
    assert parse_vp8_descriptor(payload) == (True, 5, 5, 0)
    assert parse_vp8_descriptor(b"") is None
    assert parse_vp8_descriptor(b"\x80") is None
    assert parse_vp8_descriptor(b"\x90\x80\x80") is None  # M=1 but one PictureID byte


def test_vp8_round_trip_and_keyframe_flag() -> None:
    depack = Vp8Depacketizer()
    key, delta = vp8_frame(True, 3000), vp8_frame(False, 700)
    frames = feed(depack, packetize_vp8(key, 1200, 7), 65534, 1000)  # sequence numbers wrap inside
    frames += feed(depack, packetize_vp8(delta, 1200, 8), 65537, 4000)
    assert frames == [EncodedFrame(key, 1000, True, True), EncodedFrame(delta, 4000, False, True)]
    assert is_keyframe("VP8", packetize_vp8(key)[0]) and not is_keyframe("vp8", packetize_vp8(delta)[0])
    assert not is_keyframe("vp8", packetize_vp8(key, 1000)[1])  # not a frame's first packet


def test_vp8_loss_makes_incomplete_frames() -> None:
    depack = Vp8Depacketizer()
    f1, f2, f3 = vp8_frame(True, 3000), vp8_frame(False, 3000), vp8_frame(False, 500)
    out = feed(depack, packetize_vp8(f1, 1000), 10, 0, skip=(1,))  # a middle packet
    assert [(f.keyframe, f.complete) for f in out] == [(True, False)]
    out = feed(depack, packetize_vp8(f2, 1000), 14, 3000, skip=(0,))  # the first packet
    assert [(f.keyframe, f.complete) for f in out] == [(False, False)]
    # the marker packet of f3 is lost: the frame ends when the next timestamp starts
    out = feed(depack, packetize_vp8(f3, 400), 18, 6000, skip=(1,))
    assert out == []
    out = feed(depack, packetize_vp8(f1, 1000), 20, 9000)
    assert [(f.timestamp, f.complete) for f in out] == [(6000, False), (9000, True)]


def test_vp8_late_duplicate_and_malformed_are_dropped() -> None:
    depack = Vp8Depacketizer()
    payloads = packetize_vp8(vp8_frame(True, 2000), 1000)
    assert depack.push(payloads[0], 100, 0, False) == []
    assert depack.push(payloads[0], 100, 0, False) == []  # duplicate
    assert depack.push(b"\x90", 101, 0, False) == []  # X set, no extension byte
    assert depack.push(b"\x10", 101, 0, False) == []  # descriptor only, same number again: late
    assert depack.malformed == 1 and depack.late == 2
    out = depack.push(payloads[1], 102, 0, False) + depack.push(payloads[2], 103, 0, True)
    assert [f.complete for f in out] == [False]  # 101 carried part of it


def test_padding_only_packets_take_a_sequence_number_and_nothing_else() -> None:
    for depack in (Vp8Depacketizer(), H264Depacketizer()):
        vp8 = isinstance(depack, Vp8Depacketizer)
        first = packetize_vp8(vp8_frame(True, 300)) if vp8 else packetize_h264(annexb(SPS, PPS, IDR))
        second = packetize_vp8(vp8_frame(False, 300)) if vp8 else [SLICE]
        out = feed(depack, first, 10, 0)
        assert depack.push(b"", 10 + len(first), 0, False) == []  # a probe between frames
        out += feed(depack, second, 11 + len(first), 3000)
        assert [(f.complete, f.after_gap) for f in out] == [(True, False), (True, False)]
        assert depack.padding == 1 and depack.malformed == 0
        # padding after a gap: the next frame still comes after lost packets
        depack.push(b"", 20 + len(first), 3000, False)
        out = feed(depack, second, 21 + len(first), 6000)
        assert [f.after_gap for f in out] == [True]


# -- H.264 ------------------------------------------------------------------------------------------------


def test_split_annexb_three_and_four_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + SLICE + b"\x00\x00"
    assert split_annexb(data) == [SPS, PPS, SLICE]
    assert split_annexb(b"garbage") == []


def test_packetize_h264_mode1_stap_a_and_fu_a() -> None:
    payloads = packetize_h264(annexb(SPS, PPS, IDR), max_payload=1200)
    stap = payloads[0]
    assert stap[0] & 0x1F == 24 and stap[0] & 0x60 == 0x60  # NRI: the highest aggregated
    assert stap[1:] == struct.pack("!H", len(SPS)) + SPS + struct.pack("!H", len(PPS)) + PPS
    fus = payloads[1:]
    assert len(fus) == 3 and all(len(p) <= 1200 for p in fus)
    assert [p[0] for p in fus] == [0x60 | 28] * 3
    assert [p[1] for p in fus] == [0x85, 0x05, 0x45]  # S, -, E with type 5
    assert bytes([0x65]) + b"".join(p[2:] for p in fus) == IDR
    assert is_keyframe("h264", payloads[0]) and is_keyframe("h264", payloads[1])
    assert not is_keyframe("h264", payloads[2])
    small = packetize_h264(annexb(SLICE))
    assert small == [SLICE] and not is_keyframe("h264", small[0])


def test_packetize_h264_mode0_single_nal_only() -> None:
    assert packetize_h264(annexb(SPS, PPS, SLICE), mode=0) == [SPS, PPS, SLICE]
    with pytest.raises(CoderError):
        packetize_h264(annexb(IDR), max_payload=1200, mode=0)
    with pytest.raises(CoderError):
        packetize_h264(annexb(SLICE), mode=2)


def test_h264_round_trip_through_every_packet_type() -> None:
    depack = H264Depacketizer()
    au1, au2 = annexb(SPS, PPS, IDR), annexb(SLICE, SLICE)
    frames = feed(depack, packetize_h264(au1, 1000), 65533, 90000)
    frames += feed(depack, packetize_h264(au2, 1200), 65533 + 5, 93000)
    frames += feed(depack, packetize_h264(annexb(SPS, PPS, SLICE), mode=0), 65533 + 6, 96000)
    assert frames == [EncodedFrame(au1, 90000, True, True), EncodedFrame(au2, 93000, False, True),
                      EncodedFrame(annexb(SPS, PPS, SLICE), 96000, False, True)]  # fmt: skip
    assert depack.malformed == 0


def test_h264_fu_a_gap_drops_the_fragmented_nal() -> None:
    depack = H264Depacketizer()
    payloads = packetize_h264(annexb(SPS, PPS, IDR, SLICE), 1000)  # STAP-A, 4 FU-A, slice
    assert len(payloads) == 6
    out = feed(depack, payloads, 0, 0, skip=(2,))
    assert len(out) == 1 and not out[0].complete
    assert split_annexb(out[0].data) == [SPS, PPS, SLICE]  # no half IDR handed to the decoder
    # the FU-A end fragment is lost and the next access unit starts
    out = feed(depack, payloads[:4], 10, 3000) + feed(depack, [SLICE], 15, 6000)
    assert [(f.timestamp, f.complete) for f in out] == [(3000, False), (6000, False)]  # 6000: gap before it
    assert split_annexb(out[0].data) == [SPS, PPS]
    out = feed(depack, [SLICE], 16, 9000)
    assert [(f.timestamp, f.complete) for f in out] == [(9000, True)]


def test_h264_fu_a_start_without_end_before_marker() -> None:
    depack = H264Depacketizer()
    fus = packetize_h264(annexb(IDR), 1000)
    out = depack.push(fus[0], 1, 0, False) + depack.push(fus[1], 2, 0, True)
    assert [(f.complete, f.data) for f in out] == []  # nothing whole in it
    assert depack.push(SLICE, 3, 3000, True)[0].complete


def test_h264_malformed_payloads_are_counted() -> None:
    depack = H264Depacketizer()
    bad = [
        bytes([0x80 | 0x41]) + b"x",  # F bit
        bytes([24, 0x00, 0x09, 0x67]),  # STAP-A size beyond the payload
        bytes([24, 0x00]),  # truncated size
        bytes([24, 0x00, 0x00]),  # zero size
        bytes([24]),  # empty STAP-A
        bytes([28, 0xC5, 0x00]),  # FU-A with S and E
        bytes([28, 0x85]),  # FU-A without data
        bytes([25, 0, 0]),  # STAP-B: interleaved mode
        bytes([29, 0x85, 0]),  # FU-B
        bytes([30]),
    ]
    for i, p in enumerate(bad):
        assert depack.push(p, i, i * 3000, True) == []
    assert depack.malformed == len(bad)
    assert depack.push(SLICE, len(bad), 10**6, True)[0].after_gap  # the stream itself goes on
    assert depack.push(SLICE, len(bad) + 1, 10**6 + 3000, True) == [EncodedFrame(annexb(SLICE), 10**6 + 3000,
                                                                                  False, True)]  # fmt: skip
    assert not is_keyframe("h264", b"") and not is_keyframe("h264", bytes([24, 0, 9]))
    assert not is_keyframe("vp8", b"") and not is_keyframe("opus", b"\x10\x00")


def test_h264_fu_a_middle_without_start_is_discarded() -> None:
    depack = H264Depacketizer()
    fus = packetize_h264(annexb(IDR), 1000)
    out = []
    for i, p in enumerate(fus[1:]):
        out += depack.push(p, 20 + i, 0, i == len(fus) - 2)
    assert out == []  # nothing whole: no frame at all

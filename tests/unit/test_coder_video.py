"""VideoTranscoder round trips: PyAV-encoded source → RTP (with loss and reorder) → transcoder → RTP →
depacketized and decoded again with PyAV. Small pictures (160x120) keep it fast."""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction

import av
import av.video.codeccontext
import pytest
from av.video.frame import PictureType

from rtc2sip.coder.common import CoderError, OutPacket
from rtc2sip.coder.rtp_video import (
    EncodedFrame,
    H264Depacketizer,
    Vp8Depacketizer,
    is_keyframe,
    packetize_h264,
    packetize_vp8,
    split_annexb,
)
from rtc2sip.coder.video import MIN_BITRATE, VideoTranscoder

W, H = 160, 120
STEP = 3000  # 90 kHz at 30 frames/s


def picture(index: int, width: int = W, height: int = H) -> av.VideoFrame:
    """A gradient moving one pixel per frame, on grey chroma."""
    frame = av.VideoFrame(width, height, "yuv420p")
    row = bytes((x + index * 3) & 0xFF for x in range(width))
    luma = b"".join(row[y % 7:] + row[: y % 7] for y in range(height))
    for plane, data, w in zip(frame.planes, (luma, b"\x80" * (width * height // 4), b"\x80" * (width * height // 4)),
                              (width, width // 2, width // 2), strict=True):  # fmt: skip
        rows = len(data) // w
        buf = bytearray(plane.buffer_size)
        for r in range(rows):
            buf[r * plane.line_size:r * plane.line_size + w] = data[r * w:(r + 1) * w]
        plane.update(bytes(buf))
    return frame


def encoder(codec: str, width: int = W, height: int = H) -> av.video.codeccontext.VideoCodecContext:
    cc = av.CodecContext.create("libvpx" if codec == "vp8" else "libx264", "w")
    assert isinstance(cc, av.video.codeccontext.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    cc.time_base = Fraction(1, 90000)
    cc.framerate = Fraction(30, 1)
    cc.bit_rate = 300_000
    cc.gop_size = 1000
    cc.thread_count = 1
    if codec == "vp8":
        cc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        cc.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
    cc.open()
    return cc


def source(codec: str, count: int, *, keyframes: tuple[int, ...] = (), width: int = W, height: int = H,
           max_payload: int = 400, ts0: int = 1234) -> Iterator[tuple[int, list[bytes], bool]]:  # fmt: skip
    """(timestamp, payloads, keyframe) per source frame, as a browser or phone would send them."""
    enc = encoder(codec, width, height)
    for i in range(count):
        frame = picture(i, width, height)
        frame.pts = i * STEP
        frame.pict_type = PictureType.I if i in keyframes else PictureType.NONE
        for packet in enc.encode(frame):
            data = bytes(packet)
            payloads = packetize_vp8(data, max_payload, i) if codec == "vp8" else packetize_h264(data, max_payload)
            yield (ts0 + i * STEP) & 0xFFFFFFFF, payloads, bool(packet.is_keyframe)


def rtp(frames: Iterator[tuple[int, list[bytes], bool]], seq0: int = 65000) -> list[tuple[bytes, int, int, bool]]:
    """(payload, timestamp, seq, marker) in sending order."""
    out = []
    seq = seq0
    for ts, payloads, _key in frames:
        for i, p in enumerate(payloads):
            out.append((p, ts, seq & 0xFFFF, i == len(payloads) - 1))
            seq += 1
    return out


class Sink:
    """The destination: depacketizes and decodes what the transcoder sends."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.depack = Vp8Depacketizer() if codec == "vp8" else H264Depacketizer()
        self.decoder = av.CodecContext.create(codec, "r")
        self.seq = 0
        self.frames: list[EncodedFrame] = []
        self.pictures: list[tuple[int, int]] = []
        self.packets: list[OutPacket] = []

    def take(self, packets: list[OutPacket]) -> None:
        for p in packets:
            self.packets.append(p)
            for frame in self.depack.push(p.payload, self.seq, p.timestamp, p.marker):
                assert frame.complete
                self.frames.append(frame)
                for pic in self.decoder.decode(av.Packet(frame.data)):  # type: ignore[attr-defined]
                    self.pictures.append((pic.width, pic.height))
            self.seq += 1


def stat(coder: VideoTranscoder, key: str) -> int:
    value = coder.stats()[key]
    assert isinstance(value, int)
    return value


def run(coder: VideoTranscoder, packets: list[tuple[bytes, int, int, bool]], sink: Sink, t0: float = 0.0) -> None:
    for n, (payload, ts, seq, marker) in enumerate(packets):
        sink.take(coder.push(payload, ts, seq, marker, t0 + n * 0.002))


@pytest.mark.parametrize(("src", "dst"), [("vp8", "h264"), ("h264", "vp8")])
def test_round_trip_with_reorder(src: str, dst: str) -> None:
    packets = rtp(source(src, 12))
    # swap neighbours here and there: the jitter buffer puts them back
    rnd = random.Random(4)
    for i in rnd.sample(range(len(packets) - 1), len(packets) // 5):
        packets[i], packets[i + 1] = packets[i + 1], packets[i]
    coder = VideoTranscoder(src, dst, src_pt=96, dst_pt=97, width=W, height=H, dst_timestamp=5000)
    assert coder.take_keyframe_request()  # at the start, before anything decodes
    assert not coder.take_keyframe_request()
    sink = Sink(dst)
    run(coder, packets, sink)
    stats = coder.stats()
    assert stats["frames_decoded"] == 12 and stats["frames_incomplete"] == 0 and stats["decode_errors"] == 0
    assert stats["frames_out"] == 12 and stats["keyframes_out"] == 1
    assert sink.pictures == [(W, H)] * 12
    assert {p.payload_type for p in sink.packets} == {97}
    timestamps = sorted({p.timestamp for p in sink.packets})
    assert timestamps == [5000 + i * STEP for i in range(12)]  # the source's spacing, the destination's base
    assert sink.frames[0].keyframe
    assert not coder.take_keyframe_request()


def test_h264_output_is_constrained_baseline_with_parameter_sets_before_each_idr() -> None:
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=126, width=W, height=H)
    sink = Sink("h264")
    packets = rtp(source("vp8", 10))
    run(coder, packets[: len(packets) // 2], sink)
    coder.request_keyframe()
    run(coder, packets[len(packets) // 2:], sink, t0=1.0)
    keys = [f for f in sink.frames if f.keyframe]
    assert len(keys) == 2 and coder.stats()["keyframes_out"] == 2
    for frame in keys:
        kinds = [n[0] & 0x1F for n in split_annexb(frame.data)]
        assert kinds.index(7) < kinds.index(8) < kinds.index(5)
        sps = next(n for n in split_annexb(frame.data) if n[0] & 0x1F == 7)
        assert sps[1] == 66 and sps[2] & 0x40  # profile_idc baseline, constraint_set1: constrained
    assert all(len(p.payload) <= 1200 for p in sink.packets)
    assert sink.packets[-1].marker and sum(p.marker for p in sink.packets) == 10
    firsts = [p.payload for i, p in enumerate(sink.packets) if i == 0 or sink.packets[i - 1].marker]
    assert [is_keyframe("h264", p) for p in firsts] == [f.keyframe for f in sink.frames]
    assert len(sink.pictures) == 10


def test_h264_mode0_keeps_every_nal_within_max_payload() -> None:
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=126, width=320, height=240, h264_mode=0,
                            max_payload=300, bitrate=2_000_000)  # fmt: skip
    sink = Sink("h264")
    run(coder, rtp(source("vp8", 4, width=320, height=240)), sink)
    assert sink.packets and all(len(p.payload) <= 300 for p in sink.packets)
    assert all(p.payload[0] & 0x1F not in (24, 28) for p in sink.packets)  # no STAP-A, no FU-A
    assert len(sink.pictures) == 4


def test_vp8_keyframe_on_request() -> None:
    coder = VideoTranscoder("h264", "vp8", src_pt=126, dst_pt=96, width=W, height=H)
    sink = Sink("vp8")
    packets = rtp(source("h264", 8))
    run(coder, packets[:20], sink)
    before = sum(f.keyframe for f in sink.frames)
    coder.request_keyframe()
    run(coder, packets[20:], sink, t0=1.0)
    assert before == 1 and sum(f.keyframe for f in sink.frames) == 2
    assert is_keyframe("vp8", next(p.payload for p in sink.packets if is_keyframe("vp8", p.payload)))
    assert len(sink.pictures) == 8


def test_scaled_to_the_preferred_size() -> None:
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=128, height=96)
    sink = Sink("h264")
    run(coder, rtp(source("vp8", 3)), sink)
    assert sink.pictures == [(128, 96)] * 3
    stats = coder.stats()
    assert (stats["src_width"], stats["src_height"], stats["width"], stats["height"]) == (W, H, 128, 96)


def frame_starts(frames: list[tuple[int, list[bytes], bool]]) -> list[int]:
    """Index of each frame's first packet in the flattened packet list."""
    starts, n = [], 0
    for _, payloads, _ in frames:
        starts.append(n)
        n += len(payloads)
    return starts


def test_loss_drops_frames_until_a_keyframe_and_asks_the_source_for_one() -> None:
    frames = list(source("vp8", 12, keyframes=(8,), max_payload=40))
    packets = rtp(iter(frames))
    first = frame_starts(frames)
    assert first[4] - first[3] > 1
    lost = first[3] + 1  # inside frame 3
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=W, height=H, jitter_buffer=False)
    assert coder.take_keyframe_request()
    sink = Sink("h264")
    run(coder, packets[:lost] + packets[lost + 1:first[8]], sink)
    stats = coder.stats()
    assert stats["frames_incomplete"] == 1 and stats["frames_skipped"] == 4  # frames 4-7 reference the lost one
    assert coder.take_keyframe_request()
    assert len(sink.pictures) == 3
    run(coder, packets[first[8]:], sink, t0=0.5)  # within KEYFRAME_RETRY of the request
    assert len(sink.pictures) == 3 + 4  # from the source's keyframe on
    assert not coder.take_keyframe_request()


@pytest.mark.parametrize("src", ["vp8", "h264"])
def test_a_whole_lost_frame_also_waits_for_a_keyframe(src: str) -> None:
    frames = list(source(src, 6, keyframes=(4,)))
    packets = rtp(iter(frames))
    first = frame_starts(frames)
    coder = VideoTranscoder(src, "vp8" if src == "h264" else "h264", src_pt=96, dst_pt=97, width=W, height=H)
    coder.take_keyframe_request()
    sink = Sink(coder.dst)
    run(coder, packets[:first[2]] + packets[first[3]:], sink)  # frame 2 never arrives
    sink.take(coder.flush(10.0))  # the jitter buffer gives up on it
    assert coder.take_keyframe_request()
    assert len(sink.pictures) == 2 + 2 and stat(coder, "frames_skipped") + stat(coder, "frames_incomplete") == 1


def test_keyframe_request_toward_the_source_repeats_while_waiting() -> None:
    packets = rtp(source("vp8", 4))
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=W, height=H, jitter_buffer=False)
    assert coder.take_keyframe_request()
    delta = [p for p in packets if p[1] != packets[0][1]]  # the keyframe never arrives
    for i, (payload, ts, seq, marker) in enumerate(delta):
        coder.push(payload, ts, seq, marker, 10.0 + i * 0.6)
    assert len(delta) >= 3
    assert coder.take_keyframe_request()  # asked again a second later
    assert coder.stats()["frames_decoded"] == 0


def test_bitrate_is_clamped_and_applied() -> None:
    for dst in ("h264", "vp8"):
        src = "vp8" if dst == "h264" else "h264"
        coder = VideoTranscoder(src, dst, src_pt=96, dst_pt=97, width=W, height=H, bitrate=500_000,
                                max_bitrate=800_000)  # fmt: skip
        sink = Sink(dst)
        packets = rtp(source(src, 6))
        middle = frame_starts(list(source(src, 6)))[3]
        run(coder, packets[:middle], sink)
        coder.set_bitrate(10)
        run(coder, packets[middle:], sink, t0=3.0)
        assert coder.stats()["bitrate"] == MIN_BITRATE
        coder.set_bitrate(10**9)
        run(coder, rtp(source(src, 2, ts0=99999), seq0=packets[-1][2] + 1), sink, t0=9.0)
        assert coder.stats()["bitrate"] == 800_000
        assert len(sink.pictures) == coder.stats()["frames_out"] == 8


def test_garbage_is_counted_never_raised() -> None:
    coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=W, height=H, jitter_buffer=False)
    rnd = random.Random(7)
    for seq in range(200):
        payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 60)))
        coder.push(payload, seq // 3 * STEP, seq, seq % 3 == 2, seq * 0.01)
    # a "keyframe" that is not VP8 at all
    coder.push(b"\x10\x00" + bytes(rnd.getrandbits(8) for _ in range(500)), 10**6, 200, True, 3.0)
    assert stat(coder, "malformed") > 0 and stat(coder, "frames_in") > 0  # what it made of it: counted
    h264 = VideoTranscoder("h264", "vp8", src_pt=126, dst_pt=96, width=W, height=H)
    for seq in range(200):
        payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 60)))
        h264.push(payload, seq // 3 * STEP, seq, seq % 3 == 2, seq * 0.01)
    h264.push(bytes([0x65]) + bytes(300), 10**6, 200, True, 3.0)  # an IDR slice without SPS/PPS
    assert h264.stats()["frames_out"] == 0
    # and a real stream still goes through afterwards
    sink = Sink("vp8")
    run(h264, rtp(source("h264", 3, ts0=2 * 10**6), seq0=201), sink, t0=4.0)
    assert len(sink.pictures) >= 2


def test_errors() -> None:
    with pytest.raises(CoderError):
        VideoTranscoder("vp9", "h264", src_pt=96, dst_pt=97)
    with pytest.raises(CoderError):
        VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, h264_mode=2)
    with pytest.raises(CoderError):
        VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=161)
    coder = VideoTranscoder("VP8", "H264-BP", src_pt=96, dst_pt=97, width=W, height=H)
    with pytest.raises(CoderError):
        coder.push(b"\x10\x00", 0, 0, True, 0.0, payload_type=100)
    coder.close()
    coder.close()
    assert coder.push(b"\x10\x00", 0, 0, True, 0.0) == []


def test_h264_source_with_b_frames_keeps_presentation_timestamps() -> None:
    """A legacy phone's main-profile H.264 (h264-mp) sends frames in decode order, each with its own
    presentation timestamp (RFC 6184 §5.1): the output follows presentation order."""
    cc = av.CodecContext.create("libx264", "w")
    assert isinstance(cc, av.video.codeccontext.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = W, H, "yuv420p"
    cc.time_base = Fraction(1, 90000)
    cc.framerate = Fraction(30, 1)
    cc.thread_count = 1
    cc.options = {"preset": "veryfast", "profile": "main", "bf": "2", "x264-params": "b-adapt=0:bframes=2"}
    sent: list[tuple[int, list[bytes]]] = []
    frames = [picture(i) for i in range(14)]
    for i, f in enumerate(frames):
        f.pts = i * STEP
    packets = [p for f in frames for p in cc.encode(f)] + list(cc.encode(None))
    for p in packets:
        assert p.pts is not None
        sent.append((p.pts + 7000, packetize_h264(bytes(p), 400)))
    assert [ts for ts, _ in sent] != sorted(ts for ts, _ in sent)  # decode order differs indeed
    coder = VideoTranscoder("h264", "vp8", src_pt=96, dst_pt=97, width=W, height=H, dst_timestamp=0)
    sink = Sink("vp8")
    out: list[tuple[bytes, int, int, bool]] = []
    seq = 0
    for ts, payloads in sent:
        for i, payload in enumerate(payloads):
            out.append((payload, ts, seq, i == len(payloads) - 1))
            seq += 1
    run(coder, out, sink)
    stamps = [f.timestamp for f in sink.frames]
    assert len(stamps) >= 12 and stamps == [stamps[0] + k * STEP for k in range(len(stamps))]

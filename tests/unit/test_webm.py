"""VP8 over RTP into WebM (issue 5 item 6, "video WebM"): the RFC 7741 depacketizer, and a call's
video recorded per leg and decoded back. The VP8 comes from the test pattern's real libvpx encoder and
RFC 7741 packetizer (rtc2sip.services.testpattern)."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path
from typing import IO, Any

import av
import pytest

from rtc2sip.coder.rtp_video import EncodedFrame
from rtc2sip.media.callinfo import CallInfo
from rtc2sip.media.recording import CallRecording
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.tap import CodecInfo, LegCodecs, Tap, TapWorker
from rtc2sip.media.webm import Vp8Reader, WebmWriter, vp8_keyframe_size
from rtc2sip.services.testpattern import PatternGenerator, Vp8Encoder, packetize_vp8

VP8 = CodecInfo("VP8", 90000)
RTX = CodecInfo("rtx", 90000)
PCMU = CodecInfo("PCMU", 8000)
CODECS: LegCodecs = {"audio": {"webrtc": {0: PCMU}, "legacy": {0: PCMU}},
                     "video": {"webrtc": {96: VP8, 97: RTX}, "legacy": {100: VP8}}}
INFO = CallInfo("call-9", caller="sip:alice@example.test", callee="sip:testpattern@example.test",
                caller_call_id="a", callee_call_id="b", caller_leg="webrtc")


def vp8_frames(count: int, width: int = 320, height: int = 180, keyframes: tuple[int, ...] = (0,)) -> list[bytes]:
    gen, enc = PatternGenerator(width, height), Vp8Encoder(width, height, 15)
    out: list[bytes] = []
    for i in range(count):
        out += [data for data, _ in enc.encode(gen.frame(i, time.time()), i, i in keyframes)]
    return out


def rtp_video(frames: list[bytes], *, pt: int = 96, ssrc: int = 7, first_seq: int = 0, first_ts: int = 0,
              max_payload: int = 400) -> list[list[bytes]]:
    """Per frame, its RTP packets (15 fps: 6000 ticks of 90 kHz apart)."""
    seq = first_seq
    out = []
    for i, frame in enumerate(frames):
        payloads = packetize_vp8(frame, i, max_payload)
        packets = []
        for j, p in enumerate(payloads):
            packets.append(build_rtp(pt, seq & 0xFFFF, (first_ts + i * 6000) & 0xFFFFFFFF, ssrc, p,
                                     marker=j == len(payloads) - 1))
            seq += 1
        out.append(packets)
    return out


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as f:
        assert f.streams.video[0].codec_context.name == "vp8"
        return list(f.decode(video=0))


def push_all(d: Vp8Reader, packets: list[bytes], *, flush: bool = True) -> list[EncodedFrame]:
    """The packets 5 ms apart; then what is still held, as at the end of a recording."""
    out = []
    for i, data in enumerate(packets):
        seq, ts, marker = int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"), bool(data[1] & 0x80)
        out += d.push(seq, ts, marker, data[12:], 0.005 * i)
    return out + d.flush() if flush else out


# ---- the reader: jitter buffer, RFC 7741 depacketizer, keyframe gate ----------------------------------------


def test_frames_are_reassembled_across_sequence_wrap() -> None:
    frames = vp8_frames(10)
    d = Vp8Reader()
    got = push_all(d, [p for f in rtp_video(frames, first_seq=65530) for p in f])
    assert [f.data for f in got] == frames
    assert got[0].keyframe and not any(f.keyframe for f in got[1:])
    assert vp8_keyframe_size(got[0].data) == (320, 180)
    assert (d.frames, d.keyframes, d.dropped) == (10, 1, 0)


def test_reordered_packets_within_a_frame_are_put_back_in_order() -> None:
    frames = vp8_frames(3, keyframes=(0, 1))
    packets = rtp_video(frames, max_payload=200)
    second = packets[1]  # (the stream's very first packet defines where its numbering starts)
    assert len(second) >= 3
    got = push_all(Vp8Reader(), [*packets[0], second[1], second[0], *second[2:], *packets[2]])
    assert [f.data for f in got] == frames


def test_a_loss_drops_frames_until_the_next_keyframe() -> None:
    frames = vp8_frames(12, keyframes=(0, 8))
    packets = rtp_video(frames)
    lossy = [p for i, f in enumerate(packets) for j, p in enumerate(f) if not (i == 3 and j == 0)]
    d = Vp8Reader()
    got = push_all(d, lossy)
    # frames 0-2, then nothing decodable until the keyframe 8
    assert [f.data for f in got] == frames[:3] + frames[8:]
    assert d.dropped >= 4  # frame 3 (whole or in part), 4-7 depend on it


def test_a_whole_frame_lost_is_noticed_by_its_sequence_numbers() -> None:
    frames = vp8_frames(6, keyframes=(0, 4))
    packets = rtp_video(frames)
    got = push_all(Vp8Reader(), [p for i, f in enumerate(packets) if i != 2 for p in f])
    assert [f.data for f in got] == frames[:2] + frames[4:]


def test_padding_between_frames_is_not_a_loss() -> None:
    frames = vp8_frames(3)
    packets = rtp_video(frames)
    d = Vp8Reader()
    got = push_all(d, packets[0], flush=False)
    got += d.push(len(packets[0]), 0, False, b"", 0.1)  # Chrome's padding-only packet takes a sequence number
    shifted = rtp_video(frames, first_seq=1)
    got += push_all(d, shifted[1] + shifted[2])
    assert [f.data for f in got] == frames
    assert d.dropped == 0


def test_a_packet_overtaken_across_frames_is_put_back() -> None:
    frames = vp8_frames(4)
    packets = rtp_video(frames, max_payload=200)
    flat = [p for f in packets for p in f]
    late = len(packets[0]) + len(packets[1]) - 1  # the last packet of frame 1 arrives after frame 2
    order = flat[:late] + flat[late + 1:late + 1 + len(packets[2])] + [flat[late]] + flat[late + 1 + len(packets[2]):]
    d = Vp8Reader()
    got = push_all(d, order)
    assert [f.data for f in got] == frames
    assert d.dropped == 0


def test_garbage_never_raises() -> None:
    d = Vp8Reader()
    for i, payload in enumerate((b"\x80", b"\x90\x80", b"\x90\x80\x80", b"\x10" + bytes(20))):
        assert d.push(i + 1, 1, True, payload, 0.0) == []
    assert d.flush() == []
    assert d.malformed == 3  # the last one parses: a frame with no keyframe header, dropped
    assert d.dropped == 1
    assert d.frames == 0


# ---- the WebM file ----------------------------------------------------------------------------------------


def test_webm_writer_output_decodes(tmp_path: Path) -> None:
    frames = vp8_frames(30)
    path = tmp_path / "v.webm"
    writer = WebmWriter(path, lambda p: open(p, "wb"))  # noqa: SIM115 - closed by writer.close()
    for i, data in enumerate(frames):
        writer.write(EncodedFrame(data, (4_294_960_000 + i * 6000) & 0xFFFFFFFF, i == 0, True))  # wraps
    writer.close()
    decoded = decode(path)
    assert len(decoded) == 30
    assert (decoded[0].width, decoded[0].height) == (320, 180)
    assert writer.seconds == pytest.approx(29 / 15, abs=0.01)


@pytest.fixture
async def worker() -> Any:
    w = TapWorker()
    yield w
    await w.shutdown()


async def test_call_video_recorded_per_leg_to_webm(tmp_path: Path, worker: TapWorker) -> None:
    tap = Tap("sess", CODECS)
    rec = CallRecording(worker, tmp_path, "rec", INFO, "sess")
    tap.add(rec)
    now = time.monotonic()
    browser = rtp_video(vp8_frames(20, 320, 180), pt=96, ssrc=1)
    pattern = rtp_video(vp8_frames(25, 640, 360), pt=100, ssrc=2, first_seq=40000)
    for packets in browser:
        for p in packets:
            tap.packet("video", "webrtc", p, now)
    tap.packet("video", "webrtc", build_rtp(97, 5, 0, 3, b"\x00\x01" + b"rtx"), now)  # RTX: not recorded
    pad = bytearray(build_rtp(96, sum(len(f) for f in browser), 0, 1, b"\x00\x00\x00\x04"))
    pad[0] |= 0x20  # RFC 3550 §5.1: padding only, as Chrome probes bandwidth
    tap.packet("video", "webrtc", bytes(pad), now)
    for packets in pattern:
        for p in packets:
            tap.packet("video", "legacy", p, now)
    tap.close()
    await rec.wait_closed(10)

    assert len(decode(tmp_path / "rec-webrtc.webm")) == 20
    legacy = decode(tmp_path / "rec-legacy.webm")
    assert len(legacy) == 25 and (legacy[0].width, legacy[0].height) == (640, 360)
    meta = json.loads((tmp_path / "rec.json").read_text())
    assert meta["error"] is None
    video = meta["legs"]["webrtc"]["video"]
    assert video["file"] == "rec-webrtc.webm" and video["codecs"] == ["VP8/90000"]
    assert (video["frames"], video["keyframes"], video["width"], video["height"]) == (20, 1, 320, 180)
    assert video["skipped"] == 1 and video["frames_dropped"] == 0
    assert meta["legs"]["legacy"]["video"]["frames"] == 25
    assert meta["legs"]["webrtc"]["file"] is None  # no audio came


class FullDisk:
    def __init__(self, room: int) -> None:
        self.room, self.data = room, bytearray()

    def write(self, b: Any) -> int:
        if len(self.data) + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.data += bytes(b)
        return len(b)

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *_: object) -> None:
        pass


async def test_full_disk_ends_the_video_recording(tmp_path: Path, worker: TapWorker) -> None:
    def opener(path: Path) -> IO[bytes]:
        return FullDisk(20_000) if path.suffix == ".webm" else open(path, "wb")  # type: ignore[return-value]

    tap = Tap("sess", CODECS)
    rec = CallRecording(worker, tmp_path, "rec", INFO, "sess", opener=opener)
    tap.add(rec)
    for packets in rtp_video(vp8_frames(60, 640, 360, keyframes=tuple(range(0, 60, 5))), pt=96):
        for p in packets:
            tap.packet("video", "webrtc", p, time.monotonic())  # never raises
    tap.close()
    await rec.wait_closed(10)
    meta = json.loads((tmp_path / "rec.json").read_text())
    assert meta["error"] and ("No space left" in meta["error"] or "Errno" in meta["error"]), meta["error"]


def test_webm_writer_drops_a_picture_written_twice(tmp_path: Path) -> None:
    # one RTP timestamp is one VP8 frame: a second one with it (rebuilt from a late copy) would make a
    # file whose frames a decoder sees 1 ms apart (seen in test_recording_e2e under load)
    frames = vp8_frames(5)
    path = tmp_path / "dup.webm"
    writer = WebmWriter(path, lambda p: open(p, "wb"))  # noqa: SIM115 - closed by writer.close()
    for i, data in enumerate(frames):
        writer.write(EncodedFrame(data, i * 3000, i == 0, True))
        if i == 2:
            writer.write(EncodedFrame(data, i * 3000, False, True))
    writer.close()
    assert writer.frames == 5
    assert len(decode(path)) == 5

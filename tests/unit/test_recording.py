"""Recording and forwarding on the media tap (issue 5 items 6 and 7): synthetic RTP in, WAV/Ogg and
sidecar out; failing disks end the recording, never the caller; RTP forwarded with a player's SDP."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import math
import socket
import time
import wave
from pathlib import Path
from typing import IO, Any

import av
import pytest

from rtc2sip.config import ConfigError, read_options_text
from rtc2sip.media.callinfo import CallInfo, matches_rule
from rtc2sip.media.forward import RtpForward, build_sdp
from rtc2sip.media.plane import MediaPlane
from rtc2sip.media.recording import CallRecording, Recorder
from rtc2sip.media.rtp import RtpPacket, build_rtp
from rtc2sip.media.tap import CodecInfo, LegCodecs, QueuedSink, Tap, TapWorker

PCMU = CodecInfo("PCMU", 8000)
EVENT = CodecInfo("telephone-event", 8000)
CODECS: LegCodecs = {"audio": {"webrtc": {0: PCMU, 126: EVENT}, "legacy": {0: PCMU, 101: EVENT}}}
INFO = CallInfo("call-7", caller="sip:alice@example.test", callee="sip:bob@example.test",
                caller_call_id="a-call-id", callee_call_id="b-call-id", caller_leg="webrtc")


# ---- helpers ------------------------------------------------------------------------------------------


def _ulaw(sample: int) -> int:
    """G.711 µ-law of one 16-bit sample (ITU-T G.711, the classic bias-and-segment form)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def pcmu_packets(hz: float, count: int, *, ssrc: int = 1234, pt: int = 0, first_seq: int = 0,
                 first_ts: int = 0) -> list[bytes]:
    out = []
    for n in range(count):
        payload = bytes(_ulaw(round(8000 * math.sin(2 * math.pi * hz * (n * 160 + i) / 8000))) for i in range(160))
        out.append(build_rtp(pt, first_seq + n, first_ts + n * 160, ssrc, payload))
    return out


def goertzel(samples: list[int], rate: int, hz: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(samples: list[int], rate: int) -> float:
    return max(range(200, min(3800, rate // 2), 10), key=lambda f: goertzel(samples, rate, f))


def read_wav(path: Path) -> tuple[list[int], int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    return [int.from_bytes(raw[i : i + 2], "little", signed=True) for i in range(0, len(raw), 2)], rate


def voiced(samples: list[int], rate: int) -> list[int]:
    frame = rate // 50
    out: list[int] = []
    for i in range(0, len(samples) - frame + 1, frame):
        chunk = samples[i : i + frame]
        if max(abs(x) for x in chunk) > 500:
            out += chunk
    return out


async def finished(rec: QueuedSink) -> None:
    await rec.wait_closed(10)


def record(tmp_path: Path, worker: TapWorker, **kw: Any) -> tuple[Tap, CallRecording]:
    tap = Tap("sess", CODECS)
    rec = CallRecording(worker, tmp_path, "rec", INFO, "sess", **kw)
    tap.add(rec)
    return tap, rec


@pytest.fixture
async def worker() -> Any:
    w = TapWorker()
    yield w
    await w.shutdown()


# ---- recording ------------------------------------------------------------------------------------------


async def test_tap_to_wav_both_legs_with_tones_and_sidecar(tmp_path: Path, worker: TapWorker) -> None:
    tap, rec = record(tmp_path, worker)
    now = time.monotonic()
    browser, phone = pcmu_packets(1000, 100), pcmu_packets(440, 100, ssrc=99)
    for i, (b, p) in enumerate(zip(browser, phone, strict=True)):
        tap.packet("audio", "webrtc", b, now + i * 0.02)
        tap.packet("audio", "legacy", p, now + i * 0.02)
        if i == 50:  # an event on each leg: not audio, skipped
            tap.packet("audio", "webrtc", build_rtp(126, 999, 50 * 160, 1234, b"\x01\x0a\x00\xa0"), now)
    tap.packet("video", "webrtc", build_rtp(96, 1, 1, 5, b"x" * 50), now)  # not recorded
    tap.close()
    await finished(rec)

    for leg, hz in (("webrtc", 1000), ("legacy", 440)):
        samples, rate = read_wav(tmp_path / f"rec-{leg}.wav")
        assert rate == 8000
        assert abs(len(samples) - 100 * 160) <= 160, len(samples)  # 2 s, no gap
        assert abs(dominant(voiced(samples, rate), rate) - hz) <= 10
    meta = json.loads((tmp_path / "rec.json").read_text())
    assert meta["parties"] == {"caller": "sip:alice@example.test", "callee": "sip:bob@example.test"}
    assert meta["call_ids"] == {"caller": "a-call-id", "callee": "b-call-id"}
    assert meta["legs"]["webrtc"]["party"] == "sip:alice@example.test"
    assert meta["legs"]["legacy"]["party"] == "sip:bob@example.test"
    assert meta["legs"]["webrtc"]["packets"] == 101 and meta["legs"]["webrtc"]["decoded"] == 100
    assert meta["legs"]["webrtc"]["skipped"] == 1
    assert meta["legs"]["legacy"]["codecs"] == ["PCMU/8000"]
    assert meta["legs"]["legacy"]["file"] == "rec-legacy.wav"
    assert meta["started"] and meta["ended"] and meta["error"] is None
    assert meta["format"] == "wav"


async def test_gaps_become_silence_and_reordering_is_dropped(tmp_path: Path, worker: TapWorker) -> None:
    tap, rec = record(tmp_path, worker)
    now = time.monotonic()
    first = pcmu_packets(1000, 50)
    after_gap = pcmu_packets(1000, 50, first_seq=100, first_ts=100 * 160)  # 50 packets (1 s) missing
    for i, p in enumerate(first + after_gap):
        tap.packet("audio", "webrtc", p, now + i * 0.02)
    tap.packet("audio", "webrtc", first[10], now + 3)  # late duplicate
    tap.close()
    await finished(rec)
    samples, _ = read_wav(tmp_path / "rec-webrtc.wav")
    assert abs(len(samples) - 150 * 160) <= 160
    assert all(x == 0 for x in samples[50 * 160 + 10 : 100 * 160 - 10])  # the hole is silence
    assert json.loads((tmp_path / "rec.json").read_text())["legs"]["webrtc"]["late"] == 1


async def test_leg_starting_later_is_aligned_with_leading_silence(tmp_path: Path, worker: TapWorker) -> None:
    tap, rec = record(tmp_path, worker)
    now = time.monotonic()
    for i, p in enumerate(pcmu_packets(1000, 100)):
        tap.packet("audio", "webrtc", p, now + i * 0.02)
        if i >= 50:  # the phone starts one second later
            tap.packet("audio", "legacy", pcmu_packets(440, 1, first_seq=i, first_ts=i * 160)[0], now + i * 0.02)
    tap.close()
    await finished(rec)
    samples, _ = read_wav(tmp_path / "rec-legacy.wav")
    assert abs(len(samples) - 100 * 160) <= 160
    assert all(x == 0 for x in samples[: 50 * 160 - 10])


async def test_ogg_opus_recording(tmp_path: Path, worker: TapWorker) -> None:
    tap, rec = record(tmp_path, worker, fmt="ogg")
    now = time.monotonic()
    for i, p in enumerate(pcmu_packets(440, 100)):
        tap.packet("audio", "legacy", p, now + i * 0.02)
    tap.close()
    await finished(rec)
    with av.open(str(tmp_path / "rec-legacy.ogg")) as container:
        assert container.streams.audio[0].codec_context.name in ("opus", "libopus")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        pcm = b"".join(bytes(f.planes[0])[: 2 * f.samples]
                       for frame in container.decode(audio=0) for f in resampler.resample(frame))
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    assert abs(len(samples) - 2 * 48000) < 48000 // 10
    assert abs(dominant(voiced(samples, 48000)[:24000], 48000) - 440) <= 10
    assert not (tmp_path / "rec-webrtc.ogg").exists()  # nothing came from that leg
    assert json.loads((tmp_path / "rec.json").read_text())["legs"]["webrtc"]["file"] is None


class FailingFile(io.RawIOBase):
    """A file that fills up after ``room`` bytes (ENOSPC), as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        if len(self.data) + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.data += bytes(b)
        return len(b)


async def test_full_disk_stops_the_recording_not_the_relay(
    tmp_path: Path, worker: TapWorker, caplog: pytest.LogCaptureFixture
) -> None:
    files: list[FailingFile] = []

    def opener(path: Path) -> IO[bytes]:
        if path.suffix == ".wav":
            files.append(FailingFile(8000))  # header and half a second
            return files[-1]  # type: ignore[return-value]
        return open(path, "wb")

    caplog.set_level(logging.INFO, "rtc2sip.media")
    tap, rec = record(tmp_path, worker, opener=opener)
    now = time.monotonic()
    for i, p in enumerate(pcmu_packets(1000, 100)):
        tap.packet("audio", "webrtc", p, now + i * 0.02)  # never raises
        await asyncio.sleep(0)
    await asyncio.sleep(0.2)
    assert rec.error is not None and "No space left" in rec.error
    assert rec in tap.sinks  # still attached: it just ignores packets now
    for p in pcmu_packets(1000, 10, first_seq=100, first_ts=16000):
        tap.packet("audio", "webrtc", p, now)
    tap.close()
    await finished(rec)
    stopped = [r for r in caplog.records if "recording of call call-7 stopped" in r.getMessage()]
    assert len(stopped) == 1 and stopped[0].levelno == logging.WARNING
    meta = json.loads((tmp_path / "rec.json").read_text())
    assert "No space left" in meta["error"]


async def test_unwritable_directory_stops_the_recording(
    tmp_path: Path, worker: TapWorker, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    tap = Tap("sess", CODECS)
    rec = CallRecording(worker, blocker / "recordings", "rec", INFO, "sess")
    tap.add(rec)
    for p in pcmu_packets(1000, 20):
        tap.packet("audio", "legacy", p, time.monotonic())
    tap.close()
    await finished(rec)
    assert rec.error is not None
    assert sum("stopped (the call goes on)" in r.getMessage() for r in caplog.records) == 1


async def test_a_sink_that_raises_is_detached(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        closed = False

        def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
            raise RuntimeError("bug")

        def codecs_changed(self, codecs: LegCodecs) -> None:
            pass

        def close(self) -> None:
            self.closed = True

        def describe(self) -> dict[str, object]:
            return {}

    tap = Tap("sess")
    broken = Broken()
    tap.add(broken)
    tap.packet("audio", "webrtc", pcmu_packets(1000, 1)[0], 0.0)
    tap.packet("audio", "webrtc", pcmu_packets(1000, 1)[0], 0.0)
    assert tap.sinks == [] and broken.closed
    assert sum("detached" in r.getMessage() for r in caplog.records) == 1


async def test_queue_is_bounded_and_never_blocks(worker: TapWorker) -> None:
    import threading

    gate = threading.Event()

    class Slow(QueuedSink):
        handled = 0

        def handle(self, item: object) -> None:
            gate.wait(5)
            self.handled += 1

    sink = Slow(worker, max_queue=10)
    started = time.monotonic()
    for i in range(1000):
        sink.put(i)
    assert time.monotonic() - started < 0.5
    assert sink.queue_dropped >= 980
    gate.set()
    sink.close()
    await sink.wait_closed(5)
    assert sink.handled == 1000 - sink.queue_dropped


def test_rules() -> None:
    assert matches_rule(("*",), [])
    assert matches_rule(("sip:bob@*",), ["sip:alice@x", "sip:bob@example.test"])
    assert matches_rule(("bob@example.*",), ["sip:Bob@Example.test"])
    assert not matches_rule(("carol@*",), ["sip:alice@x", "sip:bob@y"])


def test_options() -> None:
    o = read_options_text('[recording]\nenabled = true\nrule = ["sip:bob@*"]\ndir = "/var/rec"\nformat = "ogg"\n'
                          '[forward]\nto = "127.0.0.1:5004"\nrule = "all"\n')
    assert o.recording.enabled and o.recording.rule == ("sip:bob@*",) and o.recording.format == "ogg"
    assert o.recording.dir == Path("/var/rec")
    assert o.forward.to == ("127.0.0.1", 5004) and o.forward.rule == ("*",) and o.forward.dir is None
    with pytest.raises(ConfigError, match=r"recording\.format"):
        read_options_text('[recording]\nformat = "mp3"\n')
    with pytest.raises(ConfigError, match=r"forward\.to"):
        read_options_text('[forward]\nto = "localhost"\n')
    with pytest.raises(ConfigError, match="did you mean"):
        read_options_text('[recording]\nenable = true\n')


# ---- forwarding ------------------------------------------------------------------------------------------


def test_sdp_for_players() -> None:
    codecs: LegCodecs = {"audio": {"webrtc": {111: CodecInfo("opus", 48000, 2, "minptime=10;useinbandfec=1"),
                                              126: EVENT},
                                   "legacy": {101: EVENT, 0: PCMU}}}
    sdp = build_sdp("127.0.0.1", 5004, codecs, session_id=1)
    assert "c=IN IP4 127.0.0.1\r\n" in sdp
    assert "m=audio 5004 RTP/AVP 0\r\n" in sdp and "a=rtpmap:0 PCMU/8000\r\n" in sdp
    assert "m=audio 5006 RTP/AVP 111\r\n" in sdp and "a=rtpmap:111 opus/48000/2\r\n" in sdp
    assert "a=fmtp:111 minptime=10;useinbandfec=1\r\n" in sdp
    assert "telephone-event" not in sdp
    assert "m=video" not in sdp


def test_sdp_for_players_with_video() -> None:
    vp8, rtx = CodecInfo("VP8", 90000), CodecInfo("rtx", 90000, fmtp="apt=96")
    codecs: LegCodecs = {"audio": {"webrtc": {0: PCMU}, "legacy": {0: PCMU}},
                         "video": {"webrtc": {96: vp8, 97: rtx}, "legacy": {100: vp8}}}
    sdp = build_sdp("127.0.0.1", 5004, codecs, session_id=1)
    assert "m=video 5008 RTP/AVP 100\r\n" in sdp and "a=rtpmap:100 VP8/90000\r\n" in sdp  # legacy leg
    assert "m=video 5010 RTP/AVP 96\r\n" in sdp and "rtx" not in sdp  # browser leg
    assert sdp.index("m=audio 5004") < sdp.index("m=audio 5006") < sdp.index("m=video 5008")


async def test_forward_sends_plain_rtp_and_writes_the_sdp(tmp_path: Path) -> None:
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    rx[0].bind(("127.0.0.1", 0))
    port = rx[0].getsockname()[1]
    try:
        rx[1].bind(("127.0.0.1", port + 2))
    except OSError:
        pytest.skip("port + 2 taken")
    for s in rx:
        s.settimeout(2)
    tap = Tap("sess", CODECS)
    fwd = RtpForward(("127.0.0.1", port), tmp_path / "call.sdp", INFO, "sess")
    tap.add(fwd)
    sdp = (tmp_path / "call.sdp").read_text()
    assert f"m=audio {port} RTP/AVP 0" in sdp and f"m=audio {port + 2} RTP/AVP 0" in sdp
    now = time.monotonic()
    phone = pcmu_packets(440, 5, ssrc=77)
    for p in phone:
        tap.packet("audio", "legacy", p, now)
    tap.packet("audio", "legacy", build_rtp(101, 5, 800, 77, b"\x01\x0a\x00\xa0"), now)  # not forwarded
    tap.packet("audio", "webrtc", pcmu_packets(1000, 1)[0], now)
    got = [RtpPacket.parse(rx[0].recv(2048)) for _ in range(5)]
    assert [g.payload for g in got] == [RtpPacket.parse(p).payload for p in phone]
    assert len({g.ssrc for g in got}) == 1 and got[0].ssrc != 77
    assert RtpPacket.parse(rx[1].recv(2048)).payload_type == 0
    assert fwd.sent == {"webrtc": 1, "legacy": 5} and fwd.dropped == 1
    tap.close()
    tap.packet("audio", "legacy", phone[0], now)  # after close: nothing, no error
    for s in rx:
        s.close()


# ---- through the media plane ------------------------------------------------------------------------


async def test_plane_records_a_relayed_call(tmp_path: Path) -> None:
    from test_media_plane import GW_CERT, FakeBrowser, Phone, browser_calls_phone, legacy_address, until

    from rtc2sip.config import RecordingOptions, Settings

    plane = MediaPlane(Settings(), GW_CERT, port_range=(42000, 42999))
    recorder = Recorder(RecordingOptions(enabled=True), tmp_path, plane,
                        lambda cid: CallInfo(cid, "sip:a@x", "sip:b@y"))
    plane.recorder = recorder
    plane.on_answered(recorder.answered)
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        assert session in recorder.recordings
        gw_legacy = legacy_address(legacy_offer)
        tone_b, tone_p = pcmu_packets(1000, 50), pcmu_packets(440, 50)
        for i in range(50):
            browser.send_rtp(0, i, RtpPacket.parse(tone_b[i]).payload)
            phone.send_rtp(gw_legacy, 0, i, RtpPacket.parse(tone_p[i]).payload)
            await asyncio.sleep(0.005)
        await until(lambda: len(phone.received) == 50 and len(browser.received) == 50, what="relay")
        st: Any = plane.stats(session)
        assert st["taps"][0]["type"] == "recording"
        rec = recorder.recordings[session]
        await plane.delete(session)  # the call ends: the recording is finalised
        await rec.wait_closed(10)
        await asyncio.sleep(0)
        assert session not in recorder.recordings
        meta = json.loads(rec.sidecar.read_text())
        assert meta["media_session"] == session and meta["parties"]["caller"] == "sip:a@x"
        for leg, hz in (("webrtc", 1000), ("legacy", 440)):
            assert meta["legs"][leg]["decoded"] == 50
            samples, rate = read_wav(tmp_path / meta["legs"][leg]["file"])
            assert abs(dominant(voiced(samples, rate), rate) - hz) <= 10
    finally:
        browser.close()
        phone.close()
        await recorder.close()
        await plane.close()


async def test_sinks_started_mid_call_ask_for_keyframes(tmp_path: Path) -> None:
    """A recording or a forward started on a call in progress asks both video senders for a keyframe
    (the media plane's request_keyframe, when it has one: a fake plane here, recording its calls)."""
    from rtc2sip.config import ForwardOptions, RecordingOptions
    from rtc2sip.media.forward import Forwarder

    class Plane:
        def __init__(self) -> None:
            self.asked: list[tuple[str, bool]] = []
            self.taps: dict[str, Tap] = {}

        def call_id(self, session: str) -> str:
            return "call-7"

        def attach(self, session: str, sink: Any) -> None:
            self.taps.setdefault(session, Tap(session, CODECS)).add(sink)

        def detach(self, session: str, sink: Any) -> bool:
            return self.taps[session].remove(sink)

        def request_keyframe(self, session: str, *, from_webrtc: bool) -> bool:
            self.asked.append((session, from_webrtc))
            if session == "gone":
                raise KeyError(session)
            return True

    plane = Plane()
    worker = TapWorker()
    recorder = Recorder(RecordingOptions(), tmp_path, plane, lambda cid: INFO, worker)  # type: ignore[arg-type]
    rec = recorder.start("s1")
    assert plane.asked == [("s1", True), ("s1", False)]
    forwarder = Forwarder(ForwardOptions(), tmp_path, plane, lambda cid: INFO)  # type: ignore[arg-type]
    fwd = forwarder.start("gone", ("127.0.0.1", 9))  # a failing request never fails the start
    assert plane.asked[2:] == [("gone", True), ("gone", False)]
    assert forwarder.stop("gone") and recorder.stop("s1")
    await rec.wait_closed(10)
    fwd.close()
    await worker.shutdown()


async def test_forward_sends_each_legs_video_to_its_port(tmp_path: Path) -> None:
    vp8 = CodecInfo("VP8", 90000)
    codecs: LegCodecs = {**CODECS, "video": {"webrtc": {96: vp8, 97: CodecInfo("rtx", 90000)},
                                             "legacy": {100: vp8}}}
    for _ in range(20):  # base port, + 4 and + 6 free together
        rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        rx[0].bind(("127.0.0.1", 0))
        port = rx[0].getsockname()[1] - 4
        try:
            rx[1].bind(("127.0.0.1", port + 6))
            break
        except OSError:
            for s in rx:
                s.close()
    else:
        pytest.skip("no free ports")
    try:
        for s in rx:
            s.settimeout(2)
        tap = Tap("sess", codecs)
        fwd = RtpForward(("127.0.0.1", port), tmp_path / "call.sdp", INFO, "sess")
        tap.add(fwd)
        sdp = (tmp_path / "call.sdp").read_text()
        assert f"m=video {port + 4} RTP/AVP 100" in sdp and f"m=video {port + 6} RTP/AVP 96" in sdp
        now = time.monotonic()
        tap.packet("video", "legacy", build_rtp(100, 7, 9000, 55, b"\x90\x80\x80\x01pattern"), now)
        tap.packet("video", "webrtc", build_rtp(97, 8, 9000, 56, b"\x00\x01rtx"), now)  # not the main codec
        tap.packet("video", "webrtc", build_rtp(96, 9, 9000, 57, b"\x90\x80\x80\x01camera"), now)
        legacy, browser = (RtpPacket.parse(s.recv(2048)) for s in rx)
        assert (legacy.payload_type, legacy.payload) == (100, b"\x90\x80\x80\x01pattern")
        assert (browser.payload_type, browser.payload) == (96, b"\x90\x80\x80\x01camera")
        assert fwd.dropped == 1
        tap.close()
    finally:
        for s in rx:
            s.close()

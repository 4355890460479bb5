"""``sip:testpattern@DOMAIN`` with a hand-written UDP phone (issue 5 item 5).

The gateway runs in-process on loopback; the phone calls through its proxy with an audio+video
offer (plain RTP/AVP), receives VP8 RTP, reassembles frames (RFC 7741) and decodes them with PyAV:
the picture has the configured size, two frames a second apart differ where the clock is drawn, a
PLI brings a keyframe, and the audio carries the 1 kHz tone.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from array import array
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings
from rtc2sip.services.testpattern import PatternGenerator, packetize_vp8, parse_vp8_descriptor
from sip_phone import HOST, SipPhone, udp_socket


class Phone(SipPhone):
    def invite(self, user: str, audio_port: int, video_port: int, gw: int) -> None:  # type: ignore[override]
        super().invite(user, f"m=audio {audio_port} RTP/AVP 8 0 101\na=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\n"
                       "a=rtpmap:101 telephone-event/8000\na=sendrecv\n"
                       f"m=video {video_port} RTP/AVPF 100 96 97\na=rtpmap:100 H264/90000\n"
                       "a=rtpmap:96 VP8/90000\na=rtcp-fb:96 nack pli\na=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\n"
                       "a=rtcp-mux\na=sendrecv\n", gw)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = Settings(listeners=(Listener("udp", HOST, 0),), gateway=GatewayOptions(data_dir=tmp_path))
    gw = Gateway(settings)
    await gw.start()
    yield gw
    await gw.stop()


def udp_port(gw: Gateway) -> int:
    return next(la.port for la in gw.listening if la.transport == "udp")


class VideoReceiver:
    """Reassembles RFC 7741 frames (by timestamp, marker ends one) and decodes them."""

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("vp8", "r")
        self.parts: list[bytes] = []
        self.ts: int | None = None
        self.frames: list[tuple[float, av.VideoFrame, bool]] = []  # arrival, frame, keyframe
        self.packets = 0
        self.payload_types: set[int] = set()
        self.max_size = 0

    def packet(self, data: bytes, now: float) -> None:
        self.packets += 1
        self.max_size = max(self.max_size, len(data))
        marker, pt = data[1] >> 7, data[1] & 0x7F
        self.payload_types.add(pt)
        ts = struct.unpack_from("!I", data, 4)[0]
        payload = data[12:]
        start, n, _pid = parse_vp8_descriptor(payload)
        if start:
            self.parts, self.ts = [], ts
        if self.ts != ts:
            return  # lost the start of this frame
        self.parts.append(payload[n:])
        if marker:
            frame = b"".join(self.parts)
            self.parts, self.ts = [], None
            key = not frame[0] & 1  # RFC 6386 §9.1: P bit 0 = key frame
            for f in self.decoder.decode(av.Packet(frame)):
                assert isinstance(f, av.VideoFrame)
                self.frames.append((now, f, key))


def luma_box(frame: av.VideoFrame, box: tuple[int, int, int, int]) -> bytes:
    x, y, w, h = box
    plane = frame.planes[0]
    data = bytes(plane)
    return b"".join(data[r * plane.line_size + x:r * plane.line_size + x + w] for r in range(y, y + h))


def goertzel(samples: list[int], rate: int, freq: float) -> float:
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def test_packetize_vp8_fragments_with_descriptor() -> None:
    frame = bytes(range(256)) * 10  # 2560 bytes
    payloads = packetize_vp8(frame, 0x1234, max_payload=1200)
    assert [len(p) for p in payloads] == [1200, 1200, 4 + 2560 - 2 * 1196]
    assert [parse_vp8_descriptor(p) for p in payloads] == [(True, 4, 0x1234), (False, 4, 0x1234), (False, 4, 0x1234)]
    assert b"".join(p[4:] for p in payloads) == frame


async def test_testpattern_sends_vp8_with_a_running_clock_and_a_tone(gateway: Gateway) -> None:
    gw = udp_port(gateway)
    phone, audio, video = Phone(), udp_socket(), udp_socket()
    loop = asyncio.get_running_loop()
    try:
        phone.invite("testpattern", audio.getsockname()[1], video.getsockname()[1], gw)
        answer = await phone.answered()
        phone.in_dialog("ACK", gw)
        a, v = answer.media
        assert a.payload_types[0] == 8 and a.codecs[0].name == "PCMA"  # first offered codec it can encode
        assert v.payload_types == [96] and v.codecs[0].name == "VP8"  # VP8, not the H264 offered first
        assert a.connection is not None and v.connection is not None
        video_dest = (v.connection.host, v.port)

        rx = VideoReceiver()
        audio_payloads: list[bytes] = []
        audio_pts: set[int] = set()
        pli_sent_at: float | None = None
        start = time.monotonic()

        async def read_video() -> None:
            nonlocal pli_sent_at
            while time.monotonic() - start < 3.5:
                data = await asyncio.wait_for(loop.sock_recv(video, 65535), 2.0)
                now = time.monotonic()
                if 191 < data[1] < 224:
                    continue
                rx.packet(data, now)
                if pli_sent_at is None and now - start > 2.5:
                    # RFC 4585 PLI on the muxed RTP port: a keyframe comes at once, not at the 2 s tick
                    ssrc = struct.unpack_from("!I", data, 8)[0]
                    video.sendto(struct.pack("!BBHII", 0x81, 206, 2, 0x01020304, ssrc), video_dest)
                    pli_sent_at = now

        async def read_audio() -> None:
            while time.monotonic() - start < 3.5:
                data = await asyncio.wait_for(loop.sock_recv(audio, 2048), 2.0)
                audio_pts.add(data[1] & 0x7F)
                audio_payloads.append(data[12:])

        await asyncio.gather(read_video(), read_audio())
        phone.in_dialog("BYE", gw)
        assert (await phone.expect("SIP/2.0 200")).cseq.method == "BYE"
    finally:
        phone.close()
        audio.close()
        video.close()

    # video: 640x360 VP8 at about 15 fps, in packets no larger than a 1200-byte payload allows
    assert rx.payload_types == {96}
    assert rx.max_size <= 12 + 1200
    assert len(rx.frames) >= 40, len(rx.frames)
    first_at, first, first_key = rx.frames[0]
    assert first_key
    assert (first.width, first.height) == (640, 360)
    later = next((f for at, f, _ in rx.frames if at - first_at >= 1.0), None)
    assert later is not None
    box = PatternGenerator(640, 360).clock_box
    assert luma_box(first, box) != luma_box(later, box)  # the clock moved
    # keyframes: at the start, every 2 s, and right after the PLI
    keys = [at - first_at for at, _, key in rx.frames if key]
    assert pli_sent_at is not None
    assert any(0 <= at - (pli_sent_at - first_at) < 0.3 for at in keys), (keys, pli_sent_at - first_at)

    # audio: PCMA, 20 ms packets, a 1 kHz tone
    assert audio_pts == {8}
    assert len(audio_payloads) >= 100 and {len(p) for p in audio_payloads} == {160}
    dec = av.CodecContext.create("pcm_alaw", "r")
    assert isinstance(dec, av.AudioCodecContext)
    dec.sample_rate = 8000
    dec.layout = "mono"
    samples: list[int] = []
    for p in audio_payloads[:50]:
        for f in dec.decode(av.Packet(p)):
            samples.extend(array("h", bytes(f.planes[0]))[: f.samples])
    rms = math.sqrt(sum(x * x for x in samples) / len(samples))
    assert rms > 3000, rms
    powers = {hz: goertzel(samples, 8000, hz) for hz in (440, 800, 1000, 1200, 2000)}
    assert max(powers, key=lambda hz: powers[hz]) == 1000, powers

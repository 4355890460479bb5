"""The Media Coder's audio core: tones through Opus ⇄ G.711/G.722, re-framing, loss, DTMF, CN, pool."""

from __future__ import annotations

import array
import asyncio
import math
import struct
import threading
import time

import av
import av.audio.codeccontext
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc2sip.coder import CODECS, AudioTranscoder, CoderBusy, CoderError, CoderPool, DtmfMapper, OutPacket
from rtc2sip.coder.audiocodec import libopus_available

# -- signals -------------------------------------------------------------------------------------


def tone(freq: float, rate: int, n: int, start: int = 0, amp: int = 8000) -> bytes:
    return array.array("h", [int(amp * math.sin(2 * math.pi * freq * (start + i) / rate)) for i in range(n)]).tobytes()


def samples(pcm: bytes) -> array.array[int]:
    return array.array("h", pcm)


def rms(x: array.array[int]) -> float:
    return math.sqrt(sum(v * v for v in x) / max(1, len(x)))


def goertzel(x: array.array[int] | list[int], rate: int, freq: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(x: array.array[int] | list[int], rate: int, top: int) -> float:
    """The strongest frequency on a 20 Hz grid: a tone that survived must win by far."""
    return max(range(100, top, 20), key=lambda f: goertzel(x, rate, f))


def steady(x: array.array[int], rate: int) -> list[int]:
    """0.2 s from the middle of a signal: past codec delay and start-up, before the end."""
    mid = len(x) // 2
    return list(x[mid - rate // 10 : mid + rate // 10])


# -- reference codecs (PyAV, independent of the transcoder) -----------------------------------------


def context(name: str, mode: str, rate: int) -> av.audio.codeccontext.AudioCodecContext:
    ctx = av.CodecContext.create(name, "r" if mode == "r" else "w")
    assert isinstance(ctx, av.audio.codeccontext.AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "mono"
    if mode == "w":
        ctx.format = "s16"
    return ctx


def frame(pcm: bytes, rate: int, pts: int) -> av.AudioFrame:
    f = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
    f.planes[0].update(pcm)
    f.sample_rate = rate
    f.pts = pts
    return f


def encode_stream(name: str, rate: int, pcm: bytes, ptime_ms: int, **options: str) -> list[bytes]:
    ctx = context(name, "w", rate)
    n = rate * ptime_ms // 1000
    opts = {"frame_size": str(n)}
    if name == "libopus":
        ctx.bit_rate = 32000
        opts = {"application": "voip", "frame_duration": str(ptime_ms), **options}
    ctx.options = opts
    ctx.open()
    out = []
    for i in range(len(pcm) // (2 * n)):
        packets = ctx.encode(frame(pcm[2 * n * i : 2 * n * (i + 1)], rate, i * n))
        out.append(b"".join(bytes(p) for p in packets))
    return out


def decode_stream(name: str, rate: int, payloads: list[bytes]) -> array.array[int]:
    ctx = context(name, "r", rate)
    ctx.open()
    out = array.array("h")
    for p in payloads:
        for f in ctx.decode(av.Packet(p)):
            out.frombytes(bytes(f.planes[0])[: 2 * f.samples])
    return out


def ulaw_decode(data: bytes) -> array.array[int]:
    """G.711 µ-law expansion (ITU-T G.711 table), independent of FFmpeg."""
    out = array.array("h")
    for b in data:
        b = ~b & 0xFF
        t = ((b & 0x0F) << 3) + 0x84
        t <<= (b & 0x70) >> 4
        out.append(0x84 - t if b & 0x80 else t - 0x84)
    return out


def run(coder: AudioTranscoder, payloads: list[bytes], step: int, *, drop: frozenset[int] = frozenset(),
        start_seq: int = 0) -> list[OutPacket]:  # fmt: skip
    out: list[OutPacket] = []
    for i, p in enumerate(payloads):
        if i in drop:
            continue
        out += coder.push(p, 1000 + i * step, (start_seq + i) & 0xFFFF, i == 0, i * step / 48000)
    return out


def assert_continuous(out: list[OutPacket], base: int, step: int) -> None:
    assert [p.timestamp for p in out] == [(base + k * step) & 0xFFFFFFFF for k in range(len(out))]


# -- tones through each pair ----------------------------------------------------------------------


def test_pcmu_tone_to_opus_and_back() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 8000), 20)
    coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_timestamp=5000)
    out = run(coder, pcmu, 160)
    assert len(out) == 50
    assert_continuous(out, 5000, 960)  # 20 ms at Opus's 48 kHz RTP clock (RFC 7587 §4.1)
    assert [p.marker for p in out[:3]] == [True, False, False] and {p.payload_type for p in out} == {111}
    decoded = decode_stream("libopus", 48000, [p.payload for p in out])
    x = steady(decoded, 48000)[::6]  # narrowband content: every 6th sample is an 8 kHz signal
    assert dominant(x, 8000, 3900) == pytest.approx(1000, abs=20)
    assert 0.6 < rms(array.array("h", x)) / rms(samples(tone(1000, 8000, 1600))) < 1.5


def test_opus_440_to_pcmu_decoded_with_the_ulaw_table() -> None:
    opus = encode_stream("libopus", 48000, tone(440, 48000, 48000), 20)
    coder = AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0, dst_timestamp=0xFFFFFF00)
    out = run(coder, opus, 960)
    assert len(out) == 50 and all(len(p.payload) == 160 for p in out)
    assert_continuous(out, 0xFFFFFF00, 160)  # wraps at 2^32
    pcm = ulaw_decode(b"".join(p.payload for p in out))
    x = steady(pcm, 8000)
    assert dominant(x, 8000, 3900) == pytest.approx(440, abs=20)
    assert 0.6 < rms(array.array("h", x)) / 8000 * math.sqrt(2) < 1.5


def test_opus_to_pcma() -> None:
    opus = encode_stream("libopus", 48000, tone(700, 48000, 48000), 20)
    out = run(AudioTranscoder("opus", "pcma", src_pt=111, dst_pt=8, dst_timestamp=0), opus, 960)
    assert dominant(steady(decode_stream("pcm_alaw", 8000, [p.payload for p in out]), 8000), 8000, 3900) == \
        pytest.approx(700, abs=20)  # fmt: skip


def test_opus_to_g722_keeps_wideband() -> None:
    opus = encode_stream("libopus", 48000, tone(5000, 48000, 48000), 20)
    coder = AudioTranscoder("opus", "g722", src_pt=111, dst_pt=9, dst_timestamp=0)
    out = run(coder, opus, 960)
    # G.722 samples at 16 kHz but its RTP clock is 8000 (RFC 3551 §4.5.2): 20 ms = 160 ticks, 160 bytes.
    assert len(out) == 50 and all(len(p.payload) == 160 for p in out)
    assert_continuous(out, 0, 160)
    x = steady(decode_stream("g722", 16000, [p.payload for p in out]), 16000)
    assert dominant(x, 16000, 7900) == pytest.approx(5000, abs=20)


def test_g722_wideband_tone_to_opus() -> None:
    g722 = encode_stream("g722", 16000, tone(5000, 16000, 16000), 20)
    coder = AudioTranscoder("g722", "opus", src_pt=9, dst_pt=111, dst_timestamp=0)
    out = run(coder, g722, 160)
    assert len(out) == 50
    assert_continuous(out, 0, 960)
    x = steady(decode_stream("libopus", 48000, [p.payload for p in out]), 48000)[::3]
    assert dominant(x, 16000, 7900) == pytest.approx(5000, abs=20)


def test_opus_maxrate_caps_the_encoder_bandwidth() -> None:
    """maxplaybackrate 8000 (RFC 7587 §6.1): G.722's 5 kHz tone must not reach the browser."""
    g722 = encode_stream("g722", 16000, tone(5000, 16000, 16000), 20)
    out = run(AudioTranscoder("g722", "opus", src_pt=9, dst_pt=111, opus_maxrate=8000, dst_timestamp=0), g722, 160)
    assert len(out) == 49  # 16 → 8 kHz through swresample, which holds back its filter's few samples
    assert_continuous(out, 0, 960)
    x = steady(decode_stream("libopus", 48000, [p.payload for p in out]), 48000)
    assert rms(array.array("h", x)) < 800


# -- re-framing (RFC 3551 §4.5: any ptime the peer asks for) -------------------------------------------


def test_reframe_opus_10ms_to_pcmu_30ms() -> None:
    opus = encode_stream("libopus", 48000, tone(440, 48000, 14400), 10)  # 30 packets of 480 ticks
    coder = AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0, dst_ptime_ms=30, dst_timestamp=7)
    out: list[OutPacket] = []
    for i, p in enumerate(opus):
        out += coder.push(p, 480 * i, i, False, i / 100)
        assert len(out) == (i + 1) // 3  # a 30 ms packet as soon as three 10 ms ones are in
    assert len(out) == 10 and all(len(p.payload) == 240 for p in out)
    assert_continuous(out, 7, 240)


def test_reframe_pcmu_60ms_to_opus_20ms() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 4800), 60)  # 10 packets of 480 ticks
    coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_ptime_ms=20, dst_timestamp=0)
    for i, p in enumerate(pcmu):
        out = coder.push(p, 480 * i, i, False, i * 0.06)
        assert [o.timestamp for o in out] == [2880 * i, 2880 * i + 960, 2880 * i + 1920]
    assert coder.stats.packets_out == 30


def test_opus_ptime_must_be_an_opus_frame_size() -> None:
    with pytest.raises(CoderError):
        AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_ptime_ms=30)
    with pytest.raises(CoderError):
        AudioTranscoder("pcmu", "g729", src_pt=0, dst_pt=18)
    assert set(CODECS) == {"opus", "pcmu", "pcma", "g722"}


# -- loss, silence, comfort noise --------------------------------------------------------------------


@pytest.mark.parametrize(("fec", "libopus"), [(True, True), (False, True), (False, False)])
def test_lost_opus_packet_is_concealed_without_a_timestamp_jump(fec: bool, libopus: bool) -> None:
    if libopus and not libopus_available():
        pytest.skip("no loadable libopus")
    opus = encode_stream("libopus", 48000, tone(440, 48000, 48000), 20, fec="1", packet_loss="20")
    coder = AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0, opus_fec=fec, use_libopus=libopus, dst_timestamp=0)
    out = run(coder, opus, 960, drop=frozenset({20, 30, 31}), start_seq=65530)  # across the sequence wrap
    # 47 packets in, 3 concealed: 50 frames of 20 ms (PyAV decodes at 48 kHz, and the resampler to
    # 8 kHz holds back a few samples: one frame fewer so far).
    assert len(out) == (50 if libopus else 49)
    assert_continuous(out, 0, 160)
    assert coder.stats.lost == 3 and coder.stats.concealed_ms == pytest.approx(60)
    assert coder.stats.fec_frames == (2 if fec else 0)  # FEC restores the last lost frame of each hole
    assert coder.stats.discontinuities == 0 and not any(p.marker for p in out[1:])
    concealed = ulaw_decode(out[20].payload)
    assert rms(concealed) > 500  # PLC/FEC continue the tone rather than going silent


def test_silence_suppression_moves_the_timeline_and_marks_the_talkspurt() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 1600), 20)
    coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_timestamp=0)
    first = coder.push(pcmu[0], 0, 1, True, 0.0)
    # Same sequence run, timestamp 1 s later: DTX (RFC 3551 §4.1), not loss.
    second = coder.push(pcmu[1], 8000 + 160, 2, True, 1.02)
    assert [p.timestamp for p in first + second] == [0, 48960]
    assert second[0].marker and coder.stats.lost == 0 and coder.stats.concealed_ms == 0


def test_comfort_noise_passes_through_or_is_dropped() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 1600), 10)
    cn = bytes((40, 0x10, 0x20))  # noise level + spectral coefficients (RFC 3389 §3)
    passing = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_cn_pt=13, dst_timestamp=0)
    out = passing.push(pcmu[0], 0, 1, True, 0.0)
    assert out == []  # 10 ms in, 20 ms frames out
    out = passing.push(cn, 80, 2, False, 0.01, payload_type=13)
    # The half-full frame is padded and sent, then CN at the next position on the Opus clock.
    assert [(p.payload_type, p.timestamp) for p in out] == [(111, 0), (13, 960)]
    assert out[1].payload == cn
    out = passing.push(pcmu[1], 4000, 3, False, 0.5) + passing.push(pcmu[2], 4080, 4, False, 0.51)
    assert len(out) == 1 and out[0].marker and out[0].timestamp == 960 + (4000 - 80) * 6
    assert passing.stats.lost == 0 and passing.stats.cn_in == 1

    dropping = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_timestamp=0)
    assert dropping.push(cn, 0, 1, False, 0.0, payload_type=13) == []
    with pytest.raises(CoderError):
        dropping.push(pcmu[0], 0, 2, False, 0.0, payload_type=96)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_garbage_never_crashes(payloads: list[bytes]) -> None:
    for src, pt in (("opus", 111), ("pcmu", 0), ("g722", 9)):
        dst = "pcmu" if src == "opus" else "opus"
        coder = AudioTranscoder(src, dst, src_pt=pt, dst_pt=0, dst_timestamp=0)
        for i, p in enumerate(payloads):
            for packet in coder.push(p, i * 960, i, False, i * 0.02):
                assert isinstance(packet.payload, bytes) and packet.payload
        coder.close()


def test_invalid_opus_counts_as_lost() -> None:
    opus = encode_stream("libopus", 48000, tone(440, 48000, 9600), 20)
    coder = AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0, dst_timestamp=0)
    out: list[OutPacket] = []
    for i, p in enumerate(opus):
        out += coder.push(b"\xff" if i == 4 else p, i * 960, i, False, i * 0.02)  # code 3 with no count byte
    assert coder.stats.invalid == 1 and coder.stats.lost == 1
    assert_continuous(out, 0, 160)
    assert len(out) == 10


def test_late_and_duplicate_packets_are_dropped() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 800), 20)
    coder = AudioTranscoder("pcmu", "pcmu", src_pt=0, dst_pt=0, dst_timestamp=0)
    assert len(coder.push(pcmu[0], 0, 10, False, 0.0)) == 1
    assert len(coder.push(pcmu[2], 320, 12, False, 0.04)) == 2  # seq 11 concealed (silence for G.711)
    assert coder.push(pcmu[1], 160, 11, False, 0.05) == [] and coder.push(pcmu[2], 320, 12, False, 0.05) == []
    assert coder.stats.late == 2


# -- RFC 4733 telephone-events -----------------------------------------------------------------------


def event(code: int, end: bool, duration: int) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)


def test_dtmf_8000_to_48000_and_back() -> None:
    up = DtmfMapper(101, 8000, 110, 48000, dst_timestamp=1000)
    packets = [(event(5, False, 160), True), (event(5, False, 320), False)] + [(event(5, True, 480), False)] * 3
    out = [p for payload, marker in packets for p in up.map(payload, 4000, marker)]
    assert {p.timestamp for p in out} == {1000} and {p.payload_type for p in out} == {110}
    assert [struct.unpack("!BBH", p.payload)[2] for p in out] == [960, 1920, 2880, 2880, 2880]
    assert [p.marker for p in out] == [True, False, False, False, False]
    assert struct.unpack("!BBH", out[-1].payload)[:2] == (5, 0x80 | 10)
    nxt = up.map(event(7, False, 160), 4000 + 8000, True)
    assert nxt[0].timestamp == 1000 + 48000  # the next event one second later on the 48 kHz clock

    down = DtmfMapper(110, 48000, 101, 8000, dst_timestamp=0)
    back = down.map(event(1, True, 2880), 123456, True) + down.map(event(1, False, 65535), 123456 + 9600, True)
    assert [struct.unpack("!BBH", p.payload)[2] for p in back] == [480, 10922]
    assert [p.timestamp for p in back] == [0, 1600]
    assert down.map(b"\x01\x02\x03", 0, False) == []


def test_dtmf_follows_the_transcoded_audio_timeline() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 1600), 20)
    coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_timestamp=90000)
    audio = [p for i in range(5) for p in coder.push(pcmu[i], 8000 + 160 * i, i, False, i * 0.02)]
    mapper = DtmfMapper(101, 8000, 110, 48000)
    ev = mapper.map(event(3, False, 160), 8000 + 160 * 5, True, timeline=coder.dst_timestamp)
    assert ev[0].timestamp == audio[-1].timestamp + 960  # where the next audio frame would start


def test_events_in_the_audio_stream_are_remapped_and_not_lost_audio() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 1600), 20)
    coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, src_dtmf_pt=101, dst_dtmf_pt=110, dst_timestamp=0)
    out = coder.push(pcmu[0], 0, 1, True, 0.0) + coder.push(pcmu[1], 160, 2, False, 0.02)
    # An event from 320 for 3 packets (same sequence space, RFC 4733 §2.1), then audio again at 800.
    events = [coder.push(event(9, i == 2, 160 * (i + 1)), 320, 3 + i, i == 0, 0.04 + i / 50, payload_type=101)
              for i in range(3)]  # fmt: skip
    assert [e[0].timestamp for e in events] == [1920] * 3 and {e[0].payload_type for e in events} == {110}
    assert [struct.unpack("!BBH", e[0].payload)[2] for e in events] == [960, 1920, 2880]
    out += coder.push(pcmu[2], 800, 6, False, 0.1)
    assert [p.timestamp for p in out] == [0, 960, 4800] and out[2].marker
    assert coder.stats.lost == 0 and coder.stats.concealed_ms == 0 and coder.stats.dtmf_in == 3


# -- cost -----------------------------------------------------------------------------------------------


def test_cpu_per_20ms_frame(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed, not asserted (PERFORMANCE.md: Opus→PCMU 43 µs; PCMU→Opus 72-194 µs by complexity)."""
    n = 500
    opus = encode_stream("libopus", 48000, tone(440, 48000, 48000), 20)
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 8000), 20)
    lines = []
    cases: list[tuple[str, AudioTranscoder, list[bytes], int]] = [
        ("opus->pcmu (libopus)", AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0), opus, 960),
        ("opus->pcmu (PyAV)", AudioTranscoder("opus", "pcmu", src_pt=111, dst_pt=0, use_libopus=False), opus, 960),
    ]
    for complexity in (0, 5, 10):
        coder = AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, opus_complexity=complexity)
        cases.append((f"pcmu->opus (complexity {complexity})", coder, pcmu, 160))
    for name, coder, payloads, step in cases:
        start = time.process_time()
        for i in range(n):
            coder.push(payloads[i % len(payloads)], i * step, i & 0xFFFF, False, i * 0.02)
        lines.append(f"{name}: {(time.process_time() - start) / n * 1e6:.0f} µs per 20 ms frame")
    with capsys.disabled():
        print("\n" + "\n".join(lines))


# -- worker pool -----------------------------------------------------------------------------------------


def coder_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rtc2sip-coder")]


async def test_pool_keeps_order_bounds_sessions_and_joins_its_threads() -> None:
    pcmu = encode_stream("pcm_mulaw", 8000, tone(1000, 8000, 8000), 20)
    pool = CoderPool(max_sessions=2, workers=2, max_pending=100)

    def factory() -> AudioTranscoder:
        return AudioTranscoder("pcmu", "opus", src_pt=0, dst_pt=111, dst_timestamp=0)

    one = await pool.open(to_webrtc=factory)
    two = await pool.open(to_webrtc=factory)
    with pytest.raises(CoderBusy) as busy:
        await pool.open(to_webrtc=factory)
    assert busy.value.status == 488 and pool.active == 2
    # Submitted without awaiting in between: results come back in submission order per session.
    futures = [pool.submit(s, "to_webrtc", p, i * 160, i, False, i * 0.02) for i, p in enumerate(pcmu)
               for s in (one, two)]  # fmt: skip
    results = await asyncio.gather(*futures)
    for offset in (0, 1):
        out = [p for r in results[offset::2] for p in r]
        assert_continuous(out, 0, 960)
        assert len(out) == 50
    assert one.pending == 0 and one.coder("to_webrtc") is not two.coder("to_webrtc")
    await pool.close(one)
    three = await pool.open(to_webrtc=factory)  # the slot is free again
    assert await pool.submit(one, "to_webrtc", pcmu[0], 0, 0, False, 0.0) == []  # closed: dropped
    assert len(coder_threads()) == 2
    await pool.shutdown()
    assert coder_threads() == [] and pool.active == 0 and three.closed
    with pytest.raises(CoderError):
        await pool.open(to_webrtc=factory)


async def test_pool_drops_beyond_max_pending() -> None:
    gate = threading.Event()

    class Slow:
        def push(self, payload: bytes, timestamp: int, seq: int, marker: bool, arrival: float,
                 payload_type: int | None = None) -> list[OutPacket]:  # fmt: skip
            gate.wait(5)
            return [OutPacket(payload, timestamp, marker, 0)]

        def close(self) -> None:
            pass

    pool = CoderPool(max_sessions=2, workers=1, max_pending=3)
    session = await pool.open(a=Slow)
    futures = [pool.submit(session, "a", bytes((i,)), i, i, False, 0.0) for i in range(5)]
    assert session.dropped == 2
    video = await pool.open(max_pending=5, a=Slow)  # a session's own bound (video keyframe bursts)
    more = [pool.submit(video, "a", bytes((i,)), i, i, False, 0.0) for i in range(7)]
    assert video.dropped == 2 and session.dropped == 2
    gate.set()
    assert [r[0].timestamp if r else None for r in await asyncio.gather(*futures)] == [0, 1, 2, None, None]
    assert [r[0].timestamp if r else None for r in await asyncio.gather(*more)] == [0, 1, 2, 3, 4, None, None]
    await pool.shutdown()
    assert coder_threads() == []

#!/usr/bin/env python3
"""Media Coder bench (issue 4): transcoded calls and video streams per core, against rtpengine and ffmpeg.

Not a test: it prints figures, then ratios.

**Audio: Opus ⇄ PCMU calls per core.** The same harness as bench/relay.py (whose code this reuses:
gateway processes, stepping, measurement, the generator's signalling/ICE/DTLS/SRTP): the gateway alone
on core 1, the load generator on core 0. Each call's browser offers Opus only (``opus/48000/2``, in-band
FEC) and sends a pre-encoded 20 ms Opus sequence of a 440 Hz tone (encoded once with PyAV at start,
then replayed: the generator does no codec work); the phone answers PCMU only and sends a 400 Hz tone.
So every packet each way is transcoded: Opus → PCMU toward the phone, PCMU → Opus toward the browser,
100 transcoded packets/s per call.

- rtc2sip: its MediaPlane with ``enable-media-coder`` on and a CoderPool as rtc2sip.app builds it
  (``[limits] max_transcoded_calls = 0``: no limit, the bench finds it).
- rtpengine 10.5 userspace, NG ``offer`` with ``codec: {transcode: [PCMU], mask: [all]}`` (the
  ``codec-transcode-PCMU`` / ``codec-mask-all`` flags of Kamailio): the phone is offered PCMU only,
  the browser's Opus is still accepted and transcoded.

Transcoded payloads cannot carry the generator's send-time marks, so each direction of each call is
tracked by RTP timestamp instead: the k-th output frame after the first one received is input
``anchor + k``, where ``anchor`` is the tightest causal bound seen (an output cannot leave before its
input was sent; exact as soon as one packet of the call came through in under 20 ms, i.e. during the
warm-up). Loss and one-way latency then follow as in bench/relay.py: packets sent in the window that
never came out, and send → receive time through the gateway (its whole added latency: decode, encode,
queueing). CPU µs per transcoded packet are the gateway's (all threads) over the packets sent both ways.

**Video: VP8 → H.264 640x480 at 30 frames/s.** rtc2sip's VideoTranscoder (rtc2sip.coder.video) run
as the gateway runs it, RTP payloads in and out: jitter buffer, RFC 7741 depacketization, FFmpeg's vp8
decoder, libx264 constrained baseline ultrafast/zerolatency at 1 Mbit/s, RFC 6184 packetization (the
input is packetized before the clock starts: that is the sender's work). Against the ``ffmpeg`` command
line doing the same conversion, and PyAV's decode + encode alone (to show what RTP costs), each one
thread in one process pinned to core 1. The input is a 640x480@30 VP8 stream made with ffmpeg's
testsrc2 (libvpx, 1 Mbit/s). Streams per core = frames per CPU second / 30. No sockets, no SRTP: the
relay's per-packet cost is bench/relay.py's.

    python bench/coder.py                  # ~10 min: audio steps for both gateways, then video
    python bench/coder.py --quick          # < 3 min: a few steps, shorter windows, one video round

Needs rtpengine (Debian rtpengine-daemon, built with transcoding: ``rtpengine --codecs`` lists opus
and PCMU as "fully supported"), ffmpeg with libvpx and libx264, taskset. Everything runs on
127.0.0.1; every process it starts is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import loadgen
import relay
from loadgen import Address, Call, RtpengineControl

from rtc2sip.media.srtp import SrtpError

HERE = Path(__file__).resolve().parent
RING = 512  # send times kept per direction of a call: 10.24 s at 20 ms
MASK = RING - 1
OPUS_PT = 111
OPUS_STEP = 960  # RTP timestamp units per 20 ms: Opus 48 kHz clock (RFC 7587 §4.1)
PCMU_STEP = 160
LOOP_FRAMES = 50  # 1 s of tone, replayed
STEPS = "10,25,40,50,60,70,80,90,100,125,150,200,300"
QUICK_STEPS = "10,25,50,100"


# -- audio: the load generator (runs as ``coder.py --loadgen``) ------------------------------------------


class Track:
    """One direction of one call: send times by input count, and the output-timestamp → input map."""

    __slots__ = ("anchor", "count", "last_seq", "last_ts", "received", "step", "times", "ts0")

    def __init__(self, step: int) -> None:
        self.step = step
        self.times = [0] * RING
        self.count = 0  # packets sent
        self.ts0: int | None = None  # first output timestamp received
        self.anchor: int | None = None  # input count of the output whose timestamp is ts0
        self.last_seq = self.last_ts = 0
        self.received = 0


class CoderCall(Call):
    __slots__ = ("b_track", "p_track", "pcmu_pt")

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.b_track = Track(PCMU_STEP)  # browser → phone: PCMU frames come out
        self.p_track = Track(OPUS_STEP)  # phone → browser: Opus frames come out
        self.pcmu_pt = 0


class TranscodeNg(RtpengineControl):
    """rtpengine's transcoding: the phone is offered PCMU only, the browser's Opus stays accepted."""

    extra_offer: dict[str, Any] = {"codec": {"transcode": ["PCMU"], "mask": ["all"]}}


def _tone_frames(codec: str, rate: int, hz: int, frame: int) -> list[bytes]:
    """LOOP_FRAMES payloads of a sine (a whole number of periods per loop, so the replay is seamless)."""
    import math
    import struct

    import av

    ctx: Any = av.CodecContext.create(codec, "w")
    ctx.sample_rate, ctx.format, ctx.layout = rate, "s16", "mono"
    if codec == "libopus":  # what Chromium sends: 32 kbit/s voip, in-band FEC
        ctx.bit_rate = 32000
        ctx.options = {"application": "voip", "frame_duration": "20", "fec": "1", "packet_loss": "10"}
    else:
        ctx.options = {"frame_size": str(frame)}
    ctx.open()
    out: list[bytes] = []
    for i in range(LOOP_FRAMES + 2):  # + the encoder's lookahead
        pcm = struct.pack(f"<{frame}h", *(int(8000 * math.sin(2 * math.pi * hz * (i * frame + n) / rate))
                                          for n in range(frame)))
        f = av.AudioFrame(format="s16", layout="mono", samples=frame)
        f.planes[0].update(pcm)
        f.sample_rate, f.pts = rate, i * frame
        out += [bytes(p) for p in ctx.encode(f)]
    return out[-LOOP_FRAMES:]


class CoderGenerator(loadgen.Generator):
    """bench/loadgen.py's generator with an Opus-only browser and a PCMU-only phone, playing tones."""

    call_factory = CoderCall

    def __init__(self, control: Any, concurrency: int) -> None:
        super().__init__(control, concurrency)
        self.opus = _tone_frames("libopus", 48000, 440, 960)
        self.pcmu = _tone_frames("pcm_mulaw", 8000, 400, 160)
        self.by_phone: dict[Address, CoderCall] = {}
        self.unmatched = 0
        self.retimed = 0  # output timestamp jumps followed by sequence
        self.reanchored = 0  # input ↔ output map corrected after a call's first second
        self.opus_configs = [0] * 32  # RFC 6716 §3.1 TOC config of the Opus the gateway sends the browser

    def browser_offer(self, call: Call) -> str:
        port, ip = self.browser_port, call.ip
        return (
            f"v=0\r\no=- {call.b_ssrc} 2 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
            "a=msid-semantic: WMS *\r\n"
            f"m=audio {port} UDP/TLS/RTP/SAVPF {OPUS_PT}\r\nc=IN IP4 {ip}\r\n"
            f"a=rtcp:{port} IN IP4 {ip}\r\na=candidate:1 1 udp 2113937151 {ip} {port} typ host\r\n"
            f"a=ice-ufrag:{call.ufrag}\r\na=ice-pwd:{call.pwd}\r\n"
            f"a=fingerprint:{loadgen.CERT.sdp_fingerprint}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\n"
            f"a=rtcp-mux\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\na=fmtp:{OPUS_PT} minptime=10;useinbandfec=1\r\n"
            f"a=ssrc:{call.b_ssrc} cname:loadgen{call.index}\r\n"
        )

    def phone_answer(self, call: Call, legacy_offer: str) -> str:
        m = re.search(r"^a=rtpmap:(\d+) PCMU/8000", legacy_offer, re.M | re.I)
        fmts = re.search(r"^m=audio \d+ \S+ ([\d ]+)", legacy_offer, re.M)
        if m is not None:
            pt = int(m.group(1))
        elif fmts is not None and "0" in fmts.group(1).split():
            pt = 0  # static, may come without a=rtpmap
        else:
            raise RuntimeError(f"the gateway did not offer PCMU to the phone:\n{legacy_offer}")
        if "opus" in legacy_offer.lower() and isinstance(self.control, TranscodeNg):
            raise RuntimeError("rtpengine still offers Opus to the phone: not transcoding")
        assert isinstance(call, CoderCall)
        call.pcmu_pt = pt
        return (
            f"v=0\r\no=- {call.p_ssrc} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.phone_port} RTP/AVP {pt}\r\na=rtpmap:{pt} PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )

    async def _setup(self, call: Call) -> None:
        await super()._setup(call)
        assert isinstance(call, CoderCall) and call.gw_phone is not None
        self.by_phone[call.gw_phone] = call

    # -- receive: output timestamp → input count → send time

    def _arrived(self, track: Track, seq: int, ts: int, now: int, d: loadgen.Direction, ws: int, we: int) -> None:
        if track.ts0 is None:
            track.ts0 = ts
        elif 0 < (gap := (seq - track.last_seq) & 0xFFFF) < 1000:
            # A timestamp step that disagrees with the sequence step: the gateway re-timed its output
            # (rtpengine does, after the generator was late) rather than lost audio; follow the sequence.
            jump = (((ts - track.last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000) - gap * track.step
            if jump:
                track.ts0 = (track.ts0 + jump) & 0xFFFFFFFF
                self.retimed += 1
        track.last_seq, track.last_ts = seq, ts
        track.received += 1
        delta = ((ts - track.ts0 + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        k = (delta + track.step // 2) // track.step
        last = track.count - 1  # the newest input sent: this output's input cannot be newer
        bound = last - k
        if track.anchor is None or bound < track.anchor:
            if track.anchor is not None and track.received > 50:
                self.reanchored += 1
            track.anchor = bound
        c = track.anchor + k
        if c < 0 or c <= last - RING:
            self.unmatched += 1
            return
        sent = track.times[c & MASK]
        if ws <= sent < we:
            d.received += 1
            d.hist[min((now - sent) // loadgen.BIN_NS, loadgen.BINS - 1)] += 1

    def _browser_readable(self) -> None:
        recv = self.browser.recvmsg
        by_key = self.by_key
        clock = time.monotonic_ns
        ws, we = self.window
        d = self.p2b
        while True:
            try:
                data, ancdata, _, addr = recv(2048, 64)
            except BlockingIOError:
                return
            key = loadgen._local_key(ancdata)
            b0 = data[0]
            if 127 < b0 < 192:
                if 191 < data[1] < 224:
                    continue  # RTCP
                call = by_key.get(key)
                if call is None or call.rx is None:
                    continue
                try:
                    plain = call.rx.unprotect(data)
                except SrtpError:
                    self.srtp_errors += 1
                    continue
                assert isinstance(call, CoderCall)
                if len(plain) > 12 and not plain[0] & 0x1F:  # no CSRC or extension: the TOC is byte 12
                    self.opus_configs[plain[12] >> 3] += 1
                self._arrived(call.p_track, int.from_bytes(plain[2:4], "big"), int.from_bytes(plain[4:8], "big"),
                              clock(), d, ws, we)
            elif b0 < 4:
                self._stun(data, addr)
            elif 19 < b0 < 64:
                call = by_key.get(key)
                if call is not None and call.dtls is not None:
                    call.dtls.feed(data)
                    self._flush_dtls(call)

    def _phone_readable(self) -> None:
        recv = self.phone.recvfrom
        by_phone = self.by_phone
        clock = time.monotonic_ns
        ws, we = self.window
        d = self.b2p
        while True:
            try:
                data, addr = recv(2048)
            except BlockingIOError:
                return
            if len(data) < 13 or 191 < data[1] < 224:
                continue
            call = by_phone.get(addr)
            if call is None:
                continue
            self._arrived(call.b_track, int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"), clock(),
                          d, ws, we)

    # -- send: bench/loadgen.py's slot loop, with the tone frames instead of marked PCMU silence

    async def _pump(self) -> None:
        import asyncio

        poller = select.epoll()
        browser_fd, phone_fd = self.browser.fileno(), self.phone.fileno()
        poller.register(browser_fd, select.EPOLLIN)
        poller.register(phone_fd, select.EPOLLIN)
        pack = loadgen.RTP.pack
        clock = time.monotonic_ns
        bsend, psend = self.browser.sendmsg, self.phone.sendto
        browser_readable, phone_readable = self._browser_readable, self._phone_readable
        slots = self.slots
        opus, pcmu = self.opus, self.pcmu
        ts_base = secrets.randbits(31)
        slot_ns, nslots = loadgen.SLOT_NS, loadgen.SLOTS
        due = clock()
        k = 0
        try:
            while self.running:
                now = clock()
                slice_end = now + loadgen.PUMP_SLICE_NS
                while now < slice_end:
                    if due <= now:
                        late = now - due
                        if late > slot_ns:
                            self.late_slots += 1
                            self.max_late_ns = max(self.max_late_ns, late)
                        ws, we = self.window
                        b2p, p2b = self.b2p, self.p2b
                        for call in slots[k % nslots]:
                            tx = call.tx
                            if tx is None or call.gw_browser is None or call.gw_phone is None:
                                continue
                            assert isinstance(call, CoderCall)
                            t = clock()
                            bt, pt = call.b_track, call.p_track
                            n = bt.count
                            bt.times[n & MASK] = t
                            bt.count = n + 1
                            header = pack(0x80, OPUS_PT, (call.b_seq + n) & 0xFFFF,
                                          (ts_base + n * OPUS_STEP) & 0xFFFFFFFF, call.b_ssrc)
                            try:
                                bsend([tx.protect(header + opus[n % LOOP_FRAMES])], call.pktinfo, 0, call.gw_browser)
                            except BlockingIOError:
                                self.send_errors += 1
                            n = pt.count
                            pt.times[n & MASK] = t
                            pt.count = n + 1
                            header = pack(0x80, call.pcmu_pt, (call.p_seq + n) & 0xFFFF,
                                          (ts_base + n * PCMU_STEP) & 0xFFFFFFFF, call.p_ssrc)
                            try:
                                psend(header + pcmu[n % LOOP_FRAMES], call.gw_phone)
                            except BlockingIOError:
                                self.send_errors += 1
                            if ws <= t < we:
                                b2p.sent += 1
                                p2b.sent += 1
                        k += 1
                        due += slot_ns
                    else:
                        for fd, _ in poller.poll((min(due, slice_end) - now) / 1e9):
                            if fd == browser_fd:
                                browser_readable()
                            else:
                                phone_readable()
                    now = clock()
                await asyncio.sleep(0)
        finally:
            poller.close()

    def report(self) -> dict[str, Any]:
        return super().report() | {"unmatched": self.unmatched}

    async def stop(self) -> dict[str, Any]:
        seen = {_opus_config(c): n for c, n in enumerate(self.opus_configs) if n}
        total = sum(seen.values()) or 1
        lat = []
        for name, d in (("Opus→PCMU", self.b2p), ("PCMU→Opus", self.p2b)):
            hist = {i: n for i, n in enumerate(d.hist) if n}
            lat.append(f"{name} p50 {relay.percentile(hist, 0.5):.1f} / p99 {relay.percentile(hist, 0.99):.1f} ms")
        print(f"  (generator, last step: {'; '.join(lat)}; Opus received by the browsers: "
              f"{', '.join(f'{k} {100 * n / total:.0f} %' for k, n in seen.items()) or 'none'}; "
              f"{self.unmatched} packets matched no input; output re-timed {self.retimed}x; map corrected "
              f"after the first second {self.reanchored}x)",
              file=sys.stderr, flush=True)
        return await super().stop()


def _opus_config(config: int) -> str:
    """RFC 6716 §3.1 table 2: mode and audio bandwidth of a TOC config number."""
    if config < 12:
        return f"SILK {('NB', 'MB', 'WB')[config // 4]}"
    if config < 16:
        return f"hybrid {('SWB', 'FB')[(config - 12) // 2]}"
    return f"CELT {('NB', 'WB', 'SWB', 'FB')[(config - 16) // 4]}"


class CoderRtc2sip(relay.Rtc2sipGateway):
    worker_args = ("--coder",)
    loadgen_cmd = (str(Path(__file__).resolve()), "--loadgen")


class CoderRtpengine(relay.RtpengineGateway):
    loadgen_cmd = (str(Path(__file__).resolve()), "--loadgen")


def run_audio(args: argparse.Namespace) -> dict[str, list[relay.Step]]:
    kinds: dict[str, type[relay.Gateway]] = {"rtc2sip": CoderRtc2sip, "rtpengine": CoderRtpengine}
    results: dict[str, list[relay.Step]] = {}
    for name in args.gateways.split(","):
        results[name] = relay.run_gateway(kinds[name](args.relay_core), args)
    return results


def audio_summary(results: dict[str, list[relay.Step]], max_loss: float) -> dict[str, float]:
    print("\n## audio summary: Opus ⇄ PCMU transcoded calls per core")
    carried: dict[str, int] = {}
    per_core: dict[str, float] = {}
    for name, steps in results.items():
        best = relay.capacity(steps, max_loss)
        busiest = max(steps, key=lambda s: s.relay_cpu) if steps else None
        if busiest is not None and busiest.us_per_packet == busiest.us_per_packet:
            per_core[name] = 1e6 / (busiest.us_per_packet * 100)  # 100 transcoded packets/s per call
        if best is None:
            print(f"- {name}: carried no step")
            continue
        carried[name] = best.calls
        after = next((s for s in steps if s.calls > best.calls), None)
        bound = ""
        if after is None:
            bound = " (the last step tried: a lower bound)"
        elif after.loadgen_cpu > 90 or after.loadgen_cpu > after.relay_cpu:
            bound = " (the generator, not the gateway, ran out of core first: a lower bound)"
        print(f"- {name}: {best.calls} calls with < {max_loss:g} % loss{bound}; p99 added latency "
              f"{best.p99_ms:.1f} ms (p50 {best.p50_ms:.2f}); {best.us_per_packet:.1f} µs CPU per transcoded "
              f"packet; gateway at {best.relay_cpu:.0f} % of its core; {best.kb_per_call:.0f} KB/call")
        if busiest is not None and name in per_core:
            print(f"  at {busiest.calls} calls ({busiest.relay_cpu:.0f} % of its core): {busiest.us_per_packet:.1f} "
                  f"µs/packet, i.e. ~{per_core[name]:.0f} calls per core at 100 % CPU")
    ratios: dict[str, float] = {}
    if "rtc2sip" in carried and "rtpengine" in carried:
        ratios["audio_carried"] = carried["rtc2sip"] / carried["rtpengine"]
        print(f"- ratio rtc2sip / rtpengine, transcoded calls carried: {ratios['audio_carried']:.2f}x")
    if "rtc2sip" in per_core and "rtpengine" in per_core:
        ratios["audio_cpu"] = per_core["rtc2sip"] / per_core["rtpengine"]
        print(f"- ratio rtc2sip / rtpengine, calls per core from CPU per packet: {ratios['audio_cpu']:.2f}x")
    return ratios


# -- video: VP8 → H.264 640x480@30 ------------------------------------------------------------------------

FPS = 30
X264 = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}
GOP = FPS * 10  # rtc2sip's VideoTranscoder: a keyframe every 10 s unless asked (PLI/FIR) sooner


def make_vp8(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size=640x480:rate={FPS}", "-t", str(seconds), "-c:v", "libvpx", "-b:v", "1M",
         "-deadline", "realtime", "-cpu-used", "8", "-g", "60", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=300)


def video_worker(path: str, loops: int, mode: str) -> None:
    """One VP8 → H.264 stream as fast as the core goes. ``coder``: rtc2sip's VideoTranscoder, RTP in
    (RFC 7741 payloads, packetized before the clock starts: that is the sender's work) and RTP out
    (RFC 6184), jitter buffer included; ``codec``: PyAV's decode and encode alone, no RTP."""
    from fractions import Fraction

    import av
    from av.video.frame import PictureType

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from rtc2sip.coder.rtp_video import packetize_vp8
    from rtc2sip.coder.video import VideoTranscoder

    with av.open(path) as container:
        clip = [bytes(p) for p in container.demux(video=0) if p.size]
    frames = out_bytes = 0
    if mode == "coder":
        rtp = [packetize_vp8(f, 1200, i) for i, f in enumerate(clip)]
        coder = VideoTranscoder("vp8", "h264", src_pt=96, dst_pt=97, width=640, height=480, fps=FPS,
                                bitrate=1_000_000, max_bitrate=1_000_000)  # fmt: skip
        seq = ts = 0
        usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for _ in range(loops):
            for payloads in rtp:
                last = len(payloads) - 1
                for i, payload in enumerate(payloads):
                    for out in coder.push(payload, ts, seq & 0xFFFF, i == last, seq * 0.001):
                        out_bytes += len(out.payload)
                    seq += 1
                ts += 90000 // FPS
        frames = int(coder.stats()["frames_out"])  # type: ignore[call-overload]
        coder.close()
    else:
        dec: Any = av.CodecContext.create("vp8", "r")
        dec.thread_count = 1
        enc: Any = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = 640, 480, "yuv420p"
        enc.time_base = Fraction(1, FPS)
        enc.framerate = Fraction(FPS)
        enc.bit_rate = 1_000_000
        enc.gop_size = GOP
        enc.thread_count = 1
        enc.options = dict(X264)
        enc.open()
        usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        for _ in range(loops):
            for data in clip:
                for frame in dec.decode(av.Packet(data)):
                    frame.pts = frames
                    frame.pict_type = PictureType.NONE  # let x264 place keyframes, as ffmpeg does
                    frames += 1
                    for out in enc.encode(frame):
                        out_bytes += out.size
        for out in enc.encode(None):
            out_bytes += out.size
    usage1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    cpu = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
    print(json.dumps({"frames": frames, "cpu_s": cpu, "wall_s": t1 - t0, "bytes": out_bytes}), flush=True)


def _child_cpu(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` (pinned, in its own autogroup, killed with us); its CPU seconds, wall seconds, stdout."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=relay._prepare_child)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{cmd[3:6]} failed ({proc.returncode}): {err.decode()[-500:]}")
    return usage.ru_utime + usage.ru_stime, wall, out.decode()


def run_video(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    print("\n## video: VP8 → H.264 640x480@30, one core")
    print("rtc2sip: its VideoTranscoder with RTP in and out (jitter buffer, RFC 7741 depacketization, VP8 "
          "decode, libx264 encode, RFC 6184 packetization); PyAV codec path: decode + encode only, no RTP")
    src = workdir / "testsrc2-640x480-30.ivf"
    make_vp8(src, args.video_seconds)
    pin = ["taskset", "-c", str(args.relay_core)]
    ffmpeg = [*pin, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", "1", "-c:v", "vp8",
              "-stream_loop", str(args.video_loops - 1), "-i", str(src), "-map", "0:v", "-c:v", "libx264",
              "-threads", "1", "-preset", X264["preset"], "-tune", X264["tune"], "-profile:v", X264["profile"],
              "-g", str(GOP), "-b:v", "1M", "-pix_fmt", "yuv420p", "-filter_threads", "1", "-f", "h264", "-y",
              str(workdir / "out.h264")]
    me = [*pin, sys.executable, str(Path(__file__).resolve()), "--video-worker", str(src), str(args.video_loops)]
    tools = {"rtc2sip": [*me, "coder"], "pyav": [*me, "codec"], "ffmpeg": ffmpeg}
    frames = args.video_seconds * FPS * args.video_loops
    rows: dict[str, list[float]] = {t: [] for t in tools}
    print(f"{frames} frames per run ({args.video_seconds} s clip x {args.video_loops}), {args.video_rounds} "
          f"round(s), alternating; x264 ultrafast/zerolatency/baseline 1 Mbit/s, keyint {GOP}, one thread each")
    print("| run | tool | frames | CPU s | wall s | frames per CPU s | streams per core | H.264 kbit/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in range(args.video_rounds):
        for tool, cmd in tools.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_total, wall, out = _child_cpu(cmd)
            if tool != "ffmpeg":
                report = json.loads(out.strip().splitlines()[-1])
                n, cpu = int(report["frames"]), float(report["cpu_s"])  # the loop only, not the imports
                size = int(report["bytes"])
            else:  # the whole process, start-up included (~20 ms)
                n, cpu = frames, cpu_total - (before.ru_utime + before.ru_stime)
                size = (workdir / "out.h264").stat().st_size
            fps = n / cpu
            rows[tool].append(fps)
            kbps = size * 8 * FPS / n / 1000
            print(f"| {r + 1} | {tool} | {n} | {cpu:.2f} | {wall:.2f} | {fps:.0f} | {fps / FPS:.2f} | {kbps:.0f} |",
                  flush=True)
    med = {t: sorted(v)[len(v) // 2] for t, v in rows.items()}
    ratio = med["rtc2sip"] / med["ffmpeg"]
    print("\n## video summary")
    print(f"- rtc2sip VideoTranscoder, RTP to RTP: {med['rtc2sip'] / FPS:.2f} streams per core "
          f"({med['rtc2sip']:.0f} frames/CPU s)")
    print(f"- PyAV codec path alone (no RTP): {med['pyav'] / FPS:.2f} streams per core "
          f"({med['pyav']:.0f} frames/CPU s)")
    print(f"- ffmpeg command line: {med['ffmpeg'] / FPS:.2f} streams per core ({med['ffmpeg']:.0f} frames/CPU s)")
    print(f"- ratio rtc2sip / ffmpeg: {ratio:.2f}x (PyAV codec path / ffmpeg: {med['pyav'] / med['ffmpeg']:.2f}x)")
    return {"video": ratio}


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="< 3 min: few steps, short windows, one video round")
    parser.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")],
                        help=f"concurrent transcoded calls per step (default {STEPS}, quick {QUICK_STEPS})")
    parser.add_argument("--seconds", type=float, help="measurement window per step (default 10, quick 5)")
    parser.add_argument("--warmup", type=float, help="seconds between setup and window (default 3, quick 2)")
    parser.add_argument("--grace", type=float, default=1.0, help="seconds after the window for late packets")
    parser.add_argument("--gateways", default="rtc2sip,rtpengine")
    parser.add_argument("--parts", default="audio,video", help="audio, video or both")
    parser.add_argument("--relay-core", type=int, default=1, help="core of the gateway and of the video runs")
    parser.add_argument("--loadgen-core", default="0", help="taskset CPU list of the generators")
    parser.add_argument("--loadgens", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=10, help="call setups in flight per generator")
    parser.add_argument("--nice", type=int, default=relay.NICE, help="nice value of every child (root)")
    parser.add_argument("--max-loss", type=float, default=0.5, help="percent, per direction")
    parser.add_argument("--fail-steps", type=int, default=1, help="stop after this many failed steps in a row")
    parser.add_argument("--video-seconds", type=int, default=20, help="length of the VP8 clip")
    parser.add_argument("--video-loops", type=int, help="clip repetitions per run (default 5, quick 2)")
    parser.add_argument("--video-rounds", type=int, help="runs per tool, median kept (default 3, quick 1)")
    args = parser.parse_args()
    quick = args.quick
    args.steps = args.steps or [int(x) for x in (QUICK_STEPS if quick else STEPS).split(",")]
    args.seconds = args.seconds or (5.0 if quick else 10.0)
    args.warmup = args.warmup or (2.0 if quick else 3.0)
    args.video_loops = args.video_loops or (2 if quick else 5)
    args.video_rounds = args.video_rounds or (1 if quick else 3)
    relay.NICE = args.nice
    parts = set(args.parts.split(","))

    missing = [t for t in ("taskset", "ffmpeg", "rtpengine") if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)}")
    codecs = subprocess.run(["rtpengine", "--codecs"], capture_output=True, text=True, timeout=30).stdout
    transcodes = all(re.search(rf"^\s*{c}: fully supported", codecs, re.M) for c in ("opus", "PCMU"))
    print(f"# bench/coder.py: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"{os.cpu_count()} CPUs; gateway on core {args.relay_core}, generator on core {args.loadgen_core}; "
          f"nice {args.nice}; load average before: {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"rtpengine built with transcoding (opus and PCMU fully supported per `rtpengine --codecs`): "
          f"{'yes' if transcodes else 'NO'}")
    ratios: dict[str, float] = {}
    started = time.monotonic()
    if "audio" in parts:
        if not transcodes and "rtpengine" in args.gateways:
            print("rtpengine cannot transcode Opus ⇄ PCMU here: measuring rtc2sip only")
            args.gateways = ",".join(g for g in args.gateways.split(",") if g != "rtpengine")
        print(f"\n## audio: steps {args.steps}, {args.seconds:g} s window, {args.warmup:g} s warm-up, "
              f"loss limit {args.max_loss:g} % per direction")
        ratios |= audio_summary(run_audio(args), args.max_loss)
    if "video" in parts:
        with tempfile.TemporaryDirectory(prefix="rtc2sip-bench-coder-") as tmp:
            ratios |= run_video(args, Path(tmp))
    print("\n## ratios")
    for key, label in (("audio_carried", "audio Opus ⇄ PCMU calls carried, rtc2sip / rtpengine"),
                       ("audio_cpu", "audio calls per core from CPU per packet, rtc2sip / rtpengine"),
                       ("video", "video VP8 → H.264 streams per core, rtc2sip VideoTranscoder (RTP to RTP) / "
                                 "ffmpeg")):
        if key in ratios:
            print(f"- {label}: {ratios[key]:.2f}x")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loadgen"]:
        import uvloop

        uvloop.run(loadgen.main(sys.argv[2:], CoderGenerator, TranscodeNg))
    elif sys.argv[1:2] == ["--video-worker"]:
        video_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()

"""Recording and forwarding to players with real peers (issue 5 items 6 and 7).

- Chromium (1000 Hz) calls baresip (440 Hz) through the gateway with ``[recording] enabled``: after the
  call, the per-leg WAV files hold both tones (webrtc = what the browser sent, legacy = what the phone
  sent) and the JSON sidecar names the parties, the Call-IDs, the codecs and the end.
- The same with the browser on Opus only and the Media Coder on: the browser leg is recorded from Opus
  (and the live view shows each leg's own codec, /metrics one transcoding session).
- Chromium with its fake camera calls ``sip:testpattern@DOMAIN`` with recording on: each leg's VP8
  (the browser's camera, the service's pattern) is in a WebM file that ffmpeg decodes into frames.
- The call forwarded with ``[forward] to = "127.0.0.1:PORT"``: ffmpeg opens the ``.sdp`` the gateway
  wrote and decodes several seconds of audio holding a tone. Note the trap: ffmpeg refuses an SDP file
  that opens network streams unless given ``-protocol_whitelist file,udp,rtp``.
- The same call with nothing configured, driven through the admin listener's API: ``POST
  /api/calls/{id}/forward`` (ffmpeg decodes the stream; the live view shows it), ``DELETE …/forward``;
  then the Record and Stop recording buttons of the live view loaded from the admin listener (``POST``
  and ``DELETE …/recording``): the files hold both tones. The live view of the public WebSocket port
  shows the same call read-only, its buttons pointing at the admin listener.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import Artifacts, Baresip, Browser, Gateway, analyse_wav, free_port, wait_for
from harness.call import BROWSER_HZ, PHONE_HZ, CallMaker, call_service
from harness.pages import LIVE_VIEW_READY, open_page
from harness.video import VIDEO_CALLS, video_stats

CODER_TOML = '[webrtc2sip]\nenable-media-coder = true\ncodecs = ["opus", "pcmu", "pcma", "g722"]\n'


def _call(make_call: CallMaker, gw: Gateway, codecs: list[str] | None = None) -> tuple[Browser, Baresip]:
    call = make_call("browser", gateway=gw, phone_kw={"audio_codecs": "PCMU/8000/1"},
                     register_kw={"codecs": codecs} if codecs else None)
    alice, bob = call.browser, call.phone
    stats = alice.wait_media(min_packets=50)
    assert stats["transport"]["dtlsState"] == "connected"
    assert abs(alice.wait_tone(PHONE_HZ)["frequency"] - PHONE_HZ) <= 25
    return alice, bob


def _finished_sidecar(directory: Path) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        for path in directory.glob("*.json"):
            meta: dict[str, Any] = json.loads(path.read_text())
            if meta.get("ended"):
                return meta
        return None

    meta = wait_for(done, 15.0, "the recording's final sidecar")
    assert isinstance(meta, dict)
    print(json.dumps(meta, indent=2))
    return meta


def _assert_recorded(directory: Path, meta: dict[str, Any], browser_codec: str) -> None:
    assert meta["error"] is None
    assert meta["parties"]["caller"].startswith("sip:alice@") and meta["parties"]["callee"].startswith("sip:bob@")
    assert meta["call_ids"]["caller"] and meta["call_ids"]["callee"]
    assert meta["call_ids"]["caller"] != meta["call_ids"]["callee"]
    assert meta["caller_leg"] == "webrtc"
    assert meta["end_reason"], meta
    assert meta["legs"]["webrtc"]["codecs"] == [browser_codec]
    assert meta["legs"]["legacy"]["codecs"] == ["PCMU/8000"]
    for leg, hz in (("webrtc", BROWSER_HZ), ("legacy", PHONE_HZ)):
        info = meta["legs"][leg]
        assert info["decoded"] >= 100, info  # two seconds and more of 20 ms packets
        tone = analyse_wav(directory / info["file"])
        print(f"{leg}: {tone}")
        assert tone.voiced_seconds >= 2.0, tone
        assert abs(tone.frequency - hz) <= 10, (leg, tone)


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [0, 2])
def test_recording_has_both_tones(
    workers: int,
    make_gateway: Callable[..., Gateway], make_call: CallMaker, artifacts: Artifacts,
) -> None:
    """With ``[media] workers`` the rule is applied in the gateway and the files written by a worker."""
    rec_dir = artifacts.subdir("recordings")
    gw = make_gateway(extra_toml=f'[recording]\nenabled = true\nrule = "sip:bob@*"\ndir = "{rec_dir}"\n'
                                 f'\n[media]\nworkers = {workers}\n')
    alice, bob = _call(make_call, gw)
    time.sleep(3.0)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    meta = _finished_sidecar(rec_dir)
    _assert_recorded(rec_dir, meta, "PCMU/8000")
    assert " recording call " in gw.log_text()


@pytest.mark.e2e
def test_recording_of_a_transcoded_call_decodes_opus(
    make_gateway: Callable[..., Gateway], make_call: CallMaker, artifacts: Artifacts,
) -> None:
    rec_dir = artifacts.subdir("recordings")
    gw = make_gateway(extra_toml=CODER_TOML + f'[recording]\nenabled = true\ndir = "{rec_dir}"\n')
    alice, bob = _call(make_call, gw, codecs=["opus", "telephone-event"])
    # the live view shows each leg's own codec, and /metrics the transcoding session
    calls = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/api/calls", timeout=5).read())
    legs = {leg["webrtc"]: leg for leg in calls["active"][0]["legs"]}
    assert legs[True]["codec"] == "opus/48000" and legs[False]["codec"] == "PCMU/8000", legs
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/metrics", timeout=5).read().decode()
    assert "\nrtc2sip_transcoding_sessions 1\n" in metrics, metrics
    time.sleep(3.0)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    meta = _finished_sidecar(rec_dir)
    _assert_recorded(rec_dir, meta, "opus/48000")


def _ffprobe_frames(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    streams = json.loads(done.stdout)["streams"]
    assert len(streams) == 1, streams
    return dict(streams[0])


@pytest.mark.e2e
def test_video_call_recorded_to_webm(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], artifacts: Artifacts,
) -> None:
    rec_dir = artifacts.subdir("recordings")
    gw = make_gateway(extra_toml=f'[recording]\nenabled = true\ndir = "{rec_dir}"\n')
    alice = call_service(make_browser, gw, "testpattern", tone_hz=PHONE_HZ, page_js=[VIDEO_CALLS])
    wait_for(lambda: (s := video_stats(alice)) is not None and s["framesDecoded"] >= 10, 20.0,
             "the browser to decode the test pattern", interval=0.25)
    time.sleep(3.0)
    alice.hangup()
    alice.wait_event("ended")
    meta = _finished_sidecar(rec_dir)
    assert meta["error"] is None
    assert meta["parties"]["callee"].startswith("sip:testpattern@")
    for leg, size in (("webrtc", None), ("legacy", (640, 360))):
        video = meta["legs"][leg]["video"]
        assert video is not None and video["file"] and video["codecs"] == ["VP8/90000"], (leg, video)
        assert video["keyframes"] >= 1 and video["frames"] >= 30, (leg, video)  # 3 s and more
        probe = _ffprobe_frames(rec_dir / video["file"])
        print(f"{leg}: {probe}")
        assert probe["codec_name"] == "vp8"
        assert int(probe["nb_read_frames"]) >= 30, probe
        assert (probe["width"], probe["height"]) == (video["width"], video["height"])
        if size is not None:
            assert (probe["width"], probe["height"]) == size
        # and ffmpeg decodes it whole, with no error; frames keep their own times (a burst of frames
        # closer than 1/30 s, seen under load, would otherwise collide in ffmpeg's constant-rate output,
        # and in the 1/30 s time base it gives its encoder from the stream's nominal rate)
        done = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(rec_dir / video["file"]),
                               "-fps_mode", "passthrough", "-enc_time_base", "-1", "-f", "null", "-"],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr[-2000:]
    # the audio beside it: the browser's tone on one leg, the service's on the other
    for leg, hz in (("webrtc", PHONE_HZ), ("legacy", BROWSER_HZ)):
        tone = analyse_wav(rec_dir / meta["legs"][leg]["file"])
        print(f"{leg} audio: {tone}")
        assert abs(tone.frequency - hz) <= 10, (leg, tone)


@pytest.mark.e2e
def test_forwarded_video_decodes_in_ffmpeg(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], artifacts: Artifacts,
) -> None:
    """A browser video call to the test pattern forwarded: ffmpeg decodes the pattern's VP8 (640x360)
    from the .sdp's legacy video stream. The browser's stream is in the .sdp too, but a player that
    joins after the browser's first keyframe waits for the next one, and Chrome sends one only when
    asked (PLI): the gateway does not ask it when forwarding starts (yet), so it is not decoded here."""
    sdp_dir = artifacts.subdir("forward")
    port = free_port(8)  # audio at port, port + 2; video at port + 4, port + 6; their RTCP ports
    gw = make_gateway(extra_toml=f'[forward]\nto = "127.0.0.1:{port}"\ndir = "{sdp_dir}"\n')
    alice = call_service(make_browser, gw, "testpattern", tone_hz=PHONE_HZ, page_js=[VIDEO_CALLS])
    sdp = wait_for(lambda: next(iter(sdp_dir.glob("*.sdp")), None), 10.0, "the forwarded stream's .sdp")
    assert isinstance(sdp, Path)
    text = wait_for(lambda: (t := sdp.read_text()).count("m=video") == 2 and t, 10.0, "video in the .sdp")
    assert isinstance(text, str)
    print(text)
    assert f"m=video {port + 4} RTP/AVP " in text and f"m=video {port + 6} RTP/AVP " in text, text
    for stream, size in ((0, (640, 360)),):  # v:0 the legacy leg (the pattern)
        path = artifacts.path(f"video{stream}.sdp")
        path.write_text(text)
        out = artifacts.path(f"forwarded-video{stream}.webm")
        log = artifacts.path(f"ffmpeg-video{stream}.log")
        artifacts.add_log(f"ffmpeg-video{stream}", log)
        # the pattern sends a keyframe every 2 s: 6 s of stream holds decodable frames whatever the start
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file,udp,rtp", "-i", str(path),
               "-map", f"0:v:{stream}", "-t", "6", "-c", "copy", str(out)]
        with log.open("wb") as f:
            done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=60, check=False)
        assert done.returncode == 0, log.read_text()[-2000:]
        probe = _ffprobe_frames(out)
        print(f"forwarded video {stream}: {probe}")
        assert probe["codec_name"] == "vp8" and int(probe["nb_read_frames"]) >= 20, probe
        if size is not None:
            assert (probe["width"], probe["height"]) == size, probe
    assert video_stats(alice) is not None
    alice.hangup()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.e2e
def test_video_sinks_started_mid_call_get_the_browsers_keyframe(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], artifacts: Artifacts,
) -> None:
    """Long after the browser's first keyframe, a recording and a forward started through the API get
    the browser's picture: starting them asks the browser for a keyframe (RTCP PLI)."""
    from rtc2sip.media.plane import MediaPlane

    if not hasattr(MediaPlane, "request_keyframe"):
        pytest.skip("needs the media plane's request_keyframe (RTCP PLI toward the browser), from the "
                    "video feedback work")
    rec_dir = artifacts.subdir("recordings")
    gw = make_gateway(extra_toml=f'[recording]\ndir = "{rec_dir}"\n')
    alice = call_service(make_browser, gw, "testpattern", tone_hz=PHONE_HZ, page_js=[VIDEO_CALLS])
    wait_for(lambda: (s := video_stats(alice)) is not None and s["framesDecoded"] >= 30, 20.0,
             "two seconds of video", interval=0.25)
    calls = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/api/calls", timeout=5).read())
    call_id = calls["active"][0]["id"]

    # a player listening first, then the forward started: ffmpeg gets the browser's stream from a keyframe
    port = free_port(8)
    forward = _api(gw, "POST", f"/api/calls/{call_id}/forward", {"host": "127.0.0.1", "port": port})
    text = Path(forward["sdp"]).read_text()
    assert _api(gw, "DELETE", f"/api/calls/{call_id}/forward")["stopped"] is True
    time.sleep(1.0)  # the media plane sends at most one keyframe request every 300 ms: not this one again
    sdp = artifacts.path("browser-video.sdp")
    sdp.write_text(text)
    out = artifacts.path("browser-video.webm")
    log = artifacts.path("ffmpeg-browser-video.log")
    artifacts.add_log("ffmpeg-browser-video", log)
    with log.open("wb") as f:
        ffmpeg = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file,udp,rtp",
                                   "-i", str(sdp), "-map", "0:v:1", "-t", "4", "-c", "copy", str(out)],
                                  stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: not _bindable(port + 6), 15.0, "ffmpeg to listen", interval=0.1)
        _api(gw, "POST", f"/api/calls/{call_id}/forward", {"host": "127.0.0.1", "port": port})
        assert ffmpeg.wait(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if ffmpeg.poll() is None:
            ffmpeg.kill()
            ffmpeg.wait()
    probe = _ffprobe_frames(out)
    print(f"browser's video forwarded mid-call: {probe}")
    assert probe["codec_name"] == "vp8" and int(probe["nb_read_frames"]) >= 20, probe

    # the same for a recording started now (seconds after the last keyframe request)
    rec = _api(gw, "POST", f"/api/calls/{call_id}/recording")
    time.sleep(3.0)
    assert _api(gw, "DELETE", f"/api/calls/{call_id}/recording")["stopped"] is True
    meta = _finished_sidecar(rec_dir)
    video = meta["legs"]["webrtc"]["video"]
    assert rec["sidecar"].endswith(".json") and video["keyframes"] >= 1 and video["frames"] >= 20, video
    assert int(_ffprobe_frames(rec_dir / video["file"])["nb_read_frames"]) == video["frames"]
    alice.hangup()


@pytest.mark.e2e
def test_forwarded_call_plays_in_ffmpeg(
    make_gateway: Callable[..., Gateway], make_call: CallMaker, artifacts: Artifacts,
) -> None:
    sdp_dir = artifacts.subdir("forward")
    port = free_port(4)  # legacy leg on port, browser leg on port + 2, RTCP ports ffmpeg binds
    gw = make_gateway(extra_toml=f'[forward]\nto = "127.0.0.1:{port}"\ndir = "{sdp_dir}"\n')
    alice, bob = _call(make_call, gw)
    sdp = wait_for(lambda: next(iter(sdp_dir.glob("*.sdp")), None), 10.0, "the forwarded stream's .sdp")
    assert isinstance(sdp, Path)
    text = sdp.read_text()
    print(text)
    assert "c=IN IP4 127.0.0.1" in text and f"m=audio {port} RTP/AVP 0" in text and "a=rtpmap:0 PCMU/8000" in text
    stream = artifacts.path("stream.sdp")
    stream.write_text(text)
    out = artifacts.path("forwarded.wav")
    log = artifacts.path("ffmpeg.log")
    artifacts.add_log("ffmpeg", log)
    # Without -protocol_whitelist, ffmpeg stops at "Protocol 'rtp' not on whitelist 'file,crypto,data'!".
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file,udp,rtp",
           "-i", str(stream), "-t", "4", "-f", "wav", str(out)]
    with log.open("wb") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=30, check=False)
    assert done.returncode == 0, log.read_text()[-2000:]
    st = alice.wait_media(min_packets=50)  # the call went on meanwhile
    assert st["inbound"]["packetsReceived"] > 200  # 4 s and more of 20 ms packets
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    tone = analyse_wav(out)
    print(f"ffmpeg decoded: {tone}")
    assert tone.voiced_seconds >= 3.0, tone
    assert min(abs(tone.frequency - PHONE_HZ), abs(tone.frequency - BROWSER_HZ)) <= 10, tone
    assert "forwarding call " in gw.log_text()


def _ffmpeg_sdp(artifacts: Artifacts, sdp_text: str, seconds: int, name: str) -> Path:
    stream = artifacts.path(f"{name}.sdp")
    stream.write_text(sdp_text)
    out = artifacts.path(f"{name}.wav")
    log = artifacts.path(f"{name}-ffmpeg.log")
    artifacts.add_log(f"ffmpeg-{name}", log)
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-protocol_whitelist", "file,udp,rtp",
           "-i", str(stream), "-t", str(seconds), "-f", "wav", str(out)]
    with log.open("wb") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=30, check=False)
    assert done.returncode == 0, log.read_text()[-2000:]
    return out


def _api(gw: Gateway, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One action on the admin listener: POST with a JSON body, or DELETE."""
    data = json.dumps(body or {}).encode() if method == "POST" else None
    request = urllib.request.Request(f"{gw.admin_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
    with urllib.request.urlopen(request, timeout=5) as r:
        answer: dict[str, Any] = json.loads(r.read())
        assert r.status == (201 if method == "POST" else 200), (r.status, answer)
    print(f"{method} {path}: {answer}")
    return answer


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [0, 1])
def test_forwarding_and_recording_through_the_api(
    workers: int,
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser],
    make_call: CallMaker, artifacts: Artifacts,
) -> None:
    rec_dir = artifacts.subdir("recordings")
    # where files go; no rule: not enabled. With a media worker, the worker records and forwards.
    gw = make_gateway(extra_toml=f'[recording]\ndir = "{rec_dir}"\n\n[media]\nworkers = {workers}\n')
    # the live view first: a browser starts slowly on a loaded machine, and baresip ends calls after 60 s
    viewer = make_browser("viewer", tone_hz=None)
    open_page(viewer, f"{gw.admin_url}/calls", LIVE_VIEW_READY)
    alice, bob = _call(make_call, gw)
    calls = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/api/calls", timeout=5).read())
    assert len(calls["active"]) == 1
    call_id = calls["active"][0]["id"]
    assert not list(rec_dir.glob("*")), "nothing is recorded or forwarded before it is asked for"

    port = free_port(4)
    started = _api(gw, "POST", f"/api/calls/{call_id}/forward", {"host": "127.0.0.1", "port": port})
    assert started["forwarding"] is True and started["to"] == {"host": "127.0.0.1", "port": port}
    text = Path(started["sdp"]).read_text()
    assert f"m=audio {port} RTP/AVP 0" in text, text
    tone = analyse_wav(_ffmpeg_sdp(artifacts, text, 3, "forwarded"))
    print(f"ffmpeg decoded: {tone}")
    assert tone.voiced_seconds >= 2.0, tone
    assert min(abs(tone.frequency - PHONE_HZ), abs(tone.frequency - BROWSER_HZ)) <= 10, tone
    def button(action: str) -> str | None:
        text = viewer.eval(f"(() => {{ const b = document.querySelector('button[data-action=\"{action}\"]'); "
                           "return b ? b.textContent : null; })()")
        return str(text) if text is not None else None

    shown = wait_for(lambda: button("forward/stop"), 10, "the live view to show the forwarding", interval=0.3)
    assert shown == f"Stop forwarding to 127.0.0.1:{port}", shown
    assert _api(gw, "DELETE", f"/api/calls/{call_id}/forward")["stopped"] is True
    assert _api(gw, "DELETE", f"/api/calls/{call_id}/forward")["stopped"] is False  # already stopped
    wait_for(lambda: button("forward/start"), 10, "the live view to offer Forward again", interval=0.3)

    # recording from the live view's buttons
    assert viewer.eval("(document.querySelector('button[data-action=\"recording/start\"]').click(), true)")
    wait_for(lambda: button("recording/stop") == "Stop recording", 10, "the live view to show the recording",
             interval=0.3)
    status = str(viewer.eval("document.getElementById('action-status').textContent"))
    assert "recording to " in status and status.endswith(".json"), status
    time.sleep(3.0)
    assert viewer.eval("(document.querySelector('button[data-action=\"recording/stop\"]').click(), true)")
    wait_for(lambda: button("recording/start"), 10, "the live view to offer Record again", interval=0.3)
    meta = _finished_sidecar(rec_dir)  # stopped: finalised while the call goes on
    # the public port's live view shows the call, read-only: its buttons say where the admin listener is
    open_page(viewer, f"http://127.0.0.1:{gw.ws_port}/calls", LIVE_VIEW_READY)
    record = "document.querySelector('button[data-action=\"recording/start\"]')"
    shown_js = f"(() => {{ const b = {record}; return b ? [b.disabled, b.title] : null; }})()"
    public = wait_for(lambda: viewer.eval(shown_js), 10, "the public live view to show the call", interval=0.3)
    assert public == [True, f"Actions are on the admin listener: {gw.admin_url}/calls"], public
    assert viewer.eval("document.getElementById('forward-box').hidden") is True
    st = alice.wait_media(min_packets=50)
    assert st["inbound"]["packetsReceived"] > 200
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    assert meta["error"] is None and meta["parties"]["callee"].startswith("sip:bob@")
    for leg, hz in (("webrtc", BROWSER_HZ), ("legacy", PHONE_HZ)):
        info = meta["legs"][leg]
        tone = analyse_wav(rec_dir / info["file"])
        print(f"{leg}: {tone}")
        assert tone.voiced_seconds >= 2.0, tone
        assert abs(tone.frequency - hz) <= 10, (leg, tone)
    log = gw.log_text()
    assert "recording started through the API" in log and "recording stopped through the API" in log
    assert "forwarding stopped through the API" in log

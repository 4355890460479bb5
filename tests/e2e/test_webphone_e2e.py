"""The web phone rtc2sip serves itself (issue 5): Chromium loads the real page from the gateway's
WebSocket port, registers and calls baresip through the UI, and hears baresip's tone; another Chromium
opens the live view at /calls during the call and finds both legs with packets flowing and a time plot
(SVG sparklines of jitter, loss and bitrate) per leg, and a third takes a screenshot of it
(artifacts/<test>/calls.png); the ended call shows its quality summary (MOS estimate per leg). /metrics
is scraped before, during and after.

The page is driven through its DOM (fields, buttons) as a user would; `window.rtc2sipPhone` only
reads what the page sees (getStats, the remote tone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from harness import Artifacts, Baresip, Browser, Gateway
from harness.call import CallMaker
from harness.pages import LIVE_VIEW_READY, open_page
from harness.procs import wait_for

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0
CHROMIUM = os.environ.get("RTC2SIP_CHROMIUM", "/usr/bin/chromium")


def _click(browser: Browser, element_id: str) -> None:
    browser.eval(f"(document.getElementById({json.dumps(element_id)}).click(), true)")


def _fill(browser: Browser, **fields: str) -> None:
    for element_id, value in fields.items():
        browser.eval(f"(document.getElementById({json.dumps(element_id.replace('_', '-'))}).value = "
                     f"{json.dumps(value)}, true)")


def _text(browser: Browser, element_id: str) -> str:
    return str(browser.eval(f"document.getElementById({json.dumps(element_id)}).textContent"))


def _phone(browser: Browser, fn: str, *args: Any, timeout: float = 15.0) -> Any:
    return browser.eval(f"window.rtc2sipPhone.{fn}({', '.join(json.dumps(a) for a in args)})", timeout=timeout)


def _metrics(gw: Gateway) -> dict[str, float]:
    """`name{labels}` -> value of /metrics (labels as printed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _api(gw: Gateway, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}{path}", timeout=5) as r:
        return json.loads(r.read())


_LEGS_JS = """Array.from(document.querySelectorAll('#calls .call tr[data-leg]')).map((tr) => {
  const f = (name) => tr.querySelector(`[data-field="${name}"]`).textContent;
  return {leg: tr.dataset.leg, role: tr.dataset.role, packets_in: Number(f('packets_in')),
          packets_out: Number(f('packets_out')), codec: f('codec'), path: f('path'), security: f('security'),
          jitter: f('jitter_ms'), lost: f('lost')};
})"""


_SPARKS_JS = """Array.from(document.querySelectorAll('#calls .call .plots svg.spark')).map((svg) => ({
  leg: svg.dataset.leg, metric: svg.dataset.metric, samples: Number(svg.dataset.samples),
  lines: svg.querySelectorAll('polyline').length}))"""


def _screenshot(url: str, path: str) -> None:
    """Chromium's own headless screenshot (the harness driver has no screenshot command)."""
    with tempfile.TemporaryDirectory(prefix="rtc2sip-shot-") as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=3000",
             f"--screenshot={path}", url],
            check=True, timeout=60, capture_output=True,
        )


@pytest.mark.e2e
def test_served_web_phone_calls_baresip_and_live_view_shows_both_legs(
    make_gateway: Callable[..., Gateway],
    make_browser: Callable[..., Browser],
    make_baresip: Callable[..., Baresip],
    artifacts: Artifacts,
) -> None:
    gw = make_gateway()
    base = f"http://127.0.0.1:{gw.ws_port}"
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ,
                       contacts=[gw.aor("alice")])
    before = _metrics(gw)
    assert before["rtc2sip_calls_active"] == 0

    # -- the real page, from the gateway itself, filled in and clicked like a user would --
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    open_page(alice, f"{base}/", "document.body.dataset.ready === 'true' && window.rtc2sipPhone")
    assert alice.eval("document.getElementById('domain').value") == gw.domain  # from /api/config
    assert alice.eval("document.getElementById('server').value") == f"ws://127.0.0.1:{gw.ws_port}/"
    _fill(alice, user="alice", display_name="Alice")
    _click(alice, "register")
    wait_for(lambda: _phone(alice, "state")["registered"], 15, "the web phone to register", interval=0.2)
    assert _text(alice, "reg-status") == f"Registered as {gw.aor('alice')}"
    assert any(r["aor"] == gw.aor("alice") and r["transport"] == "ws"
               for r in _api(gw, "/api/registrations")["registrations"])

    _fill(alice, target="bob")
    _click(alice, "call")
    wait_for(lambda: (_phone(alice, "state")["call"] or {}).get("established"), 20, "the call to be up",
             interval=0.2)
    bob.wait_event("CALL_ESTABLISHED")

    # -- media both ways, and baresip's tone in the page's own analyser --
    def media() -> dict[str, Any] | None:
        s = _phone(alice, "stats")
        ok = s and s["packetsReceived"] >= 50 and s["packetsSent"] >= 50 and s["totalAudioEnergy"] > 0
        return s if ok else None

    stats = wait_for(media, 20, "audio packets with energy in the web phone", interval=0.25)
    assert stats["dtlsState"] == "connected", stats
    heard: dict[str, Any] = {}

    def hears() -> bool:
        heard.update(_phone(alice, "tone"))
        return abs(float(heard["frequency"]) - PHONE_HZ) <= 25

    wait_for(hears, 15, f"the web phone to hear {PHONE_HZ:g} Hz (last: {heard})", interval=0.2)
    # the page's own statistics panel shows the call
    wait_for(lambda: _text(alice, "st-dtls").startswith("connected"), 5, "the stats panel", interval=0.2)
    assert _text(alice, "st-codec") != "\u2013"  # an en dash: no figure yet
    assert re.match(r"^\d+ / \d+$", _text(alice, "st-packets"))

    # -- the live view, in another browser, during the call --
    viewer = make_browser("viewer", tone_hz=None)
    open_page(viewer, f"{base}/calls", LIVE_VIEW_READY)

    def both_legs_flowing() -> list[dict[str, Any]] | None:
        legs = viewer.eval(_LEGS_JS)
        by_name = {leg["leg"]: leg for leg in legs}
        if set(by_name) != {"browser", "legacy"}:
            return None
        if all(leg["packets_in"] > 0 and leg["packets_out"] > 0 for leg in legs):
            return list(legs)
        return None

    legs = wait_for(both_legs_flowing, 15, "/calls to show both legs with packets", interval=0.3)
    by_name = {leg["leg"]: leg for leg in legs}
    assert by_name["browser"]["role"] == "caller" and by_name["legacy"]["role"] == "callee"
    assert by_name["legacy"]["codec"].upper().startswith("PCMU"), legs
    assert "DTLS connected" in by_name["browser"]["security"], legs
    assert "⇄ 127.0.0.1:" in by_name["browser"]["path"], legs  # the ICE pair the browser nominated
    assert "127.0.0.1:" in by_name["legacy"]["path"], legs

    shot = artifacts.path("calls.png")
    _screenshot(f"{base}/calls", str(shot))
    assert shot.stat().st_size > 10_000

    [call] = _api(gw, "/api/calls")["active"]
    assert call["state"] == "answered" and call["from"] == gw.aor("alice") and call["to"] == gw.aor("bob")
    during = _metrics(gw)
    assert during["rtc2sip_calls_active"] == 1
    for leg in ("webrtc", "legacy"):
        for d in ("in", "out"):
            assert during[f'rtc2sip_media_packets_total{{leg="{leg}",direction="{d}"}}'] > 0, (leg, d)

    # -- chat both ways, DTMF from the keypad, mute --
    _fill(alice, chat_to="bob", chat_text="hello bob from the web phone")
    _click(alice, "chat-send")
    bob.wait_message("hello bob from the web phone")
    bob.send_message(gw.aor("alice"), "hello web phone")
    wait_for(lambda: "hello web phone" in _text(alice, "messages"), 10, "the page to show bob's MESSAGE")
    bob.mark_events()
    alice.eval("(document.querySelector('#keypad button[data-tone=\"5\"]').click(), true)")
    assert _text(alice, "dtmf-sent") == "Sent: 5"
    assert bob.wait_event("CALL_DTMF_START").get("param") == "5"  # RFC 4733 through the media plane
    _click(alice, "mute")
    wait_for(lambda: _phone(alice, "state")["call"]["muted"], 5, "mute")
    _click(alice, "mute")
    wait_for(lambda: not _phone(alice, "state")["call"]["muted"], 5, "unmute")
    # hold and resume: two re-INVITEs through the breaker; baresip's tone comes back after them. Resume is
    # clicked at once: the page must wait for the hold re-INVITE's answer itself (JsSIP drops an
    # offer made while one is pending)
    _click(alice, "hold")
    wait_for(lambda: _phone(alice, "state")["call"]["hold"]["local"], 10, "hold")
    assert _text(alice, "call-status") == "On hold: sip:bob@example.test"
    _click(alice, "hold")
    wait_for(lambda: not _phone(alice, "state")["call"]["hold"]["local"], 10, "resume")
    wait_for(hears, 15, f"the web phone to hear {PHONE_HZ:g} Hz again after hold (last: {heard})", interval=0.2)
    # the time plots: a sparkline of jitter, loss and bitrate per leg, several one-second samples drawn
    def sparklines() -> list[dict[str, Any]] | None:
        sparks = viewer.eval(_SPARKS_JS)
        drawn = {(s["leg"], s["metric"]) for s in sparks if s["samples"] >= 3 and s["lines"] >= 1}
        want = {(leg, m) for leg in ("browser", "legacy") for m in ("jitter_ms", "loss_pct", "kbps")}
        return list(sparks) if drawn >= want else None

    wait_for(sparklines, 15, "/calls to draw a sparkline per leg and metric", interval=0.5)
    [active] = _api(gw, "/api/calls")["active"]
    history = _api(gw, f"/api/calls/{active['id']}/history")
    assert {leg["name"] for leg in history["legs"]} == {"browser", "legacy"}, history
    for leg in history["legs"]:
        samples = leg["samples"]
        assert len(samples["t"]) >= 3 and all(len(v) == len(samples["t"]) for v in samples.values()), leg
        assert samples["kbps_in"][-1] > 0 and samples["kbps_out"][-1] > 0, leg  # media both ways, each leg

    # -- hang up from the page; baresip heard the browser's tone --
    _click(alice, "hangup")
    bob.wait_event("CALL_CLOSED")
    tone = bob.recorded_tone()
    assert tone.rms > 0.01 and abs(tone.frequency - BROWSER_HZ) <= 25, tone

    def ended() -> dict[str, Any] | None:
        calls = _api(gw, "/api/calls")
        return calls["ended"][0] if not calls["active"] and calls["ended"] else None

    last = wait_for(ended, 10, "the call in the ended list")
    # KNOWN RACE (breaker/media, reported): JsSIP sends its BYE on the WebSocket, then closes the peer
    # connection; the DTLS close_notify (UDP) often arrives first and the media plane ends the call
    # with "media: dtls closed by the browser" before the BYE is read. Either way the call ended here.
    assert last["cause"] in ("BYE from browser", "media: dtls closed by the browser"), last
    assert last["answered"], last
    assert all(leg["media"]["packets_in"] > 50 for leg in last["legs"]), last
    wait_for(lambda: viewer.eval("document.querySelectorAll('#ended tr[data-call-id]').length") == 1, 5,
             "/calls to list the ended call")
    # its quality summary: per leg packets, loss, jitter and a MOS estimate (simplified E-model)
    quality = {leg["name"]: leg for leg in last["quality"]["legs"]}
    assert set(quality) == {"browser", "legacy"}, last["quality"]
    for leg in quality.values():
        assert leg["media"] and leg["packets_in"] > 50 and 0 <= leg["loss_pct"] < 5, leg
        assert leg["mos"] is not None and 3.5 <= leg["mos"] <= 4.5, leg  # loopback: no loss, little delay
    assert viewer.eval("document.querySelectorAll('#ended [data-field=\"quality\"] li[data-mos]').length") == 2
    after = _metrics(gw)
    assert after["rtc2sip_calls_active"] == 0
    assert after["rtc2sip_calls_total"] == 1
    assert after["rtc2sip_calls_answered_total"] == 1
    ended_by = {k: v for k, v in after.items() if k.startswith("rtc2sip_calls_ended_total{")}
    assert sum(ended_by.values()) == 1 and set(ended_by) <= {'rtc2sip_calls_ended_total{cause="bye"}',
                                                             'rtc2sip_calls_ended_total{cause="media_closed"}'}
    assert not any(k.startswith("rtc2sip_calls_failed_total{") for k in after)
    for key, value in during.items():
        if key.startswith("rtc2sip_media_packets_total") or key.startswith("rtc2sip_media_bytes_total"):
            assert after[key] >= value, key  # counters never go down when a session is deleted
    assert after['rtc2sip_sip_requests_received_total{method="INVITE"}'] >= 1
    assert after['rtc2sip_sip_requests_received_total{method="BYE"}'] >= 1


@pytest.mark.e2e
def test_served_web_phone_answers_a_call_from_baresip(
    make_gateway: Callable[..., Gateway],
    make_browser: Callable[..., Browser],
    make_baresip: Callable[..., Baresip],
) -> None:
    gw = make_gateway()
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ)
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    open_page(alice, f"http://127.0.0.1:{gw.ws_port}/", "document.body.dataset.ready === 'true' && window.rtc2sipPhone")
    _fill(alice, user="alice")
    _click(alice, "register")
    wait_for(lambda: _phone(alice, "state")["registered"], 15, "the web phone to register", interval=0.2)

    bob.dial(gw.aor("alice"))
    wait_for(lambda: _phone(alice, "state")["ringing"], 15, "the web phone to ring", interval=0.2)
    assert alice.eval("document.getElementById('incoming').hidden") is False
    assert _text(alice, "incoming-text") == f"Incoming call from {gw.aor('bob')}"
    _click(alice, "answer")
    bob.wait_event("CALL_ESTABLISHED")
    heard: dict[str, Any] = {}

    def hears() -> bool:
        heard.update(_phone(alice, "tone"))
        return abs(float(heard["frequency"]) - PHONE_HZ) <= 25

    wait_for(hears, 20, f"the web phone to hear {PHONE_HZ:g} Hz (last: {heard})", interval=0.2)
    [call] = _api(gw, "/api/calls")["active"]
    assert [leg["name"] for leg in call["legs"]] == ["legacy", "browser"]  # caller first

    bob.hangup()
    wait_for(lambda: _phone(alice, "state")["call"] is None, 10, "the page to see the call end", interval=0.2)
    assert _text(alice, "call-status").startswith("Call ended")
    tone = bob.recorded_tone()
    assert tone.rms > 0.01 and abs(tone.frequency - BROWSER_HZ) <= 25, tone
    last = _api(gw, "/api/calls")["ended"][0]
    assert last["cause"] == "BYE from legacy" and last["answered"], last


_REMOTE_VIDEO_JS = """(() => {
  const v = document.getElementById('remote-video');
  if (!v || !v.srcObject) return null;
  const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
  return { width: v.videoWidth, height: v.videoHeight, frames: q ? q.totalVideoFrames : 0,
           hidden: document.getElementById('videos').hidden };
})()"""


def _remote_video_playing(browser: Browser, what: str, size: tuple[int, int]) -> dict[str, Any]:
    """Wait until the page's remote <video> shows `size` frames, then that it keeps getting new ones."""
    def shown() -> dict[str, Any] | None:
        v = browser.eval(_REMOTE_VIDEO_JS)
        return v if v and (v["width"], v["height"]) == size and v["frames"] >= 5 else None

    first = wait_for(shown, 20, f"the web phone to show {what}", interval=0.3)
    assert isinstance(first, dict) and not first["hidden"], first
    later = wait_for(lambda: (v := browser.eval(_REMOTE_VIDEO_JS)) and v["frames"] >= first["frames"] + 10 and v,
                     10, f"more frames of {what}", interval=0.3)
    assert isinstance(later, dict)
    return later


@pytest.mark.e2e
def test_web_phone_video_calls(make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]) -> None:
    """The real page's Video toggle: a video call to sip:testpattern@ shows the pattern; an audio call to
    sip:echo@ gets the camera added mid-call (a re-INVITE through the breaker) and shows it echoed."""
    gw = make_gateway()
    base = f"http://127.0.0.1:{gw.ws_port}"
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    open_page(alice, f"{base}/", "document.body.dataset.ready === 'true' && window.rtc2sipPhone")
    _fill(alice, user="alice")
    _click(alice, "register")
    wait_for(lambda: _phone(alice, "state")["registered"], 15, "the web phone to register", interval=0.2)

    # -- Video on, then call the test pattern --
    _click(alice, "video")
    assert _phone(alice, "state")["video"] is True
    _fill(alice, target="testpattern")
    _click(alice, "call")
    wait_for(lambda: (_phone(alice, "state")["call"] or {}).get("established"), 20, "the video call to be up",
             interval=0.2)
    assert _phone(alice, "state")["call"]["video"] is True  # the camera is sent
    print(f"test pattern in the web phone: {_remote_video_playing(alice, 'the test pattern', (640, 360))}")
    _click(alice, "hangup")
    wait_for(lambda: _phone(alice, "state")["call"] is None or _phone(alice, "state")["call"]["ended"], 10,
             "the call to end", interval=0.2)

    # -- Video off: an audio call to the echo, then the camera added mid-call --
    _click(alice, "video")
    assert _phone(alice, "state")["video"] is False
    _fill(alice, target="echo")
    _click(alice, "call")
    wait_for(lambda: (_phone(alice, "state")["call"] or {}).get("established"), 20, "the audio call to be up",
             interval=0.2)
    assert _phone(alice, "state")["call"]["video"] is False
    wait_for(lambda: (s := _phone(alice, "stats")) and s["packetsReceived"] >= 50 and s["totalAudioEnergy"] > 0,
             20, "the echo's audio", interval=0.25)
    _click(alice, "video")

    def renegotiated() -> dict[str, Any] | None:
        return next((e for e in _phone(alice, "events") if e.get("type") in ("video", "videoError")), None)

    try:
        done = wait_for(renegotiated, 15, "the camera to be added (a re-INVITE)", interval=0.2)
    finally:
        print(f"page events: {_phone(alice, 'events')[-12:]}")
    assert isinstance(done, dict) and done == {**done, "type": "video", "on": True, "renegotiated": True}, done
    assert _phone(alice, "state")["call"]["video"] is True
    # the fake camera is 640x480: the browser sees its own picture come back through the echo
    print(f"own camera through the echo: {_remote_video_playing(alice, 'its own camera echoed', (640, 480))}")
    assert _phone(alice, "state")["call"]["established"]
    _click(alice, "hangup")


@pytest.mark.e2e
def test_failed_call_counted_by_cause(make_call: CallMaker) -> None:
    """A browser calls baresip, which rejects the call (486 through the RTCWeb Breaker): /api/calls lists
    it with its cause, /metrics counts it as failed by that cause and not as answered. (A call the proxy
    answers itself, 480 for a user nobody registered, is no breaker call: it is counted only in
    rtc2sip_sip_responses_sent_total.)"""
    call = make_call(None, phone_kw={"answermode": "manual"}, phone_hz=PHONE_HZ, browser_hz=BROWSER_HZ)
    gw, alice, bob = call.gateway, call.browser, call.phone
    before = _metrics(gw)
    alice.call(gw.aor("bob"))
    bob.wait_event("CALL_INCOMING")
    bob.hangup()  # while ringing: a rejection
    failed = alice.wait_event("failed")
    print(f"the call failed: {failed}")

    def ended() -> dict[str, Any] | None:
        calls = _api(gw, "/api/calls")
        return calls["ended"][0] if not calls["active"] and calls["ended"] else None

    last = wait_for(ended, 10, "the failed call in the ended list")
    assert not last["answered"] and last["cause"], last
    after = _metrics(gw)
    failed_by = {k: v for k, v in after.items() if k.startswith("rtc2sip_calls_failed_total{")}
    print(f"cause {last['cause']!r} {last['cause_label']!r}; {failed_by}")
    assert last["cause_label"] == f"sip_{failed['status']}", (last, failed)
    assert failed_by == {f'rtc2sip_calls_failed_total{{cause="{last["cause_label"]}"}}': 1}, failed_by
    assert after["rtc2sip_calls_total"] - before.get("rtc2sip_calls_total", 0) == 1
    assert after["rtc2sip_calls_answered_total"] == before.get("rtc2sip_calls_answered_total", 0)
    assert after["rtc2sip_calls_active"] == 0

"""The built-in services with real peers (issue 5 items 4 and 5).

- Chromium + JsSIP calls ``sip:echo@DOMAIN``: the RTCWeb Breaker makes the services' UAS the legacy
  leg, and the browser hears its own tone back through ICE, DTLS-SRTP and the media plane's relay.
- The same with the fake camera on: the browser decodes its own VP8 coming back (framesDecoded grows).
- baresip calls ``sip:echo@DOMAIN`` (no breaker: plain RTP to the service) and records its own tone.
- Chromium calls ``sip:diag@DOMAIN`` and receives the verdict in a SIP MESSAGE, then the service's BYE;
  the live view (``/calls``) shows the same verdict.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Gateway
from harness.call import call_service
from harness.pages import LIVE_VIEW_READY, open_page
from harness.procs import wait_for
from harness.video import VIDEO_CALLS, video_stats

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0


@pytest.mark.e2e
def test_browser_hears_itself_through_echo(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway()
    alice = call_service(make_browser, gw, "echo", tone_hz=BROWSER_HZ)
    stats = alice.wait_media(min_packets=50)
    assert stats["transport"]["dtlsState"] == "connected"
    assert stats["inbound"]["packetsReceived"] >= 50
    assert stats["inbound"]["totalAudioEnergy"] > 0
    assert abs(alice.wait_tone(BROWSER_HZ)["frequency"] - BROWSER_HZ) <= 25  # its own tone came back
    alice.hangup()


@pytest.mark.e2e
def test_browser_sees_and_hears_itself_through_echo(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway()
    alice = call_service(make_browser, gw, "echo", tone_hz=BROWSER_HZ, page_js=[VIDEO_CALLS])
    answer = next(e["sdp"] for e in alice.events() if e.get("type") == "sdp" and e.get("originator") == "remote")
    assert "VP8/90000" in answer and "m=video 0 " not in answer, answer

    def decoding() -> dict[str, Any] | None:
        s = video_stats(alice)
        return s if s and s["framesDecoded"] >= 10 else None

    first = wait_for(decoding, 20.0, "browser alice to decode 10 frames of its own video", interval=0.25)
    assert isinstance(first, dict)
    time.sleep(2.0)
    second = video_stats(alice)
    print(f"echoed video in the browser: {first} then, 2 s later, {second}")
    assert second is not None and second["framesDecoded"] - first["framesDecoded"] >= 10, (first, second)
    assert second["codec"] == "video/VP8", second
    assert abs(alice.wait_tone(BROWSER_HZ)["frequency"] - BROWSER_HZ) <= 25  # and its own tone
    log = gw.log_text()
    alice.hangup()
    assert "echo" in log


@pytest.mark.e2e
def test_phone_hears_itself_through_echo(
    make_gateway: Callable[..., Gateway], make_baresip: Callable[..., Baresip]
) -> None:
    gw = make_gateway()
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ)
    bob.dial(gw.aor("echo"))
    bob.wait_event("CALL_ESTABLISHED")
    time.sleep(3.0)
    bob.hangup()
    bob.wait_event("CALL_CLOSED")
    tone = bob.recorded_tone()
    assert tone.rms > 0.01, tone
    assert abs(tone.frequency - PHONE_HZ) <= 25, tone


@pytest.mark.e2e
def test_browser_gets_the_diag_verdict(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway(gateway_options={"diag_duration": 2})
    alice = call_service(make_browser, gw, "diag", tone_hz=BROWSER_HZ)

    def verdict() -> dict[str, Any] | None:
        return next((m for m in alice.messages() if "diag" in m.get("from", "")), None)

    found = wait_for(verdict, 15.0, "the diag MESSAGE")
    assert isinstance(found, dict)
    body = str(found["body"])
    # through the breaker the diagnosed RTP is the media plane's relay: as announced; the browser leg
    # is described by its ICE pair
    assert body.startswith("media as announced"), body
    assert "Browser leg (WebRTC): ICE pair" in body and "DTLS connected" in body, body
    alice.wait_event("ended", timeout=10.0)  # the service hangs up after its verdict

    # the live view's data: the verdict, and the relay's own view of the legacy leg (no NAT on loopback)
    api = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{gw.ws_port}/api/calls", timeout=5).read())
    assert api["diagnostics"][0]["verdict"] == "ok" and api["diagnostics"][0]["text"] == body
    legacy = next(leg for leg in api["ended"][0]["legs"] if not leg["webrtc"])
    assert legacy["media"]["announced"] == legacy["media"]["remote"] and legacy["media"]["nat"] is False, legacy

    # the live view's page shows it
    viewer = make_browser("viewer", tone_hz=None)
    open_page(viewer, f"http://127.0.0.1:{gw.ws_port}/calls", LIVE_VIEW_READY)
    row = viewer.eval("""(() => {
      const tr = document.querySelector('#diagnostics tbody tr');
      return tr ? { verdict: tr.querySelector('[data-field=verdict]').textContent,
                    text: tr.querySelector('[data-field=text]').textContent } : null; })()""")
    assert row == {"verdict": "media as announced", "text": body}, row

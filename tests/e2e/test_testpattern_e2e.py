"""``sip:testpattern@DOMAIN`` with a real browser (issue 5 item 5: "the test pattern decodes in the
browser (framesDecoded grows)").

Chromium + JsSIP calls the service with audio and video: the RTCWeb Breaker makes the services' UAS
the plain-RTP legacy leg, the media plane relays its VP8 and its tone to the browser over ICE and
DTLS-SRTP (BUNDLE). The page's own call() is audio-only, so the test patches, in the page, JsSIP's
``UA.prototype.call`` to ask for video (the fake camera) and ``RTCPeerConnection`` to keep a handle on
the call's peer connection for the video figures of getStats().
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import Browser, Gateway
from harness.call import call_service
from harness.procs import wait_for
from harness.video import VIDEO_CALLS, video_stats

BROWSER_HZ = 440.0  # the browser's own microphone: not what it must hear
SERVICE_HZ = 1000.0

@pytest.mark.e2e
def test_browser_decodes_the_test_pattern(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway()
    alice = call_service(make_browser, gw, "testpattern", tone_hz=BROWSER_HZ, page_js=[VIDEO_CALLS])
    offer = next(e["sdp"] for e in alice.events() if e.get("type") == "sdp" and e.get("originator") == "local")
    answer = next(e["sdp"] for e in alice.events() if e.get("type") == "sdp" and e.get("originator") == "remote")
    assert "m=video" in offer, offer
    assert "VP8/90000" in answer and "m=video 0 " not in answer, answer

    def decoding() -> dict[str, Any] | None:
        s = video_stats(alice)
        return s if s and s["framesDecoded"] >= 10 else None

    first = wait_for(decoding, 20.0, "browser alice to decode 10 frames of the test pattern", interval=0.25)
    assert isinstance(first, dict)
    time.sleep(2.0)
    second = video_stats(alice)
    assert second is not None
    print(f"test pattern in the browser: {first} then, 2 s later, {second}")
    assert second["framesDecoded"] - first["framesDecoded"] >= 15, (first, second)  # ~15 fps sent
    assert (second["frameWidth"], second["frameHeight"]) == (640, 360), second
    assert second["codec"] == "video/VP8", second
    assert second["keyFramesDecoded"] >= 1, second

    heard = alice.wait_tone(SERVICE_HZ)
    print(f"tone heard: {heard}")
    stats = alice.stats()
    assert stats is not None and stats["inbound"]["totalAudioEnergy"] > 0
    assert stats["transport"]["dtlsState"] == "connected"
    alice.hangup()
    alice.wait_event("ended")

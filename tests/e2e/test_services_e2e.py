"""The built-in services with real peers (issue 5 items 4 and 5).

- Chromium + JsSIP calls ``sip:echo@DOMAIN``: the RTCWeb Breaker makes the services' UAS the legacy
  leg, and the browser hears its own tone back through ICE, DTLS-SRTP and the media plane's relay.
- baresip calls ``sip:echo@DOMAIN`` (no breaker: plain RTP to the service) and records its own tone.
- Chromium calls ``sip:diag@DOMAIN`` and receives the verdict in a SIP MESSAGE, then the service's BYE.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Gateway
from harness.procs import wait_for

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0


@pytest.mark.e2e
def test_browser_hears_itself_through_echo(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway()
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    alice.call(gw.aor("echo"))
    alice.wait_event("confirmed")
    stats = alice.wait_media(min_packets=50)
    assert stats["transport"]["dtlsState"] == "connected"
    assert stats["inbound"]["packetsReceived"] >= 50
    assert stats["inbound"]["totalAudioEnergy"] > 0
    assert abs(alice.wait_tone(BROWSER_HZ)["frequency"] - BROWSER_HZ) <= 25  # its own tone came back
    alice.hangup()


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
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    alice.call(gw.aor("diag"))
    alice.wait_event("confirmed")

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

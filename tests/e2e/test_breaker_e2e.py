"""The RTCWeb Breaker with real peers: Chromium + JsSIP on one side, baresip (PCMU only, plain RTP/AVP)
on the other, two-way audio proven at each end by packets, energy and the tone the other side plays.

The breaker engages on its own (`breaker = "auto"`, the default): the call crosses between a
WebSocket/SAVPF endpoint and a plain-RTP one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness import Baresip, Browser, Gateway

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0


def _assert_browser_hears(alice: Browser, hz: float) -> None:
    stats = alice.wait_media(min_packets=50)
    assert stats["transport"]["dtlsState"] == "connected"
    assert stats["inbound"]["packetsReceived"] >= 50
    assert stats["inbound"]["totalAudioEnergy"] > 0
    assert abs(alice.wait_tone(hz)["frequency"] - hz) <= 25


def _assert_phone_heard(bob: Baresip, hz: float) -> None:
    tone = bob.recorded_tone()
    assert tone.rms > 0.01, tone
    assert abs(tone.frequency - hz) <= 25, tone


@pytest.mark.e2e
def test_browser_calls_legacy_phone(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    gw = make_gateway()
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ)
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    alice.call(gw.aor("bob"))
    alice.wait_event("confirmed")
    _assert_browser_hears(alice, PHONE_HZ)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    _assert_phone_heard(bob, BROWSER_HZ)


@pytest.mark.e2e
def test_legacy_phone_calls_browser(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    gw = make_gateway()
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ)
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"), auto_answer=True)["status"] == 200
    bob.dial(gw.aor("alice"))
    bob.wait_event("CALL_ESTABLISHED")
    _assert_browser_hears(alice, PHONE_HZ)
    bob.hangup()
    alice.wait_event("ended")
    _assert_phone_heard(bob, BROWSER_HZ)

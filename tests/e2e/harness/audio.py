"""The audio checks every breaker test makes at each end of a call: packets both ways with energy over
a connected DTLS transport, and the other side's tone at its frequency."""

from __future__ import annotations

from typing import Any

from .baresip import Baresip
from .browser import Browser
from .tone import ToneResult

TONE_TOLERANCE_HZ = 25.0


def assert_browser_hears(browser: Browser, hz: float, min_packets: int = 50) -> dict[str, Any]:
    """``browser`` received ``min_packets`` audio packets with energy and sent some
    (:meth:`Browser.wait_media`), over a connected DTLS transport, and hears a tone at ``hz``; returns
    its stats, with the tone it heard under ``"tone"``."""
    stats = browser.wait_media(min_packets=min_packets)
    assert stats["transport"]["dtlsState"] == "connected", stats
    assert stats["inbound"]["packetsReceived"] >= min_packets and stats["inbound"]["totalAudioEnergy"] > 0, stats
    tone = browser.wait_tone(hz)
    assert abs(tone["frequency"] - hz) <= TONE_TOLERANCE_HZ, tone
    return stats | {"tone": tone}


def assert_phone_heard(phone: Baresip, hz: float) -> ToneResult:
    """What ``phone`` recorded of the call has energy and is a tone at ``hz``."""
    tone = phone.recorded_tone()
    print(f"{phone.name} heard {tone}")
    assert tone.rms > 0.01, tone
    assert abs(tone.frequency - hz) <= TONE_TOLERANCE_HZ, tone
    return tone

"""The Media Coder with real peers (issue 4): when the browser and the legacy phone share no audio
codec, the gateway transcodes (``enable-media-coder``); when they share one, it relays untouched.

Chromium + JsSIP restricted to Opus on one side (its own SDP and the offers it receives, TESTING.md's
transcoding traps), baresip with PCMU or G.722 only on the other; two-way audio is proven by the tone
each end hears, and the gateway's log says whether the call was transcoded and what the coder did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Gateway
from harness.audio import assert_browser_hears, assert_phone_heard

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0
CODER_TOML = '[webrtc2sip]\nenable-media-coder = true\ncodecs = ["opus", "pcmu", "pcma", "g722"]\n'


def _coder_gateway(make_gateway: Callable[..., Gateway], workers: int = 0) -> Gateway:
    return make_gateway(extra_toml=CODER_TOML + f"\n[media]\nworkers = {workers}\n")


def _coder_report(gw: Gateway) -> dict[str, Any]:
    """What the gateway logged of the transcoded call when it ended (MediaSession.coder_stats)."""
    return gw.logged_dict(r"media session \S+: audio transcoding ended: (\{.*\})", "the transcoded call's end")


def _assert_transcoded(gw: Gateway, browser_codec: str, phone_codec: str) -> None:
    report = _coder_report(gw)
    assert report["codecs"].startswith(browser_codec) and f"<-> {phone_codec}/" in report["codecs"], report
    for direction in ("to_legacy", "to_webrtc"):
        assert report[direction]["packets_in"] >= 50, report  # a second and more of audio each way
        assert report[direction]["packets_out"] >= 50, report
    assert " transcoded, " in gw.log_text()


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [0, 1])
def test_opus_browser_calls_pcmu_phone(
    workers: int,
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    """With a media worker (``[media] workers = 1``) the worker's own coder pool transcodes."""
    gw = _coder_gateway(make_gateway, workers)
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ,
                       audio_codecs="PCMU/8000/1")
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"), codecs=["opus", "telephone-event"])["status"] == 200
    alice.call(gw.aor("bob"))
    alice.wait_event("confirmed")
    heard = assert_browser_hears(alice, PHONE_HZ)
    print(f"alice heard {heard['tone']}, inbound {heard['inbound']}")
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    assert_phone_heard(bob, BROWSER_HZ)
    _assert_transcoded(gw, "opus", "pcmu")


@pytest.mark.e2e
def test_pcmu_phone_calls_opus_browser(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    gw = _coder_gateway(make_gateway)
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ,
                       audio_codecs="PCMU/8000/1")
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    # The offer Chromium receives is reduced to Opus too: it answers (and sends) Opus only.
    reg = alice.register(gw.ws_url, gw.aor("alice"), auto_answer=True, codecs=["opus", "telephone-event"])
    assert reg["status"] == 200
    bob.dial(gw.aor("alice"))
    bob.wait_event("CALL_ESTABLISHED")
    heard = assert_browser_hears(alice, PHONE_HZ)
    assert heard["inbound"]["codec"]["mimeType"] == "audio/opus"
    bob.hangup()
    alice.wait_event("ended")
    assert_phone_heard(bob, BROWSER_HZ)
    _assert_transcoded(gw, "opus", "pcmu")


@pytest.mark.e2e
def test_common_codec_is_not_transcoded(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    """The coder is on, but the browser (all its codecs) and the phone (PCMU) share PCMU: relayed."""
    gw = _coder_gateway(make_gateway)
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ,
                       audio_codecs="PCMU/8000/1")
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    alice.call(gw.aor("bob"))
    alice.wait_event("confirmed")
    heard = assert_browser_hears(alice, PHONE_HZ)
    assert heard["inbound"]["codec"]["mimeType"] == "audio/PCMU"
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    assert_phone_heard(bob, BROWSER_HZ)
    log = gw.log_text()  # " transcoded, " would be there since the answer
    assert " transcoded, " not in log and "transcoding ended" not in log


@pytest.mark.e2e
def test_opus_browser_calls_g722_phone(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> None:
    """The browser without G.722 (Opus, PCMU, PCMA), baresip with G.722 only: Opus <-> G.722."""
    gw = _coder_gateway(make_gateway)
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, tone_hz=PHONE_HZ,
                       audio_codecs="G722/16000/1")  # baresip names it by its audio rate
    alice = make_browser("alice", tone_hz=BROWSER_HZ)
    codecs = ["opus", "pcmu", "pcma", "telephone-event"]
    assert alice.register(gw.ws_url, gw.aor("alice"), codecs=codecs)["status"] == 200
    alice.call(gw.aor("bob"))
    alice.wait_event("confirmed")
    assert_browser_hears(alice, PHONE_HZ)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    assert_phone_heard(bob, BROWSER_HZ)
    _assert_transcoded(gw, "opus", "g722")

"""The Media Coder with real peers (issue 4): when the browser and the legacy phone share no audio
codec, the gateway transcodes (``enable-media-coder``); when they share one, it relays untouched.

Chromium + JsSIP restricted to Opus on one side (its own SDP and the offers it receives, TESTING.md's
transcoding traps), baresip with PCMU or G.722 only on the other; two-way audio is proven by the tone
each end hears, and the gateway's log says whether the call was transcoded and what the coder did.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import Gateway
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, CallMaker

CODER_TOML = '[webrtc2sip]\nenable-media-coder = true\ncodecs = ["opus", "pcmu", "pcma", "g722"]\n'


def _coder_gateway(workers: int = 0) -> dict[str, Any]:
    """The make_gateway arguments of a gateway with the coder on."""
    return {"extra_toml": CODER_TOML + f"\n[media]\nworkers = {workers}\n"}


PCMU_ONLY = {"audio_codecs": "PCMU/8000/1"}


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
    workers: int, make_call: CallMaker
) -> None:
    """With a media worker (``[media] workers = 1``) the worker's own coder pool transcodes."""
    call = make_call("browser", gateway_kw=_coder_gateway(workers), phone_kw=PCMU_ONLY,
                     register_kw={"codecs": ["opus", "telephone-event"]})
    heard = assert_browser_hears(call.browser, PHONE_HZ)
    print(f"alice heard {heard['tone']}, inbound {heard['inbound']}")
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    _assert_transcoded(call.gateway, "opus", "pcmu")


@pytest.mark.e2e
def test_pcmu_phone_calls_opus_browser(make_call: CallMaker) -> None:
    # The offer Chromium receives is reduced to Opus too: it answers (and sends) Opus only.
    call = make_call("phone", gateway_kw=_coder_gateway(), phone_kw=PCMU_ONLY,
                     register_kw={"codecs": ["opus", "telephone-event"]})
    heard = assert_browser_hears(call.browser, PHONE_HZ)
    assert heard["inbound"]["codec"]["mimeType"] == "audio/opus"
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    _assert_transcoded(call.gateway, "opus", "pcmu")


@pytest.mark.e2e
def test_common_codec_is_not_transcoded(make_call: CallMaker) -> None:
    """The coder is on, but the browser (all its codecs) and the phone (PCMU) share PCMU: relayed."""
    call = make_call("browser", gateway_kw=_coder_gateway(), phone_kw=PCMU_ONLY)
    heard = assert_browser_hears(call.browser, PHONE_HZ)
    assert heard["inbound"]["codec"]["mimeType"] == "audio/PCMU"
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    log = call.gateway.log_text()  # " transcoded, " would be there since the answer
    assert " transcoded, " not in log and "transcoding ended" not in log


@pytest.mark.e2e
def test_opus_browser_calls_g722_phone(make_call: CallMaker) -> None:
    """The browser without G.722 (Opus, PCMU, PCMA), baresip with G.722 only: Opus <-> G.722."""
    call = make_call("browser", gateway_kw=_coder_gateway(),
                     phone_kw={"audio_codecs": "G722/16000/1"},  # baresip names it by its audio rate
                     register_kw={"codecs": ["opus", "pcmu", "pcma", "telephone-event"]})
    assert_browser_hears(call.browser, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    _assert_transcoded(call.gateway, "opus", "g722")

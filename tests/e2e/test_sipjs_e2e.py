"""SIP.js 0.21 as a first-class client of the gateway (issue 12 item 1): Chromium + SIP.js
(js/page/sipjs_app.js: UserAgent, Registerer, Inviter, Invitation and SIP.js's default Web
SessionDescriptionHandler, with hold and DTMF done as its SessionManager does them) through the
RTCWeb Breaker to baresip (PCMU only, plain RTP/AVP), both call directions, audio proven at each end
by packets, energy and the other side's tone.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, Caller, CallMaker

SIPJS: dict[str, Any] = {"stack": "sipjs"}


@pytest.mark.e2e
@pytest.mark.parametrize("caller", ["browser", "phone"])
def test_sipjs_call_with_tones_both_ways(caller: Caller, make_call: CallMaker) -> None:
    """SIP.js registers (by default `Contact: <sip:RANDOM@RANDOM.invalid;transport=ws>;expires=600`,
    no reg-id or +sip.instance, `Supported: outbound, path, gruu`; Via `SIP/2.0/WS RANDOM.invalid`
    without rport) and calls baresip (its INVITE's Contact adds `;ob`; its offer comes from
    SIP.js's default peer connection, `bundlePolicy: "balanced"`), or baresip calls it and it
    answers; each end hears the other's tone, and the caller's BYE ends the call at the other end."""
    call = make_call(caller, browser_kw=SIPJS)
    assert call.browser.info.get("sipjs", "").startswith("0.21"), call.browser.info
    assert_browser_hears(call.browser, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)

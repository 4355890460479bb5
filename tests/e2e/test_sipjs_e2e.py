"""SIP.js 0.21 as a first-class client of the gateway (issue 12 item 1): Chromium + SIP.js
(js/page/sipjs_app.js: UserAgent, Registerer, Inviter, Invitation and SIP.js's default Web
SessionDescriptionHandler, with hold and DTMF done as its SessionManager does them) through the
RTCWeb Breaker to baresip (PCMU only, plain RTP/AVP), both call directions, audio proven at each end
by packets, energy and the other side's tone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Capture, Gateway, Sipp, ToneResult, wait_for
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, Caller, CallMaker, registered_browser
from harness.tone import analyse_samples, read_wav, write_tone_ulaw

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


# ---- hold and unhold ----------------------------------------------------------------------------------


def _packets(browser: Browser, way: str) -> int:
    """packetsReceived ("inbound") or packetsSent ("outbound") of the browser's current call."""
    stats = browser.stats() or {}
    side = stats.get(way) or {}
    return int(side.get("packetsReceived" if way == "inbound" else "packetsSent", 0))


def _flow(browser: Browser, way: str, seconds: float) -> int:
    """Packets `way` over `seconds`, counted after a moment for the ones already on their way."""
    time.sleep(0.5)
    start = _packets(browser, way)
    time.sleep(seconds)
    return _packets(browser, way) - start


def _sdps(browser: Browser, originator: str) -> list[dict[str, Any]]:
    return [e for e in browser.events() if e.get("type") == "sdp" and e.get("originator") == originator]


def _tail_tone(bob: Baresip, seconds: float) -> ToneResult:
    """What bob heard during the last `seconds` of its latest recording (call it after CALL_CLOSED)."""
    bob.recorded_tone()  # waits for the file to be finalised
    samples, rate = read_wav(bob.recordings()[-1])
    return analyse_samples(samples[-int(seconds * rate) :], rate, fmax=3800)


@pytest.mark.e2e
@pytest.mark.parametrize("caller", ["browser", "phone"])
def test_sipjs_holds_and_resumes(caller: Caller, make_call: CallMaker) -> None:
    """SIP.js holds the call as its SessionManager does (a re-INVITE whose offer its SDH makes
    a=sendonly, local tracks disabled), in a call it placed or answered: the breaker offers baresip
    sendonly, baresip answers recvonly and stops sending; the unhold re-INVITE (sendrecv) brings the
    audio back both ways over the same DTLS association."""
    call = make_call(caller, browser_kw=SIPJS)
    gw, alice, bob = call.gateway, call.browser, call.phone
    assert_browser_hears(alice, PHONE_HZ)

    alice.hold(timeout=20)
    local = _sdps(alice, "local")[-1]
    assert local["direction"] == "sendonly", local["sdp"]
    assert _sdps(alice, "remote")[-1]["direction"] in ("recvonly", "inactive"), _sdps(alice, "remote")[-1]["sdp"]
    held = _flow(alice, "inbound", 2.0)
    assert held <= 10, held  # baresip answered recvonly and stopped sending

    alice.unhold(timeout=20)
    assert _sdps(alice, "local")[-1]["direction"] == "sendrecv"
    assert _sdps(alice, "remote")[-1]["direction"] == "sendrecv", _sdps(alice, "remote")[-1]["sdp"]
    resumed = _flow(alice, "inbound", 2.5)
    assert resumed >= 80, resumed  # 50 packets/s of PCMU again
    assert alice.wait_tone(PHONE_HZ, timeout=20)["frequency"] == pytest.approx(PHONE_HZ, abs=25)
    stats = alice.stats() or {}
    assert stats["transport"]["dtlsState"] == "connected", stats  # the same DTLS association
    time.sleep(2.0)  # the tail bob records below is all after the unhold
    call.hang_up()
    tail = _tail_tone(bob, 2.0)
    assert tail.rms > 0.01 and abs(tail.frequency - BROWSER_HZ) <= 25, tail
    log = gw.log_text()
    assert "INVITE with offer browser -> legacy (sendonly)" in log, log[-3000:]
    assert "INVITE with offer browser -> legacy (sendrecv)" in log, log[-3000:]


@pytest.mark.e2e
def test_phone_holds_and_resumes_sipjs(make_call: CallMaker) -> None:
    """baresip holds the call (re-INVITE a=sendonly) and resumes it: the breaker offers SIP.js
    sendonly, SIP.js's SDH answers recvonly and stops sending, and after the resume (sendrecv) the
    audio flows both ways again."""
    call = make_call("browser", browser_kw=SIPJS)
    alice, bob = call.browser, call.phone
    assert_browser_hears(alice, PHONE_HZ)

    alice.mark_events()
    bob.command("hold")
    alice.wait_event("hold", timeout=20, originator="remote")
    wait_for(lambda: _sdps(alice, "local") and _sdps(alice, "local")[-1]["direction"] in ("recvonly", "inactive"),
             10, "SIP.js to answer the hold recvonly")
    sent = _flow(alice, "outbound", 2.0)
    assert sent <= 10, sent  # SIP.js answered recvonly: it stops sending

    alice.mark_events()
    bob.command("resume")
    alice.wait_event("unhold", timeout=20, originator="remote")
    wait_for(lambda: _sdps(alice, "local")[-1]["direction"] == "sendrecv", 10, "SIP.js to answer the resume sendrecv")
    assert _flow(alice, "outbound", 2.0) >= 60
    assert alice.wait_tone(PHONE_HZ, timeout=20)["frequency"] == pytest.approx(PHONE_HZ, abs=25)
    time.sleep(2.0)
    call.hang_up()
    tail = _tail_tone(bob, 2.0)
    assert tail.rms > 0.01 and abs(tail.frequency - BROWSER_HZ) <= 25, tail


# ---- DTMF ----------------------------------------------------------------------------------------------


def _dtmf_digits(bob: Baresip) -> str:
    return "".join(str(e.get("param", "")) for e in bob.events if e.get("type") == "CALL_DTMF_START")


def _answered_infos(browser: Browser) -> list[int]:
    return [int(e["status"]) for e in browser.events() if e.get("type") == "dtmfSent"]


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["RFC2833", "INFO"])
def test_sipjs_dtmf_reaches_phone(transport: str, make_call: CallMaker, start_capture: Callable[..., Capture]) -> None:
    """Digits keyed in SIP.js reach baresip as RFC 4733 telephone-events (its CALL_DTMF_START), both
    ways SIP.js sends them: RFC 4733 in the audio stream (the SDH's sendDtmf, RTCDTMFSender), or
    SessionManager.sendDTMF's INFO application/dtmf-relay (`Signal=5\\r\\nDuration=2000`), one per
    digit, which the breaker turns into RFC 4733 toward the legacy side. Audio keeps flowing."""
    call = make_call(None, browser_kw=SIPJS)
    alice, bob = call.browser, call.phone
    rtp_ports = f"{bob.rtp_port}-{bob.rtp_port + 19}"
    capture = start_capture(capture_filter=f"udp portrange {rtp_ports} or udp port {bob.sip_port}")
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    if transport == "RFC2833":
        alice.send_dtmf("1234#", transport, duration=160, interToneGap=120)
    else:
        # SIP.js's own Duration (2000 ms), keys pressed faster than that
        alice.send_dtmf("1234#", transport, interToneGap=200)
    wait_for(lambda: _dtmf_digits(bob) == "1234#", 30, f"baresip to receive DTMF 1234# (got {_dtmf_digits(bob)!r})")
    if transport == "INFO":
        # the gateway answers each INFO once its event is played: 200s come 2 s apart
        wait_for(lambda: len(_answered_infos(alice)) == 5, 15, "the gateway to answer every INFO")
        assert _answered_infos(alice) == [200] * 5, alice.events()
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(bob, BROWSER_HZ)
    capture.stop()
    assert capture.decode("rtpevent", timeout=60).strip(), "no RTP event toward baresip"
    assert "INFO" not in capture.decode(f"sip.Method == \"INFO\" && udp.dstport == {bob.sip_port}")


@pytest.mark.e2e
def test_phone_dtmf_reaches_sipjs_as_info(make_call: CallMaker) -> None:
    """`dtmf-type` info: digits keyed on baresip (RFC 4733 in its RTP) reach SIP.js as INFO
    application/dtmf-relay, which it reads as SessionManager does (`Signal=`)."""
    call = make_call("browser", browser_kw=SIPJS, gateway_kw={"extra_toml": '[webrtc2sip]\ndtmf-type = "info"\n'})
    alice, bob = call.browser, call.phone
    assert_browser_hears(alice, PHONE_HZ)

    def digits() -> str:
        return "".join(str(e.get("tone")) for e in alice.events() if e.get("type") == "dtmf")

    for digit in "19#":
        bob.command("sndcode", digit)
        wait_for(lambda d=digit: digits().endswith(d), 10, f"SIP.js to get INFO {digit} (got {digits()!r})")
    assert digits() == "19#"
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()


# ---- transfer with REFER ---------------------------------------------------------------------------

CAROL_HZ = 660.0


@pytest.mark.e2e
def test_phone_transfers_sipjs_with_refer(make_call: CallMaker) -> None:
    """Blind transfer (RFC 3515) of SIP.js: bob (baresip) sends REFER (Refer-To carol) through the
    B2BUA; SIP.js accepts it (202), calls carol with Referral.makeInviter (a new broken call) and
    reports the progress with its own NOTIFYs (message/sipfrag), relayed back to bob, who leaves once
    the transfer succeeded. The new call has two-way audio."""
    call = make_call(None, browser_kw=SIPJS, register_kw={"acceptRefer": True})
    gw, alice, bob = call.gateway, call.browser, call.phone
    carol = call.add_phone("carol", CAROL_HZ)
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    alice.mark_events()

    bob.command("transfer", gw.aor("carol"))
    refer = alice.wait_event("refer")
    assert refer["target"] == gw.aor("carol"), refer
    # the new call, to carol; the old one's BYE (bob leaves on the NOTIFY of its 200) may come first,
    # since SIP.js reports the new session established only after its answer was applied
    alice.wait_event("confirmed", timeout=20, tolerate=("ended",))
    carol.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_CLOSED", timeout=15)
    assert_browser_hears(alice, CAROL_HZ)
    alice.hangup()
    carol.wait_event("CALL_CLOSED")
    assert_phone_heard(carol, BROWSER_HZ)
    log = gw.log_text()
    assert "REFER legacy -> browser" in log, log[-3000:]
    assert "NOTIFY browser -> legacy" in log, log[-3000:]


@pytest.mark.e2e
def test_sipjs_transfers_phone_with_refer(make_call: CallMaker) -> None:
    """SIP.js (Session.refer with onNotify) transfers bob to carol: the 202 and bob's NOTIFYs come
    back to SIP.js through the B2BUA (its onNotify sees the sipfrag 200); bob and carol then hear
    each other."""
    call = make_call(None, browser_kw=SIPJS)
    gw, alice, bob = call.gateway, call.browser, call.phone
    carol = call.add_phone("carol", CAROL_HZ)
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    bob.mark_events()

    alice.refer(gw.aor("carol"))
    assert alice.wait_event("referRequestSucceeded")["status"] == 202
    assert alice.wait_event("referAccepted", timeout=20)["status"] == 200
    carol.wait_event("CALL_ESTABLISHED", timeout=15)
    alice.hangup()
    time.sleep(3)  # bob and carol talk
    carol.hangup()
    carol.wait_event("CALL_CLOSED")
    assert_phone_heard(carol, PHONE_HZ)
    bob.wait_event("CALL_CLOSED")
    tone = _tail_tone(bob, 2.0)
    assert tone.rms > 0.01 and abs(tone.frequency - CAROL_HZ) <= 25, tone
    log = gw.log_text()
    assert "REFER browser -> legacy" in log and "NOTIFY legacy -> browser" in log, log[-3000:]


# ---- MESSAGE ---------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_sipjs_messages_both_ways(make_gateway: Callable[..., Gateway], make_call: CallMaker) -> None:
    """SIP MESSAGE (RFC 3428) outside any call: SIP.js's Messager to baresip through the gateway's
    proxy, and baresip's MESSAGE to SIP.js's registered Contact (its UserAgent delegate's onMessage)."""
    gw = make_gateway()
    call = make_call(None, gateway=gw, browser_kw=SIPJS, phone_kw={"contacts": [gw.aor("alice")]})
    alice, bob = call.browser, call.phone
    sent = alice.send_message(gw.aor("bob"), "hello bob from SIP.js")
    assert sent == {"ok": True, "status": 200}, sent
    assert bob.wait_message("hello bob from SIP.js")[0] == gw.aor("alice")
    bob.send_message(gw.aor("alice"), "hello SIP.js from baresip")
    received = alice.wait_message("hello SIP.js from baresip")
    assert received["from"] == gw.aor("bob"), received
    assert str(received["contentType"]).startswith("text/plain"), received


# ---- registration: RFC 5626 outbound, unregister ------------------------------------------------------


@pytest.mark.e2e
def test_sipjs_outbound_registration_is_reached_and_unregisters(make_call: CallMaker) -> None:
    """SIP.js with RFC 5626 outbound (Registerer `regId: 1`: `Contact: <...;transport=ws>;expires=600;
    reg-id=1;+sip.instance="<urn:uuid:...>"`) is reached over its WebSocket flow by baresip's call;
    after Registerer.unregister (the same Contact with expires=0) the gateway has no binding left and
    baresip's next call fails."""
    call = make_call(None, auto_answer=True, browser_kw=SIPJS, register_kw={"registererOptions": {"regId": 1}})
    alice, bob = call.browser, call.phone
    registered = alice.wait_event("registered")
    contact = " ".join(registered["contact"])
    assert "reg-id=1" in contact and "+sip.instance=" in contact, registered
    call.place("phone")
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(bob, BROWSER_HZ)

    alice.mark_events()
    alice.unregister()
    alice.wait_event("unregistered")
    seen = len(alice.events())
    bob.mark_events()
    bob.dial(call.gateway.aor("alice"))
    closed = bob.wait_event("CALL_CLOSED", timeout=15)
    assert "480" in str(closed) or "404" in str(closed), closed
    assert not [e for e in alice.events(seen) if e.get("type") == "incoming"], alice.events(seen)


# ---- call set-up: early media, reject, cancel ------------------------------------------------------


@pytest.mark.e2e
def test_sipjs_hears_early_media_from_a_reliable_183(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_sipp: Callable[..., Sipp]
) -> None:
    """SIP.js (Inviter `earlyMedia: true`, no 100rel: its default) calls a legacy UAS (sipp) that answers
    183 with Require: 100rel and SDP and plays a tone: the breaker PRACKs the 183 itself, SIP.js gets a
    plain 183 with the translated SDP and hears the early media; it then gives up (CANCEL, 487)."""
    gw = make_gateway(extra_toml="[webrtc2sip]\nenable-100rel = true\n")
    phone = make_sipp("uas", "uas_100rel_early_media.xml", calls=1, timeout_s=60, trace_msg=True)
    write_tone_ulaw(phone.dir / "tone.ulaw", PHONE_HZ)  # the scenario's rtp_stream
    phone.start()
    alice = registered_browser(make_browser, gw, "alice", browser_kw=SIPJS)
    alice.call(f"sip:bob@{phone.address}", early_media=True)
    assert alice.wait_event("progress", timeout=20)["status"] == 183
    assert_browser_hears(alice, PHONE_HZ, min_packets=25)
    assert not [e for e in alice.events() if e.get("type") in ("confirmed", "accepted")]
    alice.hangup()
    assert alice.wait_event("failed", timeout=20)["status"] == 487
    result = phone.wait(30)
    assert result.returncode == 0, result.summary()
    browser_log = (alice.driver.dir / "alice-console.log").read_text(errors="replace")
    assert "SIP/2.0 183" in browser_log and "RSeq:" not in browser_log
    assert "CANCEL -> legacy" in gw.log_text()


@pytest.mark.e2e
def test_sipjs_rejects_and_cancels(make_call: CallMaker) -> None:
    """baresip calls SIP.js, which rejects the Invitation with 486: baresip sees 486 Busy Here. Then
    SIP.js calls baresip (answermode manual: it rings) and cancels: the breaker's CANCEL reaches
    baresip, and SIP.js's Inviter ends with 487."""
    call = make_call(None, browser_kw=SIPJS, phone_kw={"answermode": "manual"})
    gw, alice, bob = call.gateway, call.browser, call.phone
    bob.dial(gw.aor("alice"))
    alice.wait_event("incoming", timeout=15)
    assert alice.hangup(486)
    closed = bob.wait_event("CALL_CLOSED", timeout=15)
    assert "486" in str(closed.get("param")), closed
    alice.wait_event("failed", timeout=15)

    alice.mark_events()
    bob.mark_events()
    alice.call(gw.aor("bob"))
    assert alice.wait_event("progress", timeout=15)["status"] == 180
    bob.wait_event("CALL_INCOMING", timeout=15)
    assert alice.hangup()
    assert alice.wait_event("failed", timeout=15)["status"] == 487
    bob.wait_event("CALL_CLOSED", timeout=15)
    assert "CANCEL from browser" in gw.log_text()

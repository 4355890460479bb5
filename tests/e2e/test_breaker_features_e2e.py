"""The RTCWeb Breaker's call features with real peers (issue 3, "What it must show"): digest
authentication on the legacy side (ha1 answered by the gateway, or the challenge relayed to the
browser), hold and unhold, DTMF and a transfer with REFER. Chromium + JsSIP on one side, baresip (PCMU
only, plain RTP/AVP) on the other; every test checks that audio really arrived, not just "confirmed".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Capture, Gateway, Kamailio, ToneResult, wait_for
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, CallMaker
from harness.tone import analyse_samples, read_wav

REALM = "legacy.test"
ALICE_PW = "alice-secret"
BOB_PW = "bob-secret"


# ---- 1. digest authentication on the legacy side ---------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["ha1", "relayed"])
def test_legacy_digest_auth(
    mode: str,
    make_gateway: Callable[..., Gateway],
    make_kamailio: Callable[..., Kamailio],
    make_baresip: Callable[..., Baresip],
    make_call: CallMaker,
    start_capture: Callable[..., Capture],
) -> None:
    """kamailio (legacy.test) is the legacy registrar and requires digest: bob registers there with a
    password, and kamailio challenges every INVITE (407), also from the gateway's users. The browser,
    registered on the gateway's own registrar (example.test), calls bob@legacy.test; the gateway sends
    the legacy leg to kamailio (`upstream_proxy`).

    ha1: the browser's Contact carries `impi` and `ha1` (webrtc2sip); the gateway answers the 407 itself
    and `ha1` never reaches kamailio or baresip (checked on the wire). relayed: no ha1, the 407 goes to
    the browser, JsSIP answers with its password, the gateway reuses its Proxy-Authorization."""
    kam = make_kamailio(domain=REALM, users={"alice": ALICE_PW, "bob": BOB_PW}, auth_foreign=True)
    gw = make_gateway(gateway_options={"upstream_proxy": f"sip:127.0.0.1:{kam.sip_port}"})
    bob = make_baresip("bob", user="bob", domain=REALM, registrar=kam.udp_uri, password=BOB_PW, tone_hz=PHONE_HZ)
    capture = start_capture(capture_filter=f"udp port {kam.sip_port} or udp port {bob.sip_port}")
    ha1 = hashlib.md5(f"alice:{REALM}:{ALICE_PW}".encode()).hexdigest()
    # ha1: no password in JsSIP, only the gateway can answer kamailio's challenge
    credentials = ({"contactUri": f"sip:alice@a1b2c3.invalid;transport=ws;impi=alice;ha1={ha1}"} if mode == "ha1"
                   else {"password": ALICE_PW})
    call = make_call(None, gateway=gw, phone=bob, register_kw=credentials)
    alice = call.browser
    call.place("browser", target=f"sip:bob@{REALM}", timeout=20)
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(bob, BROWSER_HZ)

    capture.stop()
    sip = capture.decode("sip")
    assert "407" in sip, sip  # kamailio did challenge the INVITE
    invites = capture.decode(f'sip.Method == "INVITE" && udp.dstport == {kam.sip_port}', verbose=True)
    answered = [line for line in invites.splitlines() if "Proxy-Authorization:" in line]
    assert answered, invites[-4000:]  # the retried INVITE carried credentials
    assert 'username="alice"' in answered[0] and f'realm="{REALM}"' in answered[0], answered
    assert "REQ INVITE sip:bob@legacy.test" in kam.log_text()
    # who answered the challenge: the gateway with the ha1, or the browser with its password
    browser_log = (alice.driver.dir / "alice-console.log").read_text(errors="replace")
    answered_by_gateway = "answered with the client's ha1" in gw.log_text()
    browser_saw_407 = "SIP/2.0 407" in browser_log
    if mode == "ha1":
        assert answered_by_gateway and not browser_saw_407
    else:
        assert browser_saw_407 and not answered_by_gateway
        assert "Proxy-Authorization: Digest" in browser_log
    assert ha1 not in gw.log_text()
    # ha1 is a password equivalent: nowhere toward kamailio or baresip, in any packet
    raw = capture.pcap.read_bytes()
    assert ha1.encode() not in raw
    assert b"ha1=" not in raw.lower()


# ---- 2. hold and unhold ------------------------------------------------------------------------------


def _stats(alice: Browser) -> dict[str, Any]:
    stats = alice.stats()
    assert stats is not None, "no call"
    return stats


def _packets_in(alice: Browser) -> int:
    stats = alice.stats() or {}
    return int((stats.get("inbound") or {}).get("packetsReceived", 0))


def _last_remote_sdp(alice: Browser) -> str:
    sdps = [e for e in alice.events() if e.get("type") == "sdp" and e.get("originator") == "remote"]
    assert sdps, "no remote SDP"
    return str(sdps[-1]["sdp"])


def _tail_tone(bob: Baresip, seconds: float) -> ToneResult:
    """What bob heard during the last `seconds` of its latest recording (call it after CALL_CLOSED)."""
    bob.recorded_tone()  # waits for the file to be finalised
    samples, rate = read_wav(bob.recordings()[-1])
    return analyse_samples(samples[-int(seconds * rate) :], rate, fmax=3800)


@pytest.mark.e2e
def test_hold_and_unhold(make_call: CallMaker) -> None:
    """The browser holds the call (re-INVITE a=sendonly through the breaker, baresip answers recvonly),
    then resumes it: audio flows again both ways, the same call, the same DTLS association."""
    call = make_call("browser")
    gw, alice, bob = call.gateway, call.browser, call.phone
    assert_browser_hears(alice, PHONE_HZ)

    alice.hold()
    assert "a=recvonly" in _last_remote_sdp(alice) or "a=inactive" in _last_remote_sdp(alice)
    time.sleep(0.5)  # packets already on their way
    held_from = _packets_in(alice)
    time.sleep(2.0)
    held = _packets_in(alice) - held_from
    assert held <= 10, held  # baresip answered recvonly and stopped sending

    alice.unhold()
    assert "a=sendrecv" in _last_remote_sdp(alice) or "a=recvonly" not in _last_remote_sdp(alice)
    resumed_from = _packets_in(alice)
    time.sleep(2.5)
    resumed = _packets_in(alice) - resumed_from
    assert resumed >= 80, resumed  # 50 packets/s of PCMU again
    assert resumed > 4 * held + 20, (held, resumed)
    energy = _stats(alice)["inbound"]["totalAudioEnergy"]
    time.sleep(1.0)
    assert _stats(alice)["inbound"]["totalAudioEnergy"] > energy  # not just packets: sound
    assert abs(alice.wait_tone(PHONE_HZ)["frequency"] - PHONE_HZ) <= 25
    assert _stats(alice)["transport"]["dtlsState"] == "connected"  # the same DTLS association
    call.hang_up()
    # the last 2 s of what bob heard, all after the unhold: the browser's tone
    tail = _tail_tone(bob, 2.0)
    assert tail.rms > 0.01 and abs(tail.frequency - BROWSER_HZ) <= 25, tail
    log = gw.log_text()
    assert "INVITE with offer browser -> legacy (sendonly)" in log, log[-3000:]
    assert "INVITE with offer browser -> legacy (sendrecv)" in log, log[-3000:]


# ---- 3. DTMF -----------------------------------------------------------------------------------------


def _dtmf_digits(bob: Baresip) -> str:
    return "".join(str(e.get("param", "")) for e in bob.events if e.get("type") == "CALL_DTMF_START")


@pytest.mark.e2e
@pytest.mark.parametrize("transport", ["RFC2833", "INFO"])
def test_browser_dtmf_reaches_phone(
    transport: str,
    make_call: CallMaker,
    start_capture: Callable[..., Capture],
) -> None:
    """Digits keyed in the browser arrive at baresip as RFC 4733 telephone-events (baresip's
    CALL_DTMF_START), whether JsSIP sends them in the audio stream (RFC2833) or as SIP INFO
    application/dtmf-relay, which the breaker turns into RFC 4733 toward the legacy side
    (`dtmf-type` rfc4733, the default). Audio keeps flowing."""
    call = make_call(None)
    alice, bob = call.browser, call.phone
    rtp_ports = f"{bob.rtp_port}-{bob.rtp_port + 19}"
    capture = start_capture(capture_filter=f"udp portrange {rtp_ports} or udp port {bob.sip_port}")
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    alice.send_dtmf("1234#", transport, duration=160, interToneGap=120)
    wait_for(lambda: _dtmf_digits(bob) == "1234#", 10, f"baresip to receive DTMF 1234# (got {_dtmf_digits(bob)!r})")
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(bob, BROWSER_HZ)
    capture.stop()
    # how they reached baresip: RFC 4733 events in its RTP stream, never an INFO
    events = capture.decode("rtpevent", timeout=60)
    assert events.strip(), "no RTP event toward baresip"
    assert "INFO" not in capture.decode(f"sip.Method == \"INFO\" && udp.dstport == {bob.sip_port}")


# ---- 4. transfer with REFER --------------------------------------------------------------------------

CAROL_HZ = 660.0


@pytest.mark.e2e
def test_phone_transfers_browser_with_refer(make_call: CallMaker) -> None:
    """Blind transfer (RFC 3515) through the breaker: bob (baresip) in a call with the browser sends
    REFER (Refer-To carol); the B2BUA relays it to the browser, which calls carol (a new broken call)
    and reports progress with NOTIFYs relayed back to bob. The new call has two-way audio."""
    call = make_call(None, register_kw={"acceptRefer": True})
    gw, alice, bob = call.gateway, call.browser, call.phone
    carol = call.add_phone("carol", CAROL_HZ)
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    alice.mark_events()

    bob.command("transfer", gw.aor("carol"))
    refer = alice.wait_event("refer")
    assert refer["target"] == gw.aor("carol"), refer
    alice.wait_event("confirmed", timeout=20, tolerate=("ended",))  # the new call; the old may end first
    carol.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_CLOSED", timeout=15)  # the transferor leaves once the transfer succeeded
    assert_browser_hears(alice, CAROL_HZ)
    alice.hangup()
    carol.wait_event("CALL_CLOSED")
    assert_phone_heard(carol, BROWSER_HZ)
    log = gw.log_text()
    assert "REFER legacy -> browser" in log, log[-3000:]
    assert "NOTIFY browser -> legacy" in log, log[-3000:]


@pytest.mark.e2e
def test_browser_transfers_phone_with_refer(make_call: CallMaker) -> None:
    """The other way: the browser (JsSIP session.refer) transfers bob to carol. bob gets the REFER
    through the B2BUA, calls carol, and its NOTIFYs come back to the browser under the id of the
    browser's own REFER (JsSIP's referAccepted); bob and carol then hear each other."""
    call = make_call(None)
    gw, alice, bob = call.gateway, call.browser, call.phone
    carol = call.add_phone("carol", CAROL_HZ)
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    bob.mark_events()

    alice.refer(gw.aor("carol"))
    assert alice.wait_event("referRequestSucceeded")["status"] == 202
    alice.wait_event("referAccepted", timeout=20)  # NOTIFY with sipfrag 200 from bob, matched by id
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

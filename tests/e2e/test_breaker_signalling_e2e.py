"""The RTCWeb Breaker's less common signalling with real peers (issue 3 item 2): attended transfer
(REFER with Replaces rewritten to the other leg's dialog, RFC 3891/5589), reliable provisional responses
(RFC 3262) and UPDATE (RFC 3311). Chromium + JsSIP on the WebRTC side; on the legacy side sipp where
baresip 1.0 cannot (it has no Replaces, no 100rel), baresip elsewhere. Every test checks media, not just
signalling.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

import pytest
from harness import Browser, Gateway, Sipp, wait_for
from harness.call import CallMaker, registered_browser
from harness.tone import write_tone_ulaw

ALICE_HZ = 1000.0
CAROL_HZ = 660.0
PHONE_HZ = 440.0


def _assert_hears(b: Browser, hz: float, min_packets: int = 50) -> None:
    stats = b.wait_media(min_packets=min_packets)
    assert stats["inbound"]["totalAudioEnergy"] > 0
    assert abs(b.wait_tone(hz)["frequency"] - hz) <= 25


def _events(b: Browser, type_: str) -> list[dict[str, object]]:
    return [e for e in b.events() if e.get("type") == type_]


# ---- 1. attended transfer --------------------------------------------------------------------------


@pytest.mark.e2e
def test_legacy_phone_transfers_browser_to_browser_with_replaces(
    make_gateway: Callable[..., Gateway],
    make_browser: Callable[..., Browser],
    make_sipp: Callable[..., Sipp],
) -> None:
    """A legacy phone (sipp, scenarios/attended_transferor.xml) calls alice and carol, two browsers:
    two broken calls. It then REFERs alice to carol with Replaces naming *its* dialog of the second
    call, i.e. the gateway's legacy leg. The breaker rewrites the Replaces to carol's own dialog with the
    gateway (and the Refer-To URI to carol's address of record), so that alice's INVITE with Replaces
    is recognised by carol's JsSIP (which answers 481 to a dialog it does not know): carol accepts, ends
    the replaced session (BYE through the breaker to the phone), and alice and carol talk, each hearing
    the other's tone. The phone then hangs up its call with alice."""
    gw = make_gateway()
    alice = registered_browser(make_browser, gw, "alice", tone_hz=ALICE_HZ, auto_answer=True, acceptRefer=True)
    carol = registered_browser(make_browser, gw, "carol", tone_hz=CAROL_HZ, auto_answer=True)
    phone = make_sipp(
        "transferor", "attended_transferor.xml", remote=gw.sip_address, calls=1, timeout_s=90,
        keys={"alice": gw.aor("alice"), "carol": gw.aor("carol")},
        extra_args=["-rtp_echo", "-cid_str", "%u-%p-xfer"], trace_msg=True,
    )
    phone.start()
    alice.wait_event("confirmed", timeout=20)
    carol.wait_event("confirmed", timeout=20)
    refer = alice.wait_event("refer", timeout=30)
    target = str(refer["target"])
    replaces = carol.wait_event("replaces", timeout=20)
    # what carol's JsSIP was asked to replace: its own dialog with the gateway, not the phone's
    assert str(replaces["replaces"]).split(";")[0] in unquote(target), (replaces, target)
    assert target.startswith(gw.aor("carol")), target
    wait_for(lambda: len(_events(alice, "confirmed")) >= 2, 20, "alice's call to carol to be confirmed")
    wait_for(lambda: len(_events(carol, "confirmed")) >= 2, 20, "carol's replacing call to be confirmed")
    wait_for(lambda: len(_events(carol, "ended")) >= 1, 20, "carol's replaced session to end")
    # alice and carol talk (browser to browser now: the proxy, not the breaker, carries this call)
    _assert_hears(alice, CAROL_HZ)
    _assert_hears(carol, ALICE_HZ)
    result = phone.wait(60)
    assert result.returncode == 0, result.summary()
    wait_for(lambda: len(_events(alice, "ended")) >= 1, 20, "the phone's BYE to end alice's first call")
    alice.hangup()
    carol.wait_event("ended", timeout=20)
    log = gw.log_text()
    assert "REFER legacy -> browser" in log, log[-3000:]
    assert "NOTIFY browser -> legacy" in log, log[-3000:]
    assert re.search(r"ended: BYE from browser", log), log[-3000:]  # carol ended the replaced call
    # the phone's Replaces (its own tag as from-tag) never reached a browser
    messages = (phone.dir / "messages.log").read_text(errors="replace")
    x2 = re.search(r"from-tag%3D(\S+?X2\d+)>", messages)
    assert x2 is not None, messages[-3000:]
    assert x2.group(1) not in target


@pytest.mark.e2e
def test_invite_with_replaces_naming_the_legacy_leg_reaches_the_browser_mapped(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_sipp: Callable[..., Sipp]
) -> None:
    """RFC 3891 on the legacy leg: a phone (sipp, scenarios/replacing_caller.xml) in a broken call with
    carol sends a new INVITE whose Replaces names its dialog with the gateway (the legacy leg). The
    breaker sends the new call to carol with Replaces naming carol's own dialog (JsSIP answers 481 to
    any other): carol's JsSIP accepts it, ends the old session (the breaker's BYE reaches the phone on
    the replaced dialog) and hears the phone's tone on the new call."""
    gw = make_gateway()
    carol = registered_browser(make_browser, gw, "carol", tone_hz=CAROL_HZ, auto_answer=True)
    phone = make_sipp("phone", "replacing_caller.xml", remote=gw.sip_address, calls=1, timeout_s=60,
                      keys={"callee": gw.aor("carol")}, trace_msg=True)
    _write_tone(phone, PHONE_HZ)
    phone.start()
    carol.wait_event("confirmed", timeout=20)
    replaces = carol.wait_event("replaces", timeout=20)
    wait_for(lambda: len(_events(carol, "confirmed")) >= 2, 20, "carol's replacing call to be confirmed")
    wait_for(lambda: len(_events(carol, "ended")) >= 1, 20, "carol's replaced session to end")
    _assert_hears(carol, PHONE_HZ)
    carol.hangup()
    result = phone.wait(40)
    assert result.returncode == 0, result.summary()
    log = gw.log_text()
    assert "INVITE replaces legacy of b1 -> browser of the same call" in log, log[-3000:]
    # what reached carol names a dialog carol has, never the phone's own one
    messages = (phone.dir / "messages.log").read_text(errors="replace")
    phone_replaces = re.search(r"Replaces: (\S+)", messages)
    assert phone_replaces is not None
    assert str(replaces["replaces"]).split(";")[0] != phone_replaces.group(1).split(";")[0]


# ---- 2. reliable provisional responses (RFC 3262) ----------------------------------------------------

RELIABLE_TOML = "[webrtc2sip]\nenable-100rel = true\n"


def _write_tone(sipp: Sipp, hz: float, seconds: float = 4.0) -> None:
    """tone.ulaw in sipp's working directory, for the scenarios' rtp_stream (raw PCMU, 8 kHz)."""
    write_tone_ulaw(sipp.dir / "tone.ulaw", hz, seconds=seconds, amplitude=12000 / 32767)


@pytest.mark.e2e
def test_reliable_183_with_early_media_to_a_browser(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_sipp: Callable[..., Sipp]
) -> None:
    """The browser calls a legacy UAS (sipp) that answers 183 with Require: 100rel and SDP, plays a tone
    and waits for its PRACK. JsSIP does not support 100rel, so the breaker PRACKs the 183 itself and
    gives the browser an ordinary 183 with the translated SDP: the browser hears the early media while
    the call is unanswered (sipp never answers), then gives up: CANCEL, 487 mapped back."""
    gw = make_gateway(extra_toml=RELIABLE_TOML)
    phone = make_sipp("uas", "uas_100rel_early_media.xml", calls=1, timeout_s=60, trace_msg=True)
    _write_tone(phone, PHONE_HZ)
    phone.start()
    alice = registered_browser(make_browser, gw, "alice", tone_hz=ALICE_HZ)
    alice.call(f"sip:bob@{phone.address}")
    assert alice.wait_event("progress", timeout=20)["status"] == 183
    _assert_hears(alice, PHONE_HZ, min_packets=25)  # early media: sipp sends no 200 before the CANCEL
    assert not _events(alice, "confirmed") and not _events(alice, "accepted")
    alice.hangup()
    assert alice.wait_event("failed", timeout=20)["cause"] == "Canceled"
    result = phone.wait(30)
    assert result.returncode == 0, result.summary()
    messages = (phone.dir / "messages.log").read_text(errors="replace")
    invite = messages[messages.index("INVITE sip:"):]
    assert "100rel" in invite.split("\n\n", 1)[0], invite[:1500]  # enable-100rel: Supported: 100rel
    assert re.search(r"PRACK sip:\S+ SIP/2.0", messages), messages[-3000:]
    browser_log = (alice.driver.dir / "alice-console.log").read_text(errors="replace")
    assert "SIP/2.0 183" in browser_log and "RSeq:" not in browser_log  # not reliable toward JsSIP
    log = gw.log_text()
    assert "183 Session Progress with SDP -> browser" in log
    assert "CANCEL -> legacy" in log, log[-3000:]


@pytest.mark.e2e
def test_legacy_caller_requiring_100rel_calls_a_browser(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_sipp: Callable[..., Sipp]
) -> None:
    """A legacy UAC (sipp) that requires 100rel calls the browser: JsSIP's 180 is unreliable, the breaker
    turns it into a reliable one (Require: 100rel, RSeq; sipp checks both and PRACKs it) and answers the
    PRACK; then 200, ACK, and the phone's tone reaches the browser, which hangs up."""
    gw = make_gateway()
    alice = registered_browser(make_browser, gw, "alice", tone_hz=ALICE_HZ, auto_answer=True)
    phone = make_sipp("uac", "uac_requires_100rel.xml", remote=gw.sip_address, calls=1, timeout_s=60,
                      keys={"callee": gw.aor("alice")}, trace_msg=True)
    _write_tone(phone, PHONE_HZ)
    phone.start()
    alice.wait_event("confirmed", timeout=20)
    _assert_hears(alice, PHONE_HZ)
    alice.hangup()
    result = phone.wait(30)
    assert result.returncode == 0, result.summary()
    messages = (phone.dir / "messages.log").read_text(errors="replace")
    assert re.search(r"SIP/2.0 180 Ringing", messages), messages[-3000:]
    assert re.search(r"RSeq: \d+", messages)


# ---- 3. UPDATE (RFC 3311) ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_update_with_and_without_sdp_both_ways(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_sipp: Callable[..., Sipp]
) -> None:
    """UPDATE mapped between the legs (sipp as the legacy UAS: baresip 1.0 has no UPDATE). The browser
    holds and resumes with UPDATE (JsSIP `useUpdate`): each offer goes through the media plane's
    update() to an UPDATE on the legacy leg (sipp checks the a=sendonly). Then the phone sends an
    UPDATE without SDP (relayed as it is), and holds and resumes the browser with UPDATEs carrying
    offers (JsSIP reports hold/unhold by the remote side; sipp checks the recvonly answer). The
    phone's tone is heard by the browser before, in between and after."""
    gw = make_gateway()
    phone = make_sipp("uas", "uas_update.xml", calls=1, timeout_s=90, trace_msg=True)
    _write_tone(phone, PHONE_HZ)
    phone.start()
    alice = registered_browser(make_browser, gw, "alice", tone_hz=ALICE_HZ)
    alice.call(f"sip:bob@{phone.address}")
    alice.wait_event("confirmed", timeout=20)
    _assert_hears(alice, PHONE_HZ)
    alice.hold(use_update=True)
    alice.unhold(use_update=True)
    _assert_hears(alice, PHONE_HZ)
    alice.wait_event("hold", timeout=20, originator="remote")
    alice.wait_event("unhold", timeout=20, originator="remote")
    _assert_hears(alice, PHONE_HZ)
    assert _stats_ok(alice)
    alice.hangup()
    result = phone.wait(30)
    assert result.returncode == 0, result.summary()
    log = gw.log_text()
    assert "UPDATE with offer browser -> legacy (sendonly)" in log, log[-3000:]
    assert "UPDATE with offer browser -> legacy (sendrecv)" in log, log[-3000:]
    assert "UPDATE legacy -> browser" in log, log[-3000:]  # the one without SDP
    assert "UPDATE with offer legacy -> browser (sendonly)" in log, log[-3000:]
    assert "UPDATE with offer legacy -> browser (sendrecv)" in log, log[-3000:]


def _stats_ok(b: Browser) -> bool:
    stats = b.stats() or {}
    return (stats.get("transport") or {}).get("dtlsState") == "connected"


# ---- 4. DTMF from the phone as SIP INFO toward the browser -------------------------------------------


def _info_digits(b: Browser) -> str:
    """Digits JsSIP got by INFO: it turns an INFO application/dtmf-relay into newDTMF (not newInfo)."""
    return "".join(str(e.get("tone")) for e in _events(b, "dtmf") if e.get("originator") == "remote")


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [0, 1])
def test_phone_dtmf_reaches_browser_as_info(
    workers: int, make_call: CallMaker
) -> None:
    """`dtmf-type` info: digits keyed on baresip go as RFC 4733 events in its RTP; the breaker sees them
    on the media plane's tap and sends each to the browser as SIP INFO application/dtmf-relay, which
    JsSIP reports as newDTMF from the remote side (a browser application never sees RFC 4733 packets;
    without the INFO the page would get nothing). Audio keeps flowing. With a media worker process
    (``[media] workers``) the tap's DTMF sink runs in the worker and its digits come back to the B2BUA."""
    call = make_call("browser", timeout=20, browser_hz=ALICE_HZ, gateway_kw={
        "extra_toml": f'[webrtc2sip]\ndtmf-type = "info"\n\n[media]\nworkers = {workers}\n'})
    gw, alice, bob = call.gateway, call.browser, call.phone
    _assert_hears(alice, PHONE_HZ)
    for digit in "19#":
        bob.command("sndcode", digit)
        wait_for(lambda d=digit: _info_digits(alice).endswith(d), 10,
                 f"the browser to get INFO {digit} (got {_info_digits(alice)!r})")
    assert _info_digits(alice) == "19#"
    _assert_hears(alice, PHONE_HZ)
    call.hang_up()
    assert "RFC 4733 DTMF 9" in gw.log_text()

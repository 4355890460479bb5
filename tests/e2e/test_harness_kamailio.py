"""The harness proven against kamailio, while rtc2sip's own networking is being written.

Kamailio stands in for the gateway's signalling (WebSocket for JsSIP, UDP for baresip and sipp); it
does not touch media, so browser media here flows browser to browser (DTLS-SRTP), and baresip media
baresip to baresip. When rtc2sip runs, the same peers and fixtures test it.
"""

from __future__ import annotations

import time

import pytest

ALICE_HZ = 600.0
BOB_HZ = 1400.0


@pytest.mark.e2e
def test_two_browsers_call_each_other_over_websocket(make_kamailio, make_browser):
    kam = make_kamailio(users={"alice": "alice-pw", "bob": "bob-pw"}, websocket=True)
    alice = make_browser("alice", tone_hz=ALICE_HZ)
    bob = make_browser("bob", tone_hz=BOB_HZ)
    assert alice.register(kam.ws_url, kam.aor("alice"), "alice-pw")["status"] == 200
    assert bob.register(kam.ws_url, kam.aor("bob"), "bob-pw")["status"] == 200

    alice.call(kam.aor("bob"))
    incoming = bob.wait_event("incoming")
    assert incoming["from"] == kam.aor("alice")
    bob.answer()
    alice.wait_event("confirmed")
    bob.wait_event("confirmed")

    # "Confirmed" proves signalling only; the proof of a call is audio, with energy, both ways, and
    # each side hearing the other's tone (not its own, not silence).
    for phone in (alice, bob):
        stats = phone.wait_media(min_packets=50)
        assert stats["transport"]["dtlsState"] == "connected"
        assert stats["selectedPair"]["local"]["address"] == "127.0.0.1"
        assert stats["selectedPair"]["remote"]["address"] == "127.0.0.1"
        assert stats["inbound"]["totalAudioEnergy"] > 0
    assert abs(alice.wait_tone(BOB_HZ)["frequency"] - BOB_HZ) <= 25
    assert abs(bob.wait_tone(ALICE_HZ)["frequency"] - ALICE_HZ) <= 25

    # The offer JsSIP sent is what TESTING.md describes (a regression check on the harness itself).
    offer = next(e for e in alice.events() if e["type"] == "sdp" and e["originator"] == "local")
    assert "UDP/TLS/RTP/SAVPF" in offer["sdp"] and "a=setup:actpass" in offer["sdp"]

    alice.hangup()
    ended = bob.wait_event("ended")
    assert ended["originator"] == "remote"


@pytest.mark.e2e
def test_baresip_and_browser_exchange_messages(make_kamailio, make_browser, make_baresip):
    kam = make_kamailio(users={"alice": "alice-pw", "bob": "bob-pw"}, websocket=True)
    alice = make_browser("alice", tone_hz=None)
    alice.register(kam.ws_url, kam.aor("alice"), "alice-pw")
    bob = make_baresip(
        "bob",
        user="bob",
        domain=kam.domain,
        registrar=kam.udp_uri,
        password="bob-pw",
        contacts=[kam.aor("alice")],
    )

    sent = alice.send_message(kam.aor("bob"), "hello bob from the browser")
    assert sent == {"ok": True, "status": 200}
    assert bob.wait_message("hello bob from the browser")[0] == kam.aor("alice")

    bob.send_message(kam.aor("alice"), "hello alice from baresip")
    received = alice.wait_message("hello alice from baresip")
    assert received["from"] == kam.aor("bob")
    assert received["contentType"].startswith("text/plain")


@pytest.mark.e2e
def test_baresip_calls_baresip_and_each_hears_the_other_tone(make_kamailio, make_baresip):
    kam = make_kamailio(users={"alice": "alice-pw", "bob": "bob-pw"})
    alice = make_baresip(
        "alice", user="alice", domain=kam.domain, registrar=kam.udp_uri, password="alice-pw", tone_hz=ALICE_HZ
    )
    bob = make_baresip(
        "bob", user="bob", domain=kam.domain, registrar=kam.udp_uri, password="bob-pw", tone_hz=BOB_HZ
    )

    alice.dial(kam.aor("bob"))
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")
    alice.wait_event("CALL_RTPESTAB")
    bob.wait_event("CALL_RTPESTAB")
    # Let a couple of seconds of audio be recorded (baresip reports no in-call audio figures over
    # ctrl_tcp, and its recordings are complete only once the call is closed).
    time.sleep(2)
    alice.hangup()
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")

    heard_by_alice = alice.recorded_tone()
    heard_by_bob = bob.recorded_tone()
    assert abs(heard_by_alice.frequency - BOB_HZ) <= 5, heard_by_alice
    assert abs(heard_by_bob.frequency - ALICE_HZ) <= 5, heard_by_bob
    assert heard_by_alice.rms > 0.05 and heard_by_bob.rms > 0.05
    assert heard_by_alice.voiced_seconds >= 1.0


@pytest.mark.e2e
def test_sipp_100_calls_through_kamailio(make_kamailio, make_sipp, start_capture):
    kam = make_kamailio()
    capture = start_capture(capture_filter=f"port {kam.sip_port}")
    uas = make_sipp("uas", "uas_behind_proxy.xml").start()
    registered = make_sipp(
        "register",
        "register.xml",
        remote=f"127.0.0.1:{kam.sip_port}",
        service="bob",
        calls=1,
        keys={"domain": kam.domain, "contact": f"sip:bob@{uas.address}", "expires": "300"},
    ).run(timeout=30)
    assert registered.returncode == 0, registered.summary()

    result = make_sipp(
        "uac",
        "uac_via_proxy.xml",
        remote=f"127.0.0.1:{kam.sip_port}",
        service="bob",
        calls=100,
        rate=50,
        limit=20,
        keys={"domain": kam.domain},
    ).run(timeout=90)
    assert (result.successful, result.failed) == (100, 0), result.summary()
    assert result.returncode == 0, result.summary()
    served = uas.stop()
    assert served.successful == 100, served.summary()

    capture.stop()
    invites = capture.decode('sip.Method == "INVITE"').splitlines()
    # Each INVITE crosses the capture twice: sipp -> kamailio and kamailio -> uas.
    assert len(invites) >= 200

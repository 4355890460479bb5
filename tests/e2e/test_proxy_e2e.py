"""rtc2sip as a SIP proxy and registrar, with real peers (issue "SIP proxy and registrar").

The proxy's signalling paths. Browser-to-browser calls carry their media directly (DTLS-SRTP between
the two Chromiums: the breaker leaves them to the proxy); calls between a browser and a plain-RTP
phone are broken by the RTCWeb Breaker and proven in test_breaker_e2e.py.

What each test proves:
- two browsers registered to the built-in registrar over WebSocket call each other through it, hear
  each other's tone, and the BYE crosses (Record-Route + flow tokens of in-dialog requests);
- a browser and baresip (UDP) exchange MESSAGEs both ways through the built-in registrar;
- a browser registers *through* rtc2sip to a foreign registrar (kamailio, via `upstream_proxy`), and
  baresip on kamailio reaches the browser's WebSocket: by the Path rtc2sip adds (kamailio with
  `use_path`), and also by the flow-token Contact alone (kamailio ignoring Path);
- with the breaker off, a browser's SAVPF offer reaches baresip, the browser gets baresip's final
  answer, and the gateway still routes the next request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from harness import Baresip, Browser, Capture, Gateway, Kamailio, wait_for

ALICE_HZ = 600.0
BOB_HZ = 1400.0


def _sip_log(capture: Capture) -> str:
    """One line per SIP message of the capture, for assertion messages."""
    capture.stop()
    return capture.decode("sip")


@pytest.mark.e2e
def test_two_browsers_call_through_builtin_registrar(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser]
) -> None:
    gw = make_gateway()
    alice = make_browser("alice", tone_hz=ALICE_HZ)
    bob = make_browser("bob", tone_hz=BOB_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    assert bob.register(gw.ws_url, gw.aor("bob"))["status"] == 200

    alice.call(gw.aor("bob"))
    incoming = bob.wait_event("incoming")
    assert incoming["from"] == gw.aor("alice")
    bob.answer()
    alice.wait_event("confirmed")
    bob.wait_event("confirmed")

    # The gateway is on the signalling path only: media goes browser to browser, and each side must
    # hear the other's tone (not silence, not its own).
    for phone in (alice, bob):
        stats = phone.wait_media(min_packets=50)
        assert stats["transport"]["dtlsState"] == "connected"
        assert stats["inbound"]["totalAudioEnergy"] > 0
        assert stats["selectedPair"]["remote"]["address"] == "127.0.0.1"
    assert abs(alice.wait_tone(BOB_HZ)["frequency"] - BOB_HZ) <= 25
    assert abs(bob.wait_tone(ALICE_HZ)["frequency"] - ALICE_HZ) <= 25

    # The browsers see each other's own Contact (restored by the gateway), not ours.
    answer = next(e for e in alice.events() if e["type"] == "sdp" and e["originator"] == "remote")
    assert "UDP/TLS/RTP/SAVPF" in answer["sdp"]

    bob.hangup()
    ended = alice.wait_event("ended")
    assert ended["originator"] == "remote"
    assert bob.wait_event("ended")["originator"] == "local"


@pytest.mark.e2e
def test_browser_and_baresip_exchange_messages_through_builtin_registrar(
    make_gateway: Callable[..., Gateway],
    make_browser: Callable[..., Browser],
    make_baresip: Callable[..., Baresip],
) -> None:
    gw = make_gateway()
    alice = make_browser("alice", tone_hz=None)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, contacts=[gw.aor("alice")])

    sent = alice.send_message(gw.aor("bob"), "hello bob from the browser")
    assert sent == {"ok": True, "status": 200}
    assert bob.wait_message("hello bob from the browser")[0] == gw.aor("alice")

    bob.send_message(gw.aor("alice"), "hello alice from baresip")
    received = alice.wait_message("hello alice from baresip")
    assert received["from"] == gw.aor("bob")
    assert received["contentType"].startswith("text/plain")

    # And once more each way: the flows and bindings survive a first exchange.
    assert alice.send_message(gw.aor("bob"), "second to bob") == {"ok": True, "status": 200}
    bob.wait_message("second to bob")
    bob.send_message(gw.aor("alice"), "second to alice")
    alice.wait_message("second to alice")


@pytest.mark.e2e
@pytest.mark.parametrize("use_path", [True, False], ids=["path", "contact"])
def test_baresip_on_kamailio_reaches_browser_registered_through_gateway(
    use_path: bool,
    make_gateway: Callable[..., Gateway],
    make_kamailio: Callable[..., Kamailio],
    make_browser: Callable[..., Browser],
    make_baresip: Callable[..., Baresip],
    start_capture: Callable[..., Capture],
) -> None:
    """The gateway is an edge proxy for a foreign domain: kamailio (legacy.test) is the registrar, the
    gateway serves only example.test and sends everything else to kamailio (`upstream_proxy`).

    path: kamailio stores the Path the gateway adds to the relayed REGISTER and routes the INVITE
    through it (Route: <sip:gw;lr;r2sflow=...>), the RFC 3327 way. contact: kamailio ignores Path and
    sends the INVITE to the registered Contact, which the gateway rewrote into one of its addresses
    carrying the flow token. Either way the INVITE must come down the browser's WebSocket, and the
    browser's 486 must reach baresip."""
    kam = make_kamailio(domain="legacy.test", use_path=use_path)
    gw = make_gateway(gateway_options={"upstream_proxy": f"sip:127.0.0.1:{kam.sip_port}"})
    capture = start_capture(capture_filter=f"port {kam.sip_port} or port {gw.sip_port} or port {gw.ws_port}")
    carol = make_browser("carol", tone_hz=None)
    reg = carol.register(gw.ws_url, kam.aor("carol"))
    assert reg["status"] == 200, reg
    registered = carol.wait_event("registered")
    # kamailio's 200 lists the binding: the gateway's rewritten Contact came back as the browser's own.
    assert any(".invalid" in c for c in registered["contact"]), registered

    bob = make_baresip("bob", user="bob", domain=kam.domain, registrar=kam.udp_uri)
    bob.dial(kam.aor("carol"))
    incoming = carol.wait_event("incoming")
    assert incoming["from"] == kam.aor("bob")
    carol.hangup(486)
    closed = bob.wait_event("CALL_CLOSED")
    assert "486" in str(closed.get("param")), (closed, _sip_log(capture))

    capture.stop()
    # What kamailio sent to the gateway: Route to the Path entry (flow token in it), or, without Path,
    # a Request-URI that is the Contact the gateway rewrote (flow token and original URI in it).
    invite = capture.decode(f'sip.Method == "INVITE" && udp.dstport == {gw.sip_port}', verbose=True)
    request_line = next(line for line in invite.splitlines() if "Request-Line: INVITE" in line)
    routes = [line.strip() for line in invite.splitlines() if line.strip().startswith("Route: ")]
    if use_path:
        assert routes and "r2sflow=" in routes[0] and f"127.0.0.1:{gw.sip_port}" in routes[0], invite[-4000:]
    else:
        assert not routes, invite[-4000:]
        assert "r2sflow=" in request_line and f"127.0.0.1:{gw.sip_port}" in request_line, request_line
    # The browser's 486 went up through the gateway to kamailio, and kamailio relayed it to baresip.
    busy = capture.decode(f"sip.Status-Code == 486 && udp.dstport == {bob.sip_port}")
    assert "486" in busy, capture.decode("sip")
    assert "REQ INVITE sip:carol@legacy.test" in kam.log_text()

    # The gateway still relays for the browser afterwards: a MESSAGE from baresip arrives.
    bob_on_kam = make_baresip(
        "bob2", user="bob2", domain=kam.domain, registrar=kam.udp_uri, contacts=[kam.aor("carol")]
    )
    bob_on_kam.send_message(kam.aor("carol"), "after the 486")
    assert carol.wait_message("after the 486")["from"] == kam.aor("bob2")


@pytest.mark.e2e
def test_browser_savpf_offer_to_baresip_gets_final_response(
    make_gateway: Callable[..., Gateway],
    make_browser: Callable[..., Browser],
    make_baresip: Callable[..., Baresip],
    start_capture: Callable[..., Capture],
) -> None:
    """With the breaker off (`breaker = "never"`, the proxy alone), a browser's UDP/TLS/RTP/SAVPF offer
    goes to baresip as is. Whatever baresip answers, the browser must get baresip's final response, and
    the gateway keeps working."""
    gw = make_gateway(gateway_options={"breaker": "never"})
    capture = start_capture(capture_filter=f"port {gw.sip_port} or port {gw.ws_port}")
    alice = make_browser("alice", tone_hz=ALICE_HZ)
    assert alice.register(gw.ws_url, gw.aor("alice"))["status"] == 200
    bob = make_baresip("bob", user="bob", domain=gw.domain, registrar=gw.udp_uri, contacts=[gw.aor("alice")])

    alice.call(gw.aor("bob"))
    outcome = _wait_final(alice)
    capture.stop()
    # baresip's own final response to the INVITE, as it left baresip toward the gateway.
    finals = capture.decode(f'sip.CSeq.method == "INVITE" && sip.Status-Code >= 200 && udp.srcport == {bob.sip_port}')
    assert finals.strip(), capture.decode("sip")
    # ... to the browser's offer, which reached baresip unchanged (SAVPF, DTLS fingerprint).
    offer = capture.decode(f'sip.Method == "INVITE" && udp.dstport == {bob.sip_port}', verbose=True)
    assert "UDP/TLS/RTP/SAVPF" in offer and "fingerprint" in offer, offer[-4000:]
    if outcome["type"] == "failed":
        # baresip refused the offer: the browser saw that very status, relayed by the gateway.
        assert outcome["originator"] == "remote" and outcome["status"] is not None, outcome
        assert f"Status: {outcome['status']} " in finals, (outcome, finals)
    else:
        # baresip accepted a SAVPF offer it cannot honour; the browser's session then ends.
        assert outcome["type"] in ("confirmed", "ended"), outcome
        assert "Status: 200 " in finals, finals
        alice.hangup()

    # The gateway keeps routing: MESSAGEs both ways.
    assert alice.send_message(gw.aor("bob"), "still there?") == {"ok": True, "status": 200}
    bob.wait_message("still there?")
    bob.send_message(gw.aor("alice"), "yes")
    alice.wait_message("yes")


def _wait_final(phone: Browser, timeout: float = 20.0) -> dict[str, Any]:
    """The first event that ends the INVITE transaction from the browser's point of view."""

    def find() -> dict[str, Any] | None:
        for ev in phone.events():
            if ev.get("type") in ("failed", "confirmed", "ended"):
                return ev
        return None

    found = wait_for(find, timeout, f"browser {phone.name}: final response to its INVITE", interval=0.1)
    assert isinstance(found, dict)
    return found

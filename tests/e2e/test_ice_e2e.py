"""Full ICE on the browser leg with real peers: Chromium + JsSIP and baresip through the gateway, and
coturn as the STUN server that gives the gateway its server-reflexive candidate.

- A phone calls a browser: the gateway offers, so it is the controlling agent and nominates; Chrome
  is controlled, and a pair it reports as nominated can only have been nominated by the gateway.
- The browser restarts ICE in a re-INVITE (new ufrag/pwd): the gateway answers with new credentials
  of its own and audio keeps arriving.
- ``enable-icestun`` with ``stun-server`` pointing at coturn: the gateway's offer carries a
  ``typ srflx raddr rport`` candidate (on loopback the mapped address equals the host one).
- Behind a real source NAT (a namespace of its own, nftables): the srflx candidate is the mapped
  address, not the host one.
- The browser goes silent (its renderer, where Chrome's ICE agent runs, stopped with SIGSTOP; the
  WebSocket's pings are answered by Chrome's network process and stay up): the gateway's consent
  checks (RFC 7675) go unanswered, it ends the call on both legs and holds nothing afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from harness import Artifacts, Browser, Coturn, wait_for
from harness.browser import non_loopback_interfaces
from harness.call import BROWSER_HZ, PHONE_HZ, CallMaker
from test_breaker_robustness_e2e import _wait_released

from conftest import require_binaries
from rtc2sip.config import Settings
from rtc2sip.config.webrtc2sip import StunServer
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.plane import MediaPlane
from rtc2sip.sdp import SessionDescription

# Keeps JsSIP's sessions reachable from the page, for renegotiate() with an ICE restart.
_KEEP_SESSIONS_JS = r"""
(() => {
  if (window.__sessions) return true;
  window.__sessions = [];
  const call = JsSIP.UA.prototype.call;
  JsSIP.UA.prototype.call = function (target, options) {
    const session = call.call(this, target, options);
    window.__sessions.push(session);
    return session;
  };
  return true;
})()
"""

_RESTART_JS = r"""
new Promise((resolve, reject) => {
  const s = window.__sessions[window.__sessions.length - 1];
  const ok = s.renegotiate({ rtcOfferConstraints: { iceRestart: true } }, () => resolve(true));
  if (!ok) reject(new Error('renegotiate() refused'));
})
"""


def _ufrag(sdp: str) -> str:
    found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M)
    assert found, sdp
    return found.group(1)


@pytest.mark.e2e
def test_gateway_nominates_when_a_phone_calls_a_browser(make_call: CallMaker) -> None:
    call = make_call("phone")
    alice = call.browser
    offer = alice.wait_event("sdp", originator="remote")["sdp"]
    assert "a=ice-lite" not in offer  # a full agent offers: the controlling one (RFC 8445 §6.1.1)
    stats = alice.wait_media(min_packets=50)
    assert stats["transport"]["iceRole"] == "controlled", stats
    # Chrome, controlled, nominates nothing: its selected pair was nominated by the gateway's
    # USE-CANDIDATE (RFC 8445 §8.1.1).
    # Chrome reports a pair "in-progress" again while one of its checks on it is in flight (seen
    # once in CI on a loaded machine, nominated and carrying media): wait for a succeeded sample
    def nominated() -> Any:
        pair = (alice.stats() or {}).get("selectedPair") or {}
        return pair if pair.get("nominated") and pair.get("state") == "succeeded" else None

    pair: Any = wait_for(nominated, 20, "a nominated, succeeded pair in Chrome")
    assert pair["nominated"] is True and pair["state"] == "succeeded", pair
    assert abs(alice.wait_tone(PHONE_HZ)["frequency"] - PHONE_HZ) <= 25
    call.hang_up()


@pytest.mark.e2e
def test_ice_restart_in_a_reinvite_keeps_audio(make_call: CallMaker) -> None:
    call = make_call("browser", page_js=[_KEEP_SESSIONS_JS])
    alice, bob = call.browser, call.phone
    first = alice.wait_media(min_packets=50)
    before = alice.wait_event("sdp", originator="remote")["sdp"]
    assert stats_role(first) == "controlling"

    assert alice.eval(_RESTART_JS, timeout=20) is True
    sdps: Any = wait_for(lambda: [e["sdp"] for e in alice.events() if e.get("type") == "sdp"
                             and e.get("originator") == "remote"][1:] or None, 10, "the re-INVITE's answer")
    after = sdps[-1]
    assert _ufrag(after) != _ufrag(before), "the gateway restarts with new credentials (RFC 8445 §9)"
    received = int(first["inbound"]["packetsReceived"])
    wait_for(lambda: int(((alice.stats() or {}).get("inbound") or {}).get("packetsReceived", 0)) > received + 100,
             15, "audio after the ICE restart")
    assert abs(alice.wait_tone(PHONE_HZ)["frequency"] - PHONE_HZ) <= 25
    call.hang_up()
    tone = bob.recorded_tone()
    assert abs(tone.frequency - BROWSER_HZ) <= 25, tone


def stats_role(stats: dict[str, object]) -> object:
    transport = stats.get("transport")
    return transport.get("iceRole") if isinstance(transport, dict) else None


@pytest.mark.e2e
async def test_server_reflexive_candidate_from_the_stun_server(make_coturn: Callable[..., Coturn]) -> None:
    turn = make_coturn()  # coturn answers plain STUN Binding requests on its listening port
    base = Settings()
    conf = dataclasses.replace(base.webrtc2sip, stun_server=StunServer("127.0.0.1", turn.port), enable_icestun=True)
    settings = dataclasses.replace(base, webrtc2sip=conf)
    plane = MediaPlane(settings, Certificate.generate("gw"), port_range=(45000, 45099))
    try:
        phone = SessionDescription.parse(
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
        session, offer = await plane.offer_from_legacy("call-srflx", phone)
        candidates = offer.media[0].candidates
        host = next(c for c in candidates if c.type == "host")
        srflx = [c for c in candidates if c.type == "srflx"]
        assert len(srflx) == 1, [str(c) for c in candidates]
        assert (srflx[0].ip, srflx[0].port) == (host.ip, host.port)  # loopback: no NAT in between
        assert (srflx[0].raddr, srflx[0].rport) == (host.ip, host.port)
        assert srflx[0].priority < host.priority
        assert f"typ srflx raddr {host.ip} rport {host.port}" in str(srflx[0])
        await plane.delete(session)
    finally:
        await plane.close()
    assert plane.ports.in_use == 0


def _renderers(browser: Browser) -> list[int]:
    """Chromium's renderer processes under this test's browser driver (children of its node process)."""
    root = browser.driver.proc.pid
    assert root is not None
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"--type=renderer" in f.read():
                        found.append(child)
            except OSError:
                pass
    return found


@pytest.mark.e2e
def test_browser_gone_silent_ends_the_call_by_consent(make_call: CallMaker) -> None:
    call = make_call("browser")
    gw, alice, bob = call.gateway, call.browser, call.phone
    alice.wait_media(min_packets=50)
    renderers = _renderers(alice)
    assert renderers, "no Chromium renderer found under the browser driver"
    for pid in renderers:
        os.kill(pid, signal.SIGSTOP)
    try:
        # 30 s without an answer to a consent check (RFC 7675 §5.1), checks every ~5 s.
        bob.wait_event("CALL_CLOSED", timeout=60)
    finally:
        for pid in renderers:
            os.kill(pid, signal.SIGCONT)
    assert "ice consent lost" in gw.log_text()
    alice.wait_event("ended", timeout=15)
    _wait_released(gw)


# -- behind a NAT ---------------------------------------------------------------------------------------

# Run in the NAT-ed namespace: the gateway's media plane offers to a browser and prints its SDP.
_GATHER_SCRIPT = r"""
import asyncio, dataclasses, sys
from rtc2sip.config import Settings
from rtc2sip.config.webrtc2sip import StunServer
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.plane import MediaPlane
from rtc2sip.sdp import SessionDescription

async def main() -> None:
    base = Settings()
    conf = dataclasses.replace(base.webrtc2sip, stun_server=StunServer(sys.argv[2], int(sys.argv[3])),
                               enable_icestun=True)
    plane = MediaPlane(dataclasses.replace(base, webrtc2sip=conf), Certificate.generate("gw"), host=sys.argv[1],
                       port_range=(46000, 46099))
    phone = SessionDescription.parse("v=0\r\no=- 7 1 IN IP4 10.1.0.1\r\ns=-\r\nc=IN IP4 10.1.0.1\r\nt=0 0\r\n"
                                     "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
    _, offer = await plane.offer_from_legacy("call-nat", phone)
    print(offer, flush=True)
    await plane.close()

asyncio.run(main())
"""

INSIDE, ROUTER, PUBLIC, MAPPED = "192.168.77.2", "192.168.77.1", "10.77.0.1", "10.77.0.9"


class _PublicCoturn(Coturn):
    """coturn on the 'public' address, as the STUN server a NAT-ed gateway asks."""

    def argv(self) -> list[str]:
        return [a.replace("127.0.0.1", PUBLIC) for a in super().argv()]


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{argv}: {done.returncode} {done.stderr}")
    return done.stdout


@pytest.mark.e2e
def test_server_reflexive_candidate_behind_a_nat(artifacts: Artifacts) -> None:
    """The gateway in a namespace of its own behind a source NAT (nftables, in the test's namespace) to
    a 'public' address where coturn answers STUN: its srflx candidate is the NAT's mapped address, with
    raddr/rport its host candidate (RFC 8445 §5.1.1.2, RFC 8839 §5.1)."""
    if non_loopback_interfaces() or os.environ.get("RTC2SIP_E2E_STRICT") != "1":
        pytest.skip("changes the network: only inside scripts/test.sh's private namespace")
    require_binaries("nft", "ip", "unshare", "nsenter", "turnserver")
    inner = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    added: list[list[str]] = []
    turn: _PublicCoturn | None = None
    try:
        wait_for(lambda: os.readlink(f"/proc/{inner.pid}/ns/net") != os.readlink("/proc/self/ns/net"), 5,
                 "the gateway's namespace")
        ns = ["nsenter", "-t", str(inner.pid), "-n"]
        _run("ip", "link", "add", "rtcnat0", "type", "veth", "peer", "name", "rtcnat1")
        added.append(["ip", "link", "del", "rtcnat0"])
        _run("ip", "link", "set", "rtcnat1", "netns", str(inner.pid))
        _run("ip", "addr", "add", f"{ROUTER}/24", "dev", "rtcnat0")
        _run("ip", "link", "set", "rtcnat0", "up")
        _run("ip", "addr", "add", f"{PUBLIC}/32", "dev", "lo")
        added.append(["ip", "addr", "del", f"{PUBLIC}/32", "dev", "lo"])
        # Replies to the mapped address are routed toward the gateway, then un-NATed by conntrack.
        _run("ip", "route", "add", f"{MAPPED}/32", "via", INSIDE)
        for cmd in (["ip", "addr", "add", f"{INSIDE}/24", "dev", "rtcnat1"], ["ip", "link", "set", "rtcnat1", "up"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", ROUTER]):
            _run(*ns, *cmd)
        nat = (f"table ip rtc2sip_nat {{ chain input {{ type nat hook input priority 100; "
               f"ip saddr {INSIDE} ip daddr {PUBLIC} snat to {MAPPED}; }}; }}")
        _run("nft", nat)
        added.append(["nft", "delete", "table", "ip", "rtc2sip_nat"])
        turn = _PublicCoturn(artifacts, name="coturn-public")
        turn.start()
        out = _run(*ns, sys.executable, "-c", _GATHER_SCRIPT, INSIDE, PUBLIC, str(turn.port))
    finally:
        if turn is not None:
            turn.stop()
        inner.kill()
        inner.wait()
        for cmd in reversed(added):
            subprocess.run(cmd, capture_output=True, timeout=30)
    offer = SessionDescription.parse(out.replace("\n", "\r\n").replace("\r\r\n", "\r\n"))
    candidates = offer.media[0].candidates
    host = [c for c in candidates if c.type == "host"]
    srflx = [c for c in candidates if c.type == "srflx"]
    assert [c.ip for c in host] == [INSIDE], [str(c) for c in candidates]
    assert len(srflx) == 1 and srflx[0].ip == MAPPED, [str(c) for c in candidates]
    assert (srflx[0].raddr, srflx[0].rport) == (INSIDE, host[0].port)
    assert f"typ srflx raddr {INSIDE} rport {host[0].port}" in out

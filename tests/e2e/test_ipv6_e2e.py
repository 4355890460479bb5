"""IPv6 end to end, two-way audio proven at each end by the tone the other side plays, in both call
directions; baresip (PCMU only) on [::1] in IPv6-only mode, the gateway's SIP over UDP and TCP and its
legacy media on ::1, and Chromium + JsSIP either

- on IPv6 too: WebSocket on ws://[::1], ICE over IPv6 loopback (``browser_ip="ipv6"``), or
- on IPv4: WebSocket on ws://127.0.0.1, ICE over 127.0.0.1 (``browser_ip="ipv4"``), the gateway
  translating c=IN IP4 on the browser leg into c=IN IP6 on the phone's and back.

Chromium gathers ::1 candidates only when IPv6 looks usable: with
``--allow-loopback-in-peer-connection`` it adds the IPv6 loopback network only if it has a default
local IPv6 address, i.e. a route to the IPv6 internet from a non-loopback, non-link-local address
(blink's IpcNetworkManager; with only ``lo`` it gathers 127.0.0.1 alone and ICE toward an IPv6-only
gateway fails). The test therefore gives the run's private namespace a veth pair with a unique local
address and an IPv6 default route for its duration, which is why that case runs only in
scripts/test.sh's namespace (the IPv4-browser case runs anywhere). Chromium then also gathers that
ULA: the check asserts that the selected pair is IPv6 on both ends and that the gateway's side of it
is ::1, whichever local candidate Chromium nominates.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator

import pytest
from harness import Baresip, Browser, BrowserDriver, non_loopback_interfaces
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, Caller, CallMaker

from conftest import require_binaries

VETH, VETH_PEER, ULA = "rtc6a", "rtc6b", "fd00:6e2e::1"


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{argv}: {done.returncode} {done.stderr}")


@pytest.fixture
def ipv6_route(browser_driver: BrowserDriver) -> Iterator[None]:
    """An IPv6 default route from a ULA on a veth pair: what makes Chromium gather ::1 (see above).
    Made after the browser driver, whose start refuses a namespace with other interfaces than lo."""
    if non_loopback_interfaces() or os.environ.get("RTC2SIP_E2E_STRICT") != "1":
        pytest.skip("changes the network: only inside scripts/test.sh's private namespace")
    require_binaries("ip")
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 in this kernel")
    _run("ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER)
    try:
        _run("ip", "link", "set", VETH, "up")
        _run("ip", "link", "set", VETH_PEER, "up")
        _run("ip", "-6", "addr", "add", f"{ULA}/64", "dev", VETH, "nodad")
        _run("ip", "-6", "route", "add", "default", "dev", VETH)
        yield
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True, timeout=30)


def _assert_browser_hears(alice: Browser, hz: float, browser_ip: str) -> None:
    stats = assert_browser_hears(alice, hz)
    pair = stats["selectedPair"]
    assert pair is not None, stats
    local, remote = ipaddress.ip_address(pair["local"]["address"]), ipaddress.ip_address(pair["remote"]["address"])
    if browser_ip == "ipv6":
        assert local.version == 6 and str(remote) == "::1", pair
    else:
        assert str(local) == str(remote) == "127.0.0.1", pair


def _assert_sdp(alice: Browser, bob: Baresip, browser_ip: str) -> None:
    """What each side got: the browser c= and candidates of its family only, baresip c=IN IP6 ::1
    (read in its SIP trace) and nothing of IPv4. (The browser's o= line keeps JSEP's IN IP4
    127.0.0.1, RFC 8829 §5.2.1: it names no address.)"""
    remote = [e["sdp"] for e in alice.events() if e.get("type") == "sdp" and e.get("originator") == "remote"]
    assert remote, alice.events()
    sdp = remote[-1]
    candidates = [line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")]
    if browser_ip == "ipv6":
        assert "c=IN IP6 ::1" in sdp and "c=IN IP4" not in sdp and candidates == ["::1"], sdp
    else:
        assert "c=IN IP4 127.0.0.1" in sdp and "IP6" not in sdp and candidates == ["127.0.0.1"], sdp
    log = bob.log_text()
    assert "c=IN IP6 ::1" in log and "c=IN IP4" not in log, "baresip saw IPv4 SDP"


def _check_call(request: pytest.FixtureRequest, browser_ip: str, caller: Caller, make_call: CallMaker) -> None:
    """``caller`` calls and hangs up; tone both ways, IPv6 (or the browser's family) in every SDP."""
    if browser_ip == "ipv6":
        request.getfixturevalue("ipv6_route")
    gateway_kw = {"host": "::1"} if browser_ip == "ipv6" else {"host": "::1", "ws_host": "127.0.0.1"}
    call = make_call(caller, gateway_kw=gateway_kw, phone_kw={"host": "::1"}, auto_answer=True)
    _assert_browser_hears(call.browser, PHONE_HZ, browser_ip)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    _assert_sdp(call.browser, call.phone, browser_ip)


@pytest.mark.e2e
@pytest.mark.parametrize("browser_ip", ["ipv6", "ipv4"])
def test_browser_calls_ipv6_phone(request: pytest.FixtureRequest, browser_ip: str, make_call: CallMaker) -> None:
    _check_call(request, browser_ip, "browser", make_call)


@pytest.mark.e2e
@pytest.mark.parametrize("browser_ip", ["ipv6", "ipv4"])
def test_ipv6_phone_calls_browser(request: pytest.FixtureRequest, browser_ip: str, make_call: CallMaker) -> None:
    _check_call(request, browser_ip, "phone", make_call)

"""The RTCWeb Breaker with real peers: Chromium + JsSIP on one side, baresip (PCMU only, plain RTP/AVP)
on the other, two-way audio proven at each end by packets, energy and the tone the other side plays.

The breaker engages on its own (`breaker = "auto"`, the default): the call crosses between a
WebSocket/SAVPF endpoint and a plain-RTP one.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable

import pytest
from harness import Gateway, wait_for
from harness.audio import assert_browser_hears, assert_phone_heard
from harness.call import BROWSER_HZ, PHONE_HZ, Caller, CallMaker


@pytest.mark.e2e
def test_browser_calls_legacy_phone(make_call: CallMaker) -> None:
    call = make_call("browser")
    assert_browser_hears(call.browser, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    call.gateway.assert_relay_mode()  # the engine's counters (RTC2SIP_FAST_PATH=auto), or Python (off)


@pytest.mark.e2e
def test_legacy_phone_calls_browser(make_call: CallMaker) -> None:
    call = make_call("phone")
    assert_browser_hears(call.browser, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)
    call.gateway.assert_relay_mode()


def _children(pid: int) -> list[int]:
    """The process's direct children (Linux: /proc/PID/task/*/children)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _worker_state(gw: Gateway) -> dict[str, int]:
    """The gateway's SIGUSR1 state line, which with media workers counts what the workers hold."""
    assert gw.proc is not None and gw.proc.pid is not None
    before = gw.log_text().count("rtc2sip state:")
    os.kill(gw.proc.pid, signal.SIGUSR1)

    def logged() -> str | None:
        lines = [ln for ln in gw.log_text().splitlines() if "rtc2sip state:" in ln]
        return lines[-1] if len(lines) > before else None

    line = wait_for(logged, 5, "the gateway's state line", interval=0.05)
    assert isinstance(line, str)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split("rtc2sip state:", 1)[1])}


@pytest.mark.e2e
@pytest.mark.parametrize("caller", ["browser", "phone"])
def test_calls_through_media_worker_processes(
    caller: Caller, make_gateway: Callable[..., Gateway], make_call: CallMaker
) -> None:
    """``[media] workers = 2``: the same calls, tone both ways, with the media plane in two worker
    processes; afterwards the workers hold no session, port or sink, and they end with the gateway."""
    gw = make_gateway(extra_toml="[media]\nworkers = 2\n")
    assert gw.proc is not None and gw.proc.pid is not None
    workers = _children(gw.proc.pid)
    assert len(workers) == 2, workers
    call = make_call(caller, gateway=gw)
    assert_browser_hears(call.browser, PHONE_HZ)
    during = _worker_state(gw)
    assert during["media_sessions"] == 1 and during["worker_sessions"] == 1, during
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)

    def released() -> dict[str, int] | None:
        state = _worker_state(gw)
        held = ("media_sessions", "worker_sessions", "worker_ports", "worker_sinks", "calls")
        return state if all(state.get(k, 0) == 0 for k in held) else None

    wait_for(released, 10, "the workers to release the call", interval=0.3)
    assert sorted(_children(gw.proc.pid)) == sorted(workers)  # nobody died or was restarted
    gw.stop()
    wait_for(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to end with the gateway")


@pytest.mark.e2e
def test_a_killed_media_worker_ends_its_call_and_comes_back(
    make_gateway: Callable[..., Gateway], make_call: CallMaker
) -> None:
    """``[media] workers = 1``: the worker killed mid-call (SIGKILL) ends that call at both ends (BYE
    each way, logged in one line), a new worker is started, and the next call has audio both ways."""
    gw = make_gateway(extra_toml="[media]\nworkers = 1\n")
    assert gw.proc is not None and gw.proc.pid is not None
    (worker,) = _children(gw.proc.pid)
    call = make_call("browser", gateway=gw)
    alice, bob = call.browser, call.phone
    assert_browser_hears(alice, PHONE_HZ)
    os.kill(worker, signal.SIGKILL)
    alice.wait_event("ended")
    bob.wait_event("CALL_CLOSED")
    assert f"media worker 0 (pid {worker}) died" in gw.log_text()
    restarted = wait_for(lambda: [p for p in _children(gw.proc.pid) if p != worker and _alive(p)] or None, 15,
                         "a new media worker")
    wait_for(lambda: "media worker 0 started again" in gw.log_text(), 15, "the new worker ready")
    alice.mark_events()
    bob.mark_events()
    call.place("browser")
    assert_browser_hears(alice, PHONE_HZ)
    call.hang_up()
    assert _children(gw.proc.pid) == restarted

"""Fixtures for end-to-end tests with real peers on loopback.

Every factory fixture starts processes on free ports of 127.0.0.1, stops them (process groups) at
teardown even when the test failed, and keeps their logs in artifacts/<test-name>/; when a test fails,
the tail of every log is added to its report.

    def test_call(make_gateway, make_browser):
        gw = make_gateway()
        alice, bob = make_browser("alice", tone_hz=600), make_browser("bob", tone_hz=1400)
        ...

Prerequisites (Debian packages, node modules, a network namespace with only `lo` for Chromium) are
installed and set up by scripts/test.sh. Run directly, a test whose prerequisite is missing is
skipped with the reason; under scripts/test.sh (RTC2SIP_E2E_STRICT=1) it fails instead, so that CI
cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from harness import (
    Artifacts,
    Baresip,
    Browser,
    BrowserDriver,
    Capture,
    Coturn,
    Gateway,
    Kamailio,
    Sipp,
    js_ready,
    non_loopback_interfaces,
)
from harness.call import CallMaker

_ARTIFACTS = pytest.StashKey[Artifacts]()
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    artifacts = item.stash.get(_ARTIFACTS, None)
    if artifacts is not None and report.failed:
        for title, text in artifacts.tails():
            report.sections.append((f"{report.when} log tail: {title}", text))
        report.sections.append(("artifacts", str(artifacts.dir)))
    return report


def strict() -> bool:
    return os.environ.get("RTC2SIP_E2E_STRICT", "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip when a developer runs pytest without the prerequisites; fail under scripts/test.sh."""
    if strict():
        pytest.fail(f"e2e prerequisite missing: {reason}", pytrace=False)
    pytest.skip(reason)


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (scripts/test.sh installs the Debian packages)")


class _Started:
    """Objects started by one fixture, stopped in reverse order; every stop runs even if one fails."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, obj: Any) -> Any:
        self.items.append(obj)
        return obj

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for obj in reversed(self.items):
            try:
                obj.stop()
            except Exception as exc:
                errors.append(exc)
        self.items.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    """artifacts/<test-name>/, emptied at the start of the test."""
    art = Artifacts.for_test(request.node.nodeid)
    request.node.stash[_ARTIFACTS] = art
    return art


@pytest.fixture
def make_gateway(artifacts: Artifacts) -> Iterator[Callable[..., Gateway]]:
    """make_gateway(domains=("example.test",), gateway_options={}, extra_toml="", name="gateway") -> a
    started Gateway (rtc2sip). See harness/gateway.py for the TOML it writes."""
    started = _Started()

    def make(**kwargs: Any) -> Gateway:
        gw: Gateway = started.add(Gateway(artifacts, **kwargs))
        return gw.start()

    yield make
    started.stop_all()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    """A started rtc2sip serving example.test on UDP/TCP and WS."""
    return make_gateway()


@pytest.fixture
def make_kamailio(artifacts: Artifacts) -> Iterator[Callable[..., Kamailio]]:
    """make_kamailio(domain="example.test", users={"alice": "pw"} | None, websocket=False, use_path=True,
    name="kamailio") -> a started Kamailio registrar + proxy."""
    require_binaries("kamailio")
    started = _Started()

    def make(**kwargs: Any) -> Kamailio:
        k: Kamailio = started.add(Kamailio(artifacts, **kwargs))
        return k.start()

    yield make
    started.stop_all()


@pytest.fixture
def make_baresip(artifacts: Artifacts) -> Iterator[Callable[..., Baresip]]:
    """make_baresip(name, user=, domain=, registrar=, password=None, register=True, tone_hz=440,
    contacts=(), ...) -> a started Baresip (registered, unless register=False)."""
    require_binaries("baresip")
    started = _Started()

    def make(name: str, **kwargs: Any) -> Baresip:
        b: Baresip = started.add(Baresip(artifacts, name, **kwargs))
        return b.start()

    yield make
    started.stop_all()


@pytest.fixture
def browser_driver(artifacts: Artifacts) -> Iterator[BrowserDriver]:
    """The node process hosting this test's Chromium phones."""
    reason = js_ready()
    if reason:
        unavailable(reason)
    others = non_loopback_interfaces()
    if others and os.environ.get("RTC2SIP_E2E_HOST_NETWORK", "") in ("", "0"):
        unavailable(
            f"Chromium would pick {', '.join(others)} over loopback for ICE. Run the tests through "
            "scripts/test.sh (pytest in a network namespace with only lo), or: unshare --net sh -c "
            "'ip link set lo up && .venv/bin/pytest ...'; RTC2SIP_E2E_HOST_NETWORK=1 runs them here anyway"
        )
    driver = BrowserDriver(artifacts)
    try:
        driver.start()
        yield driver
    finally:
        driver.stop()


@pytest.fixture
def make_browser(browser_driver: BrowserDriver) -> Callable[..., Browser]:
    """make_browser(name, tone_hz=1000.0) -> a Chromium phone whose microphone plays tone_hz."""

    def make(name: str, **kwargs: Any) -> Browser:
        return browser_driver.open(name, **kwargs)

    return make


@pytest.fixture
def make_call(
    make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser], make_baresip: Callable[..., Baresip]
) -> CallMaker:
    """make_call(caller="browser" | "phone" | None, gateway=None, gateway_kw={}, phone_kw={}, register_kw={},
    page_js=(), ...) -> a BridgedCall: the gateway, baresip "bob" and browser "alice" registered, and
    the call placed by `caller` and confirmed at its end (harness/call.py)."""
    return CallMaker(make_gateway, make_browser, make_baresip)


@pytest.fixture
def make_coturn(artifacts: Artifacts) -> Iterator[Callable[..., Coturn]]:
    """make_coturn(username="turnuser", password="turnpass", name="coturn") -> a started TURN server on
    127.0.0.1 (UDP, loopback peers allowed); `.ice_server` is the RTCIceServer for a browser's pcConfig."""
    require_binaries("turnserver")
    started = _Started()

    def make(**kwargs: Any) -> Coturn:
        t: Coturn = started.add(Coturn(artifacts, **kwargs))
        return t.start()

    yield make
    started.stop_all()


@pytest.fixture
def make_sipp(artifacts: Artifacts) -> Iterator[Callable[..., Sipp]]:
    """make_sipp(name, scenario, remote=None, service=None, calls=None, rate=None, keys={}, ...) -> a
    Sipp, not started: `.run(timeout)` for a uac, `.start()` for a uas (stopped at teardown)."""
    require_binaries("sipp")
    started = _Started()

    def make(name: str, scenario: str | Path, **kwargs: Any) -> Sipp:
        s: Sipp = started.add(Sipp(artifacts, name, scenario, **kwargs))
        return s

    yield make
    started.stop_all()


@pytest.fixture
def start_capture(artifacts: Artifacts) -> Iterator[Callable[..., Capture]]:
    """start_capture(name="capture", capture_filter="udp or tcp") -> a running tshark writing
    artifacts/<test>/<name>.pcapng; stopped at teardown (or call .stop() then .decode("sip"))."""
    require_binaries("tshark")
    started = _Started()

    def make(name: str = "capture", **kwargs: Any) -> Capture:
        c: Capture = started.add(Capture(artifacts, name, **kwargs))
        return c.start()

    yield make
    started.stop_all()

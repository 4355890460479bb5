"""One bridged call for the breaker e2e tests: the gateway (rtc2sip), a legacy phone (baresip, ``bob``)
and a browser (Chromium + JsSIP, or SIP.js with ``browser_kw={"stack": "sipjs"}``, ``alice``), both
registered on the gateway, and the call placed in one direction and confirmed by its caller.

The tests keep their own checks (audio both ways, logs, captures); this module only builds the call
and ends it. ``make_call`` (conftest.py) binds it to the test's fixtures:

    call = make_call("phone", gateway_kw={"extra_toml": "[media]\\nworkers = 1\\n"})
    assert_browser_hears(call.browser, PHONE_HZ)
    call.hang_up()
    assert_phone_heard(call.phone, BROWSER_HZ)

With ``caller=None`` both are registered and nobody calls yet: a test starts a capture, adds a third
party (``add_phone``, ``add_browser``) or patches the page first, then calls ``place()``.
``registered_browser`` is the browser part alone; ``call_service`` puts it in a call to one of the
gateway's own services (no phone).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .baresip import Baresip
from .browser import Browser
from .gateway import Gateway

Caller = Literal["browser", "phone"]

BROWSER_HZ = 1000.0
PHONE_HZ = 440.0


def registered_browser(make_browser: Callable[..., Browser], gateway: Gateway, name: str = "alice", *,
                       tone_hz: float | None = BROWSER_HZ, page_js: Sequence[str] = (),
                       browser_kw: Mapping[str, Any] | None = None, **register_kw: Any) -> Browser:
    """A browser ``name`` whose microphone plays ``tone_hz``, its page patched by ``page_js`` (scripts
    that each return true), registered on ``gateway`` as ``name`` (``register_kw`` go to
    ``Browser.register``; ``browser_kw`` to ``make_browser``, e.g. ``{"stack": "sipjs"}``). Also
    for a browser that calls the gateway's own services (echo, testpattern) with no phone."""
    browser = make_browser(name, tone_hz=tone_hz, **(browser_kw or {}))
    for script in page_js:
        assert browser.eval(script) is True, script[:200]
    assert browser.register(gateway.ws_url, gateway.aor(name), **register_kw)["status"] == 200
    return browser


def call_service(make_browser: Callable[..., Browser], gateway: Gateway, service: str, *,
                 tone_hz: float | None = BROWSER_HZ, page_js: Sequence[str] = ()) -> Browser:
    """A browser "alice" (:func:`registered_browser`) in a call to the gateway's service ``service``
    (``echo``, ``diag``, ``testpattern``), confirmed."""
    browser = registered_browser(make_browser, gateway, tone_hz=tone_hz, page_js=page_js)
    browser.call(gateway.aor(service))
    browser.wait_event("confirmed")
    return browser


@dataclass
class BridgedCall:
    """The three parties of a call through the breaker; ``caller`` is who placed the latest call."""

    gateway: Gateway
    browser: Browser
    phone: Baresip
    make_browser: Callable[..., Browser] = field(repr=False)
    make_baresip: Callable[..., Baresip] = field(repr=False)
    caller: Caller | None = None

    def place(
        self,
        caller: Caller = "browser",
        *,
        target: str | None = None,
        timeout: float | None = None,
        pc_config: Mapping[str, Any] | None = None,
    ) -> BridgedCall:
        """``caller`` calls the other party (or ``target``, a URI the browser calls) and the call is
        confirmed at the caller's end: JsSIP's "confirmed" (within 15 s unless ``timeout``), or baresip's
        CALL_ESTABLISHED (10 s)."""
        if caller == "browser":
            self.browser.call(target or self.gateway.aor(self.phone.user), pc_config=pc_config)
            self.browser.wait_event("confirmed", timeout=15.0 if timeout is None else timeout)
        else:
            assert target is None and pc_config is None, "the phone calls the browser's AOR"
            self.phone.dial(self.gateway.aor("alice"))
            self.phone.wait_event("CALL_ESTABLISHED", timeout=10.0 if timeout is None else timeout)
        self.caller = caller
        return self

    def hang_up(self, by: Caller | None = None) -> None:
        """``by`` (default: the caller) hangs up; returns once the other end has seen the call end."""
        who = by or self.caller
        assert who is not None, "no call placed"
        if who == "browser":
            self.browser.hangup()
            self.phone.wait_event("CALL_CLOSED")
        else:
            self.phone.hangup()
            self.browser.wait_event("ended")

    def add_phone(self, name: str, tone_hz: float, **kwargs: Any) -> Baresip:
        """Another baresip, ``name`` registered on the gateway (``kwargs`` go to ``make_baresip``)."""
        return self.make_baresip(name, user=name, domain=self.gateway.domain, registrar=self.gateway.udp_uri,
                                 tone_hz=tone_hz, **kwargs)

    def add_browser(self, name: str, tone_hz: float, **register_kw: Any) -> Browser:
        """Another browser, ``name`` registered on the gateway (``register_kw`` go to ``register()``)."""
        return registered_browser(self.make_browser, self.gateway, name, tone_hz=tone_hz, **register_kw)


class CallMaker:
    """``make_call(caller, ...)``: a :class:`BridgedCall` from the test's gateway, baresip and browser
    factories.

    - ``caller``: "browser" (alice calls bob), "phone" (bob calls alice, who answers at once), or None
      (both registered, no call: ``place()`` later).
    - ``gateway``: an already started gateway; else one is made with ``gateway_kw`` (``extra_toml``,
      ``gateway_options``, ``host``, ``ws_host``, ...).
    - ``phone``: an already started baresip; else "bob" is made with ``phone_kw``, more
      ``make_baresip`` arguments (``audio_codecs``, ``video_codecs``, ``host``, and
      ``domain``/``registrar``/``password`` for a phone registered elsewhere).
    - ``register_kw``: more ``Browser.register`` arguments (``codecs``, ``acceptRefer``, ``password``,
      ``contactUri``, ...); ``auto_answer`` defaults to ``caller == "phone"``.
    - ``page_js``: scripts evaluated in the browser's page before it registers, each returning true.
    - ``browser_kw``: more ``make_browser`` arguments (``stack="sipjs"``: SIP.js instead of JsSIP).
    - ``target``, ``timeout``, ``pc_config``: as in :meth:`BridgedCall.place`.
    """

    def __init__(self, make_gateway: Callable[..., Gateway], make_browser: Callable[..., Browser],
                 make_baresip: Callable[..., Baresip]) -> None:
        self.make_gateway = make_gateway
        self.make_browser = make_browser
        self.make_baresip = make_baresip

    def __call__(
        self,
        caller: Caller | None = "browser",
        *,
        gateway: Gateway | None = None,
        gateway_kw: Mapping[str, Any] | None = None,
        phone: Baresip | None = None,
        phone_kw: Mapping[str, Any] | None = None,
        register_kw: Mapping[str, Any] | None = None,
        auto_answer: bool | None = None,
        page_js: Sequence[str] = (),
        browser_kw: Mapping[str, Any] | None = None,
        browser_hz: float = BROWSER_HZ,
        phone_hz: float = PHONE_HZ,
        target: str | None = None,
        timeout: float | None = None,
        pc_config: Mapping[str, Any] | None = None,
    ) -> BridgedCall:
        assert gateway is None or gateway_kw is None, "a started gateway, or the arguments to make one"
        gw = gateway if gateway is not None else self.make_gateway(**(gateway_kw or {}))
        if phone is None:
            phone_args: dict[str, Any] = {"user": "bob", "domain": gw.domain, "registrar": gw.udp_uri,
                                          "tone_hz": phone_hz, **(phone_kw or {})}
            phone = self.make_baresip("bob", **phone_args)
        else:
            assert phone_kw is None, "a started phone, or the arguments to make one"
        answer = caller == "phone" if auto_answer is None else auto_answer
        browser = registered_browser(self.make_browser, gw, tone_hz=browser_hz, page_js=page_js, auto_answer=answer,
                                     browser_kw=browser_kw, **(register_kw or {}))
        call = BridgedCall(gw, browser, phone, self.make_browser, self.make_baresip)
        if caller is not None:
            call.place(caller, target=target, timeout=timeout, pc_config=pc_config)
        return call

"""rtc2sip's built-in test services: ``sip:echo@DOMAIN`` (the caller hears itself),
``sip:diag@DOMAIN`` (RTP diagnostics: announced against real media source, told in a SIP MESSAGE) and
``sip:testpattern@DOMAIN`` (a generated VP8 picture with a running clock, and a tone).

All are users of one in-process SIP UAS on a loopback UDP port (:mod:`rtc2sip.services.uas`).
The proxy sends a local-domain Request-URI whose user is a service's name to that UAS
(:meth:`Services.contact`), as it sends a registered user's calls to its Contact; a browser's call
is broken by the RTCWeb Breaker first, so the UAS is its legacy leg and no second media stack exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..media.ports import PortAllocator
from .diag import DiagService
from .echo import EchoService
from .testpattern import TestPatternService
from .uas import Service, ServiceCall, ServiceUas

if TYPE_CHECKING:
    from ..breaker.b2bua import B2bua
    from ..media.remote import AnyPlane as MediaPlane

__all__ = ["DiagService", "EchoService", "Service", "ServiceCall", "ServiceUas", "Services", "TestPatternService",
           "breaker_inspector"]


class Services:
    """The services of one gateway: start, route lookup (:meth:`contact`), stop."""

    def __init__(self, *, media_host: str = "127.0.0.1", ports: PortAllocator | None = None,
                 diag_duration: float = 3.0, diag_wait: float = 5.0,
                 on_verdict: Callable[[dict[str, Any]], None] | None = None,
                 inspect: Callable[[str], str | None] | None = None) -> None:
        self.echo = EchoService()
        self.diag = DiagService(diag_duration, diag_wait, on_verdict, inspect)
        self.testpattern = TestPatternService()
        self.uas = ServiceUas({"echo": self.echo, "diag": self.diag, "testpattern": self.testpattern},
                              media_host=media_host, ports=ports)
        self._contacts: dict[str, str] = {}

    async def start(self) -> None:
        await self.uas.start()
        self._contacts = self.uas.contacts()

    def contact(self, user: str | None) -> str | None:
        """The URI a request for ``user`` at a local domain goes to, or None (not a service)."""
        return self._contacts.get(user.lower()) if user else None

    def is_source(self, host: str, port: int) -> bool:
        return self.uas.is_source(host, port)

    async def close(self) -> None:
        await self.uas.close()


def breaker_inspector(breaker: B2bua | None, media: MediaPlane | None) -> Callable[[str], str | None]:
    """For :class:`DiagService`: when the diagnosed call is the legacy leg of a broken browser call, what
    the gateway saw of the browser leg (the ICE pair the browser nominated, the DTLS state). The
    diagnosed RTP is then the media plane's relay, and the browser's own path is this ICE pair."""

    def inspect(call_id: str) -> str | None:
        if breaker is None or media is None:
            return None
        call = next((c for c in breaker.calls.values() if c.callee is not None and c.callee.call_id == call_id),
                    None)
        if call is None or call.caller is None or not call.caller.webrtc or call.session is None:
            return None
        try:
            stats: dict[str, Any] = media.stats(call.session)
        except KeyError:
            return None
        webrtc = stats.get("webrtc") or {}
        ice = webrtc.get("ice") or {}
        dtls = (webrtc.get("dtls") or {}).get("state")
        selected = ice.get("selected")
        if selected is None:
            return "Browser leg: no ICE pair selected (ICE did not connect)"
        return (f"Browser leg (WebRTC): ICE pair {media.host}:{webrtc.get('port')} <-> {selected}, "
                f"{webrtc.get('packets_in', 0)} packets in, DTLS {dtls}")

    return inspect

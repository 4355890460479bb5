"""``sip:echo@DOMAIN``: every RTP packet a caller sends comes back to where it came from.

The streams of :mod:`rtc2sip.services.uas` do the work (``reflect``): the packet goes back as it
came, under another SSRC (RFC 3550 §8.2). A browser's call reaches this service through the RTCWeb
Breaker, so the browser hears itself through ICE, DTLS-SRTP and the media plane's relay; a phone
hears itself over plain RTP. The call lasts until the caller hangs up (or the UAS's maximum).
"""

from __future__ import annotations

import logging

from .uas import ServiceCall

log = logging.getLogger("rtc2sip.services")


class EchoService:
    name = "echo"
    reflect = True

    def started(self, call: ServiceCall) -> None:
        pass

    def ended(self, call: ServiceCall, reason: str) -> None:
        log.info("call-id=%s echo: ended (%s), %s", call.call_id, reason,
                 ", ".join(f"{s.kind} {s.packets} packets returned" for s in call.streams))

"""RFC 4733 events from the legacy leg, seen on the media plane's tap, as digits with their durations.

With ``dtmf-type`` info (webrtc2sip's rfc2833), a browser gets the digits a phone keys as SIP INFO
(the B2BUA sends them, :mod:`rtc2sip.breaker.dtmf`): a browser application never sees RFC 4733
packets, WebRTC plays or drops them. :class:`DtmfSink` is a tap sink (:mod:`rtc2sip.media.tap`): it
looks only at packets from the legacy leg whose payload type is that leg's telephone-event, and
reports each event once, at its end (the E bit, RFC 4733 §2.5.1.4, sent three times with the same
timestamp), with its duration. Events without an end packet (all three lost) are not reported.
"""

from __future__ import annotations

from collections.abc import Callable

from .rtp import payload_bounds
from .tap import LegCodecs

__all__ = ["DIGITS", "DtmfSink"]

DIGITS = "0123456789*#ABCD"  # RFC 4733 §3.2: events 0-15


class DtmfSink:
    """Calls ``on_digit(digit, duration_ms)`` for each DTMF event the legacy leg sends."""

    __slots__ = ("_last_ts", "_on_digit", "_pts")

    # with the media plane in worker processes (rtc2sip.media.remote), a DtmfSink of the worker's own
    # watches the packets and each digit it finds comes back to this one's remote_event
    remote_kind = "dtmf"

    def __init__(self, on_digit: Callable[[str, int], None]) -> None:
        self._on_digit: Callable[[str, int], None] | None = on_digit
        self._pts: dict[int, int] = {}  # the legacy leg's telephone-event payload types -> clock rate
        self._last_ts: int | None = None

    def codecs_changed(self, codecs: LegCodecs) -> None:
        legacy = codecs.get("audio", {}).get("legacy", {})
        self._pts = {pt: c.clock_rate for pt, c in legacy.items() if c.name.lower() == "telephone-event"}

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        if leg != "legacy" or kind != "audio":
            return
        rate = self._pts.get(data[1] & 0x7F)
        if rate is None:
            return
        start, _ = payload_bounds(data)
        if len(data) < start + 4:
            return
        event, flags = data[start], data[start + 1]
        if event >= len(DIGITS) or not flags & 0x80:
            return
        timestamp = int.from_bytes(data[4:8], "big")
        if timestamp == self._last_ts:
            return  # the end packet's retransmissions
        self._last_ts = timestamp
        duration = int.from_bytes(data[start + 2 : start + 4], "big")
        callback = self._on_digit
        if callback is not None:
            callback(DIGITS[event], max(1, duration * 1000 // max(rate, 1)))

    def remote_event(self, digit: str, duration_ms: int) -> None:
        callback = self._on_digit
        if callback is not None:
            callback(digit, duration_ms)

    def close(self) -> None:
        self._on_digit = None  # the call is over: drop the reference to it

    def describe(self) -> dict[str, object]:
        return {"type": "dtmf-info", "telephone_event_pts": sorted(self._pts)}

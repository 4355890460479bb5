"""DTMF as SIP INFO toward the browser (``dtmf-type`` info, webrtc2sip's rfc2833): the message body.

The digits come from the media plane's tap sink (:class:`rtc2sip.media.dtmf_sink.DtmfSink`, RFC 4733
events from the legacy leg); the B2BUA sends each as an INFO ``application/dtmf-relay`` (JsSIP reports
it as ``newDTMF``).
"""

from __future__ import annotations

__all__ = ["dtmf_relay_body"]


def dtmf_relay_body(digit: str, duration_ms: int) -> bytes:
    """The de facto ``application/dtmf-relay`` body (no RFC; Cisco's format, which JsSIP sends too)."""
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()

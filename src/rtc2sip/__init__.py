"""rtc2sip: a WebRTC <-> SIP gateway (SIP proxy and registrar, RTCWeb breaker, media coder)."""

__version__ = "0.1.0"

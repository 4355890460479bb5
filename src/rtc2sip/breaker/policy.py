"""When the RTCWeb Breaker takes a call (issue 3, item 1): a pure decision over a few facts.

No RFC procedure of its own: it reads the URI and Contact parameters a webrtc2sip client adds
(RFC 3261 §19.1.1, §20.10), and tells a WebRTC endpoint by its offer's ``UDP/TLS/RTP/SAVPF`` profile
(RFC 5764 §8, RFC 8827 §6.5) when the proxy does not already know it by its WebSocket flow (RFC 7118).

webrtc2sip breaks a call when the browser asks for it with ``rtcweb-breaker=yes`` in its Contact or
Request-URI (technical guide, "RTCWeb Breaker"); that is mode ``client``. rtc2sip's default, ``auto``,
also breaks every call that *crosses* between a WebRTC endpoint and a legacy one, and leaves calls
whose ends speak the same media profile to the proxy. The decision is one table,
``(mode, what the client asked, crossing) -> break?``, so reading :data:`TABLE` is reading the policy.

The client's parameters (``rtcweb-breaker``, ``impi``, ``ha1``) are read here too, and removed from
what the gateway forwards: ``ha1`` is a password equivalent (RFC 7616 §3.4.2) and never leaves the
gateway, nor reaches a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..sip import Param, Request, SipParseError, SipUri, del_param, get_param, parse_name_addr

__all__ = [
    "CLIENT_PARAMS",
    "TABLE",
    "ClientParams",
    "Decision",
    "Facts",
    "Mode",
    "client_params",
    "decide",
    "offer_is_webrtc",
    "strip_client_params",
]

# Parameters a webrtc2sip client (sipML5) adds to its Contact: they are for the gateway only.
CLIENT_PARAMS = ("rtcweb-breaker", "impi", "ha1")


class Mode(StrEnum):
    """The ``breaker`` option."""

    AUTO = "auto"  # the client's parameter if any, else break calls that cross WebRTC <-> legacy
    CLIENT = "client"  # webrtc2sip: only when the client asks with rtcweb-breaker=yes
    ALWAYS = "always"  # every crossing call, whatever the client says
    NEVER = "never"  # the proxy alone: browsers and phones must share a media profile


@dataclass(frozen=True, slots=True)
class Facts:
    """What the decision looks at. The proxy gathers them: it knows flows and bindings.

    ``asked``: ``rtcweb-breaker=yes`` (True), ``=no`` (False) or absent (None).
    ``source_webrtc``: the INVITE came over a WebSocket flow or offers ``UDP/TLS/RTP/SAVPF``.
    ``target_webrtc``: the request goes down a WebSocket flow (a browser's binding).
    """

    asked: bool | None
    source_webrtc: bool
    target_webrtc: bool

    @property
    def crossing(self) -> bool:
        """One end WebRTC, the other not: the only calls the media plane can bridge."""
        return self.source_webrtc != self.target_webrtc


@dataclass(frozen=True, slots=True)
class Decision:
    breaks: bool
    reason: str


_Y, _N = True, False
# (mode, asked) -> break a crossing call? A call that does not cross is never broken: with both ends
# WebRTC, or both legacy, there is no profile to translate (the proxy relays it as is).
TABLE: dict[tuple[Mode, bool | None], bool] = {
    (Mode.AUTO, True): _Y,
    (Mode.AUTO, False): _N,
    (Mode.AUTO, None): _Y,
    (Mode.CLIENT, True): _Y,
    (Mode.CLIENT, False): _N,
    (Mode.CLIENT, None): _N,
    (Mode.ALWAYS, True): _Y,
    (Mode.ALWAYS, False): _Y,  # the operator's policy wins over the client's wish
    (Mode.ALWAYS, None): _Y,
    (Mode.NEVER, True): _N,
    (Mode.NEVER, False): _N,
    (Mode.NEVER, None): _N,
}


def decide(mode: Mode | str, facts: Facts) -> Decision:
    """Break this INVITE or leave it to the proxy."""
    mode = Mode(mode)
    if not facts.crossing:
        both = "WebRTC" if facts.source_webrtc else "legacy"
        return Decision(False, f"both ends {both}")
    breaks = TABLE[(mode, facts.asked)]
    asked = {True: "rtcweb-breaker=yes", False: "rtcweb-breaker=no", None: "no rtcweb-breaker"}[facts.asked]
    return Decision(breaks, f"mode {mode.value}, {asked}, WebRTC <-> legacy")


# ---- the client's parameters -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientParams:
    """What a webrtc2sip client put in its Contact / Request-URI (``repr`` never shows ``ha1``)."""

    breaker: bool | None = None
    impi: str | None = None
    ha1: str | None = None

    def __repr__(self) -> str:
        return f"ClientParams(breaker={self.breaker}, impi={self.impi!r}, ha1={'***' if self.ha1 else None})"


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    v = value.strip('"').lower()
    if v in ("yes", "true", "1", ""):
        return True
    if v in ("no", "false", "0"):
        return False
    return None


def _param_sets(req: Request) -> list[list[Param]]:
    """Parameter lists where a client may put its parameters: the Request-URI's, then each
    Contact's URI and header parameters (sipML5 versions differ on which)."""
    out: list[list[Param]] = []
    uri = req.uri
    if isinstance(uri, SipUri):
        out.append(uri.params)
    for value in req.values("Contact"):
        try:
            na = parse_name_addr(value)
        except SipParseError:
            continue
        if isinstance(na.uri, SipUri):
            out.append(na.uri.params)
        out.append(na.params)
    return out


def client_params(req: Request) -> ClientParams:
    """``rtcweb-breaker``, ``impi`` and ``ha1`` of an INVITE. ``rtcweb-breaker=no`` anywhere wins
    over ``yes`` elsewhere (issue 3: "no" forces the proxy path)."""
    asked: bool | None = None
    impi: str | None = None
    ha1: str | None = None
    for params in _param_sets(req):
        flag = _flag(get_param(params, "rtcweb-breaker"))
        if flag is False or (flag is True and asked is None):
            asked = flag
        impi = impi or _unquote(get_param(params, "impi"))
        ha1 = ha1 or _unquote(get_param(params, "ha1"))
    return ClientParams(asked, impi, ha1)


def _unquote(v: str | None) -> str | None:
    if not v:
        return None
    return v[1:-1] if len(v) >= 2 and v[0] == '"' == v[-1] else v


def strip_client_params(uri: SipUri) -> SipUri:
    """A copy of ``uri`` without the client's parameters (so ``ha1`` is never forwarded)."""
    out = uri.copy()
    for name in CLIENT_PARAMS:
        del_param(out.params, name)
    return out


def offer_is_webrtc(body: bytes, content_type: str | None) -> bool:
    """Whether an SDP offer uses the WebRTC profile (RFC 8827 §6.5: ``UDP/TLS/RTP/SAVPF``).

    A text search, not a parse: this runs for every INVITE the proxy sees, and a malformed offer is
    the media plane's to reject (488) once the call is broken.
    """
    if not body or (content_type is not None and content_type != "application/sdp"):
        return False
    return b"TLS/RTP/SAVP" in body

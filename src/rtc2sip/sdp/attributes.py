"""SDP attribute values (RFC 8866 §5.13, §6 and the RFCs below) as data, one parser and writer per attribute.

``a=`` lines in general (RFC 8866 §5.13), rtpmap (§6.6) with the static payload types of RFC 3551
§6, fmtp (§6.15), ptime/maxptime (§6.4, §6.5), directions (§6.7), rtcp-fb (RFC 4585 §4.2),
candidate (RFC 8839 §5.1), ICE credentials (RFC 8839 §5.4), fingerprint (RFC 8122 §5), setup
(RFC 4145 §4, RFC 8842 §5.1), rtcp (RFC 3605 §2.1), ssrc (RFC 5576 §4.1), msid (RFC 8830 §2),
extmap (RFC 8285 §8), crypto (RFC 4568 §9.1), group (RFC 5888 §5) and mid (RFC 5888 §4).
:data:`_VALUE_PARSERS` is what the parser checks every known attribute with.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from .fields import Connection, SdpError, _int, _token

__all__ = [
    "DIRECTIONS",
    "SETUP_ROLES",
    "STATIC_PAYLOADS",
    "Attribute",
    "Candidate",
    "Codec",
    "Crypto",
    "Extmap",
    "Fingerprint",
    "Group",
    "Msid",
    "Rtcp",
    "RtpMap",
    "Ssrc",
    "parse_fmtp_params",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 §6.7
SETUP_ROLES = ("active", "passive", "actpass", "holdconn")  # RFC 4145 §4, RFC 8842 §5.1

# RFC 3551 §6 table 4/5: payload types that need no a=rtpmap. (name, clock rate, channels)
STATIC_PAYLOADS: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1), 3: ("GSM", 8000, 1), 4: ("G723", 8000, 1), 5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1), 7: ("LPC", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1),
    10: ("L16", 44100, 2), 11: ("L16", 44100, 1), 12: ("QCELP", 8000, 1), 13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1), 15: ("G728", 8000, 1), 16: ("DVI4", 11025, 1), 17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1), 25: ("CelB", 90000, 1), 26: ("JPEG", 90000, 1), 28: ("nv", 90000, 1),
    31: ("H261", 90000, 1), 32: ("MPV", 90000, 1), 33: ("MP2T", 90000, 1), 34: ("H263", 90000, 1),
}

# RFC 8839 §5.4 allows only ALPHA, DIGIT, "+" and "/"; some stacks put "=" or "-" in passwords and
# work anyway, so only what would break a line or a STUN USERNAME (space, ":") is refused.
_ICE_CREDENTIAL = re.compile(r"[!-9;-~]+")


# --------------------------------------------------------------------------------------------------
# Attribute values


@dataclass(slots=True)
class Attribute:
    """One ``a=`` line: ``a=name`` (a property, ``value`` None) or ``a=name:value`` (RFC 8866 §5.13).

    ``value`` is kept verbatim (``a=msid-semantic: WMS`` keeps its leading space) for round trips.
    """

    name: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        return cls(_token(name, "attribute name"), value if sep else None)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""

    pt: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, text: str) -> RtpMap:
        pt, _, rest = text.strip().partition(" ")
        bits = rest.strip().split("/")
        if len(bits) not in (2, 3) or not bits[0]:
            raise SdpError(f"bad rtpmap {text!r}")
        channels = _int(bits[2], "channel count", 1, 255) if len(bits) == 3 else None
        return cls(_int(pt, "payload type", 0, 127), bits[0], _int(bits[1], "clock rate", 1), channels)

    def __str__(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.pt} {self.encoding}/{self.clock_rate}{tail}"


def _pt_prefixed(text: str, what: str, wildcard: bool = False) -> tuple[int | None, str]:
    """``<pt> <rest>`` as used by fmtp (RFC 8866 §6.15) and rtcp-fb (RFC 4585 §4.2, ``*`` = all)."""
    pt, _, rest = text.strip().partition(" ")
    if wildcard and pt == "*":
        return None, rest.strip()
    return _int(pt, f"{what} payload type", 0, 127), rest.strip()


def parse_fmtp_params(text: str) -> dict[str, str]:
    """``key=value;key=value`` fmtp parameters, keys lower-cased (RFC 6184 §8.1, RFC 7587 §6.1).

    A parameter without ``=`` (telephone-event's ``0-16``) is stored under the empty key.
    """
    params: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip()
        elif key:
            params[""] = key
    return params


@dataclass(frozen=True, slots=True)
class Candidate:
    """``a=candidate`` (RFC 8839 §5.1): foundation, component, transport, priority, address, type.

    ``extensions`` keeps the name/value pairs after ``typ``/``raddr``/``rport`` in order
    (``generation 0``, ``network-cost 10``, ``tcptype active``...). ``ip`` may be an mDNS
    ``<uuid>.local`` name: browsers hide their addresses that way (RFC 8839 §5.1 allows FQDNs).
    """

    foundation: str
    component: int
    transport: str
    priority: int
    ip: str
    port: int
    type: str
    raddr: str | None = None
    rport: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Candidate:
        # Trickle ICE (RFC 8840 §9) may put "candidate:" in front of the value when it comes from JS.
        text = text.removeprefix("candidate:")
        p = text.split()
        if len(p) < 8 or p[6] != "typ" or len(p) % 2:
            raise SdpError(f"bad candidate {text!r}")
        raddr = rport = None
        ext: list[tuple[str, str]] = []
        for name, value in zip(p[8::2], p[9::2], strict=True):
            if name == "raddr":
                raddr = value
            elif name == "rport":
                rport = _int(value, "candidate rport", 0, 65535)
            else:
                ext.append((name, value))
        return cls(
            _token(p[0], "candidate foundation"), _int(p[1], "candidate component", 1, 256), p[2],
            _int(p[3], "candidate priority", 0, 2**32 - 1), p[4], _int(p[5], "candidate port", 0, 65535),
            _token(p[7], "candidate type"), raddr, rport, tuple(ext),
        )

    @classmethod
    def host(cls, ip: str, port: int, *, index: int = 0, component: int = 1, transport: str = "udp") -> Candidate:
        """A host candidate with the RFC 8445 §5.1.2.1 recommended priority.

        ``index`` orders several host addresses (first preferred); the foundation is derived from
        the address so that equal bases share it (RFC 8445 §5.1.1.3).
        """
        priority = (126 << 24) | ((65535 - index) << 8) | (256 - component)
        foundation = str(zlib.crc32(f"{ip} {transport}".encode()))
        return cls(foundation, component, transport, priority, ip, port, "host")

    def __str__(self) -> str:
        out = f"{self.foundation} {self.component} {self.transport} {self.priority} {self.ip} {self.port}"
        out += f" typ {self.type}"
        if self.raddr is not None:
            out += f" raddr {self.raddr}"
        if self.rport is not None:
            out += f" rport {self.rport}"
        for name, value in self.extensions:
            out += f" {name} {value}"
        return out


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """``a=fingerprint:<hash-func> <hex:hex:...>`` (RFC 8122 §5)."""

    algorithm: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        parts = text.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+", parts[1]):
            raise SdpError(f"bad fingerprint {text!r}")
        return cls(_token(parts[0], "hash function").lower(), parts[1].upper())

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605 §2.1)."""

    port: int
    address: Connection | None = None

    @classmethod
    def parse(cls, text: str) -> Rtcp:
        port, _, rest = text.strip().partition(" ")
        return cls(_int(port, "rtcp port", 0, 65535), Connection.parse(rest) if rest.strip() else None)

    def __str__(self) -> str:
        return f"{self.port} {self.address}" if self.address else str(self.port)


@dataclass(frozen=True, slots=True)
class Ssrc:
    """``a=ssrc:<ssrc> <attribute>[:<value>]`` (RFC 5576 §4.1)."""

    ssrc: int
    attribute: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ssrc:
        ssrc, _, rest = text.strip().partition(" ")
        name, sep, value = rest.partition(":")
        if not name:
            raise SdpError(f"bad ssrc {text!r}")
        return cls(_int(ssrc, "ssrc", 0, 2**32 - 1), name, value if sep else None)

    def __str__(self) -> str:
        return f"{self.ssrc} {self.attribute}" + ("" if self.value is None else f":{self.value}")


@dataclass(frozen=True, slots=True)
class Msid:
    """``a=msid:<stream id> [<track id>]`` (RFC 8830 §2)."""

    stream: str
    track: str | None = None

    @classmethod
    def parse(cls, text: str) -> Msid:
        parts = text.split()
        if not 1 <= len(parts) <= 2:
            raise SdpError(f"bad msid {text!r}")
        return cls(parts[0], parts[1] if len(parts) == 2 else None)

    def __str__(self) -> str:
        return self.stream if self.track is None else f"{self.stream} {self.track}"


@dataclass(frozen=True, slots=True)
class Extmap:
    """``a=extmap:<id>[/<direction>] <uri> [<attributes>]`` (RFC 8285 §8)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None

    @classmethod
    def parse(cls, text: str) -> Extmap:
        parts = text.split(None, 2)
        if len(parts) < 2:
            raise SdpError(f"bad extmap {text!r}")
        ident, _, direction = parts[0].partition("/")
        if direction and direction not in DIRECTIONS:
            raise SdpError(f"bad extmap direction {text!r}")
        return cls(_int(ident, "extmap id", 1, 4095), parts[1], direction or None, parts[2] if len(parts) > 2 else None)

    def __str__(self) -> str:
        out = str(self.id) + (f"/{self.direction}" if self.direction else "") + f" {self.uri}"
        return out + (f" {self.attributes}" if self.attributes else "")


@dataclass(frozen=True, slots=True)
class Crypto:
    """``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]`` (RFC 4568 §9.1)."""

    tag: int
    suite: str
    key_params: str = field(repr=False)  # "inline:<key||salt>": a secret, kept out of logs
    session_params: str | None = None

    @classmethod
    def parse(cls, text: str) -> Crypto:
        parts = text.split(None, 3)
        if len(parts) < 3 or not parts[2].startswith("inline:"):
            raise SdpError(f"bad crypto {text!r}")
        return cls(_int(parts[0], "crypto tag", 0, 999999999), parts[1], parts[2], parts[3] if len(parts) > 3 else None)

    def __str__(self) -> str:
        out = f"{self.tag} {self.suite} {self.key_params}"
        return out + (f" {self.session_params}" if self.session_params else "")


@dataclass(frozen=True, slots=True)
class Group:
    """``a=group:<semantics> <mid>...`` (RFC 5888 §5), BUNDLE among them (RFC 8843 §7.1)."""

    semantics: str
    mids: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Group:
        parts = text.split()
        if not parts:
            raise SdpError("empty group")
        return cls(_token(parts[0], "group semantics"), tuple(parts[1:]))

    def __str__(self) -> str:
        return " ".join((self.semantics, *self.mids))


def _setup(text: str) -> str:
    if text not in SETUP_ROLES:
        raise SdpError(f"bad setup role {text!r}")
    return text


def _mid(text: str) -> str:
    return _token(text, "mid")  # RFC 5888 §4: identification-tag = token


def _ice_chars(text: str) -> str:
    if not _ICE_CREDENTIAL.fullmatch(text) or len(text) > 256:
        raise SdpError(f"bad ICE credential {text!r}")
    return text


def _ptime(text: str) -> int:
    # A few phones write "a=ptime:20.0"; RFC 8866 §6.4 says integer ms, so take the whole part.
    whole = text.strip().split(".", 1)[0]
    return _int(whole, "ptime", 0, 100000)


# Validation run by SessionDescription.parse on every attribute it knows, so that a bad value is
# refused with a line number up front and the typed accessors below cannot fail later.
_VALUE_PARSERS: dict[str, Callable[[str], object]] = {
    "rtpmap": RtpMap.parse,
    "fmtp": lambda v: _pt_prefixed(v, "fmtp"),
    "rtcp-fb": lambda v: _pt_prefixed(v, "rtcp-fb", wildcard=True),
    "candidate": Candidate.parse,
    "fingerprint": Fingerprint.parse,
    "setup": _setup,
    "rtcp": Rtcp.parse,
    "ssrc": Ssrc.parse,
    "msid": Msid.parse,
    "extmap": Extmap.parse,
    "crypto": Crypto.parse,
    "group": Group.parse,
    "mid": _mid,
    "ice-ufrag": _ice_chars,
    "ice-pwd": _ice_chars,
    "ptime": _ptime,
    "maxptime": _ptime,
}


@dataclass(frozen=True, slots=True)
class Codec:
    """A payload type of an RTP m= section with everything said about it (rtpmap, fmtp, rtcp-fb)."""

    pt: int
    name: str
    clock_rate: int
    channels: int
    fmtp: str | None = None
    rtcp_fb: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, str]:
        return parse_fmtp_params(self.fmtp or "")


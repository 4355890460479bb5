"""SDP's lexical basics and its line values: o=, c=, b=, t= (RFC 8866 §5.2, §5.7 to §5.10, §9).

:class:`SdpError` is every failure on peer input (it carries the SIP status 488, RFC 3261
§13.3.1.1 / RFC 3264 §6); the scanners here raise it for a bad integer, field count or token
(RFC 8866 §9 grammar).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Bandwidth",
    "Connection",
    "Origin",
    "SdpError",
    "Timing",
    "address_type",
]

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")  # RFC 8866 §9 token


class SdpError(ValueError):
    """A session description that cannot be understood (answer it with ``status``, 488).

    ``reason`` never holds CR or LF, so it is safe in a Warning header or a log line.
    """

    status: ClassVar[int] = 488

    def __init__(self, reason: str, line: int | None = None) -> None:
        reason = reason.replace("\r", " ").replace("\n", " ")
        if len(reason) > 200:
            reason = reason[:200] + "…"
        self.reason = reason
        self.line = line
        super().__init__(reason if line is None else f"line {line}: {reason}")


def _int(text: str, what: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"bad {what} {text!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise SdpError(f"{what} {value} out of range {lo}..{hi}")
    return value


def _split(text: str, n: int, what: str) -> list[str]:
    parts = text.split()
    if len(parts) < n:
        raise SdpError(f"{what} needs {n} fields: {text!r}")
    return parts


def _token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise SdpError(f"bad {what} {text!r}")
    return text


def address_type(address: str) -> str:
    """``IP4`` or ``IP6`` for a literal address (``IP4`` for a host name, as RFC 8866 §5.7 allows)."""
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"


# --------------------------------------------------------------------------------------------------
# Line values (o=, c=, b=, t=)


@dataclass(slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (RFC 8866 §5.2)."""

    username: str = "-"
    session_id: str = "0"
    version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, text: str) -> Origin:
        u, sid, ver, net, addrtype, addr = _split(text, 6, "o=")[:6]
        _int(sid, "session id")
        return cls(u, sid, _int(ver, "session version"), net, addrtype, addr)

    def __str__(self) -> str:
        return f"{self.username} {self.session_id} {self.version} {self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/ttl][/n]`` (RFC 8866 §5.7)."""

    address: str
    addrtype: str = "IP4"
    nettype: str = "IN"

    @classmethod
    def parse(cls, text: str) -> Connection:
        parts = text.split()
        if len(parts) != 3:
            raise SdpError(f"c= needs 3 fields: {text!r}")
        return cls(parts[2], parts[1], parts[0])

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, address_type(address))

    @property
    def host(self) -> str:
        """The address without a multicast ``/ttl/count`` suffix."""
        return self.address.split("/", 1)[0]

    @property
    def is_hold(self) -> bool:
        """``c=IN IP4 0.0.0.0``: the RFC 2543 way to put a call on hold (RFC 3264 §8.4)."""
        return self.host in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


@dataclass(slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8)."""

    type: str
    value: int

    @classmethod
    def parse(cls, text: str) -> Bandwidth:
        kind, sep, value = text.partition(":")
        if not sep:
            raise SdpError(f"bad b= {text!r}")
        return cls(_token(kind, "bandwidth type"), _int(value.strip(), "bandwidth"))

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(slots=True)
class Timing:
    """``t=<start> <stop>`` and the ``r=`` lines that follow it (RFC 8866 §5.9, §5.10)."""

    start: int = 0
    stop: int = 0
    repeats: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Timing:
        start, stop = _split(text, 2, "t=")[:2]
        return cls(_int(start, "start time"), _int(stop, "stop time"))


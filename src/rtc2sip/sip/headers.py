"""Header field names and the structured values a proxy reads (RFC 3261 §7.3, §20, §25.1).

Header names are case-insensitive and may arrive in compact form; both are mapped to one canonical
spelling at parse time so the rest of the code compares plain strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import Param, Uri, get_param, has_param, params_text, parse_uri, set_param

COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition",
    "Content-Encoding", "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info",
    "Event", "Expires", "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization",
    "Path", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Server", "Session-Expires", "Min-SE", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", "Flow-Timer", "GRUU", "P-Asserted-Identity", "P-Preferred-Identity",
    "Identity", "Identity-Info", "Service-Route", "Security-Client", "Security-Server", "Security-Verify",
    "Target-Dialog", "Privacy",
]
_CANON = {n.lower(): n for n in _KNOWN}
_CANON.update({k: v for k, v in COMPACT.items()})

# Headers whose grammar is a comma-separated list (§7.3.1): a header line may carry several values.
MULTI = frozenset(
    {
        "Via", "Route", "Record-Route", "Contact", "Path", "Service-Route", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Allow-Events",
        "Content-Encoding", "Content-Language", "Alert-Info", "Call-Info", "Error-Info", "In-Reply-To",
        "Warning", "Reason", "Accept-Contact", "Reject-Contact", "Request-Disposition", "Security-Client",
        "Security-Server", "Security-Verify", "P-Asserted-Identity", "P-Preferred-Identity", "Privacy",
    }
)
# Headers that must appear at most once in a message (§20); a second copy makes the message invalid.
SINGLE = frozenset(
    {"Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type", "Expires",
     "Min-Expires", "RSeq", "RAck", "Refer-To", "Replaces"}
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def canonical(name: str) -> str:
    """The one spelling a header name is stored under."""
    c = _CANON.get(name.lower())
    if c is not None:
        return c
    if not _TOKEN.match(name):
        raise SipParseError(400, f"Bad header name {name!r}")
    return name


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def split_comma(value: str) -> list[str]:
    """Split a list header at commas that are outside quoted strings and ``<...>`` (§7.3.1)."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    start = 0
    i = 0
    n = len(value)
    in_quote = False
    in_angle = False
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    if in_quote:
        raise SipParseError(400, "Unterminated quoted string")
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def parse_header_params(text: str) -> list[Param]:
    """Generic header parameters ``;a=b;c="quoted"`` (leading ';' removed); values may be quoted."""
    out: list[Param] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "=;":
            j += 1
        name = text[i:j].strip()
        if not name or not is_token(name):
            raise SipParseError(400, f"Bad header parameter {text[i:j]!r}")
        value: str | None = None
        if j < n and text[j] == "=":
            j += 1
            while j < n and text[j] in " \t":
                j += 1
            if j < n and text[j] == '"':
                k = j + 1
                while k < n and text[k] != '"':
                    k += 2 if text[k] == "\\" else 1
                if k >= n:
                    raise SipParseError(400, "Unterminated quoted string")
                value = text[j : k + 1]
                j = k + 1
                while j < n and text[j] in " \t":
                    j += 1
            else:
                k = j
                while k < n and text[k] != ";":
                    k += 1
                value = text[j:k].strip()
                if not value or not (is_token(value) or _is_host_like(value)):
                    raise SipParseError(400, f"Bad header parameter value {value!r}")
                j = k
        if j < n and text[j] != ";":
            raise SipParseError(400, "Garbage after header parameter")
        out.append((name, value))
        i = j + 1
    return out


def _is_host_like(v: str) -> bool:
    # gen-value allows host (including IPv6 references) besides token and quoted-string
    return bool(re.match(r"^\[[0-9A-Fa-f:.]+\]$", v)) or bool(re.match(r"^[A-Za-z0-9\-.:]+$", v))


def unquote_string(v: str) -> str:
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return re.sub(r"\\(.)", r"\1", v[1:-1])
    return v


def quote_string(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(eq=False)
class NameAddr:
    """``name-addr`` or ``addr-spec`` with header parameters (From, To, Contact, Route, …)."""

    uri: Uri
    display: str | None = None  # kept as written (quoted or token sequence)
    params: list[Param] = field(default_factory=list)
    star: bool = False  # ``Contact: *``

    def __str__(self) -> str:
        if self.star:
            return "*"
        disp = f"{self.display} " if self.display else ""
        return f"{disp}<{self.uri}>{params_text(self.params)}"

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has(self, name: str) -> bool:
        return has_param(self.params, name)

    def set(self, name: str, value: str | None) -> None:
        set_param(self.params, name, value)

    @property
    def tag(self) -> str | None:
        return self.param("tag")


def parse_name_addr(value: str) -> NameAddr:
    v = value.strip()
    if v == "*":
        return NameAddr(uri=parse_uri("sip:invalid"), star=True)
    display: str | None = None
    if v.startswith('"') or "<" in v:
        lt = _find_lt(v)
        if lt < 0:
            raise SipParseError(400, f"Malformed name-addr {value!r}")
        display = v[:lt].strip() or None
        if display and not display.startswith('"') and not re.match(r"^[A-Za-z0-9\-.!%*_+`'~ \t]+$", display):
            raise SipParseError(400, f"Bad display name {display!r}")
        gt = v.find(">", lt)
        if gt < 0:
            raise SipParseError(400, f"Unterminated <> in {value!r}")
        uri_text = v[lt + 1 : gt].strip()
        rest = v[gt + 1 :].strip()
        if uri_text != v[lt + 1 : gt]:
            raise SipParseError(400, "Whitespace inside <>")
    else:
        # addr-spec: every ';' belongs to the header, so the URI has no parameters (§20.10)
        uri_text, semi, rest = v.partition(";")
        rest = semi + rest
        if any(c in uri_text for c in " \t,?"):
            raise SipParseError(400, f"Malformed addr-spec {value!r}")
    uri = parse_uri(uri_text)
    if rest and not rest.startswith(";"):
        raise SipParseError(400, f"Garbage after address {rest!r}")
    params = parse_header_params(rest[1:]) if rest else []
    return NameAddr(uri=uri, display=display, params=params)


def _find_lt(v: str) -> int:
    """Index of the '<' that opens the URI, skipping a quoted display name."""
    i = 0
    if v.startswith('"'):
        i = 1
        while i < len(v) and v[i] != '"':
            i += 2 if v[i] == "\\" else 1
        if i >= len(v):
            raise SipParseError(400, "Unterminated quoted display name")
        i += 1
    return v.find("<", i)


@dataclass(eq=False)
class Via:
    transport: str  # upper case: UDP, TCP, TLS, WS, WSS, SCTP
    host: str
    port: int | None = None
    params: list[Param] = field(default_factory=list)
    protocol: str = "SIP/2.0"

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{params_text(self.params)}"

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has(self, name: str) -> bool:
        return has_param(self.params, name)

    def set(self, name: str, value: str | None) -> None:
        set_param(self.params, name, value)

    @property
    def branch(self) -> str | None:
        return self.param("branch")


_VIA = re.compile(
    r"^\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([0-9.]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(\d{1,5}))?\s*(;.*)?$",
    re.S,
)


def parse_via(value: str) -> Via:
    m = _VIA.match(value)
    if not m:
        raise SipParseError(400, f"Malformed Via {value.strip()!r}")
    name, ver, transport, host, port, rest = m.groups()
    if port is not None and int(port) > 65535:
        raise SipParseError(400, "Bad Via port")
    params = parse_header_params(rest.strip()[1:]) if rest else []
    return Via(transport.upper(), host, int(port) if port else None, params, f"{name}/{ver}")


@dataclass(eq=False)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
        raise SipParseError(400, f"Malformed CSeq {value!r}")
    n = int(parts[0])
    if n >= 2**31:
        raise SipParseError(400, "CSeq number too large")
    return CSeq(n, parts[1])


def parse_int_header(name: str, value: str, limit: int = 2**32 - 1) -> int:
    v = value.strip()
    if not v.isdigit():
        raise SipParseError(400, f"Malformed {name}")
    n = int(v)
    if n > limit:
        raise SipParseError(400, f"{name} too large")
    return n

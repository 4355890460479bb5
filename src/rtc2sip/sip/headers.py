"""Header field names and the structured values a proxy reads (RFC 3261 §7.3, §20, §25.1).

Header names are case-insensitive and may arrive in compact form; both are mapped to one canonical
spelling at parse time so the rest of the code compares plain strings. The value grammars are
checked with precompiled regular expressions: these run for every message a proxy handles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .uri import Param, SipUri, Uri, get_param, has_param, params_text, parse_uri, set_param, valid_host

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
_CANON.update(COMPACT)
# Exact spellings seen on the wire (canonical, lower case, upper-case compact): a dict hit on these
# skips the ``lower()`` of the common case. Unknown spellings fall back to ``_CANON``; nothing is
# added at run time, so hostile names cannot grow it.
NAME_LOOKUP = dict(_CANON)
NAME_LOOKUP.update({n: n for n in _KNOWN})
NAME_LOOKUP.update({k.upper(): v for k, v in COMPACT.items()})

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

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = re.compile(rf"[{_TOKEN_CHARS}]+")
# quoted-string (§25.1) as an unrolled loop: no per-character alternation, several times faster
_QSTRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_DIGITS = re.compile(r"[0-9]+")
# a top-level list separator, or something a comma inside must not split: "quoted" and <uri>
_LIST_SCAN = re.compile(rf'{_QSTRING}|<[^>]*>|[,"]', re.S)
# one ``;name[=value]`` of generic-param (§25.1); values: token, host (incl. IPv6) or quoted-string
_GEN_PARAM = re.compile(
    rf'[ \t]*;[ \t]*([{_TOKEN_CHARS}]+)(?:[ \t]*=[ \t]*([{_TOKEN_CHARS}:\[\]]+|{_QSTRING}))?[ \t]*',
    re.S,
)
# the whole list in one match when it has no LWS: then ';' splits it, or findall() if a value is quoted
_GEN_VALUE = rf"[{_TOKEN_CHARS}:\[\]]+|{_QSTRING}"
_GEN_PARAMS_PLAIN = re.compile(rf"(?:;[{_TOKEN_CHARS}]+(?:=[{_TOKEN_CHARS}:\[\]]+)?)+")
_GEN_PARAMS_NO_LWS = re.compile(rf"(?:;[{_TOKEN_CHARS}]+(?:=(?:{_GEN_VALUE}))?)+", re.S)
_GEN_PARAM_ITEM = re.compile(rf";([{_TOKEN_CHARS}]+)(?:=({_GEN_VALUE}))?", re.S)
_QUOTED = re.compile(_QSTRING, re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_DISPLAY_TOKENS = re.compile(rf"[{_TOKEN_CHARS}]+(?:[ \t]+[{_TOKEN_CHARS}]+)*")
# name-addr in one match: [display-name] <URI> [;params]; a mismatch goes to the precise slow path
_NAME_ADDR = re.compile(
    rf"[ \t]*(?:({_QSTRING})|"
    rf'([{_TOKEN_CHARS}]+(?:[ \t]+[{_TOKEN_CHARS}]+)*))?[ \t]*'
    r'<([^<>" \t]+)>((?:[ \t]*;.*)?)',
    re.S,
)
# addr-spec [;params]: no LWS, comma, '?' or ';' in the URI (§20.10)
_ADDR_SPEC = re.compile(r'[ \t]*([^<>" \t,?;]+)[ \t]*((?:;.*)?)', re.S)
_NOT_IN_ADDR_SPEC = re.compile(r'[ \t,?<>"]')
# sent-protocol LWS sent-by [params] (§20.42); LWS is allowed around '/' and ':' (SLASH, COLON)
_VIA = re.compile(
    rf"[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*((?:;.*)?)",
    re.S,
)
_CSEQ = re.compile(rf"[ \t]*([0-9]+)[ \t]+([{_TOKEN_CHARS}]+)[ \t]*")


def canonical(name: str) -> str:
    """The one spelling a header name is stored under; raises 400 for a name that is not a token."""
    c = NAME_LOOKUP.get(name)
    if c is not None:
        return c
    c = _CANON.get(name.lower())
    if c is not None:
        return c
    if not _TOKEN.fullmatch(name):
        raise SipParseError(400, f"Bad header name {name[:40]!r}")
    return name


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def split_comma(value: str) -> list[str]:
    """Split a list header at commas outside quoted strings and ``<...>`` (§7.3.1), dropping empty
    elements. Raises 400 for an unterminated quoted string."""
    if "," not in value:
        # a lone value: an unterminated quote in it is for the value's own parser to report
        v = value.strip(" \t")
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (x.strip(" \t") for x in value.split(",")) if p]
    out: list[str] = []
    start = 0
    for m in _LIST_SCAN.finditer(value):
        tok = m.group()
        if tok == ",":
            part = value[start : m.start()].strip(" \t")
            if part:
                out.append(part)
            start = m.end()
        elif tok == '"':  # a quote that does not close: the other alternatives failed on it
            raise SipParseError(400, "Unterminated quoted string")
    part = value[start:].strip(" \t")
    if part:
        out.append(part)
    return out


def parse_header_params(text: str) -> list[Param]:
    """Generic header parameters ``;a=b;c="quoted"`` (§25.1 generic-param). ``text`` may start with
    the first ``;`` or with the first name; quoted values keep their quotes."""
    out: list[Param] = []
    text = text.lstrip(" \t")
    if not text:
        return out
    if text[0] != ";":
        text = ";" + text
    if '"' not in text and _GEN_PARAMS_PLAIN.fullmatch(text):
        # the usual case, checked in one match: no LWS, no quoted value, so ';' splits it
        for part in text[1:].split(";"):
            name, eq, value = part.partition("=")
            out.append((name, value if eq else None))
        return out
    if _GEN_PARAMS_NO_LWS.fullmatch(text):
        # a value is never empty (token 1*, quoted-string 2*), so "" means "no value"
        return [(n, v or None) for n, v in _GEN_PARAM_ITEM.findall(text)]
    pos, n = 0, len(text)
    match = _GEN_PARAM.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise SipParseError(400, f"Bad header parameter near {text[pos : pos + 40]!r}")
        out.append((m.group(1), m.group(2)))
        pos = m.end()
    return out


def unquote_string(v: str) -> str:
    """The content of a quoted-string with quoted-pairs resolved (§25.1); other text as is."""
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return _QUOTED_PAIR.sub(r"\1", v[1:-1])
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

    @property
    def display_name(self) -> str | None:
        """The display name as text: quotes removed and quoted-pairs resolved."""
        return unquote_string(self.display) if self.display is not None else None


def parse_name_addr(value: str, allow_star: bool = True) -> NameAddr:
    """Parse ``name-addr`` / ``addr-spec`` followed by header parameters (§20.10, §25.1).

    In the addr-spec form every ``;`` starts a header parameter, so the URI itself has none; a URI
    with parameters, headers or a comma must be enclosed in ``<>`` (§20.10).
    """
    m = _NAME_ADDR.fullmatch(value)
    if m is not None:
        quoted, tokens, uri_text, rest = m.groups()
        display = quoted if quoted is not None else tokens
    else:
        m = _ADDR_SPEC.fullmatch(value)
        if m is None:
            return _parse_name_addr_slow(value, allow_star)
        uri_text, rest = m.groups()
        display = None
        if uri_text == "*" and not rest:
            return _star(allow_star)
    return NameAddr(parse_uri(uri_text), display, parse_header_params(rest) if rest else [])


def _star(allow_star: bool) -> NameAddr:
    if not allow_star:
        raise SipParseError(400, "'*' is only valid in Contact")
    return NameAddr(uri=SipUri("sip", None, None, "invalid"), star=True)


def _parse_name_addr_slow(value: str, allow_star: bool) -> NameAddr:
    """The cases the two regular expressions leave: '*', and every error, reported precisely."""
    v = value.strip(" \t")
    if v == "*":
        return _star(allow_star)
    display: str | None = None
    if v[:1] == '"':
        m = _QUOTED.match(v)
        if m is None:
            raise SipParseError(400, "Unterminated quoted display name")
        display = m.group()
        lt = len(v) - len(v[m.end() :].lstrip(" \t"))
        if v[lt : lt + 1] != "<":
            raise SipParseError(400, "Quoted display name not followed by <URI>")
    else:
        lt = v.find("<")
        if lt >= 0:
            # no LWS before '<' is tolerated (RFC 4475 §3.1.1.6: a known grammar bug)
            d = v[:lt].rstrip(" \t")
            if d:
                if not _DISPLAY_TOKENS.fullmatch(d):
                    raise SipParseError(400, f"Display name needs quotes: {d[:40]!r}")
                display = d
    if lt >= 0:
        gt = v.find(">", lt)
        if gt < 0:
            raise SipParseError(400, "Unterminated <> in address")
        uri_text = v[lt + 1 : gt]
        rest = v[gt + 1 :]
        if not uri_text or uri_text[0] in " \t" or uri_text[-1] in " \t":
            raise SipParseError(400, "Whitespace inside <> around the URI")
    else:
        # addr-spec: every ';' belongs to the header, so the URI has no parameters (§20.10)
        uri_text, semi, rest = v.partition(";")
        uri_text = uri_text.rstrip(" \t")
        rest = semi + rest
        if _NOT_IN_ADDR_SPEC.search(uri_text):
            raise SipParseError(400, f"URI must be enclosed in <> in {value[:60]!r}")
    uri = parse_uri(uri_text)
    rest = rest.strip(" \t")
    if rest and rest[0] != ";":
        raise SipParseError(400, f"Garbage after the address: {rest[:40]!r}")
    return NameAddr(uri=uri, display=display, params=parse_header_params(rest) if rest else [])


@dataclass(eq=False)
class Via:
    transport: str  # upper case: UDP, TCP, TLS, WS, WSS, SCTP, or any other token
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


def parse_via(value: str) -> Via:
    """One via-parm (§20.42, §25.1): ``SIP/2.0/UDP host:port;params``, LWS allowed around / and :."""
    m = _VIA.fullmatch(value)
    if m is None:
        raise SipParseError(400, f"Malformed Via {value.strip()[:80]!r}")
    name, ver, transport, host, port, rest = m.groups()
    if not valid_host(host):
        raise SipParseError(400, f"Malformed Via host {host[:60]!r}")
    port_n = int(port) if port is not None else None
    if port_n is not None and port_n > 65535:
        raise SipParseError(400, "Bad Via port")
    params = parse_header_params(rest) if rest.strip(" \t") else []
    return Via(transport.upper(), host, port_n, params, f"{name}/{ver}")


@dataclass(eq=False)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method`` (§20.16); the number must be below 2**31 (§8.1.1.5)."""
    m = _CSEQ.fullmatch(value)
    if m is None:
        raise SipParseError(400, f"Malformed CSeq {value[:60]!r}")
    digits = m.group(1).lstrip("0")
    if len(digits) > 10 or int(digits or "0") >= 2**31:
        raise SipParseError(400, "CSeq number too large")
    return CSeq(int(digits or "0"), m.group(2))


def parse_int_header(name: str, value: str, limit: int = 2**32 - 1) -> int:
    """A ``1*DIGIT`` header value (ASCII digits only) no larger than ``limit``; 400 otherwise."""
    v = value.strip(" \t")
    if not _DIGITS.fullmatch(v):
        raise SipParseError(400, f"Malformed {name}")
    digits = v.lstrip("0")
    # compare lengths first: int() of a hostile 5000-digit value raises ValueError in Python 3.11
    if len(digits) > len(str(limit)) or int(digits or "0") > limit:
        raise SipParseError(400, f"{name} too large")
    return int(digits or "0")

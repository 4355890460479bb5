"""SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25.1, RFC 3966), sans-I/O.

Parameters keep their order and spelling so that a URI that is only read serialises back as it came;
lookups are case-insensitive as §19.1.4 requires. Every check is a precompiled regular expression
over the §25.1 character classes: URIs are parsed for every message, so this is a hot path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from .errors import SipParseError

# ---- §25.1 character classes -------------------------------------------------------------------------
_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_PARAMCHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+"
_URI_PARAM = re.compile(rf"{_PARAMCHARS}(?:={_PARAMCHARS})?")
_URI_PARAMS = re.compile(rf"(?:;{_PARAMCHARS}(?:={_PARAMCHARS})?)*")
# The usual SIP URI in one match: user@host[:port][;params], no escapes, password, IPv6 or headers.
# The user part is possessive: without an '@' it is given up whole instead of char by char.
_SIP_SIMPLE = re.compile(
    rf"(?:([{_UNRESERVED}&=+$,;?/]++)@)?([A-Za-z0-9_.\-]+)(?::([0-9]{{1,5}}))?"
    rf"((?:;[{_UNRESERVED}\[\]/:&+$]+(?:=[{_UNRESERVED}\[\]/:&+$]+)?)*)"
)
_HNV = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})"
_URI_HEADERS = re.compile(rf"{_HNV}+={_HNV}*(?:&{_HNV}+={_HNV}*)*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# hostport, then the raw parameter and header sections, checked piecewise below
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::([0-9]{1,5}))?(;[^?]*)?(?:\?(.*))?", re.S)
# §25.1 hostname, labels written so that they cannot backtrack; '_' is tolerated in labels because
# real deployments use it (container names)
_LABEL = r"[A-Za-z0-9_]+(?:-+[A-Za-z0-9_]+)*"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*[A-Za-z_][A-Za-z0-9_]*(?:-+[A-Za-z0-9_]+)*\.?")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
_DIGIT_CHARS = frozenset("0123456789")
_IPV6_REF = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# RFC 3966 telephone-subscriber, loosely: digits, visual separators, DTMF and pause characters
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#.()\-pwPW]+")
_TEL_PARAMCHARS = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+"
_TEL_PARAM = re.compile(rf"{_TEL_PARAMCHARS}(?:={_TEL_PARAMCHARS})?")
# RFC 2396 uric, for URIs of other schemes (absoluteURI in §25.1)
_ABSOLUTE_REST = re.compile(r"[A-Za-z0-9;/?:@&=+$,\-_.!~*'()%\[\]#]+")
# RFC 3261 §19.1.2: "reserved" characters keep their escapes when comparing (§19.1.4)
_RESERVED = frozenset(";/?:@&=+$,")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def valid_host(host: str) -> bool:
    """True for a §25.1 ``host``: hostname, IPv4 address or bracketed IPv6 reference."""
    if host.startswith("["):
        if not _IPV6_REF.fullmatch(host):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    # an IPv4 address ends with a digit: only then is it worth trying
    if host[-1:] in _DIGIT_CHARS and _IPV4.fullmatch(host) is not None:
        return True
    return _HOSTNAME.fullmatch(host) is not None


Param = tuple[str, str | None]


def parse_params(text: str, status: int = 400) -> list[Param]:
    """``;a=b;c`` (the leading ``;`` already removed) into ordered (name, value) pairs (§19.1.1)."""
    out: list[Param] = []
    if not text:
        return out
    if not _URI_PARAMS.fullmatch(";" + text):
        for part in text.split(";"):
            if not _URI_PARAM.fullmatch(part):
                raise SipParseError(status, f"Bad URI parameter {part[:40]!r}" if part else "Empty URI parameter")
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        out.append((name, value if eq else None))
    return out


def params_text(params: list[Param]) -> str:
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def get_param(params: list[Param], name: str) -> str | None:
    """Value of ``name`` (case-insensitive); ``""`` for a flag without a value, ``None`` when absent."""
    lname = name.lower()
    for n, v in params:
        if n.lower() == lname:
            return "" if v is None else v
    return None


def has_param(params: list[Param], name: str) -> bool:
    lname = name.lower()
    return any(n.lower() == lname for n, _ in params)


def set_param(params: list[Param], name: str, value: str | None) -> None:
    lname = name.lower()
    for i, (n, _) in enumerate(params):
        if n.lower() == lname:
            params[i] = (n, value)
            return
    params.append((name, value))


def del_param(params: list[Param], name: str) -> None:
    lname = name.lower()
    params[:] = [(n, v) for n, v in params if n.lower() != lname]


def unescape(text: str) -> str:
    """Every ``%HH`` decoded. Octets that are not UTF-8 survive as surrogates, so distinct escapes
    never collapse into one string (``%FE`` and ``%FF`` stay different)."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def normalize_escapes(text: str) -> str:
    """The comparison form of §19.1.4: an escaped unreserved character equals the character itself,
    while escaped reserved characters stay escaped (hex digits upper-cased)."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(_normalize_one, text)


def _normalize_one(m: re.Match[str]) -> str:
    c = chr(int(m.group(1), 16))
    # '%' itself, controls and non-ASCII octets have no unescaped form to compare with
    if c in _RESERVED or c == "%" or not "!" <= c <= "~":
        return f"%{m.group(1).upper()}"
    return c


@dataclass(eq=False)
class SipUri:
    scheme: str = "sip"  # "sip" or "sips", lower case
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: list[Param] = field(default_factory=list)
    headers: str = ""  # raw text after '?', kept as is

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        port = f":{self.port}" if self.port is not None else ""
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{params_text(self.params)}{hdrs}"

    def copy(self) -> SipUri:
        return SipUri(self.scheme, self.user, self.password, self.host, self.port, list(self.params), self.headers)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has(self, name: str) -> bool:
        return has_param(self.params, name)

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t else None

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    def header_fields(self) -> list[tuple[str, str]]:
        """The ``?name=value&…`` part as (name, value) pairs, values unescaped (§19.1.1)."""
        if not self.headers:
            return []
        out = []
        for h in self.headers.split("&"):
            n, _, v = h.partition("=")
            out.append((unescape(n), unescape(v)))
        return out

    def key(self) -> tuple[object, ...]:
        """A hashable key such that URIs equal under §19.1.4 have equal keys: scheme, userinfo
        (case-sensitive, escapes normalised), host (case-insensitive), port, the parameters that
        must match whenever present (user, ttl, method, maddr, transport), unordered headers.

        Parameters other than those are left out, so two URIs that differ only in a parameter both
        carry still share a key; :meth:`matches` applies the full rule."""
        special = tuple(
            (n, normalize_escapes(get_param(self.params, n) or "").lower())
            for n in ("user", "ttl", "method", "maddr", "transport")
            if has_param(self.params, n)
        )
        return (
            self.scheme.lower(),
            normalize_escapes(self.user) if self.user is not None else None,
            normalize_escapes(self.password) if self.password is not None else None,
            self.host.lower(),
            self.port,
            special,
            self._header_key(),
        )

    def _header_key(self) -> tuple[tuple[str, str], ...]:
        if not self.headers:
            return ()
        out = []
        for h in self.headers.split("&"):
            n, _, v = h.partition("=")
            out.append((normalize_escapes(n).lower(), normalize_escapes(v)))
        return tuple(sorted(out))

    def matches(self, other: object) -> bool:
        """URI equality as RFC 3261 §19.1.4 defines it.

        Parameters present in both URIs must match; user, ttl, method, maddr and transport present
        in only one make the URIs differ (transport per the section's own examples); any other
        parameter present in only one is ignored. Header fields must all match, in any order."""
        if not isinstance(other, SipUri) or self.key() != other.key():
            return False
        mine = {n.lower(): normalize_escapes(v or "").lower() for n, v in self.params}
        for n, v in other.params:
            ln = n.lower()
            if ln in mine and mine[ln] != normalize_escapes(v or "").lower():
                return False
        return True

    def aor(self) -> str:
        """Address-of-record form used as a registrar key (§10.3 step 5): scheme, unescaped user and
        lower-case host; parameters, port and headers dropped."""
        user = unescape(self.user) if self.user else ""
        return f"{'sip' if self.scheme.lower() == 'sips' else self.scheme.lower()}:{user}@{self.host.lower()}"


@dataclass(eq=False)
class TelUri:
    number: str
    params: list[Param] = field(default_factory=list)
    scheme: str = "tel"

    def __str__(self) -> str:
        return f"tel:{self.number}{params_text(self.params)}"

    def copy(self) -> TelUri:
        return TelUri(self.number, list(self.params))

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def has(self, name: str) -> bool:
        return has_param(self.params, name)

    def key(self) -> tuple[object, ...]:
        """RFC 3966 §4: visual separators are ignored, hex digits and parameters are case-insensitive
        and parameter order does not matter."""
        number = re.sub(r"[-.()]", "", self.number).lower()
        return ("tel", number, tuple(sorted((n.lower(), (v or "").lower()) for n, v in self.params)))

    def matches(self, other: object) -> bool:
        return isinstance(other, TelUri) and self.key() == other.key()


@dataclass(eq=False)
class AbsoluteUri:
    """Any other scheme (RFC 3261 §25.1 absoluteURI). Kept opaque: a proxy answers 416 for it."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"

    def copy(self) -> AbsoluteUri:
        return AbsoluteUri(self.scheme, self.rest)

    def key(self) -> tuple[object, ...]:
        return (self.scheme.lower(), self.rest)

    def matches(self, other: object) -> bool:
        return isinstance(other, AbsoluteUri) and self.key() == other.key()


Uri = SipUri | TelUri | AbsoluteUri


def uri_equal(a: Uri, b: Uri) -> bool:
    """§19.1.4 equality for any two URIs (see :meth:`SipUri.matches`)."""
    return a.matches(b)


def parse_uri(text: str, status: int = 400) -> Uri:
    """Parse a URI; raises :class:`SipParseError` with ``status`` when it is malformed (§25.1)."""
    scheme, colon, rest = text.partition(":")
    ls = scheme.lower()
    if (ls == "sip" or ls == "sips") and rest:
        return _parse_sip(ls, rest, status)
    if not colon or not rest or not _SCHEME.fullmatch(scheme):
        raise SipParseError(status, f"Malformed URI {text[:80]!r}")
    if ls == "tel":
        number, _, ptext = rest.partition(";")
        if not _TEL_NUMBER.fullmatch(number):
            raise SipParseError(status, f"Malformed tel URI {text[:80]!r}")
        params: list[Param] = []
        if ptext:
            for part in ptext.split(";"):
                if not _TEL_PARAM.fullmatch(part):
                    raise SipParseError(status, f"Bad tel URI parameter {part[:40]!r}")
                n, eq, v = part.partition("=")
                params.append((n, v if eq else None))
        return TelUri(number, params)
    if not _ABSOLUTE_REST.fullmatch(rest):
        raise SipParseError(status, f"Malformed URI {text[:80]!r}")
    return AbsoluteUri(scheme, rest)


def _parse_sip(scheme: str, rest: str, status: int) -> SipUri:
    m = _SIP_SIMPLE.fullmatch(rest)
    if m is not None:
        user, host, port, ptext = m.groups()
        if valid_host(host) and (port is None or int(port) <= 65535):
            params: list[Param] = []
            if ptext:
                for part in ptext[1:].split(";"):
                    n, eq, v = part.partition("=")
                    params.append((n, v if eq else None))
            return SipUri(scheme, user, None, host, int(port) if port is not None else None, params, "")
    return _parse_sip_general(scheme, rest, status)


def _parse_sip_general(scheme: str, rest: str, status: int) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        # '@' is never valid unescaped in user, password, host, params or headers: it ends userinfo
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not _USER.fullmatch(user) or (colon and not _PASSWORD.fullmatch(pw)):
            raise SipParseError(status, f"Malformed userinfo in URI {userinfo[:80]!r}")
        if colon:
            password = pw
    m = _HOSTPORT.fullmatch(rest)
    if m is None:
        raise SipParseError(status, f"Malformed host in URI {rest[:80]!r}")
    host, port, ptext, headers = m.groups()
    if not valid_host(host):
        raise SipParseError(status, f"Malformed host {host[:80]!r}")
    port_n: int | None = None
    if port is not None:
        port_n = int(port)
        if port_n > 65535:
            raise SipParseError(status, f"Bad port {port!r}")
    if ptext == ";":
        raise SipParseError(status, "Empty URI parameter")
    params = parse_params(ptext[1:], status) if ptext else []
    if headers is not None and not _URI_HEADERS.fullmatch(headers):
        raise SipParseError(status, "Malformed URI headers")
    return SipUri(scheme, user, password, host, port_n, params, headers or "")


def parse_sip_uri(text: str, status: int = 400) -> SipUri:
    """Like :func:`parse_uri` but only sip and sips URIs; other schemes raise 416 (§8.2.2.1)."""
    uri = parse_uri(text, status)
    if not isinstance(uri, SipUri):
        raise SipParseError(416, f"Unsupported URI scheme {uri.scheme}")
    return uri

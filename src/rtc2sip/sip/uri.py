"""SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25.1, RFC 3966), sans-I/O.

Parameters keep their order and spelling so that a URI that is only read serialises back as it came;
lookups are case-insensitive as §19.1.4 requires.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import SipParseError

_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?$")
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# user / password / param characters: unreserved, escaped and the punctuation §25.1 allows
_USERCHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSCHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAMCHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
_HEADERCHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$=&]|%[0-9A-Fa-f]{2})*$")


def valid_host(host: str) -> bool:
    if _IPV6.match(host):
        return True
    if _IPV4.match(host):
        return all(int(p) < 256 for p in host.split("."))
    return bool(_HOSTNAME.match(host)) and not host.replace(".", "").isdigit()


Param = tuple[str, str | None]


def parse_params(text: str, status: int = 400) -> list[Param]:
    """``;a=b;c`` (the leading ``;`` already removed) into ordered (name, value) pairs."""
    out: list[Param] = []
    if not text:
        return out
    for part in text.split(";"):
        part = part.strip()
        if not part:
            raise SipParseError(status, "Empty URI parameter")
        name, eq, value = part.partition("=")
        if not _PARAMCHARS.match(name) or (eq and not _PARAMCHARS.match(value)):
            raise SipParseError(status, f"Bad URI parameter {part!r}")
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


@dataclass(eq=False)
class SipUri:
    scheme: str = "sip"  # "sip" or "sips"
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

    def key(self) -> tuple[object, ...]:
        """The comparison key of §19.1.4: user and password case-sensitive after unescaping, host
        case-insensitive, the parameters that matter when present, header fields unordered."""
        special = tuple(
            (n, (get_param(self.params, n) or "").lower())
            for n in ("user", "ttl", "method", "maddr", "transport")
            if has_param(self.params, n)
        )
        return (
            self.scheme.lower(),
            unquote(self.user) if self.user is not None else None,
            unquote(self.password) if self.password is not None else None,
            self.host.lower(),
            self.port,
            special,
            tuple(sorted(self.headers.split("&"))) if self.headers else (),
        )

    def aor(self) -> str:
        """Address-of-record form used as a registrar key (§10.3 step 5)."""
        user = unquote(self.user) if self.user else ""
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

    def key(self) -> tuple[object, ...]:
        return ("tel", re.sub(r"[-.()]", "", self.number), tuple((n.lower(), v) for n, v in self.params))


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


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str, status: int = 400) -> Uri:
    """Parse a URI; raises :class:`SipParseError` with ``status`` when it is malformed."""
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme) or not rest:
        raise SipParseError(status, f"Malformed URI {text!r}")
    ls = scheme.lower()
    if ls in ("sip", "sips"):
        return _parse_sip(scheme, rest, status)
    if ls == "tel":
        number, _, ptext = rest.partition(";")
        if not number or not re.match(r"^\+?[0-9A-Fa-f*#.()\-pwPW]+$", number):
            raise SipParseError(status, f"Malformed tel URI {text!r}")
        return TelUri(number, parse_params(ptext, status))
    if any(c in rest for c in " \t\r\n<>\""):
        raise SipParseError(status, f"Malformed URI {text!r}")
    return AbsoluteUri(scheme, rest)


def _parse_sip(scheme: str, rest: str, status: int) -> SipUri:
    uri = SipUri(scheme=scheme.lower())
    at = rest.rfind("@")
    if at >= 0:
        # '@' never appears unescaped in host, params or headers, so the last one ends userinfo
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if not user or not _USERCHARS.match(user) or (colon and not _PASSCHARS.match(password)):
            raise SipParseError(status, "Malformed userinfo in URI")
        uri.user = user
        uri.password = password if colon else None
    rest, q, headers = rest.partition("?")
    if q:
        if not _HEADERCHARS.match(headers):
            raise SipParseError(status, "Malformed URI headers")
        uri.headers = headers
    hostport, _, ptext = rest.partition(";")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(status, "Malformed IPv6 reference")
        host, portpart = hostport[: end + 1], hostport[end + 1 :]
        if portpart and not portpart.startswith(":"):
            raise SipParseError(status, "Malformed host")
        port = portpart[1:] if portpart else None
    else:
        host, colon, p = hostport.partition(":")
        port = p if colon else None
    if not valid_host(host):
        raise SipParseError(status, f"Malformed host {host!r}")
    uri.host = host
    if port is not None:
        if not port.isdigit() or len(port) > 5 or int(port) > 65535:
            raise SipParseError(status, f"Bad port {port!r}")
        uri.port = int(port)
    uri.params = parse_params(ptext, status)
    return uri


def parse_sip_uri(text: str, status: int = 400) -> SipUri:
    uri = parse_uri(text, status)
    if not isinstance(uri, SipUri):
        raise SipParseError(416, f"Unsupported URI scheme {uri.scheme}")
    return uri

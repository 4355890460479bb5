"""Digest access authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), sans-I/O: the header values.

Three layers, each usable alone:

* codecs (this module; RFC 7616 §3.3, §3.4, §3.4.4, RFC 7235 §2.1, RFC 3261 §25.1):
  :func:`parse_challenge` / :func:`parse_credentials` read a ``WWW-Authenticate`` /
  ``Proxy-Authenticate`` or ``Authorization`` / ``Proxy-Authorization`` value into a typed
  :class:`Challenge` or :class:`Credentials`; ``str()`` writes them back. Anything malformed raises
  :class:`DigestError` (errors.py), which is a :class:`SipParseError` carrying 400.
* the arithmetic of RFC 7616 §3.4 (``digest_hash``): :func:`compute_ha1`, :func:`compute_response`,
  :func:`userhash`.
* roles: :class:`DigestServer` (``digest_server``) issues challenges and verifies credentials for the
  registrar and for calls from unregistered sources; :func:`answer_challenge` (``digest_client``) is the
  client side used when the gateway answers a 401/407 on a browser's behalf.

Nothing here reads a clock or a socket: the caller passes ``now`` and the randomness source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from .digest_hash import _HEX, ALGORITHMS
from .errors import DigestError

__all__ = [
    "Challenge",
    "Credentials",
    "parse_challenge",
    "parse_credentials",
]


# --------------------------------------------------------------------------------------------------
# auth-param lists (RFC 7235 §2.1, RFC 3261 §25.1): scheme, then name=value pairs separated by commas


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WS = " \t\r\n"
_MAX_VALUE = 8192  # longest header value we parse; a real one is a few hundred octets
_NC = re.compile(r"^[0-9A-Fa-f]{8}$")


def _parse_auth(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme a=b, c="d, \\"e\\""`` into the scheme and lower-cased parameter names.

    Quoted values are unescaped; commas inside quotes are kept; empty list elements are skipped
    (RFC 7230 §7); a parameter given twice is an error (RFC 7235 §2.1).
    """
    if len(value) > _MAX_VALUE:
        raise DigestError("Authentication header too long")
    s = value.strip(_WS)
    m = _TOKEN.match(s)
    if not m:
        raise DigestError("Missing authentication scheme")
    scheme = m.group()
    i, n = m.end(), len(s)
    if i < n and s[i] not in _WS:
        raise DigestError(f"Bad authentication scheme {s[: i + 1]!r}")
    params: dict[str, str] = {}
    while True:
        while i < n and (s[i] in _WS or s[i] == ","):
            i += 1
        if i >= n:
            break
        m = _TOKEN.match(s, i)
        if not m:
            raise DigestError(f"Expected a parameter name at offset {i}")
        name = m.group().lower()
        i = m.end()
        while i < n and s[i] in _WS:
            i += 1
        if i >= n or s[i] != "=":
            raise DigestError(f"Expected '=' after {name!r}")
        i += 1
        while i < n and s[i] in _WS:
            i += 1
        if i < n and s[i] == '"':
            i += 1
            out: list[str] = []
            while True:
                if i >= n:
                    raise DigestError("Unterminated quoted string")
                c = s[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise DigestError("Unterminated quoted string")
                    c = s[i + 1]
                    i += 1
                elif c == '"':
                    i += 1
                    break
                if c in "\r\n\0":
                    raise DigestError("Control character in quoted string")
                out.append(c)
                i += 1
            val = "".join(out)
        else:
            j = i
            # Lenient about unquoted values (base64 nonces, bare URIs from old UAs): anything up to a
            # separator, as long as it is printable.
            while j < n and s[j] not in _WS and s[j] != ",":
                j += 1
            val = s[i:j]
            if not val or any(c == '"' or ord(c) < 0x21 or ord(c) == 0x7F for c in val):
                raise DigestError(f"Bad value for {name!r}")
            i = j
        if name in params:
            raise DigestError(f"Parameter {name!r} given twice")
        params[name] = val
        while i < n and s[i] in _WS:
            i += 1
        if i < n and s[i] != ",":
            raise DigestError(f"Expected ',' after {name!r}")
    return scheme, params


def _quote(v: str) -> str:
    if any(c in v for c in "\r\n\0"):
        raise DigestError("Control character in a value to quote")
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bool(v: str | None) -> bool:
    return v is not None and v.lower() == "true"


def _decode_ext_value(v: str) -> str:
    """``username*`` is an RFC 5987 ext-value: ``charset'lang'pct-encoded`` (RFC 7616 §3.4.4)."""
    parts = v.split("'", 2)
    if len(parts) != 3 or parts[0].lower() not in ("utf-8", "iso-8859-1"):
        raise DigestError("Bad username* value")
    try:
        return unquote_to_bytes(parts[2]).decode(parts[0].lower())
    except UnicodeDecodeError as e:
        raise DigestError("Bad username* encoding") from e


# --------------------------------------------------------------------------------------------------
# Challenge and Credentials


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge (RFC 7616 §3.3, RFC 3261 §25.1 ``digest-cln``)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()  # empty: an RFC 2069 challenge
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    domain: str | None = None

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    """Read one ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (one challenge per header in SIP)."""
    scheme, p = _parse_auth(value)
    if scheme.lower() != "digest":
        raise DigestError(f"Not a Digest challenge: {scheme}")
    if "realm" not in p or "nonce" not in p:
        raise DigestError("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in p["qop"].split(",") if q.strip()) if "qop" in p else ()
    alg = p.get("algorithm", "MD5")
    known = ALGORITHMS.get(alg.lower())
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        # Unknown algorithms are kept as sent: a UAC skips such a challenge (RFC 8760 §2.4).
        algorithm=known.name if known else alg,
        qop=qop,
        opaque=p.get("opaque"),
        stale=_bool(p.get("stale")),
        userhash=_bool(p.get("userhash")),
        domain=p.get("domain"),
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """Digest credentials (RFC 7616 §3.4, RFC 3261 §25.1 ``digest-response``).

    ``username`` is what was sent: with ``userhash`` it is ``H(user:realm)``, not the user name.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    cnonce: str | None = None
    nc: str | None = None  # kept as the 8 hex digits sent: the response hashes that exact text
    qop: str | None = None
    opaque: str | None = None
    userhash: bool = False

    @property
    def nonce_count(self) -> int | None:
        return int(self.nc, 16) if self.nc is not None else None

    def __str__(self) -> str:
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
            f"algorithm={self.algorithm}",
        ]
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        if self.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    """Read one ``Authorization`` / ``Proxy-Authorization`` value; :class:`DigestError` if malformed."""
    scheme, p = _parse_auth(value)
    if scheme.lower() != "digest":
        raise DigestError(f"Not Digest credentials: {scheme}")
    if "username" in p and "username*" in p:
        raise DigestError("Both username and username* given")  # RFC 7616 §3.4.4
    if "username*" in p:
        if _bool(p.get("userhash")):
            raise DigestError("username* with userhash")
        username = _decode_ext_value(p["username*"])
    elif "username" in p:
        username = p["username"]
    else:
        raise DigestError("Digest credentials without username")
    for required in ("realm", "nonce", "uri", "response"):
        if required not in p:
            raise DigestError(f"Digest credentials without {required}")
    if not _HEX.match(p["response"]):
        raise DigestError("Digest response is not hex")
    qop = p.get("qop")
    nc = p.get("nc")
    cnonce = p.get("cnonce")
    if qop is not None:
        qop = qop.lower()
        if nc is None or cnonce is None:
            raise DigestError("qop without nc or cnonce")  # RFC 7616 §3.4
    if nc is not None:
        if not _NC.match(nc):
            raise DigestError("nc is not 8 hex digits")
        if int(nc, 16) == 0:
            raise DigestError("nc is zero")
    alg = p.get("algorithm", "MD5")
    known = ALGORITHMS.get(alg.lower())
    return Credentials(
        username=username,
        realm=p["realm"],
        nonce=p["nonce"],
        uri=p["uri"],
        response=p["response"].lower(),
        algorithm=known.name if known else alg,
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=p.get("opaque"),
        userhash=_bool(p.get("userhash")),
    )


"""Digest access authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), sans-I/O.

Three layers, each usable alone:

* codecs: :func:`parse_challenge` / :func:`parse_credentials` read a ``WWW-Authenticate`` /
  ``Proxy-Authenticate`` or ``Authorization`` / ``Proxy-Authorization`` value into a typed
  :class:`Challenge` or :class:`Credentials`; ``str()`` writes them back. Anything malformed raises
  :class:`DigestError`, which is a :class:`SipParseError` carrying 400.
* the arithmetic of RFC 7616 §3.4: :func:`compute_ha1`, :func:`compute_response`, :func:`userhash`.
* roles: :class:`DigestServer` issues challenges and verifies credentials for the registrar and for
  calls from unregistered sources; :func:`answer_challenge` is the client side used when the gateway
  answers a 401/407 on a browser's behalf.

Nothing here reads a clock or a socket: the caller passes ``now`` and the randomness source.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_to_bytes

from .errors import SipParseError
from .uri import parse_uri

__all__ = [
    "ALGORITHMS", "Algorithm", "Challenge", "Credentials", "DigestError", "DigestServer", "Lookup", "Outcome",
    "Verification", "answer_challenge", "check_response", "compute_ha1", "compute_response",
    "find_credentials", "parse_challenge", "parse_credentials", "select_challenge", "userhash",
]


class DigestError(SipParseError):
    """A challenge or credentials value that cannot be understood, or a challenge we cannot answer.

    Servers answer a request whose credentials raise this with ``status`` (400), as for any other
    malformed header (RFC 3261 §8.2, §16.3).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(status, reason)


# ---------------------------------------------------------------------------------------------------
# Algorithms (RFC 7616 §3.2, §6.1; RFC 8760 §2.1)


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One row of the IANA "HTTP Digest Hash Algorithms" registry, plus its ``-sess`` flag."""

    name: str  # canonical spelling, as written in headers
    hashlib_name: str
    sess: bool

    @property
    def base(self) -> str:
        """The name without ``-sess``: the algorithm a stored HA1 belongs to."""
        return self.name[: -len("-sess")] if self.sess else self.name

    @property
    def hex_len(self) -> int:
        return hashlib.new(self.hashlib_name, usedforsecurity=False).digest_size * 2

    def h(self, data: str | bytes) -> str:
        """``H(data)`` of RFC 7616 §3.4.1: lower-case hex of the hash of the UTF-8 octets."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        # usedforsecurity=False keeps MD5 available on FIPS builds: Digest still needs it for old peers.
        return hashlib.new(self.hashlib_name, raw, usedforsecurity=False).hexdigest()


_ALGORITHM_ROWS = [
    ("MD5", "md5"),
    ("SHA-256", "sha256"),
    ("SHA-512-256", "sha512_256"),
]
# Keyed by lower case: algorithm names are case-insensitive tokens (RFC 7616 §3.3).
ALGORITHMS: Mapping[str, Algorithm] = {
    a.name.lower(): a
    for name, hl in _ALGORITHM_ROWS
    if hl in hashlib.algorithms_available  # SHA-512/256 needs an OpenSSL that has it
    for a in (Algorithm(name, hl, False), Algorithm(f"{name}-sess", hl, True))
}


def _algorithm(name: str) -> Algorithm:
    alg = ALGORITHMS.get(name.lower())
    if alg is None:
        raise DigestError(f"Unsupported digest algorithm {name!r}")
    return alg


# ---------------------------------------------------------------------------------------------------
# auth-param lists (RFC 7235 §2.1, RFC 3261 §25.1): scheme, then name=value pairs separated by commas

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WS = " \t\r\n"
_MAX_VALUE = 8192  # longest header value we parse; a real one is a few hundred octets
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
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


# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# RFC 7616 §3.4.1-§3.4.4 arithmetic


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)``: the value a user database may store instead of the password.

    Always the non-session HA1; ``-sess`` algorithms derive theirs per nonce in :func:`compute_response`.
    """
    return _algorithm(algorithm).h(f"{username}:{realm}:{password}")


def userhash(algorithm: str, username: str, realm: str) -> str:
    """``H(username:realm)``, the hidden user name of RFC 7616 §3.4.4."""
    return _algorithm(algorithm).h(f"{username}:{realm}")


def compute_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; without ``qop`` the RFC 2069 form).

    ``ha1`` is the non-session HA1 of :func:`compute_ha1`; for ``-sess`` the session key
    ``H(HA1:nonce:cnonce)`` (§3.4.2) is derived here.
    """
    alg = _algorithm(algorithm)
    if alg.sess:
        if cnonce is None:
            raise DigestError(f"{alg.name} needs a cnonce")
        ha1 = alg.h(f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = alg.h(f"{method}:{uri}:{alg.h(body)}")  # §3.4.3
    elif qop in (None, "auth"):
        ha2 = alg.h(f"{method}:{uri}")
    else:
        raise DigestError(f"Unsupported qop {qop!r}")
    if qop is None:
        return alg.h(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return alg.h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def check_response(
    credentials: Credentials,
    method: str,
    *,
    password: str | None = None,
    ha1: str | None = None,
    username: str | None = None,
    body: bytes = b"",
) -> bool:
    """Whether ``credentials.response`` is right for this secret; nonce freshness is not checked here.

    ``username`` is the real user name when the credentials carry a userhash (needed with ``password``).
    """
    alg = _algorithm(credentials.algorithm)
    if ha1 is None:
        if password is None:
            raise ValueError("check_response needs a password or an HA1")
        ha1 = compute_ha1(alg.base, username or credentials.username, credentials.realm, password)
    elif len(ha1) != alg.hex_len or not _HEX.match(ha1):
        return False
    expected = compute_response(
        alg.name, ha1.lower(), credentials.nonce, method, credentials.uri,
        qop=credentials.qop, nc=credentials.nc, cnonce=credentials.cnonce, body=body,
    )
    return hmac.compare_digest(expected, credentials.response)


# ---------------------------------------------------------------------------------------------------
# Server side (RFC 3261 §22.2-§22.3, RFC 7616 §3.3, §3.5, RFC 8760 §2.4)

Lookup = Callable[[str, str, str], str | None]
"""``lookup(username, realm, algorithm)``: the password or HA1 (see ``DigestServer(lookup_gives=...)``)
of a user, ``None`` when unknown. ``algorithm`` is the base one (``MD5``, ``SHA-256``): the HA1 of a
``-sess`` variant is derived from it."""


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # right secret, unusable nonce: re-challenge with stale=true (RFC 7616 §3.3)
    REJECTED = "rejected"  # wrong secret, unknown user or unacceptable parameters: fresh challenge


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    reason: str
    username: str | None = None  # the real user name, once known (after a userhash is resolved)
    algorithm: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @property
    def stale(self) -> bool:
        return self.outcome is Outcome.STALE


_NONCE_VERSION = 1
_NONCE_FMT = ">BQ8s"  # version, creation time in ms, 8 random octets
_NONCE_RAW = struct.calcsize(_NONCE_FMT)
_NONCE_MAC = 16
_CLOCK_SKEW = 5.0  # seconds a nonce may seem to come from the future (clock steps between workers)
_WINDOW = 64  # nonce counts remembered below the highest one: tolerates requests reordered on UDP


@dataclass(slots=True)
class _Counts:
    """Anti-replay window over the nonce counts of one (nonce, user), as in IPsec (RFC 4303 §3.4.3)."""

    created: int  # nonce creation time, ms
    highest: int = 0
    seen: int = 0  # bit k set: count highest - k was used

    def use(self, nc: int) -> bool:
        if nc > self.highest:
            shift = nc - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << _WINDOW) - 1) if shift < _WINDOW else 1
            self.highest = nc
            return True
        offset = self.highest - nc
        if offset >= _WINDOW or self.seen >> offset & 1:
            return False
        self.seen |= 1 << offset
        return True


class DigestServer:
    """Issues Digest challenges and verifies credentials for one realm, without per-challenge state.

    Nonces carry their creation time and an HMAC under ``secret`` (RFC 7616 §5.4), so any worker with the
    same secret accepts them and a restart with a new secret only costs clients one ``stale`` round trip.
    Memory is bounded by ``max_nonces`` nonce-count windows of about 200 octets each.

    ``algorithms`` are offered in that order, most preferred first (RFC 8760 §2.4); their ``-sess``
    twins are accepted too. ``lookup_gives`` says whether the lookup callback returns plaintext
    passwords or HA1 values. ``resolve_userhash(hash, realm, algorithm)`` maps a hidden user name back
    to the real one; without it, challenges do not ask for ``userhash`` and credentials using one are
    rejected. ``random(n)`` gives n random octets for nonces.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        nonce_lifetime: float = 300.0,
        lookup_gives: Literal["password", "ha1"] = "password",
        resolve_userhash: Callable[[str, str, str], str | None] | None = None,
        allow_rfc2069: bool = True,
        max_nonces: int = 4096,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("DigestServer needs a non-empty secret")
        if not algorithms:
            raise ValueError("DigestServer needs at least one algorithm")
        if max_nonces < 1:
            raise ValueError("max_nonces must be positive")
        self.realm = realm
        self.algorithms = tuple(_algorithm(a).name for a in algorithms)
        self.nonce_lifetime = nonce_lifetime
        self.lookup_gives = lookup_gives
        self.resolve_userhash = resolve_userhash
        self.allow_rfc2069 = allow_rfc2069  # MD5 without qop, for UAs that predate RFC 2617
        self.max_nonces = max_nonces
        self._secret = secret
        self._random = random
        self._accepted = {a.lower() for name in self.algorithms for a in (name, _toggle_sess(name))}
        # opaque is echoed by clients but carries nothing we rely on: the nonce holds the MAC.
        self.opaque = base64.urlsafe_b64encode(
            hmac.digest(secret, b"opaque\0" + realm.encode(), "sha256")[:12]
        ).decode()
        self._counts: OrderedDict[tuple[str, str], _Counts] = OrderedDict()
        # Creation time (ms) of the newest nonce whose window was evicted: nonces that old are refused
        # as stale when not in the table, since a replayed count could no longer be detected.
        self._evicted_floor = -1

    # -- challenges ---------------------------------------------------------------------------------

    def make_nonce(self, now: float) -> str:
        raw = struct.pack(_NONCE_FMT, _NONCE_VERSION, max(0, int(now * 1000)), self._random(8))
        return base64.urlsafe_b64encode(raw + self._mac(raw)).decode().rstrip("=")

    def challenges(self, now: float, *, stale: bool = False) -> list[Challenge]:
        """One challenge per algorithm, most preferred first, sharing one nonce (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now)
        return [
            Challenge(
                realm=self.realm, nonce=nonce, algorithm=alg, qop=("auth",), opaque=self.opaque,
                stale=stale, userhash=self.resolve_userhash is not None,
            )
            for alg in self.algorithms
        ]

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for ``WWW-Authenticate`` (401) or ``Proxy-Authenticate`` (407), one per header."""
        return [str(c) for c in self.challenges(now, stale=stale)]

    # -- verification -------------------------------------------------------------------------------

    def verify(
        self,
        credentials: str | Credentials,
        method: str,
        now: float,
        lookup: Lookup,
        *,
        request_uri: str | None = None,
        body: bytes = b"",
    ) -> Verification:
        """Check one ``Authorization`` / ``Proxy-Authorization`` value (RFC 3261 §22.4, RFC 7616 §3.4).

        Raises :class:`DigestError` for malformed credentials. A correct response over an expired,
        foreign, replayed or forgotten nonce gives :attr:`Outcome.STALE`: the client knows the secret,
        so it is told to retry with a fresh nonce instead of asking its user again. ``request_uri``,
        when given, must match the ``uri`` parameter (RFC 7616 §3.4.6). A user database behind I/O can
        be read first: parse with :func:`parse_credentials`, fetch, then pass a lookup returning it.
        """
        cred = parse_credentials(credentials) if isinstance(credentials, str) else credentials
        if cred.realm != self.realm:
            return Verification(Outcome.REJECTED, "realm")
        alg = ALGORITHMS.get(cred.algorithm.lower())
        if alg is None or alg.name.lower() not in self._accepted:
            return Verification(Outcome.REJECTED, "algorithm")
        if cred.qop is None:
            if not (self.allow_rfc2069 and alg.name == "MD5"):
                return Verification(Outcome.REJECTED, "qop", algorithm=alg.name)
        elif cred.qop != "auth":
            return Verification(Outcome.REJECTED, "qop", algorithm=alg.name)
        if request_uri is not None and not _same_uri(cred.uri, request_uri):
            return Verification(Outcome.REJECTED, "uri", algorithm=alg.name)

        username = cred.username
        if cred.userhash:
            resolve = self.resolve_userhash
            real = resolve(cred.username, cred.realm, alg.base) if resolve else None
            if real is None:
                return Verification(Outcome.REJECTED, "unknown user", algorithm=alg.name)
            username = real
        secret = lookup(username, cred.realm, alg.base)
        if secret is None:
            return Verification(Outcome.REJECTED, "unknown user", username, alg.name)
        if self.lookup_gives == "password":
            ok = check_response(cred, method, password=secret, username=username, body=body)
        else:
            ok = check_response(cred, method, ha1=secret, body=body)
        if not ok:
            return Verification(Outcome.REJECTED, "response", username, alg.name)

        # The response is right; only now does the nonce decide between accepted and stale, so a
        # stranger without the secret never learns anything about our nonces.
        created = self._nonce_time(cred.nonce)
        if created is None:
            return Verification(Outcome.STALE, "foreign nonce", username, alg.name)
        age = now - created / 1000
        if age > self.nonce_lifetime or age < -_CLOCK_SKEW:
            return Verification(Outcome.STALE, "expired nonce", username, alg.name)
        nc = cred.nonce_count
        if nc is not None:
            # Without qop there is no count: RFC 2069 clients are only limited by the nonce lifetime.
            fresh = self._use_count((cred.nonce, username), created, nc, now)
            if fresh is None:
                return Verification(Outcome.STALE, "forgotten nonce", username, alg.name)
            if not fresh:
                return Verification(Outcome.STALE, "replayed nonce count", username, alg.name)
        return Verification(Outcome.ACCEPTED, "ok", username, alg.name)

    # -- internals ----------------------------------------------------------------------------------

    def _mac(self, raw: bytes) -> bytes:
        # The realm is in the MAC so two realms sharing a secret cannot swap nonces.
        msg = b"nonce\0" + self.realm.encode() + b"\0" + raw
        return hmac.digest(self._secret, msg, "sha256")[:_NONCE_MAC]

    def _nonce_time(self, nonce: str) -> int | None:
        """Creation time in ms of one of our nonces, or None if it is not ours."""
        if len(nonce) > 64:
            return None
        try:
            blob = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(blob) != _NONCE_RAW + _NONCE_MAC:
            return None
        raw, mac = blob[:_NONCE_RAW], blob[_NONCE_RAW:]
        if not hmac.compare_digest(mac, self._mac(raw)):
            return None
        version, created, _ = struct.unpack(_NONCE_FMT, raw)
        return int(created) if version == _NONCE_VERSION else None

    def _use_count(self, key: tuple[str, str], created: int, nc: int, now: float) -> bool | None:
        """True if ``nc`` is new for this (nonce, user), False if replayed, None if no longer tracked."""
        counts = self._counts.get(key)
        if counts is None:
            if created <= self._evicted_floor:
                return None
            counts = _Counts(created)
            self._counts[key] = counts
            self._prune(now)
        else:
            self._counts.move_to_end(key)
        return counts.use(nc)

    def _prune(self, now: float) -> None:
        horizon = (now - self.nonce_lifetime) * 1000
        # Oldest first: windows of expired nonces are useless (their nonce is refused as stale anyway).
        while self._counts:
            key, oldest = next(iter(self._counts.items()))
            if oldest.created < horizon:
                del self._counts[key]
            elif len(self._counts) > self.max_nonces:
                del self._counts[key]
                self._evicted_floor = max(self._evicted_floor, oldest.created)
            else:
                break


def _toggle_sess(name: str) -> str:
    return name[: -len("-sess")] if name.lower().endswith("-sess") else f"{name}-sess"


def _same_uri(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return parse_uri(a).key() == parse_uri(b).key()
    except SipParseError:
        return False


def find_credentials(values: Iterable[str], realm: str) -> Credentials | None:
    """The first Digest credentials for ``realm`` among several header values (RFC 3261 §22.3).

    A proxy sees credentials meant for other proxies too; values for other schemes or realms are
    skipped; a malformed Digest value met before a match raises :class:`DigestError`.
    """
    for v in values:
        m = _TOKEN.match(v.lstrip(_WS))
        if m is None or m.group().lower() != "digest":
            continue  # other schemes may use token68 syntax (RFC 7235 §2.1): do not parse them
        _, p = _parse_auth(v)
        if p.get("realm") == realm:
            return parse_credentials(v)
    return None


# ---------------------------------------------------------------------------------------------------
# Client side (RFC 7616 §3.4, RFC 8760 §2.4)


def select_challenge(
    values: Iterable[str], algorithms: Sequence[str] | None = None
) -> Challenge | None:
    """The challenge a UAC should answer: the first one, in header order, whose algorithm it supports.

    RFC 8760 §2.4 has the server list its preferred algorithm first, so header order decides.
    ``algorithms`` narrows the choice, e.g. to ``("MD5",)`` when all the gateway holds is an MD5 HA1.
    Values that are malformed or not Digest are skipped.
    """
    allowed = {a.lower() for a in algorithms} if algorithms is not None else set(ALGORITHMS)
    for v in values:
        try:
            c = parse_challenge(v)
        except DigestError:
            continue
        if c.algorithm.lower() in allowed and c.algorithm.lower() in ALGORITHMS:
            return c
    return None


def answer_challenge(
    challenge_value: str | Challenge,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
    *,
    random: Callable[[int], bytes] = os.urandom,
) -> str:
    """An ``Authorization`` / ``Proxy-Authorization`` value answering one challenge.

    Give either ``password`` or ``ha1`` (``H(username:realm:password)`` of the challenge's base
    algorithm, as an RTCWeb client may send it). ``qop=auth`` is preferred, ``auth-int`` (over ``body``)
    used when it is the only one offered, and a challenge without ``qop`` is answered the RFC 2069 way.
    ``nc`` counts the requests already sent with this nonce, starting at 1 (RFC 7616 §3.4).
    """
    c = parse_challenge(challenge_value) if isinstance(challenge_value, str) else challenge_value
    alg = _algorithm(c.algorithm)
    if (password is None) == (ha1 is None):
        raise ValueError("answer_challenge needs exactly one of password and ha1")
    if ha1 is None:
        assert password is not None
        ha1 = compute_ha1(alg.base, username, c.realm, password)
    elif len(ha1) != alg.hex_len or not _HEX.match(ha1):
        raise DigestError(f"HA1 does not fit {alg.name}")
    if not 0 < nc < 2**32:
        raise ValueError("nc out of range")
    qop: str | None
    if not c.qop:
        qop = None
    elif "auth" in c.qop:
        qop = "auth"
    elif "auth-int" in c.qop:
        qop = "auth-int"
    else:
        raise DigestError(f"No supported qop in {c.qop}")
    if qop is not None or alg.sess:
        cnonce = cnonce if cnonce is not None else random(16).hex()
    nc_text = f"{nc:08x}" if qop is not None else None
    response = compute_response(
        alg.name, ha1.lower(), c.nonce, method, uri,
        qop=qop, nc=nc_text, cnonce=cnonce if (qop or alg.sess) else None, body=body,
    )
    return str(
        Credentials(
            username=alg.h(f"{username}:{c.realm}") if c.userhash else username,
            realm=c.realm,
            nonce=c.nonce,
            uri=uri,
            response=response,
            algorithm=alg.name,
            cnonce=cnonce if (qop or alg.sess) else None,
            nc=nc_text,
            qop=qop,
            opaque=c.opaque,
            userhash=c.userhash,
        )
    )

"""Digest authentication, server side, sans-I/O (RFC 3261 §22.2-§22.3, RFC 7616 §3.3, §3.5, §5.4, RFC 8760 §2.4).

:class:`DigestServer` issues challenges with stateless, MAC-carrying nonces and verifies credentials
against them with a nonce-count replay window; :func:`check_response` checks one response against a
secret; :func:`find_credentials` picks a proxy's own credentials among several (RFC 3261 §22.3).
"""

from __future__ import annotations

import base64
import enum
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .digest import _TOKEN, _WS, Challenge, Credentials, _parse_auth, parse_credentials
from .digest_hash import _HEX, ALGORITHMS, _algorithm, compute_ha1, compute_response
from .errors import SipParseError
from .uri import parse_uri

__all__ = [
    "DigestServer",
    "Lookup",
    "Outcome",
    "Verification",
    "check_response",
    "find_credentials",
]

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


"""Digest's hash primitives (RFC 7616 §3.2, §3.4.1-§3.4.4, §6.1; RFC 8760 §2.1), sans-I/O.

The algorithms of the IANA "HTTP Digest Hash Algorithms" registry we support (MD5, SHA-256,
SHA-512-256 and their ``-sess`` twins) and the arithmetic: :func:`compute_ha1`, :func:`userhash`,
:func:`compute_response`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import DigestError

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "compute_ha1",
    "compute_response",
    "userhash",
]


# --------------------------------------------------------------------------------------------------
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


_HEX = re.compile(r"^[0-9A-Fa-f]+$")


# --------------------------------------------------------------------------------------------------
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


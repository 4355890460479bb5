"""Digest authentication, client side (RFC 7616 §3.4, RFC 8760 §2.4), sans-I/O.

Which challenge of a 401/407 to answer (:func:`select_challenge`) and the ``Authorization`` /
``Proxy-Authorization`` value answering it (:func:`answer_challenge`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from .digest import Challenge, Credentials, parse_challenge
from .digest_hash import _HEX, ALGORITHMS, _algorithm, compute_ha1, compute_response
from .errors import DigestError

__all__ = [
    "answer_challenge",
    "select_challenge",
]

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


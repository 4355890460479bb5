"""The media transport in the translated SDP: ICE, DTLS-SRTP, SDES and RTCP ports, sans I/O.

ICE credentials and candidates (RFC 8839 §5, RFC 8840 end-of-candidates), DTLS fingerprints and
roles (RFC 8122 §5, RFC 8842 §5, RFC 4145 §4.1) toward the browser; SDES keys (RFC 4568 §6.1,
§7.1) and the RTCP port or rtcp-mux (RFC 3605, RFC 5761 §5.1.1) toward the legacy peer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .attributes import Candidate, Crypto
from .bundle import _transport_of
from .fields import SdpError
from .mapping import LegacyEndpoint, RemoteIce, WebRtcEndpoint
from .model import Media, SessionDescription

__all__ = [
    "SETUP_ANSWER",
]


# --------------------------------------------------------------------------------------------------
# ICE and DTLS toward the browser


# Answerer's DTLS role for an offered one (RFC 8842 §5.3, RFC 4145 §4.1: no a=setup means active).
# Passive toward actpass: the browser then sends the ClientHello once it has our answer, so no
# handshake flight of ours can reach it before it knows our fingerprint (TESTING.md, DTLS race).
SETUP_ANSWER: dict[str | None, str] = {
    "actpass": "passive",
    "active": "passive",
    "passive": "active",
    None: "passive",
}

# What an answer may say to each offered role.
_SETUP_ALLOWED: dict[str | None, frozenset[str]] = {
    "actpass": frozenset({"active", "passive"}),
    "active": frozenset({"passive"}),
    "passive": frozenset({"active"}),
    None: frozenset({"passive"}),
}


def _answer_setup(offered: str | None, wanted: str | None) -> str:
    if offered == "holdconn":
        return "holdconn"
    if offered not in _SETUP_ALLOWED:
        raise SdpError(f"bad offered setup {offered!r}")
    if wanted is not None and wanted in _SETUP_ALLOWED[offered]:
        return wanted
    return SETUP_ANSWER[offered]


# What the transport of an accepted browser m= section must have: attribute -> (RemoteIce field, RFC).
_REQUIRED_FROM_BROWSER: dict[str, tuple[str, str]] = {
    "ice-ufrag": ("ufrag", "RFC 8839 §5.4"),
    "ice-pwd": ("pwd", "RFC 8839 §5.4"),
    "fingerprint": ("fingerprints", "RFC 8842 §5"),
}


def _remote_ice(sdp: SessionDescription, media: Media, index: int) -> RemoteIce:
    ice = RemoteIce.of(_transport_of(sdp, media))
    for name, (attr, rfc) in _REQUIRED_FROM_BROWSER.items():
        if not getattr(ice, attr):
            raise SdpError(f"m= section {index} lacks a={name} ({rfc})")
    return ice


def _add_transport(media: Media, local: WebRtcEndpoint, setup: str, candidates: Sequence[Candidate] | None) -> None:
    """ICE credentials and candidates (RFC 8839 §5), DTLS fingerprint and role (RFC 8842 §5)."""
    if candidates is not None:
        for c in candidates:
            media.add("candidate", c)
        # The gateway gathers before it writes SDP and never trickles: say so (RFC 8840).
        media.add("end-of-candidates")
    media.add("ice-ufrag", local.ice_ufrag)
    media.add("ice-pwd", local.ice_pwd)
    for fp in local.fingerprints:
        media.add("fingerprint", fp)
    media.add("setup", setup)


def _default_address(candidates: Sequence[Candidate]) -> tuple[str, int]:
    """The m=/c= address: the first candidate's, else JSEP's 0.0.0.0 port 9 (RFC 8829 §5.2.1)."""
    for c in candidates:
        if c.component == 1:
            return c.ip, c.port
    return "0.0.0.0", 9


# --------------------------------------------------------------------------------------------------
# SDES and RTCP toward the legacy peer


def _add_legacy_rtcp(media: Media, local: LegacyEndpoint, *, offer_mux: bool) -> None:
    """rtcp-mux when both sides allow it (RFC 5761 §5.1.1), else a=rtcp with port + 1 (RFC 3605)."""
    if offer_mux and local.rtcp_mux:
        media.set_flag("rtcp-mux", True)
    else:
        media.add("rtcp", media.port + 1)


def _add_offer_crypto(media: Media, local: LegacyEndpoint, srtp: str) -> None:
    if srtp == "none":
        return
    keys = local.cryptos.get(media.kind, ())
    if not keys and srtp == "mandatory":
        raise ValueError(f"srtp mandatory but LegacyEndpoint has no SDES key for {media.kind}")
    for crypto in keys:
        media.add("crypto", crypto)


def _answer_crypto(offered: Media, local: LegacyEndpoint) -> Crypto | None:
    """The first offered SDES suite the gateway has a key for, under the offered tag (RFC 4568 §6.1)."""
    keys = {c.suite: c for c in local.cryptos.get(offered.kind, ())}
    for crypto in offered.cryptos:
        mine = keys.get(crypto.suite)
        if mine is not None:
            return dataclasses.replace(mine, tag=crypto.tag)
    return None


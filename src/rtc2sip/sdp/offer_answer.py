"""The offer/answer rules the four translation moves share (RFC 3264), sans I/O.

Attribute tables (:data:`TO_LEGACY`, :data:`TO_WEBRTC`): what is not in a table is kept toward
legacy equipment (vendor attributes are its habit) and dropped toward browsers (they refuse what
they do not expect); what a browser needs in every section (:data:`REQUIRED_TOWARD_WEBRTC`).
Directions (RFC 3264 §6.1, RFC 2543 hold of §8.4), the o= line's version (RFC 3264 §8, RFC 8866
§5.2), rejected m= sections (RFC 3264 §6) and the shape of an answer.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from collections.abc import Mapping as MappingT

from .attributes import Attribute
from .fields import Connection, Origin, SdpError, Timing, address_type
from .model import Media, SessionDescription

__all__ = [
    "REQUIRED_TOWARD_WEBRTC",
    "TO_LEGACY",
    "TO_WEBRTC",
    "Rule",
    "missing_for_browser",
]


# --------------------------------------------------------------------------------------------------
# Attribute tables


class Rule(enum.Enum):
    DROP = "removed"
    KEEP = "copied as is"
    CODEC = "rewritten per kept payload type"
    GATEWAY = "replaced by the gateway's own value"
    SSRC = "copied only with BreakerPolicy.forward_ssrc"


_ICE = dict.fromkeys(("ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "candidate", "end-of-candidates",
                      "remote-candidates", "ice-mismatch", "ice-pacing"), Rule.GATEWAY)
_DTLS = dict.fromkeys(("fingerprint", "setup", "tls-id", "connection", "identity"), Rule.GATEWAY)
_CODEC = dict.fromkeys(("rtpmap", "fmtp", "rtcp-fb"), Rule.CODEC)
_DIRECTION = dict.fromkeys(("sendrecv", "sendonly", "recvonly", "inactive"), Rule.GATEWAY)
_SSRC = dict.fromkeys(("ssrc", "ssrc-group", "msid"), Rule.SSRC)

# Browser attribute -> legacy SDP (media and session level). Not listed: kept.
TO_LEGACY: dict[str, Rule] = {
    **_ICE,  # RFC 8839: ICE ends at the gateway
    **_DTLS,  # RFC 8842: DTLS ends at the gateway, SDES or nothing on the legacy leg
    **_CODEC,
    **_DIRECTION,  # rewritten explicitly so a session-level default cannot be lost
    **_SSRC,
    "mid": Rule.DROP,  # RFC 5888: nothing is grouped on the legacy leg
    "group": Rule.DROP,
    "bundle-only": Rule.DROP,  # RFC 8843 §6
    "extmap": Rule.DROP,  # RFC 8285: header extensions are consumed by the gateway
    "extmap-allow-mixed": Rule.DROP,  # RFC 8285 §6
    "msid-semantic": Rule.DROP,
    "rtcp-mux": Rule.GATEWAY,  # RFC 5761: legacy leg muxes only if policy and peer agree
    "rtcp-mux-only": Rule.DROP,  # RFC 8858
    "rtcp-rsize": Rule.DROP,  # RFC 5506: reduced-size RTCP requires AVPF
    "rtcp": Rule.GATEWAY,  # RFC 3605: the gateway's own RTCP port
    "crypto": Rule.GATEWAY,  # RFC 4568: the gateway's own keys
    "rid": Rule.DROP,  # RFC 8851 and RFC 8853: simulcast is browser-leg only
    "simulcast": Rule.DROP,
    "sctp-port": Rule.DROP,  # RFC 8841: data channels are not relayed
    "max-message-size": Rule.DROP,
    "ptime": Rule.KEEP,  # RFC 8866 §6.4
    "maxptime": Rule.KEEP,  # RFC 8866 §6.5
}

# Legacy attribute -> browser SDP. Not listed: dropped, since browsers reject what they do not know
# in places (a=crypto next to DTLS, RFC 8827 §6.5) and gain nothing from vendor attributes.
TO_WEBRTC: dict[str, Rule] = {
    **_CODEC,
    **_DIRECTION,
    **_SSRC,
    "ptime": Rule.KEEP,
    "maxptime": Rule.KEEP,
    "framerate": Rule.KEEP,  # RFC 8866 §6.8
    "imageattr": Rule.KEEP,  # RFC 6236
}

# What every accepted m= section sent to a browser carries, and why (see missing_for_browser).
REQUIRED_TOWARD_WEBRTC: dict[str, str] = {
    "mid": "RFC 8843 §7.2: BUNDLE identifies sections by mid",
    "ice-ufrag": "RFC 8839 §5.4",
    "ice-pwd": "RFC 8839 §5.4",
    "fingerprint": "RFC 8842 §5: DTLS-SRTP, RFC 8827 §6.5",
    "setup": "RFC 8842 §5",
    "rtcp-mux": "RFC 8829 §5.2.1 and §5.3.1: browsers require it",
}


def missing_for_browser(sdp: SessionDescription) -> list[str]:
    """What a browser would miss in ``sdp`` (empty when it is complete): the attributes of
    :data:`REQUIRED_TOWARD_WEBRTC` in each accepted section and the BUNDLE group (RFC 8843 §7.1;
    Chrome with max-bundle refuses an answer without it)."""
    missing = [f"m= section {i}: a={name} ({why})" for i, m in enumerate(sdp.media) if not m.rejected
               for name, why in REQUIRED_TOWARD_WEBRTC.items() if not m.has(name)]
    if not sdp.bundle_groups and any(not m.rejected for m in sdp.media):
        missing.append("a=group:BUNDLE")
    return missing


def _carry(source: Iterable[Attribute], table: MappingT[str, Rule], default: Rule, ssrc: bool) -> list[Attribute]:
    keep = {Rule.KEEP, Rule.SSRC} if ssrc else {Rule.KEEP}
    return [Attribute(a.name, a.value) for a in source if table.get(a.name, default) in keep]


# --------------------------------------------------------------------------------------------------
# Directions


# (sends, receives) of each direction (RFC 3264 §6.1, RFC 8866 §6.7).
_FLAGS: dict[str, tuple[bool, bool]] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_DIRECTION_OF = {flags: name for name, flags in _FLAGS.items()}


def _effective_direction(media: Media) -> str:
    """The direction, with RFC 2543 hold (c=0.0.0.0) read as "do not send to me" (RFC 3264 §8.4)."""
    direction = media.direction
    conn = media.connection
    if conn is not None and conn.is_hold:
        sends, _ = _FLAGS[direction]
        return _DIRECTION_OF[(sends, False)]
    return direction


def _answer_direction(offered: str, wanted: str) -> str:
    """What an answer may say: the reverse of the offer, narrowed to ``wanted`` (RFC 3264 §6.1)."""
    o_send, o_recv = _FLAGS[offered]
    w_send, w_recv = _FLAGS[wanted]
    return _DIRECTION_OF[(o_recv and w_send, o_send and w_recv)]


# --------------------------------------------------------------------------------------------------
# Descriptions and sections


def _stamp(sdp: SessionDescription, previous: Origin | None, previous_body: str | None,
           session_id: str, address: str) -> tuple[Origin, str]:
    """Set the o= line: a new session starts at version 1; a later SDP keeps the session id and
    raises the version only if something changed (RFC 3264 §8, RFC 8866 §5.2)."""
    body = sdp.body_without_origin()
    if previous is None:
        origin = Origin("-", session_id, 1, "IN", address_type(address), address)
    else:
        origin = dataclasses.replace(previous, version=previous.version + (body != previous_body))
    sdp.origin = dataclasses.replace(origin)
    return origin, body


def _new_sdp(address: str | None) -> SessionDescription:
    sdp = SessionDescription(name="-", timings=[Timing()])
    if address is not None:
        sdp.connection = Connection.for_address(address)
    return sdp


def _rejected(kind: str, proto: str, fmt: str, mid: str | None) -> Media:
    """A rejected m= section (RFC 3264 §6: port 0, at least one format), keeping its mid (RFC 8843 §7.3.3)."""
    media = Media(kind, 0, proto, [fmt])
    if mid is not None:
        media.add("mid", mid)
    return media


def _check_answer_shape(answer: SessionDescription, expected: int, side: str) -> None:
    """RFC 3264 §6: as many m= sections as the offer. More is refused; fewer (some old phones drop
    the sections they reject) is read as those sections rejected."""
    if len(answer.media) > expected:
        raise SdpError(f"{side} answer has {len(answer.media)} m= sections, the offer had {expected} (RFC 3264 §6)")


def _answer_section(answer: SessionDescription, index: int | None) -> Media | None:
    return answer.media[index] if index is not None and index < len(answer.media) else None


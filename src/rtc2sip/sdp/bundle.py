"""BUNDLE, MID and SSRC handling on the browser leg (RFC 8843, RFC 8285, RFC 5576, RFC 8830), sans I/O.

Which m= section carries a bundle's transport (RFC 8843 §7.2.1), the ``sdes:mid`` header extension
that tells bundled streams apart before their SSRCs are learnt (RFC 8843 §9.2, §15.1; its ID kept
across re-offers, RFC 8285 §7), and the gateway's own a=ssrc/a=msid announcements (RFC 5576 §4.1,
RFC 8830 §2).
"""

from __future__ import annotations

from .attributes import Extmap, Msid
from .mapping import Mapping, SsrcAnnouncement, WebRtcEndpoint
from .model import Media, SessionDescription

__all__ = [
    "MID_EXTENSION",
]

# RFC 8843 §15.1: the m= section's mid in every RTP packet, how a BUNDLE receiver tells streams apart
# whose SSRCs it has not learnt yet (§9.2).
MID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:mid"


def _transport_of(sdp: SessionDescription, media: Media) -> Media:
    """The m= section whose transport ``media`` uses: the first section of its BUNDLE group that
    has a port (the offerer's tagged one, RFC 8843 §7.2.1), else itself."""
    for group in sdp.bundle_groups:
        if media.mid in group:
            for mid in group:
                owner = sdp.media_by_mid(mid)
                if owner is not None and owner.port != 0:
                    return owner
    return media


def _mid_extmap(media: Media) -> int | None:
    """The ID the browser gave :data:`MID_EXTENSION` (the parser refused a malformed a=extmap)."""
    return next((e.id for e in media.extmaps if e.uri == MID_EXTENSION), None)


def _offered_extmaps(local: WebRtcEndpoint, previous: Mapping | None) -> list[Extmap]:
    """The header extensions the gateway offers the browser, one ID each, the same in every bundled
    section (RFC 8843 §9.1) and kept from the previous negotiation (a re-offer renumbers nothing)."""
    old = next((m.mid_extmap for m in previous.media if m.mid_extmap is not None), None) if previous else None
    out: list[Extmap] = []
    for n, uri in enumerate(local.extmaps, start=1):
        out.append(Extmap(old if uri == MID_EXTENSION and old is not None else n, uri))
    return out


def _announce_msid(media: Media, ann: SsrcAnnouncement | None) -> None:
    if ann is not None and ann.stream is not None:
        media.add("msid", Msid(ann.stream, ann.track))


def _announce_ssrc(media: Media, ann: SsrcAnnouncement | None) -> None:
    if ann is not None:
        media.add("ssrc", f"{ann.ssrc} cname:{ann.cname}")


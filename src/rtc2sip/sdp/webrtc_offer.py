"""Browser calls legacy: its offer to the legacy leg and the legacy answer back (RFC 3264 §5, §6, §8; RFC 8829 §5.3).

::

    browser offer  --webrtc_offer_to_legacy-->  legacy offer
    legacy answer  --legacy_answer_to_webrtc--> browser answer

The browser leg is ICE + DTLS-SRTP + rtcp-mux + BUNDLE (``UDP/TLS/RTP/SAVPF``, RFC 8829 §5.3), the
legacy leg plain ``RTP/AVP`` or SDES ``RTP/SAVP``; re-offers keep m= positions (RFC 3264 §8.1).
"""

from __future__ import annotations

import dataclasses

from .attributes import Attribute
from .bundle import MID_EXTENSION, _announce_msid, _announce_ssrc
from .codecs import _add_codecs, _answer_codecs, _dtmf, _offer_codecs
from .fields import Connection
from .mapping import (
    MEDIA_KINDS,
    BreakerPolicy,
    LegacyEndpoint,
    LegacyPeer,
    Mapping,
    MediaMap,
    NoCommonCodec,
    RemoteIce,
    WebRtcEndpoint,
    _count,
    _old_for,
)
from .media_transport import (
    _add_legacy_rtcp,
    _add_offer_crypto,
    _add_transport,
    _answer_setup,
    _default_address,
    _remote_ice,
)
from .model import Media, SessionDescription
from .offer_answer import (
    TO_LEGACY,
    TO_WEBRTC,
    Rule,
    _answer_direction,
    _answer_section,
    _carry,
    _check_answer_shape,
    _effective_direction,
    _new_sdp,
    _rejected,
    _stamp,
)


def _legacy_slots(
    offer: SessionDescription, local: LegacyEndpoint, previous: Mapping | None
) -> tuple[dict[int, int], int]:
    """Browser m= index -> legacy m= index. Positions used before stay (RFC 3264 §8.1: m= lines
    are never removed or reordered); then the first usable section of each new kind."""
    slots: dict[int, int] = {}
    n = _count(previous.media, "legacy") if previous else 0
    def usable(media: Media) -> bool:
        return not media.rejected and media.is_rtp and media.kind in MEDIA_KINDS and media.kind in local.ports

    for i, media in enumerate(offer.media):
        old = _old_for(previous, media.mid, i, "webrtc")
        # a re-offer that changed a section's kind cannot keep its legacy slot: the slot is the old
        # kind's, and there may be no legacy port for the new one (the new kind gets a slot below)
        if old is not None and old.legacy_index is not None and old.kind == media.kind:
            slots[i] = old.legacy_index
    kinds = {offer.media[i].kind for i in slots}
    for i, media in enumerate(offer.media):
        if i in slots or not usable(media) or media.kind in kinds:
            continue
        kinds.add(media.kind)
        slots[i] = n
        n += 1
    return slots, n


def webrtc_offer_to_legacy(
    offer: SessionDescription,
    legacy_local: LegacyEndpoint,
    policy: BreakerPolicy,
    previous: Mapping | None = None,
) -> tuple[SessionDescription, Mapping]:
    """Turn the browser's SAVPF offer into an RTP/AVP offer for the legacy leg.

    One legacy m= section per media kind (the first usable one; bundled sections share a transport
    on the browser leg but are separate streams on the legacy one), the browser's codecs in its
    order and numbering filtered by ``policy`` (RFC 3264 §5.1), attributes per :data:`TO_LEGACY`,
    direction kept for hold (RFC 3264 §8.4), the gateway's address, RTCP port and SDES keys.
    Raises :class:`SdpError` for a browser offer without ICE or DTLS parameters and
    :class:`NoCommonCodec` when nothing can be offered.
    """
    slots, n_legacy = _legacy_slots(offer, legacy_local, previous)
    legacy = _new_sdp(legacy_local.address)
    legacy.attributes = _carry(offer.attributes, TO_LEGACY, Rule.KEEP, policy.forward_ssrc)
    sections: dict[int, Media] = {}
    maps: list[MediaMap] = []
    peer: RemoteIce | None = None
    for i, media in enumerate(offer.media):
        li = slots.get(i)
        old = _old_for(previous, media.mid, i, "webrtc")
        # A re-offer starts from what was negotiated: the legacy peer's address, SSRCs and DTMF
        # payload type stay valid until its answer says otherwise.
        base = dataclasses.replace(
            old or MediaMap(media.kind, i, li), kind=media.kind, webrtc_index=i, legacy_index=li, mid=media.mid,
            webrtc_ssrcs=media.ssrc_ids, webrtc_proto=media.proto, webrtc_format=media.formats[0] if media.formats
            else "0", rejected=False,
        )
        if li is None or media.rejected:
            maps.append(dataclasses.replace(base, rejected=True))
            continue
        # A transcoded stream's map pairs different codecs: its numbers are no promise to keep.
        pairs, to_legacy, transcode = _offer_codecs(media, policy.codecs,
                                                    old.to_legacy if old and not old.transcode else {})
        if not pairs:
            maps.append(dataclasses.replace(base, rejected=True))
            continue
        ice = _remote_ice(offer, media, i)
        peer = peer or ice
        proto = "RTP/SAVP" if policy.srtp == "mandatory" else "RTP/AVP"
        lm = Media(media.kind, legacy_local.ports[media.kind], proto, [])
        lm.attributes = _carry(media.attributes, TO_LEGACY, Rule.KEEP, policy.forward_ssrc)
        _add_codecs(lm, pairs, rtcp_fb=())  # RFC 4585 §4.2: no feedback without AVPF
        lm.direction = media.direction
        _add_legacy_rtcp(lm, legacy_local, offer_mux=policy.legacy_rtcp_mux)
        _add_offer_crypto(lm, legacy_local, policy.srtp)
        sections[li] = lm
        maps.append(dataclasses.replace(
            base, to_legacy=to_legacy, to_webrtc={v: k for k, v in to_legacy.items()}, transcode=transcode,
            legacy_proto=proto, legacy_format=str(pairs[0][0]),
        ))
    if not sections:
        raise NoCommonCodec("no codec of the browser's offer is allowed toward the legacy leg")
    for li in range(n_legacy):
        old = previous.by_legacy_index(li) if previous else None
        legacy.add_media(sections.get(li) or _rejected(
            old.kind if old else "audio", old.legacy_proto if old else "RTP/AVP",
            old.legacy_format if old else "0", None))
    origin, body = _stamp(legacy, previous.legacy_origin if previous else None,
                          previous.legacy_body if previous else None, legacy_local.session_id, legacy_local.address)
    groups = offer.bundle_groups
    mapping = dataclasses.replace(
        previous or Mapping(), media=tuple(maps), bundle=groups[0] if groups else (),
        legacy_origin=origin, legacy_body=body, transcoding=policy.codecs.transcoding,
        forward_ssrc=policy.forward_ssrc, webrtc_peer=peer,
    )
    return legacy, mapping


def legacy_answer_to_webrtc(
    legacy_answer: SessionDescription,
    original_offer: SessionDescription,
    webrtc_local: WebRtcEndpoint,
    mapping: Mapping,
) -> tuple[SessionDescription, Mapping]:
    """Build the browser's answer from the legacy answer (RFC 3264 §6, RFC 8829 §5.3).

    Same m= sections and mids as the browser offered; ``a=group:BUNDLE`` of the accepted ones (Chrome
    with max-bundle refuses an answer without it); the gateway's ICE credentials and candidates (and
    ``a=ice-lite`` at session level when :attr:`WebRtcEndpoint.ice_lite`, RFC 8445 §2.5; the media plane
    runs full ICE and sets it off); its fingerprint; ``a=setup:passive`` to an actpass offer
    (:data:`SETUP_ANSWER`); rtcp-mux; the legacy answer's codecs under the browser's payload types with
    telephone-event at their clock rate; rejected sections with port 0 and their mid. No a=ssrc but the
    gateway's own (:attr:`WebRtcEndpoint.ssrcs`). ``mapping`` comes back with the final payload-type
    maps.
    """
    _check_answer_shape(legacy_answer, _count(mapping.media, "legacy"), "legacy")
    answer = _new_sdp(None)
    if webrtc_local.ice_lite:
        answer.add("ice-lite")
    bundled = set(mapping.bundle)
    written_bundle = False
    maps: list[MediaMap] = []
    for i, offered in enumerate(original_offer.media):
        mm = mapping.by_webrtc_index(i) or MediaMap(offered.kind, i, None, offered.mid, rejected=True)
        lm = _answer_section(legacy_answer, mm.legacy_index)
        result = None
        if lm is not None and not mm.rejected and not lm.rejected:
            result = _answer_codecs(lm.codecs, [c for c in offered.codecs if c.pt in mm.to_legacy],
                                    mapping.transcoding)
        if result is None or lm is None:
            answer.add_media(_rejected(offered.kind, offered.proto, mm.webrtc_format, offered.mid))
            maps.append(dataclasses.replace(mm, rejected=True))
            continue
        pairs, to_legacy, transcode = result
        in_bundle = offered.mid in bundled
        candidates = webrtc_local.candidates if in_bundle else webrtc_local.candidates_by_mid.get(
            offered.mid or "", webrtc_local.candidates)
        ip, port = _default_address(candidates)
        am = answer.add_media(Media(offered.kind, port, offered.proto, []))
        am.connection = Connection.for_address(ip)
        # Candidates once per transport: in the first bundled section or in each unbundled one.
        _add_transport(am, webrtc_local, _answer_setup(offered.setup, webrtc_local.setup),
                       None if in_bundle and written_bundle else candidates)
        written_bundle = written_bundle or in_bundle
        if offered.mid is not None:
            am.add("mid", offered.mid)
        offered_ext = {e.uri: e for e in offered.extmaps}
        for uri in webrtc_local.extmaps:
            if uri in offered_ext:
                # RFC 8285 §7: the answer keeps the offerer's ID.
                am.add("extmap", dataclasses.replace(offered_ext[uri], direction=None))
        mid_ext = offered_ext.get(MID_EXTENSION) if MID_EXTENSION in webrtc_local.extmaps else None
        am.direction = _answer_direction(offered.direction, _effective_direction(lm))
        _announce_msid(am, webrtc_local.ssrcs.get(offered.kind))
        am.set_flag("rtcp-mux", True)  # RFC 8829 §5.3.1: browsers require it
        if offered.rtcp_rsize and webrtc_local.rtcp_rsize:
            am.set_flag("rtcp-rsize", True)
        # Feedback is for video (the media plane relays PLI/FIR/NACK/REMB of video streams only).
        _add_codecs(am, pairs, rtcp_fb=webrtc_local.rtcp_fb if offered.kind == "video" else ())
        am.attributes += _carry(lm.attributes, TO_WEBRTC, Rule.DROP, ssrc=False)
        _announce_ssrc(am, webrtc_local.ssrcs.get(offered.kind))
        maps.append(dataclasses.replace(
            mm, to_legacy=to_legacy, to_webrtc={v: k for k, v in to_legacy.items()}, transcode=transcode,
            legacy_ssrcs=lm.ssrc_ids, webrtc_dtmf_pt=_dtmf(pairs),
            legacy_dtmf_pt=_dtmf((to_legacy[pt], c) for pt, c in pairs if pt in to_legacy),
            legacy_peer=LegacyPeer.of(lm, rtcp_mux=lm.rtcp_mux), mid_extmap=mid_ext.id if mid_ext else None,
        ))
    maps += [m for m in mapping.media if m.webrtc_index is None]
    if all(m.rejected for m in maps):
        raise NoCommonCodec("the legacy answer shares no codec with the browser's offer")
    accepted = {m.mid for m in maps if not m.rejected}
    for group in original_offer.bundle_groups[:1]:
        # RFC 8843 §7.3.3: rejected sections leave the group; the order is the offer's.
        mids = [mid for mid in group if mid in accepted]
        if mids:
            answer.attributes.insert(0, Attribute("group", " ".join(("BUNDLE", *mids))))
    origin, body = _stamp(answer, mapping.webrtc_origin, mapping.webrtc_body, webrtc_local.session_id, "127.0.0.1")
    return answer, dataclasses.replace(mapping, media=tuple(maps), webrtc_origin=origin, webrtc_body=body)


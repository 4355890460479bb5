"""Legacy calls browser: the legacy offer to the browser and its answer back (RFC 3264 §5, §6, §8; RFC 8829 §5.2).

::

    legacy offer   --legacy_offer_to_webrtc-->  browser offer
    browser answer --webrtc_answer_to_legacy--> legacy answer

The browser is offered every accepted section bundled with rtcp-mux (RFC 8829 §5.2, RFC 8843
§7.2); the legacy answer keeps the offer's sections, payload types and profile (RFC 3264 §6.1).
"""

from __future__ import annotations

import dataclasses

from .bundle import _announce_msid, _announce_ssrc, _mid_extmap, _offered_extmaps
from .codecs import _add_codecs, _answer_codecs, _dtmf, _is_aux, _offer_codecs
from .fields import Connection, SdpError
from .mapping import (
    MEDIA_KINDS,
    WEBRTC_PROTO,
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
from .media_transport import _add_legacy_rtcp, _add_transport, _answer_crypto, _default_address, _remote_ice
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


def legacy_offer_to_webrtc(
    offer: SessionDescription,
    webrtc_local: WebRtcEndpoint,
    policy: BreakerPolicy,
    previous: Mapping | None = None,
) -> tuple[SessionDescription, Mapping]:
    """Turn a legacy RTP/AVP offer into a browser-acceptable SAVPF offer (RFC 8829 §5.2).

    Every accepted section is bundled (``a=group:BUNDLE``, mids ``0``, ``1``... or the previous ones)
    and carries rtcp-mux, the gateway's ICE credentials and candidates (``a=ice-lite`` when
    :attr:`WebRtcEndpoint.ice_lite`), its fingerprint and ``a=setup:actpass``. Chromium answers
    ``active``, so the browser starts DTLS and the gateway, as DTLS server, only ever replies: nothing
    of ours can reach the browser before it knows our fingerprint (the race of TESTING.md cannot
    happen). Should a browser answer ``passive``, the media plane sends the ClientHello once ICE is
    connected and retransmits it (RFC 6347 §4.2.4). Legacy-only attributes (a=crypto, vendor ones) are
    dropped per :data:`TO_WEBRTC`; RFC 2543 hold (c=0.0.0.0) becomes a direction attribute.
    """
    prev = previous
    n_webrtc = _count(prev.media, "webrtc") if prev else 0
    used_mids = {m.mid for m in prev.media if m.mid is not None} if prev else set()
    sections: dict[int, Media] = {}
    maps: list[MediaMap] = []
    for li, lm in enumerate(offer.media):
        old = _old_for(prev, None, li, "legacy")
        base = dataclasses.replace(
            old or MediaMap(lm.kind, None, li), kind=lm.kind, legacy_index=li, legacy_ssrcs=lm.ssrc_ids,
            legacy_proto=lm.proto, legacy_format=lm.formats[0] if lm.formats else "0", rejected=False,
        )
        usable = not lm.rejected and lm.is_rtp and lm.kind in MEDIA_KINDS
        preferred = old.to_webrtc if old and not old.transcode else {}
        pairs, to_webrtc, transcode = _offer_codecs(lm, policy.codecs, preferred) if usable else ([], {}, False)
        if not pairs:
            maps.append(dataclasses.replace(base, rejected=True))
            continue
        wi = base.webrtc_index
        if wi is None:
            wi, n_webrtc = n_webrtc, n_webrtc + 1
        mid = base.mid
        if mid is None:
            mid = next(str(n) for n in range(len(used_mids) + 1) if str(n) not in used_mids)
            used_mids.add(mid)
        wm = Media(lm.kind, 0, WEBRTC_PROTO, [])
        wm.add("mid", mid)
        for ext in _offered_extmaps(webrtc_local, prev):
            wm.add("extmap", ext)
        wm.direction = _effective_direction(lm)
        _announce_msid(wm, webrtc_local.ssrcs.get(lm.kind))
        wm.set_flag("rtcp-mux", True)  # RFC 8829 §5.2.1
        if webrtc_local.rtcp_rsize:
            wm.set_flag("rtcp-rsize", True)
        # Feedback the gateway itself implements, on the real codecs only (RFC 4585 §4.2).
        _add_codecs(wm, [(pt, dataclasses.replace(c, rtcp_fb=() if _is_aux(c) or lm.kind != "video"
                                                   else webrtc_local.rtcp_fb))
                         for pt, c in pairs], rtcp_fb=None)
        wm.attributes += _carry(lm.attributes, TO_WEBRTC, Rule.DROP, ssrc=False)
        _announce_ssrc(wm, webrtc_local.ssrcs.get(lm.kind))
        sections[wi] = wm
        maps.append(dataclasses.replace(
            base, webrtc_index=wi, mid=mid, to_webrtc=to_webrtc, to_legacy={v: k for k, v in to_webrtc.items()},
            transcode=transcode, webrtc_format=str(pairs[0][0]),
            legacy_peer=LegacyPeer.of(lm, rtcp_mux=False),  # rtcp-mux only once we answer it
        ))
    if not sections:
        raise NoCommonCodec("no codec of the legacy offer is allowed toward the browser")
    # Browser sections without a legacy counterpart now (a data channel the browser once offered):
    # kept in place, rejected (RFC 3264 §8.2).
    placed = {m.webrtc_index for m in maps}
    maps += [dataclasses.replace(m, rejected=True) for m in (prev.media if prev else ())
             if m.webrtc_index is not None and m.webrtc_index not in placed]
    sdp = _new_sdp(None)
    if webrtc_local.ice_lite:
        sdp.add("ice-lite")
    bundle = tuple(sections[i].mid or "" for i in sorted(sections))
    sdp.add("group", " ".join(("BUNDLE", *bundle)))
    ip, port = _default_address(webrtc_local.candidates)
    first = True
    for wi in range(n_webrtc):
        wm_or_none = sections.get(wi)
        if wm_or_none is None:
            mm = next((m for m in maps if m.webrtc_index == wi), None)
            sdp.add_media(_rejected(mm.kind if mm else "audio", mm.webrtc_proto if mm else WEBRTC_PROTO,
                                    mm.webrtc_format if mm else "0", mm.mid if mm else None))
            continue
        wm = wm_or_none
        wm.port = port
        wm.connection = Connection.for_address(ip)
        # Transport first, as browsers write it; candidates once, in the tagged section (RFC 8843 §7.2).
        tail, wm.attributes = wm.attributes, []
        _add_transport(wm, webrtc_local, webrtc_local.setup or "actpass", webrtc_local.candidates if first else None)
        wm.attributes += tail
        first = False
        sdp.add_media(wm)
    origin, body = _stamp(sdp, prev.webrtc_origin if prev else None, prev.webrtc_body if prev else None,
                          webrtc_local.session_id, "127.0.0.1")
    maps.sort(key=lambda m: (m.legacy_index is None, m.legacy_index or 0, m.webrtc_index or 0))
    mapping = dataclasses.replace(
        prev or Mapping(), media=tuple(maps), bundle=bundle, webrtc_origin=origin, webrtc_body=body,
        transcoding=policy.codecs.transcoding, forward_ssrc=policy.forward_ssrc,
    )
    return sdp, mapping


def webrtc_answer_to_legacy(
    answer: SessionDescription,
    original_offer: SessionDescription,
    legacy_local: LegacyEndpoint,
    mapping: Mapping,
) -> tuple[SessionDescription, Mapping]:
    """Build the legacy answer from the browser's answer (RFC 3264 §6).

    ``original_offer`` is the legacy offer: the answer has its m= sections in its order, its
    payload-type numbers and profile (RFC 3264 §6.1); a=crypto answered with the offered tag when
    the gateway has a key of an offered suite (RFC 4568 §6.1), RTP/SAVP without one refused with
    port 0 (RFC 4568 §7.1.2); rtcp-mux if offered and ``legacy_local.rtcp_mux`` (RFC 5761 §5.1.1).
    The browser's transport lands in :attr:`Mapping.webrtc_peer`.
    """
    _check_answer_shape(answer, _count(mapping.media, "webrtc"), "browser")
    legacy = _new_sdp(legacy_local.address)
    maps: list[MediaMap] = []
    peer: RemoteIce | None = None
    for li, offered in enumerate(original_offer.media):
        mm = mapping.by_legacy_index(li) or MediaMap(offered.kind, None, li, rejected=True)
        wm = _answer_section(answer, mm.webrtc_index)
        result = None
        if wm is not None and not mm.rejected and not wm.rejected:
            ice = _remote_ice(answer, wm, mm.webrtc_index or 0)
            if ice.setup not in ("active", "passive"):
                raise SdpError(f"browser answered a=setup:{ice.setup} (RFC 8842 §5.3 wants active or passive)")
            peer = peer or ice
            offer_codecs = offered.codecs if mm.transcode else [c for c in offered.codecs if c.pt in mm.to_webrtc]
            result = _answer_codecs(wm.codecs, offer_codecs, mapping.transcoding)
        crypto = _answer_crypto(offered, legacy_local)
        secure_only = offered.proto.endswith(("SAVP", "SAVPF"))
        if result is None or wm is None or (secure_only and crypto is None):
            legacy.add_media(_rejected(offered.kind, offered.proto, mm.legacy_format, None))
            maps.append(dataclasses.replace(mm, rejected=True))
            continue
        pairs, to_webrtc, transcode = result
        lm = legacy.add_media(Media(offered.kind, legacy_local.ports[offered.kind], offered.proto, []))
        lm.attributes = _carry(wm.attributes, TO_LEGACY, Rule.KEEP, mapping.forward_ssrc)
        _add_codecs(lm, pairs, rtcp_fb=None if offered.is_avpf else ())
        lm.direction = _answer_direction(_effective_direction(offered), wm.direction)
        mux = offered.rtcp_mux and legacy_local.rtcp_mux
        _add_legacy_rtcp(lm, legacy_local, offer_mux=mux)
        if crypto is not None:
            lm.add("crypto", crypto)
        if offered.ptime is not None and not lm.has("ptime"):
            # The browser receives what the legacy peer sends as it is: ask for the same packets.
            lm.add("ptime", offered.ptime)
        maps.append(dataclasses.replace(
            mm, to_webrtc=to_webrtc, to_legacy={v: k for k, v in to_webrtc.items()}, transcode=transcode,
            webrtc_ssrcs=wm.ssrc_ids, legacy_dtmf_pt=_dtmf(pairs),
            webrtc_dtmf_pt=_dtmf((to_webrtc[pt], c) for pt, c in pairs if pt in to_webrtc),
            mid_extmap=_mid_extmap(wm),
            legacy_peer=LegacyPeer.of(offered, rtcp_mux=mux, crypto_tag=crypto.tag if crypto else None),
        ))
    maps += [m for m in mapping.media if m.legacy_index is None]
    if all(m.rejected for m in maps):
        raise NoCommonCodec("the browser's answer shares no codec with the legacy offer")
    origin, body = _stamp(legacy, mapping.legacy_origin, mapping.legacy_body, legacy_local.session_id,
                          legacy_local.address)
    return legacy, dataclasses.replace(mapping, media=tuple(maps), legacy_origin=origin, legacy_body=body,
                                       webrtc_peer=peer or mapping.webrtc_peer)


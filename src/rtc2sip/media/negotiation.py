"""From the negotiated SDP to what the relay and the coder need: one config per relayed stream.

Implements RFC 3264 §5-§6 as read back (which m= sections are relayed, each leg's payload types),
RFC 3551 §4.1 (the relayed codec's RTP clock), RFC 4733 §2.1 and RFC 3389 (telephone-event and CN
at the codec's clock), RFC 8843 §9.2 (each stream's mid, the browser's a=ssrc and the MID header
extension's ID, for BUNDLE demultiplexing), and for a transcoded stream (:class:`TranscodePlan`)
RFC 7587 §6.1 (Opus maxplaybackrate), RFC 6184 §8.1 (H.264 packetization-mode) and RFC 4566 §6
(a=ptime). The SDP translation itself is :mod:`rtc2sip.sdp.translate`; this module only reads its
:class:`~rtc2sip.sdp.translate.Mapping` and the SDPs of both legs.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sdp import Mapping, MediaMap, NoCommonCodec, transcodable
from ..sdp.model import Media, SessionDescription
from .path import StreamConfig
from .tap import CodecInfo, LegCodecs

__all__ = [
    "AUXILIARY", "MEDIA_KINDS", "TranscodePlan", "clock_rate_of", "leg_codecs", "relayed_kinds", "stream_configs",
]

MEDIA_KINDS = ("audio", "video")
AUXILIARY = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec-03"})


def relayed_kinds(sdp: SessionDescription) -> list[str]:
    """The kinds of the SDP's RTP sections the plane relays, once each, in the SDP's order."""
    kinds: list[str] = []
    for m in sdp.media:
        if not m.rejected and m.is_rtp and m.kind in MEDIA_KINDS and m.kind not in kinds:
            kinds.append(m.kind)
    return kinds


def leg_codecs(mapping: Mapping, legacy_sdp: SessionDescription, webrtc_sdp: SessionDescription) -> LegCodecs:
    """Per kind and leg, the payload types that leg may send us (what is relayed or transcoded), the
    main codec first: what a tap needs to decode or describe the packets it sees."""
    out: LegCodecs = {}
    for mm in mapping.active:
        if mm.webrtc_index is None or mm.legacy_index is None or mm.kind in out:
            continue
        legs: dict[str, dict[int, CodecInfo]] = {}
        for leg, sdp, index, pts in (("webrtc", webrtc_sdp, mm.webrtc_index, mm.to_legacy),
                                     ("legacy", legacy_sdp, mm.legacy_index, mm.to_webrtc)):
            media = sdp.media[index] if index < len(sdp.media) else None
            codecs = [c for c in media.codecs if not pts or c.pt in pts] if media is not None else []
            codecs.sort(key=lambda c: c.name.lower() in AUXILIARY)  # stable: the SDP's order otherwise
            legs[leg] = {c.pt: CodecInfo(c.name, c.clock_rate, c.channels, c.fmtp or "") for c in codecs}
        out[mm.kind] = legs
    return out


def stream_configs(mapping: Mapping, legacy_sdp: SessionDescription,
                   webrtc_sdp: SessionDescription | None = None) -> list[StreamConfig]:
    """One config per relayed stream; ``legacy_sdp`` is whichever SDP numbers the legacy leg's
    payload types (its answer, or its offer), for the codec's clock rate, ``webrtc_sdp`` the same
    for the browser leg (needed for transcoded streams only)."""
    configs: list[StreamConfig] = []
    seen: set[str] = set()
    for mm in mapping.active:
        if mm.webrtc_index is None or mm.legacy_index is None or mm.kind in seen:
            continue
        seen.add(mm.kind)
        if mm.transcode and webrtc_sdp is not None:
            plan = TranscodePlan.of(mm, legacy_sdp.media[mm.legacy_index], webrtc_sdp.media[mm.webrtc_index])
            to_legacy = plan.pt_map()
            configs.append(StreamConfig(mm.kind, to_legacy, {v: k for k, v in to_legacy.items()},
                                        plan.legacy_clock, mm.legacy_peer, plan.legacy_dtmf, plan.webrtc_clock,
                                        mm.mid, mm.webrtc_ssrcs, mm.mid_extmap))
            continue
        media = legacy_sdp.media[mm.legacy_index] if mm.legacy_index < len(legacy_sdp.media) else None
        clock_rate = clock_rate_of(media, mm)
        dtmf = mm.legacy_dtmf_pt
        codec = media.codec(dtmf) if media is not None and dtmf is not None else None
        if codec is None or codec.clock_rate != clock_rate:
            dtmf = None  # events are timed on the stream's clock: only at the codec's rate
        configs.append(StreamConfig(mm.kind, dict(mm.to_legacy), dict(mm.to_webrtc), clock_rate,
                                    mm.legacy_peer, dtmf, None, mm.mid, mm.webrtc_ssrcs, mm.mid_extmap))
    return configs


@dataclass(frozen=True, slots=True)
class TranscodePlan:
    """What a transcoded stream's coder needs, read from both legs' SDP: codecs (coder names), payload
    types of the codec, CN (RFC 3389) and telephone-event (RFC 4733) at the codec's clock, ptimes."""

    webrtc_codec: str
    webrtc_pt: int
    webrtc_clock: int
    webrtc_cn: int | None
    webrtc_dtmf: int | None
    webrtc_ptime: int
    webrtc_maxrate: int
    legacy_codec: str
    legacy_pt: int
    legacy_clock: int
    legacy_cn: int | None
    legacy_dtmf: int | None
    legacy_ptime: int
    kind: str = "audio"
    # RFC 6184 §8.1 packetization-mode of each leg's H.264 (0: single NAL unit, 1: non-interleaved)
    webrtc_h264_mode: int = 1
    legacy_h264_mode: int = 1

    @classmethod
    def of(cls, mm: MediaMap, legacy: Media, webrtc: Media) -> TranscodePlan:
        if len(mm.to_legacy) != 1:
            raise NoCommonCodec(f"transcoded {mm.kind} needs one codec per leg, not {dict(mm.to_legacy)}")
        ((wpt, lpt),) = mm.to_legacy.items()
        wc, lc = webrtc.codec(wpt), legacy.codec(lpt)
        wname = transcodable(wc) if wc is not None else None
        lname = transcodable(lc) if lc is not None else None
        if wc is None or lc is None or wname is None or lname is None:
            raise NoCommonCodec(f"the media coder cannot transcode {wc} to {lc}")
        if mm.kind == "video":
            return cls(wname, wpt, wc.clock_rate, None, None, 0, 0, lname, lpt, lc.clock_rate, None, None, 0,
                       kind="video", webrtc_h264_mode=_h264_mode(wc.params),
                       legacy_h264_mode=_h264_mode(lc.params))
        maxrate = 48000
        if wname == "opus":  # RFC 7587 §6.1: the browser's maxplaybackrate caps what we encode
            fmtp = wc.params.get("maxplaybackrate", "")
            maxrate = int(fmtp) if fmtp.isdigit() and int(fmtp) >= 8000 else 48000
        return cls(wname, wpt, wc.clock_rate, _aux(webrtc, "cn", wc.clock_rate),
                   _aux(webrtc, "telephone-event", wc.clock_rate), 20, maxrate,
                   lname, lpt, lc.clock_rate, _aux(legacy, "cn", lc.clock_rate),
                   _aux(legacy, "telephone-event", lc.clock_rate), _ptime(legacy.ptime, lname))

    @property
    def description(self) -> str:
        if self.kind == "video":
            return f"{self.webrtc_codec}/{self.webrtc_pt} <-> {self.legacy_codec}/{self.legacy_pt}"
        return (f"{self.webrtc_codec}/{self.webrtc_pt} ({self.webrtc_ptime} ms) <-> "
                f"{self.legacy_codec}/{self.legacy_pt} ({self.legacy_ptime} ms)")

    def pt_map(self) -> dict[int, int]:
        """Browser PT -> legacy PT for codec, CN and events (what routes packets to the stream)."""
        out = {self.webrtc_pt: self.legacy_pt}
        for w, lg in ((self.webrtc_cn, self.legacy_cn), (self.webrtc_dtmf, self.legacy_dtmf)):
            if w is not None and lg is not None:
                out[w] = lg
        return out

    @property
    def from_webrtc(self) -> frozenset[int]:
        return frozenset(pt for pt in (self.webrtc_pt, self.webrtc_cn, self.webrtc_dtmf) if pt is not None)

    @property
    def from_legacy(self) -> frozenset[int]:
        return frozenset(pt for pt in (self.legacy_pt, self.legacy_cn, self.legacy_dtmf) if pt is not None)


def _h264_mode(params: dict[str, str]) -> int:
    """RFC 6184 §8.1: packetization-mode, 0 when absent; the coder does 0 and 1 (not 2)."""
    mode = params.get("packetization-mode", "0")
    return 1 if mode == "1" else 0


def _aux(media: Media, name: str, clock_rate: int) -> int | None:
    return next((c.pt for c in media.codecs if c.name.lower() == name and c.clock_rate == clock_rate), None)


def _ptime(ptime: int | None, codec: str) -> int:
    """The legacy peer's a=ptime (RFC 4566 §6) within what the coder packetizes (10-60 ms)."""
    if ptime is None or ptime <= 0:
        return 20
    if codec == "opus":
        return min((10, 20, 40, 60), key=lambda p: abs(p - ptime))
    return max(10, min(60, ptime))


def clock_rate_of(media: Media | None, mm: MediaMap) -> int:
    """The relayed codec's RTP clock (RFC 3551 §4.1): the first non-auxiliary mapped payload type."""
    if media is not None:
        for pt in media.payload_types:
            codec = media.codec(pt)
            if pt in mm.to_webrtc and codec is not None and codec.name.lower() not in AUXILIARY:
                return codec.clock_rate
    return 90000 if mm.kind == "video" else 8000

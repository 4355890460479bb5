"""Codec policy and payload-type mapping of the breaker's translation (RFC 3264 §6.1, §8.3.2; RFC 3551), sans I/O.

Which codecs of one leg the other leg may see (webrtc2sip's ``codecs`` list, :class:`CodecPolicy`),
when two payload types are the same codec (RFC 3264 §6.1; fmtp parameters of RFC 6184 §8.2.2 and
RFC 4867 §8.3), the payload-type numbers written on the other leg (RFC 3264 §8.3.2, RFC 3551 §3,
RFC 5761 §4), telephone-event and CN at their codec's clock rate (RFC 4733 §7.1.1, RFC 3389 §5),
and what the Media Coder may bridge when the legs share no codec.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from collections.abc import Mapping as MappingT
from dataclasses import dataclass
from typing import Protocol

from .attributes import Codec
from .fields import SdpError
from .model import Media

__all__ = [
    "AUXILIARY",
    "CODEC_SPECS",
    "TRANSCODABLE",
    "Aux",
    "CodecPolicy",
    "CodecSettings",
    "CodecSpec",
    "codec_key",
    "transcodable",
]

@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How a webrtc2sip codec name (``codecs`` config key) appears in SDP."""

    kind: str
    encoding: str
    clock_rate: int
    channels: int = 1
    static_pt: int | None = None
    fmtp: str | None = None  # what the gateway writes when it adds this codec itself
    # fmtp parameters a codec must carry to be this one: H.264 profiles, AMR octet alignment
    params: tuple[tuple[str, str], ...] = ()


def _h264(profile: str, fmtp: str) -> CodecSpec:
    return CodecSpec("video", "H264", 90000, fmtp=fmtp, params=(("profile", profile),))


# webrtc2sip's MPEngine codec table (config.CODECS, same keys: a unit test holds them equal) as SDP
# encodings (RFC 3551 §6, RFC 7587 §7, RFC 6184 §8.1: h264-bp = profile_idc 0x42, h264-mp = 0x4d).
CODEC_SPECS: dict[str, CodecSpec] = {
    "pcma": CodecSpec("audio", "PCMA", 8000, static_pt=8),
    "pcmu": CodecSpec("audio", "PCMU", 8000, static_pt=0),
    "opus": CodecSpec("audio", "opus", 48000, 2, fmtp="minptime=10;useinbandfec=1"),
    "amr-nb-be": CodecSpec("audio", "AMR", 8000, fmtp="octet-align=0", params=(("octet-align", "0"),)),
    "amr-nb-oa": CodecSpec("audio", "AMR", 8000, fmtp="octet-align=1", params=(("octet-align", "1"),)),
    "speex-nb": CodecSpec("audio", "speex", 8000),
    "speex-wb": CodecSpec("audio", "speex", 16000),
    "speex-uwb": CodecSpec("audio", "speex", 32000),
    "g729": CodecSpec("audio", "G729", 8000, static_pt=18, fmtp="annexb=no"),
    "gsm": CodecSpec("audio", "GSM", 8000, static_pt=3),
    "g722": CodecSpec("audio", "G722", 8000, static_pt=9),
    "ilbc": CodecSpec("audio", "iLBC", 8000, fmtp="mode=30"),
    "h264-bp": _h264("42", "profile-level-id=42e01f;packetization-mode=1"),
    "h264-mp": _h264("4d", "profile-level-id=4d001f;packetization-mode=1"),
    "vp8": CodecSpec("video", "VP8", 90000),
    "h263": CodecSpec("video", "H263", 90000, static_pt=34),
    "h263+": CodecSpec("video", "H263-1998", 90000),
    "theora": CodecSpec("video", "theora", 90000),
    "mp4v-es": CodecSpec("video", "MP4V-ES", 90000),
}


class Aux(enum.Enum):
    """Payload formats that are not codecs of their own."""

    KEEP = "kept on both legs when its clock rate matches a kept codec's"
    WEBRTC_ONLY = "never offered to the legacy leg"


# Formats outside the ``codecs`` list. telephone-event (RFC 4733 §7.1.1) and CN (RFC 3389 §5) are
# tied to a codec by clock rate; red (RFC 2198), rtx (RFC 4588) and the FEC formats protect a
# codec on the browser leg only: rtx needs NACK, i.e. AVPF, which plain RTP/AVP lacks.
AUXILIARY: dict[str, Aux] = {
    "telephone-event": Aux.KEEP,
    "cn": Aux.KEEP,
    "red": Aux.WEBRTC_ONLY,
    "rtx": Aux.WEBRTC_ONLY,
    "ulpfec": Aux.WEBRTC_ONLY,
    "flexfec-03": Aux.WEBRTC_ONLY,
}


def _h264_profile(params: MappingT[str, str]) -> str:
    """profile_idc in hex, plus ``cb`` for constrained baseline (RFC 6184 §8.1, table 5)."""
    pli = params.get("profile-level-id", "42000a").lower()  # RFC 6184 §8.1 default: baseline 1.0
    if len(pli) != 6:
        return pli
    profile, iop = pli[:2], int(pli[2:4], 16) if all(c in "0123456789abcdef" for c in pli[2:4]) else 0
    return profile + ("cb" if profile == "42" and iop & 0x40 else "")


def codec_key(codec: Codec) -> tuple[str, int, int, tuple[tuple[str, str], ...]]:
    """What makes two payload types the same codec (RFC 3264 §6.1: name, rate, channels, and the
    fmtp parameters that change the bitstream: H.264 profile and packetization-mode, RFC 6184 §8.2.2;
    AMR octet-align, RFC 4867 §8.3)."""
    name = codec.name.lower()
    params = codec.params
    extra: tuple[tuple[str, str], ...] = ()
    if name == "h264":
        extra = (("profile", _h264_profile(params)), ("packetization-mode", params.get("packetization-mode", "0")))
    elif name == "amr":
        extra = (("octet-align", params.get("octet-align", "0")),)
    return name, codec.clock_rate, codec.channels, extra


def _spec_matches(spec: CodecSpec, codec: Codec) -> bool:
    if spec.encoding.lower() != codec.name.lower() or spec.clock_rate != codec.clock_rate:
        return False
    if codec.name.lower() == "h264":
        return _h264_profile(codec.params).startswith(dict(spec.params)["profile"])
    params = codec.params
    return all(params.get(k, "0") == v for k, v in spec.params)


class CodecSettings(Protocol):
    """The gateway settings :meth:`CodecPolicy.from_settings` reads (config.xml ``codecs`` and
    ``enable-media-coder``; the gateway's own settings object satisfies it as it is)."""

    @property
    def codecs(self) -> tuple[str, ...]: ...

    @property
    def enable_media_coder(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CodecPolicy:
    """The webrtc2sip ``codecs`` list plus whether a transcoder (``enable-media-coder``) may bridge.

    ``codecs`` defaults to every codec of :data:`CODEC_SPECS`; the gateway's default list is its
    settings' (``from_settings``), stated once, in the configuration.
    """

    codecs: tuple[str, ...] = tuple(CODEC_SPECS)
    transcoding: bool = False

    def __post_init__(self) -> None:
        unknown = [c for c in self.codecs if c not in CODEC_SPECS]
        if unknown:
            raise ValueError(f"unknown codecs {unknown} (known: {', '.join(CODEC_SPECS)})")

    @classmethod
    def from_settings(cls, settings: CodecSettings) -> CodecPolicy:
        return cls(settings.codecs, settings.enable_media_coder)

    def name_of(self, codec: Codec) -> str | None:
        """The webrtc2sip name of ``codec`` if the policy allows it."""
        return next((n for n in self.codecs if _spec_matches(CODEC_SPECS[n], codec)), None)

    def allows(self, codec: Codec) -> bool:
        return self.name_of(codec) is not None

    def specs(self, kind: str) -> list[CodecSpec]:
        return [CODEC_SPECS[n] for n in self.codecs if CODEC_SPECS[n].kind == kind]


# --------------------------------------------------------------------------------------------------
# Selection and numbering


def _is_aux(codec: Codec) -> Aux | None:
    return AUXILIARY.get(codec.name.lower())


def _select_codecs(media: Media, policy: CodecPolicy) -> list[Codec]:
    """The codecs the other leg may see, in preference order: allowed ones plus telephone-event and
    CN at one of their clock rates (RFC 4733 §7.1.1: the event clock follows the audio codec)."""
    main = [c for c in media.codecs if _is_aux(c) is None and policy.allows(c)]
    rates = {c.clock_rate for c in main}
    return [c for c in media.codecs if c in main or (_is_aux(c) is Aux.KEEP and c.clock_rate in rates)]


# RFC 3551 §3 dynamic range first, then 35-63 as browsers do when it runs out (RFC 5761 §4 keeps
# 64-95 free so that RTP and RTCP can be told apart on a muxed port).
_DYNAMIC_PTS: tuple[int, ...] = (*range(96, 128), *range(35, 64))


def _pt_for(pt: int, preferred: MappingT[int, int], used: set[int]) -> int:
    """A payload type number for ``pt`` on the other leg: the one used before if any (RFC 3264
    §8.3.2: a dynamic PT keeps its codec for the session), else the same, else a free dynamic one."""
    want: int = preferred.get(pt, pt)
    if want not in used:
        return want
    free = next((n for n in _DYNAMIC_PTS if n not in used), None)
    if free is not None:
        return free
    raise SdpError("no payload type number left")


def _add_codecs(media: Media, codecs: Iterable[tuple[int, Codec]], rtcp_fb: Iterable[str] | None) -> None:
    """Add ``(pt, codec)`` pairs; ``rtcp_fb`` None keeps the codec's own feedback lines, else
    keeps only those the gateway implements (RFC 4585 §4.2)."""
    allowed = None if rtcp_fb is None else set(rtcp_fb)
    for pt, codec in codecs:
        fb = codec.rtcp_fb if allowed is None else tuple(f for f in codec.rtcp_fb if f in allowed)
        media.add_codec(dataclasses.replace(codec, pt=pt, rtcp_fb=fb))


def _spec_codec(spec: CodecSpec, pt: int) -> Codec:
    return Codec(pt, spec.encoding, spec.clock_rate, spec.channels, spec.fmtp)


# --------------------------------------------------------------------------------------------------
# Transcoding


# What the Media Coder (rtc2sip.coder) can transcode, as CODEC_SPECS names. H.264: constrained
# baseline only (what its encoder makes and every H.264 decoder takes, RFC 6184 §8.1).
TRANSCODABLE: frozenset[str] = frozenset({"opus", "pcmu", "pcma", "g722", "vp8", "h264-bp"})


def transcodable(codec: Codec) -> str | None:
    """The :data:`TRANSCODABLE` name of ``codec``, None when the coder cannot handle it."""
    return next((n for n in TRANSCODABLE if _spec_matches(CODEC_SPECS[n], codec)), None)


def _transcoder_codecs(kind: str, policy: CodecPolicy, have: Sequence[Codec], used: set[int]) -> list[Codec]:
    """Codecs a transcoder could produce that are not offered already, with fresh payload types, in
    the order of the ``codecs`` list; only when ``have`` holds a codec the transcoder can decode."""
    if not any(transcodable(c) for c in have):
        return []
    keys = {codec_key(c) for c in have}
    out: list[Codec] = []
    for name in policy.codecs:
        spec = CODEC_SPECS[name]
        if spec.kind != kind or name not in TRANSCODABLE:
            continue
        probe = _spec_codec(spec, 0)
        if codec_key(probe) in keys:
            continue
        pt = spec.static_pt if spec.static_pt is not None and spec.static_pt not in used else _pt_for(96, {}, used)
        used.add(pt)
        out.append(dataclasses.replace(probe, pt=pt))
        keys.add(codec_key(probe))
        if name == "h264-bp":
            # RFC 6184 §6.2: some phones only do single NAL unit mode; the coder does both, 1 first
            single = dataclasses.replace(probe, fmtp=(probe.fmtp or "").replace("packetization-mode=1",
                                                                                 "packetization-mode=0"))
            if codec_key(single) not in keys:
                pt = _pt_for(96, {}, used)
                used.add(pt)
                out.append(dataclasses.replace(single, pt=pt))
                keys.add(codec_key(single))
    # RFC 4733 §7.1.1: events at each added codec's clock rate (the coder carries them across).
    events = {c.clock_rate for c in have if c.name.lower() == "telephone-event"}
    for rate in dict.fromkeys(c.clock_rate for c in out if kind == "audio"):
        if rate not in events:
            pt = _pt_for(101, {}, used)
            used.add(pt)
            out.append(Codec(pt, "telephone-event", rate, 1, "0-16"))
    return out


# --------------------------------------------------------------------------------------------------
# Offer and answer


def _match(codec: Codec, candidates: Iterable[Codec]) -> Codec | None:
    key = codec_key(codec)
    return next((c for c in candidates if codec_key(c) == key), None)


def _negotiate(answer: Sequence[Codec], offer: Sequence[Codec]) -> list[tuple[Codec, Codec]]:
    """(answer codec, offer codec) pairs in the answerer's order (RFC 3264 §6.1), the auxiliary
    formats only at the clock rate of a chosen codec."""
    pairs = [(a, o) for a in answer if _is_aux(a) is None and (o := _match(a, offer)) is not None]
    rates = {a.clock_rate for a, _ in pairs}
    aux = [(a, o) for a in answer if _is_aux(a) is Aux.KEEP and a.clock_rate in rates
           and (o := _match(a, offer)) is not None]
    return pairs + aux


def _dtmf(codecs: Iterable[tuple[int, Codec]]) -> int | None:
    return next((pt for pt, c in codecs if c.name.lower() == "telephone-event"), None)


def _offer_codecs(
    media: Media, policy: CodecPolicy, preferred: MappingT[int, int]
) -> tuple[list[tuple[int, Codec]], dict[int, int], bool]:
    """The codecs of ``media`` to offer on the other leg, as (payload type there, codec), the map
    from this leg's payload types, and whether only a transcoder can bridge. Empty when nothing fits."""
    codecs = _select_codecs(media, policy)
    # Numbers promised earlier are kept for their codecs before a newcomer may take one of them.
    reserved = {preferred[c.pt] for c in codecs if c.pt in preferred}
    used: set[int] = set()
    pairs: list[tuple[int, Codec]] = []
    for c in codecs:
        pt = _pt_for(c.pt, preferred, used) if c.pt in preferred else _pt_for(c.pt, {}, used | reserved)
        used.add(pt)
        pairs.append((pt, c))
    passthrough = any(_is_aux(c) is None for c in codecs)
    transcode = False
    if policy.transcoding:
        extra = _transcoder_codecs(media.kind, policy, codecs, used)
        pairs += [(c.pt, c) for c in extra]
        transcode = bool(extra) and not passthrough
    if not any(_is_aux(c) is None for _, c in pairs):
        return [], {}, False
    return pairs, {c.pt: pt for pt, c in pairs if c in codecs}, transcode


def _answer_codecs(
    answered: Sequence[Codec], offered: Sequence[Codec], transcoding: bool
) -> tuple[list[tuple[int, Codec]], dict[int, int], bool] | None:
    """Match the other leg's answer against what this leg offered (by :func:`codec_key`, so
    numbering does not matter). Returns this leg's (pt, codec) pairs, this leg's pt -> other leg's
    pt, and whether a transcoder must bridge; None when nothing fits."""
    chosen = _negotiate(answered, offered)
    if any(_is_aux(o) is None for _, o in chosen):
        return [(o.pt, o) for _, o in chosen], {o.pt: a.pt for a, o in chosen}, False
    theirs = next((c for c in answered if _is_aux(c) is None and transcodable(c)), None)
    mine = next((c for c in offered if _is_aux(c) is None and transcodable(c)), None)
    if not transcoding or theirs is None or mine is None:
        return None
    aux = [(c.pt, c) for c in offered if _is_aux(c) is Aux.KEEP and c.clock_rate == mine.clock_rate]
    return [(mine.pt, mine), *aux], {mine.pt: theirs.pt}, True


"""The RTCWeb Breaker's offer/answer translation (RFC 3264), sans I/O.

The breaker is a B2BUA: the browser leg speaks ICE + DTLS-SRTP + rtcp-mux + BUNDLE
(``UDP/TLS/RTP/SAVPF``), the legacy leg plain ``RTP/AVP`` (or SDES ``RTP/SAVP``). Each function
here takes parsed SDP, a description of what the gateway's media plane provides on the side being
written (:class:`WebRtcEndpoint`, :class:`LegacyEndpoint`) and returns the SDP to send plus a
:class:`Mapping`: which m= section of one leg is which of the other, and the payload-type maps
the relay applies to each packet.

Four moves cover both call directions, for initial offers and re-INVITEs alike::

    browser offer  --webrtc_offer_to_legacy-->  legacy offer
    legacy answer  --legacy_answer_to_webrtc--> browser answer
    legacy offer   --legacy_offer_to_webrtc-->  browser offer
    browser answer --webrtc_answer_to_legacy--> legacy answer

Attribute handling is table-driven (:data:`TO_LEGACY`, :data:`TO_WEBRTC`): what is not in a table
is kept toward legacy equipment (vendor attributes are its habit) and dropped toward browsers
(they refuse what they do not expect).
"""

from __future__ import annotations

import dataclasses
import enum
import secrets
from collections.abc import Collection, Iterable, Sequence
from collections.abc import Mapping as MappingT
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from .model import (
    Attribute,
    Candidate,
    Codec,
    Connection,
    Crypto,
    Extmap,
    Fingerprint,
    Media,
    Msid,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    address_type,
)

__all__ = [
    "AUXILIARY",
    "CODEC_SPECS",
    "MID_EXTENSION",
    "REQUIRED_TOWARD_WEBRTC",
    "SETUP_ANSWER",
    "TO_LEGACY",
    "TO_WEBRTC",
    "TRANSCODABLE",
    "BreakerPolicy",
    "CodecPolicy",
    "CodecSpec",
    "LegacyEndpoint",
    "LegacyPeer",
    "Mapping",
    "MediaMap",
    "NoCommonCodec",
    "RemoteIce",
    "Rule",
    "SsrcAnnouncement",
    "WebRtcEndpoint",
    "codec_key",
    "legacy_answer_to_webrtc",
    "legacy_offer_to_webrtc",
    "missing_for_browser",
    "transcodable",
    "webrtc_answer_to_legacy",
    "webrtc_offer_to_legacy",
]

WEBRTC_PROTO = "UDP/TLS/RTP/SAVPF"  # RFC 8827 §6.5 / RFC 5764 §8: what browsers offer and accept
MEDIA_KINDS = ("audio", "video")  # what the relay carries; anything else (application...) is refused
# RFC 8843 §15.1: the m= section's mid in every RTP packet, how a BUNDLE receiver tells streams apart
# whose SSRCs it has not learnt yet (§9.2).
MID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:mid"


class NoCommonCodec(SdpError):
    """No codec both legs accept and no transcoder to bridge them: answer 488 with Warning 305."""

    warning: ClassVar[int] = 305  # RFC 3261 §20.43 "Incompatible media format"


# --------------------------------------------------------------------------------------------------
# Codecs


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


class BreakerSettings(CodecSettings, Protocol):
    """The gateway settings :meth:`BreakerPolicy.from_settings` reads: :class:`CodecSettings` plus
    config.xml ``srtp-mode`` and ``srtp-type``."""

    @property
    def srtp_mode(self) -> str: ...

    @property
    def srtp_type(self) -> Collection[str]: ...


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


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Per-gateway choices of the translation (config.xml keys in brackets).

    ``srtp``: SDES on the legacy leg (``srtp-mode`` when ``srtp-type`` has ``sdes``): ``none``
    offers RTP/AVP, ``optional`` RTP/AVP with a=crypto (RFC 4568 §7.1.1 best effort),
    ``mandatory`` RTP/SAVP. ``legacy_rtcp_mux`` offers rtcp-mux (RFC 5761 §5.1.1) to legacy
    peers; ``forward_ssrc`` copies a=ssrc/a=msid between legs, right only when the relay keeps
    the SSRCs unchanged.
    """

    codecs: CodecPolicy = CodecPolicy()
    srtp: str = "none"
    legacy_rtcp_mux: bool = False
    forward_ssrc: bool = False

    def __post_init__(self) -> None:
        if self.srtp not in ("none", "optional", "mandatory"):
            raise ValueError(f"srtp must be none, optional or mandatory, not {self.srtp!r}")

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerPolicy:
        srtp = settings.srtp_mode if "sdes" in settings.srtp_type else "none"
        return cls(CodecPolicy.from_settings(settings), srtp)


# --------------------------------------------------------------------------------------------------
# What the gateway provides on each leg


def _session_id() -> str:
    return str(secrets.randbits(62))  # RFC 8866 §5.2: an NTP-format timestamp or random number


@dataclass(frozen=True, slots=True)
class SsrcAnnouncement:
    """An SSRC the media plane really sends on the browser leg (RFC 5576 §4.1, RFC 8830 §2).

    Announce only what is true: Chromium plays silence for packets under an SSRC other than the
    announced one (see TESTING.md, transcoding traps).
    """

    ssrc: int
    cname: str
    stream: str | None = None
    track: str | None = None


@dataclass(frozen=True, slots=True)
class WebRtcEndpoint:
    """The gateway on the browser leg: one ICE/DTLS transport for every bundled m= section.

    ``setup`` None means "by the table" (:data:`SETUP_ANSWER`, actpass in offers).
    ``rtcp_fb`` and ``extmaps`` name only what the media plane implements; they are intersected
    with the browser's offer; ``rtcp_rsize`` answers (and offers) reduced-size RTCP.
    ``candidates_by_mid`` gives the transport of m= sections a browser did not bundle.
    """

    ice_ufrag: str
    ice_pwd: str
    fingerprints: tuple[Fingerprint, ...]
    candidates: tuple[Candidate, ...]
    setup: str | None = None
    ice_lite: bool = True
    session_id: str = field(default_factory=_session_id)
    ssrcs: MappingT[str, SsrcAnnouncement] = field(default_factory=dict)
    rtcp_fb: tuple[str, ...] = ()
    extmaps: tuple[str, ...] = ()
    rtcp_rsize: bool = True  # the media plane accepts non-compound RTCP (RFC 5506 §3)
    candidates_by_mid: MappingT[str, tuple[Candidate, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LegacyEndpoint:
    """The gateway on the legacy leg: its RTP address, one port per media kind, SDES keys.

    RTCP goes to port + 1 (RFC 3550 §11) unless rtcp-mux is negotiated.
    """

    address: str
    ports: MappingT[str, int]
    rtcp_mux: bool = False
    cryptos: MappingT[str, tuple[Crypto, ...]] = field(default_factory=dict)
    session_id: str = field(default_factory=_session_id)


# --------------------------------------------------------------------------------------------------
# The result: what the media plane needs to relay


@dataclass(frozen=True, slots=True)
class RemoteIce:
    """The browser's transport as its SDP describes it: what the media plane's ICE agent and DTLS
    endpoint need (RFC 8839 §5, RFC 8842 §5)."""

    ufrag: str
    pwd: str
    candidates: tuple[Candidate, ...]
    fingerprints: tuple[Fingerprint, ...]
    setup: str | None
    ice_lite: bool = False
    options: tuple[str, ...] = ()

    @classmethod
    def of(cls, media: Media) -> RemoteIce:
        session = media.session
        return cls(media.ice_ufrag or "", media.ice_pwd or "", tuple(media.candidates), tuple(media.fingerprints),
                   media.setup, bool(session and session.ice_lite), media.ice_options)


@dataclass(frozen=True, slots=True)
class LegacyPeer:
    """Where the legacy peer receives one stream: RTP and RTCP addresses (RFC 3605 §2.1; port + 1
    by default, RFC 3550 §11), rtcp-mux, and the peer's SDES key (RFC 4568 §6.1): the media plane
    uses its own key of the same suite the other way."""

    address: str
    port: int
    rtcp_address: str
    rtcp_port: int
    rtcp_mux: bool = False
    crypto: Crypto | None = None

    @classmethod
    def of(cls, media: Media, *, rtcp_mux: bool, crypto_tag: int | None = None) -> LegacyPeer:
        """From the peer's m= section; ``crypto_tag`` picks its a=crypto (an answer has one only)."""
        conn = media.connection
        address = conn.host if conn is not None else "0.0.0.0"
        rtcp = media.rtcp
        rtcp_address = rtcp.address.host if rtcp is not None and rtcp.address is not None else address
        rtcp_port = media.port if rtcp_mux else (rtcp.port if rtcp is not None else media.port + 1)
        crypto = next((c for c in media.cryptos if crypto_tag is None or c.tag == crypto_tag), None)
        return cls(address, media.port, rtcp_address, rtcp_port, rtcp_mux, crypto)


@dataclass(frozen=True, slots=True)
class MediaMap:
    """One media stream across the two legs.

    ``to_legacy`` maps browser payload types to legacy ones for packets going that way,
    ``to_webrtc`` the reverse; both are complete only after the answer. ``webrtc_index`` and
    ``legacy_index`` are m= line positions (None: that leg has no m= section for it);
    ``webrtc_ssrcs``/``legacy_ssrcs`` what each peer announced, for BUNDLE demultiplexing, as is
    ``mid_extmap``: the ID of the :data:`MID_EXTENSION` header extension both sides agreed on for the
    browser leg (RFC 8285 §7; None: not negotiated).
    """

    kind: str
    webrtc_index: int | None
    legacy_index: int | None
    mid: str | None = None
    to_legacy: MappingT[int, int] = field(default_factory=dict)
    to_webrtc: MappingT[int, int] = field(default_factory=dict)
    webrtc_ssrcs: tuple[int, ...] = ()
    legacy_ssrcs: tuple[int, ...] = ()
    webrtc_dtmf_pt: int | None = None
    legacy_dtmf_pt: int | None = None
    rejected: bool = False
    transcode: bool = False
    webrtc_proto: str = WEBRTC_PROTO
    webrtc_format: str = "0"  # the format a rejected browser m= line keeps (RFC 3264 §6)
    legacy_proto: str = "RTP/AVP"
    legacy_format: str = "0"
    legacy_peer: LegacyPeer | None = None
    mid_extmap: int | None = None


@dataclass(frozen=True, slots=True)
class Mapping:
    """Every media stream of a call plus the gateway's o= line and last body on each leg.

    Pass it back as ``previous`` with a re-INVITE: m= positions, mids and payload-type numbers stay
    (RFC 3264 §8: m= lines are never removed, a dynamic PT keeps its codec for the whole session)
    and the o= version grows only when the body changed (RFC 3264 §8, RFC 8866 §5.2).
    """

    media: tuple[MediaMap, ...] = ()
    bundle: tuple[str, ...] = ()
    webrtc_origin: Origin | None = None
    webrtc_body: str | None = field(default=None, repr=False)
    legacy_origin: Origin | None = None
    legacy_body: str | None = field(default=None, repr=False)
    transcoding: bool = False
    forward_ssrc: bool = False
    webrtc_peer: RemoteIce | None = None

    def by_mid(self, mid: str) -> MediaMap | None:
        return next((m for m in self.media if m.mid == mid), None)

    def by_webrtc_index(self, index: int) -> MediaMap | None:
        return next((m for m in self.media if m.webrtc_index == index), None)

    def by_legacy_index(self, index: int) -> MediaMap | None:
        return next((m for m in self.media if m.legacy_index == index), None)

    @property
    def active(self) -> tuple[MediaMap, ...]:
        return tuple(m for m in self.media if not m.rejected)


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

# (sends, receives) of each direction (RFC 3264 §6.1, RFC 8866 §6.7).
_FLAGS: dict[str, tuple[bool, bool]] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_DIRECTION_OF = {flags: name for name, flags in _FLAGS.items()}

# What the transport of an accepted browser m= section must have: attribute -> (RemoteIce field, RFC).
_REQUIRED_FROM_BROWSER: dict[str, tuple[str, str]] = {
    "ice-ufrag": ("ufrag", "RFC 8839 §5.4"),
    "ice-pwd": ("pwd", "RFC 8839 §5.4"),
    "fingerprint": ("fingerprints", "RFC 8842 §5"),
}


def _carry(source: Iterable[Attribute], table: MappingT[str, Rule], default: Rule, ssrc: bool) -> list[Attribute]:
    keep = {Rule.KEEP, Rule.SSRC} if ssrc else {Rule.KEEP}
    return [Attribute(a.name, a.value) for a in source if table.get(a.name, default) in keep]


# --------------------------------------------------------------------------------------------------
# Helpers


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


def _add_codecs(media: Media, codecs: Iterable[tuple[int, Codec]], rtcp_fb: Iterable[str] | None) -> None:
    """Add ``(pt, codec)`` pairs; ``rtcp_fb`` None keeps the codec's own feedback lines, else
    keeps only those the gateway implements (RFC 4585 §4.2)."""
    allowed = None if rtcp_fb is None else set(rtcp_fb)
    for pt, codec in codecs:
        fb = codec.rtcp_fb if allowed is None else tuple(f for f in codec.rtcp_fb if f in allowed)
        media.add_codec(dataclasses.replace(codec, pt=pt, rtcp_fb=fb))


def _spec_codec(spec: CodecSpec, pt: int) -> Codec:
    return Codec(pt, spec.encoding, spec.clock_rate, spec.channels, spec.fmtp)


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


def _check_answer_shape(answer: SessionDescription, expected: int, side: str) -> None:
    """RFC 3264 §6: as many m= sections as the offer. More is refused; fewer (some old phones drop
    the sections they reject) is read as those sections rejected."""
    if len(answer.media) > expected:
        raise SdpError(f"{side} answer has {len(answer.media)} m= sections, the offer had {expected} (RFC 3264 §6)")


def _answer_section(answer: SessionDescription, index: int | None) -> Media | None:
    return answer.media[index] if index is not None and index < len(answer.media) else None


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


def _old_for(previous: Mapping | None, mid: str | None, index: int, side: str) -> MediaMap | None:
    if previous is None:
        return None
    if mid is not None and (old := previous.by_mid(mid)) is not None:
        return old
    return previous.by_webrtc_index(index) if side == "webrtc" else previous.by_legacy_index(index)


def _count(maps: Iterable[MediaMap], side: str) -> int:
    indexes = [m.webrtc_index if side == "webrtc" else m.legacy_index for m in maps]
    return max((i + 1 for i in indexes if i is not None), default=0)


# --------------------------------------------------------------------------------------------------
# Browser calls legacy


def _legacy_slots(
    offer: SessionDescription, local: LegacyEndpoint, previous: Mapping | None
) -> tuple[dict[int, int], int]:
    """Browser m= index -> legacy m= index. Positions used before stay (RFC 3264 §8.1: m= lines
    are never removed or reordered); then the first usable section of each new kind."""
    slots: dict[int, int] = {}
    n = _count(previous.media, "legacy") if previous else 0
    for i, media in enumerate(offer.media):
        old = _old_for(previous, media.mid, i, "webrtc")
        if old is not None and old.legacy_index is not None:
            slots[i] = old.legacy_index
    kinds = {offer.media[i].kind for i in slots}
    for i, media in enumerate(offer.media):
        usable = not media.rejected and media.is_rtp and media.kind in MEDIA_KINDS and media.kind in local.ports
        if i in slots or not usable or media.kind in kinds:
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


def _answer_setup(offered: str | None, wanted: str | None) -> str:
    if offered == "holdconn":
        return "holdconn"
    if offered not in _SETUP_ALLOWED:
        raise SdpError(f"bad offered setup {offered!r}")
    if wanted is not None and wanted in _SETUP_ALLOWED[offered]:
        return wanted
    return SETUP_ANSWER[offered]


def _announce_msid(media: Media, ann: SsrcAnnouncement | None) -> None:
    if ann is not None and ann.stream is not None:
        media.add("msid", Msid(ann.stream, ann.track))


def _announce_ssrc(media: Media, ann: SsrcAnnouncement | None) -> None:
    if ann is not None:
        media.add("ssrc", f"{ann.ssrc} cname:{ann.cname}")


# --------------------------------------------------------------------------------------------------
# Legacy calls browser


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


def _answer_crypto(offered: Media, local: LegacyEndpoint) -> Crypto | None:
    """The first offered SDES suite the gateway has a key for, under the offered tag (RFC 4568 §6.1)."""
    keys = {c.suite: c for c in local.cryptos.get(offered.kind, ())}
    for crypto in offered.cryptos:
        mine = keys.get(crypto.suite)
        if mine is not None:
            return dataclasses.replace(mine, tag=crypto.tag)
    return None

"""What the breaker's translation is given and what it returns (RFC 3264 §8, RFC 8839 §5, RFC 8842 §5), sans I/O.

Given: the gateway's choices (:class:`BreakerPolicy`, from config.xml keys through the
:class:`BreakerSettings` protocol) and what its media plane provides on each leg
(:class:`WebRtcEndpoint`, :class:`LegacyEndpoint`). Returned: a :class:`Mapping`, which m= section
of one leg is which of the other (RFC 3264 §8: positions, mids and payload types kept across
re-offers), the payload-type maps the relay applies, and each peer's transport (:class:`RemoteIce`,
RFC 8839 §5 and RFC 8842 §5; :class:`LegacyPeer`, RFC 3605 §2.1, RFC 4568 §6.1).
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable
from collections.abc import Mapping as MappingT
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from .attributes import Candidate, Crypto, Fingerprint
from .codecs import CodecPolicy, CodecSettings
from .fields import Origin, SdpError
from .model import Media

__all__ = [
    "MEDIA_KINDS",
    "WEBRTC_PROTO",
    "BreakerPolicy",
    "BreakerSettings",
    "LegacyEndpoint",
    "LegacyPeer",
    "Mapping",
    "MediaMap",
    "NoCommonCodec",
    "RemoteIce",
    "SsrcAnnouncement",
    "WebRtcEndpoint",
]

WEBRTC_PROTO = "UDP/TLS/RTP/SAVPF"  # RFC 8827 §6.5 / RFC 5764 §8: what browsers offer and accept
MEDIA_KINDS = ("audio", "video")  # what the relay carries; anything else (application...) is refused


class NoCommonCodec(SdpError):
    """No codec both legs accept and no transcoder to bridge them: answer 488 with Warning 305."""

    warning: ClassVar[int] = 305  # RFC 3261 §20.43 "Incompatible media format"


class BreakerSettings(CodecSettings, Protocol):
    """The gateway settings :meth:`BreakerPolicy.from_settings` reads: :class:`CodecSettings` plus
    config.xml ``srtp-mode`` and ``srtp-type``."""

    @property
    def srtp_mode(self) -> str: ...

    @property
    def srtp_type(self) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Per-gateway choices of the translation (config.xml keys in brackets).

    ``srtp``: SDES on the legacy leg (``srtp-mode`` when ``srtp-type`` has ``sdes``): ``none``
    offers RTP/AVP, ``optional`` RTP/AVP with a=crypto (RFC 4568 §7.1.1 best effort),
    ``mandatory`` RTP/SAVP. ``legacy_rtcp_mux`` offers rtcp-mux (RFC 5761 §5.1.1) to legacy
    peers; ``forward_ssrc`` copies a=ssrc/a=msid between legs, right only when the relay keeps
    the SSRCs unchanged.
    """

    codecs: CodecPolicy = field(default_factory=CodecPolicy)
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


def _old_for(previous: Mapping | None, mid: str | None, index: int, side: str) -> MediaMap | None:
    if previous is None:
        return None
    if mid is not None and (old := previous.by_mid(mid)) is not None:
        return old
    return previous.by_webrtc_index(index) if side == "webrtc" else previous.by_legacy_index(index)


def _count(maps: Iterable[MediaMap], side: str) -> int:
    indexes = [m.webrtc_index if side == "webrtc" else m.legacy_index for m in maps]
    return max((i + 1 for i in indexes if i is not None), default=0)


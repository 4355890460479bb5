"""SDP (RFC 8866) and the RTCWeb Breaker's offer/answer translation (RFC 3264), both sans I/O.

The model: :mod:`.fields` (line values), :mod:`.attributes` (attribute values), :mod:`.model`
(sessions, media sections, parser and serialiser). The translation, four moves for both call
directions, initial offers and re-INVITEs alike::

    browser offer  --webrtc_offer_to_legacy-->  legacy offer     (webrtc_offer.py)
    legacy answer  --legacy_answer_to_webrtc--> browser answer   (webrtc_offer.py)
    legacy offer   --legacy_offer_to_webrtc-->  browser offer    (legacy_offer.py)
    browser answer --webrtc_answer_to_legacy--> legacy answer    (legacy_offer.py)

each taking parsed SDP, what the gateway's media plane provides on the side being written and a
:class:`BreakerPolicy`, returning the SDP to send and a :class:`Mapping` (mapping.py); codecs and
payload types in codecs.py, shared offer/answer rules and attribute tables in offer_answer.py,
ICE/DTLS/SDES in media_transport.py, BUNDLE/MID/SSRC in bundle.py.
"""

from .attributes import (
    DIRECTIONS,
    SETUP_ROLES,
    STATIC_PAYLOADS,
    Attribute,
    Candidate,
    Codec,
    Crypto,
    Extmap,
    Fingerprint,
    Group,
    Msid,
    Rtcp,
    RtpMap,
    Ssrc,
    parse_fmtp_params,
)
from .bundle import MID_EXTENSION
from .codecs import AUXILIARY, CODEC_SPECS, TRANSCODABLE, CodecPolicy, CodecSettings, CodecSpec, codec_key, transcodable
from .fields import Bandwidth, Connection, Origin, SdpError, Timing, address_type
from .legacy_offer import legacy_offer_to_webrtc, webrtc_answer_to_legacy
from .mapping import (
    BreakerPolicy,
    BreakerSettings,
    LegacyEndpoint,
    LegacyPeer,
    Mapping,
    MediaMap,
    NoCommonCodec,
    RemoteIce,
    SsrcAnnouncement,
    WebRtcEndpoint,
)
from .media_transport import SETUP_ANSWER
from .model import MAX_SDP_SIZE, Media, SessionDescription
from .offer_answer import REQUIRED_TOWARD_WEBRTC, TO_LEGACY, TO_WEBRTC, Rule, missing_for_browser
from .webrtc_offer import legacy_answer_to_webrtc, webrtc_offer_to_legacy

parse = SessionDescription.parse

__all__ = [
    "AUXILIARY",
    "CODEC_SPECS",
    "DIRECTIONS",
    "MAX_SDP_SIZE",
    "MID_EXTENSION",
    "REQUIRED_TOWARD_WEBRTC",
    "SETUP_ANSWER",
    "SETUP_ROLES",
    "STATIC_PAYLOADS",
    "TO_LEGACY",
    "TO_WEBRTC",
    "TRANSCODABLE",
    "Attribute",
    "Bandwidth",
    "BreakerPolicy",
    "BreakerSettings",
    "Candidate",
    "Codec",
    "CodecPolicy",
    "CodecSettings",
    "CodecSpec",
    "Connection",
    "Crypto",
    "Extmap",
    "Fingerprint",
    "Group",
    "LegacyEndpoint",
    "LegacyPeer",
    "Mapping",
    "Media",
    "MediaMap",
    "Msid",
    "NoCommonCodec",
    "Origin",
    "RemoteIce",
    "Rtcp",
    "RtpMap",
    "Rule",
    "SdpError",
    "SessionDescription",
    "Ssrc",
    "SsrcAnnouncement",
    "Timing",
    "WebRtcEndpoint",
    "address_type",
    "codec_key",
    "legacy_answer_to_webrtc",
    "legacy_offer_to_webrtc",
    "missing_for_browser",
    "parse",
    "parse_fmtp_params",
    "transcodable",
    "webrtc_answer_to_legacy",
    "webrtc_offer_to_legacy",
]

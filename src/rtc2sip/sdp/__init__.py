"""SDP (RFC 8866) and the RTCWeb Breaker's offer/answer translation (RFC 3264), both sans I/O.

The model: :mod:`.model`
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

from .bundle import MID_EXTENSION
from .codecs import AUXILIARY, CODEC_SPECS, TRANSCODABLE, CodecPolicy, CodecSettings, CodecSpec, codec_key, transcodable
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
from .model import (
    Attribute,
    Bandwidth,
    Candidate,
    Codec,
    Connection,
    Crypto,
    Extmap,
    Fingerprint,
    Group,
    Media,
    Msid,
    Origin,
    Rtcp,
    RtpMap,
    SdpError,
    SessionDescription,
    Ssrc,
    Timing,
)
from .offer_answer import REQUIRED_TOWARD_WEBRTC, TO_LEGACY, TO_WEBRTC, Rule, missing_for_browser
from .webrtc_offer import legacy_answer_to_webrtc, webrtc_offer_to_legacy

parse = SessionDescription.parse

__all__ = [
    "AUXILIARY", "CODEC_SPECS", "MID_EXTENSION", "REQUIRED_TOWARD_WEBRTC", "SETUP_ANSWER", "TO_LEGACY",
    "TO_WEBRTC", "TRANSCODABLE", "Attribute", "Bandwidth", "BreakerPolicy", "BreakerSettings", "Candidate",
    "Codec", "CodecPolicy", "CodecSettings", "CodecSpec", "Connection", "Crypto", "Extmap", "Fingerprint",
    "Group", "LegacyEndpoint", "LegacyPeer", "Mapping", "Media", "MediaMap", "Msid", "NoCommonCodec",
    "Origin", "RemoteIce", "Rtcp", "RtpMap", "Rule", "SdpError", "SessionDescription", "Ssrc",
    "SsrcAnnouncement", "Timing", "WebRtcEndpoint", "codec_key", "legacy_answer_to_webrtc",
    "legacy_offer_to_webrtc", "missing_for_browser", "parse", "transcodable", "webrtc_answer_to_legacy",
    "webrtc_offer_to_legacy",
]

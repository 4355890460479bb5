"""SDP (RFC 8866) and the RTCWeb Breaker's offer/answer translation (RFC 3264), both sans I/O."""

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
from .translate import (
    BreakerPolicy,
    CodecPolicy,
    LegacyEndpoint,
    LegacyPeer,
    Mapping,
    MediaMap,
    NoCommonCodec,
    RemoteIce,
    SsrcAnnouncement,
    WebRtcEndpoint,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)

parse = SessionDescription.parse

__all__ = [
    "Attribute", "Bandwidth", "BreakerPolicy", "Candidate", "Codec", "CodecPolicy", "Connection", "Crypto",
    "Extmap", "Fingerprint", "Group", "LegacyEndpoint", "LegacyPeer", "Mapping", "Media", "MediaMap", "Msid",
    "NoCommonCodec", "Origin", "RemoteIce", "Rtcp", "RtpMap", "SdpError", "SessionDescription", "Ssrc",
    "SsrcAnnouncement", "Timing", "WebRtcEndpoint", "legacy_answer_to_webrtc", "legacy_offer_to_webrtc",
    "parse", "webrtc_answer_to_legacy", "webrtc_offer_to_legacy",
]

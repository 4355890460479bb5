"""What the media plane reads of the gateway's configuration, as Protocols naming exactly those keys.

The configuration (:mod:`rtc2sip.config`) sits above the media plane, so the plane never imports it:
these Protocols declare the attributes :class:`~rtc2sip.media.plane.MediaPlane`,
:class:`~rtc2sip.media.remote.RemotePlane`, the worker, recording and forwarding read, and config's
frozen dataclasses satisfy them structurally (mypy checks it where the app hands its ``Settings``
in). Members are read-only properties, as a frozen dataclass's fields are to mypy.

:class:`WorkerSettings` is what crosses to a media worker process: those parts alone (the
registrar's passwords stay in the gateway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ForwardRule", "MediaSocket", "PlaneSettings", "RecordingRule", "RemotePlaneSettings",
           "StunServer", "TranscodingLimits", "Webrtc2sipMedia", "WorkerSettings"]


class StunServer(Protocol):
    """``stun-server``: where the server-reflexive candidate is asked for (RFC 8445 §5.1.1.2)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


class Webrtc2sipMedia(Protocol):
    """The config.xml keys the media plane reads (webrtc2sip's names, ``-`` as ``_``)."""

    @property
    def rtp_buffsize(self) -> int: ...
    @property
    def enable_rtp_symetric(self) -> bool: ...
    @property
    def enable_media_coder(self) -> bool: ...
    @property
    def enable_videojb(self) -> bool: ...
    @property
    def video_size(self) -> tuple[int, int]: ...  # ``video-size-pref`` in pixels
    @property
    def avpf_tail_length(self) -> tuple[int, int]: ...
    @property
    def codec_opus_maxrates(self) -> tuple[int, int]: ...
    @property
    def stun_server(self) -> StunServer | None: ...
    @property
    def enable_icestun(self) -> bool: ...
    # the SDP translation's policy (rtc2sip.sdp.translate.BreakerPolicy.from_settings)
    @property
    def codecs(self) -> tuple[str, ...]: ...
    @property
    def srtp_mode(self) -> str: ...
    @property
    def srtp_type(self) -> tuple[str, ...]: ...


class MediaSocket(Protocol):
    """``[media]``: the shared WebRTC socket (:mod:`rtc2sip.media.udpmux`)."""

    @property
    def webrtc_socket(self) -> str: ...  # "shared" or "per-call"
    @property
    def webrtc_port(self) -> int: ...
    @property
    def fast_path(self) -> str: ...  # "auto" or "off" (media.fastlink; RTC2SIP_FAST_PATH overrides)


class TranscodingLimits(Protocol):
    """``[limits]``: what a stream lost to ``max_transcoded_calls`` does to its call."""

    @property
    def transcoding_overflow(self) -> str: ...  # "audio-only" or "reject"


class RecordingRule(Protocol):
    """``[recording]``: which calls are recorded, and how (:mod:`rtc2sip.media.recording`)."""

    @property
    def enabled(self) -> bool: ...
    @property
    def rule(self) -> tuple[str, ...]: ...  # AOR globs
    @property
    def format(self) -> str: ...  # "wav" or "ogg"


class ForwardRule(Protocol):
    """``[forward]``: which calls are forked as plain RTP, and where (:mod:`rtc2sip.media.forward`)."""

    @property
    def to(self) -> tuple[str, int] | None: ...
    @property
    def rule(self) -> tuple[str, ...]: ...


class PlaneSettings(Protocol):
    """What a :class:`~rtc2sip.media.plane.MediaPlane` reads."""

    @property
    def webrtc2sip(self) -> Webrtc2sipMedia: ...
    @property
    def media(self) -> MediaSocket: ...
    @property
    def limits(self) -> TranscodingLimits: ...


class RemotePlaneSettings(PlaneSettings, Protocol):
    """What a :class:`~rtc2sip.media.remote.RemotePlane` reads, and its workers' planes, recorders and
    forwarders."""

    @property
    def recording(self) -> RecordingRule: ...
    @property
    def forward(self) -> ForwardRule: ...


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """The parts of the gateway's settings a media worker gets (pickled through its channel)."""

    webrtc2sip: Webrtc2sipMedia
    media: MediaSocket
    limits: TranscodingLimits
    recording: RecordingRule
    forward: ForwardRule

    @classmethod
    def of(cls, settings: RemotePlaneSettings) -> WorkerSettings:
        return cls(settings.webrtc2sip, settings.media, settings.limits, settings.recording, settings.forward)

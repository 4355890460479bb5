"""The media plane's use of the Media Coder's pool: which offers may propose the coder's codecs, what
a call lost to the pool's limit, and a coder session opened per stream whose legs share no codec.

Implements RFC 3264 §5 as the offerer's choice (an offer carries the coder's codecs only while the
pool has a slot for the call, so that a call over ``max_transcoded_calls`` is refused with 488
rather than answered with a codec nobody can decode) and RFC 3550 §5.1 continuity (a coder started
in mid-call continues the stream's timestamps, :meth:`~rtc2sip.media.path.StreamPath.next_timestamp`).
The codecs, payload types and ptimes come from :class:`~rtc2sip.media.negotiation.TranscodePlan`;
audio is :class:`rtc2sip.coder.AudioTranscoder`, video :class:`rtc2sip.coder.video.VideoTranscoder`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from collections.abc import Mapping as ReadOnly
from time import monotonic
from typing import TYPE_CHECKING

from ..sdp import BreakerPolicy, Mapping, NoCommonCodec, SdpError, SessionDescription
from .negotiation import MEDIA_KINDS, TranscodePlan
from .path import CoderLink
from .stream import Stream

if TYPE_CHECKING:  # PyAV is loaded only where transcoding is enabled
    from ..coder import CoderPool

__all__ = ["VIDEO_MAX_PENDING", "Transcoding"]

log = logging.getLogger("rtc2sip.media")

# Packets of one transcoded video call waiting for its coder thread: a keyframe comes as a burst of
# tens of packets (hundreds at 720p), and dropping one costs the whole frame and another keyframe
# request, a loop under load; audio keeps the pool's small bound (late audio is worth nothing).
VIDEO_MAX_PENDING = 512


class Transcoding:
    """The coder ``pool`` (None: ``enable-media-coder`` off) as the plane's calls use it, with the
    plane's ``policy`` and the coder's settings as plain values: ``opus_maxrates`` (webrtc2sip
    ``codec-opus-maxrates``: playback, capture), ``video_size`` (``video-size-pref``),
    ``video_jitter_buffer`` (``enable-videojb``), ``overflow`` (``[limits] transcoding_overflow``)."""

    def __init__(self, pool: CoderPool | None, policy: BreakerPolicy, *, opus_maxrates: tuple[int, int],
                 video_size: tuple[int, int], video_jitter_buffer: bool, overflow: str) -> None:
        self.pool = pool
        self.policy = policy
        self.opus_maxrates = opus_maxrates
        self.video_size = video_size
        self.video_jitter_buffer = video_jitter_buffer
        self.overflow = overflow

    def offer_policy(self, session: str | None = None) -> BreakerPolicy:
        """The policy for a new offer: the coder's codecs only while a slot is free (or the call
        holds one already), so that a call over the limit is refused rather than left silent."""
        policy = self.policy
        if not policy.codecs.transcoding:
            return policy
        pool = self.pool
        holds = session is not None and pool is not None and pool.holds(session)
        if pool is not None and (holds or pool.active < pool.max_sessions):
            return policy
        return dataclasses.replace(policy, codecs=dataclasses.replace(policy.codecs, transcoding=False))

    def over_limit(self, policy: BreakerPolicy, sent: SessionDescription,
                   full: Callable[[BreakerPolicy], SessionDescription]) -> set[str]:
        """Over ``max_transcoded_calls`` an offer goes out without the coder's codecs; the kinds for
        which it would have had more, so that the answer can tell a stream lost to the limit."""
        over: set[str] = set()
        if policy.codecs.transcoding or not self.policy.codecs.transcoding:
            return over
        try:
            wanted = full(self.policy)
        except SdpError:
            return over
        for kind in MEDIA_KINDS:
            had = sum(len(m.formats) for m in sent.media if m.kind == kind and not m.rejected)
            if sum(len(m.formats) for m in wanted.media if m.kind == kind and not m.rejected) > had:
                over.add(kind)
        return over

    def check_overflow(self, session: str, over_limit: set[str], mapping: Mapping) -> None:
        """``transcoding_overflow = "reject"``: a stream the limit cost (the coder's codecs
        were left out of the offer and the answer took none) refuses the call with 488; with
        ``"audio-only"`` (default) the call goes on without it (a video section rejected). The far side
        may have rejected it for want of video at all: "reject" then refuses calls only under load."""
        lost = {m.kind for m in mapping.media if m.rejected and m.kind in over_limit}
        if lost and self.overflow == "reject":
            log.info("media session %s: %s lost to max_transcoded_calls: 488", session, "/".join(sorted(lost)))
            raise NoCommonCodec(f"{' and '.join(sorted(lost))} needs transcoding and the media coder is busy")

    async def open_coders(self, session: str, streams: ReadOnly[str, Stream], mapping: Mapping,
                          legacy_sdp: SessionDescription,
                          webrtc_sdp: SessionDescription) -> dict[str, CoderLink | None]:
        """A pool session per stream that needs one and has none yet (None: stop transcoding it).
        Raises NoCommonCodec (488) when the pool is full or the codecs are not the coder's."""
        links: dict[str, CoderLink | None] = {}
        kinds: set[str] = set()
        try:
            for mm in mapping.active:
                if mm.webrtc_index is None or mm.legacy_index is None or mm.kind in kinds:
                    continue
                kinds.add(mm.kind)
                stream = streams.get(mm.kind)
                if stream is None:
                    continue
                if not mm.transcode:
                    if stream.coder is not None:
                        links[mm.kind] = None
                    continue
                plan = TranscodePlan.of(mm, legacy_sdp.media[mm.legacy_index], webrtc_sdp.media[mm.webrtc_index])
                if stream.coder is not None and stream.coder.description == plan.description:
                    continue  # same codecs after a re-INVITE: keep the coder and its state
                links[mm.kind] = await self._open_link(session, stream, plan)
        except BaseException:
            for link in links.values():
                if link is not None:
                    await link.pool.close(link.session)
            raise
        return links

    async def _open_link(self, session: str, stream: Stream, plan: TranscodePlan) -> CoderLink:
        from ..coder import AudioTranscoder, CoderBusy

        pool = self.pool
        if pool is None:
            raise NoCommonCodec("the legs share no codec and the media coder is off")
        kind = stream.kind
        now = monotonic()
        to_legacy_ts, to_webrtc_ts = stream.next_timestamp(True, now), stream.next_timestamp(False, now)
        playback, capture = self.opus_maxrates
        p = plan
        if kind == "video":
            return await self._open_video_link(session, plan, to_legacy_ts, to_webrtc_ts)

        def to_legacy() -> AudioTranscoder:
            return AudioTranscoder(p.webrtc_codec, p.legacy_codec, src_pt=p.webrtc_pt, dst_pt=p.legacy_pt,
                                   dst_ptime_ms=p.legacy_ptime, opus_maxrate=playback, src_cn_pt=p.webrtc_cn,
                                   dst_cn_pt=p.legacy_cn, src_dtmf_pt=p.webrtc_dtmf, dst_dtmf_pt=p.legacy_dtmf,
                                   dst_timestamp=to_legacy_ts)

        def to_webrtc() -> AudioTranscoder:
            return AudioTranscoder(p.legacy_codec, p.webrtc_codec, src_pt=p.legacy_pt, dst_pt=p.webrtc_pt,
                                   dst_ptime_ms=p.webrtc_ptime, opus_maxrate=min(capture, p.webrtc_maxrate),
                                   src_cn_pt=p.legacy_cn, dst_cn_pt=p.webrtc_cn, src_dtmf_pt=p.legacy_dtmf,
                                   dst_dtmf_pt=p.webrtc_dtmf, dst_timestamp=to_webrtc_ts)

        try:
            coder_session = await pool.open(session, to_legacy=to_legacy, to_webrtc=to_webrtc)
        except CoderBusy as exc:
            log.info("media session %s: %s needs transcoding, refused: %s", session, kind, exc)
            raise NoCommonCodec(f"no common codec and {exc}") from exc
        return CoderLink(pool, coder_session, plan.from_webrtc, plan.from_legacy, plan.description)

    async def _open_video_link(self, session: str, p: TranscodePlan, to_legacy_ts: int | None,
                               to_webrtc_ts: int | None) -> CoderLink:
        """VP8 ⇄ H.264 (rtc2sip.coder.video), one transcoder per direction at ``video-size-pref``."""
        from ..coder import CoderBusy
        from ..coder.video import VideoTranscoder

        pool = self.pool
        assert pool is not None
        width, height = self.video_size
        jb = self.video_jitter_buffer

        def to_legacy() -> VideoTranscoder:
            return VideoTranscoder(p.webrtc_codec, p.legacy_codec, src_pt=p.webrtc_pt, dst_pt=p.legacy_pt,
                                   width=width, height=height, h264_mode=p.legacy_h264_mode, jitter_buffer=jb,
                                   dst_timestamp=to_legacy_ts)

        def to_webrtc() -> VideoTranscoder:
            return VideoTranscoder(p.legacy_codec, p.webrtc_codec, src_pt=p.legacy_pt, dst_pt=p.webrtc_pt,
                                   width=width, height=height, h264_mode=p.webrtc_h264_mode, jitter_buffer=jb,
                                   dst_timestamp=to_webrtc_ts)

        try:
            coder_session = await pool.open(session, max_pending=VIDEO_MAX_PENDING, to_legacy=to_legacy,
                                            to_webrtc=to_webrtc)
        except CoderBusy as exc:
            log.info("media session %s: video needs transcoding, refused: %s", session, exc)
            raise NoCommonCodec(f"no common video codec and {exc}") from exc
        return CoderLink(pool, coder_session, p.from_webrtc, p.from_legacy, p.description)

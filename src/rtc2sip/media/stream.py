"""A relayed stream as the session holds it: its per-packet path (:mod:`rtc2sip.media.path`), its
RTCP (:mod:`rtc2sip.media.feedback`) and, when the legs share no codec, its link to the Media Coder.

A transcoded stream hands every packet its path accepts to the coder's pool (:mod:`rtc2sip.coder`),
off the event loop and in order per direction; what comes back leaves, still in submission order,
under the leg's own SSRC and sequence (RFC 3550 §5.1, one numbering per leg with the relayed packets
and RFC 4733 events, §2.1), through the path's :meth:`~rtc2sip.media.path.StreamPath.send_coded_legacy`
and :meth:`~rtc2sip.media.path.StreamPath.send_coded_webrtc`. A video transcoder whose decoder lost
its reference asks the leg that feeds it for a keyframe (PLI, RFC 4585 §6.3.1; FIR, RFC 5104 §4.3.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol, cast

from .feedback import RtcpSessionView, RtcpStream
from .rtp import RTP_HEADER, payload_bounds

if TYPE_CHECKING:  # the coder imports PyAV: only a plane that transcodes loads it
    from ..coder import OutPacket

__all__ = ["Stream", "StreamSessionView"]

log = logging.getLogger("rtc2sip.media")


class StreamSessionView(RtcpSessionView, Protocol):
    """What a stream reads of its session beyond the path's and RTCP's: its id, for the log."""

    @property
    def id(self) -> str: ...


class Stream(RtcpStream):
    """One media kind relayed between the legs: its per-packet path and legacy sockets, its RTCP,
    and its link to the Media Coder while transcoded."""

    __slots__ = ("coded_to_legacy", "coded_to_webrtc")
    session: StreamSessionView

    def __init__(self, session: StreamSessionView, kind: str, legacy_port: int, symmetric: bool) -> None:
        super().__init__(session, kind, legacy_port, symmetric)
        # Transcoding: packets go through the coder's worker; results leave in submission order.
        self.coded_to_legacy: deque[asyncio.Future[list[OutPacket]]] = deque()
        self.coded_to_webrtc: deque[asyncio.Future[list[OutPacket]]] = deque()

    # -- transcoding (the Media Coder) ----------------------------------------------------------------

    def to_coder(self, plain: bytes, now: float, from_webrtc: bool) -> None:
        """Submit one received packet's payload to the coder (off the loop, in order per direction);
        :meth:`_drain` sends what comes back under this leg's own SSRC and sequence."""
        link = self.coder
        assert link is not None
        stats = self.webrtc if from_webrtc else self.legacy
        _, b1, seq, ts, _ = RTP_HEADER.unpack_from(plain)
        pt = b1 & 0x7F
        start, end = payload_bounds(plain)
        if pt not in (link.from_webrtc if from_webrtc else link.from_legacy) or end <= start:
            stats.dropped += 1
            return
        direction = "to_legacy" if from_webrtc else "to_webrtc"
        future = link.pool.submit(link.session, direction, plain[start:end], ts, seq, bool(b1 & 0x80), now, pt)
        queue = self.coded_to_legacy if from_webrtc else self.coded_to_webrtc
        queue.append(future)
        future.add_done_callback(self._drain_to_legacy if from_webrtc else self._drain_to_webrtc)

    def _drain_to_legacy(self, _: object) -> None:
        self._drain(self.coded_to_legacy, True)

    def _drain_to_webrtc(self, _: object) -> None:
        self._drain(self.coded_to_webrtc, False)

    def _drain(self, queue: deque[asyncio.Future[list[OutPacket]]], to_legacy: bool) -> None:
        now = monotonic()
        while queue and queue[0].done():
            future = queue.popleft()
            if future.cancelled() or future.exception() is not None:
                (self.webrtc if to_legacy else self.legacy).dropped += 1
                if not future.cancelled():
                    log.debug("media session %s: coder refused a packet: %s", self.session.id, future.exception())
                continue
            for packet in future.result():
                if to_legacy:
                    self.send_coded_legacy(packet, now)
                else:
                    self.send_coded_webrtc(packet, now)
        if self.kind == "video":
            self._coder_wants_keyframe(to_legacy, now)

    def coder_stats(self) -> dict[str, object] | None:
        link = self.coder
        if link is None:
            return None
        out: dict[str, object] = {"codecs": link.description, "dropped": link.session.dropped}
        for direction in link.session.directions:
            stats = cast(Any, link.session.coder(direction)).stats
            # AudioTranscoder keeps a dataclass; VideoTranscoder's stats() is safe from any thread
            out[direction] = stats() if callable(stats) else asdict(stats)
        return out

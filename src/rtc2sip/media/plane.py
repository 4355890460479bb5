"""The RTCWeb Breaker's media plane behind a narrow API (create from an offer, complete with an answer,
update, delete, stats), in the manner of rtpengine's offer/answer/delete.

The B2BUA hands each SDP it receives to the plane and sends on what comes back; the plane never sees
SIP. Four moves cover both call directions and re-INVITEs (RFC 3264)::

    browser offer  --offer_from_webrtc-->  legacy offer     (allocates sockets)
    legacy answer  --answer_from_legacy--> browser answer   (starts relaying)
    legacy offer   --offer_from_legacy-->  browser offer    (allocates sockets)
    browser answer --answer_from_webrtc--> legacy answer    (starts relaying)

``update`` is a new offer in an existing session (hold, resume, ICE restart), answered as above.
SDP translation is :mod:`rtc2sip.sdp.translate`; transports and the packet path are
:mod:`rtc2sip.media.relay`. Everything of a session lives in its own sockets (the browser leg's
routes on the shared WebRTC socket, :mod:`rtc2sip.media.udpmux`) and task, so one
session's failure (DTLS, ICE consent, media timeout) reaches :meth:`MediaPlane.on_failure` for that
session only, and :meth:`MediaPlane.delete` releases all of it in whatever state it is.

The state is per process and all of it is reached through this API with plain data (SDP, strings,
dicts), so a front end can run one plane per worker process and per core (PERFORMANCE.md).

The WebRTC leg runs full ICE (:mod:`rtc2sip.media.ice`, on aioice): controlling, and nominating,
when the gateway offers to the browser; controlled when it answers the browser's offer; host
candidates on the announced addresses and, with ``enable-icestun``, a server-reflexive one from
``stun-server``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING

from ..sdp.model import Crypto, Media, SdpError, SessionDescription
from ..sdp.model import Fingerprint as SdpFingerprint
from ..sdp.translate import (
    MID_EXTENSION,
    BreakerPolicy,
    LegacyEndpoint,
    Mapping,
    MediaMap,
    NoCommonCodec,
    SsrcAnnouncement,
    WebRtcEndpoint,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    transcodable,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)
from .certificate import Certificate
from .dtls import DtlsRole
from .ports import PortAllocator
from .relay import CoderLink, MediaSession, StreamConfig
from .settings import PlaneSettings
from .tap import CodecInfo, LegCodecs, Tap, TapSink
from .udpmux import UdpMux

if TYPE_CHECKING:  # PyAV is loaded only where transcoding is enabled
    from ..coder import CoderPool
    from .forward import Forwarder
    from .recording import Recorder

__all__ = ["DTMF_EVENTS", "InvalidState", "MediaPlane", "MediaPlaneError", "UnknownSession"]

log = logging.getLogger("rtc2sip.media")

MEDIA_KINDS = ("audio", "video")
# RTCP feedback the relay implements for video (media/relay.py), offered and answered to browsers
# (RFC 4585 §4.2, RFC 5104 §7.1, REMB): NACKs answered from a history, PLI/FIR/REMB translated.
VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
_AUXILIARY = frozenset({"telephone-event", "cn", "red", "rtx", "ulpfec", "flexfec-03"})
# Packets of one transcoded video call waiting for its coder thread: a keyframe comes as a burst of
# tens of packets (hundreds at 720p), and dropping one costs the whole frame and another keyframe
# request, a loop under load; audio keeps the pool's small bound (late audio is worth nothing).
VIDEO_MAX_PENDING = 512
# RFC 4733 §3.2: DTMF named events.
DTMF_EVENTS = {d: i for i, d in enumerate("0123456789*#ABCD")}


class MediaPlaneError(Exception):
    """A call of the API that cannot be honoured (not an SDP problem: those raise SdpError)."""


class UnknownSession(MediaPlaneError, KeyError):
    """No such session (never created, or deleted)."""


class InvalidState(MediaPlaneError):
    """An answer without an offer in progress, or an offer while another waits for its answer."""


class _Pending(enum.Enum):
    NONE = "none"
    WEBRTC_OFFER = "webrtc offer"  # waiting for answer_from_legacy
    LEGACY_OFFER = "legacy offer"  # waiting for answer_from_webrtc


@dataclass(slots=True)
class _Call:
    id: str
    call_id: str
    media: MediaSession
    legacy_local: LegacyEndpoint
    webrtc_session_id: str
    mapping: Mapping | None = None
    pending: _Pending = _Pending.NONE
    offer: SessionDescription | None = None
    restart_ice: bool = False
    answered: bool = False
    codecs: LegCodecs = dataclasses.field(default_factory=dict)
    over_limit: set[str] = dataclasses.field(default_factory=set)  # kinds offered without the coder's codecs


class MediaPlane:
    """Every bridged call's media of one process (see the module docstring).

    ``host`` is the address both legs bind and announce (127.0.0.1 in tests; a wildcard address
    announces every interface, loopback included), ``legacy_host`` the legacy leg's when it differs
    (another address family: the SDP translation then changes c=IN IP4 into c=IN IP6 or back).
    ``port_range`` bounds every socket (RTP even port and RTCP + 1 per legacy stream; the shared
    WebRTC socket's port, or with ``webrtc_socket = "per-call"`` one port per WebRTC leg).
    ``media_timeout`` (0: never) fails a session with no packet on either leg for that long;
    ``connect_timeout`` one whose ICE or DTLS has not connected that long after the answer.

    ``coder`` is the Media Coder's pool (``enable-media-coder``): a stream whose legs end up with no
    common codec is transcoded through it (:attr:`MediaMap.transcode`), one pool session per call.
    Offers propose the coder's codecs only while the pool has a free slot; an answer that needs a
    slot when none is left is refused (:class:`NoCommonCodec`, 488).
    """

    def __init__(
        self,
        settings: PlaneSettings,
        certificate: Certificate,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] = (20000, 29999),
        media_timeout: float = 60.0,
        connect_timeout: float = 30.0,
        coder: CoderPool | None = None,
        legacy_host: str | None = None,
    ) -> None:
        self.settings = settings
        self.coder = coder
        self.certificate = certificate
        self.host = host
        # until sdp.translate takes a Protocol of its own (issue 14: sdp must not import config)
        self.policy = BreakerPolicy.from_settings(settings.webrtc2sip)  # type: ignore[arg-type]
        self.ports = PortAllocator(port_range[0], port_range[1], buffer_size=settings.webrtc2sip.rtp_buffsize)
        self.media_timeout = media_timeout
        self.connect_timeout = connect_timeout
        self._symmetric = settings.webrtc2sip.enable_rtp_symetric
        self._sessions: dict[str, _Call] = {}
        self._callbacks: list[Callable[[str, str], None]] = []
        self._answered: list[Callable[[str, str], None]] = []
        self._keyframe_callbacks: list[Callable[[str, str], None]] = []
        # recording and forwarding (rtc2sip.media.recording/forward), set by the app when configured
        self.recorder: Recorder | None = None
        self.forwarder: Forwarder | None = None
        self._addresses = _announced_addresses(host)
        # The legacy leg may be of the other address family (a browser on IPv4, a phone on IPv6):
        # its sockets and the c= line of its SDP use legacy_host.
        self.legacy_host = legacy_host or host
        self._legacy_address = _announced_addresses(self.legacy_host)[0]
        # [media] webrtc_socket = "shared": every browser leg on this one socket (per family), opened
        # by start() or the first call, closed by close()
        self._shared = settings.media.webrtc_socket == "shared"
        self.mux: UdpMux | None = None
        self._stun_resolved: tuple[tuple[str, int], float] | None = None
        self._fingerprint = SdpFingerprint("sha-256", certificate.fingerprint("sha-256").hex)

    # -- browser calls phone ------------------------------------------------------------------------

    async def offer_from_webrtc(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        """Browser offer → (session id, offer for the legacy side). Raises SdpError/NoCommonCodec."""
        kinds = _kinds(offer)
        if not kinds:
            raise SdpError("the browser's offer has no audio or video RTP section")
        call = await self._new_call(call_id, kinds)
        try:
            policy = self._offer_policy()
            legacy_offer, mapping = webrtc_offer_to_legacy(offer, self._legacy_local(call), policy)
            self._note_overflow(call, policy, legacy_offer,
                                lambda p: webrtc_offer_to_legacy(offer, self._legacy_local(call), p)[0])
        except BaseException:
            await self._drop(call)
            raise
        call.mapping = mapping
        call.pending, call.offer = _Pending.WEBRTC_OFFER, offer
        return call.id, legacy_offer

    async def answer_from_legacy(self, session: str, answer: SessionDescription) -> SessionDescription:
        """Legacy answer → answer for the browser; relaying starts (RFC 3264 §6)."""
        call = self._get(session)
        if call.pending is not _Pending.WEBRTC_OFFER or call.offer is None or call.mapping is None:
            raise InvalidState(f"session {session}: no browser offer waits for a legacy answer")
        browser_answer, mapping = legacy_answer_to_webrtc(answer, call.offer, self._webrtc_local(call), call.mapping)
        self._check_overflow(call, mapping)
        peer = mapping.webrtc_peer
        if peer is None:
            raise SdpError("the browser's offer has no ICE/DTLS transport")
        setup = next((m.setup for m in browser_answer.media if not m.rejected and m.setup), "passive")
        # RFC 5763 §5: a=setup:passive in our answer makes us the DTLS server, active the client.
        role = DtlsRole.SERVER if setup == "passive" else DtlsRole.CLIENT
        links = await self._open_coders(call, mapping, answer, call.offer)
        call.media.set_remote_transport(peer.ufrag, peer.pwd, [str(f) for f in peer.fingerprints], role,
                                        peer.candidates, ice_lite=peer.ice_lite)
        await self._configure(call, _stream_configs(mapping, answer, call.offer), links)
        self._set_codecs(call, mapping, answer, call.offer)
        call.mapping, call.pending, call.offer, call.restart_ice = mapping, _Pending.NONE, None, False
        self._fire_answered(call)
        return browser_answer

    # -- phone calls browser ------------------------------------------------------------------------

    async def offer_from_legacy(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        """Legacy offer → (session id, offer for the browser): ICE-lite, a=setup:actpass, BUNDLE."""
        kinds = _kinds(offer)
        if not kinds:
            raise SdpError("the legacy offer has no audio or video RTP section")
        call = await self._new_call(call_id, kinds)
        try:
            policy = self._offer_policy()
            browser_offer, mapping = legacy_offer_to_webrtc(offer, self._webrtc_local(call), policy)
            self._note_overflow(call, policy, browser_offer,
                                lambda p: legacy_offer_to_webrtc(offer, self._webrtc_local(call), p)[0])
        except BaseException:
            await self._drop(call)
            raise
        call.mapping = mapping
        call.pending, call.offer = _Pending.LEGACY_OFFER, offer
        # Chrome answers a=setup:active and may send its ClientHello before its answer reaches us.
        call.media.accept_early_dtls = call.media.dtls is None
        # RFC 8445 §6.1.1: the offerer is the controlling agent (the browser, answering, is full ICE).
        call.media.ice.set_role(controlling=True)
        return call.id, browser_offer

    async def answer_from_webrtc(self, session: str, answer: SessionDescription) -> SessionDescription:
        """Browser answer → answer for the legacy side; relaying starts."""
        call = self._get(session)
        if call.pending is not _Pending.LEGACY_OFFER or call.offer is None or call.mapping is None:
            raise InvalidState(f"session {session}: no legacy offer waits for a browser answer")
        legacy_answer, mapping = webrtc_answer_to_legacy(answer, call.offer, self._legacy_local(call), call.mapping)
        self._check_overflow(call, mapping)
        peer = mapping.webrtc_peer
        if peer is None:
            raise SdpError("the browser's answer has no ICE/DTLS transport")
        # The browser chose (RFC 8842 §5.3): active makes it the client, passive makes us the client.
        role = DtlsRole.SERVER if peer.setup == "active" else DtlsRole.CLIENT
        links = await self._open_coders(call, mapping, call.offer, answer)
        call.media.set_remote_transport(peer.ufrag, peer.pwd, [str(f) for f in peer.fingerprints], role,
                                        peer.candidates, ice_lite=peer.ice_lite)
        await self._configure(call, _stream_configs(mapping, call.offer, answer), links)
        self._set_codecs(call, mapping, call.offer, answer)
        call.mapping, call.pending, call.offer, call.restart_ice = mapping, _Pending.NONE, None, False
        self._fire_answered(call)
        return legacy_answer

    # -- re-INVITE ----------------------------------------------------------------------------------

    async def update(self, session: str, offer: SessionDescription, from_webrtc: bool) -> SessionDescription:
        """A new offer in an existing session (RFC 3264 §8): hold, resume, codec change, ICE restart.

        Returns the offer for the other side; complete with :meth:`answer_from_legacy` (offer from the
        browser) or :meth:`answer_from_webrtc` (offer from the legacy side). Relaying goes on with the
        old parameters until the answer; SSRC, sequence and timestamp stay continuous across it.
        """
        call = self._get(session)
        if call.pending is not _Pending.NONE:
            raise InvalidState(f"session {session}: an offer is already waiting for its answer (RFC 3264 §4)")
        for kind in _kinds(offer):
            await call.media.add_kind(kind)
        if from_webrtc:
            transport = next((m for m in offer.media if not m.rejected and m.ice_ufrag), None)
            ice = call.media.ice
            if (transport is not None and ice.remote_ufrag is not None
                    and (transport.ice_ufrag, transport.ice_pwd) != (ice.remote_ufrag, ice.remote_pwd)):
                # RFC 8839 §4.4.1.1.1: new remote credentials are an ICE restart; ours change as well.
                ice.restart()
            legacy_offer, mapping = webrtc_offer_to_legacy(offer, self._legacy_local(call), self._offer_policy(call),
                                                           call.mapping)
            call.mapping, call.pending, call.offer = mapping, _Pending.WEBRTC_OFFER, offer
            return legacy_offer
        browser_offer, mapping = legacy_offer_to_webrtc(offer, self._webrtc_local(call), self._offer_policy(call),
                                                        call.mapping)
        call.mapping, call.pending, call.offer = mapping, _Pending.LEGACY_OFFER, offer
        return browser_offer

    # -- DTMF ---------------------------------------------------------------------------------------

    async def send_dtmf(self, session: str, digit: str, duration_ms: int = 100) -> bool:
        """Play one DTMF digit (0-9 * # A-D) toward the legacy side as RFC 4733 events (a SIP INFO
        converted per ``dtmf-type``). Returns once the event has ended; False when the legacy leg
        negotiated no telephone-event (the caller may fall back to relaying the INFO)."""
        call = self._get(session)
        event = DTMF_EVENTS.get(digit.upper())
        if event is None:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        return await call.media.send_dtmf("audio", event, max(40, min(duration_ms, 8000)))

    # -- end, observation ---------------------------------------------------------------------------

    async def delete(self, session: str) -> None:
        """Release every port, socket and task of the session, whatever its state; unknown ids are ignored."""
        call = self._sessions.pop(session, None)
        if call is not None:
            tap, call.media.tap = call.media.tap, None
            if tap is not None:
                tap.close()  # recordings finalise, forwarded streams stop
            await call.media.close()

    def stats(self, session: str) -> dict[str, object]:
        """Per leg: packets/bytes in and out, loss, jitter, RTT, the ICE pair, the DTLS state."""
        call = self._get(session)
        out = call.media.stats()
        out["session"] = call.id
        out["call_id"] = call.call_id
        out["pending"] = call.pending.value
        # each leg's main codec per kind (differs between the legs when transcoded): for the live view
        out["codecs"] = {kind: {leg: f"{c.name}/{c.clock_rate}" for leg, pts in legs.items()
                                for c in list(pts.values())[:1] if c.name.lower() not in _AUXILIARY}
                         for kind, legs in call.codecs.items()}
        tap = call.media.tap
        if tap is not None:
            out["taps"] = [sink.describe() for sink in tap.sinks]
        return out

    def request_keyframe(self, session: str, *, from_webrtc: bool) -> bool:
        """Ask a leg's sender for a video keyframe (PLI toward the browser, PLI + FIR toward the
        legacy peer): a SIP INFO ``picture_fast_update`` (RFC 5168) from the other leg. A transcoded
        stream asks its encoder instead. False when there is no video to ask about."""
        call = self._get(session)
        stream = call.media.streams.get("video")
        if stream is None:
            return False
        stream.keyframe_wanted(toward_legacy=from_webrtc, now=monotonic())
        return True

    def on_keyframe_request(self, callback: Callable[[str, str], None]) -> None:
        """``callback(session, call_id)`` whenever the plane asks the legacy peer for a keyframe
        over RTCP: the B2BUA may add a SIP INFO ``picture_fast_update`` for phones without RTCP
        feedback (RFC 5168)."""
        self._keyframe_callbacks.append(callback)

    def _keyframe_requested(self, session: str, kind: str) -> None:
        call = self._sessions.get(session)
        if call is None or kind != "video":
            return
        for callback in list(self._keyframe_callbacks):
            try:
                callback(session, call.call_id)
            except Exception:
                log.exception("media plane: on_keyframe_request callback raised for %s", session)

    def on_failure(self, callback: Callable[[str, str], None]) -> None:
        """``callback(session, reason)`` when a session fails: DTLS failure or fingerprint mismatch,
        ICE consent lost (RFC 7675), nothing connected or no media for the configured time. The
        session keeps its resources until :meth:`delete`."""
        self._callbacks.append(callback)

    # -- taps: recording, forwarding -----------------------------------------------------------------

    def on_answered(self, callback: Callable[[str, str], None]) -> None:
        """``callback(session, call_id)`` once per session, when its first answer starts relaying
        (the recording and forwarding rules hook here); exceptions are logged."""
        self._answered.append(callback)

    def call_id(self, session: str) -> str:
        return self._get(session).call_id

    def attach(self, session: str, sink: TapSink) -> None:
        """Hand every plain RTP packet the session receives to ``sink`` (rtc2sip.media.tap), from now
        until :meth:`detach` or the session's end (the sink is closed then)."""
        call = self._get(session)
        tap = call.media.tap
        if tap is None:
            tap = Tap(session, call.codecs)
        tap.add(sink)
        call.media.tap = tap

    def detach(self, session: str, sink: TapSink) -> bool:
        """Stop feeding and close ``sink``; False when it was not attached."""
        call = self._sessions.get(session)
        tap = call.media.tap if call is not None else None
        if call is None or tap is None:
            return False
        found = tap.remove(sink)
        if not tap.sinks:
            call.media.tap = None
        return found

    def start_recording(self, session: str) -> str:
        """Record this session's call now (whatever the rule); returns the sidecar's path."""
        if self.recorder is None:
            raise MediaPlaneError("recording is not configured ([recording])")
        return str(self.recorder.start(session).sidecar)

    def stop_recording(self, session: str) -> bool:
        return self.recorder is not None and self.recorder.stop(session)

    def start_forward(self, session: str, host: str, port: int) -> str:
        """Fork this session's audio as plain RTP to ``host``:``port`` (legacy leg) and ``port`` + 2
        (browser leg); returns the path of the ``.sdp`` a player opens."""
        if self.forwarder is None:
            raise MediaPlaneError("forwarding is not available")
        return str(self.forwarder.start(session, (host, port)).sdp_path)

    def stop_forward(self, session: str) -> bool:
        return self.forwarder is not None and self.forwarder.stop(session)

    def _set_codecs(self, call: _Call, mapping: Mapping, legacy_sdp: SessionDescription,
                    webrtc_sdp: SessionDescription) -> None:
        call.codecs = _leg_codecs(mapping, legacy_sdp, webrtc_sdp)
        if call.media.tap is not None:
            call.media.tap.set_codecs(call.codecs)

    def _fire_answered(self, call: _Call) -> None:
        if call.answered:
            return
        call.answered = True
        for callback in list(self._answered):
            try:
                callback(call.id, call.call_id)
            except Exception:
                log.exception("media plane: on_answered callback raised for %s", call.id)

    async def start(self) -> None:
        """Open the shared WebRTC socket now (else the first call opens it): a port taken by someone
        else then stops the start instead of the first call."""
        self._open_mux()

    def _open_mux(self) -> UdpMux | None:
        if not self._shared or self.mux is not None:
            return self.mux
        mux = UdpMux(asyncio.get_running_loop())
        mux.open(_mux_hosts(self.host, self._addresses), self.settings.media.webrtc_port, self.ports,
                 self.settings.webrtc2sip.rtp_buffsize)
        self.mux = mux
        log.info("media plane: every browser leg on UDP %s", mux.describe())
        return mux

    async def close(self) -> None:
        """Delete every session, close the shared socket."""
        for session in list(self._sessions):
            await self.delete(session)
        mux, self.mux = self.mux, None
        if mux is not None:
            mux.close()

    def webrtc_socket_stats(self) -> dict[str, int]:
        """The shared WebRTC socket's counters (:meth:`rtc2sip.media.udpmux.UdpMux.stats`; /metrics);
        empty with a socket per call."""
        return self.mux.stats() if self.mux is not None else {}

    @property
    def sessions(self) -> list[str]:
        return list(self._sessions)

    # -- transcoding --------------------------------------------------------------------------------

    def _offer_policy(self, call: _Call | None = None) -> BreakerPolicy:
        """The policy for a new offer: the coder's codecs only while a slot is free (or the call
        holds one already), so that a call over the limit is refused rather than left silent."""
        policy = self.policy
        if not policy.codecs.transcoding:
            return policy
        pool = self.coder
        holds = call is not None and pool is not None and pool.holds(call.id)
        if pool is not None and (holds or pool.active < pool.max_sessions):
            return policy
        return dataclasses.replace(policy, codecs=dataclasses.replace(policy.codecs, transcoding=False))

    def _note_overflow(self, call: _Call, policy: BreakerPolicy, sent: SessionDescription,
                       full: Callable[[BreakerPolicy], SessionDescription]) -> None:
        """Over ``max_transcoded_calls`` an offer goes out without the coder's codecs; remember for
        which kinds it would have had more, so that the answer can tell a stream lost to the limit."""
        call.over_limit = set()
        if policy.codecs.transcoding or not self.policy.codecs.transcoding:
            return
        try:
            wanted = full(self.policy)
        except SdpError:
            return
        for kind in MEDIA_KINDS:
            had = sum(len(m.formats) for m in sent.media if m.kind == kind and not m.rejected)
            if sum(len(m.formats) for m in wanted.media if m.kind == kind and not m.rejected) > had:
                call.over_limit.add(kind)

    def _check_overflow(self, call: _Call, mapping: Mapping) -> None:
        """``transcoding_overflow = "reject"``: a stream the limit cost (the coder's codecs
        were left out of the offer and the answer took none) refuses the call with 488; with
        ``"audio-only"`` (default) the call goes on without it (a video section rejected). The far side
        may have rejected it for want of video at all: "reject" then refuses calls only under load."""
        lost = {m.kind for m in mapping.media if m.rejected and m.kind in call.over_limit}
        call.over_limit = set()
        if lost and self.settings.limits.transcoding_overflow == "reject":
            log.info("media session %s: %s lost to max_transcoded_calls: 488", call.id, "/".join(sorted(lost)))
            raise NoCommonCodec(f"{' and '.join(sorted(lost))} needs transcoding and the media coder is busy")

    async def _open_coders(self, call: _Call, mapping: Mapping, legacy_sdp: SessionDescription,
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
                stream = call.media.streams.get(mm.kind)
                if stream is None:
                    continue
                if not mm.transcode:
                    if stream.coder is not None:
                        links[mm.kind] = None
                    continue
                plan = _TranscodePlan.of(mm, legacy_sdp.media[mm.legacy_index], webrtc_sdp.media[mm.webrtc_index])
                if stream.coder is not None and stream.coder.description == plan.description:
                    continue  # same codecs after a re-INVITE: keep the coder and its state
                links[mm.kind] = await self._open_link(call, mm.kind, plan)
        except BaseException:
            for link in links.values():
                if link is not None:
                    await link.pool.close(link.session)
            raise
        return links

    async def _open_link(self, call: _Call, kind: str, plan: _TranscodePlan) -> CoderLink:
        from ..coder import AudioTranscoder, CoderBusy

        pool = self.coder
        if pool is None:
            raise NoCommonCodec("the legs share no codec and the media coder is off")
        stream = call.media.streams[kind]
        now = monotonic()
        to_legacy_ts, to_webrtc_ts = stream.next_timestamp(True, now), stream.next_timestamp(False, now)
        playback, capture = self.settings.webrtc2sip.codec_opus_maxrates
        p = plan
        if kind == "video":
            return await self._open_video_link(call, plan, to_legacy_ts, to_webrtc_ts)

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
            session = await pool.open(call.id, to_legacy=to_legacy, to_webrtc=to_webrtc)
        except CoderBusy as exc:
            log.info("media session %s: %s needs transcoding, refused: %s", call.id, kind, exc)
            raise NoCommonCodec(f"no common codec and {exc}") from exc
        return CoderLink(pool, session, plan.from_webrtc, plan.from_legacy, plan.description)

    async def _open_video_link(self, call: _Call, p: _TranscodePlan, to_legacy_ts: int | None,
                               to_webrtc_ts: int | None) -> CoderLink:
        """VP8 ⇄ H.264 (rtc2sip.coder.video), one transcoder per direction at ``video-size-pref``."""
        from ..coder import CoderBusy
        from ..coder.video import VideoTranscoder

        pool = self.coder
        assert pool is not None
        settings = self.settings.webrtc2sip
        width, height = settings.video_size
        jb = settings.enable_videojb

        def to_legacy() -> VideoTranscoder:
            return VideoTranscoder(p.webrtc_codec, p.legacy_codec, src_pt=p.webrtc_pt, dst_pt=p.legacy_pt,
                                   width=width, height=height, h264_mode=p.legacy_h264_mode, jitter_buffer=jb,
                                   dst_timestamp=to_legacy_ts)

        def to_webrtc() -> VideoTranscoder:
            return VideoTranscoder(p.legacy_codec, p.webrtc_codec, src_pt=p.legacy_pt, dst_pt=p.webrtc_pt,
                                   width=width, height=height, h264_mode=p.webrtc_h264_mode, jitter_buffer=jb,
                                   dst_timestamp=to_webrtc_ts)

        try:
            session = await pool.open(call.id, max_pending=VIDEO_MAX_PENDING, to_legacy=to_legacy, to_webrtc=to_webrtc)
        except CoderBusy as exc:
            log.info("media session %s: video needs transcoding, refused: %s", call.id, exc)
            raise NoCommonCodec(f"no common video codec and {exc}") from exc
        return CoderLink(pool, session, p.from_webrtc, p.from_legacy, p.description)

    async def _configure(self, call: _Call, configs: list[StreamConfig], links: dict[str, CoderLink | None]) -> None:
        """New stream parameters and coders at once (no packet in between sees one without the other)."""
        call.media.configure_streams(configs)
        old = [call.media.set_coder(kind, link) for kind, link in links.items()]
        for link in old:
            if link is not None:
                await link.pool.close(link.session)

    # -- internals ----------------------------------------------------------------------------------

    def _get(self, session: str) -> _Call:
        call = self._sessions.get(session)
        if call is None:
            raise UnknownSession(session)
        return call

    async def _new_call(self, call_id: str, kinds: Iterable[str]) -> _Call:
        session_id = secrets.token_hex(8)
        media = MediaSession(
            session_id,
            host=self.host,
            legacy_host=self.legacy_host,
            ports=self.ports,
            certificate=self.certificate,
            symmetric=self._symmetric,
            on_failure=lambda reason: self._failed(session_id, reason),
            media_timeout=self.media_timeout,
            connect_timeout=self.connect_timeout,
            addresses=self._addresses,
            stun_server=await self._stun_server(),
            avpf_tail=self.settings.webrtc2sip.avpf_tail_length,
            mux=self._open_mux(),
        )
        media.on_keyframe_request = lambda kind: self._keyframe_requested(session_id, kind)
        await media.open(kinds)
        legacy_local = LegacyEndpoint(self._legacy_address, {}, rtcp_mux=True)
        call = _Call(session_id, call_id, media, legacy_local, str(secrets.randbits(62)))
        self._sessions[session_id] = call
        return call

    async def _drop(self, call: _Call) -> None:
        self._sessions.pop(call.id, None)
        await call.media.close()

    def _failed(self, session: str, reason: str) -> None:
        for callback in list(self._callbacks):
            try:
                callback(session, reason)
            except Exception:
                log.exception("media plane: on_failure callback raised for %s", session)

    def _legacy_local(self, call: _Call) -> LegacyEndpoint:
        """The legacy leg as the media session has it now (ports may grow on a re-INVITE)."""
        cryptos: dict[str, tuple[Crypto, ...]] = {}
        if self.policy.srtp != "none":
            for kind, stream in call.media.streams.items():
                cryptos[kind] = (Crypto.parse(str(stream.sdes_local)),)
        call.legacy_local = dataclasses.replace(call.legacy_local, ports=call.media.legacy_ports, cryptos=cryptos)
        return call.legacy_local

    def _webrtc_local(self, call: _Call) -> WebRtcEndpoint:
        media = call.media
        candidates = tuple(media.ice.local_candidates)
        # Announce exactly the SSRC we send (TESTING.md: Chromium plays silence for another one).
        ssrcs = {
            kind: SsrcAnnouncement(s.webrtc_ssrc, media.cname, f"rtc2sip-{call.id}", f"{kind}-{call.id}")
            for kind, s in media.streams.items()
        }
        return WebRtcEndpoint(
            media.ice.local_ufrag, media.ice.local_pwd, (self._fingerprint,), candidates,
            ice_lite=False, session_id=call.webrtc_session_id, ssrcs=ssrcs, rtcp_fb=VIDEO_FEEDBACK,
            # Received only: the relay demultiplexes the browser's packets by it (RFC 8843 §9.2). What
            # the gateway sends needs none, its SSRCs are announced (RFC 8843 §9.2 allows either).
            extmaps=(MID_EXTENSION,),
        )

    async def _stun_server(self) -> tuple[str, int] | None:
        """``stun-server`` when ``enable-icestun`` is on, its name resolved (once an hour at most)."""
        conf = self.settings.webrtc2sip
        server = conf.stun_server
        if not conf.enable_icestun or server is None:
            return None
        try:
            ipaddress.ip_address(server.host)
            return (server.host, server.port)
        except ValueError:
            pass
        now = monotonic()
        if self._stun_resolved is None or now - self._stun_resolved[1] > 3600:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(server.host, server.port, family=socket.AF_INET,
                                                                     type=socket.SOCK_DGRAM)
            except OSError as exc:
                log.warning("media plane: stun-server %s does not resolve: %s", server.host, exc)
                return None
            self._stun_resolved = ((str(infos[0][4][0]), server.port), now)
        return self._stun_resolved[0]


def _kinds(sdp: SessionDescription) -> list[str]:
    kinds: list[str] = []
    for m in sdp.media:
        if not m.rejected and m.is_rtp and m.kind in MEDIA_KINDS and m.kind not in kinds:
            kinds.append(m.kind)
    return kinds


def _leg_codecs(mapping: Mapping, legacy_sdp: SessionDescription, webrtc_sdp: SessionDescription) -> LegCodecs:
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
            codecs.sort(key=lambda c: c.name.lower() in _AUXILIARY)  # stable: the SDP's order otherwise
            legs[leg] = {c.pt: CodecInfo(c.name, c.clock_rate, c.channels, c.fmtp or "") for c in codecs}
        out[mm.kind] = legs
    return out


def _stream_configs(mapping: Mapping, legacy_sdp: SessionDescription,
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
            plan = _TranscodePlan.of(mm, legacy_sdp.media[mm.legacy_index], webrtc_sdp.media[mm.webrtc_index])
            to_legacy = plan.pt_map()
            configs.append(StreamConfig(mm.kind, to_legacy, {v: k for k, v in to_legacy.items()},
                                        plan.legacy_clock, mm.legacy_peer, plan.legacy_dtmf, plan.webrtc_clock,
                                        mm.mid, mm.webrtc_ssrcs, mm.mid_extmap))
            continue
        media = legacy_sdp.media[mm.legacy_index] if mm.legacy_index < len(legacy_sdp.media) else None
        clock_rate = _clock_rate(media, mm)
        dtmf = mm.legacy_dtmf_pt
        codec = media.codec(dtmf) if media is not None and dtmf is not None else None
        if codec is None or codec.clock_rate != clock_rate:
            dtmf = None  # events are timed on the stream's clock: only at the codec's rate
        configs.append(StreamConfig(mm.kind, dict(mm.to_legacy), dict(mm.to_webrtc), clock_rate,
                                    mm.legacy_peer, dtmf, None, mm.mid, mm.webrtc_ssrcs, mm.mid_extmap))
    return configs


@dataclass(frozen=True, slots=True)
class _TranscodePlan:
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
    def of(cls, mm: MediaMap, legacy: Media, webrtc: Media) -> _TranscodePlan:
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


def _clock_rate(media: Media | None, mm: MediaMap) -> int:
    """The relayed codec's RTP clock (RFC 3551 §4.1): the first non-auxiliary mapped payload type."""
    if media is not None:
        for pt in media.payload_types:
            codec = media.codec(pt)
            if pt in mm.to_webrtc and codec is not None and codec.name.lower() not in _AUXILIARY:
                return codec.clock_rate
    return 90000 if mm.kind == "video" else 8000


def _mux_hosts(host: str, addresses: list[str]) -> list[str]:
    """What the shared sockets bind: ``host`` itself, or for a wildcard one wildcard per address
    family announced (an IPv6 socket does not take IPv4 there: each family has its own)."""
    ip = ipaddress.ip_address(host)
    if not ip.is_unspecified:
        return [host]
    families = {ipaddress.ip_address(a.partition("%")[0]).version for a in addresses}
    return [h for h, v in (("0.0.0.0", 4), ("::", 6)) if v in families] or [host]


def _announced_addresses(host: str) -> list[str]:
    """The addresses to put in SDP for ``host``: itself, or for a wildcard every local address with
    loopback added (aioice's get_host_addresses leaves it out, PERFORMANCE.md)."""
    ip = ipaddress.ip_address(host)
    if not ip.is_unspecified:
        return [host]
    from aioice.ice import get_host_addresses

    ipv6 = ip.version == 6
    found = get_host_addresses(use_ipv4=True, use_ipv6=ipv6)
    loopback = "::1" if ipv6 and not found else "127.0.0.1"
    return [*found, loopback] if loopback not in found else found

"""The RTCWeb Breaker's media plane behind a narrow API (create from an offer, complete with an answer,
update, delete, stats), in the manner of rtpengine's offer/answer/delete.

The B2BUA hands each SDP it receives to the plane and sends on what comes back; the plane never sees
SIP. Four moves cover both call directions and re-INVITEs (RFC 3264)::

    browser offer  --offer_from_webrtc-->  legacy offer     (allocates sockets)
    legacy answer  --answer_from_legacy--> browser answer   (starts relaying)
    legacy offer   --offer_from_legacy-->  browser offer    (allocates sockets)
    browser answer --answer_from_webrtc--> legacy answer    (starts relaying)

``update`` is a new offer in an existing session (RFC 3264 §8: hold, resume, ICE restart per RFC 8839
§4.4.1.1.1), answered as above. DTLS roles follow RFC 5763 §5 and RFC 8842 §5.3, ICE roles RFC 8445
§6.1; DTMF digits are RFC 4733 §3.2 events; keyframe requests back the SIP INFO of RFC 5168.

SDP translation is :mod:`rtc2sip.sdp.translate`; what the negotiated SDP means for each stream is
:mod:`rtc2sip.media.negotiation`, the Media Coder's set-up :mod:`rtc2sip.media.transcoding`,
transports :mod:`rtc2sip.media.session`, the packet path :mod:`rtc2sip.media.path`. Everything of a
session lives in its own sockets (the browser leg's routes on the shared WebRTC socket,
:mod:`rtc2sip.media.udpmux`) and task, so one
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

from ..sdp import (
    MID_EXTENSION,
    BreakerPolicy,
    Crypto,
    LegacyEndpoint,
    Mapping,
    SdpError,
    SessionDescription,
    SsrcAnnouncement,
    WebRtcEndpoint,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)
from ..sdp import Fingerprint as SdpFingerprint
from .certificate import Certificate
from .dtls import DtlsRole
from .fastlink import FastLink
from .negotiation import AUXILIARY, leg_codecs, relayed_kinds, stream_configs
from .path import CoderLink, StreamConfig
from .ports import PortAllocator
from .session import MediaSession
from .settings import PlaneSettings
from .tap import LegCodecs, Tap, TapSink
from .transcoding import Transcoding
from .udpmux import UdpMux

if TYPE_CHECKING:  # PyAV is loaded only where transcoding is enabled
    from ..coder import CoderPool
    from .forward import Forwarder
    from .recording import Recorder

__all__ = ["DTMF_EVENTS", "InvalidState", "MediaPlane", "MediaPlaneError", "UnknownSession"]

log = logging.getLogger("rtc2sip.media")

# RTCP feedback the relay implements for video (media/feedback.py), offered and answered to browsers
# (RFC 4585 §4.2, RFC 5104 §7.1, REMB): NACKs answered from a history, PLI/FIR/REMB translated.
VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
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
        self.policy = BreakerPolicy.from_settings(settings.webrtc2sip)
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
        # [media] fast_path: the compiled relay engine (media.fastlink), started with the first call
        self._fast_setting: str | None = settings.media.fast_path
        self.fast: FastLink | None = None
        self._stun_resolved: tuple[tuple[str, int], float] | None = None
        self._fingerprint = SdpFingerprint("sha-256", certificate.fingerprint("sha-256").hex)
        conf = settings.webrtc2sip
        self._transcoding = Transcoding(coder, self.policy, opus_maxrates=conf.codec_opus_maxrates,
                                        video_size=conf.video_size,
                                        video_jitter_buffer=conf.enable_videojb,
                                        overflow=settings.limits.transcoding_overflow)

    # -- browser calls phone ------------------------------------------------------------------------

    async def offer_from_webrtc(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        """Browser offer → (session id, offer for the legacy side). Raises SdpError/NoCommonCodec."""
        kinds = relayed_kinds(offer)
        if not kinds:
            raise SdpError("the browser's offer has no audio or video RTP section")
        call = await self._new_call(call_id, kinds)
        try:
            policy = self._transcoding.offer_policy()
            legacy_offer, mapping = webrtc_offer_to_legacy(offer, self._legacy_local(call), policy)
            call.over_limit = self._transcoding.over_limit(
                policy, legacy_offer, lambda p: webrtc_offer_to_legacy(offer, self._legacy_local(call), p)[0])
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
        over_limit, call.over_limit = call.over_limit, set()
        self._transcoding.check_overflow(call.id, over_limit, mapping)
        peer = mapping.webrtc_peer
        if peer is None:
            raise SdpError("the browser's offer has no ICE/DTLS transport")
        setup = next((m.setup for m in browser_answer.media if not m.rejected and m.setup), "passive")
        # RFC 5763 §5: a=setup:passive in our answer makes us the DTLS server, active the client.
        role = DtlsRole.SERVER if setup == "passive" else DtlsRole.CLIENT
        links = await self._transcoding.open_coders(call.id, call.media.streams, mapping, answer, call.offer)
        call.media.set_remote_transport(peer.ufrag, peer.pwd, [str(f) for f in peer.fingerprints], role,
                                        peer.candidates, ice_lite=peer.ice_lite)
        await self._configure(call, stream_configs(mapping, answer, call.offer), links)
        self._set_codecs(call, mapping, answer, call.offer)
        call.mapping, call.pending, call.offer, call.restart_ice = mapping, _Pending.NONE, None, False
        self._fire_answered(call)
        return browser_answer

    # -- phone calls browser ------------------------------------------------------------------------

    async def offer_from_legacy(self, call_id: str, offer: SessionDescription) -> tuple[str, SessionDescription]:
        """Legacy offer → (session id, offer for the browser): ICE-lite, a=setup:actpass, BUNDLE."""
        kinds = relayed_kinds(offer)
        if not kinds:
            raise SdpError("the legacy offer has no audio or video RTP section")
        call = await self._new_call(call_id, kinds)
        try:
            policy = self._transcoding.offer_policy()
            browser_offer, mapping = legacy_offer_to_webrtc(offer, self._webrtc_local(call), policy)
            call.over_limit = self._transcoding.over_limit(
                policy, browser_offer, lambda p: legacy_offer_to_webrtc(offer, self._webrtc_local(call), p)[0])
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
        over_limit, call.over_limit = call.over_limit, set()
        self._transcoding.check_overflow(call.id, over_limit, mapping)
        peer = mapping.webrtc_peer
        if peer is None:
            raise SdpError("the browser's answer has no ICE/DTLS transport")
        # The browser chose (RFC 8842 §5.3): active makes it the client, passive makes us the client.
        role = DtlsRole.SERVER if peer.setup == "active" else DtlsRole.CLIENT
        links = await self._transcoding.open_coders(call.id, call.media.streams, mapping, call.offer, answer)
        call.media.set_remote_transport(peer.ufrag, peer.pwd, [str(f) for f in peer.fingerprints], role,
                                        peer.candidates, ice_lite=peer.ice_lite)
        await self._configure(call, stream_configs(mapping, call.offer, answer), links)
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
        for kind in relayed_kinds(offer):
            await call.media.add_kind(kind)
        if from_webrtc:
            transport = next((m for m in offer.media if not m.rejected and m.ice_ufrag), None)
            ice = call.media.ice
            if (transport is not None and ice.remote_ufrag is not None
                    and (transport.ice_ufrag, transport.ice_pwd) != (ice.remote_ufrag, ice.remote_pwd)):
                # RFC 8839 §4.4.1.1.1: new remote credentials are an ICE restart; ours change as well.
                ice.restart()
            legacy_offer, mapping = webrtc_offer_to_legacy(offer, self._legacy_local(call),
                                                           self._transcoding.offer_policy(call.id), call.mapping)
            call.mapping, call.pending, call.offer = mapping, _Pending.WEBRTC_OFFER, offer
            return legacy_offer
        browser_offer, mapping = legacy_offer_to_webrtc(offer, self._webrtc_local(call),
                                                        self._transcoding.offer_policy(call.id), call.mapping)
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
                                for c in list(pts.values())[:1] if c.name.lower() not in AUXILIARY}
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
        call.media.tap_changed()

    def detach(self, session: str, sink: TapSink) -> bool:
        """Stop feeding and close ``sink``; False when it was not attached."""
        call = self._sessions.get(session)
        tap = call.media.tap if call is not None else None
        if call is None or tap is None:
            return False
        found = tap.remove(sink)
        if not tap.sinks:
            call.media.tap = None
            call.media.tap_changed()
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
        call.codecs = leg_codecs(mapping, legacy_sdp, webrtc_sdp)
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
        else then stops the start instead of the first call. The fast path's engine starts here too
        and reads that socket from now on (its descriptors are the plane's from the start)."""
        mux, fast = self._open_mux(), self._fast_link()
        if fast is not None and mux is not None:
            try:
                fast.adopt(mux)
            except Exception as exc:  # the first call tries again; meanwhile Python reads the socket
                log.warning("media plane: the fast path did not take the shared WebRTC socket: %r", exc)

    def _open_mux(self) -> UdpMux | None:
        if not self._shared or self.mux is not None:
            return self.mux
        mux = UdpMux(asyncio.get_running_loop())
        mux.open(_mux_hosts(self.host, self._addresses), self.settings.media.webrtc_port, self.ports,
                 self.settings.webrtc2sip.rtp_buffsize)
        self.mux = mux
        log.info("media plane: every browser leg on UDP %s", mux.describe())
        return mux

    def _fast_link(self) -> FastLink | None:
        if self._fast_setting is not None:
            self.fast = FastLink.create(asyncio.get_running_loop(), self._fast_setting)
            self._fast_setting = None
        return self.fast

    async def close(self) -> None:
        """Delete every session, stop the fast path, close the shared socket."""
        for session in list(self._sessions):
            await self.delete(session)
        fast, self.fast = self.fast, None
        if fast is not None:
            fast.close()
        mux, self.mux = self.mux, None
        if mux is not None:
            mux.close()

    def webrtc_socket_stats(self) -> dict[str, int]:
        """The shared WebRTC socket's counters (:meth:`rtc2sip.media.udpmux.UdpMux.stats`; /metrics);
        empty with a socket per call; and the fast path's (``fastpath_`` keys) when it runs."""
        out = self.mux.stats() if self.mux is not None else {}
        if self.fast is None:
            return out
        fast = self.fast.stats()
        if self.mux is not None:  # what the engine read and sent on the shared socket is the socket's too
            out["received"] = out.get("received", 0) + fast["fastpath_webrtc_in"]
            out["sent"] = out.get("sent", 0) + fast["fastpath_webrtc_out"]
        return out | fast

    @property
    def sessions(self) -> list[str]:
        return list(self._sessions)

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
            fast_link=self._fast_link(),
            call_id=call_id,
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

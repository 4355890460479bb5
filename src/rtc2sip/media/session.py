"""The transport side of one bridged call: sockets, ICE/DTLS/SRTP glue, BUNDLE, housekeeping, stats.

Implements RFC 8843 §9.2 (BUNDLE: the browser's packets told apart by learnt SSRC, the MID header
extension, a=ssrc (RFC 5576), then an unambiguous payload type; SRTCP by the sender SSRC of its first
packet), RFC 5761 (rtcp-mux), RFC 5763 §5 and RFC 5764 §4.2 (DTLS roles, SRTP keys from the DTLS
handshake), RFC 6347 §4.2.4 (flight retransmission timers), RFC 7675 (consent freshness), RFC 4733
§2.5.1 (the gateway's own DTMF events toward the legacy peer) and RFC 3550 §6.2 (RTCP timing).

A :class:`MediaSession` owns:

- the WebRTC leg's UDP transport (BUNDLE, RFC 8843, and rtcp-mux, RFC 5761: STUN, DTLS, SRTP
  and SRTCP all share it), demultiplexed by first byte (RFC 7983 §7,
  :class:`~rtc2sip.media.path.WebRtcProtocol`) into the ICE agent (full ICE on aioice,
  :mod:`rtc2sip.media.ice`, which sees STUN only), the DTLS endpoint, and SRTP: by default its view
  of the plane's one shared socket (:mod:`rtc2sip.media.udpmux`, which routes the session's
  datagrams to it), else a socket of its own (``[media] webrtc_socket = "per-call"``);
- per media kind, a :class:`~rtc2sip.media.stream.Stream` and its RTP/RTCP socket pair for the legacy
  leg (plain RTP/AVP, or SDES SRTP when the legacy peer agreed to a=crypto), with symmetric RTP
  latching (webrtc2sip ``enable-rtp-symetric``);
- one housekeeping task: DTLS retransmission timers (RFC 6347 §4.2.4), RTCP reports, consent
  (RFC 7675) and media timeouts.

Packets are relayed without decoding by each stream's per-packet path (:mod:`rtc2sip.media.path`);
RTCP is terminated per leg and video feedback translated (:mod:`rtc2sip.media.feedback`); a stream
whose legs share no codec goes through the Media Coder (:mod:`rtc2sip.media.stream`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from time import monotonic
from typing import Any, Protocol, cast

from ..sdp import Candidate
from . import ice as _ice
from .certificate import Certificate
from .dtls import DtlsEndpoint, DtlsRole, DtlsState, FingerprintMismatchError
from .feedback import LegacyRtcpProtocol
from .heap import TRIMMER
from .ice import IceAgent
from .path import CoderLink, StreamConfig, WebRtcProtocol
from .ports import Address, PortAllocator
from .rawudp import RawTransport
from .rtp import header_extension
from .sessionstats import session_stats
from .srtp import SrtpError, SrtpSession
from .stream import Stream
from .tap import Tap
from .udpmux import UdpMux

__all__ = ["MAX_LEARNT_SSRCS", "FastLinkView", "MediaSession"]

log = logging.getLogger("rtc2sip.media")

_RTCP_SENDER = struct.Struct("!I")
# Browser sources remembered for BUNDLE demultiplexing: a call has a few (audio, video, their RTX).
MAX_LEARNT_SSRCS = 32
# How long an established DTLS association keeps its OpenSSL connection: long enough for a peer that
# lost our last flight to retransmit its own (1 s doubling, RFC 6347 §4.2.4), short against a call.
DTLS_LINGER = 20.0


class FastLinkView(Protocol):
    """The plane's link to the compiled fast path (:class:`rtc2sip.media.fastlink.FastLink`), as a
    session calls it: hand the call over, take it back, copy the engine's figures before a read."""

    def take(self, session: MediaSession) -> bool: ...
    def release(self, session: MediaSession, *, closing: bool = False) -> None: ...
    def sync(self, session: MediaSession) -> None: ...
    def set_modes(self, session: MediaSession) -> None: ...
    def update_remote(self, session: MediaSession) -> None: ...


class MediaSession:
    """The transport side of one call; :class:`rtc2sip.media.plane.MediaPlane` drives it from SDP."""

    def __init__(
        self,
        session_id: str,
        *,
        host: str,
        ports: PortAllocator,
        certificate: Certificate,
        symmetric: bool,
        on_failure: Callable[[str], None],
        media_timeout: float,
        connect_timeout: float,
        addresses: Iterable[str] | None = None,
        stun_server: tuple[str, int] | None = None,
        avpf_tail: tuple[int, int] | None = (100, 400),
        legacy_host: str | None = None,
        mux: UdpMux | None = None,
        fast_link: FastLinkView | None = None,
        call_id: str = "",
    ) -> None:
        self.id = session_id
        self.call_id = call_id  # the SIP Call-ID, for the log
        # The compiled fast path (media.fastlink): the call is handed to it after DTLS; ``fast`` is
        # its hold on the call (None: Python relays), ``fast_keys`` its own SRTP contexts
        self._fast_link = fast_link
        self.fast: Any = None
        self.fast_keys: tuple[SrtpSession, SrtpSession] | None = None
        # (rx, tx) Python's own contexts, kept for SRTCP only while its RTP goes through fast_keys:
        # after the engine let go of the call, only its contexts know the RTP rollover counters
        # (RFC 3711 §3.3.1), and SRTCP's index lives in the contexts that sent it (see fastlink)
        self.srtcp_keys: tuple[SrtpSession, SrtpSession] | None = None
        # the plane's shared WebRTC socket ([media] webrtc_socket = "shared"); None: a socket per call
        self._mux = mux
        # webrtc2sip avpf-tail-length: (min, max) packets of video history for NACKs; None: none
        self.avpf_tail = avpf_tail
        # A keyframe request sent to the legacy peer (kind): the plane adds a SIP INFO for it
        self.on_keyframe_request: Callable[[str], None] | None = None
        self.host = host
        self.legacy_host = legacy_host or host  # the legacy sockets' address (its family may differ)
        # host candidates: the plane's announced addresses (a wildcard ``host`` has several)
        self._addresses = list(addresses) if addresses is not None else [host]
        self._stun_server = stun_server
        self._ports = ports
        self._certificate = certificate
        self._symmetric = symmetric
        self._on_failure = on_failure
        self._media_timeout = media_timeout
        self._connect_timeout = connect_timeout
        self.cname = secrets.token_urlsafe(12)
        self.ice = IceAgent(on_selected=self._ice_selected, name=session_id)
        self.dtls: DtlsEndpoint | None = None
        self.dtls_role: DtlsRole | None = None
        self._dtls_connected_at: float | None = None
        # We offered actpass and the answer is not in yet: a ClientHello may outrun it (the browser
        # answered active, as Chrome does), so the first DTLS packet makes us the server.
        self.accept_early_dtls = False
        self.srtp_tx: SrtpSession | None = None
        self.srtp_rx: SrtpSession | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.webrtc_port = 0
        self.streams: dict[str, Stream] = {}
        # BUNDLE demultiplexing of the browser's packets (RFC 8843 §9.2, see demultiplex())
        self.streams_by_pt: list[Stream | None] = [None] * 128
        self.streams_by_ssrc: dict[int, Stream] = {}  # learnt, at most MAX_LEARNT_SSRCS
        self.streams_by_mid: dict[bytes, Stream] = {}
        self.streams_by_announced: dict[int, Stream] = {}  # the browser's a=ssrc
        self.ambiguous_pts: frozenset[int] = frozenset()
        self.mid_extmap = 0  # 0: no MID header extension negotiated
        self.sources_learnt = {"mid": 0, "ssrc": 0, "pt": 0}  # how demultiplex() learnt each source
        self.dropped = 0
        self.srtp_errors = 0
        self.failed: str | None = None
        self.started = monotonic()
        self.answered: float | None = None
        self._ports_held: list[int] = []
        self._open_transports = 0
        self._all_closed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._dtmf_lock: asyncio.Lock | None = None
        # sinks of every plain RTP packet received (rtc2sip.media.tap); None: no sink, no cost
        self.tap: Tap | None = None

    # -- life cycle ---------------------------------------------------------------------------------

    async def open(self, kinds: Iterable[str]) -> None:
        """Bind the WebRTC socket and a legacy pair per kind, start housekeeping. On error, closes."""
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        try:
            if self._mux is not None:
                protocol = WebRtcProtocol(self)
                view = self._mux.attach(protocol)
                self._open_transports += 1
                protocol.connection_made(cast(asyncio.BaseTransport, view))
                self.webrtc_port = self._mux.port
                self.ice.use_routes(view)
            else:
                sock = self._ports.bind_one(self.host)
                self.webrtc_port = sock.getsockname()[1]
                self._ports_held.append(self.webrtc_port)
                self._open_transports += 1
                if self._fast_link is not None:  # a transport whose reading the fast path can stop
                    RawTransport(loop, sock, WebRtcProtocol(self))
                else:
                    await loop.create_datagram_endpoint(lambda: WebRtcProtocol(self), sock=sock)
            assert self.transport is not None
            await self.ice.gather(self.transport, self._addresses, self.webrtc_port, self._stun_server,
                                  self._mux.srflx if self._mux is not None else None)
            for kind in kinds:
                await self.add_kind(kind)
        except BaseException:
            await self.close()
            raise
        self._task = loop.create_task(self._housekeeping(), name=f"rtc2sip-media-{self.id}")

    async def add_kind(self, kind: str) -> None:
        if kind in self.streams:
            return
        loop = asyncio.get_running_loop()
        rtp, rtcp = self._ports.bind_pair(self.legacy_host)
        port = rtp.getsockname()[1]
        self._ports_held += [port, port + 1]
        stream = Stream(self, kind, port, self._symmetric)
        self.streams[kind] = stream
        self._open_transports += 2
        try:
            if self._fast_link is not None:  # a transport whose reading the fast path can stop
                RawTransport(loop, rtp, stream)
            else:
                await loop.create_datagram_endpoint(lambda: stream, sock=rtp)
        except BaseException:
            rtcp.close()
            self._open_transports -= 1
            raise
        await loop.create_datagram_endpoint(lambda: LegacyRtcpProtocol(stream), sock=rtcp)

    @property
    def mux(self) -> UdpMux | None:
        return self._mux

    @property
    def closing(self) -> bool:
        return self._closed

    def _release_fast(self, closing: bool = False) -> None:
        if self._fast_link is not None and self.fast is not None:
            self._fast_link.release(self, closing=closing)

    def _take_fast(self) -> None:
        if self._fast_link is not None and self.srtp_rx is not None and self.failed is None and not self._closed:
            self._fast_link.take(self)

    def tap_changed(self) -> None:
        """A tap was attached or the last one detached: the fast path hands copies up, or stops."""
        if self._fast_link is not None:
            self._fast_link.set_modes(self)

    @property
    def legacy_ports(self) -> dict[str, int]:
        return {kind: s.legacy_port for kind, s in self.streams.items()}

    def closed_one(self) -> None:
        self._open_transports -= 1
        if self._open_transports <= 0 and self._all_closed is not None:
            self._all_closed.set()

    async def close(self) -> None:
        """Release everything, whatever the state: task, DTLS (close_notify), sockets, ports."""
        if self._closed:
            return
        self._closed = True
        try:
            # the engine lets go of the call's sockets before they close, whatever follows
            self._release_fast(closing=True)
        finally:
            await self._close()

    async def _close(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self.dtls is not None and self.dtls.state is DtlsState.CONNECTED:
            self.dtls.close()
            self._flush_dtls(None)
        await self.ice.close()  # its checks and consent tasks; the socket is closed below
        if len(self.streams) > 1:
            log.info("media session %s: BUNDLE sources learnt by %s (mid extmap %s)", self.id,
                     self.sources_learnt, self.mid_extmap or None)
        for kind, stream in self.streams.items():
            history = stream.history
            if kind == "video" and (stream.feedback or history is not None):
                log.info("media session %s: video feedback: %s", self.id,
                         dict(stream.feedback) | {"history_depth": history.depth if history is not None else 0,
                                                  "transcoded": stream.coder is not None})
            if stream.coder is not None:
                log.info("media session %s: %s transcoding ended: %s", self.id, kind, stream.coder_stats())
            link, stream.coder = stream.coder, None
            stream.coded_to_legacy.clear()
            stream.coded_to_webrtc.clear()
            if link is not None:
                await link.pool.close(link.session)
        transports: list[asyncio.BaseTransport | None] = [self.transport]
        for stream in self.streams.values():
            transports += [stream.legacy_rtp, stream.legacy_rtcp]
        for transport in transports:
            if transport is not None:
                transport.close()
        if self._open_transports > 0 and self._all_closed is not None:
            try:
                await asyncio.wait_for(self._all_closed.wait(), 2.0)
            except TimeoutError:
                log.warning("media session %s: sockets did not close in time", self.id)
        self._ports.release(*self._ports_held)
        self._ports_held.clear()
        self.srtp_tx = self.srtp_rx = None
        self.dtls = None

    def fail(self, reason: str) -> None:
        """Stop relaying and tell the plane, once; delete() still has to release the session."""
        if self.failed is not None or self._closed:
            return
        self.failed = reason
        try:
            self._release_fast()  # the counters come back to Python; nobody relays from now on
        except Exception:
            log.exception("media session %s: fast path not released", self.id)
        self.srtp_tx = self.srtp_rx = None
        for stream in self.streams.values():
            stream.legacy_dest = None
        log.info("media session %s failed: %s", self.id, reason)
        try:
            self._on_failure(reason)
        except Exception:
            log.exception("media session %s: failure callback raised", self.id)

    # -- signalling ---------------------------------------------------------------------------------

    def configure_streams(self, configs: Iterable[StreamConfig]) -> None:
        # A new answer: Python applies it to its own state, then the engine takes the call again.
        self._release_fast()
        try:
            self._configure_streams(configs)
        finally:
            self._take_fast()

    def _configure_streams(self, configs: Iterable[StreamConfig]) -> None:
        table: list[Stream | None] = [None] * 128
        ambiguous: set[int] = set()
        by_mid: dict[bytes, Stream] = {}
        announced: dict[int, Stream] = {}
        mid_extmap = 0
        for config in configs:
            stream = self.streams[config.kind]
            stream.configure(config)
            for pt in config.to_legacy:
                if table[pt] is None:
                    table[pt] = stream
                elif table[pt] is not stream:
                    ambiguous.add(pt)
            if config.mid is not None:
                by_mid[config.mid.encode()] = stream
            for ssrc in config.webrtc_ssrcs:
                announced.setdefault(ssrc, stream)
            if config.mid_extmap is not None and not mid_extmap:
                mid_extmap = config.mid_extmap  # one ID for every bundled section (RFC 8843 §9.1)
        self.streams_by_pt = table
        self.ambiguous_pts = frozenset(ambiguous)
        self.streams_by_mid = by_mid
        self.streams_by_announced = announced
        self.mid_extmap = mid_extmap
        # A new answer may move sources between sections: learn them again.
        self.streams_by_ssrc = {}
        if self.answered is None:
            self.answered = monotonic()

    def demultiplex(self, plain: bytes, ssrc: int) -> Stream | None:
        """The stream of a browser packet whose SSRC is not learnt yet (RFC 8843 §9.2): by the MID
        header extension, else the SSRCs the browser announced (RFC 5576), else the payload type
        when only one stream uses it. The SSRC is learnt for the packets that follow, so this runs
        for the first packet of each source only; a payload type several streams share routes to
        the first of them without being learnt (a MID or an a=ssrc may tell better later). A payload
        type no stream relays (RTX, FEC the answer left out) is dropped and its source not learnt."""
        pt = plain[1] & 0x7F
        by_pt = self.streams_by_pt[pt]
        if by_pt is None:
            return None
        stream: Stream | None = None
        how = "mid"
        if self.mid_extmap:
            mid = header_extension(plain, self.mid_extmap)
            if mid is not None:
                stream = self.streams_by_mid.get(mid)
        if stream is None:
            stream, how = self.streams_by_announced.get(ssrc), "ssrc"
        if stream is None:
            stream, how = by_pt, "pt"
            if pt in self.ambiguous_pts:
                return stream
        self.sources_learnt[how] += 1
        learnt = self.streams_by_ssrc
        if len(learnt) >= MAX_LEARNT_SSRCS:
            # Bounded whatever the browser sends; the sources still in use are learnt again.
            learnt.clear()
        learnt[ssrc] = stream
        return stream

    def set_coder(self, kind: str, link: CoderLink | None) -> CoderLink | None:
        """Transcode the ``kind`` stream through ``link`` from now on (None: relay it as is again);
        returns the previous link, for the caller to close in its pool."""
        stream = self.streams[kind]
        if link is not None:
            self._release_fast()  # a transcoded call is Python's (its coder's output, RTCP, NACK)
        old, stream.coder = stream.coder, link
        if link is not None and old is None:
            log.info("media session %s: %s transcoded, %s", self.id, kind, link.description)
        elif link is None and old is not None:
            log.info("media session %s: %s relayed without transcoding again", self.id, kind)
        return old

    async def send_dtmf(self, kind: str, event: int, duration_ms: int, interval: float = 0.05) -> bool:
        """An RFC 4733 event of the gateway's own toward the legacy peer (RFC 4733 §2.5.1): updates
        every ``interval`` with the duration so far, the end packet sent three times (§2.5.1.4). Events
        go one after the other. False when the legacy leg has no telephone-event (nothing sent)."""
        stream = self.streams.get(kind)
        if stream is None or stream.legacy_dtmf_pt is None or stream.to_legacy is None or self._closed:
            return False
        if self._dtmf_lock is None:
            self._dtmf_lock = asyncio.Lock()
        async with self._dtmf_lock:
            units = max(1, stream.clock_rate * duration_ms // 1000)
            step = max(1, round(stream.clock_rate * interval))
            start: int | None = None
            done = 0
            while True:
                done = min(units, done + step)
                end = done >= units
                for _ in range(3 if end else 1):
                    start = stream.send_legacy_event(event, done, end, start, monotonic())
                    if start is None:
                        return False
                    if end:
                        await asyncio.sleep(interval / 2.5)
                if end:
                    return True
                await asyncio.sleep(interval)

    def set_remote_transport(self, ufrag: str, pwd: str, fingerprints: list[str], role: DtlsRole,
                             candidates: Sequence[Candidate] = (), *, ice_lite: bool = False) -> None:
        """The browser's ICE credentials, candidates and fingerprints, and our DTLS role (RFC 5763 §5)."""
        self.ice.set_remote(ufrag, pwd, candidates, lite=ice_lite)
        self.accept_early_dtls = False
        dtls = self.dtls
        if dtls is not None and dtls.role is role and dtls.state not in (DtlsState.FAILED, DtlsState.CLOSED):
            # Same association (a re-INVITE, or a ClientHello that outran the answer): pin it now.
            dtls.set_remote_fingerprints(fingerprints)
            self._flush_dtls(None)
            self._check_dtls()
            return
        self.srtp_tx = self.srtp_rx = None
        self._release_fast()  # a new DTLS association: new keys, taken again once they are known
        self.fast_keys = self.srtcp_keys = None
        self.dtls = DtlsEndpoint(self._certificate, role, fingerprints)
        self.dtls_role = role
        if role is DtlsRole.CLIENT and self.ice.selected is not None:
            self._start_client()

    # -- WebRTC leg slow paths ----------------------------------------------------------------------

    def stun_received(self, data: bytes, addr: Address) -> None:
        if self.failed is None and not self._closed:
            try:
                self.ice.datagram(data, addr)
            except Exception:  # aioice trusts authenticated checks: a malformed one must not escape
                self.dropped += 1
                log.exception("media session %s: STUN from %s:%d not handled", self.id, *addr[:2])

    def _ice_selected(self) -> None:
        # The ICE agent has a path (a check answered either way, or a nomination): a DTLS client
        # waiting for one starts now.
        dtls = self.dtls
        if dtls is not None and dtls.state is DtlsState.NEW and dtls.role is DtlsRole.CLIENT and not self._closed:
            self._start_client()
        if self._fast_link is not None and self.fast is not None:
            self._fast_link.update_remote(self)

    def _start_client(self) -> None:
        # Only once ICE has a path: a ClientHello before that would go nowhere (TESTING.md's race);
        # the housekeeping task retransmits it on OpenSSL's timer (RFC 6347 §4.2.4).
        assert self.dtls is not None
        self.dtls.start()
        self._flush_dtls(None)

    def dtls_received(self, data: bytes, addr: Address) -> None:
        if not self.ice.is_validated(addr) or self.failed is not None:
            self.dropped += 1
            return
        if self.dtls is None:
            if not self.accept_early_dtls:
                self.dropped += 1
                return
            self.dtls = DtlsEndpoint(self._certificate, DtlsRole.SERVER)
            self.dtls_role = DtlsRole.SERVER
        self.dtls.feed(data)
        self._flush_dtls(addr)
        self._check_dtls()

    def _flush_dtls(self, addr: Address | None) -> None:
        dtls, transport = self.dtls, self.transport
        if dtls is None or transport is None:
            return
        dest = addr or self.ice.selected
        for datagram in dtls.datagrams_to_send():
            if dest is not None:
                transport.sendto(datagram, dest)

    def _check_dtls(self) -> None:
        dtls = self.dtls
        if dtls is None:
            return
        if dtls.state is DtlsState.CONNECTED and self.srtp_rx is None and dtls.srtp_keys is not None:
            self.srtp_tx = dtls.srtp_keys.tx_session()
            self.srtp_rx = dtls.srtp_keys.rx_session()
            self.srtcp_keys = None
            self._dtls_connected_at = monotonic()
            log.debug("media session %s: DTLS connected, %s", self.id, dtls.srtp_profile)
            self._take_fast()
        elif dtls.state is DtlsState.FAILED:
            if isinstance(dtls.error, FingerprintMismatchError):
                self.fail(f"dtls fingerprint mismatch: {dtls.error}")
            else:
                self.fail(f"dtls failed: {dtls.error}")
        elif dtls.state is DtlsState.CLOSED and self.srtp_rx is not None:
            self.fail("dtls closed by the browser")

    @property
    def srtcp_rx(self) -> SrtpSession | None:
        if self.srtp_rx is None:
            return None
        return self.srtp_rx if self.srtcp_keys is None else self.srtcp_keys[0]

    @property
    def srtcp_tx(self) -> SrtpSession | None:
        if self.srtp_tx is None:
            return None
        return self.srtp_tx if self.srtcp_keys is None else self.srtcp_keys[1]

    def srtcp_received(self, data: bytes) -> None:
        rx = self.srtcp_rx
        if rx is None:
            return
        try:
            plain = rx.unprotect_rtcp(data)
        except SrtpError:
            self.srtp_errors += 1
            return
        now = monotonic()
        # RFC 8843 §9.2: a compound's first packet (SR or RR) names its sender; Chrome sends one
        # compound per sending stream, so a learnt source's reports concern that stream alone. A
        # source never seen in RTP (Chrome's receive-only streams report as SSRC 1) goes to every
        # stream, which keeps what names its own SSRC.
        stream = self.streams_by_ssrc.get(_RTCP_SENDER.unpack_from(plain, 4)[0]) if len(plain) >= 8 else None
        if stream is not None:
            stream.webrtc.last_in = now
            stream.webrtc_rtcp(plain)
            return
        for stream in self.streams.values():
            stream.webrtc.last_in = now
            stream.webrtc_rtcp(plain)

    # -- housekeeping -------------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            now = monotonic()
            delay = 1.0
            try:
                self._tick(now)
            except Exception as exc:
                log.exception("media session %s: housekeeping failed", self.id)
                self.fail(f"internal error: {exc}")
            dtls = self.dtls
            if dtls is not None and dtls.state is DtlsState.CONNECTING:
                due = dtls.next_timeout(now)
                if due is not None:
                    delay = min(delay, max(0.005, due - now))
            await asyncio.sleep(delay)

    def _tick(self, now: float) -> None:
        if self.failed is not None:
            return
        # The RTCP reports and the media timeout read the engine's figures; a sync costs ~100 µs of
        # Python per call, so only when a report is due or the stale figures would time the call out
        # (every second for every call was 14 % of a core at 600 calls: bench/relay.py)
        link = self._fast_link if self.fast is not None else None
        if link is not None and any(now >= stream.next_rtcp for stream in self.streams.values()):
            link.sync(self)
            link = None
        dtls = self.dtls
        if dtls is not None and dtls.state is DtlsState.CONNECTING:
            due = dtls.next_timeout(now)
            if due is not None and due <= now:
                dtls.handle_timeout(now)
                self._flush_dtls(None)
            self._check_dtls()
            if self.failed is not None:
                return
        done = self._dtls_connected_at
        if done is not None and now - done > DTLS_LINGER and dtls is not None and dtls.state is DtlsState.CONNECTED:
            dtls.release()
            self._dtls_connected_at = None
            TRIMMER.released(now)
        TRIMMER.tick(now)
        if self._mux is not None:
            self._mux.log_drops(now)
        if self.ice.consent_expired(now):
            self.fail(f"ice consent lost: no answer to our checks for {_ice.CONSENT_TIMEOUT:g} s (RFC 7675)")
            return
        if self.ice.failure is not None:
            self.fail(self.ice.failure)
            return
        if self.answered is not None and self.srtp_rx is None and now - self.answered > self._connect_timeout:
            what = "ICE" if self.ice.selected is None else "DTLS"
            self.fail(f"{what} did not connect within {self._connect_timeout:g} s")
            return
        if self.answered is not None and self._media_timeout > 0 and self.streams:
            answered = self.answered
            if now - self._last_media_in(answered) > self._media_timeout and link is not None:
                link.sync(self)
            if now - self._last_media_in(answered) > self._media_timeout:
                self.fail(f"no media for {self._media_timeout:g} s")
                return
        for stream in self.streams.values():
            stream.send_reports_if_due(now, self.cname)

    def _last_media_in(self, answered: float) -> float:
        """When the last packet came in on any leg of any stream (the answer, before any did)."""
        return max([answered] + [max(s.webrtc.last_in, s.legacy.last_in) for s in self.streams.values()])

    # -- observation ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        if self._fast_link is not None:
            self._fast_link.sync(self)
        return session_stats(self)

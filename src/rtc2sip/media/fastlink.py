"""The media plane's link to the compiled fast path (issue 10, :mod:`rtc2sip.media.fastpath`).

One :class:`FastLink` per :class:`~rtc2sip.media.plane.MediaPlane` (so one per media worker
process): one engine thread, its hand-up eventfd watched by the event loop. A call is handed over
(:meth:`FastLink.take`) once its SRTP keys are known (after DTLS): the engine gets the session (its
own libsrtp contexts for RTP, made from the same DTLS keys; Python keeps its contexts for SRTCP), a
stream per media kind with the phone-side RTP socket, the rewriters' state, the latch, the mode
(:attr:`Mode.COPY` while a tap is set: DTMF sink, recording, forwarding), and the browser's socket
(the plane's shared one, adopted by the engine at the first call, or the call's own). From then on
the engine relays RTP both ways and Python only sees what it hands up (:meth:`FastLink._readable`):
STUN, DTLS, SRTCP and datagrams of sources no session owns go to the shared socket's routing or the
call's protocol; a new browser SSRC to BUNDLE demultiplexing, then back to the engine; RTCP of a
muxed phone socket to the stream's RTCP; copies to the tap.

The call goes back to Python (:meth:`FastLink.release`) when it fails, closes, is transcoded, a
re-INVITE reconfigures it (taken again after), or DTLS starts over; the counters, receive
statistics, latch and rewriters come back with it, so numbering and statistics continue. What
Python reads of a stream (RTCP reports, ``/metrics``, the calls page, the media timeout) is copied
from the engine before each read (:meth:`FastLink.sync`). Whatever the engine refuses (a full
table, OSError, MemoryError) leaves that call in Python.

Transcoded calls stay in Python as a whole (the engine's :attr:`Mode.PYTHON` is not used): the
coder's output, RTCP and NACK of a transcoded call keep Python's code.

The engine reads duplicates of the sockets' descriptors (``os.dup``), closed after the engine let go
of them: Python closing a socket can never leave the engine reading a descriptor number reused by
another socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from time import monotonic
from typing import TYPE_CHECKING, Any

from . import fastpath
from .fastpath import FastPath, HandedKind, Mode
from .path import LegStats, StreamPath
from .ports import Address
from .rawudp import RawTransport
from .rtcpstats import ReceiveStatistics
from .srtp import SdesCrypto

if TYPE_CHECKING:
    from .session import MediaSession
    from .sharedsocket import SharedSocket
    from .udpmux import UdpMux

__all__ = ["ENV", "FastLink", "fast_path_setting"]

log = logging.getLogger("rtc2sip.media")

ENV = "RTC2SIP_FAST_PATH"  # auto | off: overrides [media] fast_path (tests run the suite both ways)
_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "dropped", "srtp_errors")


def fast_path_setting(configured: str) -> str:
    """``[media] fast_path``, unless :data:`ENV` says otherwise."""
    value = os.environ.get(ENV, "").strip().lower() or configured
    if value not in ("auto", "off"):
        raise ValueError(f"{ENV} / [media] fast_path must be 'auto' or 'off', not {value!r}")
    return value


class _Stream:
    """A stream the engine relays, as :class:`~rtc2sip.media.path.StreamPath` calls it for the
    gateway's own packets (RFC 4733 events) and the browser's NACKs (``StreamPath.fast``)."""

    __slots__ = ("fp", "handle", "last", "link", "owner", "session")

    def __init__(self, link: FastLink, owner: MediaSession, handle: int, session: int) -> None:
        self.link = link
        self.owner = owner
        self.fp = link.fp
        self.handle = handle
        self.session = session
        # the engine's counters at the last sync, per leg: Python adds the difference (it counts too)
        self.last: dict[str, dict[str, float]] = {"webrtc": {}, "legacy": {}, "retransmitted": {}}

    def take(self, direction: str, now: float) -> tuple[int, int]:
        return self.fp.take(self.handle, "to_legacy" if direction == "to_legacy" else "to_webrtc", now)

    def protect_legacy(self, packet: bytes) -> bytes:
        return self.fp.protect_legacy(self.handle, packet)

    def retransmit(self, seqs: list[int]) -> int:
        return self.fp.retransmit(self.handle, seqs)

    def sync(self) -> None:
        self.link.sync(self.owner)


@dataclass(slots=True)
class _Owned:
    """A call the engine relays: its engine handles and the descriptors lent to the engine."""

    handle: int
    streams: dict[str, _Stream] = field(default_factory=dict)
    dups: list[int] = field(default_factory=list)  # the legacy sockets' duplicates
    webrtc_fd: int = -1  # the call's own WebRTC socket's duplicate (per-call), else -1
    last: dict[str, int] = field(default_factory=dict)  # session_stats at the last sync


class FastLink:
    """The engine of one media plane; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fp = FastPath()
        self._sessions: dict[int, MediaSession] = {}
        self._streams: dict[int, tuple[MediaSession, StreamPath]] = {}
        # engine descriptor -> the shared socket it duplicates, or the per-call session it belongs to
        self._shared: dict[int, SharedSocket] = {}
        self._own: dict[int, MediaSession] = {}
        self._mux: UdpMux | None = None
        self.taken = 0
        self.refused = 0
        self.released = 0
        self.closed = False
        self.fp.start()
        loop.add_reader(self.fp.fileno(), self._readable)

    @classmethod
    def create(cls, loop: asyncio.AbstractEventLoop, setting: str) -> FastLink | None:
        """The plane's link, or None (``off``, not built, or the engine would not start: one log line)."""
        setting = fast_path_setting(setting)
        if not fastpath.enabled("auto" if setting == "auto" else "off"):
            log.info("media plane: fast path %s", "off" if setting == "off" else
                     f"not available ({fastpath.unavailable_reason}): Python relays every call")
            return None
        try:
            link = cls(loop)
        except Exception as exc:
            log.warning("media plane: the fast path did not start (%r): Python relays every call", exc)
            return None
        log.info("media plane: fast path on (compiled relay engine; calls handed over after DTLS)")
        return link

    def close(self) -> None:
        """Stop the engine; calls still held go back to Python first (the plane deletes them before)."""
        if self.closed:
            return
        for session in list(self._sessions.values()):
            self.release(session, closing=True)
        self.closed = True
        try:
            self.loop.remove_reader(self.fp.fileno())
        except Exception:
            pass
        self.fp.stop()
        for fd, shared in list(self._shared.items()):
            try:
                self.fp.remove_webrtc_socket(fd)
            finally:
                os.close(fd)
                if not shared.closed:
                    self.loop.add_reader(shared.fd, shared.readable)
        self._shared.clear()

    # -- the shared socket --------------------------------------------------------------------------

    def adopt(self, mux: UdpMux) -> None:
        """The engine reads the shared sockets from now on; Python's reader goes only once it has."""
        if self._mux is mux:
            return
        if self._mux is not None:
            raise RuntimeError("one shared WebRTC socket per plane")
        adopted: list[int] = []
        try:
            for shared in mux.sockets:
                fd = os.dup(shared.fd)
                try:
                    self.fp.add_webrtc_socket(fd)
                except BaseException:
                    os.close(fd)
                    raise
                adopted.append(fd)
                self._shared[fd] = shared
        except BaseException:
            for fd in adopted:
                self.fp.remove_webrtc_socket(fd)
                os.close(fd)
                del self._shared[fd]
            raise
        for shared in mux.sockets:
            self.loop.remove_reader(shared.fd)
        self._mux = mux
        log.info("media plane: the fast path reads the shared WebRTC socket")

    def _webrtc_fd(self, session: MediaSession, owned: _Owned, addr: Address) -> int:
        if owned.webrtc_fd >= 0:
            return owned.webrtc_fd
        v6 = ":" in addr[0]
        for fd, shared in self._shared.items():
            if shared.v6 == v6:
                return fd
        raise OSError(f"no shared WebRTC socket for {addr[0]}")

    # -- hand-over ----------------------------------------------------------------------------------

    def _refusal(self, session: MediaSession) -> str | None:
        if self.closed or session.failed is not None or session.closing:
            return "closing"
        if session.dtls is None or session.dtls.srtp_keys is None or session.ice.selected is None:
            return "no keys"
        if any(s.coder is not None for s in session.streams.values()):
            return "transcoded"
        if any(s.to_legacy is None or s.to_webrtc is None or not isinstance(s.legacy_rtp, RawTransport)
               for s in session.streams.values()):
            return "not configured"
        if session.mux is None and not isinstance(session.transport, RawTransport):
            return "no WebRTC socket to lend"
        if not self.fp.stats()["running"]:  # its thread ended: nothing would read the sockets
            return "engine thread not running"
        return None

    def take(self, session: MediaSession) -> bool:
        """Hand ``session``'s relaying to the engine; False (Python relays it) when refused."""
        if session.fast is not None:
            return True
        reason = self._refusal(session)
        if reason is not None:
            if reason not in ("closing", "no keys"):
                log.info("media session %s (call %s): relayed by Python (%s)", session.id, session.call_id, reason)
            return False
        dtls, selected = session.dtls, session.ice.selected
        assert dtls is not None and dtls.srtp_keys is not None and selected is not None
        if session.fast_keys is None:
            # the engine's own contexts, kept across hand-overs of one DTLS association (RFC 3711 §9.2)
            session.fast_keys = (dtls.srtp_keys.rx_session(), dtls.srtp_keys.tx_session())
        fp = self.fp
        owned: _Owned | None = None
        try:
            if session.mux is not None:
                self.adopt(session.mux)
            owned = _Owned(fp.add_session())
            fp.set_session_keys(owned.handle, *session.fast_keys)
            if session.mux is None:
                transport = session.transport
                assert isinstance(transport, RawTransport)
                owned.webrtc_fd = os.dup(transport.fd)
                try:
                    fp.add_webrtc_socket(owned.webrtc_fd)
                except BaseException:
                    os.close(owned.webrtc_fd)
                    owned.webrtc_fd = -1
                    raise
            fp.set_session_remote(owned.handle, self._webrtc_fd(session, owned, selected), selected)
            for kind, stream in session.streams.items():
                owned.streams[kind] = self._add_stream(session, owned, stream)
            for ssrc, stream in session.streams_by_ssrc.items():
                fp.learn_ssrc(owned.handle, ssrc, owned.streams[stream.kind].handle)
        except Exception as exc:
            self.refused += 1
            if owned is not None:
                self._remove(owned)
            log.warning("media session %s (call %s): the fast path refused the call (%r): relayed by Python",
                        session.id, session.call_id, exc)
            return False
        # Accepted: only now does Python stop reading the call's sockets (the loop has not run since).
        if session.srtcp_keys is not None:
            # Python relayed with the engine's contexts since the last release: from now on the
            # engine alone uses them (libsrtp contexts are not thread-safe), Python its own again
            session.srtp_rx, session.srtp_tx = session.srtcp_keys
            session.srtcp_keys = None
        for kind, stream in session.streams.items():
            stream.fast = owned.streams[kind]
            stream.webrtc_rx = stream.legacy_rx = None  # the engine's statistics replace them
            assert isinstance(stream.legacy_rtp, RawTransport)
            stream.legacy_rtp.pause_reading()
            self._streams[owned.streams[kind].handle] = (session, stream)
        if owned.webrtc_fd >= 0:
            assert isinstance(session.transport, RawTransport)
            session.transport.pause_reading()
            self._own[owned.webrtc_fd] = session
        session.fast = owned
        self._sessions[owned.handle] = session
        self.taken += 1
        log.info("media session %s (call %s): relayed by the fast path (%s)", session.id, session.call_id,
                 ", ".join(session.streams))
        return True

    def _add_stream(self, session: MediaSession, owned: _Owned, stream: StreamPath) -> _Stream:
        fp = self.fp
        assert stream.to_legacy is not None and stream.to_webrtc is not None
        assert isinstance(stream.legacy_rtp, RawTransport)
        dup = os.dup(stream.legacy_rtp.fd)
        try:
            handle = fp.add_stream(
                owned.handle, dup, webrtc_ssrc=stream.webrtc_ssrc, legacy_ssrc=stream.legacy_ssrc,
                webrtc_initial_sequence=(stream.to_webrtc._last_seq + 1) & 0xFFFF,
                legacy_initial_sequence=(stream.to_legacy._last_seq + 1) & 0xFFFF, symmetric=stream.symmetric,
                history=session.avpf_tail if stream.history is not None else None,
            )  # fmt: skip
        except BaseException:
            os.close(dup)
            raise
        owned.dups.append(dup)
        fast = _Stream(self, session, handle, owned.handle)
        fp.configure_stream(handle, _pt_map(stream.to_legacy._pt_map), _pt_map(stream.to_webrtc._pt_map),
                            stream.clock_rate, stream.webrtc_clock_rate)
        for direction, rw in (("to_legacy", stream.to_legacy), ("to_webrtc", stream.to_webrtc)):
            fp.set_rewriter_state(handle, direction, source=rw._source, seq_offset=rw._seq_offset,  # type: ignore[arg-type]
                                  ts_offset=rw._ts_offset, last_seq=rw._last_seq, last_ts=rw._last_ts,
                                  last_arrival=rw._last_arrival)
        fp.set_peer(handle, stream.sdp_dest, hold=stream.sdp_dest is None, rtcp_mux=stream.legacy_mux)
        if stream.legacy_peer_crypto is not None:
            # the engine's own SDES contexts (RFC 4568); Python keeps its own for SRTCP
            fp.set_legacy_srtp(handle, SdesCrypto.parse(stream.legacy_peer_crypto).session(outbound=False),
                               stream.sdes_local.session(outbound=True))
        fp.set_mode(handle, Mode.COPY if session.tap is not None else Mode.FORWARD)
        return fast

    def set_modes(self, session: MediaSession) -> None:
        """A tap came or went: copies of every packet handed up, or none."""
        owned = session.fast
        if owned is None:
            return
        mode = Mode.COPY if session.tap is not None else Mode.FORWARD
        for fast in owned.streams.values():
            self.fp.set_mode(fast.handle, mode)

    def update_remote(self, session: MediaSession) -> None:
        """ICE selected another pair (RFC 8445 §12): the engine sends there and accepts from there."""
        owned, selected = session.fast, session.ice.selected
        if owned is None:
            return
        try:
            fd = self._webrtc_fd(session, owned, selected) if selected is not None else -1
            self.fp.set_session_remote(owned.handle, fd, selected)
        except Exception as exc:
            log.warning("media session %s: fast path: new ICE pair refused (%r): relayed by Python", session.id, exc)
            self.release(session)

    def release(self, session: MediaSession, *, closing: bool = False) -> None:
        """Python relays ``session`` again (``closing``: nobody does); the engine forgets it whatever
        happens (try/finally), state synced back first."""
        owned = session.fast
        if owned is None:
            return
        try:
            self._sync(session, owned)
            for kind, stream in session.streams.items():
                fast = owned.streams.get(kind)
                if fast is None:
                    continue
                for direction, rw in (("to_legacy", stream.to_legacy), ("to_webrtc", stream.to_webrtc)):
                    if rw is None:
                        continue
                    state = self.fp.rewriter_state(fast.handle, direction)  # type: ignore[arg-type]
                    rw._source = state["source"]  # type: ignore[assignment]
                    rw._seq_offset = int(state["seq_offset"])  # type: ignore[call-overload]
                    rw._ts_offset = int(state["ts_offset"])  # type: ignore[call-overload]
                    rw._last_seq = int(state["last_seq"])  # type: ignore[call-overload]
                    rw._last_ts = int(state["last_ts"])  # type: ignore[call-overload]
                    rw._last_arrival = float(state["last_arrival"])  # type: ignore[arg-type]
        except Exception:
            log.exception("media session %s: fast path state not synced back", session.id)
        finally:
            session.fast = None
            self._sessions.pop(owned.handle, None)
            for kind, stream in session.streams.items():
                fast = owned.streams.get(kind)
                if fast is not None:
                    self._streams.pop(fast.handle, None)
                stream.fast = None
                if not closing and isinstance(stream.legacy_rtp, RawTransport):
                    stream.legacy_rtp.resume_reading()
            self._own.pop(owned.webrtc_fd, None)
            self._remove(owned)
            if (not closing and session.fast_keys is not None and session.srtp_rx is not None
                    and session.srtp_tx is not None):
                # Python relays with the contexts the engine used: their rollover counters and replay
                # windows are the stream's (Python's own are stale by every packet the engine
                # relayed: after a 16-bit sequence wrap they would guess the wrong index and every
                # packet fail); SRTCP stays on Python's own contexts, whose index the browser knows
                session.srtcp_keys = (session.srtp_rx, session.srtp_tx)
                session.srtp_rx, session.srtp_tx = session.fast_keys
            if not closing and isinstance(session.transport, RawTransport):
                session.transport.resume_reading()
            self.released += 1
        # one line per hand-back, with what the engine relayed (the e2e tests read it)
        relayed = {kind: {leg: {k: int(fast.last[leg].get(k, 0)) for k in ("packets_in", "packets_out")}
                          for leg in ("webrtc", "legacy")} for kind, fast in owned.streams.items()}
        log.info("media session %s (call %s): fast path released the call%s, it relayed %r", session.id,
                 session.call_id, " (closing)" if closing else "", relayed)

    def _remove(self, owned: _Owned) -> None:
        fp = self.fp
        try:
            fp.remove_session(owned.handle)
        except Exception:
            log.exception("fast path: session %d not removed", owned.handle)
        if owned.webrtc_fd >= 0:
            try:
                fp.remove_webrtc_socket(owned.webrtc_fd)
            except Exception:
                log.exception("fast path: WebRTC socket %d not removed", owned.webrtc_fd)
        # closed only after the engine let go of them: a reused descriptor number is never read
        for fd in [*owned.dups, owned.webrtc_fd]:
            if fd >= 0:
                os.close(fd)
        owned.dups.clear()
        owned.webrtc_fd = -1

    # -- statistics (sync on read) ------------------------------------------------------------------

    def sync(self, session: MediaSession) -> None:
        """Copy the engine's per-stream state into the session's Python objects before they are read."""
        owned = session.fast
        if owned is not None:
            try:
                self._sync(session, owned)
            except Exception:
                log.exception("media session %s: fast path statistics not read", session.id)

    def _sync(self, session: MediaSession, owned: _Owned) -> None:
        fp = self.fp
        s = fp.session_stats(owned.handle)
        for key in ("dropped", "srtp_errors"):
            value = int(s[key])  # type: ignore[call-overload]
            setattr(session, key, getattr(session, key) + value - owned.last.get(key, 0))
            owned.last[key] = value
        for kind, stream in session.streams.items():
            fast = owned.streams.get(kind)
            if fast is None:
                continue
            st: dict[str, Any] = fp.stream_stats(fast.handle)
            _add_counts(stream.webrtc, st["webrtc"], fast.last["webrtc"])
            _add_counts(stream.legacy, st["legacy"], fast.last["legacy"])
            stream.webrtc_rx = _receive_statistics(stream.webrtc_rx, st["webrtc_rx"])
            stream.legacy_rx = _receive_statistics(stream.legacy_rx, st["legacy_rx"])
            latched = st["latched"]
            if latched is not None:
                stream.latched = latched
                stream.latched_last = max(stream.latched_last, stream.legacy.last_in)
                stream.legacy_dest = st["legacy_dest"]
                if stream.legacy_mux:
                    stream.legacy_rtcp_dest = latched
            for leg, last in (("webrtc", st["last_webrtc_out"]), ("legacy", st["last_legacy_out"])):
                if last is None:
                    continue
                ts, when = last
                if when > getattr(stream, f"last_{leg}_out_time"):
                    # build_report reads the RTP timestamp of the last packet sent (bytes 4..7)
                    setattr(stream, f"last_{leg}_out", bytearray(4) + int(ts).to_bytes(4, "big"))
                    setattr(stream, f"last_{leg}_out_time", when)
            history = st["history"]
            if history is not None and stream.history is not None:
                stream.history._depth = int(history["depth"])
            sent = int(st["retransmitted"])
            extra = sent - int(fast.last["retransmitted"].get("n", 0))
            fast.last["retransmitted"]["n"] = sent
            feedback = getattr(stream, "feedback", None)
            if extra > 0 and isinstance(feedback, dict):
                feedback["retransmitted"] = feedback.get("retransmitted", 0) + extra

    def stats(self) -> dict[str, int]:
        """The engine's counters for /metrics (``fastpath_`` keys, beside the shared socket's)."""
        s: dict[str, Any] = self.fp.stats()
        return {
            "fastpath_datagrams_in": int(s["datagrams_in"]),
            "fastpath_datagrams_out": int(s["datagrams_out"]),
            "fastpath_webrtc_in": int(s["webrtc_in"]),
            "fastpath_webrtc_out": int(s["webrtc_out"]),
            "fastpath_handed_up": int(s["handed_up"]),
            "fastpath_queue_full": int(s["queue_full"]),
            "fastpath_send_errors": int(s["send_errors"]),
            "fastpath_truncated": int(s["truncated"]),
            "fastpath_unknown_source": int(s["unknown_source"]),
            "fastpath_not_rtp": int(s["not_rtp"]),
            "fastpath_streams": int(s["streams"]),
            "fastpath_sessions": int(s["sessions"]),
            "fastpath_taken": self.taken,
            "fastpath_refused": self.refused,
            "fastpath_released": self.released,
            "fastpath_running": 1 if s["running"] else 0,
        }

    # -- what the engine hands up -------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            items = self.fp.drain(256)
        except Exception:
            log.exception("fast path: drain failed")
            return
        for item in items:
            try:
                self._handed(item)
            except Exception:
                log.exception("fast path: a handed-up datagram (%s) was not handled", item.kind.name)

    def _handed(self, item: fastpath.Handed) -> None:
        kind, data, addr = item.kind, item.data, item.addr
        if kind is HandedKind.WEBRTC:
            if addr is None:
                return
            shared = self._shared.get(item.fd)
            if shared is not None:
                owner = shared.mux.table.route(data, addr, monotonic())
                if owner is None:
                    return
                session = getattr(owner, "session", None)
                if session is not None and getattr(session, "fast", None) is not None and _is_rtp(data):
                    session.dropped += 1  # RTP of an owned call from a source the engine does not accept
                    return
                owner.datagram_received(data, addr)
                return
            session = self._own.get(item.fd)
            if session is None:
                return
            if _is_rtp(data):
                session.dropped += 1
                return
            transport = session.transport
            if isinstance(transport, RawTransport):
                transport.protocol.datagram_received(data, addr)
        elif kind is HandedKind.WEBRTC_PLAIN:
            self._new_source(item)
        elif kind is HandedKind.LEGACY:
            found = self._streams.get(item.stream)
            if found is not None and addr is not None:
                found[1].rtcp_received(data, addr)
        elif kind in (HandedKind.COPY_WEBRTC, HandedKind.COPY_LEGACY):
            found = self._streams.get(item.stream)
            if found is not None and found[0].tap is not None:
                found[0].tap.packet(found[1].kind, "webrtc" if kind is HandedKind.COPY_WEBRTC else "legacy",
                                    data, item.arrival)

    def _new_source(self, item: fastpath.Handed) -> None:
        """Browser RTP of an SSRC the engine has not learnt: Python's BUNDLE demultiplexing (RFC 8843
        §9.2) names the stream, the engine learns it and relays the packet itself."""
        session = self._sessions.get(item.session)
        owned = session.fast if session is not None else None
        data = item.data
        if session is None or owned is None or len(data) < 12:
            return
        ssrc = int.from_bytes(data[8:12], "big")
        # packets of the source queued before the engine learnt it: Python knows it by now
        stream = session.streams_by_ssrc.get(ssrc) or session.demultiplex(data, ssrc)
        fast = owned.streams.get(stream.kind) if stream is not None else None
        if stream is None or fast is None:
            session.dropped += 1
            return
        if session.streams_by_ssrc.get(ssrc) is stream:
            self.fp.learn_ssrc(owned.handle, ssrc, fast.handle)
        outcome = self.fp.relay_plain(fast.handle, data, item.arrival)
        if outcome.copy is not None and session.tap is not None:
            session.tap.packet(stream.kind, "webrtc", outcome.copy, item.arrival)


def _is_rtp(data: bytes) -> bool:
    """RTP, not RTCP (RFC 7983 §7, RFC 5761 §4)."""
    return len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224


def _pt_map(table: list[int]) -> dict[int, int]:
    return {pt: out for pt, out in enumerate(table) if out >= 0}


def _add_counts(stats: LegStats, engine: dict[str, Any], last: dict[str, float]) -> None:
    for key in _COUNTERS:
        value = int(engine[key])
        setattr(stats, key, getattr(stats, key) + value - int(last.get(key, 0)))
        last[key] = value
    if engine["last_in"] > stats.last_in:
        stats.last_in = float(engine["last_in"])


def _receive_statistics(current: ReceiveStatistics | None, state: dict[str, Any] | None) -> ReceiveStatistics | None:
    """The engine's RFC 3550 A.1/A.8 state in Python's object (its SR and report-interval fields kept)."""
    if state is None:
        return current
    if current is None or current.ssrc != state["ssrc"]:
        current = ReceiveStatistics(int(state["ssrc"]), int(state["clock_rate"]), int(state["min_sequential"]))
    current.clock_rate = int(state["clock_rate"])
    current._probation = int(state["probation"])
    current._started = bool(state["started"])
    current.received = int(state["received"])
    current._max_seq = int(state["max_seq"])
    current._base_seq = int(state["base_seq"])
    current._bad_seq = int(state["bad_seq"])
    current._cycles = int(state["cycles"])
    current._transit = None if state["transit"] is None else int(state["transit"])
    current._jitter = float(state["jitter"])
    return current


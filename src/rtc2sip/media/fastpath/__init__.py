"""The media fast path: the relay's per-packet work compiled (issue 10), typed wrapper.

RFC 3550 §5.1, §8.2, §A.1, §A.8 (RTP header rewrite, continuity across source changes, receive
statistics), RFC 3711 §3.3 (SRTP), RFC 4585 §6.2.1 (generic NACK, answered from the history),
RFC 5761 §4 and RFC 7983 §7 (demultiplexing), RFC 5764 (DTLS-SRTP keys, handed over after the
handshake).

**What the fast path owns**, per bridged stream once Python hands it over: SRTP unprotect of what
the browser sends and protect of what it is sent (one libsrtp context per session and direction,
used by the fast path alone from then on), SDES SRTP on the legacy leg when negotiated, the RTP
header rewrite (SSRC, sequence, timestamp, payload type: :class:`~rtc2sip.media.rtp.RtpRewriter`'s
rules exactly), symmetric-RTP latching (``relay.RELATCH_AFTER``), the NACK history
(:class:`~rtc2sip.media.nack.RetransmissionHistory`'s rules, ``avpf-tail-length``), and the
per-stream counters (:class:`~rtc2sip.media.path.LegStats`'s per-packet fields, the
:class:`~rtc2sip.media.rtcp.ReceiveStatistics` state, the last packet sent each way) that RTCP
reports and ``/metrics`` read.

**What it hands up, unchanged** (:class:`Handed`, drained through :meth:`FastPath.drain` when
:meth:`FastPath.fileno` is readable): STUN, DTLS and anything not RTP/RTCP by first byte; RTCP and
SRTCP (Python terminates RTCP); a datagram from a WebRTC address no session owns (Python's
``udpmux`` routes it, ICE may have validated it); RTP before the session has keys. **Handed up
unprotected**: browser RTP of an SSRC not learnt yet (Python demultiplexes BUNDLE, RFC 8843 §9.2,
then calls :meth:`FastPath.learn_ssrc` and :meth:`FastPath.relay_plain`) and, of a stream in
:attr:`Mode.PYTHON` (transcoded), what both legs send, latched and counted (Python's output goes
back through :meth:`FastPath.protect` / :meth:`FastPath.protect_legacy`: SRTP contexts never move);
copies of every received packet of a stream in :attr:`Mode.COPY` (DTMF taps, recording,
forwarding). **Dropped and counted, never forwarded**: truncated or malformed packets, failed SRTP
authentication or replay, unmapped payload types, packets from an unlatched source while the latch
holds, anything longer than 1500 bytes.

Bounds: streams and sessions (fixed tables, 4096 each by default), the hand-up queue (1024
datagrams by default; a full queue drops and counts), the history (``max_tail`` <= 4096 per
stream), 32 learnt SSRCs per session.

libsrtp: the fast path calls the libsrtp that pylibsrtp ships (2.7.0 with OpenSSL), through the
function addresses of pylibsrtp's compiled cffi module, on contexts pylibsrtp created. Measured on
this machine (same C loop, 172-byte packets): AES_CM_128_HMAC_SHA1_80 protect 1.7 µs and
AEAD_AES_128_GCM 1.2 µs with pylibsrtp's, against 6.0 and 2.4 µs with Debian's libsrtp2 2.5.0
(built with NSS); and no extra Debian package is needed to build or run. Only ``srtp_protect`` and
``srtp_unprotect`` are called (their prototypes are stable across libsrtp 2.x), so no libsrtp
header or struct layout is compiled in.

Why C and not Rust/PyO3: the build needs only gcc and Python's headers (Debian's
build-essential and python3-dev, already what scripts/test.sh's machines have) and stays inside
setuptools' ``pip install .``; no cargo, no maturin, no second toolchain in CI. The unsafe parts are
bounded and fuzzed instead (tests/unit/test_fastpath_fuzz.py: 1 M packets under ASan and UBSan).
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypedDict

from ..ports import Address
from ..srtp import SrtpSession

__all__ = [
    "Direction",
    "FastPath",
    "Handed",
    "HandedKind",
    "LegCounters",
    "Mode",
    "Outcome",
    "Verdict",
    "available",
    "enabled",
    "unavailable_reason",
]

try:
    from pylibsrtp._binding import ffi as _ffi  # type: ignore[import-not-found]  # cffi, no stubs
    from pylibsrtp._binding import lib as _lib

    from . import _fastpath

    _SRTP_FUNCTIONS: tuple[int, int] = (
        int(_ffi.cast("uintptr_t", _lib.srtp_protect)),
        int(_ffi.cast("uintptr_t", _lib.srtp_unprotect)),
    )
    available = True
    unavailable_reason: str | None = None
except ImportError as exc:  # not built (no compiler or headers at install time): the Python path relays
    available = False
    unavailable_reason = str(exc)


def enabled(setting: Literal["auto", "off"]) -> bool:
    """``[media] fast_path``: ``"auto"`` uses the fast path when the extension was built, ``"off"``
    never does."""
    if setting not in ("auto", "off"):
        raise ValueError(f"[media] fast_path must be 'auto' or 'off', not {setting!r}")
    return setting == "auto" and available


class Verdict(enum.IntEnum):
    """What the core decided for one datagram (:meth:`FastPath.process_webrtc`/``process_legacy``)."""

    DROP = 0  # counted, never forwarded
    UP = 1  # Python's, unchanged
    SEND = 2  # the rewritten (and protected) packet goes to ``dest``
    UP_PLAIN = 3  # Python's, after SRTP (a new SSRC, or a stream Python relays)


class Mode(enum.IntEnum):
    """Who relays a stream."""

    FORWARD = 0  # the fast path
    COPY = 1  # the fast path, and every received packet is also handed up (taps)
    PYTHON = 2  # Python (a coder link): packets of both legs come up after SRTP, latching and counting


class HandedKind(enum.IntEnum):
    """Why a datagram came up from the engine."""

    WEBRTC = 0  # from the WebRTC socket, unchanged: STUN, DTLS, SRTCP, unknown source, no keys yet
    WEBRTC_PLAIN = 1  # browser RTP after SRTP: SSRC not learnt, or a Mode.PYTHON stream
    LEGACY = 2  # RTCP on a muxed phone-side RTP socket (RFC 5761)
    COPY_WEBRTC = 3  # a copy of a browser packet (Mode.COPY), after SRTP
    COPY_LEGACY = 4  # a copy of a phone packet (Mode.COPY), after SDES SRTP if any
    LEGACY_PLAIN = 5  # a phone packet of a Mode.PYTHON stream, latched, after SDES SRTP if any


Direction = Literal["to_legacy", "to_webrtc"]


class Handed(NamedTuple):
    """One datagram handed up by the engine; ``session``/``stream`` are handles or -1."""

    kind: HandedKind
    session: int
    stream: int
    fd: int
    addr: Address | None
    data: bytes
    arrival: float  # time.monotonic() seconds


class Outcome(NamedTuple):
    """The sans-I/O result for one datagram."""

    verdict: Verdict
    session: int
    stream: int
    fd: int  # where to send (SEND), else -1
    data: bytes | None  # SEND: what to send; UP: the datagram; UP_PLAIN: the unprotected RTP
    dest: Address | None
    copy: bytes | None  # Mode.COPY: the plain packet received, for the taps


class LegCounters(TypedDict):
    """:class:`~rtc2sip.media.path.LegStats`' per-packet fields (RTCP counts stay Python's)."""

    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    dropped: int
    srtp_errors: int
    last_in: float


@dataclass(slots=True)
class _Keys:
    """The pylibsrtp sessions whose contexts the core holds: kept alive as long as it does."""

    rx: SrtpSession | None = None
    tx: SrtpSession | None = None


def _outcome(result: tuple[int, int, int, int, bytes | None, Address | None, bytes | None]) -> Outcome:
    verdict, session, stream, fd, data, dest, copy = result
    return Outcome(Verdict(verdict), session, stream, fd, data, dest, copy)


def _ctx(session: SrtpSession | None) -> int:
    return 0 if session is None else int(_ffi.cast("uintptr_t", session._ctx))


class FastPath:
    """The compiled per-packet path for many bridged calls: a session per WebRTC leg (its SRTP
    contexts, its ICE-selected remote address, its learnt SSRCs) and a stream per media kind (its
    phone-side RTP socket, rewriters, latch, history, counters).

    Sans-I/O use (tests, benchmarks): :meth:`process_webrtc` / :meth:`process_legacy`. Engine
    use: :meth:`add_webrtc_socket`, :meth:`start`; the asyncio loop watches :meth:`fileno` with
    ``add_reader`` and calls :meth:`drain`. Every call is thread-safe and takes one mutex the
    engine holds for one batch of datagrams at most. The sockets stay the caller's: it closes a
    phone-side socket after :meth:`remove_stream`, a WebRTC one after :meth:`remove_webrtc_socket`.
    """

    def __init__(self, max_streams: int = 4096, max_sessions: int = 4096, queue_size: int = 1024) -> None:
        if not available:
            raise RuntimeError(f"the media fast path is not built: {unavailable_reason}")
        self._engine = _fastpath.Engine(max_streams, max_sessions, queue_size)
        self._engine.set_srtp_functions(*_SRTP_FUNCTIONS)
        self._session_keys: dict[int, _Keys] = {}
        self._stream_keys: dict[int, _Keys] = {}
        self._stream_session: dict[int, int] = {}

    # -- sessions (one per WebRTC leg) ---------------------------------------------------------------

    def add_session(self) -> int:
        """A new session with no keys and no remote address yet; returns its handle."""
        handle = self._engine.add_session()
        self._session_keys[handle] = _Keys()
        return handle

    def set_session_keys(self, session: int, rx: SrtpSession | None, tx: SrtpSession | None) -> None:
        """The DTLS-SRTP sessions (RFC 5764 §4.2) after the handshake. From then on the fast path
        alone protects and unprotects RTP with them; Python keeps separate sessions for SRTCP
        (its index is explicit in each packet, so two contexts never collide on it)."""
        if (rx is not None and rx.outbound) or (tx is not None and not tx.outbound):
            raise ValueError("rx must be an inbound SrtpSession, tx an outbound one")
        self._engine.set_session_keys(session, _ctx(rx), _ctx(tx))
        self._session_keys[session] = _Keys(rx, tx)

    def set_session_remote(self, session: int, fd: int, remote: Address | None) -> None:
        """The ICE-selected pair (RFC 8445 §12): browser packets are accepted from ``remote`` on the
        WebRTC socket ``fd`` and sent there. None: nothing accepted or sent (ICE restart pending)."""
        self._engine.set_session_remote(session, fd, remote)

    def learn_ssrc(self, session: int, ssrc: int, stream: int) -> None:
        """Route browser RTP of ``ssrc`` to ``stream`` (after Python's BUNDLE demultiplexing)."""
        self._engine.learn_ssrc(session, ssrc, stream)

    def forget_ssrcs(self, session: int) -> None:
        """A new answer may move sources between sections: learn them again (relay.configure_streams)."""
        self._engine.forget_ssrcs(session)

    def remove_session(self, session: int) -> None:
        """Drops the session and its streams (their sockets leave the engine's epoll)."""
        self._engine.remove_session(session)
        self._session_keys.pop(session, None)
        for stream in [s for s, owner in self._stream_session.items() if owner == session]:
            self._stream_keys.pop(stream, None)
            del self._stream_session[stream]

    def session_stats(self, session: int) -> dict[str, object]:
        """``dropped`` and ``srtp_errors`` of browser packets no stream took, the learnt SSRC count."""
        return self._engine.session_stats(session)

    # -- streams (one per media kind) -------------------------------------------------------------------

    def add_stream(
        self,
        session: int,
        legacy_fd: int,
        *,
        webrtc_ssrc: int,
        legacy_ssrc: int,
        webrtc_initial_sequence: int,
        legacy_initial_sequence: int,
        symmetric: bool = True,
        history: tuple[int, int] | None = None,
    ) -> int:
        """A stream of ``session`` whose phone-side RTP socket is ``legacy_fd`` (-1: sans-I/O). The
        SSRCs and initial sequence numbers are the gateway's own per leg (relay._Stream's); ``history``
        is ``avpf-tail-length`` (min, max) for a video stream whose NACKs are answered."""
        handle = self._engine.add_stream(
            session, legacy_fd, webrtc_ssrc, legacy_ssrc, webrtc_initial_sequence, legacy_initial_sequence,
            symmetric, history,
        )  # fmt: skip
        self._stream_keys[handle] = _Keys()
        self._stream_session[handle] = session
        return handle

    def configure_stream(
        self, stream: int, to_legacy: dict[int, int], to_webrtc: dict[int, int], clock_rate: int,
        webrtc_clock_rate: int | None = None,
    ) -> None:  # fmt: skip
        """Payload-type maps both ways and clocks (a re-INVITE may change them; sequence and
        timestamp keep running, as :meth:`RtpRewriter.remap`)."""
        self._engine.configure_stream(stream, to_legacy, to_webrtc, clock_rate, webrtc_clock_rate or clock_rate)

    def set_peer(self, stream: int, sdp_dest: Address | None, *, hold: bool = False, rtcp_mux: bool = False) -> None:
        """The legacy peer's address from its SDP (``wire_address`` form), or hold (RFC 3264 §8.4):
        a new address or hold latches afresh, the same address keeps the latch (behind a NAT)."""
        self._engine.set_peer(stream, sdp_dest, hold, rtcp_mux)

    def set_legacy_srtp(self, stream: int, rx: SrtpSession | None, tx: SrtpSession | None) -> None:
        """SDES SRTP on the legacy leg (RFC 4568), or None for plain RTP/AVP."""
        self._engine.set_legacy_srtp(stream, _ctx(rx), _ctx(tx))
        self._stream_keys[stream] = _Keys(rx, tx)

    def set_mode(self, stream: int, mode: Mode) -> None:
        """Who relays ``stream`` from now on (see :class:`Mode`)."""
        self._engine.set_mode(stream, int(mode))

    def remove_stream(self, stream: int) -> None:
        """Frees the stream (history included); its socket leaves the epoll set, the caller closes it."""
        self._engine.remove_stream(stream)
        self._stream_keys.pop(stream, None)
        self._stream_session.pop(stream, None)

    def stream_stats(self, stream: int) -> dict[str, object]:
        """Counters per leg (:class:`LegCounters`), receive statistics state per leg (the fields of
        :class:`~rtc2sip.media.rtcp.ReceiveStatistics`' update, for its report blocks), the latched
        address and destination, the history's depth and hit counts, the last packet sent each way
        (timestamp, time) for the SR's RTP timestamp (RFC 3550 §6.4.1)."""
        return self._engine.stream_stats(stream)

    def rewriter_state(self, stream: int, direction: Direction) -> dict[str, object]:
        """One rewriter's state, to hand a stream back to Python without a jump (a coder link)."""
        return self._engine.rewriter_state(stream, direction == "to_legacy")

    def set_rewriter_state(
        self, stream: int, direction: Direction, *, source: int | None, seq_offset: int, ts_offset: int,
        last_seq: int, last_ts: int, last_arrival: float,
    ) -> None:  # fmt: skip
        """Continue a rewriter Python ran so far (RtpRewriter's private state, same names)."""
        self._engine.set_rewriter_state(
            stream, direction == "to_legacy", source, seq_offset, ts_offset, last_seq, last_ts, last_arrival
        )

    def take(self, stream: int, direction: Direction, now: float) -> tuple[int, int]:
        """:meth:`RtpRewriter.take`: sequence and timestamp for a packet of the gateway's own."""
        return self._engine.take(stream, direction == "to_legacy", now)

    def protect_legacy(self, stream: int, packet: bytes) -> bytes:
        """SDES-protect an RTP packet of Python's own toward the phone with the stream's context."""
        return self._engine.protect_legacy(stream, packet)

    def protect(self, session: int, packet: bytes) -> bytes:
        """SRTP-protect an RTP packet of Python's own toward the browser with the session's context
        (the only one allowed to protect RTP once the fast path has the keys: RFC 3711 §9.2)."""
        return self._engine.protect(session, packet)

    # -- NACK (RFC 4585 §6.2.1) --------------------------------------------------------------------------

    def retransmit(self, stream: int, seqs: list[int]) -> int:
        """Resend what the browser lost from the history, on the session's socket; the count sent.
        Lookups follow RetransmissionHistory.lookup (a miss of a dropped packet doubles the depth)."""
        return self._engine.retransmit(stream, seqs)

    def lookup(self, stream: int, seqs: list[int]) -> list[bytes]:
        """The packets the history holds among ``seqs`` (sans-I/O :meth:`retransmit`)."""
        return self._engine.lookup(stream, seqs)

    # -- the per-datagram decision, sans-I/O ---------------------------------------------------------------

    def process_webrtc(self, fd: int, datagram: bytes, addr: Address, now: float) -> Outcome:
        """One datagram received on WebRTC socket ``fd`` from ``addr``."""
        return _outcome(self._engine.process_webrtc(fd, datagram, addr, now))

    def relay_plain(self, stream: int, plain: bytes, now: float) -> Outcome:
        """Relay a browser packet Python demultiplexed (an :attr:`Verdict.UP_PLAIN` of a new SSRC,
        after :meth:`learn_ssrc`) with the stream's own rewriter, so the first packet of a source is
        not lost and the numbering stays one; sent at once when the engine runs."""
        return _outcome(self._engine.relay_plain(stream, plain, now))

    def process_legacy(self, stream: int, datagram: bytes, addr: Address, now: float) -> Outcome:
        """One datagram received on ``stream``'s phone-side RTP socket from ``addr``."""
        return _outcome(self._engine.process_legacy(stream, datagram, addr, now))

    # -- the engine ---------------------------------------------------------------------------------

    def add_webrtc_socket(self, sock: socket.socket | int) -> None:
        """The engine reads this WebRTC socket (shared or per call) from now on and sends on it."""
        self._engine.add_webrtc_socket(sock if isinstance(sock, int) else sock.fileno())

    def remove_webrtc_socket(self, sock: socket.socket | int) -> None:
        self._engine.remove_webrtc_socket(sock if isinstance(sock, int) else sock.fileno())

    def start(self) -> None:
        """Start the engine thread (it runs without the GIL)."""
        self._engine.start()

    def stop(self) -> None:
        """Stop and join the engine thread; the tables stay (start again, or drop the object)."""
        self._engine.stop()

    def fileno(self) -> int:
        """An eventfd, readable while handed-up datagrams wait: ``loop.add_reader(fp.fileno(), ...)``."""
        return self._engine.fileno()

    def drain(self, max_items: int = 256) -> list[Handed]:
        """Up to ``max_items`` handed-up datagrams, oldest first (the eventfd stays readable if more wait)."""
        return [Handed(HandedKind(k), s, t, fd, addr, data, arrival)
                for k, s, t, fd, addr, data, arrival in self._engine.drain(max_items)]  # fmt: skip

    def stats(self) -> dict[str, object]:
        """Engine counters: datagrams in/out, recvmmsg calls, sendmmsg batches, send errors,
        truncated datagrams, hand-up queue drops, unknown sources, streams and sessions in use."""
        return self._engine.stats()

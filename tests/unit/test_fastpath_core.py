"""The fast path's sans-I/O core against the Python path: same packets in, same bytes out.

References: media.rtp.RtpRewriter, pylibsrtp through media.srtp.SrtpSession, media.nack.RetransmissionHistory,
media.rtcpstats.ReceiveStatistics, and path.StreamPath._accept_source (the latching rule, called on a bare
StreamPath). Each test builds the same scenario for both and compares the output bytes and counters.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from rtc2sip.media import fastpath
from rtc2sip.media.nack import RetransmissionHistory
from rtc2sip.media.path import RELATCH_AFTER, StreamPath
from rtc2sip.media.ports import Address
from rtc2sip.media.rtcpstats import ReceiveStatistics
from rtc2sip.media.rtp import RtpRewriter, build_rtp
from rtc2sip.media.srtp import AEAD_AES_128_GCM, AES128_CM_SHA1_80, SrtpProfile, SrtpReplayError, SrtpSession

pytestmark = pytest.mark.skipif(not fastpath.available, reason=f"fast path not built: {fastpath.unavailable_reason}")

BROWSER: Address = ("127.0.0.1", 40000)
PHONE: Address = ("127.0.0.1", 30000)
PHONE_SDP: Address = ("127.0.0.1", 30000)
FD = 7  # a WebRTC socket's number; sans-I/O: only compared


class Call:
    """One bridged stream in the fast path, with the browser's and the gateway's SRTP keys."""

    def __init__(self, profile: SrtpProfile = AES128_CM_SHA1_80, *, history: tuple[int, int] | None = None,
                 symmetric: bool = True, to_legacy: dict[int, int] | None = None,
                 to_webrtc: dict[int, int] | None = None) -> None:  # fmt: skip
        self.profile = profile
        self.browser_key = os.urandom(profile.master_length)  # what the browser sends with
        self.gateway_key = os.urandom(profile.master_length)  # what the gateway sends with
        self.fp = fastpath.FastPath(max_streams=16, max_sessions=16, queue_size=16)
        self.session = self.fp.add_session()
        self.fp.set_session_keys(self.session, self.rx(), self.tx())
        self.fp.set_session_remote(self.session, FD, BROWSER)
        self.webrtc_ssrc, self.legacy_ssrc = 0x11111111, 0x22222222
        self.webrtc_seq0, self.legacy_seq0 = 1000, 60000
        self.stream = self.fp.add_stream(
            self.session, -1, webrtc_ssrc=self.webrtc_ssrc, legacy_ssrc=self.legacy_ssrc,
            webrtc_initial_sequence=self.webrtc_seq0, legacy_initial_sequence=self.legacy_seq0,
            symmetric=symmetric, history=history,
        )  # fmt: skip
        self.to_legacy_map = {0: 0, 8: 8, 111: 0} if to_legacy is None else to_legacy
        self.to_webrtc_map = {0: 0, 8: 8} if to_webrtc is None else to_webrtc
        self.fp.configure_stream(self.stream, self.to_legacy_map, self.to_webrtc_map, 8000)
        self.fp.set_peer(self.stream, PHONE_SDP)
        self.browser_tx = SrtpSession(profile, self.browser_key, outbound=True, allow_repeat_tx=True)  # duplicates too

    def rx(self) -> SrtpSession:
        return SrtpSession(self.profile, self.browser_key, outbound=False)

    def tx(self) -> SrtpSession:
        return SrtpSession(self.profile, self.gateway_key, outbound=True)

    def learn(self, ssrc: int) -> None:
        self.fp.learn_ssrc(self.session, ssrc, self.stream)

    def protect(self, rtp: bytes) -> bytes | None:
        """As the browser sends it; None when its own SRTP refuses the index (far behind its window)."""
        try:
            return self.browser_tx.protect(rtp)
        except SrtpReplayError:
            return None

    def from_browser(self, rtp: bytes, now: float, addr: Address = BROWSER) -> fastpath.Outcome:
        protected = self.protect(rtp)
        if protected is None:
            return fastpath.Outcome(fastpath.Verdict.DROP, -1, -1, -1, None, None, None)
        return self.fp.process_webrtc(FD, protected, addr, now)

    def stats(self) -> dict[str, Any]:
        return self.fp.stream_stats(self.stream)


def rtp_stream(rng: random.Random, n: int, pts: tuple[int, ...] = (0, 8), sources: int = 3,
               ) -> list[tuple[bytes, float]]:
    """Packets with source changes, reordering, losses, unmapped types and marker bits, with arrivals."""
    out = []
    ssrcs = [rng.getrandbits(32) for _ in range(sources)]
    seq, ts, now, ssrc = rng.getrandbits(16), rng.getrandbits(32), 100.0, ssrcs[0]
    for _ in range(n):
        if rng.random() < 0.02:
            ssrc = rng.choice(ssrcs)
            seq, ts = rng.getrandbits(16), rng.getrandbits(32)
        step = 1 if rng.random() > 0.05 else rng.choice((-3, -1, 2, 5))
        seq = (seq + step) & 0xFFFF
        ts = (ts + 160 * step) & 0xFFFFFFFF
        now += rng.choice((0.02, 0.02, 0.0, 0.013, 0.5, 2.5))
        pt = rng.choice((*pts, 96)) if rng.random() < 0.05 else pts[0]
        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 20, 160))))
        out.append((build_rtp(pt, seq, ts, ssrc, payload, marker=rng.random() < 0.1), now))
    return out


@pytest.mark.parametrize("profile", [AES128_CM_SHA1_80, AEAD_AES_128_GCM], ids=str)
def test_browser_to_phone_same_bytes_as_python(profile: SrtpProfile) -> None:
    rng = random.Random(1)
    call = Call(profile)
    reference_rx = call.rx()
    rewriter = RtpRewriter(call.legacy_ssrc, 8000, call.to_legacy_map, call.legacy_seq0)
    learnt: set[int] = set()
    sent = dropped = 0
    for rtp, now in rtp_stream(rng, 2000):
        protected = call.protect(rtp)
        if protected is None:
            continue
        out = call.fp.process_webrtc(FD, protected, BROWSER, now)
        try:
            plain = bytearray(reference_rx.unprotect(protected))
        except SrtpReplayError:  # a duplicate the generator made: dropped, counted
            assert out.verdict is fastpath.Verdict.DROP
            continue
        assert bytes(plain) == rtp
        ssrc = int.from_bytes(rtp[8:12], "big")
        if ssrc not in learnt:  # a new source goes up, unprotected, for BUNDLE demultiplexing
            assert out.verdict is fastpath.Verdict.UP_PLAIN and out.data == rtp and out.session == call.session
            call.learn(ssrc)
            learnt.add(ssrc)
            out = call.fp.relay_plain(call.stream, rtp, now)  # ... and comes back to be relayed
        if rewriter.rewrite(plain, now):
            assert out.verdict is fastpath.Verdict.SEND, rtp.hex()
            assert out.data == bytes(plain) and out.dest == PHONE_SDP and out.fd == -1
            sent += 1
        else:
            assert out.verdict is fastpath.Verdict.DROP
            dropped += 1
    stats = call.stats()
    assert stats["legacy"]["packets_out"] == sent and stats["webrtc"]["dropped"] == dropped
    assert sent > 1000 and dropped > 10


@pytest.mark.parametrize("profile", [AES128_CM_SHA1_80, AEAD_AES_128_GCM], ids=str)
def test_phone_to_browser_same_bytes_as_python(profile: SrtpProfile) -> None:
    rng = random.Random(2)
    call = Call(profile, history=(50, 200))
    reference_tx = call.tx()
    rewriter = RtpRewriter(call.webrtc_ssrc, 8000, call.to_webrtc_map, call.webrtc_seq0)
    history = RetransmissionHistory(50, 200)
    browser_rx = SrtpSession(profile, call.gateway_key, outbound=False)
    for rtp, now in rtp_stream(rng, 2000):
        out = call.fp.process_legacy(call.stream, rtp, PHONE, now)
        buf = bytearray(rtp)
        if rewriter.rewrite(buf, now):
            try:
                expected = reference_tx.protect(buf)
            except SrtpReplayError:  # a duplicate index: relay.py raises here, the fast path drops
                assert out.verdict is fastpath.Verdict.DROP
                continue
            history.store(int.from_bytes(buf[2:4], "big"), expected)
            assert out.verdict is fastpath.Verdict.SEND
            assert out.data == expected and out.dest == BROWSER and out.fd == FD
            assert browser_rx.unprotect(out.data) == bytes(buf)
        else:
            assert out.verdict is fastpath.Verdict.DROP
    # NACKs: same packets found, same depth doubling, same counters
    for _ in range(30):
        seqs = [rng.getrandbits(16) if rng.random() < 0.3 else (rewriter._last_seq - rng.randrange(400)) & 0xFFFF
                for _ in range(rng.randrange(1, 17))]  # fmt: skip
        assert call.fp.lookup(call.stream, seqs) == history.lookup(seqs)
    got = call.stats()["history"]
    assert got == {"depth": history.depth, "length": len(history), "hits": history.hits,
                   "misses": history.misses, "unknown": history.unknown}  # fmt: skip
    assert history.hits and history.misses and history.depth > 50


def test_receive_statistics_match_rfc3550_reference() -> None:
    rng = random.Random(3)
    call = Call()
    ssrc = 0xABCDEF01
    call.learn(ssrc)
    webrtc_ref = ReceiveStatistics(ssrc, 8000, min_sequential=0)
    legacy_ref: ReceiveStatistics | None = None
    seq, ts, now = 65500, 4000000000, 50.0
    for i in range(3000):
        r = rng.random()
        seq = (seq + (1 if r > 0.05 else rng.choice((-50, -1, 0, 3, 3500, 40000)))) & 0xFFFF
        ts = (ts + 160) & 0xFFFFFFFF
        now += 0.02 + rng.random() * 0.01
        rtp = build_rtp(0, seq, ts, ssrc, b"\x00" * 20)
        if i % 700 == 0:  # the phone side restarts its source now and then
            legacy_ssrc = rng.getrandbits(32)
            legacy_ref = ReceiveStatistics(legacy_ssrc, 8000)
        assert legacy_ref is not None
        if call.from_browser(rtp, now).verdict is not fastpath.Verdict.DROP:  # a duplicate is a replay
            webrtc_ref.update(seq, ts, now)
        call.fp.process_legacy(call.stream, build_rtp(0, seq, ts, legacy_ref.ssrc, b"\x00" * 20), PHONE, now)
        legacy_ref.update(seq, ts, now)
    stats = call.stats()
    assert legacy_ref is not None
    for got, ref in ((stats["webrtc_rx"], webrtc_ref), (stats["legacy_rx"], legacy_ref)):
        assert got["ssrc"] == ref.ssrc and got["received"] == ref.received
        assert got["max_seq"] == ref._max_seq and got["cycles"] == ref._cycles and got["base_seq"] == ref._base_seq
        assert got["bad_seq"] == ref._bad_seq and got["probation"] == ref._probation
        assert got["transit"] == ref._transit and got["jitter"] == pytest.approx(ref._jitter, rel=1e-12)


def _bare_stream(symmetric: bool) -> Any:
    """path.StreamPath with only what _accept_source reads: the latching rule itself, not a copy of it."""
    stream: Any = StreamPath.__new__(StreamPath)
    stream.latched, stream.latched_last, stream.symmetric = None, 0.0, symmetric
    stream.legacy_dest, stream.legacy_mux, stream.legacy_rtcp_dest = PHONE_SDP, False, None
    return stream


@pytest.mark.parametrize("symmetric", [True, False])
def test_latching_follows_the_relay(symmetric: bool) -> None:
    rng = random.Random(4)
    call = Call(symmetric=symmetric)
    reference = _bare_stream(symmetric)
    sources: list[Address] = [PHONE, ("127.0.0.1", 30002), ("127.0.0.2", 30000)]
    now = 10.0
    for seq in range(1, 601):
        now += rng.choice((0.02, 0.02, 0.5, RELATCH_AFTER + 0.1))
        src = rng.choice(sources) if rng.random() < 0.3 else sources[0]
        out = call.fp.process_legacy(call.stream, build_rtp(0, seq, seq * 160, 5, b"x" * 10), src, now)
        accepted = reference._accept_source(src, now)
        assert (out.verdict is fastpath.Verdict.SEND) == accepted
        assert call.stats()["legacy_dest"] == reference.legacy_dest
        # ... and the browser's packets go where the latch points
        call.learn(9)
        toward = call.from_browser(build_rtp(0, seq, seq * 160, 9, b"y"), now)
        assert toward.dest == reference.legacy_dest
    assert call.stats()["latched"] == reference.latched


def test_hold_and_reinvite_keep_or_reset_the_latch() -> None:
    call = Call()
    call.learn(9)
    natted: Address = ("127.0.0.1", 31000)
    SEND = fastpath.Verdict.SEND
    assert call.fp.process_legacy(call.stream, build_rtp(0, 1, 160, 5, b"x"), natted, 1.0).verdict is SEND
    assert call.from_browser(build_rtp(0, 1, 160, 9, b"y"), 1.0).dest == natted
    call.fp.set_peer(call.stream, PHONE_SDP)  # re-INVITE, same SDP address: the latch stays
    assert call.from_browser(build_rtp(0, 2, 320, 9, b"y"), 1.1).dest == natted
    call.fp.set_peer(call.stream, None, hold=True)  # hold (c=0.0.0.0): nothing toward the phone
    out = call.from_browser(build_rtp(0, 3, 480, 9, b"y"), 1.2)
    assert out.verdict is fastpath.Verdict.DROP
    call.fp.set_peer(call.stream, ("127.0.0.1", 32000))  # unhold at a new address: latch afresh
    assert call.from_browser(build_rtp(0, 4, 640, 9, b"y"), 1.3).dest == ("127.0.0.1", 32000)
    assert call.fp.process_legacy(call.stream, build_rtp(0, 2, 320, 5, b"x"), natted, 1.4).verdict is SEND
    assert call.from_browser(build_rtp(0, 5, 800, 9, b"y"), 1.5).dest == natted


def test_what_is_handed_up_or_dropped() -> None:
    call = Call()
    rtp = build_rtp(0, 1, 160, 9, b"z" * 20)
    stun = bytes.fromhex("000100002112a442") + os.urandom(12)
    dtls = bytes((22, 254, 253)) + os.urandom(30)
    V = fastpath.Verdict
    for datagram in (stun, dtls, b"", b"\x40\x00"):  # STUN, DTLS, empty, TURN channel
        assert call.fp.process_webrtc(FD, datagram, BROWSER, 1.0)[:1] == (V.UP,)
    srtcp = call.browser_tx.protect_rtcp(bytes.fromhex("80c90001") + (9).to_bytes(4, "big"))
    out = call.fp.process_webrtc(FD, srtcp, BROWSER, 1.0)
    assert out.verdict is V.UP and out.data == srtcp
    protected = call.browser_tx.protect(rtp)
    assert call.fp.process_webrtc(FD, protected, ("127.0.0.1", 40001), 1.0).verdict is V.UP  # unknown source
    assert call.fp.process_webrtc(FD + 1, protected, BROWSER, 1.0).verdict is V.UP  # another socket
    assert call.fp.process_webrtc(FD, protected[:11], BROWSER, 1.0).verdict is V.DROP  # truncated
    forged = bytearray(protected)
    forged[-1] ^= 1
    assert call.fp.process_webrtc(FD, bytes(forged), BROWSER, 1.0).verdict is V.DROP  # auth fails
    assert call.fp.process_webrtc(FD, protected, BROWSER, 1.0).verdict is V.UP_PLAIN  # SSRC not learnt
    assert call.fp.process_webrtc(FD, protected, BROWSER, 1.0).verdict is V.DROP  # replayed
    assert call.fp.session_stats(call.session)["srtp_errors"] == 2
    assert call.fp.session_stats(call.session)["dropped"] == 1
    call.learn(9)
    out = call.from_browser(build_rtp(0, 2, 320, 9, b"z"), 1.1)
    assert out.verdict is V.SEND and out.copy is None
    call.fp.set_mode(call.stream, fastpath.Mode.COPY)  # a tap: relayed and copied up
    plain = build_rtp(0, 3, 480, 9, b"q")
    out = call.from_browser(plain, 1.2)
    assert out.verdict is V.SEND and out.copy == plain
    call.fp.set_mode(call.stream, fastpath.Mode.PYTHON)  # a coder link: Python relays
    out = call.from_browser(build_rtp(0, 4, 640, 9, b"w"), 1.3)
    assert out.verdict is V.UP_PLAIN and out.data == build_rtp(0, 4, 640, 9, b"w")
    out = call.fp.process_legacy(call.stream, build_rtp(0, 4, 640, 5, b"p"), PHONE, 1.3)
    assert out.verdict is V.UP_PLAIN and out.data == build_rtp(0, 4, 640, 5, b"p")  # latched, counted
    assert call.stats()["legacy"]["packets_in"] == 1
    call.fp.set_mode(call.stream, fastpath.Mode.FORWARD)
    # phone side: RTCP without rtcp-mux, not RTP, short: dropped; with rtcp-mux: up
    rr = bytes.fromhex("81c90007") + (5).to_bytes(4, "big") + bytes(24)  # an RR with one block
    for datagram in (rr, b"\x00" * 20, b"\x80" * 11):
        assert call.fp.process_legacy(call.stream, datagram, PHONE, 2.0).verdict is V.DROP
    call.fp.set_peer(call.stream, PHONE_SDP, rtcp_mux=True)
    assert call.fp.process_legacy(call.stream, rr, PHONE, 2.0).verdict is V.UP
    assert call.stats()["legacy"]["dropped"] == 3


def test_no_keys_yet_and_long_packets() -> None:
    fp = fastpath.FastPath(max_streams=2, max_sessions=2, queue_size=2)
    session = fp.add_session()
    fp.set_session_remote(session, FD, BROWSER)
    stream = fp.add_stream(session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0,
                           legacy_initial_sequence=0)  # fmt: skip
    fp.configure_stream(stream, {0: 0}, {0: 0}, 8000)
    fp.set_peer(stream, PHONE_SDP)
    rtp = build_rtp(0, 1, 160, 9, b"z" * 20)
    assert fp.process_webrtc(FD, rtp, BROWSER, 1.0).verdict is fastpath.Verdict.UP  # Python drops it
    out = fp.process_legacy(stream, rtp, PHONE, 1.0)  # no key toward the browser yet
    assert out.verdict is fastpath.Verdict.DROP
    assert fp.process_legacy(stream, build_rtp(0, 2, 320, 9, b"z" * 1490), PHONE, 1.0).verdict is fastpath.Verdict.DROP
    with pytest.raises(KeyError):
        fp.process_legacy(stream + 1, rtp, PHONE, 1.0)
    fp.remove_stream(stream)
    with pytest.raises(KeyError):  # a stale handle, even once the slot is reused
        fp.stream_stats(stream)
    assert fp.stats()["streams"] == 0


def test_tables_are_bounded() -> None:
    fp = fastpath.FastPath(max_streams=2, max_sessions=1, queue_size=1)
    session = fp.add_session()
    with pytest.raises(OverflowError):
        fp.add_session()
    for _ in range(2):
        fp.add_stream(session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0, legacy_initial_sequence=0)
    with pytest.raises(OverflowError):
        fp.add_stream(session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0, legacy_initial_sequence=0)
    with pytest.raises(ValueError):
        fp.add_stream(session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0,
                      legacy_initial_sequence=0, history=(10, 100000))  # fmt: skip
    stream = next(iter(fp._stream_session))
    for ssrc in range(100):  # learnt SSRCs stay bounded (relay.MAX_LEARNT_SSRCS)
        fp.learn_ssrc(session, ssrc, stream)
    assert 0 < int(fp.session_stats(session)["ssrcs"]) <= 32  # type: ignore[call-overload]
    fp.remove_session(session)
    assert fp.stats()["streams"] == 0 and fp.stats()["sessions"] == 0


def test_take_and_handover_continue_the_stream() -> None:
    call = Call()
    rewriter = RtpRewriter(call.legacy_ssrc, 8000, call.to_legacy_map, call.legacy_seq0)
    call.learn(9)
    for i in range(5):
        call.from_browser(build_rtp(0, 100 + i, 1000 + 160 * i, 9, b"a"), 1.0 + 0.02 * i)
        rewriter.rewrite(bytearray(build_rtp(0, 100 + i, 1000 + 160 * i, 9, b"a")), 1.0 + 0.02 * i)
    assert call.fp.take(call.stream, "to_legacy", 1.2) == rewriter.take(1.2)
    out = call.from_browser(build_rtp(0, 105, 1800, 9, b"a"), 1.22)
    buf = bytearray(build_rtp(0, 105, 1800, 9, b"a"))
    rewriter.rewrite(buf, 1.22)
    assert out.data == bytes(buf)
    state = call.fp.rewriter_state(call.stream, "to_legacy")
    assert state["last_seq"] == rewriter._last_seq and state["last_ts"] == rewriter._last_ts
    assert state["seq_offset"] == rewriter._seq_offset and state["ts_offset"] == rewriter._ts_offset
    assert state["source"] == rewriter._source
    # and back: a rewriter Python ran is continued by the fast path
    call.fp.set_rewriter_state(call.stream, "to_webrtc", source=None, seq_offset=0, ts_offset=0,
                               last_seq=500, last_ts=123456, last_arrival=1.0)  # fmt: skip
    out = call.fp.process_legacy(call.stream, build_rtp(0, 7, 7000, 5, b"b"), PHONE, 1.3)
    browser_rx = SrtpSession(call.profile, call.gateway_key, outbound=False)
    plain = browser_rx.unprotect(out.data or b"")
    assert int.from_bytes(plain[2:4], "big") == 501


def test_protect_uses_the_fast_path_contexts() -> None:
    call = Call()
    packet = build_rtp(0, 1, 160, call.webrtc_ssrc, b"dtmf")
    protected = call.fp.protect(call.session, packet)
    assert SrtpSession(call.profile, call.gateway_key, outbound=False).unprotect(protected) == packet
    with pytest.raises(ValueError):  # plain RTP/AVP toward the phone: no SDES context
        call.fp.protect_legacy(call.stream, packet)
    sdes = os.urandom(30)
    call.fp.set_legacy_srtp(call.stream, None, SrtpSession(call.profile, sdes, outbound=True))
    protected = call.fp.protect_legacy(call.stream, packet)
    assert SrtpSession(call.profile, sdes, outbound=False).unprotect(protected) == packet


def test_sdes_on_the_legacy_leg_same_bytes_as_python() -> None:
    call = Call()
    theirs, ours = os.urandom(30), os.urandom(30)
    call.fp.set_legacy_srtp(call.stream, SrtpSession(call.profile, theirs, outbound=False),
                            SrtpSession(call.profile, ours, outbound=True))  # fmt: skip
    phone_tx = SrtpSession(call.profile, theirs, outbound=True)
    reference_tx = SrtpSession(call.profile, ours, outbound=True)
    rewriter = RtpRewriter(call.legacy_ssrc, 8000, call.to_legacy_map, call.legacy_seq0)
    call.learn(9)
    for i in range(50):
        rtp = build_rtp(0, 10 + i, 160 * i, 9, b"s" * 20)
        buf = bytearray(rtp)
        rewriter.rewrite(buf, 1.0 + i * 0.02)
        assert call.from_browser(rtp, 1.0 + i * 0.02).data == reference_tx.protect(buf)
        out = call.fp.process_legacy(call.stream, phone_tx.protect(build_rtp(0, i, 160 * i, 5, b"t")), PHONE, 1.0)
        assert out.verdict is fastpath.Verdict.SEND
    forged = bytearray(phone_tx.protect(build_rtp(0, 99, 0, 5, b"t")))
    forged[-1] ^= 1
    assert call.fp.process_legacy(call.stream, bytes(forged), PHONE, 1.0).verdict is fastpath.Verdict.DROP
    assert call.stats()["legacy"]["srtp_errors"] == 1

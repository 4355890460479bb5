"""The fast path's engine thread over loopback sockets: a bridged stream both ways, latching, what
is handed up (STUN, DTLS, SRTCP, a new SSRC) reaching Python through the eventfd, NACK
retransmission, and removal (the socket is no longer read, nothing is left in the tables)."""

from __future__ import annotations

import ctypes
import gc
import os
import select
import socket
from collections.abc import Iterator

import pytest
from test_fastpath_core import PHONE, Call

from rtc2sip.media import fastpath
from rtc2sip.media.ports import Address
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.srtp import SrtpSession

pytestmark = pytest.mark.skipif(not fastpath.available, reason=f"fast path not built: {fastpath.unavailable_reason}")

WAIT = 5.0  # generous: a loaded machine; no test asserts on time


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(WAIT)
    return s


class Bridge:
    """A gateway's sockets (shared WebRTC socket, the stream's phone-side RTP socket) in an engine,
    a browser and a phone on loopback."""

    def __init__(self) -> None:
        self.webrtc, self.legacy, self.browser, self.phone = udp(), udp(), udp(), udp()
        self.call = Call(history=(10, 40))
        fp = self.fp = self.call.fp
        self.browser_addr: Address = self.browser.getsockname()
        self.phone_addr: Address = self.phone.getsockname()
        fp.set_session_remote(self.call.session, self.webrtc.fileno(), self.browser_addr)
        fp.remove_stream(self.call.stream)
        self.stream = fp.add_stream(
            self.call.session, self.legacy.fileno(), webrtc_ssrc=self.call.webrtc_ssrc,
            legacy_ssrc=self.call.legacy_ssrc, webrtc_initial_sequence=0, legacy_initial_sequence=0,
            history=(10, 40),
        )  # fmt: skip
        fp.configure_stream(self.stream, {0: 0}, {0: 0}, 8000)
        fp.set_peer(self.stream, self.phone_addr)
        fp.add_webrtc_socket(self.webrtc)
        fp.start()
        self.browser_rx = SrtpSession(self.call.profile, self.call.gateway_key, outbound=False)

    def from_browser(self, rtp: bytes) -> None:
        self.browser.sendto(self.call.browser_tx.protect(rtp), self.webrtc.getsockname())

    def handed(self, n: int = 1) -> list[fastpath.Handed]:
        got: list[fastpath.Handed] = []
        while len(got) < n:
            readable, _, _ = select.select([self.fp.fileno()], [], [], WAIT)
            assert readable, f"nothing handed up (got {got})"
            got += self.fp.drain()
        return got

    def sent_seq(self, data: bytes) -> int:
        """The sequence number of an SRTP packet sent to the browser (a fresh context: a
        retransmission repeats an index the browser's context has seen)."""
        plain = SrtpSession(self.call.profile, self.call.gateway_key, outbound=False).unprotect(data)
        return int.from_bytes(plain[2:4], "big")

    def close(self) -> None:
        self.fp.stop()
        for s in (self.webrtc, self.legacy, self.browser, self.phone):
            s.close()


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    b = Bridge()
    yield b
    b.close()


def test_a_stream_is_bridged_both_ways(bridge: Bridge) -> None:
    bridge.from_browser(build_rtp(0, 1, 160, 9, b"first"))
    (first,) = bridge.handed()  # a new SSRC: up, unprotected, for demultiplexing
    assert first.kind is fastpath.HandedKind.WEBRTC_PLAIN and first.addr == bridge.browser_addr
    assert first.data == build_rtp(0, 1, 160, 9, b"first") and first.session == bridge.call.session
    bridge.fp.learn_ssrc(bridge.call.session, 9, bridge.stream)
    for i in range(2, 30):
        bridge.from_browser(build_rtp(0, i, 160 * i, 9, b"hello"))
        data, addr = bridge.phone.recvfrom(2048)
        assert data[12:] == b"hello" and int.from_bytes(data[8:12], "big") == bridge.call.legacy_ssrc
        assert addr == bridge.legacy.getsockname()
    for i in range(30):
        bridge.phone.sendto(build_rtp(0, 500 + i, 160 * i, 77, b"world"), bridge.legacy.getsockname())
        data, addr = bridge.browser.recvfrom(2048)
        assert addr == bridge.webrtc.getsockname()
        plain = bridge.browser_rx.unprotect(data)
        assert plain[12:] == b"world" and int.from_bytes(plain[8:12], "big") == bridge.call.webrtc_ssrc
    stats = bridge.fp.stream_stats(bridge.stream)
    assert stats["webrtc"] == stats["webrtc"] | {"packets_in": 28, "packets_out": 30}  # type: ignore[operator]
    assert stats["legacy"] == stats["legacy"] | {"packets_in": 30, "packets_out": 28}  # type: ignore[operator]
    assert bridge.fp.stats()["send_batches"] != 0
    # NACK: the last packets sent to the browser are re-sent as they went out
    assert bridge.fp.retransmit(bridge.stream, [28, 29]) == 2
    again = {bridge.sent_seq(bridge.browser.recvfrom(2048)[0]) for _ in range(2)}
    assert again == {28, 29}


def test_latching_and_the_handed_up_kinds(bridge: Bridge) -> None:
    other = udp()  # the phone behind a NAT whose binding changed, or a stranger
    try:
        bridge.phone.sendto(build_rtp(0, 1, 160, 77, b"a"), bridge.legacy.getsockname())
        bridge.browser.recvfrom(2048)
        other.sendto(build_rtp(0, 2, 320, 77, b"b"), bridge.legacy.getsockname())  # refused: latched
        stun = bytes.fromhex("000100002112a442") + os.urandom(12)
        dtls = bytes((22, 254, 253)) + os.urandom(30)
        srtcp = bridge.call.browser_tx.protect_rtcp(bytes.fromhex("80c90001") + (9).to_bytes(4, "big"))
        for datagram in (stun, dtls, srtcp):
            bridge.browser.sendto(datagram, bridge.webrtc.getsockname())
        rr = bytes.fromhex("81c90007") + (77).to_bytes(4, "big") + bytes(24)
        bridge.fp.set_peer(bridge.stream, bridge.phone_addr, rtcp_mux=True)
        bridge.phone.sendto(rr, bridge.legacy.getsockname())
        got = bridge.handed(4)
        up = fastpath.HandedKind
        # in order per socket; the two sockets' datagrams may come up in either order
        assert [(h.kind, h.data) for h in got if h.kind is up.WEBRTC] == [(up.WEBRTC, x) for x in (stun, dtls, srtcp)]
        (legacy,) = (h for h in got if h.kind is up.LEGACY)
        assert legacy.data == rr and legacy.stream == bridge.stream and legacy.addr == bridge.phone_addr
        assert bridge.fp.stream_stats(bridge.stream)["latched"] == bridge.phone_addr
        assert bridge.fp.stream_stats(bridge.stream)["legacy"]["dropped"] == 1  # type: ignore[index]
        # a tap: copies of what is relayed come up too
        bridge.fp.set_mode(bridge.stream, fastpath.Mode.COPY)
        bridge.phone.sendto(build_rtp(0, 3, 480, 77, b"c"), bridge.legacy.getsockname())
        bridge.browser.recvfrom(2048)
        (copy,) = bridge.handed()
        assert copy.kind is fastpath.HandedKind.COPY_LEGACY and copy.data == build_rtp(0, 3, 480, 77, b"c")
    finally:
        other.close()


def test_removal_stops_reading_and_frees_everything(bridge: Bridge) -> None:
    bridge.fp.remove_stream(bridge.stream)
    bridge.phone.sendto(build_rtp(0, 1, 160, 77, b"a"), bridge.legacy.getsockname())
    bridge.legacy.settimeout(WAIT)
    data, _ = bridge.legacy.recvfrom(2048)  # still there: the engine no longer reads that socket
    assert data[12:] == b"a"
    bridge.fp.remove_session(bridge.call.session)
    stats = bridge.fp.stats()
    assert stats["streams"] == 0 and stats["sessions"] == 0 and stats["running"] is True
    bridge.browser.sendto(bridge.call.browser_tx.protect(build_rtp(0, 5, 800, 9, b"z")), bridge.webrtc.getsockname())
    (up,) = bridge.handed()  # no session owns the address any more: Python's (udpmux routes it)
    assert up.kind is fastpath.HandedKind.WEBRTC and up.session == -1


def test_stop_and_collect_leave_no_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        b = Bridge()
        b.close()
        del b
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def _heap_in_use() -> int:
    mallinfo2 = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33
    mallinfo2.restype = _Mallinfo2
    return int(mallinfo2().uordblks) + int(mallinfo2().hblkhd)


def test_stream_churn_frees_its_history() -> None:
    call = Call(history=(400, 400))
    heap = []
    for _ in range(3):
        for _ in range(50):
            stream = call.fp.add_stream(call.session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0,
                                        legacy_initial_sequence=0, history=(400, 400))  # fmt: skip
            call.fp.configure_stream(stream, {0: 0}, {0: 0}, 90000)
            for i in range(400):  # a full history of 1 KB packets: ~0.4 MB per stream
                call.fp.process_legacy(stream, build_rtp(0, i, 3000 * i, 5, b"v" * 1000), PHONE, 1.0)
            call.fp.remove_stream(stream)
        gc.collect()
        heap.append(_heap_in_use())
    assert heap[2] - heap[0] < 1 << 20, heap  # 50 streams x 0.4 MB each round: nothing kept

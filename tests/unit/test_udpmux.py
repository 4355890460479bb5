"""The shared WebRTC socket (rtc2sip.media.udpmux): the routing table alone, the socket glue with
real loopback peers (recvmmsg/sendmmsg and the recvfrom/sendto fallback), and several media
sessions of a plane relayed over one port."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
from aioice import stun
from test_media_plane import FakeBrowser, Phone, browser_calls_phone, legacy_address, open_fds, until

from rtc2sip.config import MediaOptions, Settings
from rtc2sip.media import demux, sharedsocket
from rtc2sip.media.certificate import Certificate
from rtc2sip.media.demux import DemuxTable, stun_local_ufrag
from rtc2sip.media.ice import IceAgent
from rtc2sip.media.plane import MediaPlane
from rtc2sip.media.ports import PortAllocator
from rtc2sip.media.udpmux import MuxTransport, UdpMux

Address = tuple[str, int]
GW_CERT = Certificate.generate("gateway")


class Owner:
    """A session as the mux sees it: what it was handed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.datagrams: list[tuple[bytes, Address]] = []
        self.lost = False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.datagrams.append((bytes(data), addr))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def __repr__(self) -> str:
        return self.name


def check(ufrag: str, theirs: str = "brws") -> stun.Message:
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{ufrag}:{theirs}"
    request.attributes["PRIORITY"] = 1
    request.add_message_integrity(b"password")
    request.add_fingerprint()
    return request


RTP = bytes([0x80, 0]) + bytes(170)
DTLS = bytes([22, 0xFE, 0xFD]) + bytes(30)


# --------------------------------------------------------------------------------------------------
# The table


def test_local_ufrag_of_a_check() -> None:
    assert stun_local_ufrag(bytes(check("gw01"))) == "gw01"
    assert stun_local_ufrag(bytearray(bytes(check("gw01", "x:y")))) == "gw01"
    no_username = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    assert stun_local_ufrag(bytes(no_username)) is None
    data = bytes(check("gw01"))
    assert stun_local_ufrag(data[:26]) is None  # the attribute cut short
    assert stun_local_ufrag(data[:4] + b"\x00" * 4 + data[8:]) is None  # no magic cookie
    assert stun_local_ufrag(b"\x00\x01") is None


def test_routes_checks_responses_media_and_counts_the_rest() -> None:
    table = DemuxTable()
    a, b = Owner("a"), Owner("b")
    table.add(a)
    table.add(b)
    assert table.add_ufrag(a, "ufA") and table.add_ufrag(b, "ufB")
    browser_a, browser_b = ("192.0.2.1", 5000), ("192.0.2.2", 5000)
    assert table.claim_address(a, browser_a) and table.claim_address(b, browser_b)

    assert table.route(bytes(check("ufA")), browser_b, 0.0) is a  # by ufrag, whoever sends it
    assert table.route(bytes(check("ufB")), browser_a, 0.0) is b
    assert table.route(RTP, browser_a, 0.0) is a and table.route(DTLS, browser_b, 0.0) is b

    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    table.expect_response(b, request.transaction_id, 10.0)
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id)
    error = stun.Message(stun.Method.BINDING, stun.Class.ERROR, transaction_id=request.transaction_id)
    stun_server = ("198.51.100.1", 3478)
    assert table.route(bytes(response), stun_server, 11.0) is b
    assert table.route(bytes(error), stun_server, 11.0) is b
    assert table.route(bytes(response), stun_server, 10.0 + demux.TRANSACTION_LIFETIME) is None  # expired
    indication = stun.Message(stun.Method.BINDING, stun.Class.INDICATION)
    assert table.route(bytes(indication), browser_a, 0.0) is a

    assert table.unrouted == 1
    for nobody in (bytes(check("nope")), bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE))):
        assert table.route(nobody, browser_a, 0.0) is None
    assert table.route(RTP, ("203.0.113.9", 1), 0.0) is None
    assert table.unrouted == 4
    for garbage in (b"", b"\xff" * 40, bytes([70]) * 40, b"\x00\x01\x00"):
        assert table.route(garbage, browser_a, 0.0) is None
    assert table.garbage == 4


def test_an_address_stays_with_its_first_owner() -> None:
    table = DemuxTable()
    a, b = Owner("a"), Owner("b")
    table.add(a)
    table.add(b)
    addr = ("192.0.2.1", 5000)
    assert table.claim_address(a, addr)
    assert table.claim_address(a, addr)  # again: still a's, not a refusal
    assert not table.claim_address(b, addr)
    assert table.refused == 1 and table.route(RTP, addr, 0.0) is a
    assert not table.add_ufrag(b, "shared") or table.add_ufrag(a, "shared") is False
    table.remove(a)
    assert table.route(RTP, addr, 0.0) is None
    assert table.claim_address(b, addr) and table.route(RTP, addr, 0.0) is b
    assert not table.claim_address(a, ("192.0.2.7", 1))  # removed: a late callback leaves nothing


def test_removing_a_session_leaves_nothing_of_it() -> None:
    table = DemuxTable()
    a, b = Owner("a"), Owner("b")
    table.add(a)
    table.add(b)
    for ufrag in ("a1", "a2-restart", "a3-restart"):
        table.add_ufrag(a, ufrag)
    table.add_ufrag(b, "b1")
    for port in range(5):
        table.claim_address(a, ("192.0.2.1", 5000 + port))
    table.claim_address(b, ("192.0.2.2", 5000))
    for i in range(10):
        table.expect_response(a, os.urandom(12), float(i))
    table.expect_response(b, b"b" * 12, 0.0)
    table.remove_ufrag(a, "a2-restart")
    table.release_address(a, ("192.0.2.1", 5000))
    assert table.keys_of(a)[0] == {"a1", "a3-restart"} and len(table.keys_of(a)[1]) == 4
    table.remove(a)
    table.remove(a)  # twice: harmless
    assert table.keys_of(a) == (set(), set(), set())
    assert list(table.ufrags.values()) == [b] and list(table.addresses.values()) == [b]
    assert [o for o, _ in table.transactions.values()] == [b] and len(table) == 1
    table.remove(b)
    assert table.routes == 0


def test_transactions_are_bounded_and_expire() -> None:
    table = DemuxTable()
    a = Owner("a")
    table.add(a)
    ids = [i.to_bytes(12, "big") for i in range(demux.MAX_TRANSACTIONS + 10)]
    for txid in ids:
        table.expect_response(a, txid, 0.0)
    assert len(table.transactions) == demux.MAX_TRANSACTIONS
    assert ids[0] not in table.transactions and ids[-1] in table.transactions
    table.expect_response(a, b"x" * 12, demux.TRANSACTION_LIFETIME + 1)  # purges the expired ones
    assert list(table.transactions) == [b"x" * 12] and table.keys_of(a)[2] == {b"x" * 12}


def test_ice_agent_declares_its_routes_and_avoids_a_taken_ufrag() -> None:
    class Routes:
        def __init__(self, taken: set[str]) -> None:
            self.taken = taken
            self.ufrags: set[str] = set()

        def ufrag_added(self, ufrag: str) -> bool:
            if ufrag in self.taken:
                return False
            self.ufrags.add(ufrag)
            return True

        def ufrag_removed(self, ufrag: str) -> None:
            self.ufrags.discard(ufrag)

        def address_validated(self, addr: Address) -> None: ...

        def address_dropped(self, addr: Address) -> None: ...

        def request_sent(self, transaction_id: bytes) -> None: ...

    agent = IceAgent()
    first = agent.local_ufrag
    routes = Routes({first})
    agent.use_routes(routes)
    assert agent.local_ufrag != first and routes.ufrags == {agent.local_ufrag}


# --------------------------------------------------------------------------------------------------
# The socket glue, with real peers


def _v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(params=["batch", "fallback"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param == "fallback":
        monkeypatch.setattr(sharedsocket, "_BATCH", None)  # as where recvmmsg/sendmmsg do not exist
    elif sharedsocket._BATCH is None:
        pytest.skip("no recvmmsg/sendmmsg here")
    return bool(request.param == "batch")


async def test_shared_socket_routes_and_batches(batch: bool) -> None:
    loop = asyncio.get_running_loop()
    fds = open_fds()
    hosts = ["127.0.0.1", "::1"] if _v6() else ["127.0.0.1"]
    ports = PortAllocator(45000, 45099)
    mux = UdpMux(loop)
    mux.open(hosts, 0, ports)
    assert mux.batch is batch and len(mux.sockets) == len(hosts)
    assert ports.is_taken(mux.port) and ports.in_use == 0  # reserved, not counted as a call's
    a, b = Owner("a"), Owner("b")
    view_a, view_b = mux.attach(a), mux.attach(b)
    assert view_a.ufrag_added("ufA") and view_b.ufrag_added("ufB") and not view_b.ufrag_added("ufA")
    peers: list[socket.socket] = []
    try:
        for host in hosts:
            peers += await _exchange(mux, host, (a, view_a), (b, view_b))
        stats = mux.stats()
        assert stats["refused"] == len(hosts) and stats["sessions"] == 2
        if batch:
            assert stats["batches"] >= 3 * len(hosts)  # 151 datagrams need three sendmmsg at least
    finally:
        for p in peers:
            p.close()
    view_a.close()
    view_b.close()
    view_b.close()
    await asyncio.sleep(0)
    assert a.lost and b.lost and len(mux.table) == 0
    assert not (mux.table.ufrags or mux.table.addresses or mux.table.transactions)
    view_a.sendto(b"after close", ("127.0.0.1", 9))  # ignored
    mux.close()
    assert not ports.is_taken(mux.port) and open_fds() == fds


async def _exchange(mux: UdpMux, host: str, first: tuple[Owner, MuxTransport],
                    second: tuple[Owner, MuxTransport]) -> list[socket.socket]:
    """Two browsers on ``host`` talking to two sessions of the mux; returns their sockets."""
    (a, view_a), (b, view_b) = first, second
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    pa, pb = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
    for p in (pa, pb):
        p.bind((host, 0))
        p.setblocking(False)
    addr_a, addr_b = pa.getsockname(), pb.getsockname()  # as a socket of the family reports a source
    gw = (host, mux.port)
    a.datagrams.clear()
    b.datagrams.clear()
    unrouted, garbage = mux.table.unrouted, mux.table.garbage
    # checks reach the ufrag's owner; media only once an address was validated (claimed)
    pa.sendto(bytes(check("ufA")), gw)
    pb.sendto(bytes(check("ufB")), gw)
    pa.sendto(RTP, gw)
    await until(lambda: len(a.datagrams) + len(b.datagrams) >= 2 and mux.table.unrouted > unrouted)
    assert a.datagrams[-1][1] == addr_a and b.datagrams[-1][1] == addr_b  # IPv6: (host, port, flowinfo, scope)
    view_a.address_validated(addr_a)
    view_b.address_validated(addr_b)
    view_b.address_validated(addr_a)  # refused: a's
    pa.sendto(RTP, gw)
    pb.sendto(DTLS, gw)
    pb.sendto(b"\xff garbage", gw)
    await until(lambda: mux.table.garbage > garbage and a.datagrams[-1][0] == RTP
                and b.datagrams[-1][0] == DTLS)
    # a response to a's request goes to a, from wherever it comes
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    view_a.request_sent(request.transaction_id)
    response = bytes(stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id))
    pb.sendto(response, gw)
    await until(lambda: a.datagrams[-1][0] == response)

    # 150 datagrams sent in one go leave in batches of at most 64, in order
    for i in range(150):
        view_a.sendto(i.to_bytes(2, "big") + bytes(100), addr_a)
    view_b.sendto(b"to b", addr_b)
    got: list[bytes] = []
    await until(lambda: _drain(pa, got) >= 150, what="150 datagrams")
    assert [int.from_bytes(d[:2], "big") for d in got] == list(range(150))
    to_b: list[bytes] = []
    await until(lambda: _drain(pb, to_b) >= 1)
    assert to_b == [b"to b"]
    return [pa, pb]


def _drain(sock: socket.socket, into: list[bytes]) -> int:
    try:
        while True:
            into.append(sock.recv(2048))
    except BlockingIOError:
        pass
    return len(into)


async def test_an_explicit_port_that_is_taken_stops_the_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        mux = UdpMux(asyncio.get_running_loop())
        with pytest.raises(OSError):
            mux.open(["127.0.0.1"], taken.getsockname()[1])
        assert not mux.sockets


# --------------------------------------------------------------------------------------------------
# Sessions of a plane over one port


async def test_three_calls_relayed_over_one_shared_port(batch: bool) -> None:
    plane = MediaPlane(Settings(media=MediaOptions(webrtc_socket="shared")), GW_CERT, port_range=(46000, 46099))
    await plane.start()
    assert plane.mux is not None and plane.mux.batch is batch
    peers: list[tuple[FakeBrowser, Phone]] = []
    try:
        sessions = []
        for i in range(3):
            browser, phone = await FakeBrowser().start(), await Phone().start()
            browser.ufrag = f"brw{i}"
            peers.append((browser, phone))
            session, legacy_offer = await browser_calls_phone(plane, browser, phone)
            sessions.append((session, legacy_address(legacy_offer)))
            assert browser.gateway == ("127.0.0.1", plane.mux.port)  # every call's candidate: the one port
        for seq in range(20):  # interleaved: the calls' packets share batches
            for i, (browser, phone) in enumerate(peers):
                browser.send_rtp(0, seq, bytes([i]) * 160)
                phone.send_rtp(sessions[i][1], 0, seq, bytes([0x10 + i]) * 160)
        for i, (browser, phone) in enumerate(peers):
            await until(lambda b=browser, p=phone: len(b.received) >= 20 and len(p.received) >= 20,  # type: ignore[misc]
                        what=f"call {i}'s media")
            assert {p.payload for p in phone.received} == {bytes([i]) * 160}
            assert {p.payload for p in browser.received} == {bytes([0x10 + i]) * 160}
            st: Any = plane.stats(sessions[i][0])
            assert st["webrtc"]["port"] == plane.mux.port and st["webrtc"]["srtp_errors"] == 0
        # a fourth browser spraying media at the shared port from an unvalidated address: dropped, counted
        stranger = await FakeBrowser().start()
        assert stranger.transport is not None
        for _ in range(5):
            stranger.transport.sendto(bytes([0x80, 0]) + bytes(170), ("127.0.0.1", plane.mux.port))
        await until(lambda: plane.mux is not None and plane.mux.table.unrouted >= 5)
        stranger.close()
        assert all(len(b.received) == 20 for b, _ in peers)
        for session, _ in sessions:
            await plane.delete(session)
        assert len(plane.mux.table) == 0 and not plane.mux.table.addresses
    finally:
        for browser, phone in peers:
            browser.close()
            phone.close()
        await plane.close()


def test_media_options() -> None:
    from rtc2sip.config import ConfigError, read_options_text

    assert read_options_text("").media == MediaOptions(webrtc_socket="shared", webrtc_port=0)
    o = read_options_text('[media]\nwebrtc_socket = "shared"\nwebrtc_port = 3478\n')
    assert o.media.webrtc_socket == "shared" and o.media.webrtc_port == 3478
    assert read_options_text('[media]\nwebrtc_socket = "Per-Call"\n').media.webrtc_socket == "per-call"
    for bad, where in (('webrtc_socket = "one"', "webrtc_socket"), ("webrtc_port = 80", "webrtc_port"),
                       ("webrtc_port = 70000", "webrtc_port"),
                       ('webrtc_socket = "per-call"\nwebrtc_port = 5000', "webrtc_port"),
                       ("webrtc_sockets = 1", "did you mean")):
        with pytest.raises(ConfigError, match=where):
            read_options_text(f"[media]\n{bad}\n")


class FakeStunServer(asyncio.DatagramProtocol):
    """Answers Binding requests as a NAT'ed client's STUN server would: a public address, its port."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: list[Address] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        request = stun.parse_message(data)
        self.requests.append(addr)
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request.transaction_id,
                                attributes={"XOR-MAPPED-ADDRESS": ("203.0.113.7", addr[1])})
        assert self.transport is not None
        self.transport.sendto(bytes(response), addr)


@pytest.mark.parametrize("webrtc_socket", ["shared", "per-call"])
async def test_server_reflexive_candidate_learnt_once_per_shared_socket(webrtc_socket: str) -> None:
    """The answer to the gateway's Binding request reaches the call that asked (by transaction ID);
    on a shared socket the next calls reuse it (one mapping for one socket), per call each asks."""
    import dataclasses

    from rtc2sip.config import StunServer

    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(FakeStunServer, local_addr=("127.0.0.1", 0))
    assert server.transport is not None
    host, port = server.transport.get_extra_info("sockname")[:2]
    base = Settings(media=MediaOptions(webrtc_socket=webrtc_socket))
    settings = dataclasses.replace(base, webrtc2sip=dataclasses.replace(
        base.webrtc2sip, enable_icestun=True, stun_server=StunServer(host, port, None, None)))
    plane = MediaPlane(settings, GW_CERT, port_range=(47100, 47199))
    peers: list[FakeBrowser | Phone] = []
    try:
        srflx = []
        for i in range(3):
            browser = await FakeBrowser().start()
            peers.append(browser)
            session, _ = await plane.offer_from_webrtc(f"call-{i}", browser.offer())
            phone = await Phone().start()
            peers.append(phone)
            answer = await plane.answer_from_legacy(session, phone.sdp())
            srflx += [(c.ip, c.port) for c in answer.media[0].candidates if c.type == "srflx"]
        if webrtc_socket == "shared":
            assert plane.mux is not None
            assert srflx == [("203.0.113.7", plane.mux.port)] * 3 and len(server.requests) == 1
            assert plane.mux.srflx.hits == 2 and plane.mux.table.unrouted == 0
        else:
            assert len(server.requests) == 3 and [ip for ip, _ in srflx] == ["203.0.113.7"] * 3
    finally:
        for peer in peers:
            peer.close()
        await plane.close()
        server.transport.close()

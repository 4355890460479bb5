"""RFC 3263 server location against a real (tiny) authoritative DNS server on 127.0.0.1."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from dns_helper import DnsServer, Zone, start_server
from rtc2sip.proxy.locate import Resolver, Srv, locate, order_srv, parse_nameserver
from rtc2sip.transport.base import Target

ZONE: Zone = {
    # example.com: NAPTR → SRV → A/AAAA for TLS, TCP and UDP, plus records the gateway must skip
    ("example.com", "NAPTR"): (300, [
        '30 50 "s" "SIP+D2U" "" _sip._udp.example.com.',
        '10 50 "s" "SIPS+D2T" "" _sips._tcp.example.com.',
        '20 50 "s" "SIP+D2T" "" _sip._tcp.example.com.',
        '5 50 "s" "SIP+D2S" "" _sip._sctp.example.com.',  # SCTP: not supported
        '6 50 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .',  # ENUM-style: not a transport
        '40 50 "s" "SIPS+D2W" "" _sips._ws.example.com.',
    ]),
    ("_sips._tcp.example.com", "SRV"): (300, ["0 0 5061 sip1.example.com."]),
    ("_sip._tcp.example.com", "SRV"): (300, ["0 0 5060 sip1.example.com."]),
    ("_sip._udp.example.com", "SRV"): (300, ["1 0 5060 sip2.example.com.", "0 0 5060 sip1.example.com."]),
    ("_sip._sctp.example.com", "SRV"): (300, ["0 0 5060 sip1.example.com."]),
    ("_sips._ws.example.com", "SRV"): (300, ["0 0 443 ws.example.com."]),
    ("sip1.example.com", "A"): (300, ["192.0.2.1"]),
    ("sip1.example.com", "AAAA"): (300, ["2001:db8::1"]),
    ("sip2.example.com", "A"): (300, ["192.0.2.2"]),
    ("ws.example.com", "A"): (300, ["192.0.2.3"]),
    ("example.com", "A"): (300, ["192.0.2.10"]),
    # srv.test: no NAPTR, SRV only, with priorities and weights
    ("srv.test", "SOA"): (300, ["ns.srv.test. admin.srv.test. 1 3600 600 86400 60"]),
    ("_sip._udp.srv.test", "SRV"): (300, [
        "10 60 5060 a.srv.test.", "10 20 5062 b.srv.test.", "10 0 5064 c.srv.test.", "20 0 5066 d.srv.test.",
    ]),
    ("_sip._tcp.srv.test", "SRV"): (300, ["0 0 5070 a.srv.test."]),
    ("_sips._tcp.srv.test", "SRV"): (300, ["0 0 5071 a.srv.test."]),
    ("a.srv.test", "A"): (300, ["198.51.100.1"]),
    ("b.srv.test", "A"): (300, ["198.51.100.2"]),
    ("c.srv.test", "A"): (300, ["198.51.100.3"]),
    ("d.srv.test", "AAAA"): (300, ["2001:db8::d"]),
    # plain.test: A and AAAA only
    ("plain.test", "A"): (60, ["203.0.113.7"]),
    ("plain.test", "AAAA"): (60, ["2001:db8::7"]),
    # naptr-dead.test: NAPTR to an SRV name that does not exist
    ("naptr-dead.test", "NAPTR"): (300, ['10 10 "S" "SIP+D2U" "" _sip._udp.nowhere.test.']),
    ("naptr-dead.test", "A"): (300, ["203.0.113.9"]),
    # closed.test: SRV target "." says "no SIP here" (RFC 2782)
    ("_sip._tcp.closed.test", "SRV"): (300, ["0 0 0 ."]),
    ("closed.test", "A"): (300, ["203.0.113.8"]),
}


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[DnsServer, int]]:
    proto, port, transport = await start_server(ZONE)
    yield proto, port
    transport.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def resolver(dns_server: tuple[DnsServer, int]) -> Resolver:
    return Resolver([f"127.0.0.1:{dns_server[1]}"], timeout=1.0)


# -- numeric hosts and localhost: no DNS at all ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "transport", "secure", "expected"),
    [
        ("192.0.2.5", None, None, False, [Target("udp", "192.0.2.5", 5060)]),
        ("192.0.2.5", 5080, None, False, [Target("udp", "192.0.2.5", 5080)]),
        ("192.0.2.5", None, None, True, [Target("tls", "192.0.2.5", 5061)]),
        ("192.0.2.5", None, "TCP", False, [Target("tcp", "192.0.2.5", 5060)]),
        ("192.0.2.5", None, "tcp", True, [Target("tls", "192.0.2.5", 5061)]),
        ("192.0.2.5", None, "ws", False, [Target("ws", "192.0.2.5", 80)]),
        ("192.0.2.5", None, "ws", True, [Target("wss", "192.0.2.5", 443)]),
        ("[2001:db8::5]", None, None, False, [Target("udp", "2001:db8::5", 5060)]),
        ("[2001:DB8::5]", 5090, "tls", False, [Target("tls", "2001:db8::5", 5090)]),
        ("::1", None, None, True, [Target("tls", "::1", 5061)]),
        ("localhost", None, None, False, [Target("udp", "127.0.0.1", 5060), Target("udp", "::1", 5060)]),
        ("LOCALHOST.", 5070, "tcp", False, [Target("tcp", "127.0.0.1", 5070), Target("tcp", "::1", 5070)]),
        ("192.0.2.5", None, "udp", True, []),  # no SIPS over UDP
        ("192.0.2.5", None, "sctp", False, []),  # not a transport of ours
    ],
)
async def test_numeric_and_localhost(
    dns_server: tuple[DnsServer, int], resolver: Resolver, host: str, port: int | None,
    transport: str | None, secure: bool, expected: list[Target],
) -> None:
    assert await locate(host, port, transport, secure, resolver) == expected
    assert dns_server[0].queries == []


async def test_numeric_with_unsupported_default_transport(resolver: Resolver) -> None:
    assert await locate("192.0.2.5", None, None, False, resolver, supported={"tcp"}) == []


# -- NAPTR → SRV → A/AAAA ----------------------------------------------------------------------------


async def test_naptr_srv_a_aaaa(resolver: Resolver) -> None:
    targets = await locate("example.com", None, None, False, resolver, supported={"udp", "tcp", "tls"})
    assert targets == [
        Target("tls", "192.0.2.1", 5061),
        Target("tls", "2001:db8::1", 5061),
        Target("tcp", "192.0.2.1", 5060),
        Target("tcp", "2001:db8::1", 5060),
        Target("udp", "192.0.2.1", 5060),  # priority 0 before priority 1
        Target("udp", "2001:db8::1", 5060),
        Target("udp", "192.0.2.2", 5060),
    ]


async def test_naptr_websocket_per_rfc7118(resolver: Resolver) -> None:
    targets = await locate("example.com", None, None, True, resolver)
    assert targets == [
        Target("tls", "192.0.2.1", 5061),
        Target("tls", "2001:db8::1", 5061),
        Target("wss", "192.0.2.3", 443),
    ]


async def test_naptr_restricted_to_supported_transports(resolver: Resolver) -> None:
    targets = await locate("example.com", None, None, False, resolver, supported={"udp"})
    assert [t.transport for t in targets] == ["udp"] * 3
    assert await locate("example.com", None, None, True, resolver, supported={"udp", "tcp"}) == []


async def test_naptr_without_reachable_srv_falls_back(resolver: Resolver) -> None:
    targets = await locate("naptr-dead.test", None, None, False, resolver)
    assert targets == [Target("udp", "203.0.113.9", 5060)]


# -- SRV without NAPTR -------------------------------------------------------------------------------


async def test_srv_without_naptr(dns_server: tuple[DnsServer, int], resolver: Resolver) -> None:
    targets = await locate("srv.test", None, None, False, resolver, rng=random.Random(1))
    udp = [t for t in targets if t.transport == "udp"]
    assert {t.port for t in udp[:3]} == {5060, 5062, 5064}  # priority 10, weighted order
    assert udp[3] == Target("udp", "2001:db8::d", 5066)  # priority 20 last
    assert targets[4:] == [Target("tcp", "198.51.100.1", 5070)]  # then the next transport
    assert ("_sips._tcp.srv.test", "SRV") not in dns_server[0].queries  # sip URI: _sip only
    secure = await locate("srv.test", None, None, True, resolver)
    assert secure == [Target("tls", "198.51.100.1", 5071)]


async def test_srv_weights_follow_rfc2782(resolver: Resolver) -> None:
    rng = random.Random(7)
    firsts: Counter[int] = Counter()
    for _ in range(2000):
        targets = await locate("srv.test", None, "udp", False, resolver, rng=rng)
        assert targets[-1].port == 5066
        assert sorted(t.port for t in targets) == [5060, 5062, 5064, 5066]
        firsts[targets[0].port] += 1
    # weights 60:20:0 → about 3/4 and 1/4; a zero weight comes first only when the draw is 0 (1 in 81)
    assert 1350 < firsts[5060] < 1620
    assert 380 < firsts[5062] < 620
    assert firsts[5064] < 60


def test_order_srv_zero_weights_and_priorities() -> None:
    records = [Srv(2, 0, 1, "z"), Srv(1, 0, 2, "a"), Srv(1, 0, 3, "b"), Srv(0, 5, 4, "first")]
    ordered = order_srv(records, random.Random(0))
    assert ordered[0].target == "first" and ordered[-1].target == "z"
    assert {r.target for r in ordered[1:3]} == {"a", "b"}


async def test_explicit_transport_uses_its_srv(resolver: Resolver) -> None:
    assert await locate("example.com", None, "tcp", False, resolver) == [
        Target("tcp", "192.0.2.1", 5060), Target("tcp", "2001:db8::1", 5060)
    ]
    assert await locate("example.com", None, "tcp", True, resolver) == [
        Target("tls", "192.0.2.1", 5061), Target("tls", "2001:db8::1", 5061)
    ]
    assert await locate("example.com", None, "udp", True, resolver) == []


async def test_explicit_transport_without_srv_uses_a_aaaa(resolver: Resolver) -> None:
    assert await locate("plain.test", None, "tcp", False, resolver) == [
        Target("tcp", "203.0.113.7", 5060), Target("tcp", "2001:db8::7", 5060)
    ]
    assert await locate("plain.test", None, "wss", False, resolver) == [
        Target("wss", "203.0.113.7", 443), Target("wss", "2001:db8::7", 443)
    ]


async def test_srv_dot_target_means_not_here(resolver: Resolver) -> None:
    assert await locate("closed.test", None, "tcp", False, resolver) == []


# -- explicit port, plain hosts, missing records -----------------------------------------------------


async def test_explicit_port_skips_naptr_and_srv(
    dns_server: tuple[DnsServer, int], resolver: Resolver
) -> None:
    assert await locate("example.com", 5070, None, False, resolver) == [Target("udp", "192.0.2.10", 5070)]
    assert await locate("example.com", 5071, None, True, resolver) == [Target("tls", "192.0.2.10", 5071)]
    assert {t for _, t in dns_server[0].queries} == {"A", "AAAA"}


async def test_no_naptr_no_srv_uses_a_aaaa(resolver: Resolver) -> None:
    assert await locate("plain.test", None, None, False, resolver) == [
        Target("udp", "203.0.113.7", 5060), Target("udp", "2001:db8::7", 5060)
    ]
    assert await locate("plain.test.", None, None, True, resolver) == [
        Target("tls", "203.0.113.7", 5061), Target("tls", "2001:db8::7", 5061)
    ]


async def test_missing_name(resolver: Resolver) -> None:
    assert await locate("missing.test", None, None, False, resolver) == []
    assert await locate("missing.test", 5060, "tcp", False, resolver) == []


# -- cache -------------------------------------------------------------------------------------------


async def test_cache_honours_ttl(dns_server: tuple[DnsServer, int]) -> None:
    server, port = dns_server
    clock = FakeClock()
    res = Resolver([f"127.0.0.1:{port}"], clock=clock, negative_ttl=10)
    assert await res.a("plain.test") == ["203.0.113.7"]
    assert await res.a("PLAIN.test.") == ["203.0.113.7"]
    assert server.queries.count(("plain.test", "A")) == 1
    clock.now += 59
    await res.a("plain.test")
    assert server.queries.count(("plain.test", "A")) == 1
    clock.now += 2  # past the 60 s TTL
    await res.a("plain.test")
    assert server.queries.count(("plain.test", "A")) == 2
    # negative answers are cached for negative_ttl
    assert await res.a("missing.test") == []
    assert await res.a("missing.test") == []
    assert server.queries.count(("missing.test", "A")) == 1
    clock.now += 11
    await res.a("missing.test")
    assert server.queries.count(("missing.test", "A")) == 2


async def test_cache_is_bounded(dns_server: tuple[DnsServer, int]) -> None:
    server, port = dns_server
    res = Resolver([f"127.0.0.1:{port}"], cache_size=2)
    for name in ("sip1.example.com", "sip2.example.com", "ws.example.com", "sip1.example.com"):
        await res.a(name)
    assert server.queries.count(("sip1.example.com", "A")) == 2  # evicted by the third name
    assert server.queries.count(("ws.example.com", "A")) == 1


async def test_locate_reuses_cache(dns_server: tuple[DnsServer, int], resolver: Resolver) -> None:
    await locate("example.com", None, None, False, resolver)
    n = len(dns_server[0].queries)
    await locate("example.com", None, None, False, resolver)
    assert len(dns_server[0].queries) == n


# -- failures ----------------------------------------------------------------------------------------


async def test_silent_server_times_out_quickly_and_is_not_cached() -> None:
    proto, port, transport = await start_server(ZONE, silent=True)
    try:
        res = Resolver([f"127.0.0.1:{port}"], timeout=0.2)
        start = time.monotonic()
        assert await locate("example.com", None, None, False, res) == []
        assert time.monotonic() - start < 2.0
        asked = len(proto.queries)
        assert asked > 0
        assert await res.a("plain.test") == []
        assert await res.a("plain.test") == []
        assert len(proto.queries) >= asked + 2  # a timeout is not remembered as "no record"
        # localhost and numeric hosts still work with DNS down
        assert await locate("localhost", None, None, False, res) == [
            Target("udp", "127.0.0.1", 5060), Target("udp", "::1", 5060)
        ]
    finally:
        transport.close()


async def test_no_resolv_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(self: object, f: object) -> None:
        raise dns.resolver.NoResolverConfiguration

    monkeypatch.setattr(dns.resolver.BaseResolver, "read_resolv_conf", missing)
    res = Resolver(timeout=0.2)
    assert res.nameservers == []
    assert await locate("example.com", None, None, False, res) == []
    assert await res.addresses("localhost") == ["127.0.0.1", "::1"]


def test_system_resolver_when_no_nameserver_configured() -> None:
    Resolver()  # reads resolv.conf if there is one; must not raise either way


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        (" 192.0.2.53:5353 ", ("192.0.2.53", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_parse_nameserver(entry: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(entry) == expected


@pytest.mark.parametrize(
    "entry", ["ns.example.com", "192.0.2.1:0", "192.0.2.1:70000", "[::1", "[::1]x", "1.2.3.4:x"]
)
def test_parse_nameserver_rejects(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(entry)

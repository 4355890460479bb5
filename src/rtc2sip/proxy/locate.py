"""Locating SIP servers: from a URI's host, port and transport to an ordered list of targets (RFC 3263 §4).

:func:`locate` walks NAPTR (RFC 3403) → SRV (RFC 2782) → A/AAAA and returns *every* target in the order
to try them, so the proxy can fail over to the next one on a timeout or a 503 (RFC 3263 §4.3).
:class:`Resolver` is a thin, caching wrapper around dnspython's asyncio resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random as _random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.NAPTR import NAPTR
from dns.rdtypes.IN.SRV import SRV

from rtc2sip.transport.base import DEFAULT_PORTS, Target

__all__ = ["SUPPORTED_TRANSPORTS", "Naptr", "Resolver", "Srv", "locate", "order_srv", "parse_nameserver"]

log = logging.getLogger(__name__)

SUPPORTED_TRANSPORTS = frozenset(DEFAULT_PORTS)

# NAPTR services field → transport (RFC 3263 §4.1, RFC 7118 §7 for the WebSocket ones).
NAPTR_SERVICES = {
    "SIP+D2U": "udp",
    "SIP+D2T": "tcp",
    "SIPS+D2T": "tls",
    "SIP+D2W": "ws",
    "SIPS+D2W": "wss",
}
SECURE_TRANSPORTS = frozenset({"tls", "wss"})
# SRV owner-name prefix per transport (RFC 3263 §4.1). WebSocket has none in RFC 7118: it is only found
# through NAPTR, whose replacement names the SRV record.
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
# Without NAPTR, the SRV queries to make and the order to use their answers in (RFC 3263 §4.1 leaves
# the preference to the client; UDP first matches the A/AAAA default for sip URIs).
SRV_FALLBACK = {False: ("udp", "tcp"), True: ("tls",)}

# URI transport parameter (lower case) → (transport for a sip URI, transport for a sips URI).
# sips over UDP does not exist (RFC 3261 §26.2.2); transport=tls is deprecated but still seen.
_URI_TRANSPORT: dict[str, tuple[str | None, str | None]] = {
    "udp": ("udp", None),
    "tcp": ("tcp", "tls"),
    "tls": ("tls", "tls"),
    "ws": ("ws", "wss"),
    "wss": ("wss", "wss"),
}

_LOCALHOST = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Naptr:
    """One NAPTR record (RFC 3403 §4.1), text fields decoded."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str  # absolute name without the trailing dot; "" for the root


@dataclass(frozen=True, slots=True)
class Srv:
    """One SRV record (RFC 2782); ``target`` "" means "decidedly not available here"."""

    priority: int
    weight: int
    port: int
    target: str


Record = Naptr | Srv | str  # A and AAAA records are kept as their address text


def parse_nameserver(entry: str) -> tuple[str, int]:
    """A config ``nameserver`` entry: ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` → (ip, port)."""
    text = entry.strip()
    host, port = text, 53
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise ValueError(f"Bad nameserver {entry!r}")
        host = text[1:end]
        if text[end + 1 :]:
            port = int(text[end + 2 :])
    elif text.count(":") == 1:  # more colons: a bare IPv6 address
        host, _, p = text.partition(":")
        port = int(p)
    ipaddress.ip_address(host)  # raises ValueError: only addresses, a resolver cannot resolve its server
    if not 0 < port < 65536:
        raise ValueError(f"Bad nameserver port in {entry!r}")
    return host, port


class Resolver:
    """NAPTR, SRV, A and AAAA lookups over dnspython, with a TTL-honouring cache of bounded size.

    ``nameservers`` are config entries (see :func:`parse_nameserver`); when empty the system's
    resolv.conf is read, and if there is none every lookup finds nothing (logged once). ``timeout``
    bounds each lookup in seconds. The cache holds at most ``cache_size`` (name, type) answers, each
    for its TTL capped at ``max_ttl``; "no such record" answers are kept ``negative_ttl`` seconds.
    Timeouts and server failures are not cached. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 2.0,
        cache_size: int = 1024,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if nameservers:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(e)) for e in nameservers]
        else:
            try:
                res = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration:
                # Containers without /etc/resolv.conf still serve numeric hosts and localhost.
                log.warning("no nameserver configured and no usable resolv.conf: DNS lookups will fail")
                res = dns.asyncresolver.Resolver(configure=False)
        res.timeout = timeout
        res.lifetime = timeout
        res.cache = None  # ours honours an injectable clock and caches negative answers too
        # EDNS0 with a 1232-octet payload (the DNS flag day 2020 size) so NAPTR sets fit in UDP.
        res.use_edns(0, 0, 1232)
        self._resolver = res
        self._cache: OrderedDict[tuple[str, int], tuple[float, tuple[Record, ...]]] = OrderedDict()
        self._cache_size = cache_size
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._clock = clock
        # names the DNS said do not exist, until when: a request for such a domain is answered 404,
        # where a lookup that found nothing usable (or no answer at all) is a 503
        self._nx: OrderedDict[str, float] = OrderedDict()

    def is_nxdomain(self, name: str) -> bool:
        """Did the last lookup of ``name`` (within the negative TTL) get NXDOMAIN?"""
        until = self._nx.get(name.lower().rstrip("."))
        return until is not None and until > self._clock()

    @property
    def nameservers(self) -> list[str]:
        return [str(ns) for ns in self._resolver.nameservers]

    async def naptr(self, name: str) -> list[Naptr]:
        return [r for r in await self._lookup(name, dns.rdatatype.NAPTR) if isinstance(r, Naptr)]

    async def srv(self, name: str) -> list[Srv]:
        return [r for r in await self._lookup(name, dns.rdatatype.SRV) if isinstance(r, Srv)]

    async def a(self, name: str) -> list[str]:
        if _is_localhost(name):
            return [_LOCALHOST[0]]
        return [r for r in await self._lookup(name, dns.rdatatype.A) if isinstance(r, str)]

    async def aaaa(self, name: str) -> list[str]:
        if _is_localhost(name):
            return [_LOCALHOST[1]]
        return [r for r in await self._lookup(name, dns.rdatatype.AAAA) if isinstance(r, str)]

    async def addresses(self, name: str) -> list[str]:
        """A then AAAA addresses of ``name`` (both looked up at once); localhost without DNS."""
        v4, v6 = await asyncio.gather(self.a(name), self.aaaa(name))
        return v4 + v6

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[Record, ...]:
        key = (name.lower().rstrip("."), int(rdtype))
        if not key[0]:
            return ()
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
            del self._cache[key]
        try:
            qname = dns.name.from_text(key[0])  # raises for bad names (empty label, too long)
            answer = await self._resolver.resolve(qname, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            self._store(key, (), self._negative_ttl, now)
            self._nx[key[0]] = now + self._negative_ttl
            self._nx.move_to_end(key[0])
            while len(self._nx) > max(self._cache_size, 64):
                self._nx.popitem(last=False)
            return ()
        except dns.resolver.NoAnswer:
            self._store(key, (), self._negative_ttl, now)
            return ()
        except dns.exception.DNSException as e:
            # Timeout, SERVFAIL from every server, no server at all: nothing to use, nothing to cache.
            log.debug("DNS %s %s failed: %s", key[0], rdtype.name, e)
            return ()
        records = tuple(r for r in map(_record, answer) if r is not None)
        ttl = answer.rrset.ttl if answer.rrset is not None else 0
        self._store(key, records, min(float(ttl), self._max_ttl), now)
        return records

    def _store(self, key: tuple[str, int], records: tuple[Record, ...], ttl: float, now: float) -> None:
        if ttl <= 0 or self._cache_size <= 0:
            return
        self._cache[key] = (now + ttl, records)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _record(rd: dns.rdata.Rdata) -> Record | None:
    if isinstance(rd, NAPTR):
        return Naptr(
            order=rd.order,
            preference=rd.preference,
            flags=rd.flags.decode("ascii", "replace"),
            service=rd.service.decode("ascii", "replace"),
            regexp=rd.regexp.decode("utf-8", "replace"),
            replacement=_name(rd.replacement),
        )
    if isinstance(rd, SRV):
        return Srv(rd.priority, rd.weight, rd.port, _name(rd.target))
    if isinstance(rd, A | AAAA):
        return str(rd.address)
    return None  # a CNAME or DNAME in the chain: dnspython has followed it already


def _name(n: dns.name.Name) -> str:
    return n.to_text(omit_final_dot=True) if n != dns.name.root else ""


def _is_localhost(name: str) -> bool:
    return name.lower().rstrip(".") == "localhost"


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def order_srv(records: Iterable[Srv], rng: _random.Random) -> list[Srv]:
    """RFC 2782 order: ascending priority; within one, weighted random, zero weights placed first."""
    out: list[Srv] = []
    by_priority: dict[int, list[Srv]] = {}
    for r in records:
        by_priority.setdefault(r.priority, []).append(r)
    for prio in sorted(by_priority):
        group = sorted(by_priority[prio], key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


async def _srv_targets(
    name: str, transport: str, resolver: Resolver, rng: _random.Random
) -> tuple[bool, list[Target]]:
    """Targets behind one SRV name, in RFC 2782 order; the flag says whether any SRV record exists."""
    records = await resolver.srv(name)
    if not records:
        return False, []
    ordered = [r for r in order_srv(records, rng) if r.target]
    addresses = await asyncio.gather(*(resolver.addresses(r.target) for r in ordered))
    return True, [
        Target(transport, addr, r.port) for r, addrs in zip(ordered, addresses, strict=True) for addr in addrs
    ]


async def _host_targets(host: str, transport: str, port: int | None, resolver: Resolver) -> list[Target]:
    port = port if port is not None else DEFAULT_PORTS[transport]
    return [Target(transport, addr, port) for addr in await resolver.addresses(host)]


def _unique(targets: Iterable[Target]) -> list[Target]:
    seen: set[tuple[str, str, int]] = set()
    out: list[Target] = []
    for t in targets:
        k = (t.transport, t.host, t.port)
        if k not in seen:
            seen.add(k)
            out.append(t)
    return out


async def locate(
    uri_host: str,
    port: int | None,
    transport: str | None,
    secure: bool,
    resolver: Resolver,
    *,
    supported: Iterable[str] = SUPPORTED_TRANSPORTS,
    rng: _random.Random | None = None,
) -> list[Target]:
    """All targets for a SIP or SIPS (``secure``) URI's host, port and transport parameter, best first.

    RFC 3263 §4.1 picks the transport and §4.2 the addresses:

    * a numeric host (or ``localhost``) is used as is, with udp (tls for sips) and the default port;
    * an explicit port means A/AAAA only, with udp (tls for sips) unless a transport is given;
    * an explicit transport means SRV for it, then A/AAAA on the default port;
    * otherwise NAPTR records whose service the gateway ``supported`` (and, for sips, secure ones only),
      by order then preference, each followed to its SRV set; without usable NAPTR records, SRV for
      each supported transport; without those, A/AAAA with udp (tls for sips).

    An empty list means the URI cannot be reached (unsupported transport, no records, DNS down).
    ``rng`` drives the SRV weighted choice (RFC 2782); pass a seeded one for repeatable tests.
    """
    rng = rng if rng is not None else _random.Random()
    allowed = frozenset(t.lower() for t in supported)
    host = uri_host[1:-1] if uri_host.startswith("[") and uri_host.endswith("]") else uri_host
    if transport is not None:
        pair = _URI_TRANSPORT.get(transport.lower())
        chosen = pair[1 if secure else 0] if pair else None
        if chosen is None or chosen not in allowed:
            return []
    else:
        chosen = None
    default = chosen or ("tls" if secure else "udp")

    ip = _ip_literal(host)
    if ip is not None or _is_localhost(host):
        if default not in allowed:
            return []
        addrs = [ip] if ip is not None else list(_LOCALHOST)
        return [Target(default, a, port if port is not None else DEFAULT_PORTS[default]) for a in addrs]

    if port is not None:
        return [] if default not in allowed else await _host_targets(host, default, port, resolver)

    if chosen is not None:
        prefix = SRV_PREFIX.get(chosen)
        if prefix is not None:
            found, targets = await _srv_targets(f"{prefix}.{host}", chosen, resolver, rng)
            if found:
                return _unique(targets)
        return await _host_targets(host, chosen, None, resolver)

    usable = sorted(
        (
            r
            for r in await resolver.naptr(host)
            if r.flags.lower() == "s"
            and r.replacement
            and NAPTR_SERVICES.get(r.service.upper()) in allowed
            and (not secure or NAPTR_SERVICES[r.service.upper()] in SECURE_TRANSPORTS)
        ),
        key=lambda r: (r.order, r.preference),
    )
    if usable:
        results = await asyncio.gather(
            *(_srv_targets(r.replacement, NAPTR_SERVICES[r.service.upper()], resolver, rng) for r in usable)
        )
        targets = _unique(t for _, ts in results for t in ts)
        if targets:
            return targets
        # NAPTR pointing at nothing reachable: fall through to the SRV and A/AAAA steps rather than fail.

    fallback = [t for t in SRV_FALLBACK[secure] if t in allowed]
    results = await asyncio.gather(
        *(_srv_targets(f"{SRV_PREFIX[t]}.{host}", t, resolver, rng) for t in fallback)
    )
    if any(found for found, _ in results):
        return _unique(t for _, ts in results for t in ts)
    if default not in allowed:
        return []
    return await _host_targets(host, default, None, resolver)

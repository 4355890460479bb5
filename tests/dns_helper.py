"""A tiny authoritative DNS server on 127.0.0.1 for tests (dnspython codec, asyncio socket)."""

from __future__ import annotations

import asyncio
from typing import cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Zone = dict[tuple[str, str], tuple[int, list[str]]]


class DnsServer(asyncio.DatagramProtocol):
    """Authoritative for ZONE; NXDOMAIN for unknown names, empty answer for known names of another type."""

    def __init__(self, zone: Zone, silent: bool = False) -> None:
        self.zone = zone
        self.silent = silent
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's UDP transport does not subclass DatagramTransport on every Python version
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        q = query.question[0]
        name = q.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(q.rdtype)
        self.queries.append((name, rdtype))
        if self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        entry = self.zone.get((name, rdtype))
        if entry is not None:
            ttl, rdatas = entry
            response.answer.append(dns.rrset.from_text(q.name, ttl, "IN", rdtype, *rdatas))
        elif not any(n == name or n.endswith("." + name) for n, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def start_server(zone: Zone, silent: bool = False) -> tuple[DnsServer, int, asyncio.DatagramTransport]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: DnsServer(zone, silent), local_addr=("127.0.0.1", 0)
    )
    return proto, transport.get_extra_info("sockname")[1], transport

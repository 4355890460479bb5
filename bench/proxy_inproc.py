#!/usr/bin/env python3
"""CPU per proxied call, in-process: the proxy fed sipp's uac/uas messages with no sockets.

Not a test. The socket-level figures come from bench/sip_cps.py; this one isolates the Python
cost of parsing, transactions, routing and serialising (a noisy machine disturbs it least), and is
the number to watch when optimising.

    python bench/proxy_inproc.py [--calls 5000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from rtc2sip.app import tune_gc
from rtc2sip.proxy.auth import Policy
from rtc2sip.proxy.locate import Resolver
from rtc2sip.proxy.location import LocationStore
from rtc2sip.proxy.registrar import Registrar
from rtc2sip.proxy.server import Proxy
from rtc2sip.sip import parse_message
from rtc2sip.transport.base import Source
from rtc2sip.transport.layer import ListenAddress, TransportLayer

GW = ("127.0.0.1", 5060)
UAC = ("127.0.0.1", 5070)
UAS = ("127.0.0.1", 5090)

INVITE = (
    "INVITE sip:service@127.0.0.1:5090 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-1-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5090>\r\n"
    "Call-ID: {n}-1@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


class FakeTransports(TransportLayer):
    """Captures what the proxy sends instead of putting it on a socket."""

    def __init__(self) -> None:
        super().__init__(lambda d, s: None, lambda f: None)
        self.listening = [ListenAddress("udp", *GW)]
        self.sent: list[tuple[tuple[str, int], bytes]] = []

    def send_udp(self, host: str, port: int, data: bytes) -> Source | None:
        self.sent.append(((host, port), data))
        return Source("udp", host, port, GW[0], GW[1], f"udp:{GW[0]}:{GW[1]}/{host}:{port}")

    def send_on_flow(self, flow_id: str, data: bytes) -> bool:
        remote = flow_id.rpartition("/")[2]
        host, _, port = remote.rpartition(":")
        self.sent.append(((host, int(port)), data))
        return True


def src(addr: tuple[str, int]) -> Source:
    return Source("udp", addr[0], addr[1], GW[0], GW[1], f"udp:{GW[0]}:{GW[1]}/{addr[0]}:{addr[1]}")


def respond(req_bytes: bytes, status: int, reason: str, tag: str, body: bytes = b"") -> bytes:
    req = parse_message(req_bytes)
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, value in req.headers:
        if name in ("Via", "From", "Call-ID", "CSeq", "Record-Route"):
            lines.append(f"{name}: {value}")
        elif name == "To":
            lines.append(f"To: {value};tag={tag}" if status > 100 else f"To: {value}")
    lines.append("Contact: <sip:127.0.0.1:5090;transport=UDP>")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SPENT = [0.0]


def feed(proxy: Proxy, data: bytes, source: Source) -> None:
    """Hand one datagram to the proxy, counting only the CPU it spends."""
    t = time.process_time()
    proxy.on_data(data, source)
    SPENT[0] += time.process_time() - t


def one_call(proxy: Proxy, tp: FakeTransports, n: int) -> None:
    tp.sent.clear()
    feed(proxy, INVITE.format(n=n).encode(), src(UAC))
    fwd = next(d for a, d in tp.sent if a == UAS)
    tag = f"{n}SIPpTag011"
    for status, reason in ((100, "Trying"), (180, "Ringing"), (200, "OK")):
        feed(proxy, respond(fwd, status, reason, tag), src(UAS))
    ok = next(d for a, d in tp.sent if a == UAC and d.startswith(b"SIP/2.0 200"))
    rr = [v for k, v in parse_message(ok).headers if k == "Record-Route"]
    route = "".join(f"Route: {r}\r\n" for r in rr)
    common = (
        f"From: sipp <sip:sipp@127.0.0.1:5070>;tag={n}SIPpTag001\r\n"
        f"To: service <sip:service@127.0.0.1:5090>;tag={tag}\r\nCall-ID: {n}-1@127.0.0.1\r\n"
    )
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        req = (
            f"{method} sip:127.0.0.1:5090;transport=UDP SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-{cseq}-{method}\r\n{route}{common}"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        tp.sent.clear()
        feed(proxy, req.encode(), src(UAC))
    bye = next(d for a, d in tp.sent if a == UAS)
    feed(proxy, respond(bye, 200, "OK", tag), src(UAS))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sort", default="tottime")
    args = ap.parse_args()
    tp = FakeTransports()
    with tempfile.TemporaryDirectory() as tmp:
        store = LocationStore(Path(tmp) / "loc.sqlite3")
        proxy = Proxy(tp, store, Registrar(store, {"localhost"}), Resolver([]),
                      Policy(domains=frozenset({"localhost", "127.0.0.1"})))
        for n in range(200):  # warm-up
            one_call(proxy, tp, n)
        tune_gc()  # as the gateway does after start-up
        prof = cProfile.Profile() if args.profile else None
        t0 = time.process_time()
        SPENT[0] = 0.0
        if prof:
            prof.enable()
        for n in range(1000, 1000 + args.calls):
            one_call(proxy, tp, n)
        if prof:
            prof.disable()
        dt = time.process_time() - t0
        print(f"{args.calls} calls: {SPENT[0] / args.calls * 1e6:.0f} µs CPU per call in the proxy "
              f"({dt / args.calls * 1e6:.0f} µs with the harness; {len(proxy.tl)} transactions alive)")
        if prof:
            pstats.Stats(prof).sort_stats(args.sort).print_stats(45)
        store.close()


if __name__ == "__main__":
    asyncio.run(main())

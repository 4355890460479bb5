#!/usr/bin/env python3
"""CPU per packet of the media fast path (issue 10), next to the Python path's (bench/relay_path.py).

Not a test: it prints figures. Three of them, each CPU time per relayed packet (G.711, 172 bytes,
AES_CM_128_HMAC_SHA1_80 toward the browser, plain RTP toward the phone, as bench/relay.py's calls):

1. Python path: bench/relay_path.py run as it is (its own best-of-rounds figure).
2. Core, sans-I/O: FastPath.process_webrtc / process_legacy on pre-built packets, thread CPU
   (this includes one Python call and one bytes object per packet: an upper bound of the core).
3. Engine over loopback: ``--streams`` bridged streams, each with its own phone-side socket pair and
   its own browser socket, all browsers on one shared WebRTC socket; every 20 ms each browser and
   each phone send one packet (the load of that many calls), from a child process on
   ``--generator-core`` that also reads what comes back; the engine runs on ``--engine-core``. The
   figure is the engine thread's own CPU (``/proc/self/task/TID/schedstat``: kernel time of its
   recvmmsg/sendmmsg/sendto and loopback delivery included) divided by the packets it relayed; the
   kernel's receive-buffer drops on the engine's sockets are printed too (a stalled engine).

    python bench/fastpath_path.py                              # 300 streams, 5 s, engine on core 1
    python bench/fastpath_path.py --streams 600 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from rtc2sip.media import fastpath
from rtc2sip.media.ports import Address
from rtc2sip.media.rtp import build_rtp
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession

PAYLOAD = bytes(160)
FAKE_FD = 3
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; the socket module does not name it


def python_path(packets: int, rounds: int) -> float:
    script = Path(__file__).with_name("relay_path.py")
    out = subprocess.run([sys.executable, str(script), "--packets", str(packets), "--rounds", str(rounds)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    match = re.search(r"mean ([0-9.]+) µs/packet", out)
    if match is None:
        raise SystemExit(f"relay_path.py said: {out}")
    return float(match.group(1))


def keyed(fp: fastpath.FastPath, session: int) -> tuple[SrtpSession, bytes]:
    """Keys for one session; returns the browser's sender session and the gateway's send key."""
    to_gateway, to_browser = os.urandom(30), os.urandom(30)
    fp.set_session_keys(session, SrtpSession(AES128_CM_SHA1_80, to_gateway, outbound=False),
                        SrtpSession(AES128_CM_SHA1_80, to_browser, outbound=True))  # fmt: skip
    return SrtpSession(AES128_CM_SHA1_80, to_gateway, outbound=True), to_browser


def core_alone(packets: int, rounds: int) -> tuple[float, float]:
    fp = fastpath.FastPath(max_streams=4, max_sessions=4)
    session = fp.add_session()
    browser, _ = keyed(fp, session)
    browser_addr, phone_addr = ("127.0.0.1", 6000), ("127.0.0.1", 5000)
    fp.set_session_remote(session, FAKE_FD, browser_addr)
    stream = fp.add_stream(session, -1, webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0,
                           legacy_initial_sequence=0)  # fmt: skip
    fp.configure_stream(stream, {0: 0}, {0: 0}, 8000)
    fp.set_peer(stream, phone_addr)
    fp.learn_ssrc(session, 1234, stream)
    process_webrtc, process_legacy = fp.process_webrtc, fp.process_legacy
    best_b2p = best_p2b = float("inf")
    for r in range(rounds):
        first = r * packets
        srtp = [browser.protect(build_rtp(0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 1234, PAYLOAD))
                for i in range(first, first + packets)]  # fmt: skip
        rtp = [build_rtp(0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF, 5678, PAYLOAD) for i in range(first, first + packets)]
        now = time.monotonic()
        t0 = time.thread_time()
        for datagram in srtp:
            process_webrtc(FAKE_FD, datagram, browser_addr, now)
        t1 = time.thread_time()
        for datagram in rtp:
            process_legacy(stream, datagram, phone_addr, now)
        t2 = time.thread_time()
        best_b2p = min(best_b2p, (t1 - t0) / packets * 1e6)
        best_p2b = min(best_p2b, (t2 - t1) / packets * 1e6)
    stats = fp.stream_stats(stream)
    sent = stats["legacy"]["packets_out"] + stats["webrtc"]["packets_out"]  # type: ignore[index]
    if sent != 2 * packets * rounds:
        raise SystemExit(f"core: {sent} of {2 * packets * rounds} packets relayed")
    return best_b2p, best_p2b


def thread_cpu_ns(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def udp_drops() -> dict[int, int]:
    """Kernel receive-buffer drops per local UDP port (/proc/net/udp's last column)."""
    drops: dict[int, int] = {}
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            drops[int(fields[1].split(":")[1], 16)] = int(fields[-1])
    return drops


def udp(rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf:
        try:  # as media/udpmux.py asks for the shared socket: beyond rmem_max when allowed
            s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def generate(calls: list[Call], webrtc_addr: Address, rounds: int, go: int, done: int) -> None:
    """The child process: every 20 ms each browser and each phone sends one packet; what comes back is
    read as peers would (nonblocking, once per round); reports its late rounds on ``done``."""
    os.read(go, 1)
    sinks = [c.phone for c in calls] + [c.browser for c in calls]
    start = time.monotonic()
    late = 0
    for k in range(rounds):
        for c in calls:
            c.browser.sendto(c.srtp[k], webrtc_addr)
            c.phone.sendto(c.rtp[k], c.legacy_addr)
        for sock in sinks:
            try:
                while True:
                    sock.recv(2048)
            except BlockingIOError:
                pass
        delay = start + (k + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
    os.write(done, str(late).encode())


class Call(NamedTuple):
    legacy: socket.socket
    phone: socket.socket
    browser: socket.socket
    srtp: list[bytes]
    rtp: list[bytes]
    legacy_addr: Address


def engine_over_loopback(streams: int, seconds: float, engine_core: int | None = None,
                         generator_core: int | None = None) -> dict[str, float]:  # fmt: skip
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * streams + 100)), hard))
    fp = fastpath.FastPath(max_streams=streams + 1, max_sessions=streams + 1)
    webrtc = udp(8 << 20)
    webrtc_addr = webrtc.getsockname()
    calls = []
    rounds = int(seconds / 0.02)
    for i in range(streams):
        legacy, phone, browser_sock = udp(), udp(1 << 16), udp(1 << 16)
        session = fp.add_session()
        browser, _ = keyed(fp, session)
        fp.set_session_remote(session, webrtc.fileno(), browser_sock.getsockname())
        stream = fp.add_stream(session, legacy.fileno(), webrtc_ssrc=1, legacy_ssrc=2, webrtc_initial_sequence=0,
                               legacy_initial_sequence=0)  # fmt: skip
        fp.configure_stream(stream, {0: 0}, {0: 0}, 8000)
        fp.set_peer(stream, phone.getsockname())
        fp.learn_ssrc(session, 1000 + i, stream)
        srtp = [browser.protect(build_rtp(0, k, 160 * k, 1000 + i, PAYLOAD)) for k in range(rounds)]
        rtp = [build_rtp(0, k, 160 * k, 5000 + i, PAYLOAD) for k in range(rounds)]
        calls.append(Call(legacy, phone, browser_sock, srtp, rtp, legacy.getsockname()))
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()  # before the engine thread exists: a fork of one thread
    if child == 0:
        try:
            if generator_core is not None:
                os.sched_setaffinity(0, {generator_core})
            generate(calls, webrtc_addr, rounds, go_r, done_w)
        finally:
            os._exit(0)
    if engine_core is not None:
        os.sched_setaffinity(0, {engine_core})  # the engine thread inherits it
    before = set(os.listdir("/proc/self/task"))
    fp.add_webrtc_socket(webrtc)
    fp.start()
    (tid,) = (int(t) for t in set(os.listdir("/proc/self/task")) - before)
    stats0 = fp.stats()
    cpu0 = thread_cpu_ns(tid)
    start = time.monotonic()
    os.write(go_w, b"g")
    late = int(os.read(done_r, 32) or b"-1")
    os.waitpid(child, 0)
    time.sleep(0.2)
    cpu1 = thread_cpu_ns(tid)
    elapsed = time.monotonic() - start
    stats1 = fp.stats()
    if os.environ.get("FASTPATH_BENCH_DEBUG"):
        print(stats0, stats1, file=sys.stderr)
    fp.stop()
    drops = udp_drops()
    webrtc_drops = drops.get(webrtc_addr[1], 0)
    legacy_drops = sum(drops.get(c.legacy_addr[1], 0) for c in calls)
    out = int(stats1["datagrams_out"]) - int(stats0["datagrams_out"])  # type: ignore[call-overload]
    wakeups = int(stats1["wakeups"]) - int(stats0["wakeups"])  # type: ignore[call-overload]
    for c in calls:
        for sock in (c.legacy, c.phone, c.browser):
            sock.close()
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    webrtc.close()
    return {"us_per_packet": (cpu1 - cpu0) / 1e3 / max(out, 1), "relayed": out, "sent": 2 * streams * rounds,
            "packets_per_wakeup": out / max(wakeups, 1), "late_rounds": late, "rounds": rounds,
            "webrtc_drops": webrtc_drops, "legacy_drops": legacy_drops,
            "cpu_share": (cpu1 - cpu0) / 1e9 / elapsed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packets", type=int, default=20000, help="packets per direction per round (1, 2)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--streams", type=int, default=300, help="bridged streams through the engine (3)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--engine-core", type=int, default=1, help="CPU the engine runs on (-1: any)")
    parser.add_argument("--generator-core", type=int, default=0, help="CPU the load generator runs on (-1: any)")
    args = parser.parse_args()
    if not fastpath.available:
        raise SystemExit(f"the fast path is not built: {fastpath.unavailable_reason}")
    python = python_path(args.packets, args.rounds)
    b2p, p2b = core_alone(args.packets, args.rounds)
    core = (b2p + p2b) / 2
    engine = engine_over_loopback(args.streams, args.seconds, None if args.engine_core < 0 else args.engine_core,
                                  None if args.generator_core < 0 else args.generator_core)
    print(f"python path (bench/relay_path.py): {python:.2f} µs/packet, no I/O")
    print(f"fast path core through Python calls: browser->phone {b2p:.2f}, phone->browser {p2b:.2f}, "
          f"mean {core:.2f} µs/packet, no I/O ({python / core:.1f}x less than the Python path)")
    print(f"fast path engine, {args.streams} streams over loopback: {engine['us_per_packet']:.2f} µs/packet "
          f"of engine-thread CPU with its syscalls and loopback delivery ({engine['relayed']:.0f} of "
          f"{engine['sent']:.0f} packets relayed, {engine['packets_per_wakeup']:.1f} per epoll wakeup, "
          f"engine at {100 * engine['cpu_share']:.0f} % of a core, {engine['late_rounds']:.0f} of "
          f"{engine['rounds']:.0f} generator rounds late; kernel drops before the engine read them: "
          f"{engine['webrtc_drops']:.0f} on the WebRTC socket, {engine['legacy_drops']:.0f} on phone-side sockets)")
    print("for comparison (bench/README.md, session 3): rtc2sip's whole relay 16.4 µs/packet at 600 calls, "
          f"rtpengine 8.3; the engine's figure is {16.4 / engine['us_per_packet']:.1f}x less than rtc2sip's "
          f"and {8.3 / engine['us_per_packet']:.1f}x less than rtpengine's")


if __name__ == "__main__":
    main()

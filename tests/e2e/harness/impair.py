"""A userspace network impairment ("delay line") between two network namespaces, over TUN devices.

Why in userspace: this kernel has no sch_netem (``tc qdisc ... netem``: "Specified qdisc kind is
unknown") and no NFQUEUE, and nftables can drop but never delay. What it does have is /dev/net/tun
and network namespaces, so the delay line is a small router of our own: every IP packet that one
namespace sends to the other is read from a TUN device, held for its delay (or dropped), and written
into the other namespace's TUN device.

Two layers:

- :class:`DelayLine`, sans-I/O: ``offer(packet, direction, now)`` says when to deliver the packet, or
  ``None`` to drop it, and keeps the counters (what was forwarded, dropped, and the delay each packet
  really got, as the runner reports it with :meth:`DelayLine.delivered`). Seeded, so a run can be
  replayed, and testable without root (tests/unit/test_impair.py).
- :class:`ImpairedLink`, the I/O: side "a" is the caller's own namespace (``a_addr``, 10.77.0.2 by
  default: the clients), side "b" a new namespace (``b_addr``, 10.77.0.1: the gateway) held open by
  a ``sleep`` process; a thread forwards both ways with a timer heap. Programs are started in side b
  with :meth:`ImpairedLink.nsenter` (``nsenter --net=/proc/PID/ns/net ...``).

Only for namespaces a test or the soak made itself: it refuses to add an interface where one other
than ``lo`` is already up (it would reroute 10.77.0.0/30 on a real host).
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import fcntl
import heapq
import itertools
import math
import os
import random
import select
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from .procs import HarnessError

__all__ = ["AB", "BA", "DelayLine", "Direction", "ImpairedLink", "Impairment", "impair_available"]

Direction = Literal["a->b", "b->a"]
AB: Direction = "a->b"
BA: Direction = "b->a"
DIRECTIONS: tuple[Direction, Direction] = (AB, BA)

_IPPROTO_TCP = 6
_IPPROTO_UDP = 17

# linux/if_tun.h
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000

# delay histogram: 0.1 ms bins up to 5 s (a delay line of this kind never holds a packet that long;
# anything above lands in the last bin), so that a soak of hours keeps a fixed-size record
_BIN_MS = 0.1
_BINS = 50_000


@dataclass(frozen=True)
class Impairment:
    """What the line does to each packet.

    ``loss_percent``: probability of dropping a packet (UDP only when ``loss_udp_only``: TCP, the
    WebSocket signalling, retransmits anyway, and its loss would only turn into seconds of
    retransmission timeouts that say nothing about the media path). Datagrams from or to one of
    ``lossless_ports`` are never dropped (the soak exempts SIP over UDP: "loss on the media path").

    ``delay_ms`` and ``jitter_ms``: every packet (TCP too) is held ``delay_ms`` plus a random
    ``jitter`` drawn uniformly from [-jitter_ms, +jitter_ms] (``distribution="uniform"``, what netem's
    ``delay D J`` does without a distribution table) or normally with sigma ``jitter_ms``
    (``"normal"``), never less than 0.

    ``keep_order``: False (the default) lets a packet overtake an earlier one of its flow when it drew
    a shorter delay, as netem does with jitter: that reordering is part of what a jitter buffer must
    cope with, and what ``delay 20ms 20ms`` would give on a kernel with netem. True delivers each flow
    (protocol, addresses, ports) in order: a packet waits at least until the previous one of its flow
    has gone, which is what a real path with queueing jitter and no parallel links mostly looks like
    (the delays are then a little longer than drawn; the counters show the real ones).
    """

    loss_percent: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    distribution: Literal["uniform", "normal"] = "uniform"
    keep_order: bool = False
    loss_udp_only: bool = True
    lossless_ports: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss_percent <= 100.0:
            raise ValueError(f"loss_percent {self.loss_percent} not in 0..100")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay {self.delay_ms} ms and jitter {self.jitter_ms} ms must be >= 0")
        if self.distribution not in ("uniform", "normal"):
            raise ValueError(f"distribution {self.distribution!r}: uniform or normal")

    def describe(self) -> dict[str, Any]:
        return {
            "loss_percent": self.loss_percent,
            "loss_applies_to": "UDP" if self.loss_udp_only else "all IP packets",
            "lossless_ports": sorted(self.lossless_ports),
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "distribution": self.distribution,
            "keep_order": self.keep_order,
        }


@dataclass(frozen=True)
class PacketInfo:
    """What the line needs of an IP packet: its protocol and flow (ports 0 when it has none)."""

    version: int
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int

    @property
    def flow(self) -> tuple[int, bytes, bytes, int, int]:
        return (self.proto, self.src, self.dst, self.sport, self.dport)


def parse_packet(packet: bytes) -> PacketInfo | None:
    """The IPv4/IPv6 header fields of ``packet`` (None when it is neither). IPv6 extension headers are
    not walked: a packet with one counts as that header's protocol, which is not UDP, so it is never
    dropped by the UDP-only loss (the media and SIP here never carry extension headers)."""
    if len(packet) < 1:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        proto = packet[9]
        src, dst = packet[12:16], packet[16:20]
        # ports only in the first fragment (offset 0): later fragments carry payload there
        first_fragment = (struct.unpack_from("!H", packet, 6)[0] & 0x1FFF) == 0
        offset = ihl if first_fragment else -1
    elif version == 6 and len(packet) >= 40:
        proto = packet[6]
        src, dst = packet[8:24], packet[24:40]
        offset = 40
    else:
        return None
    sport = dport = 0
    if offset >= 0 and proto in (_IPPROTO_TCP, _IPPROTO_UDP) and len(packet) >= offset + 4:
        sport, dport = struct.unpack_from("!HH", packet, offset)
    return PacketInfo(version, proto, src, dst, sport, dport)


class DelayStats:
    """Delays in ms: count, mean, min, max and quantiles from a fixed 0.1 ms histogram."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0  # for the standard deviation: the jitter the packets really got
        self.min = math.inf
        self.max = 0.0
        self.bins = [0] * _BINS

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.squares += ms * ms
        self.min = min(self.min, ms)
        self.max = max(self.max, ms)
        self.bins[min(_BINS - 1, max(0, int(ms / _BIN_MS)))] += 1

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def stdev(self) -> float:
        if self.count < 2:
            return 0.0
        return math.sqrt(max(0.0, (self.squares - self.total * self.total / self.count) / (self.count - 1)))

    def quantile(self, q: float) -> float:
        """Upper edge of the bin holding the q-quantile (an over-estimate by < 0.1 ms)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        i = bisect.bisect_left(list(itertools.accumulate(self.bins)), rank)
        return (i + 1) * _BIN_MS if i < _BINS else self.max

    def copy(self) -> DelayStats:
        out = copy.copy(self)
        out.bins = list(self.bins)  # the one mutable part; a C-speed copy, done under the runner's lock
        return out

    def summary(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_ms": round(self.mean, 2),
            "stdev_ms": round(self.stdev, 2),
            "min_ms": round(self.min, 2) if self.count else 0.0,
            "p50_ms": round(self.quantile(0.5), 1),
            "p99_ms": round(self.quantile(0.99), 1),
            "max_ms": round(self.max, 2),
        }


@dataclass
class DirectionCounters:
    packets: int = 0  # offered to the line
    udp: int = 0
    lossy: int = 0  # subject to the loss (UDP, less the lossless ports): the applied rate's base
    dropped: int = 0  # by the loss (UDP only by default)
    forwarded: int = 0  # written into the other side (the runner's report)
    write_errors: int = 0
    unparsed: int = 0  # neither IPv4 nor IPv6: forwarded as is, never dropped
    scheduled: DelayStats = field(default_factory=DelayStats)  # as drawn (and ordered)
    actual: DelayStats = field(default_factory=DelayStats)  # as delivered, the runner's lateness included

    def copy(self) -> DirectionCounters:
        out = copy.copy(self)
        out.scheduled, out.actual = self.scheduled.copy(), self.actual.copy()
        return out

    def summary(self) -> dict[str, Any]:
        lossy = self.lossy
        return {
            "packets": self.packets,
            "udp": self.udp,
            "lossy": self.lossy,
            "dropped": self.dropped,
            "forwarded": self.forwarded,
            "write_errors": self.write_errors,
            "loss_percent_applied": round(100.0 * self.dropped / lossy, 2) if lossy else 0.0,
            "scheduled_delay": self.scheduled.summary(),
            "added_delay": self.actual.summary(),
        }


class DelayLine:
    """The sans-I/O core: which packets to drop and when to deliver the others. Not thread-safe: the
    runner calls it from its one thread and reads :meth:`summary` under its own lock."""

    def __init__(self, impairment: Impairment, seed: int = 1) -> None:
        self.impairment = impairment
        self.rng = random.Random(seed)
        self.counters: dict[Direction, DirectionCounters] = {d: DirectionCounters() for d in DIRECTIONS}
        # keep_order: when each flow's last packet is due, so that the next one is not due earlier
        self._last_due: dict[tuple[Direction, tuple[int, bytes, bytes, int, int]], float] = {}

    def draw_delay(self) -> float:
        """One packet's delay in seconds, >= 0."""
        imp = self.impairment
        if imp.jitter_ms <= 0:
            ms = imp.delay_ms
        elif imp.distribution == "normal":
            ms = self.rng.gauss(imp.delay_ms, imp.jitter_ms)
        else:
            ms = imp.delay_ms + self.rng.uniform(-imp.jitter_ms, imp.jitter_ms)
        return max(0.0, ms) / 1000.0

    def offer(self, packet: bytes, direction: Direction, now: float) -> float | None:
        """When to deliver ``packet`` (a time on ``now``'s clock, >= now), or None: dropped."""
        imp = self.impairment
        c = self.counters[direction]
        c.packets += 1
        info = parse_packet(packet)
        if info is None:
            c.unparsed += 1
        is_udp = info is not None and info.proto == _IPPROTO_UDP
        c.udp += is_udp
        lossy = info is not None and (is_udp or not imp.loss_udp_only)
        if lossy and info is not None and (info.sport in imp.lossless_ports or info.dport in imp.lossless_ports):
            lossy = False
        c.lossy += lossy
        # the random draw only for the packets that can be lost: the loss sequence of a seed then does
        # not depend on how much TCP went by
        if lossy and imp.loss_percent > 0 and self.rng.random() * 100.0 < imp.loss_percent:
            c.dropped += 1
            return None
        due = now + self.draw_delay()
        if imp.keep_order and info is not None:
            key = (direction, info.flow)
            due = max(due, self._last_due.get(key, due))
            self._last_due[key] = due
            if len(self._last_due) > 10_000:  # flows come and go in a soak of hours: forget the old
                self._last_due = {k: t for k, t in self._last_due.items() if t > now}
        c.scheduled.add((due - now) * 1000.0)
        return due

    def delivered(self, direction: Direction, delay: float, ok: bool = True) -> None:
        """The runner's report: a packet went out ``delay`` seconds after it arrived (or failed)."""
        c = self.counters[direction]
        if ok:
            c.forwarded += 1
            c.actual.add(delay * 1000.0)
        else:
            c.write_errors += 1

    def summary(self, counters: dict[Direction, DirectionCounters] | None = None) -> dict[str, Any]:
        counters = self.counters if counters is None else counters
        return {"impairment": self.impairment.describe(), **{d: counters[d].summary() for d in DIRECTIONS}}

    def snapshot(self) -> dict[Direction, DirectionCounters]:
        """A copy of the counters, quick to take (the runner holds its lock meanwhile, and packets wait)."""
        return {d: c.copy() for d, c in self.counters.items()}


# ---------------------------------------------------------------------------------------------- I/O


def impair_available() -> str | None:
    """None when an :class:`ImpairedLink` can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root (TUN devices, network namespaces)"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


def _open_tun(name: str) -> int:
    """A TUN device (IP packets, no packet-info header) in this thread's network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd


class ImpairedLink:
    """Side a (this namespace, ``a_addr``) <-> delay line <-> side b (a new namespace, ``b_addr``).

    The TUN devices are created here and side b's is then moved into the new namespace (``ip link set
    ... netns``): the open fd keeps working across the move, so no thread has to enter the namespace
    (Python 3.11 has no os.setns). Closing the fds at :meth:`stop` removes both devices.
    """

    def __init__(
        self,
        line: DelayLine,
        *,
        a_addr: str = "10.77.0.2",
        b_addr: str = "10.77.0.1",
        prefix: int = 30,
        names: tuple[str, str] = ("rtcimp-a", "rtcimp-b"),
        default_route: bool = False,
    ) -> None:
        self.line = line
        self.a_addr, self.b_addr, self.prefix = a_addr, b_addr, prefix
        self.names = names
        # side a's default route through the line: for a program that only uses an interface with a
        # route beyond its subnet (side b has no route further, so stray traffic ends there)
        self.default_route = default_route
        self.holder: subprocess.Popen[bytes] | None = None  # `unshare --net`: side b's namespace
        self.fds: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False
        self.error: BaseException | None = None

    # --- set-up

    @property
    def netns(self) -> str:
        """Side b's namespace, for ``nsenter --net=``."""
        if self.holder is None:
            raise HarnessError("the impaired link is not started")
        return f"/proc/{self.holder.pid}/ns/net"

    def nsenter(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run in side b (nsenter execs it: the pid is the program's own)."""
        return ["nsenter", f"--net={self.netns}", "--", *argv]

    def start(self) -> ImpairedLink:
        why = impair_available()
        if why is not None:
            raise HarnessError(f"impaired link: {why}")
        # side b: a namespace held by a process of ours (no /run/netns entry left behind on a crash),
        # which waits on a pipe from us: if we die without stop(), its read ends and so does it
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "read _"], stdin=subprocess.PIPE,
                                       start_new_session=True)
        own = os.readlink("/proc/self/ns/net")
        try:
            deadline = time.monotonic() + 5
            while os.readlink(self.netns) == own:  # unshare has not run yet
                if self.holder.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"unshare --net did not make a namespace (status {self.holder.poll()})")
                time.sleep(0.01)
            fd_a, fd_b = _open_tun(self.names[0]), _open_tun(self.names[1])
            self.fds = (fd_a, fd_b)
            _run(["ip", "link", "set", self.names[1], "netns", str(self.holder.pid)])
            _run(["ip", "addr", "add", f"{self.a_addr}/{self.prefix}", "dev", self.names[0]])
            _run(["ip", "link", "set", self.names[0], "up"])
            if self.default_route:
                _run(["ip", "route", "add", "default", "dev", self.names[0]])
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "addr", "add", f"{self.b_addr}/{self.prefix}", "dev", self.names[1]],
                        ["ip", "link", "set", self.names[1], "up"]):
                _run(self.nsenter(cmd))
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._thread = threading.Thread(target=self._run_guarded, name="delay-line", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> ImpairedLink:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        for fd in (*(self.fds or ()), self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.fds = None
        self._wake_r = self._wake_w = -1
        if self.holder is not None:
            if self.holder.stdin is not None:
                with contextlib.suppress(OSError):
                    self.holder.stdin.close()
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait(5)

    def summary(self) -> dict[str, Any]:
        with self._lock:  # only the copy under the lock: the quantiles would hold the packets up
            counters = self.line.snapshot()
        out = self.line.summary(counters)
        out["link"] = {"a": f"{self.names[0]} {self.a_addr}/{self.prefix}",
                       "b": f"{self.names[1]} {self.b_addr}/{self.prefix} (own namespace)",
                       "error": repr(self.error) if self.error else None}
        return out

    # --- the forwarding loop

    def _run_guarded(self) -> None:
        try:
            self._forward()
        except BaseException as exc:  # kept for summary(): a dead line must show in the soak's figures
            self.error = exc

    def _forward(self) -> None:
        assert self.fds is not None
        fd_a, fd_b = self.fds
        # what each side's reads are, and where they go
        route: dict[int, tuple[Direction, int]] = {fd_a: (AB, fd_b), fd_b: (BA, fd_a)}
        poller = select.epoll()
        for fd in (fd_a, fd_b, self._wake_r):
            poller.register(fd, select.EPOLLIN)
        heap: list[tuple[float, int, int, bytes, float, Direction]] = []
        seq = 0  # heap tie-break: packets due at the same time go in arrival order
        line, lock = self.line, self._lock
        try:
            while not self._stopping:
                timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else 1.0
                for fd, _ in poller.poll(timeout):
                    if fd == self._wake_r:
                        continue
                    direction, out_fd = route[fd]
                    for _ in range(64):  # a burst at most per wake-up, then the due packets go
                        try:
                            packet = os.read(fd, 65536)
                        except BlockingIOError:
                            break
                        now = time.monotonic()
                        with lock:
                            due = line.offer(packet, direction, now)
                        if due is not None:
                            heapq.heappush(heap, (due, seq, out_fd, packet, now, direction))
                            seq += 1
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    _, _, out_fd, packet, arrived, direction = heapq.heappop(heap)
                    try:
                        os.write(out_fd, packet)
                        ok = True
                    except OSError:  # a packet the kernel refuses (or the device going down at stop)
                        ok = False
                    with lock:
                        line.delivered(direction, now - arrived, ok)
        finally:
            poller.close()


def probe(count: int = 300, interval: float = 0.005, delay_ms: float = 20.0, jitter_ms: float = 10.0,
          loss_percent: float = 5.0, seed: int = 7) -> dict[str, Any]:
    """Send ``count`` UDP datagrams from side a to a UDP echo in side b and back; the round trips and
    the line's counters (tests/integration/test_impair_tun.py runs this under ``unshare --net``)."""
    import json
    import socket
    import sys

    link = ImpairedLink(DelayLine(Impairment(loss_percent, delay_ms, jitter_ms), seed)).start()
    echo_src = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind((sys.argv[1],0))\n"
                "print(s.getsockname()[1],flush=True);s.settimeout(10)\n"
                "while True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)\n")
    echo = subprocess.Popen(link.nsenter([sys.executable, "-c", echo_src, link.b_addr]), stdout=subprocess.PIPE)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        rtts: list[float] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((link.a_addr, 0))
            s.setblocking(False)
            sent: dict[int, float] = {}
            deadline = time.monotonic() + count * interval + 0.5  # the last ones back well within
            i = 0
            while time.monotonic() < deadline:
                if i < count:
                    sent[i] = time.monotonic()
                    s.sendto(json.dumps(i).encode(), (link.b_addr, port))
                    i += 1
                ready, _, _ = select.select([s], [], [], interval)
                while ready:
                    try:
                        data = s.recv(2048)
                    except BlockingIOError:
                        break
                    rtts.append(time.monotonic() - sent[int(data)])
                if i >= count and len(rtts) >= count:
                    break
        return {"sent": count, "received": len(rtts), "rtt_ms": sorted(round(r * 1000, 2) for r in rtts),
                "line": link.summary()}
    finally:
        echo.kill()
        echo.wait(5)
        link.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(probe()))

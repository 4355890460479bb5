"""Per-source throttling of SIP traffic (issue 13 item 4), sans-I/O: host and time in, a verdict out.

What scanners (sipvicious' svmap, svwar, svcrack; friendly-scanner) do to a SIP server on the open
internet is send many requests quickly from one address, and, to crack a password, many REGISTERs
whose credentials fail. Each source address gets a token bucket (``rate`` messages per second,
``burst`` at once); a source over it has its messages dropped, and one that stays over it (``burst``
more messages dropped) or fails digest authentication ``max_auth_failures`` times within
``failure_window`` seconds is blocked: everything it sends is dropped for ``block_time`` seconds.
Dropped, not answered: an answer is what a scanner wants, and over UDP an answer to a forged source
is amplification. Each block is one log line; the counters go to ``/metrics``.

Loopback sources are exempt (the gateway's own services, a local Kamailio, the benchmarks). Browsers
behind one office NAT share an address, hence the generous defaults (``[limits]``, docs/CONFIG.md).
The table is bounded (``max_sources``, least recently seen dropped first), so a flood from forged
addresses costs memory once, not without end.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["Throttle"]

log = logging.getLogger("rtc2sip.proxy")


@dataclass(slots=True)
class _Source:
    tokens: float
    last: float
    dropped: int = 0  # over the rate since the bucket was last full
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0


@lru_cache(maxsize=1024)
def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Throttle:
    """See the module docstring. ``rate`` 0 turns the rate limit off, ``max_auth_failures`` 0 the
    block on failed authentications."""

    def __init__(self, rate: float = 100.0, burst: float = 200.0, max_auth_failures: int = 10,
                 failure_window: float = 60.0, block_time: float = 60.0, max_sources: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_auth_failures = max_auth_failures
        self.failure_window = failure_window
        self.block_time = block_time
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        # /metrics
        self.throttled = 0  # messages dropped over the rate or while blocked
        self.blocks = 0  # blocks started

    def _get(self, host: str, now: float) -> _Source:
        s = self._sources.get(host)
        if s is None:
            s = self._sources[host] = _Source(self.burst, now)
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(host)
        return s

    def admit(self, host: str, now: float) -> bool:
        """May a message from ``host`` be handled? False: drop it (counted)."""
        if (self.rate <= 0 and self.max_auth_failures <= 0) or _loopback(host):
            return True
        s = self._get(host, now)
        if s.blocked_until > now:
            self.throttled += 1
            return False
        if self.rate <= 0:
            return True
        s.tokens = min(self.burst, s.tokens + (now - s.last) * self.rate)
        s.last = now
        if s.tokens >= 1.0:
            s.tokens -= 1.0
            if s.tokens >= self.burst - 1.0:
                s.dropped = 0
            return True
        self.throttled += 1
        s.dropped += 1
        if s.dropped >= self.burst:
            self._block(host, s, now, f"over {self.rate:g} messages/s")
        return False

    def auth_failed(self, host: str, now: float) -> None:
        """Credentials from ``host`` did not verify (a wrong password, an unknown user)."""
        if self.max_auth_failures <= 0 or _loopback(host):
            return
        s = self._get(host, now)
        f = s.failures
        f.append(now)
        while f and f[0] <= now - self.failure_window:
            f.popleft()
        if len(f) >= self.max_auth_failures and s.blocked_until <= now:
            self._block(host, s, now, f"{len(f)} failed authentications in {self.failure_window:g} s")

    def _block(self, host: str, s: _Source, now: float, why: str) -> None:
        s.blocked_until = now + self.block_time
        s.dropped = 0
        s.failures.clear()
        s.tokens = self.burst
        self.blocks += 1
        log.warning("source %s blocked for %g s: %s", host, self.block_time, why)

    def blocked_now(self, now: float) -> int:
        return sum(1 for s in self._sources.values() if s.blocked_until > now)

    def is_blocked(self, host: str, now: float) -> bool:
        s = self._sources.get(host)
        return s is not None and s.blocked_until > now

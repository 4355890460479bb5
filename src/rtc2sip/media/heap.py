"""Gives the heap pages of released DTLS connections back to the system (glibc ``malloc_trim``).

No RFC: process memory housekeeping for :mod:`rtc2sip.media.session`, which releases a call's
OpenSSL connection once its DTLS handshake is done (RFC 6347 §4.2.4 retransmissions over).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic

from .libc import libc

__all__ = ["TRIMMER", "TRIM_DELAY", "TRIM_INTERVAL", "HeapTrimmer"]

log = logging.getLogger("rtc2sip.media")

# The heap is trimmed TRIM_DELAY after a DTLS connection was released (a burst of calls releases its
# connections over one housekeeping period: one trim takes them all), at most every TRIM_INTERVAL.
TRIM_DELAY = 1.0
TRIM_INTERVAL = 2.0


class HeapTrimmer:
    """Gives the pages of released DTLS connections back to the system (glibc ``malloc_trim``).

    A released connection frees ~65 KB scattered among the allocations of calls that go on; glibc
    keeps such holes in the process's resident memory (only the top of the heap is returned by
    itself), so without this a call's handshake would cost memory for the whole life of the process
    whenever many calls start together. ``malloc_trim(0)`` hands back every free page; it is called
    from housekeeping, :data:`TRIM_DELAY` after a release, at most every :data:`TRIM_INTERVAL`.
    """

    __slots__ = ("_last", "_pending_since", "_trim")

    def __init__(self) -> None:
        self._pending_since: float | None = None
        self._last = 0.0
        # not glibc (musl, macOS): no malloc_trim, nothing to do
        self._trim: Callable[[int], int] | None = getattr(libc(), "malloc_trim", None)

    def released(self, now: float) -> None:
        if self._trim is not None and self._pending_since is None:
            self._pending_since = now

    def tick(self, now: float) -> None:
        since = self._pending_since
        if since is not None and now - since >= TRIM_DELAY and now - self._last >= TRIM_INTERVAL:
            self._pending_since = None
            self._last = now
            assert self._trim is not None
            started = monotonic()
            self._trim(0)
            log.debug("heap trimmed in %.1f ms", 1000 * (monotonic() - started))


TRIMMER = HeapTrimmer()

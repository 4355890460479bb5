"""Retransmission history for NACK (RFC 4585 §6.2.1 generic NACK, answered per RFC 4588 or by resending).

The relay keeps the packets it sent on a video stream so that a receiver's NACK can be answered with
them. Its depth follows webrtc2sip's ``avpf-tail-length`` rule: it starts at the minimum and, each
time a NACK asks for a packet the history already dropped, doubles, up to the maximum. A receiver
whose round trip outlasts the history then gets a deeper one instead of keyframe-on-every-loss.

Memory: at most ``max_tail`` packets per stream (400 of ~1200 bytes: ~0.5 MB at the default).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["RetransmissionHistory"]


class RetransmissionHistory:
    """The last ``depth`` packets sent on one stream, by 16-bit sequence number."""

    def __init__(self, min_tail: int = 100, max_tail: int = 400) -> None:
        if min_tail < 1 or max_tail < min_tail:
            raise ValueError(f"avpf-tail-length {min_tail}-{max_tail}: need 1 <= min <= max")
        self.min_tail = min_tail
        self.max_tail = max_tail
        self._depth = min_tail
        self._packets: dict[int, bytes] = {}
        self._order: deque[int] = deque()
        self._newest: int | None = None
        self.hits = 0
        self.misses = 0  # requested, already dropped
        self.unknown = 0  # requested, never sent (ahead of the newest, or too old to tell)

    @property
    def depth(self) -> int:
        return self._depth

    def __len__(self) -> int:
        return len(self._packets)

    def store(self, seq: int, packet: bytes) -> None:
        """Keep ``packet`` (as it went on the wire, after header rewrite, before SRTP)."""
        seq &= 0xFFFF
        if seq in self._packets:  # sent again (a retransmission, or the numbering wrapped)
            self._order.remove(seq)
        self._packets[seq] = packet
        self._order.append(seq)
        if self._newest is None or (seq - self._newest) & 0xFFFF < 0x8000:
            self._newest = seq
        self._trim()

    def lookup(self, seqs: Iterable[int]) -> list[bytes]:
        """The packets still held among ``seqs``, in the order asked; one request for a packet already
        dropped doubles the depth (once per call, up to ``max_tail``)."""
        found = []
        dropped = False
        for seq in seqs:
            seq &= 0xFFFF
            packet = self._packets.get(seq)
            if packet is not None:
                found.append(packet)
                self.hits += 1
            elif self._newest is not None and 0 < (self._newest - seq) & 0xFFFF <= self.max_tail * 2:
                self.misses += 1
                dropped = True
            else:
                self.unknown += 1
        if dropped and self._depth < self.max_tail:
            self._depth = min(self._depth * 2, self.max_tail)
        return found

    def _trim(self) -> None:
        while len(self._order) > self._depth:
            del self._packets[self._order.popleft()]

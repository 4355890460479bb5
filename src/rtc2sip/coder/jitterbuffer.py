"""A video jitter buffer (``enable-videojb``), sans I/O: packets and arrival times in, packets out in order.

Video is reassembled into frames from packets taken in sequence order, so a packet overtaken on the
way would otherwise read as a loss (and a keyframe request). The buffer holds packets that arrive
after a gap until the gap fills or the oldest held packet has waited ``max_delay`` seconds, then
gives up on the gap, counts it lost and releases what follows. It is bounded both ways: a packet
waits at most ``max_delay`` (provided the owner calls :meth:`VideoJitterBuffer.flush` when
:meth:`~VideoJitterBuffer.deadline` passes, or simply keeps pushing), and at most ``max_packets`` are
held (``max_packets`` references, ~1.5 MB of 1200-byte payloads at the default 512).

Sequence numbers are extended to 64 bits as in RFC 3550 §A.1: a jump of more than ``MAX_DROPOUT``
ahead or ``MAX_MISORDER`` behind is a restart of the source, on which the buffer releases what it
holds and starts over from the new packet.
"""

from __future__ import annotations

__all__ = ["MAX_DROPOUT", "MAX_MISORDER", "VideoJitterBuffer"]

MAX_DROPOUT = 3000  # RFC 3550 §A.1
MAX_MISORDER = 100


class VideoJitterBuffer:
    """Reorders one RTP stream's packets by extended sequence number; see the module docstring.

    ``lost`` counts the sequence numbers given up on, ``gaps`` the times it gave up, ``late`` the
    packets that came after their place was passed (or twice), ``resets`` the source restarts.
    """

    def __init__(self, max_delay: float = 0.1, max_packets: int = 512) -> None:
        if max_delay < 0 or max_packets < 1:
            raise ValueError("max_delay must be >= 0 and max_packets >= 1")
        self.max_delay = max_delay
        self.max_packets = max_packets
        self.lost = 0
        self.gaps = 0
        self.late = 0
        self.resets = 0
        self._next: int | None = None  # extended sequence number to release next
        self._highest = 0  # extended sequence number of the newest packet
        self._held: dict[int, tuple[int, object, float]] = {}  # extended seq -> (seq, item, arrival)

    def __len__(self) -> int:
        return len(self._held)

    def _extend(self, seq: int) -> int:
        highest = self._highest
        delta = (seq - highest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        return highest + delta

    def push(self, packet: bytes | object, seq: int, now: float) -> list[tuple[int, object]]:
        """Take one packet; return the packets now releasable, ``(seq, packet)`` in sequence order."""
        seq &= 0xFFFF
        if not self._held and self._next is not None and seq == self._next & 0xFFFF:
            self._next += 1  # the common case: in order, nothing waiting
            if self._next - 1 > self._highest:
                self._highest = self._next - 1
            return [(seq, packet)]
        out: list[tuple[int, object]] = []
        if self._next is None:
            self._highest = self._next = seq
            ext = seq
        else:
            ext = self._extend(seq)
            if ext - self._next > MAX_DROPOUT or self._next - ext > MAX_MISORDER:
                out = self._drain()  # the source restarted: what is held belongs to the old numbering
                self.resets += 1
                self._highest = self._next = ext = seq
            elif ext < self._next or ext in self._held:
                self.late += 1
                return self.flush(now)
        self._held[ext] = (seq, packet, now)
        if ext > self._highest:
            self._highest = ext
        out.extend(self._release())
        while len(self._held) > self.max_packets:
            out.extend(self._skip())
        out.extend(self.flush(now))
        return out

    def flush(self, now: float) -> list[tuple[int, object]]:
        """Release what waited ``max_delay`` or more, giving up on the gaps before it; ``flush(math.inf)``
        releases everything held."""
        out: list[tuple[int, object]] = []
        while self._held:
            oldest = min(arrival for _, _, arrival in self._held.values())
            if now - oldest < self.max_delay:
                break
            out.extend(self._skip())
        return out

    def deadline(self) -> float | None:
        """When the oldest held packet will have waited ``max_delay`` (for the owner's timer), or None."""
        if not self._held:
            return None
        return min(arrival for _, _, arrival in self._held.values()) + self.max_delay

    def _release(self) -> list[tuple[int, object]]:
        out = []
        held = self._held
        assert self._next is not None
        while self._next in held:
            seq, item, _ = held.pop(self._next)
            out.append((seq, item))
            self._next += 1
        return out

    def _skip(self) -> list[tuple[int, object]]:
        """Give up on the gap before the lowest held packet and release from there."""
        assert self._next is not None
        first = min(self._held)
        if first > self._next:
            self.lost += first - self._next
            self.gaps += 1
            self._next = first
        return self._release()

    def _drain(self) -> list[tuple[int, object]]:
        out = [(seq, item) for _, (seq, item, _) in sorted(self._held.items())]
        self._held.clear()
        return out

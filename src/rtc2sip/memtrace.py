"""Where the gateway's memory goes over a long run (issue 13 item 3): a diagnostic, off by default.

``RTC2SIP_TRACEMALLOC=N`` in the gateway's environment starts :mod:`tracemalloc` with N frames per
allocation. Then SIGUSR2 sets the mark (the soak sends it at the end of its warm-up) and every
SIGUSR1 logs one ``rtc2sip memory:`` line beside the state line: what Python has allocated now
(traced), the C heap as glibc sees it (``mallinfo2``: in use, and free but kept), the live objects
the collector tracks, the frozen ones, and the source lines whose allocations grew most since the
mark. RSS alone cannot tell a leak of Python objects from a leak in C (OpenSSL, libsrtp, codecs) or
from a heap that only fragments: these figures can.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import tracemalloc
from collections import Counter

__all__ = ["ENV", "MemoryTrace", "from_environment"]

ENV = "RTC2SIP_TRACEMALLOC"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _mallinfo2() -> _Mallinfo2 | None:
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    fn.restype = _Mallinfo2
    info: _Mallinfo2 = fn()
    return info


def _type_name(o: object) -> str:
    t = type(o)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class MemoryTrace:
    """tracemalloc with a mark, reported as one log line."""

    def __init__(self, frames: int = 1, top: int = 8) -> None:
        self.top = top
        # the tracer's own bookkeeping and the import machinery are not the gateway's memory
        self._filters = [tracemalloc.Filter(False, tracemalloc.__file__),
                         tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
                         tracemalloc.Filter(False, "<unknown>")]
        self._mark: tracemalloc.Snapshot | None = None
        if not tracemalloc.is_tracing():
            tracemalloc.start(max(1, frames))

    def mark(self) -> None:
        self._mark = tracemalloc.take_snapshot().filter_traces(self._filters)

    def report(self) -> str:
        traced, peak = tracemalloc.get_traced_memory()
        parts = [f"traced_kb={traced // 1024}", f"traced_peak_kb={peak // 1024}",
                 f"gc_objects={len(gc.get_objects())}", f"gc_frozen={gc.get_freeze_count()}"]
        info = _mallinfo2()
        if info is not None:
            # uordblks + hblkhd: what malloc has handed out; fordblks: free but still mapped
            parts += [f"heap_used_kb={(info.uordblks + info.hblkhd) // 1024}",
                      f"heap_free_kb={info.fordblks // 1024}"]
        parts += self._garbage()
        if self._mark is None:
            return " ".join([*parts, "(no mark yet: SIGUSR2)"])
        snap = tracemalloc.take_snapshot().filter_traces(self._filters)
        stats = snap.compare_to(self._mark, "lineno")
        parts.append(f"since_mark_kb={sum(s.size_diff for s in stats) / 1024:+.0f}")
        for s in [s for s in stats if s.size_diff > 0][: self.top]:
            frame = s.traceback[0]
            where = os.path.join(*frame.filename.split(os.sep)[-2:])
            parts.append(f"{where}:{frame.lineno}={s.size_diff / 1024:+.0f}kb/{s.count_diff:+d}")
        return " ".join(parts)


    def _garbage(self) -> list[str]:
        """What the frozen generations hold that only a full collection frees (reference cycles
        nobody broke), by type, and collected now: the gateway runs that collection every 15 min
        only (rtc2sip.gc_tuning), so cycles made per call pile up in between."""
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            census = Counter(_type_name(o) for o in gc.garbage)
            found = len(gc.garbage)
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
            gc.collect()
            gc.freeze()
        top = ",".join(f"{name}:{n}" for name, n in census.most_common(self.top))
        return [f"cyclic_garbage={found}", f"cyclic_types={top or '-'}"]


def from_environment() -> MemoryTrace | None:
    """A :class:`MemoryTrace` when ``RTC2SIP_TRACEMALLOC`` is set to a number of frames (>= 1)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        frames = int(raw)
    except ValueError:
        return None
    return MemoryTrace(frames) if frames > 0 else None

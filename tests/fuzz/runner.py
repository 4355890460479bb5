"""Run one target over the mutator's inputs: counts, crashes (deduplicated by where they were raised),
hangs (a per-input time limit) and the slowest input. Used by tests/unit/test_fuzz_targets.py for the
short runs and by scripts/fuzz.py for the long ones."""

from __future__ import annotations

import hashlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .mutate import Mutator
from .seeds import seeds
from .targets import TARGETS

__all__ = ["Crash", "Hang", "Result", "run_target"]


class Hang(BaseException):
    """Raised in the target by the per-input alarm: a BaseException, so that no ``except Exception``
    of the code under test swallows it."""


@dataclass
class Crash:
    kind: str  # the exception's type and the frame that raised it
    message: str
    data: bytes
    trace: str
    count: int = 1


@dataclass
class Result:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crashes: dict[str, Crash] = field(default_factory=dict)
    hangs: list[bytes] = field(default_factory=list)
    slowest: float = 0.0
    slowest_input: bytes = b""
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM before its count: the figures so far

    @property
    def crash_count(self) -> int:
        return sum(c.count for c in self.crashes.values())

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    last = tb[-1] if tb else None
    place = f"{Path(last.filename).name}:{last.lineno}" if last is not None else "?"
    return f"{type(exc).__name__} at {place}"


def run_target(name: str, inputs: int, *, seed: int = 0, time_limit: float = 1.0,
               crash_dir: Path | None = None, progress: bool = False) -> Result:
    """Feed ``inputs`` inputs (the seeds first, unchanged) to target ``name``. An input slower than
    ``time_limit`` seconds is a hang: interrupted by SIGALRM when it loops in Python, counted after
    the fact when it loops in C (where no signal handler runs)."""
    target = TARGETS[name].run
    result = Result(name)
    corpus = seeds(name)
    mutator = Mutator(corpus, seed=seed)
    use_alarm = hasattr(signal, "setitimer")
    previous = signal.signal(signal.SIGALRM, _alarm) if use_alarm else None
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    start = time.perf_counter()
    next_report = start + 10.0
    try:
        _loop(target, name, inputs, corpus, mutator, result, time_limit, use_alarm, crash_dir, progress, start,
              next_report)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous)
        result.seconds = time.perf_counter() - start
    return result


def _loop(target: Callable[[bytes], None], name: str, inputs: int, corpus: Sequence[bytes], mutator: Mutator,
          result: Result, time_limit: float, use_alarm: bool, crash_dir: Path | None, progress: bool,
          start: float, next_report: float) -> None:
    for i in range(inputs):
        data = corpus[i] if i < len(corpus) else mutator.next()
        t0 = time.perf_counter()
        try:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, time_limit)
            try:
                target(data)
            finally:
                if use_alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except Hang:
            result.hangs.append(data)
            _save(crash_dir, name, "hang", data)
        except Exception as exc:  # the bugs the run is looking for
            kind = _where(exc)
            crash = result.crashes.get(kind)
            if crash is None:
                result.crashes[kind] = Crash(kind, str(exc)[:200], data, traceback.format_exc())
                _save(crash_dir, name, "crash", data)
            else:
                crash.count += 1
        elapsed = time.perf_counter() - t0
        if elapsed > result.slowest:
            result.slowest, result.slowest_input = elapsed, data
        if elapsed > time_limit and (not result.hangs or result.hangs[-1] is not data):
            result.hangs.append(data)
            _save(crash_dir, name, "hang", data)
        result.inputs += 1
        if progress and t0 > next_report:
            next_report = t0 + 30.0
            done = time.perf_counter() - start
            print(f"  {name}: {result.inputs} inputs, {result.inputs / done:.0f}/s, "
                  f"{result.crash_count} crashes, {len(result.hangs)} hangs", file=sys.stderr, flush=True)


def _save(crash_dir: Path | None, name: str, what: str, data: bytes) -> None:
    if crash_dir is None:
        return
    crash_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:16]
    (crash_dir / f"{name}-{what}-{digest}.bin").write_bytes(data)

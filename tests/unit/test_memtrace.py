"""The soak's memory diagnostic (rtc2sip.memtrace): the report names what grew since the mark."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator

import pytest

from rtc2sip import memtrace


@pytest.fixture
def trace() -> Iterator[memtrace.MemoryTrace]:
    was_tracing = tracemalloc.is_tracing()
    yield memtrace.MemoryTrace(frames=1)
    if not was_tracing:
        tracemalloc.stop()


def test_report_before_the_mark_gives_totals(trace: memtrace.MemoryTrace) -> None:
    line = trace.report()
    assert "traced_kb=" in line and "gc_objects=" in line and "no mark yet" in line


def test_growth_since_the_mark_is_attributed_to_its_line(trace: memtrace.MemoryTrace) -> None:
    trace.mark()
    held = [bytes(1024) for _ in range(2000)]  # ~2 MB kept alive past the report
    line = trace.report()
    assert "test_memtrace.py:" in line
    grown = int(line.split("since_mark_kb=", 1)[1].split()[0])
    assert grown >= 1500
    assert len(held) == 2000


@pytest.mark.parametrize("raw", ["", "0", "x", "-3"])
def test_off_unless_the_environment_names_frames(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(memtrace.ENV, raw)
    assert memtrace.from_environment() is None

"""The delay line's sans-I/O core (tests/e2e/harness/impair.py): loss, delay bounds, ordering.

Seeded, so the figures are the same on every run; the bounds are still loose (a few sigma), so that a
change of the draw order does not turn into a flaky test.
"""

from __future__ import annotations

import itertools
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness.impair import AB, BA, DelayLine, Impairment, parse_packet


def ipv4(proto: int, sport: int, dport: int, payload: bytes = b"x" * 20) -> bytes:
    """A minimal IPv4 packet with a UDP/TCP-like header (checksums are not looked at)."""
    l4 = struct.pack("!HH", sport, dport) + b"\0" * (4 if proto == 17 else 16) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                         bytes([10, 77, 0, 2]), bytes([10, 77, 0, 1]))
    return header + l4


UDP = ipv4(17, 40000, 30000)
TCP = ipv4(6, 40001, 5060)


def test_parse_packet() -> None:
    info = parse_packet(UDP)
    assert info is not None and (info.version, info.proto, info.sport, info.dport) == (4, 17, 40000, 30000)
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 17, 64]) + b"\1" * 16 + b"\2" * 16 + struct.pack("!HHHH", 1, 2, 8, 0)
    info6 = parse_packet(v6)
    assert info6 is not None and (info6.version, info6.proto, info6.sport, info6.dport) == (6, 17, 1, 2)
    assert parse_packet(b"") is None and parse_packet(b"\x45\0") is None


def test_loss_rate_within_bounds() -> None:
    line = DelayLine(Impairment(loss_percent=5.0), seed=1)
    n = 4000
    delivered = [line.offer(UDP, AB, float(i)) for i in range(n)]
    lost = sum(d is None for d in delivered)
    assert 0.02 * n <= lost <= 0.08 * n
    c = line.counters[AB]
    assert c.dropped == lost and c.packets == c.udp == c.lossy == n
    assert 2.0 <= line.summary()[AB]["loss_percent_applied"] <= 8.0


def test_loss_spares_tcp_and_lossless_ports() -> None:
    line = DelayLine(Impairment(loss_percent=50.0, lossless_ports=frozenset({5060})), seed=2)
    sip_udp = ipv4(17, 40002, 5060)
    assert all(line.offer(TCP, AB, 0.0) is not None for _ in range(500))
    assert all(line.offer(sip_udp, BA, 0.0) is not None for _ in range(500))
    assert line.counters[AB].dropped == line.counters[BA].dropped == 0
    lossy_all = DelayLine(Impairment(loss_percent=50.0, loss_udp_only=False), seed=2)
    assert sum(lossy_all.offer(TCP, AB, 0.0) is None for _ in range(1000)) > 300


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_delay_distribution_bounds(distribution: str) -> None:
    imp = Impairment(delay_ms=20.0, jitter_ms=20.0, distribution=distribution)  # type: ignore[arg-type]
    line = DelayLine(imp, seed=3)
    now = 100.0
    delays = []
    for _ in range(4000):
        due = line.offer(UDP, BA, now)
        assert due is not None
        delays.append((due - now) * 1000.0)
    assert min(delays) >= 0.0  # never negative, however far the draw went below
    assert 15.0 <= sum(delays) / len(delays) <= 26.0  # mean near the base (clipping at 0 raises it a little)
    if distribution == "uniform":
        assert max(delays) <= 40.0 + 1e-9
    spread = max(delays) - min(delays)
    assert spread > 30.0  # the jitter is really there
    stats = line.counters[BA].scheduled
    assert stats.count == 4000 and stats.quantile(0.99) >= stats.quantile(0.5) >= 0.0
    assert 5.0 <= stats.stdev <= 25.0  # uniform +-20: 11.5 ms; normal sigma 20, clipped at 0: a little less


def test_no_jitter_is_a_fixed_delay() -> None:
    line = DelayLine(Impairment(delay_ms=7.5), seed=4)
    assert all(abs((line.offer(UDP, AB, 1.0) or 0.0) - 1.0075) < 1e-9 for _ in range(100))


def test_reordering_and_keep_order() -> None:
    def dues(keep: bool) -> list[float]:
        line = DelayLine(Impairment(delay_ms=20.0, jitter_ms=20.0, keep_order=keep), seed=5)
        out = []
        for i in range(1000):  # one packet every 5 ms, as a fast media flow
            due = line.offer(UDP, AB, i * 0.005)
            assert due is not None
            out.append(due)
        return out

    free = dues(False)
    assert any(b < a for a, b in itertools.pairwise(free))  # jitter reorders, as netem does
    ordered = dues(True)
    assert ordered == sorted(ordered)
    assert all(d >= i * 0.005 for i, d in enumerate(ordered))


def test_seeded_runs_repeat() -> None:
    def run() -> list[float | None]:
        line = DelayLine(Impairment(loss_percent=10.0, delay_ms=10.0, jitter_ms=5.0), seed=9)
        return [line.offer(UDP, AB, 0.0) for _ in range(200)]

    assert run() == run()


def test_delivered_counters() -> None:
    line = DelayLine(Impairment(delay_ms=10.0), seed=6)
    line.delivered(AB, 0.0102)
    line.delivered(AB, 0.0, ok=False)
    s = line.summary()[AB]
    assert s["forwarded"] == 1 and s["write_errors"] == 1
    assert 10.0 <= s["added_delay"]["mean_ms"] <= 10.5 and s["added_delay"]["p99_ms"] >= 10.2


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Impairment(loss_percent=101.0)
    with pytest.raises(ValueError):
        Impairment(jitter_ms=-1.0)

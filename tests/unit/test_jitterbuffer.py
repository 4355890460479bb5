"""The video jitter buffer: reorder, gaps given up after max_delay, bounds, wrap and restarts."""

from __future__ import annotations

import math

import pytest

from rtc2sip.coder.jitterbuffer import VideoJitterBuffer


def seqs(released: list[tuple[int, object]]) -> list[int]:
    return [s for s, _ in released]


def test_in_order_packets_pass_straight_through() -> None:
    jb = VideoJitterBuffer()
    for i in range(5):
        assert jb.push(f"p{i}", 100 + i, 0.0) == [(100 + i, f"p{i}")]
    assert len(jb) == 0 and jb.lost == 0 and jb.deadline() is None


def test_reordered_packets_come_out_in_order() -> None:
    jb = VideoJitterBuffer(max_delay=0.1)
    assert seqs(jb.push(b"a", 1, 0.0)) == [1]
    assert jb.push(b"c", 3, 0.01) == []
    assert jb.push(b"d", 4, 0.02) == []
    assert jb.deadline() == pytest.approx(0.11)
    assert seqs(jb.push(b"b", 2, 0.03)) == [2, 3, 4]
    assert jb.lost == 0 and jb.late == 0


def test_gap_is_given_up_after_max_delay() -> None:
    jb = VideoJitterBuffer(max_delay=0.1)
    jb.push(b"a", 10, 0.0)
    assert jb.push(b"d", 13, 0.0) == []
    assert jb.flush(0.05) == []
    assert seqs(jb.flush(0.1)) == [13]
    assert jb.lost == 2 and jb.gaps == 1
    assert jb.push(b"b", 11, 0.2) == []  # its place was passed
    assert jb.late == 1
    # a push after the delay releases too, without a separate flush
    jb.push(b"g", 16, 0.3)
    assert seqs(jb.push(b"h", 17, 0.45)) == [16, 17]
    assert jb.lost == 4


def test_packet_bound_forces_release() -> None:
    jb = VideoJitterBuffer(max_delay=10.0, max_packets=4)
    jb.push(0, 0, 0.0)
    out = []
    for s in range(2, 8):  # 1 never comes
        out += jb.push(s, s, 0.0)
    assert seqs(out) == [2, 3, 4, 5, 6, 7][: len(out)] and len(jb) <= 4
    assert jb.lost == 1
    assert seqs(jb.flush(math.inf)) == [s for s in range(2, 8) if s not in seqs(out)]


def test_sequence_wrap() -> None:
    jb = VideoJitterBuffer()
    out = jb.push(0, 65534, 0.0) + jb.push(0, 0, 0.0) + jb.push(0, 65535, 0.0) + jb.push(0, 1, 0.0)
    assert seqs(out) == [65534, 65535, 0, 1]


def test_duplicates_and_restart() -> None:
    jb = VideoJitterBuffer()
    jb.push(0, 500, 0.0)
    jb.push(0, 502, 0.0)
    assert jb.push(0, 502, 0.0) == [] and jb.late == 1
    # a jump far ahead: the source restarted; the held packet comes out before the new numbering
    assert seqs(jb.push(0, 20000, 0.0)) == [502, 20000]
    assert jb.resets == 1
    assert seqs(jb.push(0, 20001, 0.0)) == [20001]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        VideoJitterBuffer(max_packets=0)


def test_in_order_across_the_wrap_then_reordered() -> None:
    jb = VideoJitterBuffer()
    out = []
    for s in (65533, 65534, 65535, 0, 1):
        out += jb.push(s, s, 0.0)
    assert seqs(out) == [65533, 65534, 65535, 0, 1]
    assert jb.push(3, 3, 0.0) == [] and seqs(jb.push(2, 2, 0.0)) == [2, 3]
    assert jb.push(1, 1, 0.0) == [] and jb.late == 1

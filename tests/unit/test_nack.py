"""NACK retransmission history: bounded depth, webrtc2sip's avpf-tail-length growth rule."""

from __future__ import annotations

import pytest

from rtc2sip.media.nack import RetransmissionHistory


def test_lookup_returns_held_packets_in_request_order() -> None:
    history = RetransmissionHistory(min_tail=10, max_tail=40)
    for seq in range(65530, 65536 + 5):  # across the wrap
        history.store(seq, f"p{seq & 0xFFFF}".encode())
    assert history.lookup([2, 65531, 4]) == [b"p2", b"p65531", b"p4"]
    assert history.depth == 10 and history.hits == 3


def test_depth_starts_at_min_and_doubles_up_to_max_on_a_dropped_request() -> None:
    history = RetransmissionHistory(min_tail=100, max_tail=400)
    for seq in range(300):
        history.store(seq, bytes([seq & 0xFF]))
    assert len(history) == 100 and history.depth == 100
    assert history.lookup([150]) == []  # dropped: 200..299 are held
    assert history.depth == 200
    assert history.lookup([150, 151]) == []  # still dropped (the growth keeps later packets only)
    assert history.depth == 400
    for seq in range(300, 800):
        history.store(seq & 0xFFFF, b"x")
    assert len(history) == 400
    history.lookup([100])
    assert history.depth == 400 and history.misses == 4


def test_growth_keeps_more_packets() -> None:
    history = RetransmissionHistory(min_tail=4, max_tail=16)
    for seq in range(10):
        history.store(seq, bytes([seq]))
    assert history.lookup([3]) == [] and history.depth == 8
    for seq in range(10, 20):
        history.store(seq, bytes([seq]))
    assert history.lookup([12]) == [bytes([12])]


def test_unknown_requests_do_not_grow_the_depth() -> None:
    history = RetransmissionHistory(min_tail=4, max_tail=16)
    assert history.lookup([1]) == []  # nothing sent yet
    history.store(1000, b"a")
    assert history.lookup([1001, 30000]) == []  # not sent yet / nowhere near
    assert history.depth == 4 and history.unknown == 3


def test_store_again_replaces() -> None:
    history = RetransmissionHistory(min_tail=2, max_tail=2)
    history.store(1, b"a")
    history.store(1, b"b")
    history.store(2, b"c")
    assert history.lookup([1, 2]) == [b"b", b"c"] and len(history) == 2


def test_bad_tail() -> None:
    with pytest.raises(ValueError):
        RetransmissionHistory(min_tail=10, max_tail=5)

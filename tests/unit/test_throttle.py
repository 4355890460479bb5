"""rtc2sip.proxy.throttle under a virtual clock, and the log redaction of password equivalents."""

from __future__ import annotations

import logging

from rtc2sip.logs import JsonFormatter, LineFormatter, redact
from rtc2sip.proxy.throttle import Throttle


def test_a_source_over_its_rate_is_dropped_then_blocked_and_released() -> None:
    th = Throttle(rate=10, burst=5, block_time=30)
    assert all(th.admit("192.0.2.1", 0.0) for _ in range(5))
    assert not th.admit("192.0.2.1", 0.0)  # the burst is spent
    assert th.admit("192.0.2.2", 0.0)  # another source is not touched
    assert th.admit("192.0.2.1", 0.2)  # refilled at 10/s
    for _ in range(5):
        th.admit("192.0.2.1", 0.2)
    assert th.is_blocked("192.0.2.1", 0.2) and th.blocks == 1 and th.blocked_now(0.2) == 1
    assert not th.admit("192.0.2.1", 29.0)  # everything dropped while blocked, even at a slow pace
    assert th.admit("192.0.2.1", 31.0)
    assert th.throttled >= 6


def test_failed_authentications_block_within_the_window_only() -> None:
    th = Throttle(rate=0, max_auth_failures=3, failure_window=10, block_time=60)
    th.auth_failed("198.51.100.7", 0.0)
    th.auth_failed("198.51.100.7", 5.0)
    th.auth_failed("198.51.100.7", 12.0)  # the first one is out of the window
    assert th.admit("198.51.100.7", 12.0)
    th.auth_failed("198.51.100.7", 13.0)
    assert not th.admit("198.51.100.7", 13.5)
    assert th.admit("198.51.100.7", 74.0)


def test_loopback_is_exempt_and_the_table_is_bounded() -> None:
    th = Throttle(rate=1, burst=1, max_auth_failures=1, max_sources=100)
    assert all(th.admit("127.0.0.1", 0.0) for _ in range(50))
    assert all(th.admit("::1", 0.0) for _ in range(50))
    th.auth_failed("127.0.0.1", 0.0)
    assert th.admit("127.0.0.1", 0.0)
    for i in range(1000):
        th.admit(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(th._sources) <= 100


def test_password_equivalents_never_reach_a_log_line() -> None:
    ha1 = "5f4dcc3b5aa765d61d8327deb882cf99"
    text = f'INVITE sip:bob@pbx;ha1={ha1};impi=alice ; Contact: <sip:a@b;ha1="{ha1}">; response="{ha1}"'
    assert ha1 not in redact(text)
    assert "impi=alice" in redact(text)
    record = logging.LogRecord("rtc2sip", logging.INFO, __file__, 1, "got %s", (text,), None)
    for fmt in (JsonFormatter(), LineFormatter("%(message)s")):
        assert ha1 not in fmt.format(record)

"""The media plane wired to the compiled fast path (media/fastlink.py, issue 10): a call is relayed
by the engine after DTLS when ``[media] fast_path = "auto"`` and by Python when ``"off"``; what the
engine refuses stays in Python; the counters Python reads come from the engine while it relays and
stay right when the call goes back to Python; a tap gets copies; closing leaves nothing behind."""

from __future__ import annotations

import gc
import itertools
from typing import Any

import pytest

from media_peers import GW_CERT, FakeBrowser, Phone, browser_calls_phone, legacy_address, open_fds, until
from rtc2sip.config import MediaOptions, Settings
from rtc2sip.config.options import read_options_text
from rtc2sip.media import fastpath
from rtc2sip.media.fastlink import ENV, fast_path_setting
from rtc2sip.media.plane import MediaPlane

needs_engine = pytest.mark.skipif(not fastpath.available, reason=f"fast path not built: {fastpath.unavailable_reason}")


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)  # these tests choose the mode themselves


def make_plane(fast_path: str, webrtc_socket: str = "shared") -> MediaPlane:
    return MediaPlane(Settings(media=MediaOptions(webrtc_socket=webrtc_socket, fast_path=fast_path)), GW_CERT,
                      port_range=(47000, 47999))


async def exchange(browser: FakeBrowser, phone: Phone, legacy_offer: Any, n: int = 10, first: int = 0) -> None:
    gw_legacy = legacy_address(legacy_offer)
    for seq in range(first, first + n):
        browser.send_rtp(0, 100 + seq, bytes([seq]) * 160)
    await until(lambda: len(phone.received) >= first + n, what="browser audio at the phone")
    for seq in range(first, first + n):
        phone.send_rtp(gw_legacy, 0, 500 + seq, bytes([0x80 + seq]) * 160)
    await until(lambda: len(browser.received) >= first + n, what="phone audio at the browser")


def test_setting_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_options_text("").media.fast_path == "auto"
    assert read_options_text('[media]\nfast_path = "off"\n').media.fast_path == "off"
    with pytest.raises(Exception, match="fast_path"):
        read_options_text('[media]\nfast_path = "always"\n')
    assert fast_path_setting("auto") == "auto"
    monkeypatch.setenv(ENV, "off")
    assert fast_path_setting("auto") == "off"
    monkeypatch.setenv(ENV, "auto")
    assert fast_path_setting("off") == "auto"
    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ValueError):
        fast_path_setting("auto")


@needs_engine
@pytest.mark.parametrize("webrtc_socket", ["shared", "per-call"])
async def test_auto_relays_through_the_engine(webrtc_socket: str) -> None:
    plane = make_plane("auto", webrtc_socket)
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        await exchange(browser, phone, legacy_offer)
        assert plane.fast is not None
        engine: Any = plane.fast.stats()
        assert engine["fastpath_taken"] == 1 and engine["fastpath_sessions"] == 1
        # the engine itself read and sent the RTP (20 packets each way counted, more with STUN)
        assert engine["fastpath_datagrams_in"] >= 20 and engine["fastpath_datagrams_out"] >= 20
        st: Any = plane.stats(session)
        assert st["webrtc"]["fast_path"] is True
        # Python's counters are the engine's (synced on read)
        assert st["webrtc"]["packets_in"] == 10 and st["webrtc"]["packets_out"] == 10
        assert st["legacy"]["packets_in"] == 10 and st["legacy"]["packets_out"] == 10
        assert st["streams"]["audio"]["legacy"]["latched"] is True
        assert "fastpath_datagrams_in" in plane.webrtc_socket_stats()
        # numbering stays one across the hand-over: what Python sent before and the engine after
        seqs = [p.sequence_number for p in phone.received]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        # a failure hands the call back to Python with its counters
        call: Any = plane._sessions[session]
        call.media.fail("test")
        assert call.media.fast is None and plane.fast.stats()["fastpath_sessions"] == 0
        st = plane.stats(session)
        assert st["webrtc"]["fast_path"] is False
        assert st["webrtc"]["packets_in"] == 10 and st["legacy"]["packets_out"] == 10
        await plane.delete(session)
        assert plane.fast.stats()["fastpath_streams"] == 0
    finally:
        browser.close()
        phone.close()
        await plane.close()


async def test_off_relays_in_python() -> None:
    plane = make_plane("off")
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        await exchange(browser, phone, legacy_offer)
        st: Any = plane.stats(session)
        assert plane.fast is None and st["webrtc"]["fast_path"] is False
        assert "fastpath_datagrams_in" not in plane.webrtc_socket_stats()
        assert st["webrtc"]["packets_in"] == 10 and st["legacy"]["packets_in"] == 10
    finally:
        browser.close()
        phone.close()
        await plane.close()


@needs_engine
async def test_a_refusal_leaves_the_call_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> int:
        raise OverflowError("fast path: no free stream slot")

    monkeypatch.setattr(fastpath.FastPath, "add_stream", full)
    plane = make_plane("auto")
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        await exchange(browser, phone, legacy_offer)
        assert plane.fast is not None
        engine: Any = plane.fast.stats()
        assert engine["fastpath_refused"] == 1 and engine["fastpath_sessions"] == 0
        st: Any = plane.stats(session)
        assert st["webrtc"]["fast_path"] is False and st["legacy"]["packets_out"] == 10
    finally:
        browser.close()
        phone.close()
        await plane.close()


class Sink:
    def __init__(self) -> None:
        self.packets: list[tuple[str, str, bytes]] = []

    def packet(self, kind: str, leg: str, data: bytes, now: float) -> None:
        self.packets.append((kind, leg, data))

    def codecs_changed(self, codecs: object) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, object]:
        return {}


@needs_engine
async def test_a_tap_gets_copies_from_the_engine() -> None:
    plane = make_plane("auto")
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        await exchange(browser, phone, legacy_offer, n=3)
        sink = Sink()
        plane.attach(session, sink)
        await exchange(browser, phone, legacy_offer, n=4, first=3)
        await until(lambda: len(sink.packets) >= 8, what="copies at the tap")
        assert sorted({(k, leg) for k, leg, _ in sink.packets}) == [("audio", "legacy"), ("audio", "webrtc")]
        st: Any = plane.stats(session)
        assert st["webrtc"]["fast_path"] is True
        plane.detach(session, sink)
        await exchange(browser, phone, legacy_offer, n=2, first=7)
        assert len(sink.packets) == 8
    finally:
        browser.close()
        phone.close()
        await plane.close()


async def calls(fast_path: str, n: int) -> None:
    plane = make_plane(fast_path, "per-call")
    try:
        for _ in range(n):
            browser, phone = await FakeBrowser().start(), await Phone().start()
            try:
                session, legacy_offer = await browser_calls_phone(plane, browser, phone)
                await exchange(browser, phone, legacy_offer, n=2)
                await plane.delete(session)
            finally:
                browser.close()
                phone.close()
    finally:
        await plane.close()


@needs_engine
async def test_closing_leaves_no_descriptor() -> None:
    await calls("auto", 1)  # what a first call opens once for the process (not the plane's)
    gc.collect()
    fds = open_fds()
    await calls("auto", 3)
    gc.collect()
    assert open_fds() == fds


@needs_engine
async def test_python_carries_on_past_a_sequence_wrap_the_engine_relayed() -> None:
    """RFC 3711 §3.3.1: the rollover counter lives in the SRTP contexts that saw the packets. The
    engine relays across a 16-bit wrap (in steps under 2^15, so both ends follow the index), then
    hands the call back to Python for good (as a coder does): Python must go on with the engine's
    contexts, whose counters are 1, or every packet both ways fails authentication."""
    plane = make_plane("auto")
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        gw_legacy = legacy_address(legacy_offer)
        steps = [100, 20000, 40000, 60000, 65535, 10, 20000]
        for i, seq in enumerate(steps):
            browser.send_rtp(0, seq, bytes([i]) * 160)
            await until(lambda i=i: len(phone.received) > i, what="browser audio at the phone")
            phone.send_rtp(gw_legacy, 0, seq, bytes([0x80 + i]) * 160)
            await until(lambda i=i: len(browser.received) > i, what="phone audio at the browser")
        assert plane.fast is not None
        call: Any = plane._sessions[session]
        assert call.media.fast is not None
        plane.fast.release(call.media)  # Python relays from now on
        assert call.media.fast is None and call.media.srtp_rx is call.media.fast_keys[0]
        assert call.media.srtcp_rx is not call.media.srtp_rx  # SRTCP stays on Python's own contexts
        browser.send_rtp(0, 30000, b"\x55" * 160)
        await until(lambda: len(phone.received) > len(steps), what="browser audio at the phone after the hand-back")
        phone.send_rtp(gw_legacy, 0, 30000, b"\x66" * 160)
        await until(lambda: len(browser.received) > len(steps), what="phone audio at the browser after the hand-back")
        assert browser.received[-1].payload == b"\x66" * 160
        st: Any = plane.stats(session)
        assert st["webrtc"]["fast_path"] is False and st["webrtc"]["srtp_errors"] == 0
    finally:
        browser.close()
        phone.close()
        await plane.close()

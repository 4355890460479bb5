"""The media plane in worker processes ([media] workers, rtc2sip.media.remote): bridged calls through real
worker processes with a fake browser and a plain RTP phone on loopback, the plane's exceptions carried
back with their types, a killed worker failing only its own call and coming back, and nothing left
behind (sessions, ports, processes)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from media_peers import GW_CERT, FakeBrowser, Phone, browser_calls_phone, legacy_address, until
from rtc2sip.config import Settings
from rtc2sip.media.dtmf_sink import DtmfSink
from rtc2sip.media.plane import InvalidState, MediaPlaneError, UnknownSession
from rtc2sip.media.remote import RemotePlane
from rtc2sip.media.workerproc import split_port_range
from rtc2sip.sdp import SdpError, SessionDescription

RANGE = (46000, 46999)


def alive(pid: int) -> bool:
    """A zombie counts as gone (its parent reaps it soon after)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
async def plane() -> Any:
    p = RemotePlane(Settings(), GW_CERT, workers=2, port_range=RANGE)
    await p.start()
    yield p
    pids = p.worker_pids
    await p.close()
    await until(lambda: not any(alive(pid) for pid in pids), what="worker processes gone")


async def media_both_ways(browser: FakeBrowser, phone: Phone, legacy: tuple[str, int], first: int) -> None:
    b0, p0 = len(browser.received), len(phone.received)
    for seq in range(5):
        browser.send_rtp(0, first + seq, bytes([seq]) * 160)
        phone.send_rtp(legacy, 0, first + seq, bytes([0x80 + seq]) * 160)
    await until(lambda: len(phone.received) >= p0 + 5, what="browser audio at the phone")
    await until(lambda: len(browser.received) >= b0 + 5, what="phone audio at the browser")


def test_port_range_split_is_disjoint_and_even() -> None:
    mine, slices = split_port_range(20000, 29999, 3)
    assert mine == (20000, 20999)
    ranges = [mine, *slices]
    assert all(lo % 2 == 0 and lo < hi for lo, hi in ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
    assert slices[-1][1] <= 29999
    with pytest.raises(ValueError):
        split_port_range(20000, 20010, 4)


async def test_bridged_call_through_a_worker(plane: RemotePlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        assert session in plane.sessions and plane.call_id(session) == "call-1"
        legacy = legacy_address(legacy_offer)
        lo, hi = RANGE
        assert lo + 1000 // 3 <= legacy[1] <= hi  # a worker's slice, not the gateway's own
        await media_both_ways(browser, phone, legacy, 100)
        assert [p.payload for p in phone.received[:5]] == [bytes([i]) * 160 for i in range(5)]
        # stats: the first read asks the worker, later reads see its snapshot
        plane.stats(session)
        await until(lambda: "webrtc" in plane.stats(session), what="a stats snapshot")
        await until(lambda: plane.stats(session)["webrtc"]["packets_in"] >= 5, what="fresh stats")  # type: ignore[index]
        for seq in range(3):
            browser.send_rtp(0, 105 + seq, bytes([seq]) * 160)
        await until(lambda: len(phone.received) >= 8, what="more browser audio")
        await plane.fresh_stats(max_age=0)  # what the web API awaits: current figures
        st: Any = plane.stats(session)
        assert st["webrtc"]["dtls"]["state"] == "connected" and st["call_id"] == "call-1"
        assert st["webrtc"]["packets_in"] == 8

        # the plane's exceptions keep their types across the channel (the B2BUA answers 488 on SdpError)
        with pytest.raises(InvalidState):
            await plane.answer_from_legacy(session, phone.sdp())
        with pytest.raises(UnknownSession):
            await plane.answer_from_legacy("nope", phone.sdp())
        no_audio = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
                                            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")
        with pytest.raises(SdpError):
            await plane.offer_from_webrtc("call-2", no_audio)
        assert await plane.send_dtmf(session, "5", 80) is True
        await until(lambda: any(p.payload_type == 101 for p in phone.received), what="RFC 4733 at the phone")
        with pytest.raises(MediaPlaneError):
            plane.start_recording(session)

        await plane.delete(session)
        await plane.delete(session)  # unknown ids are ignored, as in-process
        assert plane.sessions == []
        states = await plane.worker_states()
        assert [s["sessions"] for s in states] == [0, 0] and [s["ports"] for s in states] == [0, 0]
    finally:
        browser.close()
        phone.close()


async def test_dtmf_sink_runs_in_the_worker(plane: RemotePlane) -> None:
    browser, phone = await FakeBrowser().start(), await Phone().start()
    digits: list[tuple[str, int]] = []
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        sink = DtmfSink(lambda d, ms: digits.append((d, ms)))
        plane.attach(session, sink)
        legacy = legacy_address(legacy_offer)
        # the worker's sink must be in place before the event: wait until its stats show it
        plane.stats(session)
        await until(lambda: bool(plane.stats(session).get("taps")), what="the sink in the worker")
        phone.send_rtp(legacy, 101, 300, bytes([7, 0x80 | 10, 0x03, 0x20]))  # event 7, end, 800 samples
        await until(lambda: digits == [("7", 100)], what="the digit back from the worker")
        assert plane.detach(session, sink) is True and plane.detach(session, sink) is False
        await plane.delete(session)
        states = await plane.worker_states()
        assert sum(s["sinks"] for s in states) == 0
    finally:
        browser.close()
        phone.close()


async def test_a_killed_worker_fails_only_its_calls_and_comes_back(plane: RemotePlane) -> None:
    failures: list[tuple[str, str]] = []
    plane.on_failure(lambda s, reason: failures.append((s, reason)))
    peers = [(await FakeBrowser().start(), await Phone().start()) for _ in range(2)]
    try:
        calls = [await browser_calls_phone(plane, b, p) for b, p in peers]
        (s1, offer1), (s2, offer2) = calls
        states = await plane.worker_states()
        assert sorted(s["sessions"] for s in states) == [1, 1]  # least loaded: one call each
        victim = next(st["pid"] for st in states if st["sessions"])  # either: each holds one
        victim_session = s1 if plane._sessions[s1].worker.pid == victim else s2
        survivor = s2 if victim_session == s1 else s1
        os.kill(victim, signal.SIGKILL)
        await until(lambda: failures, what="on_failure for the dead worker's call")
        assert failures == [(victim_session, failures[0][1])] and "worker died" in failures[0][1]
        assert plane.sessions == [survivor]
        # the other worker's call goes on
        b, p = peers[[s1, s2].index(survivor)]
        await media_both_ways(b, p, legacy_address((offer1, offer2)[[s1, s2].index(survivor)]), 200)
        # the dead one is started again and takes calls
        await until(lambda: len(plane.worker_pids) == 2 and victim not in plane.worker_pids, timeout=15,
                    what="the worker restarted")
        await until(lambda: all(w.running for w in plane._workers), timeout=15, what="the new worker ready")
        b3, p3 = await FakeBrowser().start(), await Phone().start()
        peers.append((b3, p3))
        s3, offer3 = await browser_calls_phone(plane, b3, p3)
        await media_both_ways(b3, p3, legacy_address(offer3), 300)
        assert len(failures) == 1
        for s in (survivor, s3):
            await plane.delete(s)
        assert not alive(victim)
        states = await plane.worker_states()
        assert [s["sessions"] for s in states] == [0, 0] and [s["ports"] for s in states] == [0, 0]
    finally:
        for b, p in peers:
            b.close()
            p.close()


async def test_a_worker_that_stops_answering_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker alive but stuck (SIGSTOP here) is found by the heartbeat, killed, its call failed, and
    started again; the other worker's call goes on."""
    from rtc2sip.media import remote

    monkeypatch.setattr(remote, "HEARTBEAT_INTERVAL", 0.2)
    monkeypatch.setattr(remote, "HEARTBEAT_TIMEOUT", 0.5)
    plane = RemotePlane(Settings(), GW_CERT, workers=2, port_range=RANGE)
    await plane.start()
    failures: list[tuple[str, str]] = []
    plane.on_failure(lambda s, reason: failures.append((s, reason)))
    peers = [(await FakeBrowser().start(), await Phone().start()) for _ in range(2)]
    stuck: int | None = None
    try:
        (s1, _), (s2, offer2) = [await browser_calls_phone(plane, b, p) for b, p in peers]
        stuck = plane._sessions[s1].worker.pid
        assert stuck is not None and stuck != plane._sessions[s2].worker.pid
        os.kill(stuck, signal.SIGSTOP)
        await until(lambda: failures, timeout=10, what="the stuck worker's call failed")
        assert [f[0] for f in failures] == [s1] and "worker died" in failures[0][1]
        assert not alive(stuck)
        await until(lambda: len(plane.worker_pids) == 2 and stuck not in plane.worker_pids
                    and all(w.running for w in plane._workers), timeout=15, what="the worker replaced")
        b, p = peers[1]
        await media_both_ways(b, p, legacy_address(offer2), 100)
        await plane.delete(s2)
        assert len(failures) == 1
    finally:
        for b, p in peers:
            b.close()
            p.close()
        pids = plane.worker_pids
        await plane.close()
        if stuck is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGKILL)
    await until(lambda: not any(alive(pid) for pid in pids), what="worker processes gone")


async def test_close_with_calls_up_stops_every_worker() -> None:
    p = RemotePlane(Settings(), GW_CERT, workers=1, port_range=RANGE)
    await p.start()
    browser, phone = await FakeBrowser().start(), await Phone().start()
    try:
        await browser_calls_phone(p, browser, phone)
        pids = p.worker_pids
        await p.close()
        assert p.sessions == [] and p.worker_pids == []
        await until(lambda: not any(alive(pid) for pid in pids), what="the worker gone")
    finally:
        browser.close()
        phone.close()


async def test_workers_die_with_a_killed_gateway(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a gateway killed with SIGKILL (no chance to close anything) takes its workers."""
    script = tmp_path / "gw.py"
    script.write_text(
        "import asyncio, sys\n"
        "from rtc2sip.config import Settings\n"
        "from rtc2sip.media.certificate import Certificate\n"
        "from rtc2sip.media.remote import RemotePlane\n"
        "async def main():\n"
        "    p = RemotePlane(Settings(), Certificate.generate('gw'), workers=1, port_range=(47000, 47999))\n"
        "    await p.start()\n"
        "    print(p.worker_pids[0], flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        worker = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert alive(worker)
    finally:
        proc.kill()
        await proc.wait()
    await until(lambda: not alive(worker), what="the worker gone with its gateway")


async def test_gateway_with_media_workers_starts_reports_and_stops(tmp_path: Path) -> None:
    """rtc2sip.app with ``[media] workers = 2``: a RemotePlane behind the B2BUA, the test services on
    the gateway's own port slice, the SIGUSR1 state counting the workers' holdings, no worker after stop."""
    from rtc2sip.app import Gateway
    from rtc2sip.config import GatewayOptions, Listener, MediaOptions

    settings = Settings(listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
                        gateway=GatewayOptions(data_dir=tmp_path), media=MediaOptions(workers=2))
    gw = Gateway(settings)
    await gw.start()
    try:
        assert isinstance(gw.media, RemotePlane) and gw.proxy is not None and gw.proxy.breaker is not None
        assert gw.recorder is None and gw.services is not None
        pids = gw.media.worker_pids
        assert len(pids) == 2 and all(alive(p) for p in pids)
        assert gw.media.ports.high < min(w.port_range[0] for w in gw.media._workers)
        state = await gw.state_summary_async()
        assert state["media_sessions"] == 0 and state["worker_sessions"] == 0 and state["worker_ports"] == 0
        # /metrics sums the workers' shared WebRTC sockets' counters (fetched with the fresh stats)
        await gw.media.fresh_stats()
        assert gw.media.webrtc_socket_stats()["received"] == 0 and "garbage" in gw.media.webrtc_socket_stats()
    finally:
        await gw.stop()
    await until(lambda: not any(alive(p) for p in pids), what="the workers gone with the gateway")


@pytest.mark.parametrize("workers", [0, 2])
async def test_media_ports_come_from_the_configured_range(tmp_path: Path, workers: int) -> None:
    """``[media] rtp_ports``: the in-process plane, or the gateway's slice and every worker's, and the
    shared WebRTC socket, inside the range the operator gave."""
    from rtc2sip.app import Gateway
    from rtc2sip.config import GatewayOptions, Listener, MediaOptions
    from rtc2sip.media.plane import MediaPlane

    low, high = 47200, 47599
    settings = Settings(listeners=(Listener("udp", "127.0.0.1", 0), Listener("ws", "127.0.0.1", 0)),
                        gateway=GatewayOptions(data_dir=tmp_path),
                        media=MediaOptions(workers=workers, rtp_ports=(low, high)))
    gw = Gateway(settings)
    await gw.start()
    try:
        media = gw.media
        if isinstance(media, MediaPlane):
            assert (media.ports.low, media.ports.high) == (low, high)
            assert media.mux is not None and low <= media.mux.port <= high
        else:
            assert isinstance(media, RemotePlane)
            slices = [(media.ports.low, media.ports.high), *(w.port_range for w in media._workers)]
            assert len(slices) == 3 and all(low <= lo < hi <= high for lo, hi in slices)
    finally:
        await gw.stop()


async def test_recording_and_forwarding_run_in_the_worker(tmp_path: Path) -> None:
    """[recording] by rule and forwarding on demand with the plane in a worker: the rule is applied here
    (the parties come from call_info), the files are written by the worker, the sidecar has the parties
    and the end cause sent before the delete; the forwarded RTP reaches a player socket."""
    import json
    import socket
    import wave

    from rtc2sip.config import RecordingOptions
    from rtc2sip.media.callinfo import CallInfo

    settings = Settings(recording=RecordingOptions(enabled=True, rule=("sip:b@*",)))
    plane = RemotePlane(settings, GW_CERT, workers=1, port_range=RANGE, recording_dir=tmp_path)
    plane.call_info = lambda cid: CallInfo(cid, "sip:a@x", "sip:b@y", "sip-1", "sip-2", "webrtc")
    await plane.start()
    browser, phone = await FakeBrowser().start(), await Phone().start()
    player = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    player.bind(("127.0.0.1", 0))
    player.settimeout(5)
    try:
        session, legacy_offer = await browser_calls_phone(plane, browser, phone)
        await until(lambda: plane._sessions[session].recording is not None, what="the rule's recording")
        sidecar = Path((plane.stop_recording and plane._sessions[session].recording) or "")
        assert sidecar.parent == tmp_path
        sdp = Path(plane.start_forward(session, "127.0.0.1", player.getsockname()[1]))
        await until(lambda: any(t.get("type") == "forward" for t in plane.stats(session).get("taps") or []),  # type: ignore[union-attr]
                    what="the forward in the worker")
        legacy = legacy_address(legacy_offer)
        for i in range(50):
            browser.send_rtp(0, i, b"\xff" * 160)
            phone.send_rtp(legacy, 0, i, b"\xff" * 160)
        await until(lambda: len(phone.received) >= 50 and len(browser.received) >= 50, what="relay")
        assert len(await asyncio.to_thread(player.recv, 2048)) == 172  # legacy leg's RTP at the player
        assert sdp.exists() and "m=audio" in sdp.read_text()
        assert plane.stop_forward(session) and not plane.stop_forward(session)

        class Call:
            id = "call-1"

        call = Call()
        call.session = session  # type: ignore[attr-defined]
        plane.call_ended(call, "BYE from browser")
        await plane.delete(session)
        await until(lambda: sidecar.exists() and "end_reason" in sidecar.read_text(), what="the sidecar")
        await until(lambda: json.loads(sidecar.read_text()).get("ended") is not None, what="the final sidecar")
        meta = json.loads(sidecar.read_text())
        assert meta["parties"] == {"caller": "sip:a@x", "callee": "sip:b@y"}
        assert meta["end_reason"] == "BYE from browser" and meta["media_session"] == session
        for leg in ("webrtc", "legacy"):
            assert meta["legs"][leg]["decoded"] == 50
            with wave.open(str(tmp_path / meta["legs"][leg]["file"])) as w:
                assert w.getnframes() >= 50 * 160
    finally:
        player.close()
        browser.close()
        phone.close()
        await plane.close()


async def test_an_offer_given_up_leaves_nothing_in_the_worker(plane: RemotePlane) -> None:
    """The B2BUA's task cancelled while the worker builds the session: the session is deleted there."""
    browser = await FakeBrowser().start()
    orphans: list[object] = []
    orphan = plane._orphan

    def spy(worker: Any, future: Any) -> None:
        orphans.append(future.result()[0])
        orphan(worker, future)

    plane._orphan = spy  # type: ignore[method-assign]
    try:
        task = asyncio.get_running_loop().create_task(plane.offer_from_webrtc("call-9", browser.offer()))
        await asyncio.sleep(0)  # the request is queued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert plane.sessions == []
        await until(lambda: orphans, what="the worker's answer to the offer given up")

        async def worker_sessions() -> int:
            return sum(s["sessions"] + s["ports"] for s in await plane.worker_states())

        for _ in range(100):  # bounded: the worker finishes the offer, then the delete
            if await worker_sessions() == 0:
                break
            await asyncio.sleep(0.05)
        assert await worker_sessions() == 0
    finally:
        browser.close()

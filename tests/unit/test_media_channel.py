"""The media worker channel (rtc2sip.media.channel) and the worker's RPC server (rtc2sip.media.worker)
without a process: frames, limits, exceptions across the channel, calls and events over a socketpair."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from rtc2sip.config import Settings
from rtc2sip.config.options import read_options_text
from rtc2sip.media.channel import MAX_FRAME, ChannelError, FrameDecoder, decode_exception, encode_exception, frame
from rtc2sip.media.plane import InvalidState, MediaPlaneError, UnknownSession
from rtc2sip.media.worker import WorkerServer
from rtc2sip.sdp import NoCommonCodec, SdpError


def test_any_split_of_the_stream_gives_the_same_messages() -> None:
    messages = [("call", 1, "delete", ("abc",)), ("event", "failure", ("s", "dtls failed")), ("ok", 2, None)]
    stream = b"".join(frame(m) for m in messages)
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == messages and decoder.pending == 0
    decoder = FrameDecoder()
    assert [m for b in stream for m in decoder.feed(bytes([b]))] == messages


def test_oversized_and_garbage_frames_are_refused() -> None:
    with pytest.raises(ChannelError):
        FrameDecoder().feed(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ChannelError):
        FrameDecoder().feed(struct.pack("!I", 3) + b"xyz")
    decoder = FrameDecoder()
    assert decoder.feed(struct.pack("!I", MAX_FRAME)) == []  # announced, not yet there: waits
    assert decoder.pending == 4


def test_settings_cross_with_their_read_only_mappings() -> None:
    s = Settings(users={"alice": "secret"}, media=read_options_text("[media]\nworkers = 2\n").media)
    back = pickle.loads(frame(s)[4:])
    assert back.users == {"alice": "secret"} and back.media.workers == 2 and back == s


@pytest.mark.parametrize("exc", [SdpError("bad m= line", line=4), NoCommonCodec("no codec"), UnknownSession("x"),
                                 InvalidState("no offer"), MediaPlaneError("busy")])
def test_the_planes_exceptions_keep_their_type(exc: Exception) -> None:
    back = decode_exception(pickle.loads(frame(encode_exception(exc))[4:]))
    assert type(back) is type(exc) and str(back) == str(exc)
    if isinstance(exc, SdpError):
        assert getattr(back, "warning", 399) == getattr(exc, "warning", 399)  # 305 for NoCommonCodec


def test_an_unpicklable_exception_comes_back_as_a_media_plane_error() -> None:
    class Local(Exception):  # a local class cannot be pickled
        pass

    back = decode_exception(encode_exception(Local("boom")))
    assert isinstance(back, MediaPlaneError) and "boom" in str(back)


class FakePlane:
    def __init__(self) -> None:
        self.sessions: list[str] = []
        self.failure: list[Callable[[str, str], None]] = []
        self.deleted: list[str] = []
        self.closed = False

    def on_failure(self, cb: Callable[[str, str], None]) -> None:
        self.failure.append(cb)

    def on_keyframe_request(self, cb: Callable[[str, str], None]) -> None:
        pass

    def on_answered(self, cb: Callable[[str, str], None]) -> None:
        pass

    async def offer_from_webrtc(self, call_id: str, offer: Any) -> tuple[str, Any]:
        if offer == "bad":
            raise SdpError("no audio")
        self.sessions.append("s1")
        return "s1", f"legacy({offer})"

    async def delete(self, session: str) -> None:
        self.deleted.append(session)

    async def close(self) -> None:
        self.closed = True

    def __getattr__(self, name: str) -> Any:
        async def missing(*args: Any) -> Any:
            raise UnknownSession(args[0] if args else name)

        return missing


async def test_worker_server_answers_calls_and_sends_events() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    plane = FakePlane()
    server = WorkerServer(theirs, plane)
    serving = asyncio.get_running_loop().create_task(server.serve())
    loop = asyncio.get_running_loop()
    decoder = FrameDecoder()

    async def receive(n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            out += decoder.feed(await loop.sock_recv(ours, 65536))
        return out

    try:
        await loop.sock_sendall(ours, frame(("call", 1, "offer_from_webrtc", ("call-1", "sdp")))
                                + frame(("call", 2, "offer_from_webrtc", ("call-2", "bad")))
                                + frame(("call", 3, "answer_from_legacy", ("nope", "sdp"))))
        replies = {m[1]: m for m in await receive(3)}
        assert replies[1] == ("ok", 1, ("s1", "legacy(sdp)"))
        assert replies[2][0] == "error" and isinstance(replies[2][2], SdpError)
        assert replies[3][0] == "error" and isinstance(replies[3][2], UnknownSession)
        plane.failure[0]("s1", "ice consent lost")
        assert await receive(1) == [("event", "failure", ("s1", "ice consent lost"))]
        ours.shutdown(socket.SHUT_WR)  # the gateway closes the channel: the plane closes, the server ends
        await asyncio.wait_for(serving, 5)
        assert plane.closed
    finally:
        serving.cancel()
        ours.close()
        theirs.close()


def test_media_workers_option() -> None:
    assert read_options_text("").media.workers == 0
    assert read_options_text("[media]\nworkers = 3\n").media.workers == 3
    assert read_options_text('[media]\nworkers = "auto"\n').media.workers >= 1
    assert read_options_text("[media]\nworkers = 2\n[recording]\nenabled = true\n").recording.enabled
    for bad in ("[media]\nworkers = -1\n", '[media]\nworkers = "many"\n', "[media]\nworker = 1\n"):
        with pytest.raises(ValueError, match="media"):
            read_options_text(bad)


def test_media_port_range_option() -> None:
    assert read_options_text("").media.rtp_ports == (20000, 29999)
    assert read_options_text('[media]\nrtp_ports = "30000 - 30999"\n').media.rtp_ports == (30000, 30999)
    for bad in ('rtp_ports = "30000"', 'rtp_ports = 30000', 'rtp_ports = "999-2000"', 'rtp_ports = "3000-2000"',
                'rtp_ports = "30000-70000"', 'rtp_ports = "30000-30009"',
                'workers = 4\nrtp_ports = "30000-30040"',  # under 16 ports per worker
                'workers = 2\nwebrtc_port = 40000'):  # one port cannot serve two workers' shared sockets
        with pytest.raises(ValueError, match="media"):
            read_options_text(f"[media]\n{bad}\n")


def test_start_up_report_names_the_media_workers() -> None:
    from rtc2sip.config import MediaOptions

    assert not any("worker" in line for line in Settings().banner_lines())
    assert "Media plane in 2 worker processes ([media] workers)" in Settings(media=MediaOptions(2)).banner_lines()

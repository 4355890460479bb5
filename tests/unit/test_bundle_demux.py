"""BUNDLE demultiplexing of the browser's SRTP (RFC 8843 §9.2): learnt SSRC, then the MID header
extension, then the browser's a=ssrc, then the payload type; SRTCP by its sender's SSRC.

Audio and video are given the same payload type (96) on the browser leg, so only the MID or the SSRC
can tell them apart. The session's transports are replaced by recorders, as in bench/relay_path.py.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest

from rtc2sip.media.certificate import Certificate
from rtc2sip.media.path import StreamConfig, WebRtcProtocol
from rtc2sip.media.ports import PortAllocator
from rtc2sip.media.rtp import RtpPacket, build_extensions
from rtc2sip.media.session import MAX_LEARNT_SSRCS, MediaSession
from rtc2sip.media.srtp import AES128_CM_SHA1_80, SrtpSession
from rtc2sip.media.stream import Stream
from rtc2sip.sdp import LegacyPeer

BROWSER = ("127.0.0.1", 6000)
AUDIO_PHONE = ("127.0.0.1", 5000)
VIDEO_PHONE = ("127.0.0.1", 5002)
MID_ID = 3
A_SSRC, V_SSRC = 0x1111, 0x2222


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((bytes(data), addr))


class Browser:
    """A session with an audio and a video stream, and the browser's SRTP context toward it."""

    def __init__(self, *, mid_extmap: int | None = MID_ID, audio_ssrcs: tuple[int, ...] = (),
                 video_ssrcs: tuple[int, ...] = (), audio_pts: dict[int, int] | None = None) -> None:
        key = os.urandom(30)
        self.session = MediaSession("demux", host="127.0.0.1", ports=PortAllocator(41000, 41100),
                                    certificate=CERT, symmetric=True, on_failure=lambda reason: None,
                                    media_timeout=30, connect_timeout=10)
        self.audio = Stream(self.session, "audio", 41000, True)
        self.video = Stream(self.session, "video", 41002, True)
        self.session.streams.update(audio=self.audio, video=self.video)
        self.to_audio, self.to_video = Recorder(), Recorder()
        self.audio.legacy_rtp = self.to_audio  # type: ignore[assignment]
        self.video.legacy_rtp = self.to_video  # type: ignore[assignment]
        self.session.transport = Recorder()  # type: ignore[assignment]
        self.session.ice.selected = BROWSER
        self.session.srtp_rx = SrtpSession(AES128_CM_SHA1_80, key, outbound=False)
        self.srtp = SrtpSession(AES128_CM_SHA1_80, key, outbound=True)
        self.audio_pts = audio_pts if audio_pts is not None else {96: 0}
        self.configure(mid_extmap, audio_ssrcs, video_ssrcs)
        self.receive = WebRtcProtocol(self.session).datagram_received
        self.seq: dict[int, int] = {}

    def configure(self, mid_extmap: int | None, audio_ssrcs: tuple[int, ...] = (),
                  video_ssrcs: tuple[int, ...] = ()) -> None:
        self.session.configure_streams([
            StreamConfig("audio", self.audio_pts, {v: k for k, v in self.audio_pts.items()}, 8000,
                         LegacyPeer(*AUDIO_PHONE, AUDIO_PHONE[0], AUDIO_PHONE[1] + 1), mid="0",
                         webrtc_ssrcs=audio_ssrcs, mid_extmap=mid_extmap),
            StreamConfig("video", {96: 96}, {96: 96}, 90000,
                         LegacyPeer(*VIDEO_PHONE, VIDEO_PHONE[0], VIDEO_PHONE[1] + 1), mid="1",
                         webrtc_ssrcs=video_ssrcs, mid_extmap=mid_extmap),
        ])

    def send(self, ssrc: int, mid: str | None = None, pt: int = 96, *, two_byte: bool = False) -> None:
        seq = self.seq[ssrc] = self.seq.get(ssrc, 0) + 1
        profile, ext = None, b""
        if mid is not None:
            elements = {1: b"\x00\x01\x02", MID_ID: mid.encode()}  # another extension first
            if two_byte:
                elements[200] = b"x"
            profile, ext = build_extensions(elements)
        packet = RtpPacket(pt, seq, seq * 160, ssrc, b"\xab" * 40, extension_profile=profile, extension=ext)
        self.receive(self.srtp.protect(packet.serialize()), BROWSER)

    def send_rtcp(self, sender: int) -> None:
        # An RR with no report block (RFC 3550 §6.4.2)
        self.receive(self.srtp.protect_rtcp(struct.pack("!BBHI", 0x80, 201, 1, sender)), BROWSER)

    def counts(self) -> tuple[int, int]:
        return len(self.to_audio.sent), len(self.to_video.sent)


CERT = Certificate.generate()


def test_same_payload_type_told_apart_by_mid_then_by_learnt_ssrc() -> None:
    b = Browser()
    b.send(A_SSRC, "0")
    b.send(V_SSRC, "1")
    assert b.counts() == (1, 1)
    assert b.to_audio.sent[0][0][1] & 0x7F == 0 and b.to_video.sent[0][0][1] & 0x7F == 96
    # Chrome stops sending the MID once its source is known: the learnt SSRC carries on
    b.send(A_SSRC)
    b.send(V_SSRC)
    b.send(V_SSRC)
    assert b.counts() == (2, 3)
    assert b.session.streams_by_ssrc == {A_SSRC: b.audio, V_SSRC: b.video}
    bundle: Any = b.session.stats()["webrtc"]["bundle"]  # type: ignore[index]
    assert bundle == {"mid_extmap": MID_ID, "sources_learnt": {"mid": 2, "ssrc": 0, "pt": 0}}


def test_two_byte_header_extension_form() -> None:
    b = Browser()
    b.send(V_SSRC, "1", two_byte=True)
    assert b.counts() == (0, 1)


def test_same_payload_type_told_apart_by_announced_ssrc() -> None:
    b = Browser(mid_extmap=None, audio_ssrcs=(A_SSRC,), video_ssrcs=(V_SSRC,))
    b.send(V_SSRC)
    b.send(A_SSRC)
    b.send(V_SSRC, "0")  # a MID the session did not negotiate means nothing
    assert b.counts() == (1, 2)
    assert b.session.sources_learnt == {"mid": 0, "ssrc": 2, "pt": 0}


def test_order_learnt_ssrc_then_mid_then_announced_then_payload_type() -> None:
    b = Browser(audio_ssrcs=(A_SSRC,))
    b.send(A_SSRC, "1")  # the MID wins over the a=ssrc lines
    assert b.counts() == (0, 1)
    b.send(A_SSRC, "0")  # and the learnt SSRC over a MID
    assert b.counts() == (0, 2)
    b.send(0x3333, "7")  # unknown MID: the announcements, then the payload type
    assert b.counts() == (1, 2)  # PT 96 is the audio's first: routed there, not learnt (ambiguous)
    assert 0x3333 not in b.session.streams_by_ssrc


def test_payload_type_alone_when_unambiguous_and_learnt() -> None:
    b = Browser(mid_extmap=None, audio_pts={0: 0})
    b.send(0x4444, pt=0)
    b.send(0x5555, pt=96)
    assert b.counts() == (1, 1)
    assert b.session.streams_by_ssrc == {0x4444: b.audio, 0x5555: b.video}
    assert b.session.sources_learnt == {"mid": 0, "ssrc": 0, "pt": 2}


def test_payload_type_no_stream_relays_is_dropped_whatever_the_mid() -> None:
    b = Browser()
    dropped = b.session.dropped
    b.send(0x6666, "1", pt=97)  # e.g. RTX the answer left out
    assert b.counts() == (0, 0) and b.session.dropped == dropped + 1
    assert 0x6666 not in b.session.streams_by_ssrc


def test_learnt_sources_are_bounded_and_forgotten_on_a_new_answer() -> None:
    b = Browser()
    for n in range(MAX_LEARNT_SSRCS * 2 + 3):
        b.send(0x10000 + n, "1")
        assert len(b.session.streams_by_ssrc) <= MAX_LEARNT_SSRCS
    assert b.counts() == (0, MAX_LEARNT_SSRCS * 2 + 3)
    b.configure(MID_ID)
    assert b.session.streams_by_ssrc == {}


@pytest.mark.parametrize(("sender", "audio", "video"), [(A_SSRC, 1, 0), (V_SSRC, 0, 1), (1, 1, 1)])
def test_rtcp_goes_to_the_stream_of_its_sender(sender: int, audio: int, video: int) -> None:
    b = Browser()
    b.send(A_SSRC, "0")
    b.send(V_SSRC, "1")
    b.send_rtcp(sender)  # SSRC 1: Chrome's receive-only reports, for every stream
    assert (b.audio.webrtc.rtcp_in, b.video.webrtc.rtcp_in) == (audio, video)


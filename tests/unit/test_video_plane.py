"""Video through the Media Coder, the parts without sockets: which codecs the offers carry when the
legs share no video codec (RFC 3264, RFC 6184 §8.1), the transcoding plan read from both legs, and
the coder pool's bound counted per call (audio and video of one call take one slot)."""

from __future__ import annotations

import dataclasses

import pytest

from rtc2sip.coder import CoderBusy, CoderPool, OutPacket
from rtc2sip.media.negotiation import TranscodePlan
from rtc2sip.sdp import (
    BreakerPolicy,
    Candidate,
    CodecPolicy,
    Fingerprint,
    LegacyEndpoint,
    SessionDescription,
    WebRtcEndpoint,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)

GW_FP = Fingerprint("sha-256", ":".join(f"{i:02X}" for i in range(32)))
WEB = WebRtcEndpoint("GwUf", "GwPwd0123456789abcdefXY", (GW_FP,), (Candidate.host("127.0.0.1", 40000),),
                     session_id="7000", rtcp_fb=("nack", "nack pli", "ccm fir", "goog-remb"))
LEG = LegacyEndpoint("127.0.0.1", {"audio": 30000, "video": 30002}, session_id="8000")
CODER = BreakerPolicy(CodecPolicy(("opus", "pcmu", "vp8", "h264-bp"), transcoding=True))
TRANSPORT = ("a=ice-ufrag:bRwS\r\na=ice-pwd:browserpassword0123456789\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n")


def vp8_browser_offer() -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" + TRANSPORT + "a=mid:0\r\na=rtpmap:0 PCMU/8000\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\n" + TRANSPORT + "a=mid:1\r\n"
        "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack pli\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
    )


def h264_phone(kind_ports: tuple[int, int] = (10012, 10014), mode: int = 1, pt: int = 99) -> SessionDescription:
    return SessionDescription.parse(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {kind_ports[0]} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"m=video {kind_ports[1]} RTP/AVP {pt}\r\na=rtpmap:{pt} H264/90000\r\n"
        f"a=fmtp:{pt} profile-level-id=42e01f;packetization-mode={mode}\r\n"
    )


def test_vp8_browser_gets_h264_offered_to_the_phone_and_transcoded() -> None:
    offer = vp8_browser_offer()
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, CODER)
    video = legacy.media[1]
    codecs = [(c.name, c.params.get("packetization-mode")) for c in video.codecs]
    assert codecs == [("VP8", None), ("H264", "1"), ("H264", "0")]  # the coder's, mode 1 first
    assert all(c.params.get("profile-level-id") == "42e01f" for c in video.codecs if c.name == "H264")
    assert not mapping.media[1].transcode  # VP8 passes through if the phone takes it
    phone = h264_phone()
    answer, mapping = legacy_answer_to_webrtc(phone, offer, WEB, mapping)
    mm = mapping.media[1]
    assert mm.transcode and mm.to_legacy == {96: 99}
    assert not mapping.media[0].transcode  # audio shares PCMU: decided on its own
    assert [c.name for c in answer.media[1].codecs] == ["VP8"]
    assert "a=rtcp-fb:96 nack pli" in str(answer) and "a=rtcp-fb:0" not in str(answer)
    plan = TranscodePlan.of(mm, phone.media[1], offer.media[1])
    assert (plan.kind, plan.webrtc_codec, plan.legacy_codec) == ("video", "vp8", "h264-bp")
    assert (plan.webrtc_clock, plan.legacy_clock, plan.legacy_h264_mode) == (90000, 90000, 1)
    assert plan.description == "vp8/96 <-> h264-bp/99"
    assert plan.pt_map() == {96: 99} and plan.from_legacy == frozenset({99})


def test_single_nal_unit_phone_is_transcoded_in_mode_0() -> None:
    offer = vp8_browser_offer()
    _, mapping = webrtc_offer_to_legacy(offer, LEG, CODER)
    phone = h264_phone(mode=0, pt=100)
    _, mapping = legacy_answer_to_webrtc(phone, offer, WEB, mapping)
    plan = TranscodePlan.of(mapping.media[1], phone.media[1], offer.media[1])
    assert plan.legacy_h264_mode == 0 and plan.legacy_pt == 100


def test_h264_phone_offer_gets_vp8_added_for_the_browser() -> None:
    phone_offer = h264_phone()
    browser_offer, mapping = legacy_offer_to_webrtc(phone_offer, WEB, CODER)
    names = [c.name for c in browser_offer.media[1].codecs]
    assert names[:2] == ["H264", "VP8"], names
    assert "a=rtcp-fb:" in str(browser_offer)
    vp8 = next(c for c in browser_offer.media[1].codecs if c.name == "VP8")
    # a browser restricted to VP8 answers it: the gateway transcodes
    answer = SessionDescription.parse(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n" + TRANSPORT.replace("actpass", "active")
        + "a=mid:0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"m=video 9 UDP/TLS/RTP/SAVPF {vp8.pt}\r\nc=IN IP4 0.0.0.0\r\n" + TRANSPORT.replace("actpass", "active")
        + f"a=mid:1\r\na=rtpmap:{vp8.pt} VP8/90000\r\n"
    )
    legacy_answer, mapping = webrtc_answer_to_legacy(answer, phone_offer, LEG, mapping)
    assert mapping.media[1].transcode and mapping.media[1].to_webrtc == {99: vp8.pt}
    assert [c.name for c in legacy_answer.media[1].codecs] == ["H264"]


def test_without_the_coder_the_video_is_not_offered_h264() -> None:
    policy = dataclasses.replace(CODER, codecs=dataclasses.replace(CODER.codecs, transcoding=False))
    legacy, _ = webrtc_offer_to_legacy(vp8_browser_offer(), LEG, policy)
    assert [c.name for c in legacy.media[1].codecs] == ["VP8"]


class _Null:
    def push(self, payload: bytes, timestamp: int, seq: int, marker: bool, arrival: float,
             payload_type: int | None = None) -> list[OutPacket]:  # fmt: skip
        return []

    def close(self) -> None:
        pass


async def test_pool_counts_a_call_once() -> None:
    """max_transcoded_calls bounds calls: one call's audio and video sessions take one slot."""
    pool = CoderPool(1, workers=1)
    try:
        audio = await pool.open("call-1", to_legacy=_Null, to_webrtc=_Null)
        video = await pool.open("call-1", to_legacy=_Null, to_webrtc=_Null)
        assert pool.active == 1 and pool.holds("call-1")
        with pytest.raises(CoderBusy):
            await pool.open("call-2", to_legacy=_Null)
        await pool.close(audio)
        assert pool.active == 1 and pool.holds("call-1")
        await pool.close(video)
        assert pool.active == 0 and not pool.holds("call-1")
        other = await pool.open("call-2", to_legacy=_Null)
        assert pool.active == 1
        await pool.close(other)
    finally:
        await pool.shutdown()

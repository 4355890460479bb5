"""The breaker's offer/answer translation (RFC 3264) with real-world SDP from both kinds of peer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc2sip.config.webrtc2sip import CODECS, Webrtc2sipSettings
from rtc2sip.sdp import (
    CODEC_SPECS,
    TO_LEGACY,
    TO_WEBRTC,
    BreakerPolicy,
    Candidate,
    CodecPolicy,
    Crypto,
    Fingerprint,
    LegacyEndpoint,
    Mapping,
    NoCommonCodec,
    Rule,
    SdpError,
    SessionDescription,
    SsrcAnnouncement,
    WebRtcEndpoint,
    codec_key,
    legacy_answer_to_webrtc,
    legacy_offer_to_webrtc,
    missing_for_browser,
    webrtc_answer_to_legacy,
    webrtc_offer_to_legacy,
)

SAMPLES = Path(__file__).parent / "sdp_samples"
GW_FP = Fingerprint("sha-256", ":".join(f"{i:02X}" for i in range(32)))
WEB = WebRtcEndpoint("GwUf", "GwPwd0123456789abcdefXY", (GW_FP,), (Candidate.host("127.0.0.1", 40000),),
                     session_id="7000")
LEG = LegacyEndpoint("127.0.0.1", {"audio": 30000, "video": 30002}, session_id="8000")
POLICY = BreakerPolicy(CodecPolicy(("opus", "pcmu", "pcma", "g722", "vp8", "h264-bp")))
# WebRTC-only attributes that must never reach a legacy peer (TO_LEGACY).
WEBRTC_ONLY = ("ice-ufrag", "ice-pwd", "ice-options", "candidate", "fingerprint", "setup", "mid", "group",
               "rtcp-mux", "rtcp-rsize", "extmap", "extmap-allow-mixed", "msid", "msid-semantic", "ssrc",
               "ssrc-group", "rtcp-fb", "bundle-only", "end-of-candidates")


def sample(name: str) -> SessionDescription:
    return SessionDescription.parse((SAMPLES / name).read_text())


def attr_names(sdp: SessionDescription) -> set[str]:
    return {a.name for a in sdp.attributes} | {a.name for m in sdp.media for a in m.attributes}


def reparse(sdp: SessionDescription) -> SessionDescription:
    """What the peer sees: the text, parsed again."""
    return SessionDescription.parse(str(sdp).encode())


def chrome_answer(offer: SessionDescription, pts: dict[str, list[int]], *, setup: str = "active") -> SessionDescription:
    """A Chromium answer to ``offer`` keeping ``pts`` per mid (in Chromium's shape, see chrome_answer.sdp)."""
    lines = ["v=0", "o=- 2738105470926441731 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    mids = [m.mid for m in offer.media if m.port and m.mid in pts]
    lines.append("a=group:BUNDLE " + " ".join(str(m) for m in mids))
    for m in offer.media:
        keep = pts.get(m.mid or "", [])
        if not keep:
            lines += [f"m={m.kind} 0 {m.proto} {m.formats[0]}", "c=IN IP4 0.0.0.0", f"a=mid:{m.mid}"]
            continue
        lines += [f"m={m.kind} 9 {m.proto} " + " ".join(map(str, keep)), "c=IN IP4 0.0.0.0",
                  "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:Lm3p", "a=ice-pwd:Ty7uI0oP3aS6dF9gH2jK5lZx",
                  "a=ice-options:trickle", f"a=fingerprint:sha-256 {':'.join(['5A'] * 32)}", f"a=setup:{setup}",
                  f"a=mid:{m.mid}", "a=sendrecv" if m.direction == "sendrecv" else f"a={flip(m.direction)}",
                  "a=msid:- 7e8f9a0b-1c2d-4e3f-a4b5-c6d7e8f9a0b1", "a=rtcp-mux"]
        for pt in keep:
            rtpmap = m.rtpmap(pt)
            assert rtpmap is not None
            lines.append(f"a=rtpmap:{rtpmap}")
            if (fmtp := m.fmtp(pt)) is not None:
                lines.append(f"a=fmtp:{pt} {fmtp}")
        lines.append("a=ssrc:480927214 cname:Np2sD5fG8hJ1kL4z")
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


def flip(direction: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)


def legacy_answer(kind_pts: list[tuple[str, int, list[str]]], direction: str = "sendrecv",
                  address: str = "127.0.0.1") -> SessionDescription:
    """A baresip-style answer: (kind, port, rtpmap values) per m= line."""
    lines = ["v=0", "o=- 3196720432 1473918626 IN IP4 127.0.0.1", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    for kind, port, maps in kind_pts:
        pts = [m.split()[0] for m in maps] or ["0"]
        lines.append(f"m={kind} {port} RTP/AVP " + " ".join(pts))
        lines += [f"a=rtpmap:{m}" for m in maps]
        if port:
            lines += [f"a={direction}", "a=ssrc:903144127 cname:baresip"]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n")


# -- browser calls legacy --------------------------------------------------------------------------


def test_chrome_offer_to_legacy_offer() -> None:
    offer = sample("chrome_audio_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    text = str(legacy)
    assert reparse(legacy).media[0].proto == "RTP/AVP"
    media = legacy.media[0]
    # Same codecs in the same order and numbering, red (WebRTC-only) dropped, CN and both
    # telephone-event rates kept since opus (48 kHz) and G.711 (8 kHz) are both offered.
    assert media.payload_types == [111, 9, 0, 8, 13, 110, 126]
    assert legacy.connection is not None and legacy.connection.host == "127.0.0.1"
    assert media.port == 30000 and media.rtcp is not None and media.rtcp.port == 30001
    assert not attr_names(legacy) & set(WEBRTC_ONLY), text
    assert media.direction == "sendrecv"
    assert legacy.origin.session_id == "8000" and legacy.origin.version == 1
    mm = mapping.media[0]
    assert (mm.kind, mm.mid, mm.webrtc_index, mm.legacy_index) == ("audio", "0", 0, 0)
    assert mm.to_legacy == {111: 111, 9: 9, 0: 0, 8: 8, 13: 13, 110: 110, 126: 126}
    assert mm.webrtc_ssrcs == (2913470071,)
    assert mapping.bundle == ("0",)
    assert mapping.webrtc_peer is not None and mapping.webrtc_peer.ufrag == "Xq1v"
    assert mapping.webrtc_peer.candidates[0].port == 53872 and mapping.webrtc_peer.setup == "actpass"


def test_chrome_offer_baresip_answer_chrome_answer() -> None:
    """The issue's first end-to-end case, in SDP: Chrome -> rtc2sip -> baresip (PCMU only)."""
    offer = sample("chrome_audio_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    answer, mapping = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer, WEB, mapping)
    seen = reparse(answer)
    text = str(answer)
    assert missing_for_browser(seen) == []
    assert seen.bundle_groups == [("0",)]  # Chrome with max-bundle needs it
    assert seen.ice_lite
    media = seen.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVPF"
    assert media.mid == "0"
    assert (media.ice_ufrag, media.ice_pwd) == (WEB.ice_ufrag, WEB.ice_pwd)
    assert media.fingerprints == [GW_FP] and media.fingerprints[0].algorithm == "sha-256"
    assert media.setup == "passive"  # TESTING.md: never race the browser's answer
    assert media.rtcp_mux
    assert media.candidates == list(WEB.candidates) and media.has("end-of-candidates")
    assert (media.port, media.connection and media.connection.host) == (40000, "127.0.0.1")
    assert media.payload_types == [0, 126]  # PCMU keeps PT 0, telephone-event at 8 kHz
    assert "a=ssrc:" not in text and "a=msid:" not in text  # baresip's SSRC is not what we send
    assert "a=label" not in text  # legacy vendor attributes stay on the legacy leg
    assert media.direction == "sendrecv"
    mm = mapping.media[0]
    assert mm.to_legacy == {0: 0, 126: 126} and mm.to_webrtc == {0: 0, 126: 126}
    assert (mm.webrtc_dtmf_pt, mm.legacy_dtmf_pt) == (126, 126)
    assert mm.legacy_ssrcs == (903144127,)
    peer = mm.legacy_peer
    assert peer is not None and (peer.address, peer.port, peer.rtcp_port, peer.rtcp_mux) == (
        "127.0.0.1", 10012, 10013, False)


def test_av_offer_video_rejected_by_legacy() -> None:
    offer = sample("chrome_av_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    assert [m.kind for m in legacy.media] == ["audio", "video"]
    assert legacy.media[1].payload_types == [96, 102, 104, 106, 108]  # VP8, H.264 baseline only
    assert not legacy.media[1].has("rtcp-fb")
    answer_text = str(sample("baresip_answer.sdp")) + "m=video 0 RTP/AVP 96\r\n"
    answer, mapping = legacy_answer_to_webrtc(SessionDescription.parse(answer_text), offer, WEB, mapping)
    seen = reparse(answer)
    assert seen.bundle_groups == [("0",)]  # RFC 8843 §7.3.3: the rejected mid leaves the group
    video = seen.media[1]
    assert (video.port, video.mid, video.formats) == (0, "1", ["96"])
    assert mapping.media[1].rejected and not mapping.media[0].rejected


def test_legacy_answer_missing_sections_read_as_rejected() -> None:
    offer = sample("chrome_av_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    answer, _ = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer, WEB, mapping)
    assert answer.media[1].port == 0 and answer.media[1].mid == "1"
    too_many = str(sample("baresip_answer.sdp")) + "m=video 0 RTP/AVP 96\r\nm=video 0 RTP/AVP 96\r\n"
    with pytest.raises(SdpError, match="m= sections"):
        legacy_answer_to_webrtc(SessionDescription.parse(too_many), offer, WEB, mapping)


def test_both_kinds_accepted_with_h264_profile_matching() -> None:
    offer = sample("chrome_av_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    answer = legacy_answer([
        ("audio", 10012, ["0 PCMU/8000", "101 telephone-event/8000"]),
        ("video", 10014, ["99 H264/90000"]),
    ])
    answer.media[1].add("fmtp", "99 profile-level-id=42e01f;packetization-mode=1")
    browser, mapping = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    # Constrained baseline, mode 1 is PT 106 in Chrome's offer (not 102, plain baseline, RFC 6184 §8.1).
    assert browser.media[1].payload_types == [106]
    assert mapping.media[1].to_legacy == {106: 99}
    assert mapping.media[0].to_legacy == {0: 0, 126: 101}  # telephone-event renumbered by the answer
    assert browser.bundle_groups == [("0", "1")]
    # Candidates once, in the tagged section; both sections share the transport.
    assert browser.media[0].candidates and not browser.media[1].candidates
    assert browser.media[1].port == browser.media[0].port and browser.media[1].ice_ufrag == WEB.ice_ufrag


def test_firefox_offer_bundle_only_and_session_fingerprint() -> None:
    offer = sample("firefox_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    assert [(m.kind, m.port) for m in legacy.media] == [("audio", 30000), ("video", 30002)]
    assert mapping.webrtc_peer is not None and list(mapping.webrtc_peer.fingerprints) == offer.fingerprints
    answer = legacy_answer([("audio", 10012, ["9 G722/8000", "101 telephone-event/8000"]), ("video", 0, [])])
    browser, _ = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    assert browser.media[0].payload_types == [9, 101]
    assert browser.media[1].port == 0 and browser.media[1].mid == "1"


def test_sipjs_offer_with_named_mid_and_isac() -> None:
    offer = sample("sipjs_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    # ISAC is not a webrtc2sip codec; telephone-event at 32/16 kHz has no codec at that rate.
    assert legacy.media[0].payload_types == [111, 9, 0, 8, 13, 110, 126]
    browser, _ = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer, WEB, mapping)
    assert browser.bundle_groups == [("audio",)] and browser.media[0].mid == "audio"


def test_policy_filters_and_telephone_event_rate() -> None:
    offer = sample("chrome_audio_offer.sdp")
    legacy, _ = webrtc_offer_to_legacy(offer, LEG, BreakerPolicy(CodecPolicy(("pcma", "pcmu"))))
    # No opus, so no 48 kHz telephone-event (RFC 4733 §7.1.1: the event clock follows the codec).
    assert legacy.media[0].payload_types == [0, 8, 13, 126]


def test_gateway_ssrc_extmap_and_feedback_announced_only_when_given() -> None:
    offer = sample("chrome_av_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    web = dataclasses.replace(
        WEB, ssrcs={"audio": SsrcAnnouncement(1111, "gwcname", "gw-stream", "gw-audio")},
        extmaps=("urn:ietf:params:rtp-hdrext:sdes:mid",), rtcp_fb=("nack", "nack pli"), rtcp_rsize=True,
    )
    answer = legacy_answer([("audio", 10012, ["0 PCMU/8000"]), ("video", 10014, ["96 VP8/90000"])])
    browser, final = legacy_answer_to_webrtc(answer, offer, web, mapping)
    audio, video = browser.media
    # RFC 8285 §7: the browser's ID, for the relay's BUNDLE demultiplexer too
    assert [m.mid_extmap for m in final.active] == [4, 4]
    assert audio.ssrcs[0].ssrc == 1111 and audio.msid is not None and audio.msid.stream == "gw-stream"
    assert not video.ssrcs and video.msid is None  # nothing the gateway does not really send
    assert [e.id for e in audio.extmaps] == [4] and audio.extmaps[0].uri.endswith("sdes:mid")
    assert audio.rtcp_fb(0) == () and video.rtcp_fb(96) == ("nack", "nack pli")
    assert audio.rtcp_rsize


@pytest.mark.parametrize(("offered", "wanted", "expected"), [
    ("actpass", None, "passive"),
    ("active", None, "passive"),
    ("passive", None, "active"),
    ("actpass", "active", "active"),
    ("passive", "passive", "active"),  # impossible wish: the table decides
])
def test_dtls_setup_answer(offered: str, wanted: str | None, expected: str) -> None:
    text = (SAMPLES / "chrome_audio_offer.sdp").read_text().replace("a=setup:actpass", f"a=setup:{offered}")
    offer = SessionDescription.parse(text)
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    browser, _ = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer,
                                         dataclasses.replace(WEB, setup=wanted), mapping)
    assert browser.media[0].setup == expected


@pytest.mark.parametrize("attribute", ["a=ice-ufrag:Xq1v", "a=ice-pwd:H5s9dJm7sV9o1s3kR9eZ2bYc", "a=fingerprint:"])
def test_browser_offer_without_ice_or_dtls_is_refused(attribute: str) -> None:
    text = "\n".join(line for line in (SAMPLES / "chrome_audio_offer.sdp").read_text().splitlines()
                     if not line.startswith(attribute))
    with pytest.raises(SdpError, match="lacks") as info:
        webrtc_offer_to_legacy(SessionDescription.parse(text), LEG, POLICY)
    assert info.value.status == 488


# -- legacy calls browser --------------------------------------------------------------------------


def test_asterisk_offer_browser_offer_chrome_answer_legacy_answer() -> None:
    """The issue's reverse case: Asterisk (G.722/G.711) -> rtc2sip -> Chrome."""
    offer = sample("asterisk_offer.sdp")
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    seen = reparse(browser_offer)
    assert missing_for_browser(seen) == []
    assert seen.ice_lite and seen.bundle_groups == [("0",)]
    media = seen.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVPF" and media.mid == "0"
    assert media.setup == "actpass" and media.rtcp_mux
    assert (media.ice_ufrag, media.ice_pwd, media.fingerprints) == (WEB.ice_ufrag, WEB.ice_pwd, [GW_FP])
    assert media.candidates == list(WEB.candidates)
    assert media.payload_types == [9, 0, 8, 101] and media.fmtp(101) == "0-16"
    assert (media.ptime, media.maxptime) == (20, 150)
    assert seen.origin.session_id == "7000"
    assert not {"crypto", "ssrc"} & attr_names(seen)
    peer = mapping.media[0].legacy_peer
    assert peer is not None and (peer.address, peer.port, peer.rtcp_port) == ("192.0.2.10", 14562, 14563)

    answer = chrome_answer(browser_offer, {"0": [9, 101]})
    legacy, mapping = webrtc_answer_to_legacy(answer, offer, LEG, mapping)
    seen_legacy = reparse(legacy)
    lm = seen_legacy.media[0]
    assert (lm.proto, lm.port, lm.payload_types) == ("RTP/AVP", 30000, [9, 101])
    assert lm.rtcp is not None and lm.rtcp.port == 30001 and lm.direction == "sendrecv" and lm.ptime == 20
    assert not attr_names(seen_legacy) & set(WEBRTC_ONLY)
    assert seen_legacy.connection is not None and seen_legacy.connection.host == "127.0.0.1"
    mm = mapping.media[0]
    assert mm.to_webrtc == {9: 9, 101: 101} and (mm.legacy_dtmf_pt, mm.webrtc_dtmf_pt) == (101, 101)
    assert mm.webrtc_ssrcs == (480927214,)
    assert mapping.webrtc_peer is not None and mapping.webrtc_peer.setup == "active"
    assert mapping.webrtc_peer.ufrag == "Lm3p"


def test_browser_answer_must_choose_a_dtls_role() -> None:
    offer = sample("asterisk_offer.sdp")
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    with pytest.raises(SdpError, match="setup:actpass"):
        webrtc_answer_to_legacy(chrome_answer(browser_offer, {"0": [0]}, setup="actpass"), offer, LEG, mapping)


def test_polycom_separate_rtcp_and_g729_filtered() -> None:
    offer = sample("polycom_offer.sdp")
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    assert browser_offer.media[0].payload_types == [9, 0, 8, 101]  # G.729 is not in the policy
    assert browser_offer.media[0].direction == "sendrecv"  # session-level default made explicit
    peer = mapping.media[0].legacy_peer
    assert peer is not None and (peer.rtcp_address, peer.rtcp_port) == ("10.10.20.31", 2223)
    legacy, _ = webrtc_answer_to_legacy(chrome_answer(browser_offer, {"0": [0, 101]}), offer, LEG, mapping)
    assert legacy.media[0].payload_types == [0, 101]


def test_legacy_rtcp_mux_answered_when_allowed() -> None:
    text = (SAMPLES / "baresip_offer.sdp").read_text() + "a=rtcp-mux\n"
    offer = SessionDescription.parse(text)
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    answer = chrome_answer(browser_offer, {"0": [0, 101]})
    legacy, mapping = webrtc_answer_to_legacy(answer, offer, dataclasses.replace(LEG, rtcp_mux=True), mapping)
    assert legacy.media[0].rtcp_mux and legacy.media[0].rtcp is None
    peer = mapping.media[0].legacy_peer
    assert peer is not None and peer.rtcp_mux and peer.rtcp_port == 10340
    legacy, _ = webrtc_answer_to_legacy(answer, offer, LEG, mapping)
    assert not legacy.media[0].rtcp_mux and legacy.media[0].rtcp is not None


# -- hold ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("hold_sendonly.sdp", "sendonly"),
    ("hold_inactive.sdp", "inactive"),
    ("hold_c0.sdp", "sendonly"),  # RFC 2543 hold: c=0.0.0.0 means "do not send to me"
])
def test_legacy_hold_becomes_a_direction(name: str, expected: str) -> None:
    browser_offer, _ = legacy_offer_to_webrtc(sample(name), WEB, POLICY)
    assert browser_offer.media[0].direction == expected
    assert browser_offer.media[0].connection is not None
    assert not browser_offer.media[0].connection.is_hold  # browsers get a real address


def test_browser_hold_and_resume_by_reinvite() -> None:
    offer = sample("chrome_audio_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    _, mapping = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer, WEB, mapping)
    assert legacy.origin.version == 1

    hold = SessionDescription.parse(str(offer).replace("a=sendrecv", "a=sendonly"))
    legacy_hold, mapping = webrtc_offer_to_legacy(hold, LEG, POLICY, previous=mapping)
    assert legacy_hold.media[0].direction == "sendonly"
    assert (legacy_hold.origin.session_id, legacy_hold.origin.version) == ("8000", 2)
    held = SessionDescription.parse(str(sample("baresip_answer.sdp")).replace("a=sendrecv", "a=recvonly"))
    browser, mapping = legacy_answer_to_webrtc(held, hold, WEB, mapping)
    assert browser.media[0].direction == "recvonly"
    assert (browser.origin.session_id, browser.origin.version) == ("7000", 2)

    # The same offer again changes nothing, so the o= version stays (RFC 3264 §8).
    same, mapping = webrtc_offer_to_legacy(hold, LEG, POLICY, previous=mapping)
    assert same.origin.version == 2

    resume, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY, previous=mapping)
    assert resume.media[0].direction == "sendrecv" and resume.origin.version == 3


def test_answer_direction_follows_both_sides() -> None:
    offer = SessionDescription.parse((SAMPLES / "chrome_audio_offer.sdp").read_text().replace(
        "a=sendrecv", "a=recvonly"))
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    assert legacy.media[0].direction == "recvonly"
    browser, _ = legacy_answer_to_webrtc(sample("baresip_answer.sdp"), offer, WEB, mapping)
    assert browser.media[0].direction == "sendonly"  # RFC 3264 §6.1: recvonly is answered sendonly


# -- re-INVITE -------------------------------------------------------------------------------------


def test_reinvite_from_legacy_keeps_mids_and_payload_types() -> None:
    """Browser-started call, then the legacy side re-INVITEs (e.g. to hold): the browser must see its
    own mids, its payload-type numbers and the gateway's o= session continue (RFC 3264 §8)."""
    offer = sample("chrome_av_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    answer = legacy_answer([("audio", 10012, ["0 PCMU/8000", "101 telephone-event/8000"]), ("video", 0, [])])
    first, mapping = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    assert mapping.media[0].to_webrtc == {0: 0, 101: 126}

    reoffer = legacy_answer([("audio", 10012, ["0 PCMU/8000", "101 telephone-event/8000"]), ("video", 0, [])],
                            direction="sendonly")
    browser, mapping = legacy_offer_to_webrtc(reoffer, WEB, POLICY, previous=mapping)
    assert [m.mid for m in browser.media] == ["0", "1"]
    assert browser.media[0].payload_types == [0, 126]  # 101 on the legacy leg, still 126 for Chrome
    assert browser.media[0].direction == "sendonly"
    assert browser.media[1].port == 0  # the m= line stays, rejected (RFC 3264 §8.2)
    assert browser.bundle_groups == [("0",)]
    assert (browser.origin.session_id, browser.origin.version) == ("7000", first.origin.version + 1)

    chrome = chrome_answer(browser, {"0": [0, 126]})
    legacy, mapping = webrtc_answer_to_legacy(chrome, reoffer, LEG, mapping)
    assert legacy.media[0].payload_types == [0, 101] and legacy.media[0].direction == "recvonly"
    assert legacy.media[1].port == 0
    assert legacy.origin.session_id == "8000" and legacy.origin.version == 2
    assert mapping.media[0].to_legacy == {0: 0, 126: 101}


def test_reinvite_from_browser_after_legacy_started_call() -> None:
    offer = sample("asterisk_offer.sdp")
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    chrome = chrome_answer(browser_offer, {"0": [9, 101]})
    _, mapping = webrtc_answer_to_legacy(chrome, offer, LEG, mapping)
    # Chrome now offers (say, after adding video): mid 0 keeps legacy position 0, video is new.
    new_offer = sample("chrome_av_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(new_offer, LEG, POLICY, previous=mapping)
    assert [m.kind for m in legacy.media] == ["audio", "video"]
    assert (legacy.origin.session_id, legacy.origin.version) == ("8000", 2)
    assert mapping.by_mid("0") is not None and mapping.by_mid("0").legacy_index == 0  # type: ignore[union-attr]


# -- codecs ----------------------------------------------------------------------------------------


def test_no_common_codec_in_offer() -> None:
    with pytest.raises(NoCommonCodec) as info:
        webrtc_offer_to_legacy(sample("chrome_audio_offer.sdp"), LEG, BreakerPolicy(CodecPolicy(("g729",))))
    assert (info.value.status, info.value.warning) == (488, 305)
    with pytest.raises(NoCommonCodec):
        legacy_offer_to_webrtc(sample("polycom_offer.sdp"), WEB, BreakerPolicy(CodecPolicy(("opus",))))


def test_no_common_codec_in_answer() -> None:
    offer = sample("chrome_audio_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    g729 = legacy_answer([("audio", 10012, ["18 G729/8000"])])
    with pytest.raises(NoCommonCodec):
        legacy_answer_to_webrtc(g729, offer, WEB, mapping)


def only(name: str, pts: set[str]) -> SessionDescription:
    """A sample with its audio section reduced to ``pts`` (a browser restricted to some codecs)."""
    out = []
    for line in (SAMPLES / name).read_text().splitlines():
        if line.startswith("m=audio"):
            f = line.split()
            line = " ".join(f[:3] + [p for p in f[3:] if p in pts])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) and line.split(":")[1].split()[0] not in pts:
            continue
        out.append(line)
    return SessionDescription.parse("\r\n".join(out) + "\r\n")


XC = BreakerPolicy(CodecPolicy(("opus", "g729", "pcmu", "g722"), transcoding=True))


def test_transcoding_offers_more_and_bridges() -> None:
    offer = only("chrome_audio_offer.sdp", {"111", "110"})  # an Opus-only browser
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, XC)
    lm = legacy.media[0]
    # The coder's codecs in the policy's order (G.729 it cannot do), telephone-event at 8000 added.
    assert [(c.pt, c.name, c.clock_rate) for c in lm.codecs] == [
        (111, "opus", 48000), (110, "telephone-event", 48000), (0, "PCMU", 8000), (9, "G722", 8000),
        (101, "telephone-event", 8000)]
    assert not mapping.media[0].transcode  # the legacy peer may still take Opus
    browser, mapping = legacy_answer_to_webrtc(
        legacy_answer([("audio", 10012, ["0 PCMU/8000", "101 telephone-event/8000"])]), offer, WEB, mapping)
    assert browser.media[0].payload_types == [111, 110]  # opus and its telephone-event
    mm = mapping.media[0]
    assert mm.transcode and mm.to_legacy == {111: 0}


def test_transcoding_needs_a_codec_the_coder_knows() -> None:
    offer = only("chrome_audio_offer.sdp", {"111", "110"})
    _, mapping = webrtc_offer_to_legacy(offer, LEG, XC)
    with pytest.raises(NoCommonCodec):
        legacy_answer_to_webrtc(legacy_answer([("audio", 10012, ["18 G729/8000"])]), offer, WEB, mapping)


def test_no_transcoding_when_a_codec_is_common() -> None:
    offer = sample("chrome_audio_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, XC)
    _, mapping = legacy_answer_to_webrtc(legacy_answer([("audio", 10012, ["0 PCMU/8000"])]), offer, WEB, mapping)
    assert not mapping.media[0].transcode and mapping.media[0].to_legacy[0] == 0


def test_reinvite_with_a_common_codec_stops_transcoding() -> None:
    offer = only("chrome_audio_offer.sdp", {"111", "110"})
    _, mapping = webrtc_offer_to_legacy(offer, LEG, XC)
    answer = legacy_answer([("audio", 10012, ["0 PCMU/8000"])])
    _, mapping = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    assert mapping.media[0].transcode
    # The browser now offers PCMU too: PT 0 stays PCMU's (not Opus's, which was mapped to 0).
    reoffer = sample("chrome_audio_offer.sdp")
    legacy, mapping = webrtc_offer_to_legacy(reoffer, LEG, XC, previous=mapping)
    assert legacy.media[0].codec(0).name == "PCMU"  # type: ignore[union-attr]
    assert legacy.media[0].codec(111).name == "opus"  # type: ignore[union-attr]
    _, mapping = legacy_answer_to_webrtc(answer, reoffer, WEB, mapping)
    assert not mapping.media[0].transcode and mapping.media[0].to_legacy == {0: 0}
    # ...and starts again when a later offer has none in common.
    legacy, mapping = webrtc_offer_to_legacy(offer, LEG, XC, previous=mapping)
    _, mapping = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    assert mapping.media[0].transcode and mapping.media[0].to_legacy == {111: 0}


def test_transcoding_when_the_legacy_side_calls() -> None:
    offer = only("polycom_offer.sdp", {"0", "101"})  # PCMU only
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, XC)
    names = [c.name for c in browser_offer.media[0].codecs]
    assert names[:2] == ["PCMU", "telephone-event"] and "opus" in names and "G729" not in names
    opus = next(c.pt for c in browser_offer.media[0].codecs if c.name == "opus")
    legacy, mapping = webrtc_answer_to_legacy(chrome_answer(browser_offer, {"0": [opus]}), offer, LEG, mapping)
    assert legacy.media[0].payload_types == [0, 101]
    mm = mapping.media[0]
    assert mm.transcode and mm.to_webrtc == {0: opus}
    # Chrome taking PCMU: relayed as is.
    _, mapping = legacy_offer_to_webrtc(offer, WEB, XC)
    _, mapping = webrtc_answer_to_legacy(chrome_answer(browser_offer, {"0": [0]}), offer, LEG, mapping)
    assert not mapping.media[0].transcode


def test_codec_keys() -> None:
    media = sample("chrome_av_offer.sdp").media[1]
    keys = {pt: codec_key(c) for pt in (102, 104, 106, 108, 127) if (c := media.codec(pt)) is not None}
    assert len(set(keys.values())) == 5  # profile and packetization-mode make them distinct
    assert CodecPolicy(("h264-bp",)).allows(media.codec(106))  # type: ignore[arg-type]
    assert not CodecPolicy(("h264-bp",)).allows(media.codec(127))  # type: ignore[arg-type]
    assert CodecPolicy(("h264-mp",)).allows(media.codec(127))  # type: ignore[arg-type]


def test_policies_from_settings() -> None:
    settings = Webrtc2sipSettings(codecs=("pcmu", "opus"), enable_media_coder=True, srtp_mode="mandatory",
                                  srtp_type=("sdes",))
    policy = BreakerPolicy.from_settings(settings)
    assert policy.codecs == CodecPolicy(("pcmu", "opus"), True) and policy.srtp == "mandatory"
    assert BreakerPolicy.from_settings(Webrtc2sipSettings(srtp_type=("dtls",))).srtp == "none"
    with pytest.raises(ValueError, match="unknown codecs"):
        CodecPolicy(("mp3",))
    with pytest.raises(ValueError, match="srtp"):
        BreakerPolicy(srtp="sometimes")
    assert set(CODEC_SPECS) == set(CODECS)  # every name the config accepts has an SDP form


def test_missing_for_browser_names_what_is_missing() -> None:
    bare = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")
    missing = missing_for_browser(bare)
    assert len(missing) == 7 and missing[-1] == "a=group:BUNDLE"
    for name in ("chrome_audio_offer.sdp", "chrome_av_offer.sdp", "chrome_answer.sdp", "sipjs_offer.sdp"):
        assert missing_for_browser(sample(name)) == [], name


def test_rule_tables() -> None:
    for name in WEBRTC_ONLY:
        assert TO_LEGACY[name] is not Rule.KEEP, name
    assert TO_WEBRTC.get("crypto") is None  # not listed: dropped toward browsers


# -- SDES and IPv6 ---------------------------------------------------------------------------------

KEY = Crypto(1, "AES_CM_128_HMAC_SHA1_80", "inline:MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw")


@pytest.mark.parametrize(("srtp", "proto", "crypto"), [
    ("none", "RTP/AVP", False), ("optional", "RTP/AVP", True), ("mandatory", "RTP/SAVP", True)])
def test_sdes_offer_to_legacy(srtp: str, proto: str, crypto: bool) -> None:
    leg = dataclasses.replace(LEG, cryptos={"audio": (KEY,)})
    legacy, _ = webrtc_offer_to_legacy(sample("chrome_audio_offer.sdp"), leg, dataclasses.replace(POLICY, srtp=srtp))
    assert legacy.media[0].proto == proto
    assert (legacy.media[0].cryptos == [KEY]) is crypto


def test_sdes_mandatory_without_keys_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="SDES"):
        webrtc_offer_to_legacy(sample("chrome_audio_offer.sdp"), LEG, dataclasses.replace(POLICY, srtp="mandatory"))


def test_sdes_legacy_offer_answered_with_offered_tag() -> None:
    offer = sample("sdes_offer.sdp")
    browser_offer, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    assert "crypto" not in attr_names(browser_offer)
    chrome = chrome_answer(browser_offer, {"0": [0, 101]})
    key32 = Crypto(7, "AES_CM_128_HMAC_SHA1_32", "inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk")
    leg = dataclasses.replace(LEG, cryptos={"audio": (key32,)})
    legacy, mapping = webrtc_answer_to_legacy(chrome, offer, leg, mapping)
    assert legacy.media[0].proto == "RTP/SAVP"
    assert [(c.tag, c.suite) for c in legacy.media[0].cryptos] == [(2, "AES_CM_128_HMAC_SHA1_32")]
    peer = mapping.media[0].legacy_peer
    assert peer is not None and peer.crypto is not None and peer.crypto.tag == 2
    with pytest.raises(NoCommonCodec):  # RTP/SAVP and no key: the only stream is refused
        webrtc_answer_to_legacy(chrome, offer, LEG, mapping)


def test_ipv6_both_legs() -> None:
    offer = sample("ipv6_offer.sdp")
    web6 = dataclasses.replace(WEB, candidates=(Candidate.host("2001:db8::1", 40000),))
    browser_offer, mapping = legacy_offer_to_webrtc(offer, web6, POLICY)
    media = reparse(browser_offer).media[0]
    assert media.connection is not None and (media.connection.addrtype, media.connection.host) == (
        "IP6", "2001:db8::1")
    assert media.candidates[0].ip == "2001:db8::1"
    peer = mapping.media[0].legacy_peer
    assert peer is not None and (peer.address, peer.rtcp_address, peer.rtcp_port) == (
        "2001:db8::10", "2001:db8::10", 40001)
    leg6 = dataclasses.replace(LEG, address="2001:db8::2")
    legacy, _ = webrtc_answer_to_legacy(chrome_answer(browser_offer, {"0": [0, 101]}), offer, leg6, mapping)
    seen = reparse(legacy)
    assert seen.connection is not None and str(seen.connection) == "IN IP6 2001:db8::2"
    assert seen.origin.addrtype == "IP6"


def test_mapping_is_plain_data() -> None:
    _, mapping = webrtc_offer_to_legacy(sample("chrome_audio_offer.sdp"), LEG, POLICY)
    assert isinstance(mapping, Mapping)
    assert mapping.by_webrtc_index(0) is mapping.media[0] and mapping.by_legacy_index(0) is mapping.media[0]
    assert len(mapping.active) == 1
    assert "v=0" not in repr(mapping)  # the bodies are kept for o= versions, not for logs


# -- robustness ------------------------------------------------------------------------------------

SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.sdp"))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_any_sample_either_translates_or_raises_sdp_error(name: str) -> None:
    """Whatever a peer sends, the breaker gets SDP back or an SdpError (488) for that call only."""
    sdp = sample(name)
    for translate in (lambda: webrtc_offer_to_legacy(sdp, LEG, POLICY),
                      lambda: legacy_offer_to_webrtc(sdp, WEB, POLICY)):
        try:
            out, _ = translate()
        except SdpError:
            continue
        reparse(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLE_NAMES), st.lists(st.tuples(st.integers(0, 10**6), st.booleans()), max_size=4))
def test_fuzz_translation_only_raises_sdp_error(name: str, edits: list[tuple[int, bool]]) -> None:
    lines = (SAMPLES / name).read_text().splitlines()
    for pos, dup in edits:
        i = pos % len(lines)
        if dup:
            lines.insert(i, lines[pos % len(lines)])
        elif len(lines) > 2:
            del lines[max(i, 2)]
    try:
        sdp = SessionDescription.parse("\n".join(lines))
        offer, mapping = webrtc_offer_to_legacy(sdp, LEG, POLICY)
        legacy_answer_to_webrtc(sample("baresip_answer.sdp"), sdp, WEB, mapping)
    except SdpError:
        pass
    try:
        sdp = SessionDescription.parse("\n".join(lines))
        offer, mapping = legacy_offer_to_webrtc(sdp, WEB, POLICY)
        webrtc_answer_to_legacy(chrome_answer(offer, {"0": offer.media[0].payload_types[:1]}), sdp, LEG, mapping)
    except SdpError:
        pass


def test_mid_extension_not_answered_unless_the_gateway_implements_it() -> None:
    offer = sample("chrome_av_offer.sdp")
    _, mapping = webrtc_offer_to_legacy(offer, LEG, POLICY)
    answer = legacy_answer([("audio", 10012, ["0 PCMU/8000"]), ("video", 10014, ["96 VP8/90000"])])
    browser, final = legacy_answer_to_webrtc(answer, offer, WEB, mapping)
    assert not any(m.extmaps for m in browser.media)
    assert [m.mid_extmap for m in final.media] == [None, None]


def test_gateway_offer_carries_the_mid_extension_and_keeps_its_id() -> None:
    mid = "urn:ietf:params:rtp-hdrext:sdes:mid"
    web = dataclasses.replace(WEB, extmaps=(mid,))
    legacy_offer = legacy_answer([("audio", 10012, ["0 PCMU/8000"]), ("video", 10014, ["96 VP8/90000"])])
    browser_offer, mapping = legacy_offer_to_webrtc(legacy_offer, web, POLICY)
    # RFC 8843 §9.1: one ID for the extension in every bundled section
    assert [[(e.id, e.uri) for e in m.extmaps] for m in browser_offer.media] == [[(1, mid)], [(1, mid)]]
    text = str(chrome_answer(browser_offer, {"0": [0], "1": [96]}))
    text = text.replace("a=mid:0\r\n", f"a=mid:0\r\na=extmap:1 {mid}\r\n")
    text = text.replace("a=mid:1\r\n", f"a=mid:1\r\na=extmap:1 {mid}\r\n")
    _, final = webrtc_answer_to_legacy(SessionDescription.parse(text), legacy_offer, LEG, mapping)
    assert [m.mid_extmap for m in final.active] == [1, 1]
    # A re-offer keeps the ID the browser agreed to, whatever the numbering would give now.
    renumbered = dataclasses.replace(final, media=tuple(dataclasses.replace(m, mid_extmap=7) for m in final.media))
    again, _ = legacy_offer_to_webrtc(legacy_offer, web, POLICY, renumbered)
    assert {e.id for m in again.media for e in m.extmaps} == {7}



def test_asterisk_offer_firefox_answer() -> None:
    """No Firefox runs here (Debian's firefox-esr is not among the test command's packages): its
    answer, in the shape Firefox 128 gives (sdp_samples/firefox_answer.sdp, identifiers regenerated),
    to the gateway's offer. What differs from Chromium: the fingerprint and ice-options at session
    level, uppercase candidate transports, explicit channel counts, extmap with a direction."""
    offer = sample("asterisk_offer.sdp")
    _, mapping = legacy_offer_to_webrtc(offer, WEB, POLICY)
    answer = sample("firefox_answer.sdp")
    legacy, mapping = webrtc_answer_to_legacy(answer, offer, LEG, mapping)
    peer = mapping.webrtc_peer
    assert peer is not None and peer.setup == "active" and peer.ufrag == "9b3e1d5a"
    assert list(peer.fingerprints) == answer.fingerprints and answer.fingerprints  # from the session level
    media = answer.media[0]
    assert [(c.transport.lower(), c.port) for c in media.candidates] == [("udp", 50216), ("tcp", 9)]
    seen = reparse(legacy)
    lm = seen.media[0]
    assert (lm.proto, lm.port, lm.payload_types) == ("RTP/AVP", 30000, [9, 101])
    assert not attr_names(seen) & set(WEBRTC_ONLY)
    mm = mapping.media[0]
    assert mm.to_webrtc == {9: 9, 101: 101} and (mm.legacy_dtmf_pt, mm.webrtc_dtmf_pt) == (101, 101)
    assert mm.webrtc_ssrcs == (2846135797,)

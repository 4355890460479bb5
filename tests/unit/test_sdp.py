"""SDP model (RFC 8866): round trips of real-world samples, typed accessors, editing, errors, fuzzing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc2sip.sdp import (
    Attribute,
    Candidate,
    Codec,
    Connection,
    Crypto,
    Extmap,
    Fingerprint,
    Media,
    Msid,
    Rtcp,
    RtpMap,
    SdpError,
    SessionDescription,
    Ssrc,
    address_type,
    parse_fmtp_params,
)

SAMPLES = Path(__file__).parent / "sdp_samples"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.glob("*.sdp"))


def sample_text(name: str) -> str:
    return (SAMPLES / name).read_text()


def sample(name: str) -> SessionDescription:
    return SessionDescription.parse(sample_text(name))


# -- round trips -----------------------------------------------------------------------------------


def test_there_are_samples() -> None:
    assert len(SAMPLE_NAMES) >= 14


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_round_trip(name: str) -> None:
    text = sample_text(name)
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text.replace("\n", "\r\n")
    assert str(SessionDescription.parse(str(sdp))) == str(sdp)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_round_trip_bytes_and_crlf(name: str) -> None:
    crlf = sample_text(name).replace("\n", "\r\n")
    assert str(SessionDescription.parse(crlf.encode())) == crlf


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_typed_accessor_reads_every_sample(name: str) -> None:
    sdp = sample(name)
    _ = sdp.groups, sdp.bundle_groups, sdp.direction, sdp.ice_lite, sdp.fingerprints
    for m in sdp.media:
        _ = (m.candidates, m.fingerprints, m.ssrcs, m.msid, m.extmaps, m.cryptos, m.rtcp, m.ptime, m.maxptime,
             m.codecs, m.direction, m.ice_ufrag, m.ice_pwd, m.ice_options, m.setup, m.connection)


def test_lf_blank_lines_and_missing_t_are_tolerated() -> None:
    sdp = SessionDescription.parse("v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\n\nm=audio 4000 RTP/AVP 0\n\n")
    assert sdp.timings[0].start == 0
    assert str(sdp).endswith("t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")


def test_session_lines_in_order() -> None:
    text = (
        "v=0\r\no=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\ns=SDP Seminar\r\n"
        "i=A Seminar on the session description protocol\r\nu=http://www.example.com/seminars/sdp.pdf\r\n"
        "e=j.doe@example.com (Jane Doe)\r\np=+1 617 555-6011\r\nc=IN IP4 224.2.17.12/127\r\nb=CT:128\r\n"
        "t=2873397496 2873404696\r\nr=7d 1h 0 25h\r\nz=2882844526 -1h 2898848070 0\r\nk=prompt\r\n"
        "a=recvonly\r\nm=audio 49170 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 224.2.17.12/127\r\nb=AS:64\r\n"
        "k=prompt\r\nm=video 51372/2 RTP/AVP 99\r\na=rtpmap:99 h263-1998/90000\r\n"
    )
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text
    assert sdp.origin.version == 2890842807
    assert sdp.connection is not None and sdp.connection.host == "224.2.17.12"
    assert sdp.timings[0].repeats == ["7d 1h 0 25h"]
    assert sdp.media[0].direction == "recvonly"  # session-level default (RFC 8866 §6.7)
    assert sdp.media[1].port_count == 2
    assert sdp.media[0].bandwidths[0].value == 64


# -- accessors -------------------------------------------------------------------------------------


def test_chrome_offer_accessors() -> None:
    sdp = sample("chrome_av_offer.sdp")
    assert sdp.bundle_groups == [("0", "1")]
    audio, video = sdp.media
    assert (audio.kind, audio.mid, video.mid) == ("audio", "0", "1")
    assert audio.proto == "UDP/TLS/RTP/SAVPF" and audio.is_webrtc and audio.is_avpf
    assert audio.payload_types == [111, 63, 9, 0, 8, 13, 110, 126]
    assert audio.ice_ufrag == "b7Ke" and audio.ice_pwd == "Qz8nW3rT6yU1iO4pA7sD0fGh"
    assert audio.ice_options == ("trickle",)
    assert audio.setup == "actpass"
    assert audio.fingerprints[0].algorithm == "sha-256"
    assert audio.rtcp_mux and audio.rtcp_rsize
    assert audio.rtcp == Rtcp(9, Connection("0.0.0.0"))
    assert audio.direction == "sendrecv"
    assert audio.msid == Msid("0d5c1f3a-77e2-4b8c-a1f0-3e9d2c7b6a45", "9a3e6f12-4c5d-4e7a-b8f9-1d2c3b4a5e6f")
    assert audio.ssrc_ids == (1604733417,)
    assert audio.extmaps[0] == Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    opus = audio.codec(111)
    assert opus == Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ("transport-cc",))
    assert opus.params == {"minptime": "10", "useinbandfec": "1"}
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert video.ssrc_ids == (3352117466, 1289473011)
    assert video.fmtp(97) == "apt=96"
    assert "nack pli" in video.rtcp_fb(96)
    assert video.get_all("ssrc-group") == ["FID 3352117466 1289473011"]


def test_candidates() -> None:
    sdp = sample("sipjs_offer.sdp")
    cands = sdp.media[0].candidates
    assert [c.type for c in cands] == ["host", "host", "srflx", "srflx", "relay"]
    srflx = cands[2]
    assert srflx == Candidate("842163049", 1, "udp", 1686052607, "203.0.113.45", 61045, "srflx", "10.0.0.12", 61045,
                              (("generation", "0"),))
    assert str(srflx) == sdp.media[0].get_all("candidate")[2]
    tcp = sample("chrome_audio_offer.sdp").media[0].candidates[1]
    assert tcp.transport == "tcp" and ("tcptype", "active") in tcp.extensions
    # As it arrives from a trickle (RFC 8840 §9) or a JS candidate string, and mDNS names.
    mdns = Candidate.parse("candidate:1 1 udp 2113937151 0a2b3c4d-1111-2222-3333-444455556666.local 5000 typ host")
    assert mdns.ip.endswith(".local") and mdns.port == 5000


def test_host_candidate_priority() -> None:
    c = Candidate.host("127.0.0.1", 40000)
    assert c.priority == 2130706431  # RFC 8445 §5.1.2.1 with type 126, local 65535, component 1
    assert Candidate.host("127.0.0.1", 40000).foundation == c.foundation
    assert Candidate.parse(str(c)) == c


def test_firefox_session_level_transport() -> None:
    sdp = sample("firefox_offer.sdp")
    audio, video = sdp.media
    assert sdp.fingerprints and audio.fingerprints == sdp.fingerprints  # falls back to the session
    assert audio.ice_options == ("trickle",)
    assert video.port == 0 and video.bundle_only and not video.rejected
    assert audio.codec(9) == Codec(9, "G722", 8000, 1)
    assert audio.fmtp(101) == "0-15"
    assert video.extmaps[0].uri == "urn:ietf:params:rtp-hdrext:sdes:mid"
    ext = Extmap.parse("2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level")
    assert ext.direction == "recvonly" and str(ext) == "2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level"


def test_legacy_accessors() -> None:
    polycom = sample("polycom_offer.sdp").media[0]
    assert polycom.rtcp == Rtcp(2223, Connection("10.10.20.31"))
    assert polycom.direction == "sendrecv"  # from the session level
    assert polycom.codec(18) == Codec(18, "G729", 8000, 1, "annexb=no")
    asterisk = sample("asterisk_offer.sdp").media[0]
    assert (asterisk.ptime, asterisk.maxptime) == (20, 150)
    assert not asterisk.rtcp_mux and asterisk.rtcp is None and asterisk.mid is None
    assert asterisk.connection is not None and asterisk.connection.host == "192.0.2.10"


def test_static_payload_without_rtpmap() -> None:
    sdp = SessionDescription.parse("v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nt=0 0\r\nm=audio 1 RTP/AVP 0 8 18 96\r\n")
    assert [c.name for c in sdp.media[0].codecs] == ["PCMU", "PCMA", "G729"]  # 96 has no rtpmap
    assert sdp.media[0].codec(96) is None


def test_crypto() -> None:
    media = sample("sdes_offer.sdp").media[0]
    first = media.cryptos[0]
    assert (first.tag, first.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert first.key_params.startswith("inline:") and first.session_params is None
    assert "inline" not in repr(first)  # keys stay out of logs
    assert str(first) == media.get_all("crypto")[0]
    with_session = Crypto.parse("1 AES_CM_128_HMAC_SHA1_80 inline:abc UNENCRYPTED_SRTCP")
    assert with_session.session_params == "UNENCRYPTED_SRTCP"


def test_ipv6() -> None:
    sdp = sample("ipv6_offer.sdp")
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("2001:db8::10", "IP6")
    assert sdp.media[0].rtcp == Rtcp(40001, Connection("2001:db8::10", "IP6"))
    assert address_type("2001:db8::1") == "IP6" and address_type("192.0.2.1") == "IP4"
    assert address_type("pbx.example.com") == "IP4"


@pytest.mark.parametrize(("name", "direction", "hold"), [
    ("hold_sendonly.sdp", "sendonly", False),
    ("hold_inactive.sdp", "inactive", False),
    ("hold_c0.sdp", "sendrecv", True),
])
def test_hold_forms(name: str, direction: str, hold: bool) -> None:
    media = sample(name).media[0]
    assert media.direction == direction
    assert media.connection is not None and media.connection.is_hold is hold


def test_small_values() -> None:
    assert Fingerprint.parse("SHA-256 ab:cd").algorithm == "sha-256"
    assert Fingerprint.parse("sha-1 ab:cd").value == "AB:CD"
    assert Ssrc.parse("1 cname:x") == Ssrc(1, "cname", "x")
    assert str(Ssrc.parse("2 foo")) == "2 foo"
    assert Msid.parse("stream") == Msid("stream")
    assert str(RtpMap.parse("111 opus/48000/2")) == "111 opus/48000/2"
    assert parse_fmtp_params("0-16") == {"": "0-16"}
    assert parse_fmtp_params("profile-level-id=42e01f; Packetization-Mode=1") == {
        "profile-level-id": "42e01f", "packetization-mode": "1"}
    assert str(Attribute.parse("msid-semantic: WMS")) == "msid-semantic: WMS"
    assert Attribute.parse("rtcp-mux") == Attribute("rtcp-mux")


# -- editing ---------------------------------------------------------------------------------------


def test_editing_keeps_unknown_attributes_in_place() -> None:
    sdp = sample("baresip_offer.sdp")
    media = sdp.media[0]
    media.direction = "sendonly"
    assert [a.name for a in media.attributes][3:5] == ["sendonly", "label"]
    media.set("ptime", 30)
    assert media.ptime == 30 and media.get_all("ptime") == ["30"]
    media.remove("ssrc")
    assert media.ssrcs == []
    media.set_flag("rtcp-mux", True)
    media.set_flag("rtcp-mux", True)
    assert media.get_all("rtcp-mux") == [""]
    sdp.direction = "inactive"
    assert sdp.direction == "inactive" and media.direction == "sendonly"
    with pytest.raises(ValueError, match="direction"):
        media.direction = "sideways"


def test_build_from_scratch() -> None:
    sdp = SessionDescription()
    media = sdp.add_media(Media("audio", 5004, "RTP/AVP", []))
    media.add_codec(Codec(0, "PCMU", 8000, 1))
    media.add_codec(Codec(101, "telephone-event", 8000, 1, "0-16"))
    media.add_codec(Codec(111, "opus", 48000, 2, "minptime=10", ("nack",)))
    text = str(sdp)
    assert "m=audio 5004 RTP/AVP 0 101 111\r\n" in text
    assert "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10\r\na=rtcp-fb:111 nack\r\n" in text
    assert SessionDescription.parse(text).media[0].codecs == media.codecs
    assert sdp.copy() is not sdp and str(sdp.copy()) == text


# -- errors ----------------------------------------------------------------------------------------

GOOD = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@pytest.mark.parametrize(("text", "message"), [
    ("", "v= and o="),
    ("o=- 1 1 IN IP4 h\r\n", "start with v=0"),
    ("v=1\r\no=- 1 1 IN IP4 h\r\n", "start with v=0"),
    ("v=0\r\ns=-\r\n", "o= must follow"),
    ("v=0\r\no=- x 1 IN IP4 h\r\n", "session id"),
    ("v=0\r\no=- 1 1 IN IP4\r\n", "o= needs 6"),
    (GOOD + "x=1\r\n", "not allowed in a media"),
    (GOOD.replace("t=0 0", "x=1"), "unknown line type"),
    (GOOD + "garbage\r\n", "<type>=<value>"),
    (GOOD + "a=rtpmap:0 PCMU\r\n", "rtpmap"),
    (GOOD + "a=rtpmap:200 X/8000\r\n", "payload type"),
    (GOOD.replace("RTP/AVP 0", "RTP/AVP x"), "payload type"),
    (GOOD.replace("4000", "70000"), "media port"),
    (GOOD + "a=candidate:1 1 udp 1 1.2.3.4 99999 typ host\r\n", "candidate port"),
    (GOOD + "a=candidate:1 1 udp 1 1.2.3.4 5 host\r\n", "bad candidate"),
    (GOOD + "a=fingerprint:sha-256 nothex\r\n", "fingerprint"),
    (GOOD + "a=setup:sideways\r\n", "setup"),
    (GOOD + "a=rtcp:abc\r\n", "rtcp port"),
    (GOOD + "a=ssrc:abc cname:x\r\n", "ssrc"),
    (GOOD + "a=extmap:0 urn:x\r\n", "extmap id"),
    (GOOD + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 nokey\r\n", "crypto"),
    (GOOD + "a=mid:a b\r\n", "mid"),
    (GOOD + "a=mid\r\n", "needs a value"),
    (GOOD + "a=ice-ufrag:bad:colon\r\n", "ICE credential"),
    (GOOD + "a=ice-pwd:with space\r\n", "ICE credential"),
    (GOOD + "a=ptime:abc\r\n", "ptime"),
    (GOOD + "a=bad name:x\r\n", "attribute name"),
    (GOOD + "b=AS\r\n", "b="),
    (GOOD + "c=IN IP4\r\n", "c= needs"),
    (GOOD.replace("s=-\r\n", "s=-\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n"), "two session-level"),
    (GOOD.replace("t=0 0", "r=1 2 3"), "r= before t="),
    (GOOD + "a=x:\x00\r\n", "NUL"),
    (GOOD + "a=x:a\rb\r\n", "CR"),
])
def test_errors_are_sdp_errors(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=message) as info:
        SessionDescription.parse(text)
    assert info.value.status == 488
    assert "\r" not in info.value.reason and "\n" not in info.value.reason


def test_error_carries_line_number() -> None:
    with pytest.raises(SdpError) as info:
        SessionDescription.parse(GOOD + "a=setup:nope\r\n")
    assert info.value.line == 6 and str(info.value).startswith("line 6:")


def test_size_limit_and_encoding() -> None:
    with pytest.raises(SdpError, match="larger"):
        SessionDescription.parse(GOOD + "a=x:" + "y" * 70000 + "\r\n")
    with pytest.raises(SdpError, match="UTF-8"):
        SessionDescription.parse(GOOD.encode() + b"a=x:\xff\r\n")
    with pytest.raises(SdpError, match="m= sections"):
        SessionDescription.parse(GOOD + "m=audio 1 RTP/AVP 0\r\n" * 64)


# -- fuzzing ---------------------------------------------------------------------------------------

SDP_ALPHABET = st.sampled_from([
    *"vosicbtrzkam= :/-.0123456789\r\nINIP4\x00\xffé*;,",
    "a=rtpmap:", "a=candidate:", "a=fingerprint:", "a=ssrc:", "a=extmap:", "a=crypto:", "a=rtcp:",
    "a=group:BUNDLE", "a=mid:", "a=setup:", "m=audio ", "RTP/AVP", "c=IN IP4 ", "typ host",
])


def _parse_or_error(data: str | bytes) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except SdpError:
        return
    # Whatever parses must serialise, parse back to the same text, and answer every accessor.
    text = str(sdp)
    assert str(SessionDescription.parse(text)) == text
    for m in sdp.media:
        _ = (m.codecs, m.candidates, m.fingerprints, m.ssrcs, m.extmaps, m.cryptos, m.rtcp, m.msid, m.ptime,
             m.direction, m.ice_options, sdp.groups)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SDP_ALPHABET, max_size=80).map("".join))
def test_fuzz_random_text(text: str) -> None:
    _parse_or_error(text)
    _parse_or_error("v=0\r\no=- 1 1 IN IP4 h\r\n" + text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLE_NAMES),
    st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["drop", "dup", "cut", "byte"]), st.binary(max_size=3)),
             max_size=6),
)
def test_fuzz_mutated_samples(name: str, edits: list[tuple[int, str, bytes]]) -> None:
    lines = sample_text(name).encode().split(b"\n")
    for pos, op, junk in edits:
        i = pos % len(lines)
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][: pos % (len(lines[i]) + 1)]
        else:
            at = pos % (len(lines[i]) + 1)
            lines[i] = lines[i][:at] + junk + lines[i][at:]
        if not lines:
            break
    _parse_or_error(b"\n".join(lines))

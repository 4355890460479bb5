"""Issue 13 item 2: a short run of every fuzz target (tests/fuzz, docs/FUZZING.md), and one regression
test for each bug the fuzzing found. The long runs are scripts/fuzz.py."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from websockets.http11 import Request as WsRequest
from websockets.server import ServerProtocol

from fuzz.runner import run_target
from fuzz.seeds import seeds
from fuzz.targets import TARGETS, _Conn, _run_coroutine, _transport_layer, media_session
from rtc2sip.config import ConfigError, read_config_xml_text, read_options_text
from rtc2sip.media.rtcp import ReceiverReport, RtcpParseError, parse_compound
from rtc2sip.sdp import SessionDescription, webrtc_offer_to_legacy
from rtc2sip.sip import StreamFramer
from rtc2sip.transport.stun_keepalive import binding_response

# Inputs per target in the test command: a few thousand each, the whole file well under a minute.
SHORT_RUN = {"sdp": 1500, "sip_stream": 1500, "websocket": 1500, "sip_datagram": 2000, "dtls": 2000}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_run(name: str) -> None:
    result = run_target(name, SHORT_RUN.get(name, 3000), seed=13, time_limit=2.0)
    crashes = "\n".join(f"{c.count} x {c.kind}: {c.message} (input {c.data[:80]!r})\n{c.trace}"
                        for c in result.crashes.values())
    assert not result.crashes, crashes
    assert not result.hangs, [h[:80] for h in result.hangs]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_real_material(name: str) -> None:
    """Every target has seeds, and none of them is refused at the first check (they are what the
    mutations start from)."""
    corpus = seeds(name)
    assert len(corpus) >= 3 and all(corpus)


# ---- regressions: one per bug found ---------------------------------------------------------------------


def _stun(attr_type: int, value: bytes) -> bytes:
    body = struct.pack("!HH", attr_type, len(value)) + value + b"\x00" * (-len(value) & 3)
    return struct.pack("!HHI12s", 0x0001, len(body), 0x2112A442, bytes(12)) + body


@pytest.mark.parametrize("attr_type", [0x0024, 0x8029, 0x802A])  # PRIORITY, ICE-CONTROLLED, ICE-CONTROLLING
def test_stun_short_attribute_is_dropped(attr_type: int) -> None:
    """aioice unpacks fixed-size attributes with struct: a short one raised struct.error out of
    UdpEndpoint.datagram_received (the SIP port) and logged a traceback per datagram in the ICE agent."""
    data = _stun(attr_type, b"\x01\x02")
    assert binding_response(data, "192.0.2.7", 5062) is None
    session, _, _, _ = media_session()
    session.ice.datagram(data, ("192.0.2.7", 5062))  # dropped, nothing raised


def _upgrade(*headers: tuple[str, str]) -> Any:
    protocol = ServerProtocol()
    lines = ["GET / HTTP/1.1", "Host: gw.example.org", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    lines += [f"{k}: {v}" for k, v in headers]
    protocol.receive_data(("\r\n".join(lines) + "\r\n\r\n").encode())
    request = next(e for e in protocol.events_received() if isinstance(e, WsRequest))
    return _run_coroutine(_transport_layer()._ws_process_request(_Conn(protocol), request))  # type: ignore[arg-type]


def test_websocket_repeated_origin_is_400() -> None:
    """headers.get() raised MultipleValuesError, which websockets answers 500."""
    response = _upgrade(("Origin", "https://gw.example.org"), ("Origin", "https://evil.example"),
                        ("Sec-WebSocket-Protocol", "sip"))
    assert response.status_code == 400


def test_websocket_repeated_subprotocol_header_is_one_list() -> None:
    """RFC 6455 §11.3.4: two Sec-WebSocket-Protocol headers are one list (was a 500)."""
    ok = _upgrade(("Origin", "https://gw.example.org"), ("Sec-WebSocket-Protocol", "foo"),
                  ("Sec-WebSocket-Protocol", "sip"))
    assert ok is None  # accepted: websockets completes the handshake
    refused = _upgrade(("Origin", "https://gw.example.org"), ("Sec-WebSocket-Protocol", "foo"),
                       ("Sec-WebSocket-Protocol", "bar"))
    assert refused.status_code == 400


@pytest.mark.parametrize("declaration", [b'encoding="x-unknown"', b'encoding="utf-16"', b'encoding="shift_jis"'])
def test_config_xml_odd_encoding_is_a_config_error(declaration: bytes) -> None:
    """An encoding Python does not know raised LookupError; one expat cannot read, ValueError."""
    with pytest.raises(ConfigError, match="malformed XML"):
        read_config_xml_text(b'<?xml version="1.0" ' + declaration + b"?><config><codecs>pcmu</codecs></config>")


def test_toml_nested_too_deeply_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_options_text("x = " + "[" * 5000 + "]" * 5000)


@pytest.mark.parametrize("origin", ["http://[::1", "https://[", "http://[::1]:99999"])
def test_ws_origin_with_a_bad_ipv6_literal_is_a_config_error(origin: str) -> None:
    """urlsplit raises ValueError on an unclosed bracket, before the port check that was guarded."""
    with pytest.raises(ConfigError, match="ws_origins"):
        read_options_text(f'[limits]\nws_origins = ["{origin}"]\n')


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_rtcp_padding_count_must_be_whole_words(count: int) -> None:
    """RFC 3550 §6.4.1: the padding count is a multiple of four."""
    padded = bytearray(ReceiverReport(5).serialize())
    padded[0] |= 0x20
    padded[3] += 1
    padded += bytes(3) + bytes([count])
    with pytest.raises(RtcpParseError, match="padding"):
        parse_compound(bytes(padded))


def test_reoffer_changing_a_sections_kind() -> None:
    """A browser re-offer whose m= section (same MID) changed kind kept the old kind's legacy slot
    and looked up a legacy port for the new kind: KeyError."""
    from fuzz.targets import _CHROME_OFFER, _LEG, _POLICY

    offer = SessionDescription.parse(_CHROME_OFFER)
    _, mapping = webrtc_offer_to_legacy(offer, _LEG, _POLICY)
    for new_kind in ("aufio", "text"):
        changed = SessionDescription.parse(_CHROME_OFFER.replace("m=audio", f"m={new_kind}", 1))
        legacy, remapped = webrtc_offer_to_legacy(changed, _LEG, _POLICY, previous=mapping)
        assert remapped.media[0].rejected and remapped.media[0].legacy_index is None
        assert [m.kind for m in legacy.media] == ["audio", "video"] and legacy.media[0].port == 0
    # audio -> video in MID 0: a new legacy section, the old audio slot rejected
    swapped = SessionDescription.parse(_CHROME_OFFER.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126",
                                                             "m=video 9 UDP/TLS/RTP/SAVPF 96", 1))
    legacy, _ = webrtc_offer_to_legacy(swapped, _LEG, _POLICY, previous=mapping)
    assert legacy.media[0].kind == "audio" and legacy.media[0].port == 0


def test_codecs_of_a_huge_section_are_linear() -> None:
    """Media.codecs looked every payload type up in every a= line: a 64 KB section of repeated
    formats and a=rtcp-fb lines took about a minute of the event loop."""
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    m_line = "m=audio 9 RTP/AVP " + " ".join(["0"] * 12000) + "\r\n"
    body = head + m_line + "a=rtcp-fb:* n\r\n" * ((65000 - len(head) - len(m_line)) // 15)
    media = SessionDescription.parse(body).media[0]
    t0 = time.perf_counter()
    codecs = media.codecs
    assert time.perf_counter() - t0 < 1.0
    assert [c.pt for c in codecs] == [0] and len(codecs[0].rtcp_fb) > 1000


def test_codecs_same_as_per_payload_type_lookups() -> None:
    """The one-pass Media.codecs gives what codec() gives for each payload type, on the real samples."""
    for corpus in seeds("sdp"):
        for media in SessionDescription.parse(corpus).media:
            pts = list(dict.fromkeys(media.payload_types))
            assert media.codecs == [c for pt in pts if (c := media.codec(pt)) is not None]


def test_stream_framer_reads_a_header_block_once() -> None:
    """A body arriving one octet per segment had the header block searched for Content-Length again
    for each octet: quadratic in the message size."""
    calls = 0
    pattern = StreamFramer._CL

    class Counting:
        def findall(self, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            return pattern.findall(*args)

    framer = StreamFramer()
    framer._CL = Counting()  # type: ignore[assignment]
    body = b"x" * 3000
    message = (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    out = []
    for i in range(len(message)):
        out += framer.feed(message[i : i + 1])
    assert out == [message] and calls == 1


def test_toml_integer_too_long_is_a_config_error() -> None:
    """tomllib raises a plain ValueError (not TOMLDecodeError) for an integer of more than 4300 digits."""
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_options_text("[limits]\nmax_message_size = " + "9" * 5000 + "\n")


@pytest.mark.parametrize("route", ["Route: ", "Route: ,", "Route: , ,"])
def test_empty_route_header_is_no_route(route: str) -> None:
    """pop_own_routes read values("Route")[0] after get("Route") saw a header: IndexError on an empty one,
    logged as an internal error and the request dropped unanswered."""
    from rtc2sip.proxy import core
    from rtc2sip.sip import parse_message

    req = parse_message((
        "OPTIONS sip:bob@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:bob@b>\r\nCall-ID: 1@x\r\nCSeq: 1 OPTIONS\r\n"
        f"{route}\r\nContent-Length: 0\r\n\r\n").encode())
    assert core.pop_own_routes(req, lambda host, port: True).popped == 0

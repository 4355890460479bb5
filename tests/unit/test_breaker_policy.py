"""When the RTCWeb Breaker takes a call (issue 3 item 1): the decision table and the client's parameters."""

from __future__ import annotations

import pytest

from rtc2sip.breaker.policy import (
    TABLE,
    ClientParams,
    Facts,
    Mode,
    client_params,
    decide,
    offer_is_webrtc,
    strip_client_params,
)
from rtc2sip.sip import Request, SipUri, parse_uri

BROWSER = (True, False)  # source WebRTC, target legacy
PHONE_TO_BROWSER = (False, True)
BOTH_WEBRTC = (True, True)
BOTH_LEGACY = (False, False)

# (mode, asked, (source_webrtc, target_webrtc)) -> break?
CASES = [
    # auto: a crossing call is broken unless the client says no; same-profile calls never
    (Mode.AUTO, None, BROWSER, True),
    (Mode.AUTO, None, PHONE_TO_BROWSER, True),
    (Mode.AUTO, True, BROWSER, True),
    (Mode.AUTO, False, BROWSER, False),
    (Mode.AUTO, None, BOTH_WEBRTC, False),
    (Mode.AUTO, True, BOTH_WEBRTC, False),
    (Mode.AUTO, None, BOTH_LEGACY, False),
    # client: webrtc2sip's rule
    (Mode.CLIENT, True, BROWSER, True),
    (Mode.CLIENT, None, BROWSER, False),
    (Mode.CLIENT, False, BROWSER, False),
    (Mode.CLIENT, True, PHONE_TO_BROWSER, True),
    # always: the operator wins over the client
    (Mode.ALWAYS, False, BROWSER, True),
    (Mode.ALWAYS, None, PHONE_TO_BROWSER, True),
    (Mode.ALWAYS, True, BOTH_LEGACY, False),
    # never
    (Mode.NEVER, True, BROWSER, False),
    (Mode.NEVER, None, PHONE_TO_BROWSER, False),
]


@pytest.mark.parametrize(("mode", "asked", "ends", "expected"), CASES)
def test_decision_table(mode: Mode, asked: bool | None, ends: tuple[bool, bool], expected: bool) -> None:
    d = decide(mode, Facts(asked, *ends))
    assert d.breaks is expected, d.reason
    assert d.reason


def test_table_is_complete() -> None:
    assert set(TABLE) == {(m, a) for m in Mode for a in (True, False, None)}


def test_mode_from_config_string() -> None:
    assert decide("auto", Facts(None, True, False)).breaks
    with pytest.raises(ValueError):
        decide("sometimes", Facts(None, True, False))


def invite(uri: str, contact: str | None) -> Request:
    headers = [["Via", "SIP/2.0/WS x.invalid;branch=z9hG4bK1"], ["From", "<sip:alice@example.org>;tag=a"],
               ["To", "<sip:bob@example.org>"], ["Call-ID", "c1"], ["CSeq", "1 INVITE"]]
    if contact is not None:
        headers.append(["Contact", contact])
    return Request("INVITE", uri, headers)


@pytest.mark.parametrize(
    ("uri", "contact", "expected"),
    [
        ("sip:bob@example.org", "<sip:a@x.invalid;transport=ws>", ClientParams()),
        # sipML5 puts them in the Contact URI ...
        ("sip:bob@example.org", "<sip:a@x.invalid;rtcweb-breaker=yes;transport=ws;impi=alice;ha1=abc>",
         ClientParams(True, "alice", "abc")),
        # ... or as header parameters (quoted too)
        ("sip:bob@example.org", '<sip:a@x.invalid;transport=ws>;rtcweb-breaker=yes;impi="alice";ha1="abc"',
         ClientParams(True, "alice", "abc")),
        ("sip:bob@example.org;rtcweb-breaker=yes", None, ClientParams(True)),
        # "no" anywhere forces the proxy path
        ("sip:bob@example.org;rtcweb-breaker=yes", "<sip:a@x.invalid;rtcweb-breaker=no>", ClientParams(False)),
        ("sip:bob@example.org;rtcweb-breaker=no", "<sip:a@x.invalid;rtcweb-breaker=yes>", ClientParams(False)),
        ("sip:bob@example.org", "<sip:a@x.invalid;rtcweb-breaker=maybe>", ClientParams()),
    ],
)
def test_client_params(uri: str, contact: str | None, expected: ClientParams) -> None:
    assert client_params(invite(uri, contact)) == expected


def test_ha1_never_in_repr() -> None:
    p = ClientParams(True, "alice", "0123456789abcdef0123456789abcdef")
    assert "0123456789abcdef" not in repr(p)
    assert "***" in repr(p)


def test_strip_client_params() -> None:
    uri = parse_uri("sip:bob@example.org;rtcweb-breaker=yes;impi=alice;HA1=abc;transport=udp")
    assert isinstance(uri, SipUri)
    out = strip_client_params(uri)
    assert str(out) == "sip:bob@example.org;transport=udp"
    assert "ha1" in str(uri).lower()  # the original is untouched


@pytest.mark.parametrize(
    ("body", "ctype", "expected"),
    [
        (b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "application/sdp", True),
        (b"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVP 0\r\n", None, True),
        (b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "application/sdp", False),
        (b"", "application/sdp", False),
        (b"UDP/TLS/RTP/SAVPF", "text/plain", False),
    ],
)
def test_offer_is_webrtc(body: bytes, ctype: str | None, expected: bool) -> None:
    assert offer_is_webrtc(body, ctype) is expected

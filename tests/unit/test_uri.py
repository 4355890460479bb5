"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966): parsing, serialising, comparing."""

from __future__ import annotations

import pytest

from rtc2sip.sip import (
    SipParseError,
    SipUri,
    TelUri,
    del_param,
    get_param,
    parse_sip_uri,
    parse_uri,
    set_param,
    valid_host,
)
from rtc2sip.sip.uri import AbsoluteUri, has_param, normalize_escapes, parse_params, unescape, uri_equal


def sip(text: str) -> SipUri:
    u = parse_uri(text)
    assert isinstance(u, SipUri)
    return u


# ---- parsing -----------------------------------------------------------------------------------------


def test_full_sip_uri() -> None:
    u = sip("sip:alice:secret@atlanta.example.com:5061;transport=tls;lr;maddr=239.255.255.1?subject=hi&x=")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sip", "alice", "secret", "atlanta.example.com", 5061)
    assert u.params == [("transport", "tls"), ("lr", None), ("maddr", "239.255.255.1")]
    assert u.headers == "subject=hi&x="
    assert u.header_fields() == [("subject", "hi"), ("x", "")]
    assert u.transport == "tls" and u.param("LR") == "" and u.param("ttl") is None
    assert str(u) == "sip:alice:secret@atlanta.example.com:5061;transport=tls;lr;maddr=239.255.255.1?subject=hi&x="


@pytest.mark.parametrize(
    "text",
    [
        "sip:atlanta.example.com",
        "sips:bob@biloxi.example.com",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:192.0.2.4",
        "sip:alice@192.0.2.4:5060",
        "sip:[2001:db8::10]",
        "sip:[2001:db8::10]:5070;transport=tcp",
        "sip:bob@[::ffff:192.0.2.1]",
        "sip:user;par=u%40example.net@example.com",
        "sip:%61lice@atlanta.com;transport=TCP",
        "sip:alice@example.com.",
        "sip:df7jal23ls0d.invalid;transport=ws",
        "sip:a@my_host.local",
        "sip:1and1.example",
    ],
)
def test_valid_uris_round_trip(text: str) -> None:
    u = parse_uri(text)
    assert str(u) == text


def test_scheme_is_case_insensitive() -> None:
    u = sip("SIPS:Bob@Biloxi.Example.COM")
    assert u.scheme == "sips" and u.user == "Bob" and u.host == "Biloxi.Example.COM"
    assert u.host_lower == "biloxi.example.com"


def test_ipv6_references() -> None:
    u = sip("sip:[2001:DB8::1]:5060;maddr=[2001:db8::2]")
    assert u.host == "[2001:DB8::1]" and u.port == 5060 and u.param("maddr") == "[2001:db8::2]"
    for bad in ("sip:[2001:db8::1", "sip:[2001:db8::g]", "sip:[1:2:3:4:5:6:7:8:9]", "sip:[::1]x", "sip:[]"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("example.com", True),
        ("a", True),
        ("a1", True),
        ("x-y.example", True),
        ("com.", True),
        ("192.0.2.255", True),
        ("[::1]", True),
        ("-a.com", False),
        ("a-.com", False),
        ("a..b", False),
        ("a.1com", False),
        ("256.0.0.1", False),
        ("1.2.3", False),
        ("[::1", False),
        ("", False),
        ("ex ample.com", False),
    ],
)
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        "sip:@example.com",
        "sip:user@",
        "sip:user@example.com:",
        "sip:user@example.com:65536",
        "sip:user@example.com:5o60",
        "sip:user@example.com;",
        "sip:user@example.com;;lr",
        "sip:user@example.com;=x",
        "sip:user@example.com;a=",
        "sip:user@example.com?",
        "sip:user@example.com?a",
        "sip:us er@example.com",
        "sip:user@exa mple.com",
        "sip:user@example.com; lr",
        "sip:user@%65xample.com",
        "sip:us%zzer@example.com",
        "sip:user@example.com;a=%z1",
        "sip:a:b:c@example.com",
        "<sip:user@example.com>",
        "1sip:user@example.com",
        "http://example.com/a b",
        "tel:",
        "tel:+1 212",
        "tel:+1212;;a",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_error_status_can_be_chosen() -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri("sip:", status=416)
    assert info.value.status == 416
    with pytest.raises(SipParseError) as info:
        parse_sip_uri("tel:+12125551212")
    assert info.value.status == 416
    assert isinstance(parse_sip_uri("sips:a@b.example"), SipUri)


def test_tel_uris() -> None:
    u = parse_uri("tel:+1-201-555-0123;ext=1234;isub=5")
    assert isinstance(u, TelUri) and u.number == "+1-201-555-0123"
    assert u.param("EXT") == "1234" and str(u) == "tel:+1-201-555-0123;ext=1234;isub=5"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri) and local.param("phone-context") == "example.com"
    # RFC 3966 §4: visual separators and parameter order do not matter
    assert uri_equal(parse_uri("tel:+1-201-555-0123;a=1;b=2"), parse_uri("tel:+1(201)5550123;B=2;a=1"))
    assert not uri_equal(parse_uri("tel:+12015550123"), parse_uri("tel:+12015550124"))


def test_other_schemes_are_opaque() -> None:
    for text in ("http://www.example.com", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "name:John_Smith"):
        u = parse_uri(text)
        assert isinstance(u, AbsoluteUri) and str(u) == text
    u = parse_uri("soap.beep://192.0.2.103:3002")
    assert isinstance(u, AbsoluteUri) and u.scheme == "soap.beep"


def test_params_helpers_are_case_insensitive() -> None:
    params = parse_params("Transport=TCP;lr;ob")
    assert get_param(params, "transport") == "TCP" and has_param(params, "LR")
    set_param(params, "TRANSPORT", "ws")
    assert params[0] == ("Transport", "ws")
    set_param(params, "expires", "60")
    del_param(params, "Ob")
    assert params == [("Transport", "ws"), ("lr", None), ("expires", "60")]


def test_copy_is_independent() -> None:
    u = sip("sip:a@b.example;lr")
    c = u.copy()
    c.params.append(("x", None))
    assert u.params == [("lr", None)]


# ---- escapes -----------------------------------------------------------------------------------------


def test_unescape() -> None:
    assert unescape("I%20have%20spaces") == "I have spaces"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("caf%C3%A9") == "café"
    # octets that are not UTF-8 stay distinct rather than collapsing into U+FFFD
    assert unescape("%FE") != unescape("%FF")
    assert unescape("100%") == "100%"


def test_normalize_escapes_keeps_reserved_characters_escaped() -> None:
    assert normalize_escapes("%61lice") == "alice"
    assert normalize_escapes("a%3bb") == "a%3Bb"  # ';' is reserved: the escape is significant
    assert normalize_escapes("%25%00") == "%25%00"


# ---- §19.1.4 comparison ------------------------------------------------------------------------------

EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]
UNEQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # different usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # can resolve to different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # different port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # different header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that is what the name resolves to
    # beyond the RFC's list, from the rules of the same section
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6"),  # in both: must match
    ("sip:carol@chicago.com;user=phone", "sip:carol@chicago.com"),  # user, ttl, method, maddr: never ignored
    ("sip:carol@chicago.com;maddr=192.0.2.1", "sip:carol@chicago.com"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:a%3Bb@atlanta.com", "sip:a;b@atlanta.com"),  # an escaped reserved character is not the character
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert uri_equal(ua, ub) and uri_equal(ub, ua)
    assert ua.key() == ub.key()  # equal URIs always share a key, so key() can index a table


@pytest.mark.parametrize(("a", "b"), UNEQUAL)
def test_rfc3261_unequal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert not uri_equal(ua, ub) and not uri_equal(ub, ua)


def test_uri_types_never_match_each_other() -> None:
    assert not uri_equal(parse_uri("sip:+1234@example.com"), parse_uri("tel:+1234"))
    assert not uri_equal(parse_uri("http://example.com"), parse_uri("sip:example.com"))


def test_aor_is_the_registrar_key() -> None:
    """§10.3 step 5: URI parameters dropped, user unescaped, host case-insensitive."""
    assert sip("sips:%62ob@Biloxi.Example.COM:5061;transport=tls").aor() == "sip:bob@biloxi.example.com"
    assert sip("sip:biloxi.example.com").aor() == "sip:@biloxi.example.com"

"""RFC 4475 (SIP torture test messages) against the parser, plus a fuzzer seeded with them.

Every message of RFC 4475 §3 is in ``corpus/rfc4475/`` (regenerate with ``generate.py`` there).
For each one the table below states what the RFC says a proxy like ours must do and which part of
the parser's answer proves it: the message parses (and survives a serialise/re-parse round trip),
or :func:`parse_message` raises :class:`MessageError` with the status to answer. Where the answer
needs more than the parser (an unknown Proxy-Require, Max-Forwards 0, an unknown URI scheme, a
broadcast Via, what a registrar or UAS does), the parser's part is "parses fine" and the comment
names the layer that answers; :func:`check_request` covers the proxy's stateless part.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtc2sip.sip import (
    MessageError,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from rtc2sip.sip.headers import split_comma
from rtc2sip.sip.parser import check_request, check_response
from rtc2sip.sip.uri import AbsoluteUri, unescape

CORPUS = Path(__file__).parent / "corpus" / "rfc4475"
SUPPORTED = {"100rel", "gruu", "outbound", "path", "timer"}


@dataclass(frozen=True)
class Case:
    file: str
    section: str
    status: int | None  # None: parses; otherwise the MessageError status
    reason: str = ""  # a word the reason phrase must contain, so that it says what is wrong
    layer: str = ""  # who acts beyond parsing, per the RFC


CASES = [
    # ---- 3.1.1 valid messages: every element must accept them ----
    Case("wsinv.dat", "3.1.1.1", None),
    Case("intmeth.dat", "3.1.1.2", None, layer="proxy: forward or 404 per Request-URI; UAS: 501"),
    Case("esc01.dat", "3.1.1.3", None),
    Case("escnull.dat", "3.1.1.4", None, layer="registrar: two distinct contacts"),
    Case("esc02.dat", "3.1.1.5", None, layer="proxy: forward unknown method; UAS: 501"),
    Case("lwsdisp.dat", "3.1.1.6", None),
    Case("longreq.dat", "3.1.1.7", None),
    Case("dblreq.dat", "3.1.1.8", None),
    Case("semiuri.dat", "3.1.1.9", None),
    Case("transports.dat", "3.1.1.10", None),
    Case("mpart01.dat", "3.1.1.11", None),
    Case("unreason.dat", "3.1.1.12", None),
    Case("noreason.dat", "3.1.1.13", None),
    # ---- 3.1.2 invalid messages ----
    Case("badinv01.dat", "3.1.2.1", 400, "Via"),
    Case("clerr.dat", "3.1.2.2", 400, "Content-Length", "stream: the framer waits for the body"),
    Case("ncl.dat", "3.1.2.3", 400, "Content-Length"),
    Case("scalar02.dat", "3.1.2.4", 400, "CSeq"),
    Case("scalarlg.dat", "3.1.2.5", 400, "CSeq", "a response: dropped"),
    Case("quotbal.dat", "3.1.2.6", 400, "quoted"),
    Case("ltgtruri.dat", "3.1.2.7", 400, "Request-URI"),
    Case("lwsruri.dat", "3.1.2.8", 400, "Request-URI"),
    Case("lwsstart.dat", "3.1.2.9", 400, "Request-Line"),
    Case("trws.dat", "3.1.2.10", 400, "Request-Line"),
    Case("escruri.dat", "3.1.2.11", 400, "Request-URI"),
    # the RFC: reject only if the Date matters to the element; a proxy never reads it
    Case("baddate.dat", "3.1.2.12", None, layer="an endpoint that uses Date may reject it"),
    Case("regbadct.dat", "3.1.2.13", 400, "Contact"),
    Case("badaspec.dat", "3.1.2.14", 400, "To"),
    Case("baddn.dat", "3.1.2.15", 400, "From"),
    Case("badvers.dat", "3.1.2.16", 505, "Version"),
    Case("mismatch01.dat", "3.1.2.17", 400, "CSeq"),
    Case("mismatch02.dat", "3.1.2.18", 501, "CSeq"),
    Case("bigcode.dat", "3.1.2.19", 400, "status", "a response: dropped"),
    # ---- 3.2 transaction layer ----
    Case("badbranch.dat", "3.2.1", None, layer="transaction layer: RFC 2543 matching or 400"),
    # ---- 3.3 application layer ----
    Case("insuf.dat", "3.3.1", 400, "Missing", "no From/To/Call-ID to build a response from: dropped"),
    Case("unkscm.dat", "3.3.2", None, layer="check_request: 416"),
    Case("novelsc.dat", "3.3.3", None, layer="check_request: 416 (we never route soap.beep)"),
    Case("unksm2.dat", "3.3.4", None, layer="registrar: 400, the AOR must be sip/sips"),
    Case("bext01.dat", "3.3.5", None, layer="check_request: 420 for Proxy-Require; UAS: 420 for Require"),
    Case("invut.dat", "3.3.6", None, layer="proxy forwards; UAS: 415"),
    Case("regaut01.dat", "3.3.7", None, layer="proxy forwards Authorization unchanged; registrar: 401"),
    Case("multi01.dat", "3.3.8", 400, "Multiple"),
    Case("mcl01.dat", "3.3.9", 400, "Content-Length"),
    Case("bcast.dat", "3.3.10", None, layer="proxy response path drops a broadcast Via"),
    Case("zeromf.dat", "3.3.11", None, layer="check_request: OPTIONS answered as UAS, else 483"),
    Case("cparam01.dat", "3.3.12", None, layer="registrar: unknownparam is a contact-param"),
    Case("cparam02.dat", "3.3.13", None, layer="registrar: unknownparam is a URI param"),
    Case("regescrt.dat", "3.3.14", None, layer="registrar stores the escaped header"),
    Case("sdp01.dat", "3.3.15", None, layer="proxy forwards; UAS: 415 with Accept"),
    # ---- 3.4 backward compatibility ----
    Case("inv2543.dat", "3.4.1", None, layer="a datagram: the body runs to the end of the packet"),
]
BY_FILE = {c.file: c for c in CASES}


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def parse(name: str) -> Request | Response:
    return parse_message(load(name))


def req(name: str) -> Request:
    m = parse(name)
    assert isinstance(m, Request)
    return m


def shape(m: Request | Response) -> tuple[str, list[tuple[str, str]], bytes]:
    """What a round trip must keep: start line, headers (Content-Length is recomputed), body."""
    return m.start_line(), [(h[0], h[1]) for h in m.headers if h[0] != "Content-Length"], m.body


def assert_round_trip(m: Request | Response) -> None:
    again = parse_message(m.to_bytes())
    assert type(again) is type(m)
    assert shape(again) == shape(m)


def test_corpus_is_complete() -> None:
    """All 49 messages of RFC 4475 §3, one file each, and nothing else."""
    assert {p.name for p in CORPUS.glob("*.dat")} == set(BY_FILE)
    assert len(CASES) == 49


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}-{c.file[:-4]}")
def test_rfc4475_verdict(case: Case) -> None:
    data = load(case.file)
    if case.status is None:
        m = parse_message(data)
        assert_round_trip(m)
        return
    with pytest.raises(MessageError) as info:
        parse_message(data)
    err = info.value
    assert err.status == case.status
    assert case.reason.lower() in err.reason.lower()
    assert "\r" not in err.reason and "\n" not in err.reason  # it goes into a status line
    if data.startswith(b"SIP/"):
        assert not err.answerable  # a bad response is never answered, only dropped (§16.7, §18.1.2)
    elif case.file != "insuf.dat":
        assert err.answerable
        assert isinstance(err.message, Request)


# ---- 3.1.1 valid messages, read closely -------------------------------------------------------------


def test_wsinv_short_tortuous_invite() -> None:
    m = req("wsinv.dat")
    assert m.method == "INVITE" and isinstance(m.uri, SipUri) and m.uri.params == [("unknownparam", None)]
    assert m.to.tag == "1918181833n" and m.to.display is None
    assert m.from_.tag == "98asjd8"
    assert m.from_.display == '"J Rosenberg \\\\\\""' and m.from_.display_name == 'J Rosenberg \\"'
    assert m.get("Max-Forwards") == "0068"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.get("Subject") == ""
    assert m.get("NewFangledHeader") == "newfangled value continued newfangled value"
    # unknown header: never split on its commas or semicolons, forwarded as is
    assert m.values("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    (route,) = m.addresses("Route")
    assert isinstance(route.uri, SipUri)
    assert route.uri.params == [("lr", None), ("unknownwith", "value"), ("unknown-no-value", None)]
    (contact,) = m.addresses("Contact")
    assert contact.display == '"Quoted string \\"\\""'
    assert contact.params == [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")]
    assert m.content_type == "application/sdp" and len(m.body) == 150


def test_intmeth_wide_range_of_characters() -> None:
    m = req("intmeth.dat")
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = m.uri
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.params == []
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"


def test_esc01_escapes_are_decoded_once() -> None:
    m = req("esc01.dat")
    uri = m.uri
    assert isinstance(uri, SipUri) and unescape(uri.user or "") == "sips:user@example.com"
    assert m.to.uri.key() == parse_uri("sip:user@example.com").key()
    to_uri = m.from_.uri
    assert isinstance(to_uri, SipUri) and unescape(to_uri.user or "") == "I have spaces"
    (contact,) = m.addresses("Contact")
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == [("%6C%72", None), ("n%61me", "v%61lue%25%34%31")]
    # "value%41", not "valueA": unescaping is never recursive (RFC 3986)
    assert unescape("v%61lue%25%34%31") == "value%41"


def test_escnull_keeps_nuls_and_two_contacts() -> None:
    m = req("escnull.dat")
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and to_uri.aor() == "sip:null-\x00-null@example.com"
    a, b = m.addresses("Contact")
    assert isinstance(a.uri, SipUri) and isinstance(b.uri, SipUri)
    assert unescape(a.uri.user or "") == "\x00" and unescape(b.uri.user or "") == "\x00\x00"
    assert a.uri.key() != b.uri.key()


def test_esc02_percent_is_not_an_escape_everywhere() -> None:
    m = req("esc02.dat")
    assert m.method == "RE%47IST%45R" and m.method != "REGISTER"
    assert m.to.display == '"%Z%45"'
    assert [str(c.uri) for c in m.addresses("Contact")] == [
        "sip:alias1@host1.example.com",
        "sip:alias3@host3.example.com",
    ]
    assert m.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_display_name_without_space() -> None:
    assert req("lwsdisp.dat").from_.display == "caller"


def test_longreq_long_values() -> None:
    m = req("longreq.dat")
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:3]] == ["sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert m.vias[-1].param("received") == "192.0.2.5"
    assert m.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    to_uri = m.to.uri
    assert isinstance(to_uri, SipUri) and to_uri.port == 6000 and len(to_uri.params) == 3
    assert m.from_.tag == "12" + "982" * 50 + "424"
    assert len(m.from_.params) == 3
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert m.get("Unknown-" + "Long" * 20 + "-Name") is not None


def test_dblreq_ignores_trailing_octets() -> None:
    data = load("dblreq.dat")
    m = parse_message(data)
    assert m.body == b"" and isinstance(m, Request) and m.method == "REGISTER"
    assert b"INVITE" not in m.to_bytes()  # a proxy must not forward the spurious octets


def test_semiuri_user_with_semicolon() -> None:
    uri = req("semiuri.dat").uri
    assert isinstance(uri, SipUri)
    assert uri.user == "user;par=u%40example.net" and uri.host == "example.com" and uri.params == []
    assert unescape(uri.user) == "user;par=u@example.net"
    assert len(req("semiuri.dat").values("Accept")) == 6


def test_transports_known_and_unknown() -> None:
    assert [v.transport for v in req("transports.dat").vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_framed_by_content_length() -> None:
    m = req("mpart01.dat")
    assert len(m.body) == 553 and b"\x00" in m.body
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert m.content_type == "multipart/mixed"
    assert m.top_via.port == 5070 and m.top_via.has("rport") and m.top_via.param("rport") == ""


def test_unreason_and_noreason() -> None:
    m = parse("unreason.dat")
    assert isinstance(m, Response) and m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    m = parse("noreason.dat")
    assert isinstance(m, Response) and m.status == 100 and m.reason == ""
    assert m.to_bytes().startswith(b"SIP/2.0 100 \r\n")


# ---- 3.1.2 invalid messages: the details -------------------------------------------------------------


def test_clerr_on_a_stream_waits_for_more() -> None:
    """§3.1.2.2: over TCP there is nothing to do but wait for the rest (and time out)."""
    framer = StreamFramer()
    assert framer.feed(load("clerr.dat")) == []
    assert len(framer.buf) == len(load("clerr.dat"))


@pytest.mark.parametrize(("name", "status"), [("ncl.dat", 400), ("mcl01.dat", 400), ("inv2543.dat", 400)])
def test_unrecoverable_stream_framing(name: str, status: int) -> None:
    """§3.1.2.3, §3.3.9 (and RFC 2543 syntax without Content-Length, §3.4.1): on a stream the framing
    is lost and the connection must be closed, which the framer says by raising."""
    with pytest.raises(MessageError) as info:
        StreamFramer().feed(load(name))
    assert info.value.status == status
    assert "Content-Length" in info.value.reason


def test_ncl_with_non_numeric_length() -> None:
    data = load("ncl.dat").replace(b"Content-Length: -999", b"Content-Length: five")
    with pytest.raises(MessageError) as info:
        parse_message(data)
    assert info.value.status == 400 and "Content-Length" in info.value.reason


def test_answer_to_a_bad_request_copies_its_headers() -> None:
    with pytest.raises(MessageError) as info:
        parse_message(load("lwsstart.dat"))
    bad = info.value.message
    assert isinstance(bad, Request) and bad.method == "INVITE"
    resp = check_response(bad, (info.value.status, info.value.reason))
    assert resp.status == 400 and resp.get("Call-ID") == bad.get("Call-ID")
    assert parse_message(resp.to_bytes()).get("CSeq") == "1893884 INVITE"


# ---- 3.2-3.4: the parser parses, other layers answer -----------------------------------------------


def test_badbranch_parses_with_bare_magic_cookie() -> None:
    assert req("badbranch.dat").top_via.branch == "z9hG4bK"


def test_insuf_is_not_answerable() -> None:
    with pytest.raises(MessageError) as info:
        parse_message(load("insuf.dat"))
    assert info.value.status == 400 and not info.value.answerable


@pytest.mark.parametrize("name", ["unkscm.dat", "novelsc.dat"])
def test_unknown_request_uri_scheme_is_416(name: str) -> None:
    m = req(name)
    assert isinstance(m.uri, AbsoluteUri)
    assert check_request(m, SUPPORTED) == (416, "Unsupported URI Scheme")


def test_unksm2_other_schemes_in_headers() -> None:
    m = req("unksm2.dat")
    assert [type(u).__name__ for u in (m.to.uri, m.from_.uri, m.addresses("Contact")[0].uri)] == [
        "AbsoluteUri",
        "AbsoluteUri",
        "AbsoluteUri",
    ]
    assert check_request(m, SUPPORTED) is None  # a proxy forwards it; the registrar says 400


def test_bext01_unknown_proxy_require_is_420() -> None:
    m = req("bext01.dat")
    result = check_request(m, SUPPORTED)
    assert result == (420, "noProxiesSupportThis, norDoAnyProxiesSupportThis")
    assert result is not None
    resp = check_response(m, result, to_tag="abc")
    assert resp.status == 420 and resp.reason == "Bad Extension"
    assert resp.values("Unsupported") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    assert resp.to.tag == "abc"
    # what a proxy supports is case-insensitive, and Require is not its business (§16.3 item 5)
    assert check_request(m, {"noproxiessupportthis", "NORDOANYPROXIESSUPPORTTHIS"}) is None


def test_zeromf_max_forwards_zero() -> None:
    m = req("zeromf.dat")
    # §16.3 item 3: an OPTIONS with Max-Forwards 0 may be answered by the proxy as a UAS
    assert check_request(m, SUPPORTED) == (200, "OK")
    # RFC 4475 §3.3.11: a proxy that does not answer OPTIONS itself says 483
    assert check_request(m, SUPPORTED, options_as_uas=False) == (483, "Too Many Hops")
    m.method = "INFO"
    assert check_request(m, SUPPORTED) == (483, "Too Many Hops")


def test_bcast_broadcast_via_is_visible_to_the_proxy() -> None:
    m = parse("bcast.dat")
    assert isinstance(m, Response) and m.vias[1].host == "255.255.255.255"


def test_cparam_contact_param_versus_uri_param() -> None:
    """§20.10: in addr-spec form, ';unknownparam' belongs to the header field, not the URI."""
    (c1,) = req("cparam01.dat").addresses("Contact")
    assert isinstance(c1.uri, SipUri) and c1.uri.params == [] and c1.params == [("unknownparam", None)]
    assert c1.uri.user == "+19725552222"
    (c2,) = req("cparam02.dat").addresses("Contact")
    assert isinstance(c2.uri, SipUri) and c2.uri.params == [("unknownparam", None)] and c2.params == []


def test_regescrt_escaped_header_in_contact() -> None:
    (c,) = req("regescrt.dat").addresses("Contact")
    assert isinstance(c.uri, SipUri)
    assert c.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert c.uri.header_fields() == [("Route", "<sip:sip.example.com>")]


@pytest.mark.parametrize("name", ["invut.dat", "regaut01.dat", "sdp01.dat", "wsinv.dat", "esc02.dat"])
def test_forwardable_requests_pass_the_proxy_checks(name: str) -> None:
    assert check_request(req(name), SUPPORTED) is None


def test_regaut01_authorization_kept_verbatim() -> None:
    m = req("regaut01.dat")
    assert m.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert b"Authorization: NoOneKnowsThisScheme opaque-data=here\r\n" in m.to_bytes()


def test_inv2543_rfc2543_syntax_on_a_datagram() -> None:
    m = req("inv2543.dat")
    assert m.get("Max-Forwards") is None and m.top_via.branch is None and m.from_.tag is None
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n") and len(m.body) == 105
    with pytest.raises(MessageError) as info:
        parse_message(load("inv2543.dat"), datagram=False)
    assert info.value.status == 400


# ---- limits and streams over the whole corpus ------------------------------------------------------

PARSEABLE = [c.file for c in CASES if c.status is None]


@pytest.mark.parametrize("name", PARSEABLE)
def test_oversize_is_513_with_the_message_when_the_head_fits(name: str) -> None:
    data = load(name)
    head = data.index(b"\r\n\r\n") + 4
    with pytest.raises(MessageError) as info:
        parse_message(data + b"x" * 10, max_size=len(data) + 5)
    assert info.value.status == 513
    if head <= len(data) + 5:
        assert info.value.message is not None
    with pytest.raises(MessageError) as info:
        parse_message(data, max_size=10)
    assert info.value.status == 513 and info.value.message is None


def test_stream_delivers_the_corpus_in_any_chunking() -> None:
    """Every message with a correct Content-Length, back to back with keepalives in between, cut at
    random places: the framer gives each one back exactly."""
    names = [n for n in PARSEABLE if n not in ("inv2543.dat", "dblreq.dat")]
    stream = b"".join(b"\r\n\r\n" + load(n) for n in names)
    rng = random.Random(4475)
    for _ in range(20):
        framer = StreamFramer()
        out: list[bytes] = []
        pos = 0
        while pos < len(stream):
            step = rng.choice((1, 2, 3, 7, 64, 500, 4096))
            out.extend(framer.feed(stream[pos : pos + step]))
            pos += step
        assert out == [load(n) for n in names]
        assert framer.pings == len(names) and not framer.buf
        for data in out:
            parse_message(data, datagram=False)


# ---- fuzzing: mutations of the corpus ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"l: 0", "l: \u00b2".encode()),  # str.isdigit() says yes, int() says no
        (b"l: 0", b"l: " + b"1" * 5000),  # int() refuses more than 4300 digits
        (b"CSeq: 29344", b"CSeq: " + b"9" * 5000),
        (b"Max-Forwards: 70", "Max-Forwards: \u0663".encode()),  # an Arabic-Indic three is not 3
        (b"host.example.com;", "host.example.com:\u0663;".encode()),
        (b"Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234", b"Via: ,"),
    ],
)
def test_found_by_fuzzing_bad_numbers_and_lists(old: bytes, new: bytes) -> None:
    """Inputs that made the first parser raise ValueError or IndexError, or accept non-ASCII digits."""
    data = load("esc02.dat").replace(old, new)
    assert data != load("esc02.dat")
    with pytest.raises(MessageError) as info:
        parse_message(data)
    assert info.value.status == 400


def test_found_by_fuzzing_check_request_on_bad_proxy_require() -> None:
    m = req("bext01.dat")
    m.set("Proxy-Require", 'x, "unterminated')
    result = check_request(m, SUPPORTED)
    assert result is not None and result[0] == 400


SEEDS = [load(c.file) for c in CASES]
VALID_SEEDS = [load(c.file) for c in CASES if c.status is None]
TRICKY_NAMES = [
    "Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Content-Length", "l",
    "Max-Forwards", "Route", "Record-Route", "Expires", "Content-Type", "c", "Proxy-Require", "X-Junk",
    "", " ", "Bad Name", "Via ", "\x00", "ß", "Content-Length ",
]
TRICKY_VALUES = [
    "", " ", ",", ";;", '"', '"\\', "<", ">", "<>", "<sip:>", "*", "sip:", "sip:@", "sip:a@[::1", "sip:a@[zz]",
    "SIP/2.0/UDP", "SIP/2.0/UDP [::1]:99999", "1" * 5000, "-1", "²", "٣", "0" * 30 + "1", "sip:a@b;x=\"",
    "\"a\" <sip:a@b>;tag=\"", "<sip:a@b>;q=\"1,2\", <tel:+1>", "tel:", "tel:+1;;", "a:b c", "\udcff",
    "SIP/2.0/TCP h;branch=z9hG4bK, SIP/2.0/UDP", "65536 INVITE", "1 INVITE x", "text/", "a/b;c=\"d",
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_SEEDS) | st.sampled_from(SEEDS)))
    # most mutations spare the start line, so that enough messages still parse to test round trips
    ops = ["flip", "truncate", "duplicate", "header", "header", "header", "delete", "bytes", "lines", "lines"]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(ops))
        n = len(data)
        first = data.find(b"\r\n") + 2 if draw(st.integers(0, 9)) else 0
        if op == "flip" and n > first:
            i = draw(st.integers(first, n - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate" and n:
            del data[draw(st.integers(first, n)) :]
        elif op == "duplicate" and n > first:
            i = draw(st.integers(first, n - 1))
            j = draw(st.integers(i, min(n, i + 200)))
            data[j:j] = data[i:j]
        elif op == "header":
            name = draw(st.sampled_from(TRICKY_NAMES) | st.text(max_size=8))
            value = draw(st.sampled_from(TRICKY_VALUES) | st.text(max_size=40))
            line = f"{name}:{value}\r\n".encode("utf-8", "surrogateescape")
            starts = [i + 2 for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"] or [0]
            at = draw(st.sampled_from(starts))
            data[at:at] = line
        elif op == "delete" and n > first:
            i = draw(st.integers(first, n - 1))
            del data[i : i + draw(st.integers(1, 50))]
        elif op == "bytes":
            i = draw(st.integers(min(first, n), n))
            data[i:i] = draw(st.binary(max_size=20))
        elif op == "lines":
            # fold and reorder lines
            lines = bytes(data).split(b"\r\n")
            low = 1 if first and len(lines) > 1 else 0
            i = draw(st.integers(low, len(lines) - 1))
            j = draw(st.integers(low, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            if draw(st.booleans()):
                lines[i] = b" " + lines[i]
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_messages(), st.booleans())
def test_fuzz_parse_never_crashes_and_round_trips(data: bytes, datagram: bool) -> None:
    """Anything but MessageError out of parse_message on arbitrary bytes is a bug; what parses must
    serialise to bytes that parse again to the same message."""
    try:
        m = parse_message(data, datagram=datagram)
    except MessageError as e:
        assert 400 <= e.status <= 599
        assert "\n" not in e.reason and "\r" not in e.reason
        if e.answerable:
            assert isinstance(e.message, Request)
            check_response(e.message, (e.status, e.reason)).to_bytes()
        return
    assert_round_trip(m)
    if isinstance(m, Request):
        check_request(m, SUPPORTED)


def frame(chunks: list[bytes]) -> tuple[list[bytes], int | None, int]:
    framer = StreamFramer(max_size=4096)
    out: list[bytes] = []
    try:
        for chunk in chunks:
            out.extend(framer.feed(chunk))
    except MessageError as e:
        assert e.status in (400, 513)
        return out, e.status, framer.pings
    return out, None, framer.pings


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mutated_messages() | st.sampled_from([b"\r\n", b"\r\n\r\n", b"\r"]), min_size=1, max_size=5),
    st.lists(st.integers(1, 300), min_size=1),
)
def test_fuzz_stream_framer_is_chunking_invariant(parts: list[bytes], cuts: list[int]) -> None:
    """Whatever the bytes, the framer only raises MessageError, and where the TCP segments fall
    changes nothing: the same messages, pings and error as when everything arrives at once."""
    stream = b"".join(parts)
    chunks, pos, k = [], 0, 0
    while pos < len(stream):
        chunks.append(stream[pos : pos + cuts[k % len(cuts)]])
        pos += cuts[k % len(cuts)]
        k += 1
    whole = frame([stream])
    cut = frame(chunks)
    assert cut[1] == whole[1]
    if whole[1] is None:
        assert cut == whole
    for data in cut[0]:
        try:
            parse_message(data, datagram=False)
        except MessageError:
            pass


@settings(max_examples=1000, deadline=None, database=None)
@given(st.text(max_size=80) | st.sampled_from(TRICKY_VALUES))
def test_fuzz_value_parsers_raise_only_parse_errors(text: str) -> None:
    for fn in (parse_uri, parse_name_addr, parse_via, split_comma):
        try:
            fn(text)
        except SipParseError:
            pass

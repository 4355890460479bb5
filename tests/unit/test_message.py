"""Message parsing details (RFC 3261 §7, §20, §25): header names and values, folding, lists, quoting,
name-addr parameters, size limits, stream framing, and the Message editing API."""

from __future__ import annotations

import pytest

from rtc2sip.sip import (
    MessageError,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    TelUri,
    make_response,
    parse_int_header,
    parse_message,
    parse_name_addr,
    parse_via,
    unquote_string,
)
from rtc2sip.sip.headers import COMPACT, canonical, parse_cseq, parse_header_params, quote_string, split_comma
from rtc2sip.sip.parser import check_request, check_response, validate

BASE = [
    "INVITE sip:bob@biloxi.example.com SIP/2.0",
    "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    "Max-Forwards: 70",
    'To: "Bob" <sip:bob@biloxi.example.com>',
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
    "CSeq: 314159 INVITE",
    "Contact: <sip:alice@pc33.atlanta.example.com>",
]


def build(
    *extra: str, first: str | None = None, drop: tuple[str, ...] = (), body: bytes = b"", eol: str = "\r\n"
) -> bytes:
    lines = [first or BASE[0]] + [h for h in BASE[1:] if h.split(":")[0] not in drop] + list(extra)
    return (eol.join([*lines, f"Content-Length: {len(body)}", "", ""])).encode() + body


def parse_req(data: bytes, **kw: bool | int) -> Request:
    m = parse_message(data, **kw)  # type: ignore[arg-type]
    assert isinstance(m, Request)
    return m


def error(data: bytes, **kw: bool | int) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_message(data, **kw)  # type: ignore[arg-type]
    return info.value


# ---- header names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT.items()))
def test_compact_names(short: str, long: str) -> None:
    assert canonical(short) == long and canonical(short.upper()) == long


def test_compact_forms_in_a_message() -> None:
    data = (
        b"REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\nt: <sip:a@example.com>\r\ni: abc@h\r\nCSeq: 1 REGISTER\r\n"
        b"m: <sip:a@192.0.2.1>\r\nk: path, outbound\r\nc: text/plain\r\nl: 2\r\n\r\nhi"
    )
    m = parse_req(data)
    assert [h[0] for h in m.headers] == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Content-Type", "Content-Length",
    ]
    assert m.option_tags("Supported") == ["path", "outbound"] and m.body == b"hi"


def test_names_are_case_insensitive_and_unknown_ones_kept() -> None:
    m = parse_req(build("x-My-Header: 1", "CALL-id-ext: 2").replace(b"Max-Forwards", b"mAX-fORWARDS"))
    assert m.get("Max-Forwards") == "70"
    assert m.get("x-My-Header") == "1" and m.get("CALL-id-ext") == "2"
    assert canonical("www-authenticate") == "WWW-Authenticate" and canonical("CSEQ") == "CSeq"
    assert canonical("Content-Length   ".rstrip()) == "Content-Length"


@pytest.mark.parametrize("line", ["Bad Name: x", ":novalue", "NoColon", "Ünï: x", "To"])
def test_bad_header_lines_are_400(line: str) -> None:
    e = error(build(line))
    assert e.status == 400 and e.answerable


def test_space_before_colon_is_allowed() -> None:
    assert parse_req(build("Subject \t: hello")).get("Subject") == "hello"


# ---- folding (§7.3.1) -----------------------------------------------------------------------------------


def test_folded_headers_unfold_to_one_space() -> None:
    data = build("Subject: first", " \t second", "\tthird", "X-Empty:", "  folded-in")
    m = parse_req(data)
    assert m.get("Subject") == "first second third"
    assert m.get("X-Empty") == "folded-in"


def test_folding_inside_structured_values() -> None:
    data = build("Route: <sip:p1.example.com;lr>,", "  <sip:p2.example.com;lr>", drop=("Via",)).replace(
        b"\r\nMax-Forwards", b"\r\nVia: SIP/2.0/UDP\r\n  h.example.com\r\n  ;branch=z9hG4bKx\r\nMax-Forwards"
    )
    m = parse_req(data)
    assert m.top_via.host == "h.example.com" and m.top_via.branch == "z9hG4bKx"
    assert [str(a.uri) for a in m.addresses("Route")] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]


def test_continuation_without_header_is_400() -> None:
    data = build().replace(b"SIP/2.0\r\nVia", b"SIP/2.0\r\n folded\r\nVia")
    assert error(data).status == 400


def test_bare_lf_line_ends_are_tolerated() -> None:
    m = parse_req(build(body=b"v=0\n", eol="\n"))
    assert m.body == b"v=0\n" and m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert b"\r\nCSeq: 314159 INVITE\r\n" in m.to_bytes()


# ---- comma-separated lists, quoted strings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a, b ,c", ["a", "b", "c"]),
        ("a,,b, ", ["a", "b"]),
        ('"Smith, John" <sip:j@x>, <sip:k@y>', ['"Smith, John" <sip:j@x>', "<sip:k@y>"]),
        ("<sip:a@b;x=1,2>;q=0.5, <sip:c@d>", ["<sip:a@b;x=1,2>;q=0.5", "<sip:c@d>"]),
        ('"a \\", b" <sip:x@y>, z', ['"a \\", b" <sip:x@y>', "z"]),
        (
            '<sip:a@b>;+sip.instance="<urn:uuid:1,2>", <sip:c@d>',
            ['<sip:a@b>;+sip.instance="<urn:uuid:1,2>"', "<sip:c@d>"],
        ),
        ("", []),
        ("single", ["single"]),
    ],
)
def test_split_comma(value: str, parts: list[str]) -> None:
    assert split_comma(value) == parts


def test_split_comma_unterminated_quote() -> None:
    with pytest.raises(SipParseError):
        split_comma('"abc, def')
    with pytest.raises(SipParseError):
        split_comma('a, "b\\"')


def test_values_across_lines_and_commas() -> None:
    m = parse_req(build("Supported: timer, 100rel", "Supported: path", "Allow: INVITE,ACK , BYE"))
    assert m.values("Supported") == ["timer", "100rel", "path"]
    assert m.values("Allow") == ["INVITE", "ACK", "BYE"]
    assert m.get_all("Supported") == ["timer, 100rel", "path"]


def test_headers_that_are_not_lists_keep_their_commas() -> None:
    m = parse_req(
        build(
            "Date: Sat, 13 Nov 2010 23:29:00 GMT",
            'Authorization: Digest username="bob", realm="a,b", nonce="x"',
            "Subject: one, two",
        )
    )
    assert m.values("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert m.values("Authorization") == ['Digest username="bob", realm="a,b", nonce="x"']
    assert m.values("Subject") == ["one, two"]


def test_quoted_strings_and_escapes() -> None:
    assert unquote_string('"a \\"b\\" \\\\ c"') == 'a "b" \\ c'
    assert unquote_string("token") == "token"
    for text in ('He said "hi"', "back\\slash", ""):
        assert unquote_string(quote_string(text)) == text
    na = parse_name_addr('"Bob \\"the\\" Builder \\\\" <sip:bob@example.com>')
    assert na.display_name == 'Bob "the" Builder \\'


def test_header_params_with_lws_and_quotes() -> None:
    assert parse_header_params(' ; a = 1 ;b; c="x;y,z" ;d=[2001:db8::1]') == [
        ("a", "1"),
        ("b", None),
        ("c", '"x;y,z"'),
        ("d", "[2001:db8::1]"),
    ]
    for bad in (";", ";;a", ";a=", ";a b", ';a="x', ";a=<b>"):
        with pytest.raises(SipParseError):
            parse_header_params(bad)


# ---- name-addr and addr-spec (§20.10) ------------------------------------------------------------------


def test_addr_spec_parameters_belong_to_the_header() -> None:
    na = parse_name_addr("sip:alice@atlanta.example.com;tag=88sja8x;transport=tcp")
    assert isinstance(na.uri, SipUri) and na.uri.params == []
    assert na.params == [("tag", "88sja8x"), ("transport", "tcp")] and na.display is None


def test_name_addr_parameters_inside_and_outside_brackets() -> None:
    na = parse_name_addr('"Alice" <sip:alice@atlanta.example.com;transport=tcp>;tag=88sja8x;q=0.7')
    assert isinstance(na.uri, SipUri) and na.uri.params == [("transport", "tcp")]
    assert na.tag == "88sja8x" and na.param("Q") == "0.7" and na.display == '"Alice"'
    assert str(na) == '"Alice" <sip:alice@atlanta.example.com;transport=tcp>;tag=88sja8x;q=0.7'


@pytest.mark.parametrize(
    ("value", "display", "uri"),
    [
        ("<sip:a@b.example>", None, "sip:a@b.example"),
        ("Bob Smith <sip:a@b.example>", "Bob Smith", "sip:a@b.example"),
        ("Bob<sip:a@b.example>", "Bob", "sip:a@b.example"),  # RFC 4475 §3.1.1.6
        ('""<sip:a@b.example>', '""', "sip:a@b.example"),
        ("  <tel:+12125551212;phone-context=x>  ", None, "tel:+12125551212;phone-context=x"),
        ("<urn:service:sos>", None, "urn:service:sos"),
        ("sip:a@b.example", None, "sip:a@b.example"),
    ],
)
def test_name_addr_forms(value: str, display: str | None, uri: str) -> None:
    na = parse_name_addr(value)
    assert na.display == display and str(na.uri) == uri


@pytest.mark.parametrize(
    "value",
    [
        "sip:a@b.example?Subject=x",  # addr-spec with headers: needs <> (§20.10)
        "sip:a@b.example,c",
        "Bell, Alexander <sip:a@b.example>",
        '"Unterminated <sip:a@b.example>',
        "< sip:a@b.example >",
        "<sip:a@b.example",
        '"Q" sip:a@b.example',
        "<sip:a@b.example> garbage",
        "<sip:a@b.example>;",
        "<>",
        "",
    ],
)
def test_bad_addresses(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)


def test_star_only_in_contact() -> None:
    assert parse_name_addr(" * ").star
    with pytest.raises(SipParseError):
        parse_name_addr("*", allow_star=False)
    assert error(build().replace(b"To: \"Bob\" <sip:bob@biloxi.example.com>", b"To: *")).status == 400
    star = parse_req(build(drop=("Contact",)).replace(b"CSeq:", b"Contact: *\r\nCSeq:"))
    assert star.addresses("Contact")[0].star


# ---- structured values: Via, CSeq, numbers ---------------------------------------------------------------


def test_via_forms() -> None:
    v = parse_via("SIP / 2.0 / udp  [2001:db8::9] : 5070 ; branch=z9hG4bKx;received=2001:db8::1;rport")
    assert (v.transport, v.host, v.port, v.protocol) == ("UDP", "[2001:db8::9]", 5070, "SIP/2.0")
    assert v.branch == "z9hG4bKx" and v.param("received") == "2001:db8::1" and v.param("rport") == ""
    assert str(v) == "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;received=2001:db8::1;rport"
    for bad in ("SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP -host", "SIP/2.0/UDP h;"):
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_cseq_bounds() -> None:
    assert parse_cseq("0002147483647   INVITE").number == 2**31 - 1
    for bad in ("2147483648 INVITE", "1INVITE", "-1 INVITE", "1 INVITE x", "٣ INVITE", "9" * 5000 + " INVITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


def test_int_headers_only_ascii_digits() -> None:
    assert parse_int_header("Expires", " 3600 ") == 3600
    assert parse_int_header("Expires", "0" * 40 + "7") == 7
    for bad in ("", "²", "٣", "+1", "1 2", "0x10", "1" * 5000):
        with pytest.raises(SipParseError):
            parse_int_header("Expires", bad)
    with pytest.raises(SipParseError):
        parse_int_header("Max-Forwards", "256", 255)


def test_validation_rules() -> None:
    assert error(build(drop=("Via",))).reason == "Missing Via header"
    assert error(build(drop=("CSeq",))).reason == "Missing CSeq header"
    assert error(build("Max-Forwards: 69")).reason == "Multiple Max-Forwards headers"
    assert error(build().replace(b"Max-Forwards: 70", b"Max-Forwards: 256")).status == 400
    assert error(build("Expires: soon")).status == 400
    assert error(build("Content-Type: sdp")).status == 400
    assert error(build().replace(b"Call-ID: a84b", b"Call-ID: a b")).status == 400
    # a second identical copy of a single-valued header is tolerated
    assert parse_req(build("Call-ID: a84b4c76e66710@pc33.atlanta.example.com")).call_id.startswith("a84b")
    # big Expires values are the registrar's to clamp (RFC 4475 §3.1.2.4)
    assert parse_req(build("Expires: " + "9" * 30)).get("Expires") == "9" * 30


def test_versions() -> None:
    e = error(build(first="OPTIONS sip:a@b.example SIP/3.0").replace(b"314159 INVITE", b"1 OPTIONS"))
    assert e.status == 505 and e.answerable
    assert error(build(first="INVITE sip:bob@biloxi.example.com HTTP/1.1")).status == 400
    assert parse_req(build(first="INVITE sip:bob@biloxi.example.com sip/2.0")).version == "sip/2.0"


def test_responses() -> None:
    data = build(first="SIP/2.0 180 Ringing").replace(b"Max-Forwards: 70\r\n", b"")
    m = parse_message(data)
    assert isinstance(m, Response) and (m.status, m.reason) == (180, "Ringing")
    m = parse_message(build(first="SIP/2.0 404"))
    assert isinstance(m, Response) and m.reason == ""  # liberal: no SP before an empty reason
    for first in ("SIP/2.0 99 Low", "SIP/2.0 700 High", "SIP/2.0 2000 OK", "SIP/2.0 20x OK", "SIP/2.0"):
        e = error(build(first=first))
        assert e.status == 400 and not e.answerable


def test_empty_and_keepalive_datagrams() -> None:
    assert error(b"").status == 400
    assert error(b"\r\n\r\n").status == 400
    assert parse_req(b"\r\n\r\n" + build()).method == "INVITE"  # §7.5: CRLFs before the start line


def test_datagram_body_framing() -> None:
    no_cl = build(body=b"").replace(b"Content-Length: 0\r\n", b"") + b"v=0\r\n"
    assert parse_req(no_cl).body == b"v=0\r\n"  # §18.3: the rest of the datagram
    assert error(no_cl, datagram=False).reason == "Missing Content-Length on a stream"
    assert parse_req(build(body=b"abc") + b"trailing junk").body == b"abc"
    assert error(build(body=b"abc")[:-1]).reason == "Content-Length larger than the message"
    assert error(build("Content-Length: 1", body=b"")).status == 400  # conflicting copies


# ---- size limits -------------------------------------------------------------------------------------------


def test_size_limit_is_inclusive() -> None:
    data = build(body=b"x" * 100)
    assert parse_req(data, max_size=len(data)).body == b"x" * 100
    e = error(data, max_size=len(data) - 1)
    assert e.status == 513 and e.answerable  # the header block fitted: 513 can be sent back
    assert error(data, max_size=20).message is None


# ---- stream framing -------------------------------------------------------------------------------------


def test_framer_partial_feeds_byte_by_byte() -> None:
    one, two = build(body=b"v=0\r\n"), build("Subject: second")
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(one + two)):
        out.extend(framer.feed((one + two)[i : i + 1]))
    assert out == [one, two] and not framer.buf


def test_framer_several_messages_in_one_chunk() -> None:
    msgs = [build(f"Subject: {i}", body=b"b" * i) for i in range(5)]
    framer = StreamFramer()
    assert framer.feed(b"".join(msgs)) == msgs


def test_framer_counts_crlf_pings() -> None:
    """RFC 5626 §4.4.1: CRLFCRLF is a ping (answered with a CRLF pong); a lone CRLF is not."""
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [] and framer.pings == 1
    assert framer.feed(b"\r\n") == [] and framer.pings == 1  # maybe the start of a ping
    assert framer.feed(b"\r\n") == [] and framer.pings == 2  # ... which it was
    assert framer.feed(b"\r\n" + build()) == [build()] and framer.pings == 2  # a pong, then a message
    assert framer.feed(b"\r") == [] and framer.feed(b"\n\r") == [] and framer.feed(b"\n") == []
    assert framer.pings == 3
    framer.pings = 0  # the transport resets it after answering
    assert framer.feed(b"\r\n\r\n\r\n\r\n" + build()) == [build()] and framer.pings == 2


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 400),  # no Content-Length
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 70000\r\n\r\n", 513),
    ],
)
def test_framer_errors(head: bytes, status: int) -> None:
    with pytest.raises(MessageError) as info:
        StreamFramer().feed(head)
    assert info.value.status == status and info.value.message is None


def test_framer_content_length_forms() -> None:
    folded = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length:\r\n 3\r\n\r\nabc"
    assert StreamFramer().feed(folded) == [folded]
    compact = b"OPTIONS sip:a@b SIP/2.0\r\nL :  3\r\n\r\nabcOPTIONS"
    framer = StreamFramer()
    assert framer.feed(compact) == [compact[:-7]] and bytes(framer.buf) == b"OPTIONS"
    bare_lf = b"OPTIONS sip:a@b SIP/2.0\nl: 1\n\nx"
    assert StreamFramer().feed(bare_lf) == [bare_lf]


def test_framer_oversize() -> None:
    framer = StreamFramer(max_size=100)
    with pytest.raises(MessageError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 200)  # header block never ends
    assert info.value.status == 513
    with pytest.raises(MessageError) as info:
        StreamFramer(max_size=100).feed(b"INVITE sip:a@b SIP/2.0\r\nl: 90\r\n\r\n")
    assert info.value.status == 513


# ---- the Message API --------------------------------------------------------------------------------------


def test_header_editing() -> None:
    m = parse_req(build("Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>", "Route: <sip:p3.example.com;lr>"))
    assert m.has("Route") and not m.has("Record-Route")
    assert m.pop_first_value("Route") == "<sip:p1.example.com;lr>"
    assert m.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"]
    assert m.pop_first_value("Route") == "<sip:p2.example.com;lr>"
    assert m.pop_first_value("Route") == "<sip:p3.example.com;lr>"
    assert m.pop_first_value("Route") is None

    m.add("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp", top=True)
    assert m.top_via.host == "proxy.example.com" and len(m.vias) == 2  # caches follow the edits
    m.replace_first_value("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKq")
    assert m.top_via.branch == "z9hG4bKq"
    assert m.pop_first_value("Via") == "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKq"
    assert m.top_via.host == "pc33.atlanta.example.com"

    m.add("Record-Route", "<sip:rr@example.com;lr>", top=True)
    assert m.headers[0] == ["Record-Route", "<sip:rr@example.com;lr>"]
    m.set("Max-Forwards", "69")
    m.add("Subject", "a")
    m.add("Subject", "b")
    m.set("Subject", "c")
    assert m.get("Max-Forwards") == "69" and m.get_all("Subject") == ["c"]
    m.remove("Subject")
    assert not m.has("Subject")
    assert dict(m.iter_headers())["CSeq"] == "314159 INVITE"


def test_replace_first_value_of_empty_list_header() -> None:
    m = Request("OPTIONS", "sip:a@b.example", [["Supported", ""]])
    m.replace_first_value("Supported", "path")
    assert m.values("Supported") == ["path"]


def test_to_bytes_recomputes_content_length_and_keeps_order() -> None:
    m = parse_req(build("X-A: 1", "X-B: 2", body=b"hello"))
    m.body = b"hi"
    wire = m.to_bytes()
    assert wire.endswith(b"\r\nContent-Length: 2\r\n\r\nhi") and wire.count(b"Content-Length") == 1
    assert wire.index(b"X-A") < wire.index(b"X-B")
    assert bytes(m) == wire


def test_request_uri_text_kept_unless_edited() -> None:
    m = parse_req(build(first="INVITE SIP:Bob@Biloxi.Example.COM SIP/2.0"))
    assert isinstance(m.uri, SipUri) and m.uri.scheme == "sip"
    assert m.start_line() == "INVITE SIP:Bob@Biloxi.Example.COM SIP/2.0"  # read, not changed
    m.uri.params.append(("lr", None))  # edited in place: serialised from the object
    assert m.start_line() == "INVITE sip:Bob@Biloxi.Example.COM;lr SIP/2.0"
    m.uri = TelUri("+12125551212")
    assert m.uri_text == "tel:+12125551212"
    assert m.copy().start_line() == "INVITE tel:+12125551212 SIP/2.0"


def test_make_response_copies_headers() -> None:
    m = parse_req(build("Record-Route: <sip:rr@example.com;lr>", "Timestamp: 54"))
    trying = make_response(m, 100)
    assert trying.get("Timestamp") == "54" and trying.get("To") == '"Bob" <sip:bob@biloxi.example.com>'
    assert not trying.has("Record-Route")
    ok = make_response(m, 200, to_tag="xyz")
    assert ok.reason == "OK" and ok.to.tag == "xyz" and ok.get("Record-Route") == "<sip:rr@example.com;lr>"
    again = parse_message(ok.to_bytes())
    assert isinstance(again, Response) and again.cseq.method == "INVITE" and again.vias[0].branch == "z9hG4bK776asdhds"


def test_check_request_order_and_schemes() -> None:
    supported = {"path"}
    assert check_request(parse_req(build()), supported) is None
    assert check_request(parse_req(build(first="INVITE tel:+12125551212 SIP/2.0")), supported) is None
    assert check_request(parse_req(build(first="INVITE sips:bob@biloxi.example.com SIP/2.0")), supported) is None
    zero = build(first="INVITE mailto:bob@biloxi.example.com SIP/2.0").replace(b"Max-Forwards: 70", b"Max-Forwards: 00")
    assert check_request(parse_req(zero), supported) == (416, "Unsupported URI Scheme")  # item 2 before item 3
    pr = parse_req(build("Proxy-Require: PATH, sec-agree").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    assert check_request(pr, supported) == (483, "Too Many Hops")  # item 3 before item 5
    pr.set("Max-Forwards", "1")
    assert check_request(pr, supported) == (420, "sec-agree")
    pr.set("Proxy-Require", '"quoted"')
    result = check_request(pr, supported)
    assert result is not None and result[0] == 400
    assert check_response(pr, result).status == 400


def test_validate_on_built_messages() -> None:
    m = Request("OPTIONS", "sip:a@b.example")
    with pytest.raises(MessageError) as info:
        validate(m)
    assert info.value.reason == "Missing Via header" and info.value.message is m


def test_stream_framer_keeps_what_came_whole_and_the_rejected_head_on_a_framing_error() -> None:
    # RFC 4475 dblreq/inv2543 over TCP: the first request is owed its answer, the broken one a 400
    good = b"REGISTER sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    bad = b"INVITE sip:b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"
    framer = StreamFramer()
    with pytest.raises(MessageError) as err:
        framer.feed(good + bad + b"v=0\r\n")
    assert err.value.status == 400
    assert framer.salvaged == [good]
    assert framer.rejected == bad
    with pytest.raises(MessageError):
        parse_message(bad, datagram=False)  # the proxy answers it 400 the same way

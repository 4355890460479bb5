"""SIP messages for the B2BUA unit tests (``test_b2bua.py``): the browser's and the phone's requests
as text with indented lines (:func:`wire` makes them bytes), the responses of either side, SDP bodies
stamped with a session name (so a test sees which translation a message carries), RFC 4733 events.

The browser is JsSIP on a WebSocket (``alice``, Call-ID ``browser-call-1``, tag ``atag``); the phone a
UDP endpoint at 192.0.2.10 (``bob``, tag ``phonetag``).
"""

from __future__ import annotations

import re

from rtc2sip.sip.message import Message, Request, Response, make_response

BROWSER_CONTACT = "<sip:alice@df7jal23ls0d.invalid;transport=ws>"
# RFC 5168 §3, as a phone sends it
PICTURE_FAST_UPDATE = ('<?xml version="1.0" encoding="utf-8" ?><media_control><vc_primitive><to_encoder>'
                       "<picture_fast_update/></to_encoder></vc_primitive></media_control>")


def sdp(name: str, proto: str = "RTP/AVP", direction: str = "sendrecv") -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 40000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n")


BROWSER_OFFER = sdp("browser-offer", "UDP/TLS/RTP/SAVPF")


def wire(text: str, body: str = "") -> bytes:
    """A message as written here (indented lines, empty lines dropped) in wire format, with its body."""
    head = re.sub(r"\n\s+", "\n", text.strip()).replace("\n", "\r\n")
    return f"{head}\r\nContent-Length: {len(body.encode())}\r\n\r\n{body}".encode()


# ---- requests ------------------------------------------------------------------------------------


def browser_invite(cseq: int = 1, contact_params: str = "", extra: str = "") -> str:
    return f"""INVITE sip:bob@pbx.example SIP/2.0
        Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKbr{cseq};received=127.0.0.1;rport=50000
        Max-Forwards: 69
        From: "Alice" <sip:alice@pbx.example>;tag=atag
        To: <sip:bob@pbx.example>
        Call-ID: browser-call-1
        CSeq: {cseq} INVITE
        Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws{contact_params}>;+sip.ice
        Content-Type: application/sdp
        {extra}"""


def browser_cancel() -> str:
    """The CANCEL of :func:`browser_invite` (§9.1: its branch, Call-ID, From, To and CSeq number)."""
    return """CANCEL sip:bob@pbx.example SIP/2.0
        Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bKbr1;received=127.0.0.1;rport=50000
        Max-Forwards: 70
        From: "Alice" <sip:alice@pbx.example>;tag=atag
        To: <sip:bob@pbx.example>
        Call-ID: browser-call-1
        CSeq: 1 CANCEL"""


def in_dialog(method: str, cseq: int, to_tag: str, extra: str = "", branch: str = "z9hG4bKx") -> str:
    """A request from the browser in its dialog with us (``to_tag``: our tag)."""
    return f"""{method} sip:bob@192.0.2.1:8080;transport=ws;r2sb SIP/2.0
        Via: SIP/2.0/WS df7jal23ls0d.invalid;branch={branch};received=127.0.0.1;rport=50000
        Max-Forwards: 70
        From: "Alice" <sip:alice@pbx.example>;tag=atag
        To: <sip:bob@pbx.example>;tag={to_tag}
        Call-ID: browser-call-1
        CSeq: {cseq} {method}
        {extra}"""


def phone_invite(extra: str = "") -> str:
    """The phone calls alice (Call-ID ``phone-call-1``, CSeq 10); ``extra``: a header line (Require)."""
    return f"""INVITE sip:alice@pbx.example SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKph1
        Max-Forwards: 70
        From: <sip:bob@pbx.example>;tag=phonetag
        To: <sip:alice@pbx.example>
        Call-ID: phone-call-1
        CSeq: 10 INVITE
        {extra}
        Contact: <sip:bob@192.0.2.10:5060>
        Content-Type: application/sdp"""


def phone_prack(to_tag: str | None, rseq: str | None) -> str:
    """The PRACK of :func:`phone_invite`'s caller for our reliable 1xx (RFC 3262 §7.2: RAck)."""
    return f"""PRACK sip:alice@192.0.2.1:5060;transport=udp;r2sb SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKprack
        Max-Forwards: 70
        From: <sip:bob@pbx.example>;tag=phonetag
        To: <sip:alice@pbx.example>;tag={to_tag}
        Call-ID: phone-call-1
        CSeq: 11 PRACK
        RAck: {rseq} 10 INVITE"""


def phone_request(method: str, legacy_invite: Request, cseq: int, body: str = "", branch: str = "z9hG4bKp1"
                  ) -> str:
    """A request from the phone in the legacy dialog (From/To swapped)."""
    return f"""{method} {contact_uri(legacy_invite)} SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}
        Max-Forwards: 70
        From: <sip:bob@pbx.example>;tag=phonetag
        To: {legacy_invite.get("From")}
        Call-ID: {legacy_invite.call_id}
        CSeq: {cseq} {method}
        Contact: <sip:bob@192.0.2.10:5060>
        {"Content-Type: application/sdp" if body else ""}"""


def replacing_invite(replaces: str, call_id: str = "phone-call-2") -> str:
    """A phone's INVITE with ``Replaces`` (RFC 3891 §6.1) for alice at our Contact."""
    return f"""INVITE sip:alice@192.0.2.1:5060;transport=udp;r2sb SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrep1
        Max-Forwards: 70
        From: <sip:dave@pbx.example>;tag=davetag
        To: <sip:alice@pbx.example>
        Call-ID: {call_id}
        CSeq: 1 INVITE
        Contact: <sip:dave@192.0.2.10:5060>
        Replaces: {replaces}
        Content-Type: application/sdp"""


def contact_uri(req: Request) -> str:
    value = req.get("Contact") or ""
    return value[value.index("<") + 1 : value.index(">")]


# ---- responses -----------------------------------------------------------------------------------


def phone_response(req: Message, status: int, body: str = "",
                   extra: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()) -> Response:
    assert isinstance(req, Request)
    resp = make_response(req, status, to_tag="phonetag" if status > 100 else None)
    if 100 < status < 300:
        resp.add("Contact", "<sip:bob@192.0.2.10:5060>")
    for name, value in extra:
        resp.add(name, value)
    if body:
        resp.add("Content-Type", "application/sdp")
        resp.body = body.encode()
    return resp


def browser_response(req: Request, status: int, body: str, to_tag: str = "atag",
                     contact: str = BROWSER_CONTACT) -> Response:
    """The browser's answer with SDP ``body`` to a request the B2BUA sent it."""
    resp = make_response(req, status, to_tag=to_tag)
    resp.add("Contact", contact)
    resp.add("Content-Type", "application/sdp")
    resp.body = body.encode()
    return resp


# ---- RTP ---------------------------------------------------------------------------------------------


def rtp_event(pt: int, event: int, end: bool, duration: int, ts: int = 1000, seq: int = 1) -> bytes:
    """An RTP packet with one RFC 4733 §2.3 event (volume 10)."""
    header = bytes([0x80, pt]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + (42).to_bytes(4, "big")
    return header + bytes([event, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")

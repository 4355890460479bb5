"""Parsing SIP messages (RFC 3261 §7, §7.3.1, §7.5, §18.3, §20.14) and the checks before acting on them
(§8.2, §16.3), sans-I/O.

:func:`parse_message` never raises anything but :class:`MessageError`: a datagram or stream carries
whatever an attacker likes, and the transport must be able to drop or answer it and carry on. It is
proven against the RFC 4475 torture messages (``tests/unit/test_torture.py``). :func:`check_request`
holds the proxy's stateless request checks (§16.3).
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .headers import (
    NAME_LOOKUP,
    SINGLE,
    canonical,
    is_token,
    parse_header_params,
    parse_int_header,
)
from .message import DEFAULT_MAX_SIZE, REASONS, SIP_VERSION, MessageError, Request, Response, make_response
from .uri import SipUri

__all__ = [
    "KNOWN_METHODS",
    "check_request",
    "check_response",
    "parse_message",
    "validate",
]

# Methods of RFC 3261 and its extensions. Only used to pick 501 over 400 for an unknown method whose
# CSeq does not match (RFC 4475 §3.1.2.18); a proxy forwards unknown methods otherwise (§16.1).
KNOWN_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
     "INFO", "REFER", "MESSAGE", "UPDATE"}
)

# spelled out rather than re.I, which on str patterns also matches the dotless i and the long s
_VERSION = re.compile(r"[Ss][Ii][Pp]/[0-9]+\.[0-9]+")
_STATUS_CODE = re.compile(r"[1-6][0-9][0-9]")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_CONTENT_TYPE = re.compile(rf"[ \t]*{_TOKEN}[ \t]*/[ \t]*{_TOKEN}[ \t]*(;.*)?", re.S)

# Call-ID = word [ "@" word ] (§25.1)
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"{_WORD}(?:@{_WORD})?")
_DIGITS = re.compile(r"[ \t]*[0-9]+[ \t]*")


# ---- parsing ---------------------------------------------------------------------------------------------


def _head_end(data: bytes) -> tuple[int, int]:
    """(end of the header block, start of the body): the first empty line, CRLF or bare LF."""
    k = data.find(b"\n\r\n")
    j = data.find(b"\n\n", 0, k + 1 if k >= 0 else len(data))
    if j >= 0:
        return j, j + 2
    if k >= 0:
        return k, k + 3
    return len(data), len(data)


def _parse_head(head: bytes) -> tuple[Request | Response, tuple[int, str] | None, list[list[str]]]:
    """Start line and header lines. Returns the message, the first error seen (a request is still
    returned with it, so that it can be answered) and the Content-Length header lines.

    A response whose status line cannot be read raises at once: it can only be dropped.
    """
    if head[-1:] == b"\r":
        head = head[:-1]  # the CR of the last line's CRLF, cut off by _head_end
    text = head.decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    first = lines[0]
    error: tuple[int, str] | None = None
    msg: Request | Response
    if first[:4].upper() == "SIP/":
        parts = first.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if not _STATUS_CODE.fullmatch(code):
            raise MessageError(400, f"Bad status code {code[:20]!r}", None)
        # "SIP/2.0 100" without the SP before an empty reason: liberal, as RFC 4475 §3.1.1.13 allows
        msg = Response(int(code), parts[2] if len(parts) > 2 else "", [], b"", parts[0])
        if not _VERSION.fullmatch(parts[0]):
            error = (400, "Malformed SIP version")
    else:
        parts = first.split(" ")
        if len(parts) == 3 and parts[0] and parts[1] and parts[2]:
            method, uri, version = parts
        else:
            # keep what is there so the request can still be answered (RFC 4475 §3.1.2.8-10)
            words = [p for p in parts if p]
            method = words[0] if words else ""
            version = words[-1] if len(words) > 1 else ""
            uri = " ".join(words[1:-1])
            if len(words) < 3:
                error = (400, "Malformed Request-Line")
            elif len(words) > 3:
                error = (400, "Whitespace inside the Request-URI")
            elif first.endswith(" "):
                error = (400, "Trailing whitespace in the Request-Line")
            else:
                error = (400, "More than one SP between Request-Line elements")
        msg = Request(method, uri, [], b"", version)
        if error is None:
            if not is_token(method):
                error = (400, "Bad method")
            elif not _VERSION.fullmatch(version):
                error = (400, "Malformed SIP version")
    headers = msg.headers
    lengths: list[list[str]] = []
    last: list[str] | None = None
    lookup = NAME_LOOKUP.get
    append = headers.append
    del lines[0]
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # folded continuation of the previous header: LWS is one SP (§7.3.1)
            if last is None:
                if error is None:
                    error = (400, "Continuation line without a header")
                continue
            cont = line.strip(" \t")
            if cont:
                last[1] = f"{last[1]} {cont}" if last[1] else cont
            continue
        name, colon, value = line.partition(":")
        cname = lookup(name)
        if cname is None:
            if not colon or not name:
                last = None
                if error is None:
                    error = (400, f"Malformed header line {line[:40]!r}")
                continue
            try:
                cname = canonical(name.rstrip(" \t"))
            except SipParseError as e:
                last = None
                if error is None:
                    error = (e.status, e.reason)
                continue
        elif not colon:  # a known name alone on its line
            last = None
            if error is None:
                error = (400, f"Malformed header line {line[:40]!r}")
            continue
        last = [cname, value.strip(" \t")]
        append(last)
        if cname == "Content-Length":
            lengths.append(last)
    return msg, error, lengths


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE, datagram: bool = True) -> Request | Response:
    """Parse one whole message (RFC 3261 §7) and apply the checks of :func:`validate`.

    ``datagram`` is True for UDP and WebSocket, where a missing Content-Length means "the rest of
    the packet" and extra octets after the body are ignored (§18.3); on a stream Content-Length is
    mandatory. Raises :class:`MessageError` (with the partial message when there is one) for
    anything malformed, and for nothing else: 400 for syntax, 505 for another SIP version, 513
    above ``max_size`` octets, 501 for an unknown method whose CSeq does not match.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if data[:1] in (b"\r", b"\n"):
        # CRLFs before a start line are keepalives or junk to ignore (§7.5)
        data = data.lstrip(b"\r\n")
    if not data:
        raise MessageError(400, "Empty message", None)
    hend, bstart = _head_end(data)
    # §7: the header block ends with an empty line, even with no body. A datagram cut before it (an IP
    # fragment lost, a buggy sender) must not be mistaken for a complete message and forwarded.
    truncated = hend == len(data)
    if len(data) > max_size:
        msg: Request | Response | None = None
        if hend <= max_size:
            try:
                msg = _parse_head(data[:hend])[0]
            except MessageError:
                msg = None
        raise MessageError(513, "Message Too Large", msg)
    msg, error, lengths = _parse_head(data[:hend])
    if error is not None:
        raise MessageError(error[0], error[1], msg)
    if truncated:
        raise MessageError(400, "Message ends inside its header block", msg)
    body = data[bstart:]
    if lengths:
        # Content-Length framing (§18.3, §20.14); copies with different values leave no way to
        # know where the body ends (RFC 4475 §3.3.9)
        value = lengths[0][1]
        if len(lengths) > 1 and any(h[1] != value for h in lengths):
            raise MessageError(400, "Conflicting Content-Length values", msg)
        if len(value) < 10 and value.isdigit() and value.isascii():
            cl = int(value)
        else:
            try:
                cl = parse_int_header("Content-Length", value)
            except SipParseError as e:
                raise MessageError(400, e.reason, msg) from None
        if cl > len(body):
            raise MessageError(400, "Content-Length larger than the message", msg)
        body = body[:cl]
    elif not datagram:
        raise MessageError(400, "Missing Content-Length on a stream", msg)
    msg.body = body
    validate(msg)
    return msg


def validate(msg: Request | Response) -> None:
    """The checks every element applies before acting on a message (§8.2, §16.3), as
    :class:`MessageError` carrying the message. The views they parse (Vias, CSeq, From, To, Contact,
    Request-URI) stay cached, so the proxy does not parse them again."""
    try:
        _validate(msg)
    except MessageError:
        raise
    except SipParseError as e:
        raise MessageError(e.status, e.reason, msg) from None


def _validate(msg: Request | Response) -> None:
    version = msg.version
    if version != SIP_VERSION:
        if not _VERSION.fullmatch(version):
            raise SipParseError(400, "Malformed SIP version")
        if version.upper() != SIP_VERSION:  # §7.1: the version string is case-insensitive
            raise SipParseError(505, "Version Not Supported")
    seen: dict[str, str] = {}
    for h in msg.headers:
        name = h[0]
        if name in SINGLE:
            prev = seen.get(name)
            if prev is None:
                seen[name] = h[1]
            elif prev != h[1]:
                raise SipParseError(400, f"Multiple {name} headers")
    for name in ("Via", "Call-ID", "From", "To", "CSeq"):
        if name not in seen and (name != "Via" or not msg.has("Via")):
            raise SipParseError(400, f"Missing {name} header")
    if not _CALL_ID.fullmatch(seen["Call-ID"]):
        raise SipParseError(400, "Malformed Call-ID")
    # the header being parsed, to say which one is wrong in the reason phrase
    part = "Via"
    try:
        # the top Via is what every element acts on (§8.2, §17, §18.2.2); the others are only read
        # when a response is relayed, and a bad one is caught there (a proxy need not parse them all)
        _ = msg.top_via
        part = "CSeq"
        cseq = msg.cseq
        if isinstance(msg, Request):
            # a response is forwarded on its Via and CSeq alone: its From, To and Contact are the
            # UAs' business, parsed only if someone reads them (half the cost of a response)
            part = "From"
            _ = msg.from_
            part = "To"
            _ = msg.to
            if msg.method == "REGISTER":
                # RFC 4475 §3.1.2.13: the registrar stores Contacts, so it must be able to read them;
                # other Contacts travel opaque through a proxy (and are parsed where they are used)
                part = "Contact"
                msg.addresses("Contact")
        mf = seen.get("Max-Forwards")
        if mf is not None:
            part = "Max-Forwards"
            parse_int_header("value", mf, 255)
        exp = seen.get("Expires")
        # only the syntax: the registrar clamps big values (RFC 4475 §3.1.2.4 allows defaulting)
        if exp is not None and not _DIGITS.fullmatch(exp):
            part = "Expires"
            raise SipParseError(400, "not a number")
        ct = seen.get("Content-Type")
        if ct is not None:
            part = "Content-Type"
            m = _CONTENT_TYPE.fullmatch(ct)
            if m is None:
                raise SipParseError(400, "not type/subtype")
            if m.group(1):
                parse_header_params(m.group(1))
        if isinstance(msg, Request):
            if cseq.method != msg.method:
                part = "CSeq"
                # RFC 4475 §3.1.2.18: for an unknown method 501 is the more future-proof answer
                status = 400 if msg.method in KNOWN_METHODS else 501
                raise SipParseError(status, "method does not match the Request-Line")
            part = "Request-URI"
            uri = msg.uri
            if isinstance(uri, SipUri) and uri.headers:
                raise SipParseError(400, "headers are not allowed there (§19.1.1)")
    except SipParseError as e:
        raise SipParseError(e.status, f"Bad {part}: {e.reason}") from None


# ---- proxy-side checks -----------------------------------------------------------------------------------


def check_request(
    msg: Request, supported: set[str], *, options_as_uas: bool = True
) -> tuple[int, str] | None:
    """The request checks of RFC 3261 §16.3 that need no proxy state, in the order given there.

    Returns ``(status, text)`` to answer instead of forwarding, or None to go on (loop detection,
    §16.3 item 4, needs the proxy's own Via and is the proxy's job):

    * ``(416, "Unsupported URI Scheme")`` when the Request-URI is not sip, sips or tel (item 2);
    * ``(483, "Too Many Hops")`` when Max-Forwards is 0 (item 3). An OPTIONS with Max-Forwards 0
      is a hop-by-hop ping that the proxy may answer as a UAS (item 3 again): with
      ``options_as_uas`` (the default) that gives ``(200, "OK")``, otherwise 483 as RFC 4475
      §3.3.11 expects of a proxy that does not answer OPTIONS;
    * ``(420, "<values>")`` when Proxy-Require lists options not in ``supported`` (item 5,
      compared case-insensitively): here the text is the value for the response's Unsupported
      header, listing them as received (the reason phrase is "Bad Extension");
    * ``(400, reason)`` for a Proxy-Require that is not a list of option tags.

    :func:`check_response` turns the result into the response to send.
    """
    try:
        uri = msg.uri
        tags = msg.values("Proxy-Require")
    except SipParseError as e:  # only for a message that did not go through validate()
        return 400, e.reason
    if uri.scheme.lower() not in ("sip", "sips", "tel"):
        return 416, REASONS[416]
    mf = msg.get("Max-Forwards")
    if mf is not None and mf.strip(" \t").lstrip("0") == "":
        if msg.method == "OPTIONS" and options_as_uas:
            return 200, REASONS[200]
        return 483, REASONS[483]
    if tags:
        bad = [t for t in tags if not is_token(t)]
        if bad:
            return 400, f"Bad Proxy-Require: {bad[0][:40]!r} is not an option tag"
        lower = {s.lower() for s in supported}
        unknown = [t for t in tags if t.lower() not in lower]
        if unknown:
            return 420, ", ".join(unknown)
    return None


def check_response(req: Request, result: tuple[int, str], to_tag: str | None = None) -> Response:
    """The response for a :func:`check_request` result, with the Unsupported header of a 420
    (§20.40)."""
    status, text = result
    if status == 420:
        resp = make_response(req, 420, REASONS[420], to_tag)
        resp.add("Unsupported", text)
        return resp
    return make_response(req, status, text, to_tag)


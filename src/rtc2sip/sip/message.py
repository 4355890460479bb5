"""SIP requests and responses: parse, inspect, modify and serialise (RFC 3261 §7, §20, §25), sans-I/O.

Headers are kept as the list of lines they arrived in (canonical names, raw values), so a proxy that
forwards a message changes only what it touches; structured views (Via, CSeq, From, To, Contact, …)
are parsed on first use and cached until the header list is modified.

:func:`parse_message` never raises anything but :class:`MessageError`: a datagram or stream carries
whatever an attacker likes, and the transport must be able to drop or answer it and carry on. It is
proven against the RFC 4475 torture messages (``tests/unit/test_torture.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .errors import SipParseError
from .headers import (
    MULTI,
    NAME_LOOKUP,
    SINGLE,
    CSeq,
    NameAddr,
    Via,
    canonical,
    is_token,
    parse_cseq,
    parse_header_params,
    parse_int_header,
    parse_name_addr,
    parse_via,
    split_comma,
)
from .uri import SipUri, TelUri, Uri, parse_uri

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65535
MAGIC_COOKIE = "z9hG4bK"

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 429: "Too Many Requests",
    430: "Flow Failed", 439: "First Hop Lacks Outbound Support",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

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


class Message:
    """Common part of requests and responses."""

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"") -> None:
        self.headers: list[list[str]] = headers if headers is not None else []
        self.body = body
        self._cache: dict[str, Any] = {}

    # ---- raw header access -------------------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """First line of header ``name`` (canonical name), or None."""
        for h in self.headers:
            if h[0] == name:
                return h[1]
        return None

    def get_all(self, name: str) -> list[str]:
        return [h[1] for h in self.headers if h[0] == name]

    def values(self, name: str) -> list[str]:
        """Every value of a list header, across lines and commas (§7.3.1)."""
        if name not in MULTI:
            return [h[1] for h in self.headers if h[0] == name]
        out: list[str] = []
        for h in self.headers:
            if h[0] == name:
                out.extend(split_comma(h[1]))
        return out

    def has(self, name: str) -> bool:
        return any(h[0] == name for h in self.headers)

    def add(self, name: str, value: str, top: bool = False) -> None:
        """Append a header line, or put it above the first line of the same name when ``top``."""
        self._cache.clear()
        if top:
            for i, h in enumerate(self.headers):
                if h[0] == name:
                    self.headers.insert(i, [name, value])
                    return
            # no header of that name yet: keep topmost-first semantics by placing it first
            self.headers.insert(0, [name, value])
        else:
            self.headers.append([name, value])

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line, keeping the position of the first."""
        self._cache.clear()
        for i, h in enumerate(self.headers):
            if h[0] == name:
                h[1] = value
                self.headers[i + 1 :] = [x for x in self.headers[i + 1 :] if x[0] != name]
                return
        self.headers.append([name, value])

    def remove(self, name: str) -> None:
        self._cache.clear()
        self.headers = [h for h in self.headers if h[0] != name]

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the topmost value of a list header (top Via, top Route)."""
        for i, h in enumerate(self.headers):
            if h[0] == name:
                self._cache.clear()
                parts = split_comma(h[1])
                if len(parts) <= 1:
                    del self.headers[i]
                    return parts[0] if parts else None
                h[1] = ", ".join(parts[1:])
                return parts[0]
        return None

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the topmost value of a list header, keeping the others on its line."""
        for h in self.headers:
            if h[0] == name:
                self._cache.clear()
                parts = split_comma(h[1])
                h[1] = ", ".join([value, *parts[1:]])
                return
        self.add(name, value)

    # ---- structured views (parsed once, cached until the headers change) ---------------------------

    @property
    def vias(self) -> list[Via]:
        v = self._cache.get("vias")
        if v is None:
            v = self._cache["vias"] = [parse_via(x) for x in self.values("Via")]
        return v

    @property
    def top_via(self) -> Via:
        v = self._cache.get("vias")
        if v is not None:
            if not v:
                raise SipParseError(400, "Missing Via header")
            return v[0]  # type: ignore[no-any-return]
        v = self._cache.get("via0")
        if v is None:
            first = self.get("Via")
            parts = split_comma(first) if first is not None else []
            if not parts:
                raise SipParseError(400, "Missing Via header")
            v = self._cache["via0"] = parse_via(parts[0])
        return v

    @property
    def call_id(self) -> str:
        v = self.get("Call-ID")
        if v is None:
            raise SipParseError(400, "Missing Call-ID header")
        return v

    @property
    def cseq(self) -> CSeq:
        v = self._cache.get("cseq")
        if v is None:
            raw = self.get("CSeq")
            if raw is None:
                raise SipParseError(400, "Missing CSeq header")
            v = self._cache["cseq"] = parse_cseq(raw)
        return v

    def _addr(self, name: str) -> NameAddr:
        v = self._cache.get(name)
        if v is None:
            raw = self.get(name)
            if raw is None:
                raise SipParseError(400, f"Missing {name} header")
            v = self._cache[name] = parse_name_addr(raw, allow_star=False)
        return v

    @property
    def from_(self) -> NameAddr:
        return self._addr("From")

    @property
    def to(self) -> NameAddr:
        return self._addr("To")

    def addresses(self, name: str) -> list[NameAddr]:
        """Contact, Route, Record-Route, Path: every value parsed (a new list of cached objects)."""
        key = "addr:" + name
        v = self._cache.get(key)
        if v is None:
            v = self._cache[key] = [parse_name_addr(x) for x in self.values(name)]
        return list(v)

    @property
    def content_type(self) -> str | None:
        v = self.get("Content-Type")
        return v.split(";")[0].strip(" \t").lower() if v else None

    def option_tags(self, name: str) -> list[str]:
        """Require, Proxy-Require, Supported, Unsupported values (lower case)."""
        return [v.lower() for v in self.values(name)]

    # ---- serialisation -----------------------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message on the wire: headers as stored (one line each), then a Content-Length
        computed from the body, which is always sent, as streams require it (§20.14)."""
        parts = [self.start_line()]
        parts.extend([f"{h[0]}: {h[1]}" for h in self.headers if h[0] != "Content-Length"])
        parts.append(f"Content-Length: {len(self.body)}\r\n\r\n")
        return "\r\n".join(parts).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def iter_headers(self) -> Iterator[tuple[str, str]]:
        for h in self.headers:
            yield h[0], h[1]

    def copy_headers(self) -> list[list[str]]:
        return [[h[0], h[1]] for h in self.headers]


def _uri_state(u: Uri) -> tuple[object, ...]:
    """What :meth:`Request.start_line` compares to notice that the parsed URI was edited in place."""
    if isinstance(u, SipUri):
        return (u.scheme, u.user, u.password, u.host, u.port, tuple(u.params), u.headers)
    if isinstance(u, TelUri):
        return (u.number, tuple(u.params))
    return (u.scheme, u.rest)


class Request(Message):
    __slots__ = ("_uri", "_uri_state", "method", "uri_text", "version")

    def __init__(
        self,
        method: str,
        uri: str | Uri,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.version = version
        self._uri: Uri | None = None if isinstance(uri, str) else uri
        self._uri_state: tuple[object, ...] = () if isinstance(uri, str) else _uri_state(uri)
        self.uri_text = uri if isinstance(uri, str) else str(uri)

    @property
    def uri(self) -> Uri:
        """The Request-URI, parsed on first use. Edits of the returned object are serialised."""
        if self._uri is None:
            u = self._uri = parse_uri(self.uri_text)
            self._uri_state = _uri_state(u)
            return u
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value
        self._uri_state = _uri_state(value)
        self.uri_text = str(value)

    def start_line(self) -> str:
        u = self._uri
        if u is not None:
            # the text as received is kept unless the parsed URI was changed in place
            state = _uri_state(u)
            if state != self._uri_state:
                self._uri_state = state
                self.uri_text = str(u)
        return f"{self.method} {self.uri_text} {self.version}"

    def copy(self) -> Request:
        return Request(self.method, self.uri_text, self.copy_headers(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text} call-id={self.get('Call-ID')}>"


class Response(Message):
    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.copy_headers(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self.get('Call-ID')}>"


class MessageError(SipParseError):
    """A message that cannot be processed, with the status to answer it with (§8.2, §16.3, §18).

    ``message`` is what could be parsed (start line and raw headers), or None. Only a request that is
    :attr:`answerable` gets an error response; a bad response, or a request without the headers a
    response copies, is dropped.
    """

    def __init__(self, status: int, reason: str, message: Message | None) -> None:
        super().__init__(status, reason)
        self.message = message

    @property
    def answerable(self) -> bool:
        """True for a request that has the headers a response copies (§8.2.6.2: Via, From, To,
        Call-ID, CSeq), so that :func:`make_response` builds a response its sender can match.
        When the top Via itself is what failed, the response goes to the packet's source."""
        m = self.message
        return isinstance(m, Request) and all(m.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq"))


# ---- parsing ---------------------------------------------------------------------------------------


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


# ---- proxy-side checks -----------------------------------------------------------------------------


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


def make_response(req: Request, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
    """A response to ``req`` with the headers §8.2.6.2 copies (Via, From, To, Call-ID, CSeq)."""
    headers: list[list[str]] = []
    for h in req.headers:
        if h[0] in ("Via", "From", "Call-ID", "CSeq"):
            headers.append([h[0], h[1]])
        elif h[0] == "To":
            value = h[1]
            if to_tag is not None and status > 100:
                try:
                    if req.to.tag is None:
                        value = f"{value};tag={to_tag}"
                except SipParseError:
                    pass
            headers.append(["To", value])
        elif h[0] == "Record-Route" and 100 < status < 300:
            headers.append([h[0], h[1]])
    # Timestamp is echoed in 100 Trying (§8.2.6.1)
    if status == 100:
        ts = req.get("Timestamp")
        if ts is not None:
            headers.append(["Timestamp", ts])
    return Response(status, reason, headers)


# ---- stream framing --------------------------------------------------------------------------------


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (§18.3), with bounded buffers.

    ``feed(data)`` returns the whole messages now available as bytes (each still to be parsed, with
    ``datagram=False``) and counts in ``pings`` the CRLF keepalives seen between messages (RFC 5626
    §4.4.1: a double CRLF ping gets a single CRLF pong; the transport resets the counter). A lone
    CRLF (a pong, or the junk §7.5 says to ignore) is skipped. A framing error (no or conflicting
    Content-Length, header block or message above ``max_size``) raises :class:`MessageError`: the
    stream cannot be resynchronised and must be closed.
    """

    # Content-Length lines, compact form included, folded continuations included (§7.3.1)
    _CL = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.pings = 0
        self._scanned = 0  # bytes of buf already searched for the end of the header block

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        buf += data
        out: list[bytes] = []
        while buf:
            if buf[0] in b"\r\n":
                if not self._skip_keepalives():
                    break
                continue
            hend, bstart = _head_end_buf(buf, self._scanned)
            if hend < 0:
                if len(buf) > self.max_size:
                    raise MessageError(513, "Header block too large", None)
                self._scanned = max(0, len(buf) - 3)
                break
            if bstart > self.max_size:
                raise MessageError(513, "Header block too large", None)
            values = {v.strip(b" \t\r\n") for v in self._CL.findall(buf, 0, hend)}
            if not values:
                raise MessageError(400, "Missing Content-Length on a stream", None)
            if len(values) > 1:
                raise MessageError(400, "Conflicting Content-Length values", None)
            raw = values.pop()
            if not raw.isdigit() or len(raw) > 10:
                raise MessageError(400, "Malformed Content-Length", None)
            total = bstart + int(raw)
            if total > self.max_size:
                raise MessageError(513, "Message Too Large", None)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scanned = 0
        return out

    def _skip_keepalives(self) -> bool:
        """Consume CRLF keepalives at the head of the buffer; False when more bytes are needed to
        tell a double-CRLF ping from a lone CRLF."""
        buf = self.buf
        if buf[:4] == b"\r\n\r\n":
            self.pings += 1
            del buf[:4]
            return True
        if buf[:2] == b"\r\n":
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return False
            del buf[:2]
            return True
        if buf[:1] == b"\r" and len(buf) == 1:
            return False
        del buf[:1]  # a bare CR or LF: junk before a start line (§7.5)
        return True


def _head_end_buf(buf: bytearray, start: int) -> tuple[int, int]:
    """Like :func:`_head_end` on a buffer, searching from ``start``; (-1, -1) when incomplete."""
    k = buf.find(b"\n\r\n", start)
    j = buf.find(b"\n\n", start, k + 1 if k >= 0 else len(buf))
    if j >= 0:
        return j, j + 2
    if k >= 0:
        return k, k + 3
    return -1, -1

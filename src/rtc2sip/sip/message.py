"""SIP requests and responses: parse, inspect, modify and serialise (RFC 3261 §7, §20, §25), sans-I/O.

Headers are kept as the list of lines they arrived in (canonical names, raw values), so a proxy that
forwards a message changes only what it touches; structured views (Via, CSeq, From, To, …) are
parsed on first use and cached until the header is modified.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .errors import SipParseError
from .headers import (
    MULTI,
    SINGLE,
    CSeq,
    NameAddr,
    Via,
    canonical,
    is_token,
    parse_cseq,
    parse_int_header,
    parse_name_addr,
    parse_via,
    split_comma,
)
from .uri import Uri, parse_uri

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

_REQUEST_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) ([A-Za-z]+/\d+\.\d+)$")
_STATUS_LINE = re.compile(r"^([A-Za-z]+/\d+\.\d+) (\d{3})(?: (.*))?$")
_HEADER_NAME_END = re.compile(r"[ \t]*:")


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
        out: list[str] = []
        for h in self.headers:
            if h[0] == name:
                out.extend(split_comma(h[1]) if name in MULTI else [h[1]])
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
        for h in self.headers:
            if h[0] == name:
                self._cache.clear()
                parts = split_comma(h[1])
                parts[0] = value
                h[1] = ", ".join(parts)
                return
        self.add(name, value)

    # ---- structured views --------------------------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        v = self._cache.get("vias")
        if v is None:
            v = self._cache["vias"] = [parse_via(x) for x in self.values("Via")]
        return v  # type: ignore[no-any-return]

    @property
    def top_via(self) -> Via:
        v = self._cache.get("via0")
        if v is None:
            first = self.get("Via")
            if first is None:
                raise SipParseError(400, "Missing Via header")
            v = self._cache["via0"] = parse_via(split_comma(first)[0])
        return v  # type: ignore[no-any-return]

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
        return v  # type: ignore[no-any-return]

    def _addr(self, name: str) -> NameAddr:
        v = self._cache.get(name)
        if v is None:
            raw = self.get(name)
            if raw is None:
                raise SipParseError(400, f"Missing {name} header")
            v = self._cache[name] = parse_name_addr(raw)
        return v  # type: ignore[no-any-return]

    @property
    def from_(self) -> NameAddr:
        return self._addr("From")

    @property
    def to(self) -> NameAddr:
        return self._addr("To")

    def addresses(self, name: str) -> list[NameAddr]:
        """Contact, Route, Record-Route, Path: every value parsed."""
        return [parse_name_addr(v) for v in self.values(name)]

    @property
    def content_type(self) -> str | None:
        v = self.get("Content-Type")
        return v.split(";")[0].strip().lower() if v else None

    def option_tags(self, name: str) -> list[str]:
        """Require, Proxy-Require, Supported, Unsupported values (lower case)."""
        return [v.lower() for v in self.values(name)]

    # ---- serialisation -----------------------------------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        parts = [self.start_line()]
        for name, value in self.headers:
            if name != "Content-Length":
                parts.append(f"{name}: {value}")
        parts.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(parts) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def iter_headers(self) -> Iterator[tuple[str, str]]:
        for h in self.headers:
            yield h[0], h[1]

    def copy_headers(self) -> list[list[str]]:
        return [[h[0], h[1]] for h in self.headers]


class Request(Message):
    __slots__ = ("_uri", "method", "uri_text", "version")

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
        self.uri_text = uri if isinstance(uri, str) else str(uri)

    @property
    def uri(self) -> Uri:
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @uri.setter
    def uri(self, value: Uri) -> None:
        self._uri = value
        self.uri_text = str(value)

    def start_line(self) -> str:
        if self._uri is not None:
            self.uri_text = str(self._uri)
        return f"{self.method} {self.uri_text} {self.version}"

    def copy(self) -> Request:
        r = Request(self.method, self.uri_text, self.copy_headers(), self.body, self.version)
        return r

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
    """A parse error that still produced enough of the message to answer it (a request with Via,
    Call-ID, From, To and CSeq gets an error response; anything else is dropped)."""

    def __init__(self, status: int, reason: str, message: Message | None) -> None:
        super().__init__(status, reason)
        self.message = message


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :]
    end = data.find(b"\n\n")  # tolerate bare LF, as many stacks do
    if end >= 0:
        return data[:end], data[end + 2 :]
    return data.rstrip(b"\r\n"), b""


def parse_message(data: bytes, max_size: int = DEFAULT_MAX_SIZE, datagram: bool = True) -> Request | Response:
    """Parse one whole message.

    Raises :class:`MessageError` (with the partial message when there is one) for anything
    malformed. For datagrams a missing Content-Length means "the rest of the packet" (§18.3).
    """
    if len(data) > max_size:
        raise MessageError(513, "Message Too Large", None)
    # leading CRLFs before a message are keepalives or junk to ignore (§7.5)
    data = data.lstrip(b"\r\n")
    head, body = _split_head(data)
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    first = lines[0].rstrip("\r")
    msg: Request | Response
    m = _REQUEST_LINE.match(first)
    if m:
        method, uri, version = m.groups()
        msg = Request(method, uri, [], b"", version)
    else:
        m2 = _STATUS_LINE.match(first)
        if not m2:
            raise MessageError(400, "Malformed start line", None)
        version, code, reason = m2.groups()
        status = int(code)
        if status < 100:
            raise MessageError(400, "Bad status code", None)
        msg = Response(status, reason or "", [], b"", version)
    headers = msg.headers
    error: tuple[int, str] | None = None
    for raw in lines[1:]:
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        if line[0] in " \t":  # folded continuation of the previous header (§7.3.1)
            if not headers:
                raise MessageError(400, "Continuation line before any header", None)
            headers[-1][1] = (headers[-1][1] + " " + line.strip()).strip()
            continue
        colon = line.find(":")
        if colon <= 0:
            error = error or (400, f"Malformed header line {line[:40]!r}")
            continue
        name = line[:colon].rstrip(" \t")
        try:
            cname = canonical(name)
        except SipParseError as e:
            error = error or (e.status, e.reason)
            continue
        headers.append([cname, line[colon + 1 :].strip(" \t")])
    # Content-Length framing (§18.3, §20.14)
    cl_raw = msg.get_all("Content-Length")
    if cl_raw:
        try:
            cl = parse_int_header("Content-Length", cl_raw[0])
        except SipParseError as e:
            raise MessageError(400, e.reason, msg) from None
        if cl > len(body):
            raise MessageError(400, "Content-Length larger than the message", msg)
        body = body[:cl]
    elif not datagram:
        raise MessageError(400, "Missing Content-Length on a stream", msg)
    msg.body = body
    if error is not None:
        raise MessageError(error[0], error[1], msg)
    validate(msg)
    return msg


def validate(msg: Request | Response) -> None:
    """The checks every element applies before acting on a message (§8.2, §16.3)."""
    try:
        if msg.version.upper() != SIP_VERSION:
            raise SipParseError(505, "Version Not Supported")
        for name in SINGLE:
            if len(msg.get_all(name)) > 1:
                values = {v.strip() for v in msg.get_all(name)}
                if len(values) > 1:
                    raise SipParseError(400, f"Multiple {name} headers")
        if msg.get("Via") is None:
            raise SipParseError(400, "Missing Via header")
        _ = msg.vias
        for name in ("Call-ID", "From", "To", "CSeq"):
            if msg.get(name) is None:
                raise SipParseError(400, f"Missing {name} header")
        cseq = msg.cseq
        _ = msg.from_
        _ = msg.to
        mf = msg.get("Max-Forwards")
        if mf is not None:
            parse_int_header("Max-Forwards", mf, 255)
        exp = msg.get("Expires")
        if exp is not None:
            parse_int_header("Expires", exp)
        ct = msg.get("Content-Type")
        if ct is not None and not re.match(r"^\s*[A-Za-z0-9\-.!%*_+`'~]+\s*/\s*[A-Za-z0-9\-.!%*_+`'~]+", ct):
            raise SipParseError(400, "Malformed Content-Type")
        if isinstance(msg, Request):
            if not is_token(msg.method):
                raise SipParseError(400, "Bad method")
            if cseq.method != msg.method:
                raise SipParseError(400, "CSeq method does not match the request method")
            if msg.get("Call-ID", ) == "":
                raise SipParseError(400, "Empty Call-ID")
            _ = msg.uri
    except MessageError:
        raise
    except SipParseError as e:
        raise MessageError(e.status, e.reason, msg) from None


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (§18.3), with bounded buffers.

    ``feed(data)`` returns the whole messages now available as bytes (each still to be parsed) and
    counts the CRLF keepalives seen (RFC 5626 §3.5.1: a double CRLF ping gets a single CRLF pong).
    A framing error (no Content-Length, header block or body too large) raises
    :class:`MessageError`: the stream cannot be resynchronised and must be closed.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.pings = 0

    _CL = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$")

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            # keepalives between messages: "\r\n\r\n" is a ping, "\r\n" alone a pong
            i = 0
            while self.buf[i : i + 4] == b"\r\n\r\n":
                self.pings += 1
                i += 4
            while self.buf[i : i + 2] == b"\r\n":
                i += 2
            if i:
                del self.buf[:i]
            if not self.buf:
                break
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > self.max_size:
                    raise MessageError(513, "Header block too large", None)
                break
            head = bytes(self.buf[:end])
            m = self._CL.search(head)
            if m is None:
                raise MessageError(400, "Missing Content-Length on a stream", None)
            total = end + 4 + int(m.group(1))
            if total > self.max_size:
                raise MessageError(513, "Message Too Large", None)
            if len(self.buf) < total:
                break
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


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

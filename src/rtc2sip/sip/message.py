"""SIP requests and responses as data: inspect, modify, build and serialise (RFC 3261 §7, §8.2.6, §20), sans-I/O.

Headers are kept as the list of lines they arrived in (canonical names, raw values), so a proxy that
forwards a message changes only what it touches; structured views (Via, CSeq, From, To, Contact, …)
are parsed on first use and cached until the header list is modified.

Parsing is in ``parser`` (:func:`parse_message`, which raises nothing but :class:`MessageError`),
stream framing in ``framing``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .errors import SipParseError
from .headers import (
    MULTI,
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_comma,
)
from .uri import SipUri, TelUri, Uri, parse_uri

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAGIC_COOKIE",
    "REASONS",
    "SIP_VERSION",
    "Message",
    "MessageError",
    "Request",
    "Response",
    "make_response",
]

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


# ---- messages --------------------------------------------------------------------------------------------


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


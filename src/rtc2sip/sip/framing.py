"""SIP over a byte stream (TCP, TLS): cutting it into messages by Content-Length (RFC 3261 §18.3) and
CRLF keepalives (RFC 5626 §4.4.1), sans-I/O.
"""

from __future__ import annotations

import re

from .message import DEFAULT_MAX_SIZE, MessageError

__all__ = [
    "StreamFramer",
]

class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (§18.3), with bounded buffers.

    ``feed(data)`` returns the whole messages now available as bytes (each still to be parsed, with
    ``datagram=False``) and counts in ``pings`` the CRLF keepalives seen between messages (RFC 5626
    §4.4.1: a double CRLF ping gets a single CRLF pong; the transport resets the counter). A lone
    CRLF (a pong, or the junk §7.5 says to ignore) is skipped. A framing error (no or conflicting
    Content-Length, header block or message above ``max_size``) raises :class:`MessageError`: the
    stream cannot be resynchronised and must be closed. Before it does, what the sender is owed is
    kept: ``salvaged`` holds the whole messages cut from the same data before the error (they are
    still to be handled and answered), and ``rejected`` the header block whose Content-Length was
    missing, conflicting or malformed, so that it can be answered 400 (parsed, it fails the same
    way, with the reason) rather than met with silence.
    """

    # Content-Length lines, compact form included, folded continuations included (§7.3.1)
    _CL = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:((?:[^\r\n]|\r?\n[ \t])*)")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.buf = bytearray()
        self.max_size = max_size
        self.pings = 0
        self._scanned = 0  # bytes of buf already searched for the end of the header block
        # the size of the message at the head of buf once its header block is read: a body arriving
        # in many segments must not have the header block searched again for each (quadratic)
        self._total: int | None = None
        self.salvaged: list[bytes] = []
        self.rejected: bytes | None = None

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            self._feed(data, out)
        except MessageError:
            self.salvaged = out
            raise
        return out

    def _feed(self, data: bytes, out: list[bytes]) -> None:
        buf = self.buf
        buf += data
        while buf:
            total = self._total
            if total is None:
                total = self._next_total()
                if total is None:
                    break
                if total < 0:
                    continue
                self._total = total
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
            self._scanned = 0
            self._total = None

    def _next_total(self) -> int | None:
        """The size of the message at the head of the buffer; None when more bytes are needed, -1 when
        keepalives were consumed instead. Raises MessageError on a framing error."""
        buf = self.buf
        if buf[0] in b"\r\n":
            return -1 if self._skip_keepalives() else None
        hend, bstart = _head_end_buf(buf, self._scanned)
        if hend < 0:
            if len(buf) > self.max_size:
                raise MessageError(513, "Header block too large", None)
            self._scanned = max(0, len(buf) - 3)
            return None
        if bstart > self.max_size:
            raise MessageError(513, "Header block too large", None)
        values = {v.strip(b" \t\r\n") for v in self._CL.findall(buf, 0, hend)}
        if not values:
            self.rejected = bytes(buf[:bstart])
            raise MessageError(400, "Missing Content-Length on a stream", None)
        if len(values) > 1:
            self.rejected = bytes(buf[:bstart])
            raise MessageError(400, "Conflicting Content-Length values", None)
        raw = values.pop()
        if not raw.isdigit() or len(raw) > 10:
            self.rejected = bytes(buf[:bstart])
            raise MessageError(400, "Malformed Content-Length", None)
        total = bstart + int(raw)
        if total > self.max_size:
            raise MessageError(513, "Message Too Large", None)
        return total

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


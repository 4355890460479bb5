"""A deterministic mutator: the same seed gives the same inputs, so a run can be repeated exactly.

Byte-level mutations (bit flips, interesting values, insertions, deletions, duplications, splices of
two seeds), token-aware ones for the text protocols (header lines duplicated, removed, swapped or
corrupted; Content-Length changed; huge numbers; odd encodings), stacked one to four deep, and a
share of pure random inputs. No coverage feedback: docs/FUZZING.md says why.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence

__all__ = ["Mutator"]

_INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0D, 0x10, 0x14, 0x15, 0x16, 0x17, 0x20, 0x3A, 0x3B,
                      0x40, 0x7F, 0x80, 0x81, 0xBF, 0xC0, 0xC8, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xDF, 0xE0, 0xFE,
                      0xFF)
_INTERESTING_INTS = (0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 20, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095,
                     4096, 32767, 32768, 65535, 65536, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_WEIRD_TEXT = (
    b"", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00", b"\xff", b"\xc0\x80", b"\xed\xa0\x80",
    b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\xf4\x90\x80\x80", "é".encode(), "\u0130".encode(), b"%00", b"%",
    b"\\", b'"', b"<", b">", b"[", b"]", b"[::1", b"::", b";", b",", b"=", b":", b"/", b"@", b"*",
    b"-1", b"0", b"00000000000000000000001", b"4294967296", b"18446744073709551616", b"9" * 40, b"1e999",
    b"nan", b"inf", b"0x10", b"1.5", b"+1", b"A" * 300, b";" * 200, b"<" * 200, b"(" * 500, b"[" * 1000,
)
_TOKENS = (
    # SIP and SDP
    b"Via", b"v", b"Content-Length", b"l", b"Content-Type", b"c", b"From", b"f", b"To", b"t", b"Call-ID", b"i",
    b"CSeq", b"Contact", b"m", b"Route", b"Record-Route", b"Max-Forwards", b"Expires", b"Proxy-Require",
    b"Authorization", b"WWW-Authenticate", b"Supported", b"Require", b"Event", b"Refer-To", b"Replaces",
    b"SIP/2.0", b"SIP/2.0/UDP", b"SIP/2.0/WS", b"INVITE", b"ACK", b"BYE", b"CANCEL", b"REGISTER", b"OPTIONS",
    b"sip:", b"sips:", b"tel:", b"<sip:a@b>", b";lr", b";branch=z9hG4bK", b";rport", b";received=", b";tag=",
    b";transport=ws", b";ob", b";flow=", b";maddr=", b";expires=", b"application/sdp",
    b"a=", b"m=audio", b"m=video", b"m=application", b"c=IN IP4 ", b"c=IN IP6 ", b"o=", b"t=0 0", b"b=AS:",
    b"a=rtpmap:", b"a=fmtp:", b"a=rtcp-fb:", b"a=extmap:", b"a=ssrc:", b"a=ssrc-group:FID ", b"a=mid:",
    b"a=group:BUNDLE ", b"a=candidate:", b"a=ice-ufrag:", b"a=ice-pwd:", b"a=fingerprint:sha-256 ",
    b"a=setup:", b"a=crypto:", b"a=rtcp:", b"a=rtcp-mux", b"a=sendonly", b"a=inactive", b"a=msid:",
    b"UDP/TLS/RTP/SAVPF", b"RTP/AVP", b"RTP/SAVP", b"opus/48000/2", b"telephone-event/8000", b"apt=",
    b"profile-level-id=", b"packetization-mode=",
    # HTTP and WebSocket
    b"GET / HTTP/1.1", b"Host", b"Upgrade", b"websocket", b"Connection", b"Origin", b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version", b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions", b"permessage-deflate",
    # configuration
    b"<?xml version=\"1.0\" encoding=\"x-unknown\"?>", b"<?xml version=\"1.0\" encoding=\"utf-16\"?>",
    b"<!DOCTYPE config [<!ENTITY e \"x\">]>", b"&e;", b"&amp;", b"<![CDATA[", b"]]>", b"<!--", b"-->",
    b"<transport>", b"</transport>", b"<codecs>", b"<ssl-certificates>", b"<stun-server>", b"<srtp-type>",
    b"[gateway]", b"[limits]", b"[media]", b"[admin]", b"[[listen]]", b"[users]", b"[recording]", b"[forward]",
    b"[webrtc2sip]", b"ws_origins", b"domains", b"rtp_ports", b"listen", b"upstream_proxy", b"\"\"\"", b"'''",
    b"true", b"1979-05-27T07:32:00Z", b"[[", b"]]", b"{", b"}",
)
_NUMBER = re.compile(rb"[0-9]+")
_LINE_SPLIT = re.compile(rb"(\r?\n)")


class Mutator:
    """Inputs for one target: mutations of its seeds, ``random_share`` of them purely random."""

    def __init__(self, seeds: Sequence[bytes], seed: int = 0, max_size: int = 1 << 16,
                 random_share: float = 0.05) -> None:
        self.seeds = [s for s in seeds] or [b""]
        self.rng = random.Random(seed)
        self.max_size = max_size
        self.random_share = random_share
        self._ops = (
            self._flip_bit, self._set_byte, self._insert_bytes, self._delete_range, self._duplicate_range,
            self._splice, self._set_int, self._flip_bit, self._set_byte, self._delete_range,
        )
        self._text_ops = (
            self._dup_line, self._del_line, self._swap_lines, self._corrupt_line, self._change_number,
            self._insert_token, self._insert_weird, self._replace_token, self._content_length, self._repeat_chunk,
        )

    def __iter__(self) -> Iterator[bytes]:
        while True:
            yield self.next()

    def next(self) -> bytes:
        rng = self.rng
        if rng.random() < self.random_share:
            return rng.randbytes(rng.choice((0, 1, 2, 4, 12, 20, 64, 300, 2000)) + rng.randrange(8))
        data = bytearray(rng.choice(self.seeds))
        text = _looks_like_text(data)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            op = rng.choice(self._text_ops) if text and rng.random() < 0.6 else rng.choice(self._ops)
            data = op(data)
        if len(data) > self.max_size:
            del data[self.max_size :]
        return bytes(data)

    # -- byte level ------------------------------------------------------------------------------------

    def _pos(self, data: bytearray, end: bool = False) -> int:
        n = len(data) + (1 if end else 0)
        if n <= 0:
            return 0
        # favour the start: headers (STUN, RTP, RTCP, DTLS, the start line) are where parsers branch
        if self.rng.random() < 0.5:
            return self.rng.randrange(min(n, 32))
        return self.rng.randrange(n)

    def _flip_bit(self, data: bytearray) -> bytearray:
        if data:
            data[self._pos(data)] ^= 1 << self.rng.randrange(8)
        return data

    def _set_byte(self, data: bytearray) -> bytearray:
        if data:
            data[self._pos(data)] = self.rng.choice(_INTERESTING_BYTES) if self.rng.random() < 0.7 \
                else self.rng.randrange(256)
        return data

    def _insert_bytes(self, data: bytearray) -> bytearray:
        pos = self._pos(data, end=True)
        data[pos:pos] = self.rng.randbytes(self.rng.choice((1, 1, 2, 4, 8, 16, 64)))
        return data

    def _delete_range(self, data: bytearray) -> bytearray:
        if data:
            pos = self._pos(data)
            del data[pos : pos + self.rng.choice((1, 1, 2, 4, 8, 16, 100, 10000))]
        return data

    def _duplicate_range(self, data: bytearray) -> bytearray:
        if data:
            pos = self._pos(data)
            chunk = data[pos : pos + self.rng.choice((1, 2, 4, 8, 16, 64, 512))]
            at = self._pos(data, end=True)
            data[at:at] = chunk * self.rng.choice((1, 1, 2, 10, 100))
        return data

    def _splice(self, data: bytearray) -> bytearray:
        other = self.rng.choice(self.seeds)
        cut = self._pos(data, end=True)
        ocut = self.rng.randrange(len(other) + 1)
        return data[:cut] + bytearray(other[ocut:])

    def _set_int(self, data: bytearray) -> bytearray:
        size = self.rng.choice((1, 2, 4))
        if len(data) >= size:
            pos = self._pos(data) if self.rng.random() < 0.5 else self.rng.randrange(len(data) - size + 1)
            pos = min(pos, len(data) - size)
            value = self.rng.choice(_INTERESTING_INTS) & ((1 << (8 * size)) - 1)
            data[pos : pos + size] = value.to_bytes(size, self.rng.choice(("big", "little")))
        return data

    # -- text level ------------------------------------------------------------------------------------

    def _lines(self, data: bytearray) -> list[bytes]:
        return _LINE_SPLIT.split(bytes(data))

    def _dup_line(self, data: bytearray) -> bytearray:
        parts = self._lines(data)
        i = self.rng.randrange(0, len(parts), 2) if len(parts) > 1 else 0
        at = self.rng.randrange(0, len(parts) + 1, 2) if len(parts) > 1 else 0
        parts[at:at] = [parts[i], b"\r\n"] * self.rng.choice((1, 1, 2, 50))
        return bytearray(b"".join(parts))

    def _del_line(self, data: bytearray) -> bytearray:
        parts = self._lines(data)
        if len(parts) > 1:
            i = self.rng.randrange(0, len(parts) - 1, 2)
            del parts[i : i + 2]
        return bytearray(b"".join(parts))

    def _swap_lines(self, data: bytearray) -> bytearray:
        parts = self._lines(data)
        if len(parts) > 2:
            i, j = self.rng.randrange(0, len(parts), 2), self.rng.randrange(0, len(parts), 2)
            parts[i], parts[j] = parts[j], parts[i]
        return bytearray(b"".join(parts))

    def _corrupt_line(self, data: bytearray) -> bytearray:
        parts = self._lines(data)
        i = self.rng.randrange(0, len(parts), 2)
        line = parts[i]
        sep = max(line.find(b":"), line.find(b"="), line.find(b">"))
        value = self.rng.choice(_WEIRD_TEXT)
        parts[i] = line[: sep + 1] + value if sep >= 0 and self.rng.random() < 0.7 else \
            line[: self.rng.randrange(len(line) + 1)] + value
        return bytearray(b"".join(parts))

    def _change_number(self, data: bytearray) -> bytearray:
        numbers = list(_NUMBER.finditer(data))
        if not numbers:
            return self._insert_weird(data)
        m = self.rng.choice(numbers)
        choice = self.rng.random()
        if choice < 0.4:
            new = str(self.rng.choice(_INTERESTING_INTS) + self.rng.choice((-1, 0, 0, 1))).encode()
        elif choice < 0.7:
            new = str(int(m.group()) + self.rng.randrange(-3, 4)).encode()
        else:
            new = self.rng.choice((b"9" * self.rng.randrange(10, 400), b"0" * 30 + b"1", b"-1", b""))
        return data[: m.start()] + bytearray(new) + data[m.end() :]

    def _insert_token(self, data: bytearray) -> bytearray:
        pos = self.rng.randrange(len(data) + 1)
        data[pos:pos] = self.rng.choice(_TOKENS)
        return data

    def _insert_weird(self, data: bytearray) -> bytearray:
        pos = self.rng.randrange(len(data) + 1)
        data[pos:pos] = self.rng.choice(_WEIRD_TEXT)
        return data

    def _replace_token(self, data: bytearray) -> bytearray:
        present = [t for t in self.rng.sample(_TOKENS, 12) if t in data]
        if not present:
            return self._insert_token(data)
        old = self.rng.choice(present)
        return bytearray(bytes(data).replace(old, self.rng.choice(_TOKENS + _WEIRD_TEXT), 1))

    def _content_length(self, data: bytearray) -> bytearray:
        m = re.search(rb"(?i)(content-length|\nl)[ \t]*:[ \t]*([0-9]*)", data)
        value = self.rng.choice((b"0", b"1", b"-1", b"99999999999", b"4294967296", b" 10 ", b"", b"1, 2",
                                 str(self.rng.randrange(4000)).encode()))
        if m is None:
            at = data.find(b"\r\n")
            at = at + 2 if at >= 0 else 0
            data[at:at] = b"Content-Length: " + value + b"\r\n"
            return data
        return data[: m.start(2)] + bytearray(value) + data[m.end(2) :]

    def _repeat_chunk(self, data: bytearray) -> bytearray:
        """Deep nesting and long runs: what recursion limits and quadratic loops are made of."""
        pos = self.rng.randrange(len(data) + 1)
        chunk = self.rng.choice((b"(", b"[", b"<a>", b"\"", b"\\", b";x", b",", b" ", b"\r\n ", b"=", b"%"))
        data[pos:pos] = chunk * self.rng.choice((10, 100, 1000, 5000))
        return data


def _looks_like_text(data: bytes | bytearray) -> bool:
    head = data[:64]
    return bool(head) and sum(32 <= b < 127 or b in (9, 10, 13) for b in head) >= 0.9 * len(head)

"""SDP (RFC 8866) as data: parse, inspect, edit and serialise a session description (§5, §9).

The attribute list of each level is the source of truth: typed accessors read from it and the
setters rewrite it in place, so unknown attributes keep their values and their order and a parsed
description serialises back to the same text (lines in the order RFC 8866 §9 mandates, CRLF ends).

Every failure on peer input is an :class:`SdpError` (which carries the SIP status 488, RFC 3261
§13.3.1.1 / RFC 3264 §6): the caller rejects that one offer and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .attributes import (
    _VALUE_PARSERS,
    DIRECTIONS,
    STATIC_PAYLOADS,
    Attribute,
    Candidate,
    Codec,
    Crypto,
    Extmap,
    Fingerprint,
    Group,
    Msid,
    Rtcp,
    RtpMap,
    Ssrc,
    _pt_prefixed,
    _ptime,
)
from .fields import Bandwidth, Connection, Origin, SdpError, Timing, _int, _split, _token

__all__ = [
    "MAX_SDP_SIZE",
    "Media",
    "SessionDescription",
]

# A SIP body larger than this is refused before any work: Chrome's richest audio+video offer with
# simulcast is about 12 KB, so 64 KiB leaves room without letting a peer make us split megabytes.
MAX_SDP_SIZE = 65536

# Each m= section costs a Media object and its attribute list; 64 is far beyond any real call.
MAX_MEDIA = 64


# --------------------------------------------------------------------------------------------------
# Levels


class _Attributes:
    """Attribute access shared by the session and media levels."""

    attributes: list[Attribute]

    def get(self, name: str) -> str | None:
        """The value of the first ``a=name`` ('' for a property), None when absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def get_all(self, name: str) -> list[str]:
        return [a.value or "" for a in self.attributes if a.name == name]

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def add(self, name: str, value: object = None) -> None:
        self.attributes.append(Attribute(name, None if value is None else str(value)))

    def remove(self, *names: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name not in names]

    def set(self, name: str, value: object = None) -> None:
        """Replace every ``a=name`` by one line, at the place of the first (appended if none)."""
        new = Attribute(name, None if value is None else str(value))
        for i, a in enumerate(self.attributes):
            if a.name == name:
                self.attributes[i] = new
                self.attributes[i + 1 :] = [b for b in self.attributes[i + 1 :] if b.name != name]
                return
        self.attributes.append(new)

    def set_flag(self, name: str, on: bool) -> None:
        if on:
            if not self.has(name):
                self.add(name)
        else:
            self.remove(name)

    def _direction(self) -> str | None:
        for a in self.attributes:
            if a.name in DIRECTIONS:
                return a.name
        return None

    def _set_direction(self, direction: str | None) -> None:
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"not a direction: {direction!r}")
        for i, a in enumerate(self.attributes):
            if a.name in DIRECTIONS:
                self.remove(*DIRECTIONS)
                if direction is not None:
                    self.attributes.insert(i, Attribute(direction))
                return
        if direction is not None:
            self.attributes.append(Attribute(direction))

    # ICE, DTLS and grouping attributes may sit at session level, media level or both (RFC 8839
    # §5.4, RFC 8842 §5); these read this level only, Media's versions fall back to the session.

    @property
    def ice_ufrag(self) -> str | None:
        return self.get("ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        return self.get("ice-pwd")

    @property
    def ice_options(self) -> tuple[str, ...]:
        return tuple(o for v in self.get_all("ice-options") for o in v.split())

    @property
    def fingerprints(self) -> list[Fingerprint]:
        return [Fingerprint.parse(v) for v in self.get_all("fingerprint")]

    @property
    def setup(self) -> str | None:
        return self.get("setup")


@dataclass(eq=False)
class Media(_Attributes):
    """One m= section (RFC 8866 §5.14) with its i=, c=, b=, k= and a= lines."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    info: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    session: SessionDescription | None = field(default=None, repr=False)

    @classmethod
    def parse_m_line(cls, text: str) -> Media:
        parts = _split(text, 3, "m=")
        kind, port_text, proto = parts[:3]
        port_text, _, count = port_text.partition("/")
        media = cls(
            _token(kind, "media type"), _int(port_text, "media port", 0, 65535), proto, parts[3:],
            _int(count, "port count", 1, 65535) if count else None,
        )
        if media.is_rtp:
            for f in media.formats:
                _int(f, "payload type", 0, 127)
        return media

    def m_line(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join((self.kind, port, self.proto, *self.formats))

    # -- transport ---------------------------------------------------------------------------------

    @property
    def is_rtp(self) -> bool:
        """RTP/AVP, RTP/SAVPF, UDP/TLS/RTP/SAVPF, TCP/DTLS/RTP/SAVP...: formats are payload types."""
        return "RTP/" in self.proto

    @property
    def is_webrtc(self) -> bool:
        """DTLS-SRTP profile (RFC 5764 §8): ``UDP/TLS/RTP/SAVP[F]`` or ``TCP/DTLS/...``."""
        return "TLS/RTP/" in self.proto

    @property
    def is_avpf(self) -> bool:
        """Feedback profile (RFC 4585 §4.1, RFC 5124): rtcp-fb lines are meaningful."""
        return self.proto.endswith("AVPF")

    @property
    def bundle_only(self) -> bool:
        return self.has("bundle-only")

    @property
    def rejected(self) -> bool:
        """Port 0 without ``a=bundle-only`` (RFC 3264 §6, RFC 8843 §6)."""
        return self.port == 0 and not self.bundle_only

    @property
    def connection(self) -> Connection | None:
        """This section's c= or, failing it, the session's (RFC 8866 §5.7)."""
        if self.connections:
            return self.connections[0]
        return self.session.connection if self.session is not None else None

    @connection.setter
    def connection(self, value: Connection | None) -> None:
        self.connections = [] if value is None else [value]

    @property
    def direction(self) -> str:
        """This section's direction, else the session's, else sendrecv (RFC 8866 §6.7)."""
        own = self._direction()
        if own is not None:
            return own
        if self.session is not None:
            return self.session._direction() or "sendrecv"
        return "sendrecv"

    @direction.setter
    def direction(self, value: str) -> None:
        self._set_direction(value)

    @property
    def mid(self) -> str | None:
        return self.get("mid")

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    @property
    def rtcp_rsize(self) -> bool:
        return self.has("rtcp-rsize")

    @property
    def rtcp(self) -> Rtcp | None:
        value = self.get("rtcp")
        return None if value is None else Rtcp.parse(value)

    @property
    def ice_ufrag(self) -> str | None:
        return self.get("ice-ufrag") or (self.session.get("ice-ufrag") if self.session else None)

    @property
    def ice_pwd(self) -> str | None:
        return self.get("ice-pwd") or (self.session.get("ice-pwd") if self.session else None)

    @property
    def ice_options(self) -> tuple[str, ...]:
        own = tuple(o for v in self.get_all("ice-options") for o in v.split())
        return own or (self.session.ice_options if self.session else ())

    @property
    def fingerprints(self) -> list[Fingerprint]:
        own = [Fingerprint.parse(v) for v in self.get_all("fingerprint")]
        return own or (self.session.fingerprints if self.session else [])

    @property
    def setup(self) -> str | None:
        return self.get("setup") or (self.session.get("setup") if self.session else None)

    @property
    def candidates(self) -> list[Candidate]:
        return [Candidate.parse(v) for v in self.get_all("candidate")]

    @property
    def ssrcs(self) -> list[Ssrc]:
        return [Ssrc.parse(v) for v in self.get_all("ssrc")]

    @property
    def ssrc_ids(self) -> tuple[int, ...]:
        """Distinct SSRCs announced, in order of first appearance."""
        return tuple(dict.fromkeys(s.ssrc for s in self.ssrcs))

    @property
    def msid(self) -> Msid | None:
        value = self.get("msid")
        return None if value is None else Msid.parse(value)

    @property
    def extmaps(self) -> list[Extmap]:
        return [Extmap.parse(v) for v in self.get_all("extmap")]

    @property
    def cryptos(self) -> list[Crypto]:
        return [Crypto.parse(v) for v in self.get_all("crypto")]

    @property
    def ptime(self) -> int | None:
        value = self.get("ptime")
        return None if value is None else _ptime(value)

    @property
    def maxptime(self) -> int | None:
        value = self.get("maxptime")
        return None if value is None else _ptime(value)

    # -- payload types -----------------------------------------------------------------------------

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats] if self.is_rtp else []

    def rtpmap(self, pt: int) -> RtpMap | None:
        """The a=rtpmap of ``pt``, or the RFC 3551 static assignment when there is none."""
        for value in self.get_all("rtpmap"):
            m = RtpMap.parse(value)
            if m.pt == pt:
                return m
        static = STATIC_PAYLOADS.get(pt)
        return RtpMap(pt, static[0], static[1], static[2] if static[2] != 1 else None) if static else None

    def fmtp(self, pt: int) -> str | None:
        for value in self.get_all("fmtp"):
            fpt, params = _pt_prefixed(value, "fmtp")
            if fpt == pt:
                return params
        return None

    def rtcp_fb(self, pt: int) -> tuple[str, ...]:
        """Feedback types for ``pt``, the ``*`` wildcard ones included (RFC 4585 §4.2)."""
        out: list[str] = []
        for value in self.get_all("rtcp-fb"):
            fpt, fb = _pt_prefixed(value, "rtcp-fb", wildcard=True)
            if fpt is None or fpt == pt:
                out.append(fb)
        return tuple(out)

    def codec(self, pt: int) -> Codec | None:
        m = self.rtpmap(pt)
        if m is None:
            return None
        channels = m.channels or 1
        return Codec(pt, m.encoding, m.clock_rate, channels, self.fmtp(pt), self.rtcp_fb(pt))

    @property
    def codecs(self) -> list[Codec]:
        """Every payload type with a known mapping, in m= line (preference) order, each once."""
        # One pass over the attributes, as codec() would give for each: a lookup per payload type is
        # quadratic, and a 64 KB offer of repeated formats and a=rtcp-fb lines then took a minute.
        pts = list(dict.fromkeys(self.payload_types))
        rtpmaps: dict[int, RtpMap] = {}
        for value in self.get_all("rtpmap"):
            m = RtpMap.parse(value)
            rtpmaps.setdefault(m.pt, m)
        fmtps: dict[int | None, str] = {}
        for value in self.get_all("fmtp"):
            fpt, params = _pt_prefixed(value, "fmtp")
            fmtps.setdefault(fpt, params)
        feedback: dict[int, list[str]] = {pt: [] for pt in pts}
        for value in self.get_all("rtcp-fb"):
            fpt, fb = _pt_prefixed(value, "rtcp-fb", wildcard=True)
            if fpt is None:
                for fbs in feedback.values():
                    fbs.append(fb)
            elif fpt in feedback:
                feedback[fpt].append(fb)
        out: list[Codec] = []
        for pt in pts:
            rtpmap = rtpmaps.get(pt)
            if rtpmap is None:
                static = STATIC_PAYLOADS.get(pt)
                if static is None:
                    continue
                rtpmap = RtpMap(pt, static[0], static[1], static[2] if static[2] != 1 else None)
            out.append(Codec(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels or 1, fmtps.get(pt),
                             tuple(feedback[pt])))
        return out

    def add_codec(self, codec: Codec, *, rtcp_fb: bool = True) -> None:
        """Append ``codec`` to the m= line with its rtpmap, fmtp and (optionally) rtcp-fb lines."""
        self.formats.append(str(codec.pt))
        channels = codec.channels if codec.channels != 1 else None
        self.add("rtpmap", RtpMap(codec.pt, codec.name, codec.clock_rate, channels))
        if codec.fmtp:
            self.add("fmtp", f"{codec.pt} {codec.fmtp}")
        if rtcp_fb:
            for fb in codec.rtcp_fb:
                self.add("rtcp-fb", f"{codec.pt} {fb}")

    def lines(self) -> Iterator[str]:
        yield f"m={self.m_line()}"
        if self.info is not None:
            yield f"i={self.info}"
        for c in self.connections:
            yield f"c={c}"
        for b in self.bandwidths:
            yield f"b={b}"
        if self.key is not None:
            yield f"k={self.key}"
        for a in self.attributes:
            yield f"a={a}"


@dataclass(eq=False)
class SessionDescription(_Attributes):
    """A whole SDP body (RFC 8866 §5). ``str()`` serialises it with CRLF line ends."""

    origin: Origin = field(default_factory=Origin)
    name: str | None = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    @classmethod
    def parse(cls, data: str | bytes, *, max_size: int = MAX_SDP_SIZE) -> SessionDescription:
        """Parse an SDP body; any defect raises :class:`SdpError` and nothing else.

        Accepts LF as well as CRLF line ends and ignores blank lines (both seen from real stacks,
        RFC 8866 §5 asks parsers to be tolerant of LF). Lines must otherwise follow §9's grammar:
        ``v=0`` first, ``o=`` next, known type letters only (§5: reject unknown ones).
        """
        if len(data) > max_size:
            raise SdpError(f"SDP larger than {max_size} bytes")
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise SdpError(f"SDP is not UTF-8: {e.reason}") from None
        try:
            return _Parser(data).run()
        except SdpError:
            raise
        except (ValueError, IndexError) as e:  # a defensive net: no other exception may escape
            raise SdpError(f"malformed SDP: {e}") from None

    # -- accessors ---------------------------------------------------------------------------------

    @property
    def direction(self) -> str | None:
        """The session-level direction, the default of every m= section (RFC 8866 §6.7)."""
        return self._direction()

    @direction.setter
    def direction(self, value: str | None) -> None:
        self._set_direction(value)

    @property
    def groups(self) -> list[Group]:
        return [Group.parse(v) for v in self.get_all("group")]

    @property
    def bundle_groups(self) -> list[tuple[str, ...]]:
        """The mids of each ``a=group:BUNDLE`` (RFC 8843 §7.1); the first is the tagged one."""
        return [g.mids for g in self.groups if g.semantics.upper() == "BUNDLE"]

    @property
    def ice_lite(self) -> bool:
        return self.has("ice-lite")

    def media_by_mid(self, mid: str) -> Media | None:
        return next((m for m in self.media if m.mid == mid), None)

    def add_media(self, media: Media) -> Media:
        media.session = self
        self.media.append(media)
        return media

    # -- serialisation -----------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        yield f"v={self.version}"
        yield f"o={self.origin}"
        if self.name is not None:
            yield f"s={self.name}"
        if self.info is not None:
            yield f"i={self.info}"
        if self.uri is not None:
            yield f"u={self.uri}"
        yield from (f"e={e}" for e in self.emails)
        yield from (f"p={p}" for p in self.phones)
        if self.connection is not None:
            yield f"c={self.connection}"
        yield from (f"b={b}" for b in self.bandwidths)
        for t in self.timings:
            yield f"t={t.start} {t.stop}"
            yield from (f"r={r}" for r in t.repeats)
        if self.zone is not None:
            yield f"z={self.zone}"
        if self.key is not None:
            yield f"k={self.key}"
        yield from (f"a={a}" for a in self.attributes)
        for m in self.media:
            yield from m.lines()

    def __str__(self) -> str:
        return "".join(line + "\r\n" for line in self.lines())

    def body_without_origin(self) -> str:
        """The text minus the o= line: what tells whether a new version number is due (RFC 3264 §8)."""
        return "".join(line + "\r\n" for line in self.lines() if not line.startswith("o="))

    def copy(self) -> SessionDescription:
        """A deep copy, by serialising and parsing (the text is the one true form)."""
        return SessionDescription.parse(str(self), max_size=2**31)


class _Parser:
    """Line-by-line parser following RFC 8866 §9's order of fields, with a light state machine."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sdp = SessionDescription(name=None, timings=[])
        self.media: Media | None = None

    def lines(self) -> Iterable[tuple[int, str, str]]:
        for n, raw in enumerate(self.text.split("\n"), 1):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            if "\r" in line or "\0" in line:
                raise SdpError("stray CR or NUL inside a line", n)
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpError(f"not a <type>=<value> line: {line[:40]!r}", n)
            yield n, line[0], line[2:]

    def run(self) -> SessionDescription:
        seen_v = seen_o = False
        for n, kind, value in self.lines():
            try:
                if not seen_v:
                    if kind != "v" or value.strip() != "0":
                        raise SdpError("SDP must start with v=0")
                    seen_v = True
                    continue
                if not seen_o:
                    if kind != "o":
                        raise SdpError("o= must follow v=")
                    self.sdp.origin = Origin.parse(value)
                    seen_o = True
                    continue
                self.line(kind, value)
            except SdpError as e:
                raise SdpError(e.reason, n) from None
        if not seen_o:
            raise SdpError("SDP without v= and o= lines")
        if not self.sdp.timings:
            # Tolerated (some gateways omit it) and made explicit so that what we send is valid.
            self.sdp.timings.append(Timing())
        return self.sdp

    def line(self, kind: str, value: str) -> None:
        target = self.media
        if kind == "m":
            if len(self.sdp.media) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} m= sections")
            self.media = self.sdp.add_media(Media.parse_m_line(value))
        elif kind == "a":
            attr = Attribute.parse(value)
            check = _VALUE_PARSERS.get(attr.name)
            if check is not None:
                if attr.value is None:
                    raise SdpError(f"a={attr.name} needs a value")
                check(attr.value)
            (target or self.sdp).attributes.append(attr)
        elif kind == "c":
            if target is not None:
                target.connections.append(Connection.parse(value))
            elif self.sdp.connection is not None:
                raise SdpError("two session-level c= lines")
            else:
                self.sdp.connection = Connection.parse(value)
        elif kind == "b":
            (target or self.sdp).bandwidths.append(Bandwidth.parse(value))
        elif kind == "i":
            (target or self.sdp).info = value
        elif kind == "k":
            (target or self.sdp).key = value
        elif target is not None:
            raise SdpError(f"{kind}= is not allowed in a media section")
        elif kind == "s":
            self.sdp.name = value
        elif kind == "u":
            self.sdp.uri = value
        elif kind == "e":
            self.sdp.emails.append(value)
        elif kind == "p":
            self.sdp.phones.append(value)
        elif kind == "t":
            self.sdp.timings.append(Timing.parse(value))
        elif kind == "r":
            if not self.sdp.timings:
                raise SdpError("r= before t=")
            self.sdp.timings[-1].repeats.append(value)
        elif kind == "z":
            self.sdp.zone = value
        else:
            raise SdpError(f"unknown line type {kind}=")


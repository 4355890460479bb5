"""webrtc2sip's ``config.xml``, read unchanged so that rtc2sip is a drop-in replacement.

The element names, value syntax and meaning follow webrtc2sip 2.7.0: ``parseConfigNode`` in
``mp_mediaproxy.cc`` (which also gives the version each element appeared in), the setters of
``mp_engine.cc``, and the "Configuration" chapter of the webrtc2sip technical guide
(technical-guide-1.0, Doubango Telecom). Multi-valued elements are ``;``-separated and each field is
trimmed, as ``tsk_params_fromstring(..., ";", tsk_true)`` does, so values may span several lines.

Where webrtc2sip silently ignored a bad value (``atoi("abc") == 0``, an unknown codec, a transport
with two fields), rtc2sip refuses to start instead: a gateway that quietly runs with a different
configuration than the one written is harder to debug than one that says what is wrong.
"""

from __future__ import annotations

import ipaddress
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtc2sip.sip.errors import SipParseError
from rtc2sip.sip.uri import parse_sip_uri, valid_host

__all__ = [
    "CLICK_TO_CALL_TRANSPORTS",
    "CODECS",
    "DEBUG_LEVELS",
    "DTMF_TYPES",
    "OPUS_RATES",
    "REPEATABLE",
    "SIP_TRANSPORTS",
    "SRTP_MODES",
    "SRTP_TYPES",
    "TCP_BASED",
    "VIDEO_SIZES",
    "XML_KEYS",
    "ConfigError",
    "Database",
    "Listener",
    "MailAccount",
    "RawEntry",
    "Recaptcha",
    "SipCallerAccount",
    "SslCertificates",
    "StunServer",
    "Webrtc2sipSettings",
    "XmlResult",
    "canonical_ip",
    "parse_entries",
    "read_config_xml",
    "read_config_xml_text",
]

SIP_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
# c2c/c2cs are the click-to-call HTTP(S) servers of webrtc2sip 2.3+, declared with <transport> too
CLICK_TO_CALL_TRANSPORTS = ("c2c", "c2cs")
TCP_BASED = frozenset({"tcp", "tls", "ws", "wss", "c2c", "c2cs"})

# webrtc2sip's MPEngine::setDebugLevel knows INFO/WARN/ERROR/FATAL; DEBUG is an rtc2sip addition
DEBUG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")

# Name -> media kind, in the order of MPEngine::setCodecs' table (the complete list it accepts).
CODECS: dict[str, str] = {
    "pcma": "audio",
    "pcmu": "audio",
    "opus": "audio",
    "amr-nb-be": "audio",
    "amr-nb-oa": "audio",
    "speex-nb": "audio",
    "speex-wb": "audio",
    "speex-uwb": "audio",
    "g729": "audio",
    "gsm": "audio",
    "g722": "audio",
    "ilbc": "audio",
    "h264-bp": "video",
    "h264-mp": "video",
    "vp8": "video",
    "h263": "video",
    "h263+": "video",
    "theora": "video",
    "mp4v-es": "video",
}

# MPEngine::setPrefVideoSize's table, plus xga and 2160p which Doubango's tmedia_pref_video_size_t
# also defines; width x height.
VIDEO_SIZES: dict[str, tuple[int, int]] = {
    "sqcif": (128, 96),
    "qcif": (176, 144),
    "qvga": (320, 240),
    "cif": (352, 288),
    "hvga": (480, 320),
    "vga": (640, 480),
    "4cif": (704, 576),
    "svga": (800, 600),
    "480p": (852, 480),
    "xga": (1024, 768),
    "720p": (1280, 720),
    "16cif": (1408, 1152),
    "1080p": (1920, 1080),
    "2160p": (3840, 2160),
}

SRTP_MODES = ("none", "optional", "mandatory")
SRTP_TYPES = ("sdes", "dtls")
# webrtc2sip knows rfc2833 (which it relays as SIP INFO) and rfc4733 (RTP telephone-event);
# "info" is rtc2sip's explicit name for the former.
DTMF_TYPES = ("rfc2833", "rfc4733", "info")
# The sampling rates Opus encodes and decodes (RFC 6716 §2).
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

REPEATABLE = frozenset({"transport", "nameserver", "account-sip-caller"})
XML_KEYS = (
    "debug-level",
    "transport",
    "enable-rtp-symetric",
    "enable-100rel",
    "enable-media-coder",
    "enable-videojb",
    "video-size-pref",
    "rtp-buffsize",
    "avpf-tail-length",
    "srtp-mode",
    "srtp-type",
    "dtmf-type",
    "codecs",
    "codec-opus-maxrates",
    "stun-server",
    "enable-icestun",
    "max-fds",
    "nameserver",
    "ssl-certificates",
    "database",
    "account-mail",
    "account-sip-caller",
    "account-http-domain",
    "account-recaptcha",
)
_INT32_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A configuration that cannot be used; ``str()`` is ``"<key>: <reason>"``.

    ``key`` is the config.xml element name or the TOML key path (``limits.min_expires``);
    ``source`` is the file it came from when known.
    """

    def __init__(self, key: str, reason: str, source: Path | None = None) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.source = source


@dataclass(frozen=True, slots=True)
class Listener:
    """A socket to listen on. ``host`` is an IP literal (IPv6 without brackets) or a host name;
    port 0 means the system picks one (webrtc2sip's ``*`` port)."""

    transport: str
    host: str
    port: int

    @property
    def secure(self) -> bool:
        return self.transport in ("tls", "wss", "c2cs")

    @property
    def websocket(self) -> bool:
        return self.transport in ("ws", "wss")

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)

    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port if self.port else '*'}"


@dataclass(frozen=True, slots=True)
class SslCertificates:
    """``<ssl-certificates>priv;pub;ca;verify</ssl-certificates>``; ``*`` in a file field is None.

    Relative file names are resolved when the configuration is loaded (see :func:`parse_entries`).
    """

    private_key: Path | None
    public_cert: Path | None
    ca: Path | None
    verify: bool = False


@dataclass(frozen=True, slots=True)
class StunServer:
    """``<stun-server>host;port;user;password</stun-server>`` (user and password optional or ``*``)."""

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Database:
    """``<database>type;connection</database>``, the click-to-call store (webrtc2sip 2.3+)."""

    type: str
    connection: str | None


@dataclass(frozen=True, slots=True)
class MailAccount:
    """``<account-mail>scheme;local-ip;local-port;smtp-host;smtp-port;email;auth-name;auth-password``."""

    scheme: str
    local_ip: str | None
    local_port: int
    smtp_host: str
    smtp_port: int
    email: str
    auth_name: str
    auth_password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SipCallerAccount:
    """``<account-sip-caller>display;impu;impi;realm;password``: identity click-to-call calls use."""

    display_name: str | None
    impu: str
    impi: str
    realm: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Recaptcha:
    """``<account-recaptcha>siteverify-url;secret</account-recaptcha>`` (webrtc2sip 2.7+)."""

    site_verify_url: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Webrtc2sipSettings:
    """Every config.xml key except ``transport`` (which becomes :attr:`Settings.listeners`).

    Defaults are the values of webrtc2sip's sample config.xml, except ``stun_server`` and
    ``enable_icestun``: the sample points at a public Google server with placeholder credentials,
    and a gateway should not contact a third party unless told to.
    """

    debug_level: str = "INFO"
    enable_rtp_symetric: bool = True
    enable_100rel: bool = False
    enable_media_coder: bool = False
    enable_videojb: bool = True
    video_size_pref: str = "vga"
    rtp_buffsize: int = 65535
    avpf_tail_length: tuple[int, int] = (100, 400)
    srtp_mode: str = "optional"
    srtp_type: tuple[str, ...] = ("sdes", "dtls")
    dtmf_type: str = "rfc4733"
    codecs: tuple[str, ...] = ("opus", "pcma", "pcmu", "gsm", "vp8", "h264-bp", "h264-mp", "h263", "h263+")
    codec_opus_maxrates: tuple[int, int] = (48000, 48000)
    stun_server: StunServer | None = None
    enable_icestun: bool = False
    max_fds: int = -1
    nameservers: tuple[str, ...] = ()
    ssl_certificates: SslCertificates | None = None
    click_to_call: tuple[Listener, ...] = ()
    database: Database | None = None
    account_mail: MailAccount | None = None
    account_sip_callers: tuple[SipCallerAccount, ...] = ()
    account_http_domain: str | None = None
    account_recaptcha: Recaptcha | None = None

    @property
    def video_size(self) -> tuple[int, int]:
        """``video-size-pref`` in pixels (width, height)."""
        return VIDEO_SIZES.get(self.video_size_pref, (640, 480))


@dataclass(frozen=True, slots=True)
class RawEntry:
    """One key/value before validation, from config.xml or from the TOML ``[webrtc2sip]`` table.

    ``label`` is how errors name it (``codecs`` or ``webrtc2sip.codecs``); ``base_dir`` is where a
    relative file name in the value is looked up besides the working directory.
    """

    name: str
    text: str
    label: str
    base_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class XmlResult:
    """What :func:`parse_entries` makes of the entries: ``listeners`` is None when none were given."""

    settings: Webrtc2sipSettings
    listeners: tuple[Listener, ...] | None
    listeners_label: str
    warnings: tuple[str, ...]


# --- reading the XML ----------------------------------------------------------------------------


def read_config_xml(path: Path) -> tuple[list[RawEntry], list[str]]:
    """Read a webrtc2sip config.xml; returns its entries in document order and warnings."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror or exc}", path) from exc
    return read_config_xml_text(data, source=path)


def read_config_xml_text(data: str | bytes, source: Path | None = None) -> tuple[list[RawEntry], list[str]]:
    """Like :func:`read_config_xml`, for a document already in memory."""
    where = str(source) if source is not None else "config.xml"
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, col = exc.position
        # ParseError's own text repeats the position; keep only expat's reason
        reason = str(exc).split(":", 1)[0]
        raise ConfigError(
            "config", f"malformed XML in {where} at line {line}, column {col + 1}: {reason}", source
        ) from exc

    base_dir = source.resolve().parent if source is not None else None
    entries: list[RawEntry] = []
    warnings: list[str] = []
    if root.tag.lower() != "config":
        warnings.append(f"{where}: root element is <{root.tag}>, expected <config>; reading it anyway")
    for elem in root:
        if not isinstance(elem.tag, str):  # comments and processing instructions
            continue
        name = elem.tag.lower()  # webrtc2sip compares element names case-insensitively
        if name not in XML_KEYS:
            warnings.append(f"{where}: unknown element <{elem.tag}> ignored")
            continue
        if len(elem):
            raise ConfigError(name, "unexpected child elements", source)
        text = (elem.text or "").strip()
        if not text:
            # webrtc2sip only acts on text nodes, so an empty element changed nothing there either
            warnings.append(f"{where}: <{elem.tag}> is empty, ignored")
            continue
        entries.append(RawEntry(name, text, name, base_dir))
    return entries, warnings


# --- validating the values -----------------------------------------------------------------------


def _split(e: RawEntry, sep: str = ";") -> list[str]:
    parts = [p.strip() for p in e.text.split(sep)]
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # tolerate a trailing separator, as tsk_params_fromstring does
    if any(p == "" for p in parts):
        raise ConfigError(e.label, f"empty field in {e.text!r}")
    return parts


def _fields(e: RawEntry, lo: int, hi: int, form: str) -> list[str]:
    parts = _split(e)
    if not lo <= len(parts) <= hi:
        raise ConfigError(e.label, f"expected {form!r}, got {e.text!r}")
    return parts


def _ctx(e: RawEntry, value: str) -> str:
    return "" if value == e.text else f" in {e.text!r}"


def _yes_no(e: RawEntry, value: str | None = None) -> bool:
    v = e.text if value is None else value
    low = v.lower()
    if low == "yes":
        return True
    if low == "no":
        return False
    raise ConfigError(e.label, f"expected yes or no, got {v!r}{_ctx(e, v)}")


def _int(e: RawEntry, value: str, lo: int, hi: int) -> int:
    v = value.strip()
    digits = v[1:] if v[:1] in "+-" else v
    if not digits.isascii() or not digits.isdigit():
        raise ConfigError(e.label, f"not an integer: {value!r}{_ctx(e, value)}")
    n = int(v)
    if not lo <= n <= hi:
        raise ConfigError(e.label, f"{n} is out of range {lo}..{hi}{_ctx(e, value)}")
    return n


def canonical_ip(text: str) -> str | None:
    """The canonical IP literal, or None when ``text`` is not one (brackets allowed for IPv6)."""
    t = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        return None


def _host(e: RawEntry, value: str, *, star: str | None = None) -> str:
    if value == "*" and star is not None:
        return star
    ip = canonical_ip(value)
    if ip is not None:
        return ip
    if valid_host(value):
        return value.lower()
    raise ConfigError(e.label, f"not a valid host or IP address: {value!r}{_ctx(e, value)}")


def _port(e: RawEntry, value: str) -> int:
    if value == "*":
        return 0
    return _int(e, value, 1, 65535)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    ip = canonical_ip(host)
    return ip is not None and ipaddress.ip_address(ip).is_loopback


def _one_of(e: RawEntry, value: str, allowed: Iterable[str], what: str) -> str:
    low = value.lower()
    allowed = tuple(allowed)
    if low not in allowed:
        raise ConfigError(
            e.label, f"unknown {what} {value!r}{_ctx(e, value)} (expected one of: {', '.join(allowed)})"
        )
    return low


def _star(value: str) -> str | None:
    return None if value == "*" else value


def _file(e: RawEntry, value: str, what: str, check: bool) -> Path | None:
    if value == "*":
        return None
    p = Path(value).expanduser()
    if p.is_absolute():
        if check and not p.is_file():
            raise ConfigError(e.label, f"{what} file not found: {value!r}")
        return p
    # webrtc2sip opened relative names from its working directory; services usually run from
    # elsewhere, so the directory of the file that names them is tried next.
    candidates = [Path.cwd() / p]
    if e.base_dir is not None:
        candidates.append(e.base_dir / p)
    for c in candidates:
        if c.is_file():
            return c
    if check:
        tried = " or ".join(repr(str(c)) for c in candidates)
        raise ConfigError(e.label, f"{what} file not found: {value!r} (looked for {tried})")
    return candidates[-1]


def _transport(e: RawEntry) -> Listener:
    proto, host, port = _fields(e, 3, 3, "proto;ip;port")
    low = proto.lower()
    if low not in SIP_TRANSPORTS + CLICK_TO_CALL_TRANSPORTS:
        raise ConfigError(
            e.label,
            f"unknown protocol {proto!r} in {e.text!r} "
            f"(expected one of: {', '.join(SIP_TRANSPORTS + CLICK_TO_CALL_TRANSPORTS)})",
        )
    return Listener(low, _host(e, host, star="0.0.0.0"), _port(e, port))


def _codecs(e: RawEntry) -> tuple[str, ...]:
    out: list[str] = []
    for name in _split(e):
        low = name.lower()
        if low not in CODECS:
            raise ConfigError(
                e.label, f"unknown codec {name!r} in {e.text!r} (known: {', '.join(CODECS)})"
            )
        if low not in out:
            out.append(low)
    return tuple(out)


def _srtp_type(e: RawEntry) -> tuple[str, ...]:
    # MPEngine::setSRTPType only looks for the substrings, so "sdes,dtls" worked as well as "sdes;dtls"
    out: list[str] = []
    for part in _split(RawEntry(e.name, e.text.replace(",", ";"), e.label, e.base_dir)):
        low = _one_of(e, part, SRTP_TYPES, "SRTP type")
        if low not in out:
            out.append(low)
    return tuple(out)


def _ssl(e: RawEntry, check: bool) -> SslCertificates:
    parts = _fields(e, 3, 4, "private-key;public-cert;ca[;verify]")
    verify = _yes_no(e, parts[3]) if len(parts) == 4 else False  # webrtc2sip 2.1+ default
    priv = _file(e, parts[0], "private key", check)
    pub = _file(e, parts[1], "public certificate", check)
    ca = _file(e, parts[2], "CA", check)
    if (priv is None) != (pub is None):
        raise ConfigError(e.label, "give both the private key and the public certificate, or neither")
    if check:
        _load_check(e, priv, pub, ca)
    return SslCertificates(priv, pub, ca, verify)


def _no_passphrase() -> bytes:
    # without a callback OpenSSL would prompt on the terminal for an encrypted key and hang a service
    return b""


def _load_check(e: RawEntry, priv: Path | None, pub: Path | None, ca: Path | None) -> None:
    """Load the files the way the TLS listeners will, so a bad file stops the start, not a handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if priv is not None and pub is not None:
        try:
            ctx.load_cert_chain(certfile=pub, keyfile=priv, password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                e.label,
                f"cannot load the key pair {str(priv)!r} / {str(pub)!r}: {exc} "
                "(PEM files needed; an encrypted private key is not supported)",
            ) from exc
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(e.label, f"cannot load the CA file {str(ca)!r}: {exc}") from exc


def _stun(e: RawEntry) -> StunServer:
    parts = _fields(e, 2, 4, "host;port[;user;password]")
    host = _host(e, parts[0])
    port = _int(e, parts[1], 1, 65535)
    user = _star(parts[2]) if len(parts) > 2 else None
    password = _star(parts[3]) if len(parts) > 3 else None
    if password is not None and user is None:
        raise ConfigError(e.label, "a STUN password needs a user name")
    return StunServer(host, port, user, password)


def _database(e: RawEntry) -> Database:
    parts = _fields(e, 2, 99, "type;connection")
    # a MySQL connection string has its own ';'s; webrtc2sip cut it at the first one
    kind, conn = parts[0], ";".join(parts[1:])
    low = _one_of(e, kind, ("sqlite", "mysql"), "database type")
    if conn == "*":
        # the connection strings mp_mediaproxy.cc substitutes for "*"
        return Database(low, "./c2c_sqlite.db" if low == "sqlite" else None)
    return Database(low, conn)


def _mail(e: RawEntry) -> MailAccount:
    form = "scheme;local-ip;local-port;smtp-host;smtp-port;email;auth-name;auth-password"
    scheme, lip, lport, host, port, email, name, password = _fields(e, 8, 8, form)
    return MailAccount(
        scheme=_one_of(e, scheme, ("smtp", "smtps"), "SMTP scheme"),
        local_ip=None if lip == "*" else _host(e, lip),
        local_port=0 if lport == "*" else _int(e, lport, 1, 65535),
        smtp_host=_host(e, host),
        smtp_port=_int(e, port, 1, 65535),
        email=email,
        auth_name=name,
        auth_password=password,
    )


def _sip_caller(e: RawEntry) -> SipCallerAccount:
    display, impu, impi, realm, password = _fields(e, 5, 5, "display-name;impu;impi;realm;password")
    try:
        parse_sip_uri(impu)
    except SipParseError as exc:
        raise ConfigError(e.label, f"impu is not a SIP URI: {impu!r} ({exc.reason})") from exc
    return SipCallerAccount(_star(display), impu, impi, realm, password)


def _nameserver(e: RawEntry) -> str:
    """``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port``, normalised; only addresses, since the resolver
    cannot resolve its own server's name."""
    text = e.text
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            host = ""  # reported below
        port = rest[1:]
    elif text.count(":") == 1:  # more colons: a bare IPv6 address
        host, _, port = text.partition(":")
    ip = canonical_ip(host)
    if ip is None:
        raise ConfigError(e.label, f"not an IP address: {text!r}")
    if not port:
        return ip
    n = _int(e, port, 1, 65535)
    return f"[{ip}]:{n}" if ":" in ip else f"{ip}:{n}"


def _recaptcha(e: RawEntry) -> Recaptcha:
    url, secret = _fields(e, 2, 2, "siteverify-url;secret")
    if not url.lower().startswith(("https://", "http://")):
        raise ConfigError(e.label, f"not an http(s) URL: {url!r}")
    return Recaptcha(url, secret)


def parse_entries(entries: Sequence[RawEntry], *, check_files: bool = True) -> XmlResult:
    """Validate config.xml-style entries (later ones override earlier ones of the same key).

    Singleton keys given several times keep the last value, as webrtc2sip did by calling the setter
    again; that is reported as a warning. ``check_files`` makes missing certificate files an error.
    """
    by_key: dict[str, list[RawEntry]] = {}
    for entry in entries:
        by_key.setdefault(entry.name, []).append(entry)

    warnings: list[str] = []
    last: dict[str, RawEntry] = {}
    for name, group in by_key.items():
        if name not in REPEATABLE:
            if len(group) > 1:
                warnings.append(f"{group[-1].label}: given {len(group)} times, the last one is used")
            last[name] = group[-1]

    kw: dict[str, Any] = {}
    if (e := last.get("debug-level")) is not None:
        kw["debug_level"] = _one_of(e, e.text, (d.lower() for d in DEBUG_LEVELS), "debug level").upper()
    bools = {
        "enable-rtp-symetric": "enable_rtp_symetric",
        "enable-100rel": "enable_100rel",
        "enable-media-coder": "enable_media_coder",
        "enable-videojb": "enable_videojb",
        "enable-icestun": "enable_icestun",
    }
    for key, attr in bools.items():
        if (e := last.get(key)) is not None:
            kw[attr] = _yes_no(e)
    if (e := last.get("video-size-pref")) is not None:
        kw["video_size_pref"] = _one_of(e, e.text, VIDEO_SIZES, "video size")
    if (e := last.get("rtp-buffsize")) is not None:
        kw["rtp_buffsize"] = _int(e, e.text, 1, _INT32_MAX)
    if (e := last.get("avpf-tail-length")) is not None:
        lo, hi = _fields(e, 2, 2, "min;max")
        tail = (_int(e, lo, 1, 65535), _int(e, hi, 1, 65535))
        if tail[0] > tail[1]:  # the check of MPEngine::setAvpfTail
            raise ConfigError(e.label, f"min {tail[0]} is greater than max {tail[1]}")
        kw["avpf_tail_length"] = tail
    if (e := last.get("srtp-mode")) is not None:
        kw["srtp_mode"] = _one_of(e, e.text, SRTP_MODES, "SRTP mode")
    if (e := last.get("srtp-type")) is not None:
        kw["srtp_type"] = _srtp_type(e)
    if (e := last.get("dtmf-type")) is not None:
        kw["dtmf_type"] = _one_of(e, e.text, DTMF_TYPES, "DTMF type")
    if (e := last.get("codecs")) is not None:
        kw["codecs"] = _codecs(e)
    if (e := last.get("codec-opus-maxrates")) is not None:
        rates: list[int] = []
        for v in _fields(e, 2, 2, "playback;capture"):
            r = _int(e, v, 1, _INT32_MAX)
            if r not in OPUS_RATES:
                raise ConfigError(
                    e.label, f"{r} is not an Opus rate (expected one of: {', '.join(map(str, OPUS_RATES))})"
                )
            rates.append(r)
        kw["codec_opus_maxrates"] = (rates[0], rates[1])
    if (e := last.get("stun-server")) is not None:
        kw["stun_server"] = _stun(e)
    if (e := last.get("max-fds")) is not None:
        # webrtc2sip only applies values > 0; -1 (the sample) and 0 keep the system limit
        kw["max_fds"] = _int(e, e.text, -1, _INT32_MAX)
    if (e := last.get("ssl-certificates")) is not None:
        kw["ssl_certificates"] = _ssl(e, check_files)
    if (e := last.get("database")) is not None:
        kw["database"] = _database(e)
    if (e := last.get("account-mail")) is not None:
        kw["account_mail"] = _mail(e)
    if (e := last.get("account-http-domain")) is not None:
        kw["account_http_domain"] = None if e.text == "*" else _host(e, e.text)
    if (e := last.get("account-recaptcha")) is not None:
        kw["account_recaptcha"] = _recaptcha(e)

    nameservers: list[str] = []
    for ns in by_key.get("nameserver", []):
        server = _nameserver(ns)
        if server not in nameservers:
            nameservers.append(server)
    if nameservers:
        kw["nameservers"] = tuple(nameservers)
    callers = tuple(_sip_caller(c) for c in by_key.get("account-sip-caller", []))
    if callers:
        kw["account_sip_callers"] = callers

    listeners: list[Listener] = []
    c2c: list[Listener] = []
    transports = by_key.get("transport", [])
    for t in transports:
        lst = _transport(t)
        (c2c if lst.transport in CLICK_TO_CALL_TRANSPORTS else listeners).append(lst)
    if c2c:
        kw["click_to_call"] = tuple(c2c)

    settings = Webrtc2sipSettings(**kw)
    label = transports[0].label.rsplit("[", 1)[0] if transports else "transport"
    return XmlResult(
        settings=settings,
        # only click-to-call transports leaves the SIP side on its defaults, as it would be with none
        listeners=tuple(listeners) if listeners else None,
        listeners_label=label,
        warnings=tuple(warnings),
    )

"""webrtc2sip's ``config.xml`` as rtc2sip holds it: what each element accepts, and the settings.

The element names, value syntax and meaning follow webrtc2sip 2.7.0: ``parseConfigNode`` in
``mp_mediaproxy.cc`` (which also gives the version each element appeared in), the setters of
``mp_engine.cc``, and the "Configuration" chapter of the webrtc2sip technical guide
(technical-guide-1.0, Doubango Telecom). This module holds the tables of accepted values, the frozen
settings (:class:`Webrtc2sipSettings` and its parts) and :class:`ConfigError`; the file is read by
:mod:`rtc2sip.config.config_xml` and its values are checked by :mod:`rtc2sip.config.validate`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

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
    "canonical_ip",
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

    Relative file names are resolved when the configuration is loaded
    (see :func:`rtc2sip.config.validate.parse_entries`).
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


def canonical_ip(text: str) -> str | None:
    """The canonical IP literal, or None when ``text`` is not one (brackets allowed for IPv6)."""
    t = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(t))
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    ip = canonical_ip(host)
    return ip is not None and ipaddress.ip_address(ip).is_loopback

"""Configuration: webrtc2sip's config.xml (drop-in) plus rtc2sip's own TOML options, as one frozen tree.

``load_settings(config_xml, options_toml)`` reads both, applies the precedence
defaults < config.xml < TOML, validates everything and returns :class:`Settings`; any problem is a
:class:`ConfigError` whose message starts with the offending key. See docs/CONFIG.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from .config_xml import read_config_xml, read_config_xml_text
from .options import (
    AUTH_MODES,
    BREAKER_POLICIES,
    LOG_FORMATS,
    RECORDING_FORMATS,
    AdminOptions,
    ForwardOptions,
    GatewayOptions,
    Limits,
    MediaOptions,
    Options,
    RecordingOptions,
    default_data_dir,
    read_options,
    read_options_text,
)
from .validate import parse_entries
from .webrtc2sip import (
    CODECS,
    DEBUG_LEVELS,
    DTMF_TYPES,
    SIP_TRANSPORTS,
    SRTP_MODES,
    SRTP_TYPES,
    TCP_BASED,
    VIDEO_SIZES,
    XML_KEYS,
    ConfigError,
    Database,
    Listener,
    MailAccount,
    RawEntry,
    Recaptcha,
    SipCallerAccount,
    SslCertificates,
    StunServer,
    Webrtc2sipSettings,
)

__all__ = [
    "AUTH_MODES",
    "BREAKER_POLICIES",
    "CODECS",
    "DEBUG_LEVELS",
    "DEFAULT_LISTENERS",
    "DTMF_TYPES",
    "LOG_FORMATS",
    "RECORDING_FORMATS",
    "SIP_TRANSPORTS",
    "SRTP_MODES",
    "SRTP_TYPES",
    "VIDEO_SIZES",
    "XML_KEYS",
    "AdminOptions",
    "ConfigError",
    "Database",
    "ForwardOptions",
    "GatewayOptions",
    "Limits",
    "Listener",
    "MailAccount",
    "MediaOptions",
    "Options",
    "Recaptcha",
    "RecordingOptions",
    "Settings",
    "SipCallerAccount",
    "SslCertificates",
    "StunServer",
    "Webrtc2sipSettings",
    "default_data_dir",
    "load_settings",
    "read_config_xml",
    "read_config_xml_text",
    "read_options",
    "read_options_text",
    "settings_from",
]

log = logging.getLogger("rtc2sip.config")

# Loopback only, so that a gateway started without configuration is reachable from this host alone
# and can run without authentication (auth = "auto").
DEFAULT_LISTENERS = (
    Listener("udp", "127.0.0.1", 5060),
    Listener("tcp", "127.0.0.1", 5060),
    Listener("ws", "127.0.0.1", 8080),
)

_LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}
_TRANSPORT_NAMES = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is configured with.

    ``listeners`` are the SIP listeners as asked for (``[[listen]]`` over config.xml ``<transport>``
    over the defaults); :meth:`active_listeners` drops the TLS/WSS ones when there are no
    certificates. ``warnings`` were already logged on ``rtc2sip.config`` when loading.
    """

    listeners: tuple[Listener, ...] = DEFAULT_LISTENERS
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    limits: Limits = field(default_factory=Limits)
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    recording: RecordingOptions = field(default_factory=RecordingOptions)
    forward: ForwardOptions = field(default_factory=ForwardOptions)
    media: MediaOptions = field(default_factory=MediaOptions)
    # off in Settings built by code (tests, benchmarks: many gateways in one process must not all take
    # port 8089); a file, or none, read by load_settings gets AdminOptions' own default, on
    admin: AdminOptions = field(default_factory=lambda: AdminOptions(listen=None))
    webrtc2sip: Webrtc2sipSettings = field(default_factory=Webrtc2sipSettings)
    config_xml: Path | None = None
    options_toml: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ssl_certificates(self) -> SslCertificates | None:
        return self.webrtc2sip.ssl_certificates

    @property
    def log_level(self) -> int:
        """config.xml's ``debug-level`` as a :mod:`logging` level (WARN and FATAL mapped)."""
        return _LOG_LEVELS[self.webrtc2sip.debug_level]

    def tls_available(self) -> bool:
        """Whether a key pair is configured, which TLS and WSS listeners need."""
        c = self.webrtc2sip.ssl_certificates
        return c is not None and c.private_key is not None and c.public_cert is not None

    def active_listeners(self) -> tuple[Listener, ...]:
        """The listeners to open: all of them, less TLS/WSS when :meth:`tls_available` is false."""
        if self.tls_available():
            return self.listeners
        return tuple(lst for lst in self.listeners if not lst.secure)

    def loopback_only(self) -> bool:
        """True when every SIP listener (opened or not) is bound to a loopback address."""
        return all(lst.loopback for lst in self.listeners)

    def auth_required(self) -> bool:
        """Digest authentication on? ``auth = "auto"`` means on unless :meth:`loopback_only`."""
        if self.gateway.auth == "on":
            return True
        if self.gateway.auth == "off":
            return False
        return not self.loopback_only()

    def banner_lines(self) -> list[str]:
        """Human-readable start-up summary: what listens where, and what is off and why."""
        lines: list[str] = []
        for lst in self.active_listeners():
            if lst.websocket:
                kind = "secure WebSocket" if lst.secure else "WebSocket"
                # RFC 7118 §4: browsers must ask for the "sip" WebSocket subprotocol
                lines.append(f"SIP over {kind} on {lst.transport}://{lst.hostport()} (subprotocol sip)")
            else:
                lines.append(f"SIP over {_TRANSPORT_NAMES[lst.transport]} on {lst.hostport()}")
        off = [lst for lst in self.listeners if lst not in self.active_listeners()]
        if off:
            names = ", ".join(f"{lst.transport} on {lst.hostport()}" for lst in off)
            lines.append(f"WSS/TLS are off: no ssl-certificates configured; not listening: {names}")
        c2c = self.webrtc2sip.click_to_call
        if c2c:
            names = ", ".join(f"{lst.transport} on {lst.hostport()}" for lst in c2c)
            lines.append(f"Click-to-call is not served by this version; ignored: {names}")
        if self.auth_required():
            n = len(self.users)
            lines.append(f"Digest authentication on ({n} user{'s' if n != 1 else ''} in [users])")
        elif self.gateway.auth == "auto":
            lines.append("Authentication off: every listener is on loopback (auth = \"auto\")")
        else:
            lines.append("Authentication off (auth = \"off\")")
        if self.gateway.upstream_proxy:
            lines.append(f"Upstream proxy: {self.gateway.upstream_proxy}")
        if self.gateway.open_relay:
            lines.append("Open relay: requests for any domain are forwarded")
        a = self.admin
        if a.listen is not None:
            guard = "bearer token required" if a.token else "no token: loopback only"
            lines.append(f"Admin API and live view's actions on {a.url()} ({guard}; [admin])")
        else:
            lines.append("Admin listener off ([admin]): the live view is read-only")
        if self.media.workers and self.gateway.breaker != "never":
            n = self.media.workers
            lines.append(f"Media plane in {n} worker process{'es' if n != 1 else ''} ([media] workers)")
        return lines


def _overlap(a: str, b: str) -> bool:
    if a == b or "::" in (a, b):  # "::" is dual-stack on Linux, so it also holds IPv4 ports
        return True
    if "0.0.0.0" in (a, b):
        other = b if a == "0.0.0.0" else a
        return ":" not in other
    return False


def _check_listeners(listeners: Sequence[Listener], label: str) -> None:
    for i, a in enumerate(listeners):
        for b in listeners[:i]:
            if a == b:
                raise ConfigError(label, f"{a.transport} on {a.hostport()} is listed twice")
            same_socket_kind = (a.transport in TCP_BASED) == (b.transport in TCP_BASED)
            if same_socket_kind and a.port and a.port == b.port and _overlap(a.host, b.host):
                proto = "TCP" if a.transport in TCP_BASED else "UDP"
                raise ConfigError(
                    label,
                    f"{b.transport} on {b.hostport()} and {a.transport} on {a.hostport()} "
                    f"would both bind {proto} port {a.port}",
                )


def _load_admin_key_pair(cert: Path, key: Path, source: Path | None) -> None:
    """Load [admin]'s files as the listener will, so a bad one stops the start, not a handshake."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key), password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("admin.tls_cert", f"cannot load the key pair {str(key)!r} / {str(cert)!r}: {exc} "
                          "(PEM files needed; an encrypted private key is not supported)", source) from exc


def settings_from(
    xml_entries: Sequence[RawEntry] = (),
    options: Options | None = None,
    *,
    xml_warnings: Sequence[str] = (),
    config_xml: Path | None = None,
    check_files: bool = True,
) -> Settings:
    """Build :class:`Settings` from already-read parts; :func:`load_settings` is the usual entry."""
    opts = options if options is not None else Options()
    try:
        # a key in the TOML [webrtc2sip] table replaces every occurrence of it in config.xml
        overridden = {e.name for e in opts.webrtc2sip}
        entries = [e for e in xml_entries if e.name not in overridden] + list(opts.webrtc2sip)
        xml = parse_entries(entries, check_files=check_files)

        if opts.listen is not None:
            listeners, label = opts.listen, "listen"
        elif xml.listeners is not None:
            listeners, label = xml.listeners, xml.listeners_label
        else:
            listeners, label = DEFAULT_LISTENERS, "listen"
        _check_listeners(listeners + xml.settings.click_to_call, label)
        if check_files and opts.admin.tls_cert is not None and opts.admin.tls_key is not None:
            _load_admin_key_pair(opts.admin.tls_cert, opts.admin.tls_key, opts.source)
    except ConfigError as exc:
        if exc.source is None:
            # TOML key paths are "listen..." or "webrtc2sip...."; bare element names come from the XML
            from_toml = exc.key.startswith(("listen", "webrtc2sip."))
            exc.source = opts.source if from_toml else config_xml
        raise

    s = Settings(
        listeners=listeners,
        gateway=opts.gateway,
        limits=opts.limits,
        users=opts.users,
        recording=opts.recording,
        forward=opts.forward,
        media=opts.media,
        admin=opts.admin,
        webrtc2sip=xml.settings,
        config_xml=config_xml,
        options_toml=opts.source,
    )
    warnings = list(xml_warnings) + list(xml.warnings)
    if any(lst.secure for lst in listeners) and not s.tls_available():
        warnings.append("TLS/WSS listeners asked for but no ssl-certificates (private and public) "
                        "configured: they are not started")
    if s.auth_required() and not s.users:
        why = "auth = \"on\"" if s.gateway.auth == "on" else "a listener is not on loopback"
        warnings.append(f"authentication is on ({why}) but [users] is empty: "
                        "requests that need authentication will be refused")
    if s.users and not s.auth_required():
        warnings.append("[users] is ignored: authentication is off")
    if s.gateway.open_relay and not s.loopback_only():
        warnings.append("open_relay = true on a non-loopback listener: anyone who can reach it can "
                        "relay calls through this gateway")
    for w in warnings:
        log.warning("%s", w)
    return replace(s, warnings=tuple(warnings))


def load_settings(
    config_xml: Path | None = None,
    options_toml: Path | None = None,
    *,
    check_files: bool = True,
) -> Settings:
    """Read webrtc2sip's config.xml and/or rtc2sip's TOML options into :class:`Settings`.

    With neither, the defaults: UDP and TCP on 127.0.0.1:5060, WS on 127.0.0.1:8080, and
    webrtc2sip's sample config.xml values. ``check_files=False`` skips opening certificate files
    (for checking a configuration meant for another machine).

    Raises :class:`ConfigError` naming the key and the reason.
    """
    xml_entries: list[RawEntry] = []
    xml_warnings: list[str] = []
    if config_xml is not None:
        xml_entries, xml_warnings = read_config_xml(Path(config_xml))
    options = read_options(Path(options_toml)) if options_toml is not None else None
    return settings_from(
        xml_entries,
        options,
        xml_warnings=xml_warnings,
        config_xml=Path(config_xml) if config_xml is not None else None,
        check_files=check_files,
    )

"""rtc2sip's own options: a TOML file given with ``--options`` (read with :mod:`tomllib`).

Tables: ``[gateway]``, ``[[listen]]``, ``[users]``, ``[limits]`` and ``[webrtc2sip]``, the last one
holding config.xml keys by their XML names so one file can carry a whole configuration or override
a shared config.xml. Unlike config.xml, where unknown elements are only warned about (it is another
program's format), an unknown key here is an error: a mistyped ``open_relay`` or ``auth`` must not
silently leave the gateway in a state the operator did not ask for.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from rtc2sip.sip import SipParseError, parse_sip_uri, valid_host

from .webrtc2sip import (
    REPEATABLE,
    SIP_TRANSPORTS,
    XML_KEYS,
    ConfigError,
    Listener,
    RawEntry,
    canonical_ip,
)

__all__ = [
    "ADMIN_DEFAULT_LISTEN",
    "AUTH_MODES",
    "BREAKER_POLICIES",
    "LOG_FORMATS",
    "RECORDING_FORMATS",
    "WEBRTC_SOCKETS",
    "AdminOptions",
    "ForwardOptions",
    "GatewayOptions",
    "Limits",
    "MediaOptions",
    "Options",
    "RecordingOptions",
    "default_data_dir",
    "read_options",
    "read_options_text",
]

AUTH_MODES = ("auto", "on", "off")
LOG_FORMATS = ("text", "json")
# How the RTCWeb breaker is engaged. webrtc2sip engages it when the browser's REGISTER/INVITE asks
# with "rtcweb-breaker=yes" (technical guide, "RTCWeb Breaker"); that is "client".
BREAKER_POLICIES = ("auto", "client", "never", "always")
_TOP_LEVEL = ("gateway", "listen", "users", "limits", "webrtc2sip", "recording", "forward", "media", "admin")
MAX_MEDIA_WORKERS = 256
# shared: every browser leg on one UDP port (rtc2sip.media.udpmux); per-call: a port per call
WEBRTC_SOCKETS = ("shared", "per-call")
FAST_PATHS = ("auto", "off")
# The smallest media port range: a call holds three ports (two with the shared socket)
MIN_RTP_PORTS = 16
RECORDING_FORMATS = ("wav", "ogg")
# RFC 3261 §25.1 user-part characters, less ';' and escapes, which would be ambiguous as a key
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,?/]+$")
_UINT32_MAX = 2**32 - 1


def default_data_dir() -> Path:
    """``$RTC2SIP_DATA_DIR`` when set, else ``~/.local/share/rtc2sip``."""
    env = os.environ.get("RTC2SIP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "rtc2sip"


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """``[gateway]``. ``auth``: "on", "off", or "auto" (off only when every listener is loopback)."""

    data_dir: Path = field(default_factory=default_data_dir)
    domains: tuple[str, ...] = ("localhost", "127.0.0.1")
    log_format: str = "text"
    upstream_proxy: str | None = None
    auth: str = "auto"
    open_relay: bool = False
    # auto: break every call that crosses WebRTC <-> legacy (rtcweb-breaker=yes|no still decides);
    # client: webrtc2sip's rule, only when the client asks; never; always
    breaker: str = "auto"
    # offered in this order (RFC 8760 §2.4). MD5 alone by default: deployed phones fail on a SHA-256
    # challenge instead of skipping it (baresip 1.0 refuses the whole 401, sipp 3.6 stops), so
    # SHA-256 is opt-in: digest_algorithms = ["SHA-256", "MD5"]
    digest_algorithms: tuple[str, ...] = ("MD5",)
    # bearer token of the admin pages and APIs (/calls data, /api/..., /metrics) when some listener is
    # beyond loopback; on loopback they are open. None there: they answer 403 (rtc2sip.web.http)
    admin_token: str | None = field(default=None, repr=False)
    # the built-in test services sip:echo@DOMAIN and sip:diag@DOMAIN (rtc2sip.services); diag listens
    # to the caller's RTP this many seconds before its verdict
    services: bool = True
    diag_duration: int = 3


@dataclass(frozen=True, slots=True)
class Limits:
    """``[limits]``; counts of 0 mean unlimited, durations are seconds."""

    # the largest UDP payload, and what the SIP parser accepts by default
    max_message_size: int = 65535
    # browsers behind one office NAT share a source address, hence generous per-source defaults
    max_connections_per_source: int = 1000
    max_registrations_per_source: int = 1000
    ws_origins: tuple[str, ...] = ()  # empty: any Origin
    nonce_lifetime: int = 300
    min_expires: int = 60
    default_expires: int = 3600
    max_expires: int = 86400
    # calls transcoded at once by the Media Coder (enable-media-coder); the next one gets 488
    max_transcoded_calls: int = 64
    # a call over that limit whose video (not audio) needed the coder: "reject" (488) or "audio-only"
    transcoding_overflow: str = "audio-only"
    # every request the proxy forwards is answered within this (408 at the latest; an INVITE that
    # rings is left to its own timers); DNS lookups of a next hop give up after dns_timeout (503)
    final_response_timeout: float = 8.0
    dns_timeout: float = 1.5
    # per source address (rtc2sip.proxy.throttle; loopback exempt): messages per second and at once,
    # then dropped; a source still over it for burst more messages, or failing digest authentication
    # max_auth_failures times within auth_failure_window, is blocked for block_time. 0 turns each off.
    rate_per_source: float = 100.0
    burst_per_source: int = 200
    max_auth_failures: int = 10
    auth_failure_window: float = 60.0
    block_time: float = 60.0


@dataclass(frozen=True, slots=True)
class RecordingOptions:
    """``[recording]`` (rtc2sip.media.recording): calls whose caller or callee AOR matches one of the
    ``rule`` globs ("*": every call) are recorded to ``dir`` (None: ``<data_dir>/recordings``)."""

    enabled: bool = False
    rule: tuple[str, ...] = ("*",)
    dir: Path | None = None
    format: str = "wav"


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """``[forward]`` (rtc2sip.media.forward): the audio of calls matching ``rule`` is sent as plain RTP
    to ``to`` ("host:port"; None: off), with a ``.sdp`` for players written to ``dir`` (None: the
    recordings directory)."""

    to: tuple[str, int] | None = None
    rule: tuple[str, ...] = ("*",)
    dir: Path | None = None


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """``[media]``: the RTCWeb Breaker's media plane. ``workers`` 0 runs it in the gateway's own
    process; N >= 1 in N worker processes (rtc2sip.media.worker), each with its own slice of
    ``rtp_ports``; "auto" in the file is one per core. ``rtp_ports`` bounds every media socket
    (inclusive). ``webrtc_socket = "shared"`` puts every browser leg on one UDP port (per address
    family, and per worker), ``webrtc_port`` (0: the first free port of the range);
    ``"per-call"`` gives each call's browser leg a port of its own. ``fast_path = "auto"`` (the
    default) relays calls through the compiled engine when it was built; ``"off"``: Python relays
    every call. The environment's ``RTC2SIP_FAST_PATH`` overrides either."""

    workers: int = 0
    rtp_ports: tuple[int, int] = (20000, 29999)
    webrtc_socket: str = "shared"
    webrtc_port: int = 0
    fast_path: str = "auto"


ADMIN_DEFAULT_LISTEN = ("127.0.0.1", 8089)


@dataclass(frozen=True, slots=True)
class AdminOptions:
    """``[admin]`` (rtc2sip.web.admin): the admin API and the live view's actions, on a listener of
    their own. ``listen`` None: off. ``token`` is the bearer token it requires (``[admin] token``, else
    ``[gateway] admin_token``; None: none required, which only loopback allows). Beyond loopback both
    a token and ``tls_cert``/``tls_key`` are required, checked when the file is read."""

    listen: tuple[str, int] | None = ADMIN_DEFAULT_LISTEN
    token: str | None = field(default=None, repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def loopback(self) -> bool:
        return self.listen is not None and Listener("tcp", self.listen[0], self.listen[1]).loopback

    def url(self) -> str | None:
        """``scheme://host:port`` as configured (rtc2sip.app logs the address it really got)."""
        if self.listen is None:
            return None
        h = self.listen[0]
        h = f"[{h}]" if ":" in h else h
        return f"{'https' if self.tls else 'http'}://{h}:{self.listen[1]}"


@dataclass(frozen=True, slots=True)
class Options:
    """A parsed options file; ``listen`` is None when it has no ``[[listen]]``."""

    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    limits: Limits = field(default_factory=Limits)
    recording: RecordingOptions = field(default_factory=RecordingOptions)
    forward: ForwardOptions = field(default_factory=ForwardOptions)
    media: MediaOptions = field(default_factory=MediaOptions)
    admin: AdminOptions = field(default_factory=AdminOptions)
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    listen: tuple[Listener, ...] | None = None
    webrtc2sip: tuple[RawEntry, ...] = ()
    source: Path | None = None


def _kind(v: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(v), type(v).__name__)


class _Table:
    """A TOML table being read: typed getters that name the key path, and a check for leftovers."""

    def __init__(self, data: object, path: str, source: Path | None) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a table, got {_kind(data)}", source)
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source
        self.seen: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def error(self, k: str, reason: str) -> ConfigError:
        return ConfigError(self.key(k), reason, self.source)

    def has(self, k: str) -> bool:
        self.seen.add(k)
        return k in self.data

    def raw(self, k: str) -> Any:
        self.seen.add(k)
        return self.data[k]

    def str_(self, k: str, default: str) -> str:
        if not self.has(k):
            return default
        v = self.raw(k)
        if not isinstance(v, str):
            raise self.error(k, f"expected a string, got {_kind(v)}")
        if not v.strip():
            raise self.error(k, "must not be empty")
        return v.strip()

    def choice(self, k: str, default: str, allowed: tuple[str, ...]) -> str:
        v = self.str_(k, default)
        if v.lower() not in allowed:
            raise self.error(k, f"expected one of {', '.join(allowed)}, got {v!r}")
        return v.lower()

    def bool_(self, k: str, default: bool) -> bool:
        if not self.has(k):
            return default
        v = self.raw(k)
        if not isinstance(v, bool):
            raise self.error(k, f"expected true or false, got {_kind(v)}")
        return v

    def int_(self, k: str, default: int, lo: int, hi: int) -> int:
        if not self.has(k):
            return default
        v = self.raw(k)
        # bool is an int subclass in Python but not in TOML; "true" is no message size
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(k, f"expected an integer, got {_kind(v)}")
        if not lo <= v <= hi:
            raise self.error(k, f"{v} is out of range {lo}..{hi}")
        return v

    def float_(self, k: str, default: float, lo: float, hi: float) -> float:
        if not self.has(k):
            return default
        v = self.raw(k)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(k, f"expected a number, got {_kind(v)}")
        if not lo <= v <= hi:
            raise self.error(k, f"{v} is out of range {lo}..{hi}")
        return float(v)

    def str_list(self, k: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if not self.has(k):
            return default
        v = self.raw(k)
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            raise self.error(k, f"expected an array of strings, got {_kind(v)}")
        return tuple(i.strip() for i in v)

    def finish(self, known: tuple[str, ...]) -> None:
        for k in self.data:
            if k in self.seen:
                continue
            hint = difflib.get_close_matches(k, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(known)})"
            raise self.error(k, f"unknown option{extra}")


def read_options(path: Path) -> Options:
    """Read and validate an options file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError("options", f"cannot read {str(path)!r}: {reason}", path) from exc
    return read_options_text(text, source=path)


def read_options_text(text: str, source: Path | None = None) -> Options:
    """Like :func:`read_options`, for TOML text already in memory (relative paths: the cwd)."""
    where = str(source) if source is not None else "options"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("options", f"invalid TOML in {where}: {exc}", source) from exc
    except ValueError as exc:  # an integer above sys.get_int_max_str_digits() digits
        raise ConfigError("options", f"invalid TOML in {where}: {exc}", source) from exc
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError("options", f"invalid TOML in {where}: arrays or tables nested too deeply", source) from None
    base_dir = source.resolve().parent if source is not None else Path.cwd()
    top = _Table(doc, "", source)

    def table(name: str) -> _Table:
        return _Table(top.raw(name), name, source)

    gateway = _gateway(table("gateway"), base_dir) if top.has("gateway") else GatewayOptions()
    limits = _limits(table("limits")) if top.has("limits") else Limits()
    users = _users(table("users")) if top.has("users") else {}
    listen = _listen(top.raw("listen"), source) if top.has("listen") else None
    entries = _webrtc2sip(table("webrtc2sip"), base_dir) if top.has("webrtc2sip") else ()
    recording = _recording(table("recording"), base_dir) if top.has("recording") else RecordingOptions()
    forward = _forward(table("forward"), base_dir) if top.has("forward") else ForwardOptions()
    media = _media(table("media")) if top.has("media") else MediaOptions()
    admin = _admin(table("admin") if top.has("admin") else _Table({}, "admin", source), base_dir,
                   gateway.admin_token)
    top.finish(_TOP_LEVEL)
    return Options(
        gateway=gateway,
        limits=limits,
        recording=recording,
        forward=forward,
        media=media,
        admin=admin,
        users=MappingProxyType(users),
        listen=listen,
        webrtc2sip=entries,
        source=source,
    )


def _gateway(t: _Table, base_dir: Path) -> GatewayOptions:
    d = GatewayOptions()
    data_dir = d.data_dir
    if t.has("data_dir"):
        p = Path(t.str_("data_dir", "")).expanduser()
        data_dir = p if p.is_absolute() else base_dir / p
    domains = t.str_list("domains", d.domains)
    if not domains:
        raise t.error("domains", "needs at least one domain")
    norm: list[str] = []
    for dom in domains:
        ip = canonical_ip(dom)
        if ip is None and not valid_host(dom):
            raise t.error("domains", f"not a valid domain or IP address: {dom!r}")
        # IPv6 kept in brackets, the form it has as the host of a SIP URI
        low = dom.lower().rstrip(".") if ip is None else f"[{ip}]" if ":" in ip else ip
        if low not in norm:
            norm.append(low)
    upstream: str | None = None
    if t.has("upstream_proxy"):
        upstream = t.str_("upstream_proxy", "")
        try:
            parse_sip_uri(upstream)
        except SipParseError as exc:
            raise t.error("upstream_proxy", f"not a SIP URI: {upstream!r} ({exc.reason})") from exc
    auth = d.auth
    if t.has("auth"):
        v = t.raw("auth")
        # accept TOML booleans too: `auth = true` reads naturally
        auth = ("on" if v else "off") if isinstance(v, bool) else t.choice("auth", d.auth, AUTH_MODES)
    g = GatewayOptions(
        data_dir=data_dir,
        domains=tuple(norm),
        log_format=t.choice("log_format", d.log_format, LOG_FORMATS),
        upstream_proxy=upstream,
        auth=auth,
        open_relay=t.bool_("open_relay", d.open_relay),
        breaker=t.choice("breaker", d.breaker, BREAKER_POLICIES),
        digest_algorithms=_digest_algorithms(t, d.digest_algorithms),
        admin_token=_admin_token(t, "admin_token") if t.has("admin_token") else None,
        services=t.bool_("services", d.services),
        diag_duration=t.int_("diag_duration", d.diag_duration, 1, 60),
    )
    t.finish(("data_dir", "domains", "log_format", "upstream_proxy", "auth", "open_relay", "breaker",
              "digest_algorithms", "admin_token", "services", "diag_duration"))
    return g


def _path(t: _Table, k: str, base_dir: Path) -> Path | None:
    if not t.has(k):
        return None
    p = Path(t.str_(k, "")).expanduser()
    return p if p.is_absolute() else base_dir / p


def _rule(t: _Table) -> tuple[str, ...]:
    """AOR globs (fnmatch, case-insensitive): a string or an array; "all" is "*"."""
    if t.has("rule") and isinstance(t.raw("rule"), str):
        rules: tuple[str, ...] = (t.str_("rule", "*"),)
    else:
        rules = t.str_list("rule", ("*",))
    if not rules or not all(rules):
        raise t.error("rule", "needs at least one non-empty AOR glob (\"*\" or \"all\": every call)")
    return tuple("*" if r.lower() == "all" else r for r in rules)


def _recording(t: _Table, base_dir: Path) -> RecordingOptions:
    d = RecordingOptions()
    r = RecordingOptions(
        enabled=t.bool_("enabled", d.enabled),
        rule=_rule(t),
        dir=_path(t, "dir", base_dir),
        format=t.choice("format", d.format, RECORDING_FORMATS),
    )
    t.finish(("enabled", "rule", "dir", "format"))
    return r


def _media(t: _Table) -> MediaOptions:
    d = MediaOptions()
    workers = 0
    if t.has("workers"):
        v = t.raw("workers")
        if isinstance(v, str) and v.strip().lower() == "auto":
            workers = max(1, min(MAX_MEDIA_WORKERS, os.cpu_count() or 1))
        else:
            workers = t.int_("workers", 0, 0, MAX_MEDIA_WORKERS)
    rtp_ports = d.rtp_ports
    if t.has("rtp_ports"):
        v = t.raw("rtp_ports")
        m_ = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", v) if isinstance(v, str) else None
        if m_ is None:
            raise t.error("rtp_ports", f"{v!r} is not a range like \"20000-29999\"")
        low, high = int(m_[1]), int(m_[2])
        if not 1024 <= low < high <= 65535:
            raise t.error("rtp_ports", f"{low}-{high}: want 1024 <= low < high <= 65535")
        if high - low + 1 < MIN_RTP_PORTS * max(1, workers):
            raise t.error("rtp_ports", f"{low}-{high} is too small: at least {MIN_RTP_PORTS} ports per media process")
        rtp_ports = (low, high)
    m = MediaOptions(
        workers=workers,
        rtp_ports=rtp_ports,
        webrtc_socket=t.choice("webrtc_socket", d.webrtc_socket, WEBRTC_SOCKETS),
        webrtc_port=t.int_("webrtc_port", d.webrtc_port, 0, 65535),
        fast_path=t.choice("fast_path", d.fast_path, FAST_PATHS),
    )
    if m.webrtc_port and m.webrtc_socket != "shared":
        raise t.error("webrtc_port", "is the shared socket's port: needs webrtc_socket = \"shared\"")
    if 0 < m.webrtc_port < 1024:
        raise t.error("webrtc_port", f"{m.webrtc_port} is a privileged port: use 1024..65535 (0: from the media range)")
    if m.webrtc_port and workers > 1:
        # each worker process has a shared socket of its own; one port cannot be bound by all
        raise t.error("webrtc_port", f"one port cannot serve {workers} media workers: leave it at 0")
    t.finish(("workers", "rtp_ports", "webrtc_socket", "webrtc_port", "fast_path"))
    return m


def _forward(t: _Table, base_dir: Path) -> ForwardOptions:
    to: tuple[str, int] | None = None
    if t.has("to"):
        text = t.str_("to", "")
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        ip = canonical_ip(host) if sep else None
        if ip is None or not port.isdigit() or not 0 < int(port) <= 65530:
            raise t.error("to", f"expected an IP address and port like \"127.0.0.1:5004\", got {text!r}")
        to = (ip, int(port))  # the legacy leg's audio goes to port, the browser's to port + 2
    f = ForwardOptions(to=to, rule=_rule(t), dir=_path(t, "dir", base_dir))
    t.finish(("to", "rule", "dir"))
    return f


def _admin(t: _Table, base_dir: Path, gateway_token: str | None) -> AdminOptions:
    listen: tuple[str, int] | None = ADMIN_DEFAULT_LISTEN
    if t.has("listen"):
        v = t.raw("listen")
        if not isinstance(v, str):
            raise t.error("listen", f"expected a string like \"127.0.0.1:8089\", got {_kind(v)}")
        listen = _admin_listen(t, v.strip()) if v.strip() else None
    if not t.bool_("enabled", True):
        listen = None
    token = _admin_token(t, "token") if t.has("token") else gateway_token
    cert, key = _path(t, "tls_cert", base_dir), _path(t, "tls_key", base_dir)
    if (cert is None) != (key is None):
        raise t.error("tls_cert" if cert is None else "tls_key", "give both tls_cert and tls_key, or neither")
    a = AdminOptions(listen=listen, token=token, tls_cert=cert, tls_key=key)
    if listen is not None and not a.loopback and (token is None or not a.tls):
        # the admin API records calls and sends their media anywhere: beyond loopback it must not be
        # reachable without a secret, nor the secret readable on the wire
        missing = " and ".join(w for w, ok in (("a token ([admin] token or [gateway] admin_token)", token),
                                               ("TLS (tls_cert and tls_key)", a.tls)) if not ok)
        raise t.error("listen", f"{listen[0]}:{listen[1]} is beyond loopback: the admin listener needs {missing} "
                      "there (or listen on 127.0.0.1, or listen = \"\" to turn it off)")
    t.finish(("listen", "enabled", "token", "tls_cert", "tls_key"))
    return a


def _admin_listen(t: _Table, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = "0.0.0.0" if host == "*" else "127.0.0.1" if host.lower() == "localhost" else host
    ip = canonical_ip(host) if sep else None
    if ip is None or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise t.error("listen", f"expected an IP address and port like \"127.0.0.1:8089\" (port 0: chosen by the "
                      f"system), got {text!r}")
    if ":" in ip and not host.startswith("["):
        raise t.error("listen", f"an IPv6 address goes in brackets: \"[{ip}]:{port}\", got {text!r}")
    return ip, int(port)


ADMIN_TOKEN_MIN_LENGTH = 16
_ADMIN_TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")  # RFC 6750 §2.1 b64token


def _admin_token(t: _Table, k: str) -> str:
    """A bearer token (RFC 6750 §2.1 syntax), long enough not to be guessed."""
    token = t.str_(k, "")
    if not _ADMIN_TOKEN.match(token):
        raise t.error(k, "only letters, digits and -._~+/ (then optional '=') are allowed")
    if len(token) < ADMIN_TOKEN_MIN_LENGTH:
        raise t.error(k, f"too short: at least {ADMIN_TOKEN_MIN_LENGTH} characters")
    return token


DIGEST_ALGORITHMS = ("MD5", "SHA-256", "SHA-512-256")


def _digest_algorithms(t: _Table, default: tuple[str, ...]) -> tuple[str, ...]:
    algos = t.str_list("digest_algorithms", default)
    out: list[str] = []
    for a in algos:
        canon = next((x for x in DIGEST_ALGORITHMS if x.lower() == a.lower()), None)
        if canon is None:
            raise t.error("digest_algorithms", f"unknown algorithm {a!r} (known: {', '.join(DIGEST_ALGORITHMS)})")
        if canon not in out:
            out.append(canon)
    if not out:
        raise t.error("digest_algorithms", "needs at least one algorithm")
    return tuple(out)


def _origin(t: _Table, o: str) -> str:
    """An RFC 6454 origin, lower-cased as browsers serialise it in the Origin header."""
    try:
        parts = urlsplit(o)  # raises on an unbalanced IPv6 bracket
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        parts = urlsplit("invalid:")
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or not (valid_host(host) or canonical_ip(host) is not None)
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise t.error("ws_origins", f"not an origin like 'https://example.org[:port]': {o!r}")
    scheme = parts.scheme.lower()
    netloc = parts.netloc.lower()
    # browsers leave the default port out of Origin, and the header is compared as a string
    if parts.port == {"http": 80, "https": 443}[scheme]:
        netloc = netloc.rsplit(":", 1)[0]
    return f"{scheme}://{netloc}"


def _limits(t: _Table) -> Limits:
    d = Limits()
    lim = Limits(
        max_message_size=t.int_("max_message_size", d.max_message_size, 1024, 1 << 24),
        max_connections_per_source=t.int_("max_connections_per_source", d.max_connections_per_source, 0,
                                          _UINT32_MAX),
        max_registrations_per_source=t.int_("max_registrations_per_source", d.max_registrations_per_source,
                                            0, _UINT32_MAX),
        ws_origins=tuple(dict.fromkeys(_origin(t, o) for o in t.str_list("ws_origins", d.ws_origins))),
        nonce_lifetime=t.int_("nonce_lifetime", d.nonce_lifetime, 1, 86400),
        min_expires=t.int_("min_expires", d.min_expires, 1, _UINT32_MAX),
        default_expires=t.int_("default_expires", d.default_expires, 1, _UINT32_MAX),
        max_expires=t.int_("max_expires", d.max_expires, 1, _UINT32_MAX),
        max_transcoded_calls=t.int_("max_transcoded_calls", d.max_transcoded_calls, 0, 1_000_000),
        transcoding_overflow=t.choice("transcoding_overflow", d.transcoding_overflow, ("reject", "audio-only")),
        final_response_timeout=t.float_("final_response_timeout", d.final_response_timeout, 0.5, 300.0),
        dns_timeout=t.float_("dns_timeout", d.dns_timeout, 0.1, 60.0),
        rate_per_source=t.float_("rate_per_source", d.rate_per_source, 0.0, 1e6),
        burst_per_source=t.int_("burst_per_source", d.burst_per_source, 1, 1_000_000),
        max_auth_failures=t.int_("max_auth_failures", d.max_auth_failures, 0, 1_000_000),
        auth_failure_window=t.float_("auth_failure_window", d.auth_failure_window, 1.0, 86400.0),
        block_time=t.float_("block_time", d.block_time, 1.0, 86400.0),
    )
    if lim.dns_timeout >= lim.final_response_timeout:
        raise t.error("dns_timeout", f"{lim.dns_timeout} is not less than final_response_timeout "
                      f"{lim.final_response_timeout}")
    if lim.min_expires > lim.max_expires:
        raise t.error("min_expires", f"{lim.min_expires} is greater than max_expires {lim.max_expires}")
    if not lim.min_expires <= lim.default_expires <= lim.max_expires:
        raise t.error(
            "default_expires",
            f"{lim.default_expires} is not between min_expires {lim.min_expires} "
            f"and max_expires {lim.max_expires}",
        )
    t.finish(tuple(f.name for f in fields(Limits)))
    return lim


def _users(t: _Table) -> dict[str, str]:
    users: dict[str, str] = {}
    for name in list(t.data):
        if not _USER.match(name):
            raise t.error(name, "not a valid SIP user name")
        users[name] = t.str_(name, "")
    return users


def _listen(data: object, source: Path | None) -> tuple[Listener, ...]:
    if not isinstance(data, list):
        raise ConfigError("listen", f"expected an array of tables ([[listen]]), got {_kind(data)}", source)
    if not data:
        raise ConfigError("listen", "needs at least one listener", source)
    out: list[Listener] = []
    for i, item in enumerate(data):
        t = _Table(item, f"listen[{i}]", source)
        if not t.has("transport"):
            raise t.error("transport", "missing")
        if not t.has("port"):
            raise t.error("port", "missing")
        transport = t.choice("transport", "", SIP_TRANSPORTS)
        host = t.str_("host", "127.0.0.1")
        if host == "*":
            host = "0.0.0.0"
        ip = canonical_ip(host)
        if ip is None and not valid_host(host):
            raise t.error("host", f"not a valid host or IP address: {host!r}")
        port = t.int_("port", 0, 0, 65535)
        t.finish(("transport", "host", "port"))
        out.append(Listener(transport, ip if ip is not None else host.lower(), port))
    return tuple(out)


def _xml_text(t: _Table, key: str, v: object) -> str:
    """A TOML value as the config.xml text it stands for."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(i, str | int) and not isinstance(i, bool) for i in v):
        return ";".join(str(i) for i in v)
    raise t.error(key, f"expected a string, boolean, integer or array, got {_kind(v)}")


def _webrtc2sip(t: _Table, base_dir: Path) -> tuple[RawEntry, ...]:
    entries: list[RawEntry] = []
    for key in list(t.data):
        if key not in XML_KEYS:
            continue  # reported by finish() with a suggestion
        v = t.raw(key)
        if key in REPEATABLE and isinstance(v, list):
            for i, item in enumerate(v):
                if not isinstance(item, str):
                    raise t.error(f"{key}[{i}]", f"expected a string, got {_kind(item)}")
                entries.append(RawEntry(key, item.strip(), t.key(f"{key}[{i}]"), base_dir))
            if not v:
                raise t.error(key, "must not be empty")
            continue
        text = _xml_text(t, key, v).strip()
        if not text:
            raise t.error(key, "must not be empty")
        entries.append(RawEntry(key, text, t.key(key), base_dir))
    t.finish(XML_KEYS)
    return tuple(entries)

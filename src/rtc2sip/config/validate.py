"""Checking config.xml-style values (from config.xml or the TOML ``[webrtc2sip]`` table) into
:class:`~rtc2sip.config.webrtc2sip.Webrtc2sipSettings` and listeners: :func:`parse_entries`.

The value syntax follows webrtc2sip 2.7.0's setters (``mp_engine.cc``): multi-valued elements are
``;``-separated and each field is trimmed, as ``tsk_params_fromstring(..., ";", tsk_true)`` does, so
values may span several lines. Where webrtc2sip silently ignored a bad value (``atoi("abc") == 0``, an
unknown codec, a transport with two fields), rtc2sip refuses to start instead: a gateway that quietly
runs with a different configuration than the one written is harder to debug than one that says what
is wrong.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtc2sip.sip.errors import SipParseError
from rtc2sip.sip.uri import parse_sip_uri, valid_host

from .webrtc2sip import (
    CLICK_TO_CALL_TRANSPORTS,
    CODECS,
    DEBUG_LEVELS,
    DTMF_TYPES,
    OPUS_RATES,
    REPEATABLE,
    SIP_TRANSPORTS,
    SRTP_MODES,
    SRTP_TYPES,
    VIDEO_SIZES,
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
    canonical_ip,
)

__all__ = ["XmlResult", "parse_entries"]

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class XmlResult:
    """What :func:`parse_entries` makes of the entries: ``listeners`` is None when none were given."""

    settings: Webrtc2sipSettings
    listeners: tuple[Listener, ...] | None
    listeners_label: str
    warnings: tuple[str, ...]


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


def load_key_pair(ctx: ssl.SSLContext, cert: Path | str, key: Path | str) -> None:
    """``load_cert_chain`` as every TLS context of the gateway does it (the listeners and this check)."""
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key), password=_no_passphrase)


def _no_passphrase() -> bytes:
    # without a callback OpenSSL would prompt on the terminal for an encrypted key and hang a service
    return b""


def _load_check(e: RawEntry, priv: Path | None, pub: Path | None, ca: Path | None) -> None:
    """Load the files the way the TLS listeners will, so a bad file stops the start, not a handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if priv is not None and pub is not None:
        try:
            load_key_pair(ctx, pub, priv)
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

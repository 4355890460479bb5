"""Configuration: webrtc2sip config.xml (drop-in), rtc2sip TOML options, defaults and errors."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rtc2sip.config import (
    CODECS,
    DEFAULT_LISTENERS,
    VIDEO_SIZES,
    XML_KEYS,
    AdminOptions,
    ConfigError,
    Listener,
    Settings,
    SslCertificates,
    StunServer,
    load_settings,
)

# webrtc2sip 2.7.0's sample, as shipped (trunk/config.xml of DoubangoTelecom/webrtc2sip).
_GUIDE_COMMENT = (
    "<!-- Please check the technical guide (http://webrtc2sip.org/technical-guide-1.0.pdf) "
    "for more information on how to adjust this file -->"
)
UPSTREAM_SAMPLE_27 = f"""\
<?xml version="1.0" encoding="utf-8" ?>
{_GUIDE_COMMENT}
<config>

  <debug-level>ERROR</debug-level>

  <transport>udp;*;10060</transport>
  <transport>ws;*;10060</transport>
  <transport>wss;*;10062</transport>
  <!--transport>tcp;*;10063</transport-->
  <!--transport>tls;*;10064</transport-->

  <enable-rtp-symetric>yes</enable-rtp-symetric>
  <enable-100rel>no</enable-100rel>
  <enable-media-coder>no</enable-media-coder>
  <enable-videojb>yes</enable-videojb>
  <video-size-pref>vga</video-size-pref>
  <rtp-buffsize>65535</rtp-buffsize>
  <avpf-tail-length>100;400</avpf-tail-length>
  <srtp-mode>optional</srtp-mode>
  <srtp-type>sdes;dtls</srtp-type>
  <dtmf-type>rfc4733</dtmf-type>

  <codecs>opus;pcma;pcmu;gsm;vp8;h264-bp;h264-mp;h263;h263+</codecs>
  <codec-opus-maxrates>48000;48000</codec-opus-maxrates>

  <stun-server>stun.l.google.com;19302;stun-user@doubango.org;stun-password</stun-server>
  <enable-icestun>yes</enable-icestun>

  <max-fds>-1</max-fds>

  <!--nameserver>66.66.66.6</nameserver-->

  <!--ssl-certificates>
    C:/Projects/ssl/priv.pem;
    C:/Projects/ssl/pub.pem;
    C:/Projects/ssl/ca-cert.pem;
    no
  </ssl-certificates-->

  <!-- ***CLICK-TO-CALL SERVICE*** -->

  <transport>c2c;*;10070</transport>
  <transport>c2cs;*;10072</transport>
  <database>sqlite;*</database>
  <!--account-mail>smtps;*;*;auth.smtp.1and1.fr;465;noreply@example.com;noreply@example.com;mysecret</account-mail-->
  <!--account-sip-caller>*;sip:a@example.com;a;example.com;mysecret</account-sip-caller-->
  <!--account-http-domain>click2dial.org</account-http-domain-->
  <!--account-recaptcha>https://www.google.com/recaptcha/api/siteverify;your-secret-here</account-recaptcha-->

</config>"""

# webrtc2sip 2.0.0's sample (the first config.xml of the repository; blank lines' indentation dropped).
UPSTREAM_SAMPLE_20 = """\
<?xml version="1.0" encoding="utf-8" ?>
<!-- Please check the technical guide for more information on how to adjust this file -->
<config>

  <debug-level>INFO</debug-level>

  <transport>udp;*;10060</transport>
  <transport>ws;*;10060</transport>
  <transport>wss;*;10062</transport>

  <enable-100rel>no</enable-100rel>
  <enable-media-coder>no</enable-media-coder>
  <enable-videojb>yes</enable-videojb>
  <rtp-buffsize>65535</rtp-buffsize>
  <avpf-tail-length>100;400</avpf-tail-length>

  <codecs>pcma;pcmu;gsm;vp8;h264-bp;h264-mp;h263;h263+</codecs>

  <!--nameserver>66.66.66.6</nameserver-->

  <!--ssl-certificates>
    self.pem;
    self.pem;
    *
  </ssl-certificates-->

</config>"""


def xml(body: str) -> str:
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<config>\n{body}\n</config>\n'


Write = Callable[[str, str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return _write


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed key pair in PEM, made with the openssl command line tool."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, crt = tmp_path / "priv.pem", tmp_path / "pub.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
         "-days", "1", "-subj", "/CN=rtc2sip-test"],
        check=True,
        capture_output=True,
    )
    return key, crt


def load_xml(write: Write, body: str, check_files: bool = True) -> Settings:
    return load_settings(write("config.xml", xml(body)), check_files=check_files)


def error_of(write: Write, body: str) -> str:
    with pytest.raises(ConfigError) as ei:
        load_xml(write, body)
    return str(ei.value)


# --- defaults -----------------------------------------------------------------------------------


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RTC2SIP_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    s = load_settings()
    assert s.listeners == (
        Listener("udp", "127.0.0.1", 5060),
        Listener("tcp", "127.0.0.1", 5060),
        Listener("ws", "127.0.0.1", 8080),
    )
    assert s.listeners == DEFAULT_LISTENERS
    assert s.gateway.domains == ("localhost", "127.0.0.1")
    assert s.gateway.data_dir == tmp_path / ".local" / "share" / "rtc2sip"
    assert s.gateway.auth == "auto"
    assert s.gateway.log_format == "text"
    assert s.gateway.upstream_proxy is None
    assert s.gateway.open_relay is False
    assert s.loopback_only() and not s.auth_required()
    assert dict(s.users) == {}
    lim = s.limits
    assert (lim.max_message_size, lim.nonce_lifetime) == (65535, 300)
    assert (lim.min_expires, lim.default_expires, lim.max_expires) == (60, 3600, 86400)
    assert lim.ws_origins == ()
    w = s.webrtc2sip
    assert w.debug_level == "INFO"
    assert (w.enable_rtp_symetric, w.enable_100rel, w.enable_media_coder, w.enable_videojb) == (
        True, False, False, True)
    assert w.video_size_pref == "vga"
    assert w.rtp_buffsize == 65535
    assert w.avpf_tail_length == (100, 400)
    assert (w.srtp_mode, w.srtp_type, w.dtmf_type) == ("optional", ("sdes", "dtls"), "rfc4733")
    assert w.codecs == ("opus", "pcma", "pcmu", "gsm", "vp8", "h264-bp", "h264-mp", "h263", "h263+")
    assert w.codec_opus_maxrates == (48000, 48000)
    assert w.stun_server is None and w.enable_icestun is False
    assert w.max_fds == -1 and w.nameservers == () and w.ssl_certificates is None
    assert s.warnings == ()
    assert s.log_level == logging.INFO


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RTC2SIP_DATA_DIR", str(tmp_path / "d"))
    assert load_settings().gateway.data_dir == tmp_path / "d"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.listeners = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.webrtc2sip.codecs = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.users["x"] = "y"  # type: ignore[index]


# --- the upstream samples -----------------------------------------------------------------------


def test_upstream_sample_27(write: Write) -> None:
    s = load_settings(write("config.xml", UPSTREAM_SAMPLE_27))
    assert s.listeners == (
        Listener("udp", "0.0.0.0", 10060),
        Listener("ws", "0.0.0.0", 10060),
        Listener("wss", "0.0.0.0", 10062),
    )
    w = s.webrtc2sip
    assert w.debug_level == "ERROR" and s.log_level == logging.ERROR
    assert w.enable_rtp_symetric and not w.enable_100rel and not w.enable_media_coder and w.enable_videojb
    assert w.video_size_pref == "vga" and w.rtp_buffsize == 65535 and w.avpf_tail_length == (100, 400)
    assert w.srtp_mode == "optional" and w.srtp_type == ("sdes", "dtls") and w.dtmf_type == "rfc4733"
    assert w.codecs == ("opus", "pcma", "pcmu", "gsm", "vp8", "h264-bp", "h264-mp", "h263", "h263+")
    assert w.codec_opus_maxrates == (48000, 48000)
    assert w.stun_server == StunServer("stun.l.google.com", 19302, "stun-user@doubango.org", "stun-password")
    assert w.enable_icestun is True and w.max_fds == -1
    assert w.click_to_call == (Listener("c2c", "0.0.0.0", 10070), Listener("c2cs", "0.0.0.0", 10072))
    assert w.database is not None
    assert (w.database.type, w.database.connection) == ("sqlite", "./c2c_sqlite.db")
    assert w.nameservers == () and w.ssl_certificates is None and w.account_mail is None
    # bound to every address: authentication is on, and nobody is configured to pass it
    assert not s.loopback_only() and s.auth_required()
    assert any("[users] is empty" in x for x in s.warnings)
    assert any("TLS/WSS" in x for x in s.warnings)
    assert s.active_listeners() == s.listeners[:2]
    assert s.banner_lines()[:4] == [
        "SIP over UDP on 0.0.0.0:10060",
        "SIP over WebSocket on ws://0.0.0.0:10060 (subprotocol sip)",
        "WSS/TLS are off: no ssl-certificates configured; not listening: wss on 0.0.0.0:10062",
        "Click-to-call is not served by this version; ignored: c2c on 0.0.0.0:10070, c2cs on 0.0.0.0:10072",
    ]


def test_upstream_sample_20(write: Write) -> None:
    s = load_settings(write("config.xml", UPSTREAM_SAMPLE_20))
    assert [lst.transport for lst in s.listeners] == ["udp", "ws", "wss"]
    assert s.webrtc2sip.codecs == ("pcma", "pcmu", "gsm", "vp8", "h264-bp", "h264-mp", "h263", "h263+")
    assert s.webrtc2sip.debug_level == "INFO"
    # keys the 2.0 sample lacks keep the later samples' values
    assert s.webrtc2sip.srtp_type == ("sdes", "dtls")


def test_every_key(write: Write, certs: tuple[Path, Path]) -> None:
    key, crt = certs
    s = load_xml(write, f"""
  <debug-level>warn</debug-level>
  <transport>udp;192.0.2.1;5060</transport>
  <transport>TCP;*;5060</transport>
  <transport>tls;::1;5061</transport>
  <transport>ws;localhost;*</transport>
  <transport>wss;*;10062</transport>
  <enable-rtp-symetric>no</enable-rtp-symetric>
  <enable-100rel>YES</enable-100rel>
  <enable-media-coder>yes</enable-media-coder>
  <enable-videojb>no</enable-videojb>
  <video-size-pref>720P</video-size-pref>
  <rtp-buffsize>8192</rtp-buffsize>
  <avpf-tail-length>50;50</avpf-tail-length>
  <srtp-mode>mandatory</srtp-mode>
  <srtp-type>dtls</srtp-type>
  <dtmf-type>rfc2833</dtmf-type>
  <codecs>G722;ilbc;speex-nb;speex-wb;speex-uwb;g729;theora;mp4v-es;amr-nb-be;amr-nb-oa;pcmu;pcmu</codecs>
  <codec-opus-maxrates>16000;8000</codec-opus-maxrates>
  <stun-server>192.0.2.9;3478</stun-server>
  <enable-icestun>no</enable-icestun>
  <max-fds>4096</max-fds>
  <nameserver>8.8.8.8</nameserver>
  <nameserver>2001:4860:4860::8888</nameserver>
  <nameserver>192.0.2.53:5353</nameserver>
  <nameserver>[2001:db8::53]:53</nameserver>
  <nameserver>[2001:db8::54]</nameserver>
  <ssl-certificates>
    {key};
    {crt};
    *;
    yes
  </ssl-certificates>
  <database>mysql;server=db;user=u</database>
  <account-mail>smtps;*;*;smtp.example.com;465;noreply@example.com;noreply;mailsecret</account-mail>
  <account-sip-caller>*;sip:a@example.com;a;example.com;secret-a</account-sip-caller>
  <account-sip-caller>Bob;sip:b@example.com;b;example.com;secret-b</account-sip-caller>
  <account-http-domain>click2dial.org</account-http-domain>
  <account-recaptcha>https://www.google.com/recaptcha/api/siteverify;captcha-secret</account-recaptcha>
""")
    assert s.listeners == (
        Listener("udp", "192.0.2.1", 5060),
        Listener("tcp", "0.0.0.0", 5060),
        Listener("tls", "::1", 5061),
        Listener("ws", "localhost", 0),
        Listener("wss", "0.0.0.0", 10062),
    )
    w = s.webrtc2sip
    assert w.debug_level == "WARN" and s.log_level == logging.WARNING
    assert (w.enable_rtp_symetric, w.enable_100rel, w.enable_media_coder, w.enable_videojb) == (
        False, True, True, False)
    assert w.video_size_pref == "720p" and VIDEO_SIZES[w.video_size_pref] == (1280, 720)
    assert w.rtp_buffsize == 8192 and w.avpf_tail_length == (50, 50)
    assert (w.srtp_mode, w.srtp_type, w.dtmf_type) == ("mandatory", ("dtls",), "rfc2833")
    assert w.codecs == ("g722", "ilbc", "speex-nb", "speex-wb", "speex-uwb", "g729", "theora", "mp4v-es",
                        "amr-nb-be", "amr-nb-oa", "pcmu")
    assert w.codec_opus_maxrates == (16000, 8000)
    assert w.stun_server == StunServer("192.0.2.9", 3478, None, None)
    assert w.enable_icestun is False and w.max_fds == 4096
    assert w.nameservers == ("8.8.8.8", "2001:4860:4860::8888", "192.0.2.53:5353", "[2001:db8::53]:53",
                             "2001:db8::54")
    assert w.ssl_certificates == SslCertificates(key, crt, None, True)
    assert s.tls_available() and s.active_listeners() == s.listeners
    assert w.database is not None
    assert (w.database.type, w.database.connection) == ("mysql", "server=db;user=u")
    assert w.account_mail is not None
    assert (w.account_mail.scheme, w.account_mail.local_ip, w.account_mail.local_port) == ("smtps", None, 0)
    assert (w.account_mail.smtp_host, w.account_mail.smtp_port) == ("smtp.example.com", 465)
    assert w.account_mail.auth_password == "mailsecret"
    assert [(c.display_name, c.impu, c.impi, c.realm) for c in w.account_sip_callers] == [
        (None, "sip:a@example.com", "a", "example.com"),
        ("Bob", "sip:b@example.com", "b", "example.com"),
    ]
    assert w.account_http_domain == "click2dial.org"
    assert w.account_recaptcha is not None and w.account_recaptcha.secret == "captcha-secret"
    assert s.banner_lines()[:5] == [
        "SIP over UDP on 192.0.2.1:5060",
        "SIP over TCP on 0.0.0.0:5060",
        "SIP over TLS on [::1]:5061",
        "SIP over WebSocket on ws://localhost:* (subprotocol sip)",
        "SIP over secure WebSocket on wss://0.0.0.0:10062 (subprotocol sip)",
    ]
    assert not any("WSS/TLS" in line for line in s.banner_lines())


def test_all_upstream_codecs_and_sizes_known() -> None:
    # the table of MPEngine::setCodecs
    upstream_codecs = ["pcma", "pcmu", "opus", "amr-nb-be", "amr-nb-oa", "speex-nb", "speex-wb", "speex-uwb",
                       "g729", "gsm", "g722", "ilbc", "h264-bp", "h264-mp", "vp8", "h263", "h263+", "theora",
                       "mp4v-es"]
    assert set(upstream_codecs) == set(CODECS)
    assert {"sqcif", "qcif", "qvga", "cif", "hvga", "vga", "4cif", "svga", "480p", "720p", "16cif",
            "1080p", "2160p"} <= set(VIDEO_SIZES)


def test_secrets_stay_out_of_repr(write: Write) -> None:
    s = load_xml(write, """
  <stun-server>stun.example.org;3478;user;stun-pass</stun-server>
  <account-mail>smtp;*;*;smtp.example.com;25;a@example.com;a;mail-pass</account-mail>
  <account-sip-caller>*;sip:a@example.com;a;example.com;caller-pass</account-sip-caller>
  <account-recaptcha>https://example.com/verify;captcha-pass</account-recaptcha>
""")
    text = repr(s)
    for secret in ("stun-pass", "mail-pass", "caller-pass", "captcha-pass"):
        assert secret not in text


# --- XML form ----------------------------------------------------------------------------------


def test_unknown_and_empty_elements_warn(write: Write, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rtc2sip.config"):
        s = load_xml(write, "<accept-sip-reg>yes</accept-sip-reg><nameserver id='2'></nameserver>")
    assert any("unknown element <accept-sip-reg>" in w for w in s.warnings)
    assert any("<nameserver> is empty" in w for w in s.warnings)
    assert "accept-sip-reg" in caplog.text


def test_element_names_are_case_insensitive(write: Write) -> None:
    s = load_xml(write, "<Debug-Level>fatal</Debug-Level><CODECS>PCMU</CODECS>")
    assert s.webrtc2sip.debug_level == "FATAL" and s.webrtc2sip.codecs == ("pcmu",)


def test_repeated_singleton_last_wins(write: Write) -> None:
    s = load_xml(write, "<codecs>pcma</codecs><codecs>pcmu</codecs>")
    assert s.webrtc2sip.codecs == ("pcmu",)
    assert any("codecs: given 2 times" in w for w in s.warnings)


def test_only_click_to_call_transports_keeps_default_listeners(write: Write) -> None:
    s = load_xml(write, "<transport>c2c;*;10070</transport>")
    assert s.listeners == DEFAULT_LISTENERS
    assert s.webrtc2sip.click_to_call == (Listener("c2c", "0.0.0.0", 10070),)


def test_malformed_xml(write: Write) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(write("config.xml", "<config>\n<codecs>pcmu</codec>\n</config>"))
    msg = str(ei.value)
    assert msg.startswith("config: malformed XML in ") and "line 2" in msg and "mismatched tag" in msg


def test_errors_carry_their_file(write: Write) -> None:
    cfg = write("config.xml", xml("<codecs>foo</codecs>"))
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg)
    assert (ei.value.key, ei.value.source) == ("codecs", cfg)
    assert ei.value.reason.startswith("unknown codec 'foo'")
    opts = write("o.toml", "[webrtc2sip]\ncodecs = \"foo\"")
    with pytest.raises(ConfigError) as ei:
        load_settings(write("config.xml", xml("")), opts)
    assert (ei.value.key, ei.value.source) == ("webrtc2sip.codecs", opts)


def test_nested_element_rejected(write: Write) -> None:
    assert error_of(write, "<codecs><x/>pcmu</codecs>") == "codecs: unexpected child elements"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: cannot read .*nope\.xml"):
        load_settings(tmp_path / "nope.xml")


def test_root_other_than_config_warns(write: Write) -> None:
    s = load_settings(write("c.xml", "<cfg><codecs>pcmu</codecs></cfg>"))
    assert s.webrtc2sip.codecs == ("pcmu",) and any("root element is <cfg>" in w for w in s.warnings)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<debug-level>TRACE</debug-level>",
         "debug-level: unknown debug level 'TRACE' (expected one of: debug, info, warn, error, fatal)"),
        ("<transport>foo;*;5060</transport>",
         "transport: unknown protocol 'foo' in 'foo;*;5060' "
         "(expected one of: udp, tcp, tls, ws, wss, c2c, c2cs)"),
        ("<transport>udp;*</transport>", "transport: expected 'proto;ip;port', got 'udp;*'"),
        ("<transport>udp;*;70000</transport>", "transport: 70000 is out of range 1..65535 in 'udp;*;70000'"),
        ("<transport>udp;*;x</transport>", "transport: not an integer: 'x' in 'udp;*;x'"),
        ("<transport>udp;bad host;5060</transport>",
         "transport: not a valid host or IP address: 'bad host' in 'udp;bad host;5060'"),
        ("<transport>udp;;5060</transport>", "transport: empty field in 'udp;;5060'"),
        ("<enable-100rel>true</enable-100rel>", "enable-100rel: expected yes or no, got 'true'"),
        ("<enable-media-coder>1</enable-media-coder>", "enable-media-coder: expected yes or no, got '1'"),
        ("<enable-videojb>maybe</enable-videojb>", "enable-videojb: expected yes or no, got 'maybe'"),
        ("<enable-rtp-symetric>y</enable-rtp-symetric>", "enable-rtp-symetric: expected yes or no, got 'y'"),
        ("<enable-icestun>on</enable-icestun>", "enable-icestun: expected yes or no, got 'on'"),
        ("<rtp-buffsize>abc</rtp-buffsize>", "rtp-buffsize: not an integer: 'abc'"),
        ("<rtp-buffsize>0</rtp-buffsize>", "rtp-buffsize: 0 is out of range 1..2147483647"),
        ("<avpf-tail-length>100</avpf-tail-length>", "avpf-tail-length: expected 'min;max', got '100'"),
        ("<avpf-tail-length>400;100</avpf-tail-length>", "avpf-tail-length: min 400 is greater than max 100"),
        ("<avpf-tail-length>0;100</avpf-tail-length>",
         "avpf-tail-length: 0 is out of range 1..65535 in '0;100'"),
        ("<codecs>pcmu;foo</codecs>", "codecs: unknown codec 'foo' in 'pcmu;foo' (known: pcma, pcmu, opus, "),
        ("<nameserver>dns.example.org</nameserver>", "nameserver: not an IP address: 'dns.example.org'"),
        ("<nameserver>192.0.2.1:dns</nameserver>", "nameserver: not an integer: 'dns' in '192.0.2.1:dns'"),
        ("<nameserver>[::1]x</nameserver>", "nameserver: not an IP address: '[::1]x'"),
        ("<ssl-certificates>a.pem;b.pem</ssl-certificates>",
         "ssl-certificates: expected 'private-key;public-cert;ca[;verify]', got 'a.pem;b.pem'"),
        ("<ssl-certificates>*;*;*;perhaps</ssl-certificates>",
         "ssl-certificates: expected yes or no, got 'perhaps' in '*;*;*;perhaps'"),
        ("<ssl-certificates>/nonexistent/k.pem;/nonexistent/c.pem;*</ssl-certificates>",
         "ssl-certificates: private key file not found: '/nonexistent/k.pem'"),
        ("<srtp-mode>always</srtp-mode>",
         "srtp-mode: unknown SRTP mode 'always' (expected one of: none, optional, mandatory)"),
        ("<srtp-type>sdes;zrtp</srtp-type>",
         "srtp-type: unknown SRTP type 'zrtp' in 'sdes;zrtp' (expected one of: sdes, dtls)"),
        ("<stun-server>stun.example.org</stun-server>",
         "stun-server: expected 'host;port[;user;password]', got 'stun.example.org'"),
        ("<stun-server>stun.example.org;port</stun-server>",
         "stun-server: not an integer: 'port' in 'stun.example.org;port'"),
        ("<stun-server>stun.example.org;3478;*;pw</stun-server>",
         "stun-server: a STUN password needs a user name"),
        ("<max-fds>lots</max-fds>", "max-fds: not an integer: 'lots'"),
        ("<max-fds>-2</max-fds>", "max-fds: -2 is out of range -1..2147483647"),
        ("<dtmf-type>inband</dtmf-type>",
         "dtmf-type: unknown DTMF type 'inband' (expected one of: rfc2833, rfc4733, info)"),
        ("<video-size-pref>8k</video-size-pref>",
         "video-size-pref: unknown video size '8k' (expected one of: sqcif,"),
        ("<codec-opus-maxrates>48000</codec-opus-maxrates>",
         "codec-opus-maxrates: expected 'playback;capture', got '48000'"),
        ("<codec-opus-maxrates>44100;48000</codec-opus-maxrates>",
         "codec-opus-maxrates: 44100 is not an Opus rate "
         "(expected one of: 8000, 12000, 16000, 24000, 48000)"),
        ("<database>postgres;*</database>",
         "database: unknown database type 'postgres' in 'postgres;*' (expected one of: sqlite, mysql)"),
        ("<account-mail>smtps;*;*;smtp.example.com;465;a@example.com;a</account-mail>",
         "account-mail: expected "
         "'scheme;local-ip;local-port;smtp-host;smtp-port;email;auth-name;auth-password'"),
        ("<account-mail>pop3;*;*;smtp.example.com;465;a@example.com;a;pw</account-mail>",
         "account-mail: unknown SMTP scheme 'pop3'"),
        ("<account-sip-caller>*;a@example.com;a;example.com;pw</account-sip-caller>",
         "account-sip-caller: impu is not a SIP URI: 'a@example.com'"),
        ("<account-recaptcha>ftp://x;secret</account-recaptcha>", "account-recaptcha: not an http(s) URL: 'ftp://x'"),
        ("<account-http-domain>not a domain</account-http-domain>",
         "account-http-domain: not a valid host or IP address: 'not a domain'"),
    ],
)
def test_bad_values_name_the_key(write: Write, body: str, message: str) -> None:
    assert error_of(write, body).startswith(message)


def test_every_xml_key_has_a_bad_value_test() -> None:
    bad = test_bad_values_name_the_key.pytestmark[0].args[1]  # type: ignore[attr-defined]
    covered = {body.split(">", 1)[0].lstrip("<") for body, _ in bad}
    assert set(XML_KEYS) == covered


def test_star_port_and_trailing_separator(write: Write) -> None:
    s = load_xml(write, "<transport>udp;127.0.0.1;*</transport><codecs>pcmu;pcma;</codecs>")
    assert s.listeners == (Listener("udp", "127.0.0.1", 0),)
    assert s.webrtc2sip.codecs == ("pcmu", "pcma")


def test_srtp_type_with_commas(write: Write) -> None:
    # MPEngine::setSRTPType looked for substrings, so comma-separated lists worked upstream
    assert load_xml(write, "<srtp-type>dtls,sdes</srtp-type>").webrtc2sip.srtp_type == ("dtls", "sdes")


def test_dtmf_info(write: Write) -> None:
    assert load_xml(write, "<dtmf-type>INFO</dtmf-type>").webrtc2sip.dtmf_type == "info"


# --- listeners ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<transport>udp;*;5060</transport><transport>udp;*;5060</transport>",
         "transport: udp on 0.0.0.0:5060 is listed twice"),
        ("<transport>tcp;*;5060</transport><transport>ws;*;5060</transport>",
         "transport: tcp on 0.0.0.0:5060 and ws on 0.0.0.0:5060 would both bind TCP port 5060"),
        ("<transport>udp;*;5060</transport><transport>udp;127.0.0.1;5060</transport>",
         "transport: udp on 0.0.0.0:5060 and udp on 127.0.0.1:5060 would both bind UDP port 5060"),
        ("<transport>ws;*;10070</transport><transport>c2c;*;10070</transport>",
         "transport: ws on 0.0.0.0:10070 and c2c on 0.0.0.0:10070 would both bind TCP port 10070"),
    ],
)
def test_listener_conflicts(write: Write, body: str, message: str) -> None:
    assert error_of(write, body) == message


def test_udp_and_tcp_may_share_a_port(write: Write) -> None:
    s = load_xml(write, "<transport>udp;*;5060</transport><transport>tcp;*;5060</transport>"
                        "<transport>tcp;127.0.0.1;5070</transport><transport>tcp;127.0.0.2;5070</transport>")
    assert len(s.listeners) == 4


def test_auth_auto_follows_loopback(write: Write) -> None:
    s = load_xml(write, "<transport>udp;127.0.0.1;5060</transport><transport>ws;::1;8080</transport>"
                        "<transport>tcp;localhost;5060</transport>")
    assert s.loopback_only() and not s.auth_required()
    s = load_xml(write, "<transport>udp;127.0.0.1;5060</transport><transport>ws;192.0.2.1;8080</transport>")
    assert not s.loopback_only() and s.auth_required()


# --- certificates --------------------------------------------------------------------------------


def test_relative_certificates_found_next_to_config(
    write: Write, certs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    s = load_xml(write, "<ssl-certificates>priv.pem;pub.pem;*</ssl-certificates>")
    assert s.ssl_certificates == SslCertificates(tmp_path / "priv.pem", tmp_path / "pub.pem", None, False)


def test_bad_certificate_content(write: Write, tmp_path: Path) -> None:
    (tmp_path / "k.pem").write_text("not a key")
    (tmp_path / "c.pem").write_text("not a cert")
    msg = error_of(write, f"<ssl-certificates>{tmp_path}/k.pem;{tmp_path}/c.pem;*</ssl-certificates>")
    assert msg.startswith("ssl-certificates: cannot load the key pair")


def test_half_a_key_pair(write: Write) -> None:
    msg = error_of(write, "<ssl-certificates>*;/x/pub.pem;*</ssl-certificates>")
    assert msg.startswith("ssl-certificates:")


def test_check_files_false(write: Write) -> None:
    s = load_xml(write, "<ssl-certificates>/nonexistent/k.pem;/nonexistent/c.pem;*;no</ssl-certificates>",
                 check_files=False)
    assert s.ssl_certificates == SslCertificates(Path("/nonexistent/k.pem"), Path("/nonexistent/c.pem"), None)


# --- TOML options ----------------------------------------------------------------------------------


def test_toml_options(write: Write, tmp_path: Path) -> None:
    opts = write("rtc2sip.toml", """
[gateway]
data_dir = "state"
domains = ["Example.ORG", "192.0.2.1", "example.org", "::1"]
log_format = "json"
upstream_proxy = "sip:pbx.example.org:5060;transport=tcp"
auth = "on"
open_relay = false
breaker = "always"

[[listen]]
transport = "udp"
host = "*"
port = 5060

[[listen]]
transport = "WSS"
host = "::"
port = 8443

[users]
alice = "wonderland"
"+15551234" = "pin"

[limits]
max_message_size = 8192
max_connections_per_source = 10
max_registrations_per_source = 0
ws_origins = ["https://App.example.org", "http://localhost:3000/", "https://b.example:443"]
nonce_lifetime = 60
min_expires = 30
default_expires = 600
max_expires = 7200
""")
    s = load_settings(options_toml=opts)
    g = s.gateway
    assert g.data_dir == tmp_path / "state"
    assert g.domains == ("example.org", "192.0.2.1", "[::1]")
    assert (g.log_format, g.auth, g.open_relay, g.breaker) == ("json", "on", False, "always")
    assert g.upstream_proxy == "sip:pbx.example.org:5060;transport=tcp"
    assert s.listeners == (Listener("udp", "0.0.0.0", 5060), Listener("wss", "::", 8443))
    assert dict(s.users) == {"alice": "wonderland", "+15551234": "pin"}
    assert "wonderland" not in repr(s)
    lim = s.limits
    assert (lim.max_message_size, lim.max_connections_per_source, lim.max_registrations_per_source) == (
        8192, 10, 0)
    assert lim.ws_origins == ("https://app.example.org", "http://localhost:3000", "https://b.example")
    assert (lim.nonce_lifetime, lim.min_expires, lim.default_expires, lim.max_expires) == (60, 30, 600, 7200)
    assert s.options_toml == opts
    assert s.auth_required()


def test_toml_listen_replaces_xml_transports(write: Write) -> None:
    cfg = write("config.xml", UPSTREAM_SAMPLE_27)
    opts = write("o.toml", '[[listen]]\ntransport = "ws"\nport = 9090\n')
    s = load_settings(cfg, opts)
    assert s.listeners == (Listener("ws", "127.0.0.1", 9090),)
    assert s.loopback_only() and not s.auth_required()
    # the rest of config.xml still applies
    assert s.webrtc2sip.debug_level == "ERROR"


def test_toml_overrides_xml_keys(write: Write, certs: tuple[Path, Path]) -> None:
    key, crt = certs
    cfg = write("config.xml", UPSTREAM_SAMPLE_27)
    opts = write("o.toml", f"""
[webrtc2sip]
debug-level = "DEBUG"
enable-media-coder = true
enable-icestun = false
rtp-buffsize = 4096
codecs = ["pcmu", "opus"]
avpf-tail-length = [10, 20]
transport = ["udp;127.0.0.1;5070", "wss;127.0.0.1;5071"]
nameserver = "9.9.9.9"
ssl-certificates = "{key};{crt};*;no"
""")
    s = load_settings(cfg, opts)
    w = s.webrtc2sip
    assert w.debug_level == "DEBUG" and s.log_level == logging.DEBUG
    assert w.enable_media_coder is True and w.enable_icestun is False
    assert w.rtp_buffsize == 4096 and w.codecs == ("pcmu", "opus") and w.avpf_tail_length == (10, 20)
    assert w.nameservers == ("9.9.9.9",)
    assert s.listeners == (Listener("udp", "127.0.0.1", 5070), Listener("wss", "127.0.0.1", 5071))
    assert s.tls_available() and s.active_listeners() == s.listeners
    # keys not overridden keep config.xml's values, click-to-call transports included
    assert w.srtp_type == ("sdes", "dtls") and w.stun_server is not None
    assert w.click_to_call == ()  # the whole <transport> list was replaced


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[gateway]\nauth = \"maybe\"", "gateway.auth: expected one of auto, on, off, got 'maybe'"),
        ("[gateway]\nlog_format = \"xml\"", "gateway.log_format: expected one of text, json, got 'xml'"),
        ("[gateway]\nopen_relay = \"yes\"", "gateway.open_relay: expected true or false, got a string"),
        ("[gateway]\nupstream_proxy = \"http://x\"", "gateway.upstream_proxy: not a SIP URI: 'http://x'"),
        ("[gateway]\ndomains = []", "gateway.domains: needs at least one domain"),
        ("[gateway]\ndomains = [\"a b\"]", "gateway.domains: not a valid domain or IP address: 'a b'"),
        ("[gateway]\nopen_rely = true", "gateway.open_rely: unknown option (did you mean 'open_relay'?)"),
        ("[gateway]\nbreaker = \"sometimes\"", "gateway.breaker: expected one of auto, client, never, always"),
        ("[limits]\nmax_expires = \"1d\"", "limits.max_expires: expected an integer, got a string"),
        ("[limits]\nnonce_lifetime = true", "limits.nonce_lifetime: expected an integer, got a boolean"),
        ("[limits]\nmax_message_size = 100", "limits.max_message_size: 100 is out of range 1024..16777216"),
        ("[limits]\nmin_expires = 7200\nmax_expires = 3600",
         "limits.min_expires: 7200 is greater than max_expires 3600"),
        ("[limits]\ndefault_expires = 30", "limits.default_expires: 30 is not between min_expires 60"),
        ("[limits]\nws_origins = [\"example.org\"]",
         "limits.ws_origins: not an origin like 'https://example.org[:port]': 'example.org'"),
        ("[limits]\nws_origins = [\"https://a.example:port\"]",
         "limits.ws_origins: not an origin like 'https://example.org[:port]': 'https://a.example:port'"),
        ("[limits]\nws_origins = [\"https://a.example/app\"]", "limits.ws_origins: not an origin like"),
        ("[limits]\nws_origins = \"https://a\"",
         "limits.ws_origins: expected an array of strings, got a string"),
        ("[users]\nalice = 1234", "users.alice: expected a string, got an integer"),
        ("[users]\n\"a@b\" = \"x\"", "users.a@b: not a valid SIP user name"),
        ("[[listen]]\nport = 5060", "listen[0].transport: missing"),
        ("[[listen]]\ntransport = \"udp\"", "listen[0].port: missing"),
        ("[[listen]]\ntransport = \"udp\"\nport = 1\n[[listen]]\ntransport = \"sctp\"\nport = 2",
         "listen[1].transport: expected one of udp, tcp, tls, ws, wss, got 'sctp'"),
        ("[[listen]]\ntransport = \"udp\"\nprot = 1\nport = 1",
         "listen[0].prot: unknown option (did you mean 'port'?)"),
        ("[[listen]]\ntransport = \"udp\"\nport = 99999", "listen[0].port: 99999 is out of range 0..65535"),
        ("[[listen]]\ntransport = \"udp\"\nport = 1\nadress = \"x\"",
         "listen[0].adress: unknown option (known: transport, host, port)"),
        ("[[listen]]\ntransport = \"udp\"\nport = 5060\n[[listen]]\ntransport = \"udp\"\nport = 5060",
         "listen: udp on 127.0.0.1:5060 is listed twice"),
        ("listen = []", "listen: needs at least one listener"),
        ("[webrtc2sip]\ncodecs = \"pcmu;foo\"", "webrtc2sip.codecs: unknown codec 'foo' in 'pcmu;foo'"),
        ("[webrtc2sip]\nenable-100rel = \"true\"",
         "webrtc2sip.enable-100rel: expected yes or no, got 'true'"),
        ("[webrtc2sip]\ntransport = [\"udp;*;1\", \"foo;*;2\"]",
         "webrtc2sip.transport[1]: unknown protocol 'foo' in 'foo;*;2'"),
        ("[webrtc2sip]\ncodec = \"pcmu\"", "webrtc2sip.codec: unknown option (did you mean 'codecs'?)"),
        ("[webrtc2sip]\nrtp-buffsize = 1.5",
         "webrtc2sip.rtp-buffsize: expected a string, boolean, integer or array"),
        ("[mystery]\nx = 1", "mystery: unknown option"),
        ("gateway = 3", "gateway: expected a table, got an integer"),
        ("[gateway\n", "options: invalid TOML in "),
    ],
)
def test_bad_toml_names_the_key_path(write: Write, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_settings(options_toml=write("o.toml", toml))
    assert str(ei.value).startswith(message)


def test_auth_as_toml_boolean(write: Write) -> None:
    assert load_settings(options_toml=write("o.toml", "[gateway]\nauth = false")).gateway.auth == "off"
    assert load_settings(options_toml=write("o.toml", "[gateway]\nauth = true")).gateway.auth == "on"


def test_auth_off_on_public_listener(write: Write) -> None:
    s = load_settings(options_toml=write("o.toml", """
[gateway]
auth = "off"
open_relay = true
[[listen]]
transport = "udp"
host = "0.0.0.0"
port = 5060
[users]
bob = "x"
"""))
    assert not s.auth_required()
    assert any("[users] is ignored" in w for w in s.warnings)
    assert any("open_relay" in w for w in s.warnings)
    assert "Authentication off (auth = \"off\")" in s.banner_lines()


# --- banner ------------------------------------------------------------------------------------


def test_default_banner() -> None:
    assert load_settings().banner_lines() == [
        "SIP over UDP on 127.0.0.1:5060",
        "SIP over TCP on 127.0.0.1:5060",
        "SIP over WebSocket on ws://127.0.0.1:8080 (subprotocol sip)",
        "Authentication off: every listener is on loopback (auth = \"auto\")",
        "Admin API and live view's actions on http://127.0.0.1:8089 (no token: loopback only; [admin])",
    ]


def test_banner_tls_without_certificates(write: Write) -> None:
    s = load_xml(write, "<transport>tls;127.0.0.1;5061</transport><transport>wss;127.0.0.1;8443</transport>"
                        "<transport>udp;127.0.0.1;5060</transport>")
    assert s.active_listeners() == (Listener("udp", "127.0.0.1", 5060),)
    assert s.banner_lines()[:2] == [
        "SIP over UDP on 127.0.0.1:5060",
        "WSS/TLS are off: no ssl-certificates configured; not listening: tls on 127.0.0.1:5061, "
        "wss on 127.0.0.1:8443",
    ]


def test_banner_upstream_and_users(write: Write) -> None:
    s = load_settings(options_toml=write("o.toml", """
[gateway]
upstream_proxy = "sip:10.0.0.1"
auth = "on"
[users]
a = "1"
"""))
    lines = s.banner_lines()
    assert "Digest authentication on (1 user in [users])" in lines
    assert "Upstream proxy: sip:10.0.0.1" in lines


def test_digest_algorithms_default_and_order(tmp_path: Path) -> None:
    assert load_settings().gateway.digest_algorithms == ("MD5",)
    f = tmp_path / "o.toml"
    f.write_text('[gateway]\ndigest_algorithms = ["sha-256", "MD5"]\n')
    assert load_settings(options_toml=f).gateway.digest_algorithms == ("SHA-256", "MD5")
    f.write_text('[gateway]\ndigest_algorithms = ["SHA-1"]\n')
    with pytest.raises(ConfigError, match="digest_algorithms"):
        load_settings(options_toml=f)


def test_admin_listener(tmp_path: Path) -> None:
    """[admin]: on loopback by default; beyond loopback only with a token and TLS (a config error
    otherwise, naming what is missing)."""
    a = load_settings().admin
    assert a.listen == ("127.0.0.1", 8089) and a.token is None and not a.tls and a.loopback
    assert Settings().admin.listen is None  # built by code (tests): off unless asked for
    f = tmp_path / "o.toml"

    def admin(text: str) -> AdminOptions:
        f.write_text(text)
        return load_settings(options_toml=f).admin

    assert admin('[admin]\nlisten = "127.0.0.1:0"\n').listen == ("127.0.0.1", 0)
    assert admin('[admin]\nlisten = "[::1]:9000"\n').listen == ("::1", 9000)
    assert admin('[admin]\nlisten = "localhost:9000"\n').listen == ("127.0.0.1", 9000)
    assert admin('[admin]\nlisten = ""\n').listen is None
    assert admin("[admin]\nenabled = false\n").listen is None
    # the token falls back to [gateway] admin_token; [admin] token wins
    gw_token, own = "gateway-Token_0123456789", "admin-Token_0123456789"
    assert admin(f'[gateway]\nadmin_token = "{gw_token}"\n').token == gw_token
    both = admin(f'[gateway]\nadmin_token = "{gw_token}"\n[admin]\ntoken = "{own}"\n')
    assert both.token == own and own not in repr(both)
    for bad, message in (('listen = "0.0.0.0"', "expected an IP address and port"),
                         ('listen = "example.org:8089"', "expected an IP address and port"),
                         ('listen = "127.0.0.1:65536"', "expected an IP address and port"),
                         ('listen = "::1:8089"', "in brackets"),
                         ("listen = 8089", "expected a string"),
                         ('token = "short"', "too short"),
                         ('tls_cert = "c.pem"', "give both"),
                         ("lsiten = 1", "did you mean 'listen'")):
        f.write_text(f"[admin]\n{bad}\n")
        with pytest.raises(ConfigError, match=message) as err:
            load_settings(options_toml=f)
        assert err.value.key.startswith("admin."), err.value.key

    # beyond loopback: a token and TLS, both
    key, cert = _self_signed_files(tmp_path)
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    for extra, missing in (("", "needs a token .* and TLS"), (f'token = "{own}"\n', "needs TLS"),
                           (tls, "needs a token")):
        f.write_text(f'[admin]\nlisten = "0.0.0.0:8089"\n{extra}')
        with pytest.raises(ConfigError, match=f"beyond loopback: the admin listener {missing}") as err:
            load_settings(options_toml=f)
        assert err.value.key == "admin.listen" and err.value.source == f
    public = admin(f'[admin]\nlisten = "*:8443"\ntoken = "{own}"\n{tls}')
    assert public.listen == ("0.0.0.0", 8443) and public.tls and not public.loopback
    assert public.url() == "https://0.0.0.0:8443"
    # gateway's token and TLS beyond loopback will do as well; a bad key pair stops the start
    assert admin(f'[gateway]\nadmin_token = "{gw_token}"\n[admin]\nlisten = "[::]:8443"\n{tls}').token == gw_token
    key.write_text("not a key")
    f.write_text(f'[admin]\nlisten = "127.0.0.1:0"\n{tls}')
    with pytest.raises(ConfigError, match="cannot load the key pair"):
        load_settings(options_toml=f)
    assert load_settings(options_toml=f, check_files=False).admin.tls


def _self_signed_files(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin.test")])
    now = datetime.datetime.now(datetime.UTC)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
         .sign(k, hashes.SHA256()))
    key, cert = tmp / "admin-key.pem", tmp / "admin-cert.pem"
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return key, cert


def test_admin_token(tmp_path: Path) -> None:
    assert load_settings().gateway.admin_token is None
    f = tmp_path / "o.toml"
    f.write_text('[gateway]\nadmin_token = "s3cret-Token_0123456789"\n')
    g = load_settings(options_toml=f).gateway
    assert g.admin_token == "s3cret-Token_0123456789"
    assert "s3cret" not in repr(g)  # never in a log line or a traceback
    for bad, message in (('"short"', "too short"), ('"has space in it 0123456789"', "only letters"),
                         ("1234567890123456", "expected a string")):
        f.write_text(f"[gateway]\nadmin_token = {bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(options_toml=f)

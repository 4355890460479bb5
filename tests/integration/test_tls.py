"""TLS and WSS with a real certificate chain (issue 13 item 6), made by the test: a root CA, an
intermediate CA and leaves, the gateway's ``pub`` file holding its leaf and the intermediate.

- clients that trust only the root reach the gateway over TLS and WSS (the chain is presented whole);
- ``verify`` as webrtc2sip has it, both ways: client certificates required and checked as a server,
  the server's chain and name checked as a client (outgoing TLS), nothing checked without it;
- certificates reloaded in the running process: new handshakes get the new one, a connection
  already up keeps working; a bad file keeps the old one; the real ``rtc2sip`` command on SIGHUP.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from websockets.asyncio.client import connect

from rtc2sip.app import Gateway
from rtc2sip.config import GatewayOptions, Listener, Settings, SslCertificates, Webrtc2sipSettings
from rtc2sip.sip import StreamFramer, parse_message
from rtc2sip.sip.message import Response

Key = ec.EllipticCurvePrivateKey


@dataclass
class Issuer:
    name: x509.Name
    key: Key
    cert: x509.Certificate


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: Key, issuer: Issuer | None, ca: bool, serial: int,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject))
         .issuer_name(issuer.name if issuer else _name(subject)).public_key(key.public_key())
         .serial_number(serial).not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), False)
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), False)
    return b.sign(issuer.key if issuer else key, hashes.SHA256())


@dataclass
class Pki:
    root_file: Path
    root: Issuer
    intermediate: Issuer

    @classmethod
    def make(cls, d: Path, cn: str = "rtc2sip test") -> Pki:
        rk = ec.generate_private_key(ec.SECP256R1())
        root = Issuer(_name(f"{cn} root"), rk, _cert(f"{cn} root", rk, None, True, 1))
        ik = ec.generate_private_key(ec.SECP256R1())
        inter = Issuer(_name(f"{cn} intermediate"), ik, _cert(f"{cn} intermediate", ik, root, True, 2))
        root_file = d / f"{cn.replace(' ', '_')}_root.pem"
        root_file.write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
        return cls(root_file, root, inter)

    def leaf(self, key_file: Path, chain_file: Path, serial: int, usage: x509.ObjectIdentifier) -> None:
        """A leaf for 127.0.0.1 signed by the intermediate: its key, and leaf + intermediate in one PEM."""
        k = ec.generate_private_key(ec.SECP256R1())
        cert = _cert("127.0.0.1", k, self.intermediate, False, serial, usage)
        key_file.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        chain_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                               + self.intermediate.cert.public_bytes(serialization.Encoding.PEM))


def _options(call_id: str) -> bytes:
    return (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK{call_id[:12]}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def _client_ctx(root: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(root))
    if cert is not None:
        ctx.load_cert_chain(str(cert[1]), str(cert[0]))
    return ctx


class TlsClient:
    """A SIP client over TLS that checks every request gets its answer on the same connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.framer = reader, writer, StreamFramer()

    @classmethod
    async def open(cls, port: int, ctx: ssl.SSLContext) -> TlsClient:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10)
        return cls(r, w)

    def serial(self) -> int:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return int(x509.load_der_x509_certificate(der).serial_number)

    async def options(self) -> int:
        call_id = uuid.uuid4().hex
        self.writer.write(_options(call_id))
        end = asyncio.get_running_loop().time() + 10
        while True:
            data = await asyncio.wait_for(self.reader.read(65535), max(0.01, end - asyncio.get_running_loop().time()))
            if not data:
                raise ConnectionError("closed by the gateway")
            for m in self.framer.feed(data):
                msg = parse_message(m)
                if isinstance(msg, Response) and msg.call_id == call_id and msg.status >= 200:
                    return msg.status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Tls:
    gw: Gateway
    pki: Pki
    key: Path
    chain: Path
    tls: int
    wss: int
    udp: int


async def _gateway(tmp_path: Path, verify: bool) -> Tls:
    pki = Pki.make(tmp_path)
    key, chain = tmp_path / "key.pem", tmp_path / "chain.pem"
    pki.leaf(key, chain, 1001, ExtendedKeyUsageOID.SERVER_AUTH)
    settings = Settings(
        listeners=(Listener("udp", "127.0.0.1", 0), Listener("tls", "127.0.0.1", 0), Listener("wss", "127.0.0.1", 0)),
        gateway=GatewayOptions(data_dir=tmp_path / "data", breaker="never"),
        webrtc2sip=Webrtc2sipSettings(ssl_certificates=SslCertificates(key, chain, pki.root_file, verify)),
    )
    gw = Gateway(settings)
    await gw.start()

    def port(t: str) -> int:
        return next(la.port for la in gw.listening if la.transport == t)

    return Tls(gw, pki, key, chain, port("tls"), port("wss"), port("udp"))


@pytest.fixture
async def tls_gateway(tmp_path: Path) -> AsyncIterator[Tls]:
    t = await _gateway(tmp_path, verify=False)
    yield t
    await t.gw.stop()


async def test_the_chain_is_presented_whole_over_tls_and_wss(tls_gateway: Tls) -> None:
    t = tls_gateway
    ctx = _client_ctx(t.pki.root_file)  # the root only: the intermediate must come from the gateway
    client = await TlsClient.open(t.tls, ctx)
    try:
        assert client.serial() == 1001
        assert await client.options() == 200
    finally:
        client.close()
    async with connect(f"wss://127.0.0.1:{t.wss}", subprotocols=["sip"], ssl=ctx) as ws:  # type: ignore[list-item]
        peer = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(peer).serial_number == 1001
        await ws.send(_options(uuid.uuid4().hex).decode().replace("SIP/2.0/TLS", "SIP/2.0/WSS"))
        reply = parse_message(str(await asyncio.wait_for(ws.recv(), 10)).encode())
        assert isinstance(reply, Response) and reply.status == 200


async def test_a_certificate_reload_serves_new_handshakes_and_keeps_connections(tls_gateway: Tls) -> None:
    t = tls_gateway
    ctx = _client_ctx(t.pki.root_file)
    before = await TlsClient.open(t.tls, ctx)
    try:
        assert before.serial() == 1001 and await before.options() == 200
        t.pki.leaf(t.key, t.chain, 1002, ExtendedKeyUsageOID.SERVER_AUTH)
        assert t.gw.reload_certificates()
        assert await before.options() == 200  # the connection up before the reload is untouched
        after = await TlsClient.open(t.tls, ctx)
        assert after.serial() == 1002 and await after.options() == 200
        after.close()
        async with connect(f"wss://127.0.0.1:{t.wss}", subprotocols=["sip"], ssl=ctx) as ws:  # type: ignore[list-item]
            peer = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            assert x509.load_der_x509_certificate(peer).serial_number == 1002
        # a broken file: refused, the certificate in use stays
        t.chain.write_text("not a certificate\n")
        assert not t.gw.reload_certificates()
        again = await TlsClient.open(t.tls, ctx)
        assert again.serial() == 1002 and await again.options() == 200
        again.close()
        assert await before.options() == 200
    finally:
        before.close()


async def test_verify_requires_a_client_certificate_from_the_ca(tmp_path: Path) -> None:
    t = await _gateway(tmp_path, verify=True)
    try:
        anonymous = _client_ctx(t.pki.root_file)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            # TLS 1.3 reports a missing client certificate after the handshake, at the first read
            c = await TlsClient.open(t.tls, anonymous)
            await c.options()
        ck, cc = tmp_path / "client_key.pem", tmp_path / "client_chain.pem"
        t.pki.leaf(ck, cc, 2001, ExtendedKeyUsageOID.CLIENT_AUTH)
        known = await TlsClient.open(t.tls, _client_ctx(t.pki.root_file, (ck, cc)))
        try:
            assert await known.options() == 200
        finally:
            known.close()
        stranger_pki = Pki.make(tmp_path, "stranger")  # a client certificate from a CA the gateway does not know
        sk, sc = tmp_path / "s_key.pem", tmp_path / "s_chain.pem"
        stranger_pki.leaf(sk, sc, 3001, ExtendedKeyUsageOID.CLIENT_AUTH)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            c = await TlsClient.open(t.tls, _client_ctx(t.pki.root_file, (sk, sc)))
            await c.options()
    finally:
        await t.gw.stop()


class _TlsPeer:
    """A TLS server standing for a PBX: records what reaches it."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read(65535)
            if data:
                self.got.append(data)
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()


@pytest.mark.parametrize("verify", [False, True])
async def test_outgoing_tls_checks_the_server_only_with_verify(tmp_path: Path, verify: bool) -> None:
    t = await _gateway(tmp_path, verify=verify)
    other = tmp_path / "pbx"
    other.mkdir()
    pbx_pki = Pki.make(other, "pbx")  # a CA the gateway does not know
    pk, pc = other / "key.pem", other / "chain.pem"
    pbx_pki.leaf(pk, pc, 4001, ExtendedKeyUsageOID.SERVER_AUTH)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(str(pc), str(pk))
    peer = _TlsPeer()
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0, ssl=sctx)
    pbx_port = server.sockets[0].getsockname()[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        me = sock.getsockname()[1]
        sock.sendto((f"OPTIONS sip:pbx@127.0.0.1:{pbx_port};transport=tls SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKout{int(verify)};rport\r\n"
                     "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t1\r\nTo: <sip:pbx@127.0.0.1>\r\n"
                     f"Call-ID: out-{verify}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                    ("127.0.0.1", t.udp))
        loop = asyncio.get_running_loop()
        if verify:
            # the handshake fails on the unknown CA: the request is answered, nothing reaches the PBX
            end = loop.time() + 20
            status = 0
            while status < 200:
                msg = parse_message(await asyncio.wait_for(loop.sock_recv(sock, 65535), max(0.01, end - loop.time())))
                status = msg.status if isinstance(msg, Response) else 0
            assert status >= 400
            assert not any(b"OPTIONS" in g for g in peer.got)
        else:
            end = time.monotonic() + 20
            while not peer.got and time.monotonic() < end:
                await asyncio.sleep(0.05)
            assert peer.got and peer.got[0].startswith(b"OPTIONS sip:pbx@")
    finally:
        sock.close()
        server.close()
        await t.gw.stop()


def test_sighup_reloads_the_certificates_of_the_running_command(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    key, chain = tmp_path / "key.pem", tmp_path / "chain.pem"
    pki.leaf(key, chain, 5001, ExtendedKeyUsageOID.SERVER_AUTH)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "config.xml"
    cfg.write_text(f"""<?xml version="1.0" encoding="utf-8" ?>
<config>
  <transport>tls;127.0.0.1;{port}</transport>
  <ssl-certificates>{key};{chain};{pki.root_file};no</ssl-certificates>
</config>
""")
    options = tmp_path / "rtc2sip.toml"
    options.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\nbreaker = "never"\n\n[admin]\nenabled = false\n')
    err = tmp_path / "stderr.txt"
    ctx = _client_ctx(pki.root_file)

    def serial() -> int | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                return int(x509.load_der_x509_certificate(der).serial_number)
        except OSError:
            return None

    with err.open("wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rtc2sip", "--config", str(cfg), "--options", str(options)],
                                stdout=subprocess.DEVNULL, stderr=f)
    try:
        deadline = time.monotonic() + 60  # a loaded machine starts it slowly
        while serial() != 5001:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        pki.leaf(key, chain, 5002, ExtendedKeyUsageOID.SERVER_AUTH)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while serial() != 5002:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0, err.read_text()
    assert "certificates: reloaded" in err.read_text()
